//! Transactions: increments by 1, 4 and 16 processes, contended and not, next to plain
//! puts.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use party_core::Db;
use serde_json::{json, Value};

use super::{first_line, key, leader_child, start_leader, KEYS, VALUE};
use crate::failure::Failure;
use crate::out;
use crate::tool_store::ToolStore;

/// Writes done in `duration`, one at a time: increments of `counter` by transaction, or
/// plain puts when `None`.
pub(super) async fn one_at_a_time(
    db: Db,
    duration: Duration,
    counter: Option<String>,
) -> Result<u64, String> {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        match &counter {
            Some(counter) => {
                match crate::command::increment(&db, counter.as_bytes().to_vec(), 1).await {
                    Ok(_) => {}
                    // Out of attempts under contention: nothing written, nothing counted.
                    Err(failure) if failure.kind == crate::failure::Kind::Conflict => continue,
                    Err(failure) => return Err(failure.message),
                }
            }
            None => db
                .put(key(done % KEYS), VALUE)
                .await
                .map_err(|e| e.to_string())?,
        }
        done += 1;
    }
    Ok(done)
}

/// Writes per second by `processes` followers at once, one write at a time each:
/// increments of one shared counter (`shared`, every transaction contends), of a counter of
/// each process's own (`own`, none does), or plain puts (`puts`).
fn writes_by_processes(
    dir: &Path,
    store: &ToolStore,
    processes: usize,
    what: &str,
    span: Duration,
) -> Result<f64, Failure> {
    let seconds = span.as_secs_f64().to_string();
    let mut writers = (0..processes)
        .map(|_| leader_child(dir, store, &["writes", &seconds, what]))
        .collect::<Result<Vec<_>, _>>()?;
    for writer in &mut writers {
        if first_line(writer)? != "ready follower" {
            return Err("a writer of the transactions bench did not follow".into());
        }
    }
    for writer in &mut writers {
        let stdin = writer.stdin.as_mut().ok_or("no stdin")?;
        stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
    }
    let mut total = 0u64;
    for writer in &mut writers {
        let line = first_line(writer)?;
        total += line
            .strip_prefix("ops ")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| format!("a writer of the transactions bench said {line:?}"))?;
    }
    Ok(total as f64 / span.as_secs_f64())
}

/// Transactions per second by 1, 4 and 16 processes, contended and not, next to plain puts.
pub(super) fn transactions(
    base: &Path,
    store: &ToolStore,
    span: Duration,
) -> Result<Value, Failure> {
    let dir = base.join("transactions");
    let _leader = start_leader(&dir, store)?;
    let mut report = serde_json::Map::new();
    for processes in [1, 4, 16] {
        out::note(format_args!("bench: transactions by {processes}…"));
        report.insert(
            processes.to_string(),
            json!({
                "contended_txn_per_s": writes_by_processes(&dir, store, processes, "shared", span)?,
                "uncontended_txn_per_s": writes_by_processes(&dir, store, processes, "own", span)?,
                "put_ops_per_s": writes_by_processes(&dir, store, processes, "puts", span)?,
            }),
        );
    }
    Ok(Value::Object(report))
}

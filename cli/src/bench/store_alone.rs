//! The store alone: the bench's puts written straight into a store in groups, each with a
//! dedup record and a change log entry as a leader's writer commits them, with no party
//! around them (no handle, no socket, no other process): the store's own rate at the
//! group size of a follower's pipelined puts (16), and at a bigger one (64), against
//! which those puts are measured.

use std::path::Path;
use std::time::{Duration, Instant};

use party_backends::{Backend, WriteBatch};
use party_proto::feed::encode_unlogged;
use party_proto::wire::WriteOp;
use party_proto::{ClientId, CommitSeq, DedupRecord, LogAppend, WriteSeq};
use serde_json::{json, Map, Value};

use super::{bench_key, KEYS, VALUE};
use crate::failure::Failure;
use crate::tool_store::ToolStore;

/// Writes per group: a leader's connection hands its writer at most 16 requests before it
/// answers them (`leader.rs`, `TURN`), and 64 shows what bigger groups would give.
const GROUPS: [usize; 2] = [16, 64];

/// Puts per second for `span`, for each group size, into a store of `dir` that holds the
/// bench's keys already (as the in-process puts find theirs).
pub(super) fn store_alone(dir: &Path, store: &ToolStore, span: Duration) -> Result<Value, Failure> {
    let mut rates = Map::new();
    for group in GROUPS {
        // The store's calls block (etcd's open runs a runtime of its own): not on an
        // async worker.
        let (group, rate) = tokio::task::block_in_place(|| {
            let opened = store.open_store(&dir.join(group.to_string()))?;
            let mut writer = GroupWriter::new(opened.as_ref(), group);
            while writer.puts < KEYS {
                writer.write_group()?;
            }
            let (start, before) = (Instant::now(), writer.puts);
            while start.elapsed() < span {
                writer.write_group()?;
            }
            let rate = (writer.puts - before) as f64 / start.elapsed().as_secs_f64();
            Ok::<_, String>((writer.group, rate))
        })?;
        rates.insert(group.to_string(), json!(rate));
    }
    Ok(json!({ "put_ops_per_s_in_groups_of": rates }))
}

/// Writes the bench's keys, round and round, in groups as a leader's writer commits them.
struct GroupWriter<'a> {
    store: &'a dyn Backend,
    group: usize,
    puts: u64,
    seq: CommitSeq,
    log_bytes: u64,
}

impl<'a> GroupWriter<'a> {
    fn new(store: &'a dyn Backend, group: usize) -> Self {
        // The dedup record is an operation too, for a store that counts them (its limit
        // leaves room for the log entry already).
        let group = store
            .max_batch_ops()
            .map_or(group, |most| group.min(most.saturating_sub(1).max(1)));
        GroupWriter {
            store,
            group,
            puts: 0,
            seq: CommitSeq::FIRST,
            log_bytes: 0,
        }
    }

    fn write_group(&mut self) -> Result<(), String> {
        let mut batch = WriteBatch::new();
        for _ in 0..self.group {
            batch.push(WriteOp::Put {
                key: bench_key(self.puts),
                value: VALUE.to_vec(),
            });
            self.puts += 1;
        }
        let record = DedupRecord {
            applied_through: WriteSeq(self.puts),
            failed: Vec::new(),
            last_write_ms: 0,
        };
        batch.records = vec![(ClientId(1), record)];
        let entry = encode_unlogged(self.log_bytes);
        self.log_bytes += entry.len() as u64;
        batch.log = Some(LogAppend {
            seq: self.seq,
            entry,
        });
        self.seq = self.seq.next();
        self.store.write(&batch).map_err(|e| e.to_string())
    }
}

//! Low-latency mode ([`party_core::Options::spin`]) against the default: a follower's
//! sequential gets and puts through a child leader, both ends in the same mode, with the
//! CPU time both processes spent per operation (what the mode's polling costs); gets and
//! puts 64 in flight; full scans; and the share of a core an idle follower and its leader keep busy
//! afterwards.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::thread_cpu::ThreadCpu;
use super::{fill, full_scans, on_runtime, pipelined, sequential, start_leader_as, Workload, SPIN};
use crate::failure::Failure;
use crate::tool_store::ToolStore;

/// One mode's figures: sequential gets and puts, and the CPU of both processes per op;
/// gets and puts 64 in flight; full scans.
async fn one_mode(
    dir: &Path,
    store: &ToolStore,
    spin: bool,
    count: u64,
    span: Duration,
) -> Result<Value, Failure> {
    let mode: &[&str] = if spin { &["spin", "idle"] } else { &["idle"] };
    let leader = start_leader_as(dir, store, mode)?;
    let options = store.options(dir).spin(spin.then_some(SPIN));
    let db = party_core::open(dir, options)
        .await
        .map_err(|e| e.to_string())?;
    fill(&db).await?;
    let mut measured = serde_json::Map::new();
    for (name, puts) in [("sync_get", false), ("sync_put", true)] {
        let both = [std::process::id(), leader.id()];
        let cpu_before = ThreadCpu::of(&both);
        let (p50, p99, rate) = on_runtime(sequential(db.clone(), count, puts)).await?;
        let cpu = ThreadCpu::of(&both).since(&cpu_before);
        let busy_us = cpu.as_secs_f64() * 1e6 / count as f64;
        measured.insert(
            name.into(),
            json!({"p50_us": p50, "p99_us": p99, "ops_per_s": rate, "cpu_us_per_op": busy_us}),
        );
    }
    for (name, workload) in [("get", Workload::gets()), ("put", Workload::puts())] {
        let rate = on_runtime(pipelined(db.clone(), span, 64, workload))
            .await?
            .1;
        measured.insert(format!("pipelined_64_{name}_ops_per_s"), rate.into());
    }
    let scans = if count < 20_000 { 3 } else { 5 };
    let scan_rate = on_runtime(full_scans(db.clone(), scans)).await?;
    measured.insert("scan_entries_per_s".into(), scan_rate.into());
    // Left alone after its last request: how much of a core each keeps busy (the leader's
    // share includes its store's compactions after the writes).
    let idle = Duration::from_millis(300);
    let (follower_pid, leader_pid) = ([std::process::id()], [leader.id()]);
    let follower_before = ThreadCpu::of(&follower_pid);
    let leader_before = ThreadCpu::of(&leader_pid);
    let began = Instant::now();
    tokio::time::sleep(idle).await;
    let elapsed = began.elapsed().as_secs_f64();
    let share = |used: Duration| used.as_secs_f64() / elapsed;
    measured.insert(
        "idle_follower_cpu_share".into(),
        share(ThreadCpu::of(&follower_pid).since(&follower_before)).into(),
    );
    measured.insert(
        "idle_leader_cpu_share".into(),
        share(ThreadCpu::of(&leader_pid).since(&leader_before)).into(),
    );
    db.close().await.map_err(|e| e.to_string())?;
    Ok(Value::Object(measured))
}

/// Both modes, each on a store of its own.
pub async fn measure(
    base: &Path,
    store: &ToolStore,
    quick: bool,
    span: Duration,
) -> Result<Value, Failure> {
    let count = if quick { 2_000 } else { 20_000 };
    let default = one_mode(&base.join("default-mode"), store, false, count, span).await?;
    let spinning = one_mode(&base.join("spin-mode"), store, true, count, span).await?;
    Ok(json!({
        "spin_bound_us": SPIN.as_micros() as u64,
        "default": default,
        "spinning": spinning,
    }))
}

//! Recording ([`party_core::Recording`]) against none: two follower handles of this process,
//! each following a child leader of its own directory, one pair recording and one not;
//! pipelined gets and puts, 64 and 256 in flight, and full scans, measured on each pair in
//! turn, five times, so that both meet the same machine; medians of the rates and of the
//! CPU time both processes spent per operation or entry (steadier than rates on a shared
//! machine).

use std::path::Path;
use std::time::Duration;

use party_core::Db;
use serde_json::{json, Value};

use super::thread_cpu::ThreadCpu;
use super::{fill, full_scan, on_runtime, pipelined, start_leader_as, Workload};
use crate::children::Worker;
use crate::failure::Failure;
use crate::tool_store::ToolStore;

/// Measurements of each pair, alternating.
const ROUNDS: usize = 5;

/// A child leader of `dir` and this process following it, both recording into `record`
/// if given; the store filled.
async fn pair(
    dir: &Path,
    store: &ToolStore,
    record: Option<&Path>,
) -> Result<(Worker, Db), Failure> {
    let record_text = record.map(|dir| dir.to_str().ok_or("path")).transpose()?;
    let mode = match record_text {
        Some(record) => vec!["record", record, "idle"],
        None => vec!["idle"],
    };
    let leader = start_leader_as(dir, store, &mode)?;
    let options = store
        .options(dir)
        .record(record.map(party_core::Recording::new));
    let db = party_core::open(dir, options)
        .await
        .map_err(|e| e.to_string())?;
    fill(&db).await?;
    Ok((leader, db))
}

pub(super) async fn measure(
    base: &Path,
    store: &ToolStore,
    span: Duration,
) -> Result<Value, Failure> {
    let records = base.join("recordings");
    let (plain_leader, plain) = pair(&base.join("recording-off"), store, None).await?;
    let (recorded_leader, recorded) =
        pair(&base.join("recording-on"), store, Some(&records)).await?;
    // Rate and CPU µs per operation (or entry) of one measurement of `db`, led by `leader`.
    let measure = |db: &Db, leader: &Worker, load: Option<(usize, &Workload)>| {
        let (db, load, leader) = (
            db.clone(),
            load.map(|(depth, w)| (depth, w.clone())),
            leader.id(),
        );
        async move {
            let both = [std::process::id(), leader];
            let before = ThreadCpu::of(&both);
            let (done, rate) = match load {
                Some((depth, workload)) => on_runtime(pipelined(db, span, depth, workload)).await?,
                None => full_scan(&db).await?,
            };
            let spent = ThreadCpu::of(&both).since(&before).as_secs_f64() * 1e6 / done as f64;
            Ok::<_, Failure>((rate, spent))
        }
    };
    let (mut off, mut on, mut ratios) = (
        serde_json::Map::new(),
        serde_json::Map::new(),
        serde_json::Map::new(),
    );
    let (gets, puts) = (Workload::gets(), Workload::puts());
    let loads = [
        ("pipelined_64_get", Some((64, &gets))),
        ("pipelined_64_put", Some((64, &puts))),
        ("pipelined_256_get", Some((256, &gets))),
        ("pipelined_256_put", Some((256, &puts))),
        ("full_scan", None),
    ];
    for (figure, load) in loads {
        let (mut off_runs, mut on_runs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            off_runs.push(measure(&plain, &plain_leader, load).await?);
            on_runs.push(measure(&recorded, &recorded_leader, load).await?);
        }
        let (off_rate, off_cpu) = medians(&off_runs);
        let (on_rate, on_cpu) = medians(&on_runs);
        // A scan's figures are per entry.
        let (rate, cpu) = match load {
            Some(_) => ("ops_per_s", "cpu_us_per_op"),
            None => ("entries_per_s", "cpu_us_per_entry"),
        };
        off.insert(format!("{figure}_{rate}"), off_rate.into());
        off.insert(format!("{figure}_{cpu}"), off_cpu.into());
        on.insert(format!("{figure}_{rate}"), on_rate.into());
        on.insert(format!("{figure}_{cpu}"), on_cpu.into());
        let ratio = format!("{figure}_recorded_vs_off");
        ratios.insert(ratio, (on_rate / off_rate).into());
        let ratio = format!("{figure}_cpu_recorded_vs_off");
        ratios.insert(ratio, (on_cpu / off_cpu).into());
    }
    plain.close().await.map_err(|e| e.to_string())?;
    recorded.close().await.map_err(|e| e.to_string())?;
    Ok(json!({"off": off, "on": on, "ratios": ratios}))
}

/// The median rate and the median CPU time per operation of `runs`.
fn medians(runs: &[(f64, f64)]) -> (f64, f64) {
    let median = |mut figures: Vec<f64>| {
        figures.sort_by(f64::total_cmp);
        figures[figures.len() / 2]
    };
    (
        median(runs.iter().map(|run| run.0).collect()),
        median(runs.iter().map(|run| run.1).collect()),
    )
}

//! Hot keys: scans of a small range whose 16 keys are overwritten all the time. An LSM store
//! keeps every overwrite in its memtable until it flushes, and a scan that walks past all of
//! them is slow; measured against the same scans of the range left alone (quiet, and while as many
//! other keys are overwritten as fast, which loads the machine as much), and right after
//! the overwrites stop (before any flush).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use party_core::{Db, IterOptions, KeyRange};
use serde_json::{json, Value};

use super::{follow_child_leader, on_runtime, percentile, pipelined, Workload, VALUE};
use crate::failure::Failure;
use crate::tool_store::ToolStore;

const HOT_KEYS: u64 = 16;

fn hot_key(n: u64) -> Vec<u8> {
    format!("hot/{:02}", n % HOT_KEYS).into_bytes()
}

/// As many keys outside the scanned range: overwriting them loads the machine as much,
/// and leaves the scanned keys alone.
fn other_key(n: u64) -> Vec<u8> {
    format!("cold/{:02}", n % HOT_KEYS).into_bytes()
}

/// `count` scans of the hot range one after another: (p50 µs, p99 µs).
async fn scans(db: &Db, count: usize) -> Result<(f64, f64), String> {
    let options = IterOptions::default().range(KeyRange::all().gte("hot/").lt("hot0"));
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let began = Instant::now();
        let entries = db
            .iter(options.clone())
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        times.push(began.elapsed());
        if entries.len() as u64 != HOT_KEYS {
            return Err(format!("a scan of the hot keys found {}", entries.len()));
        }
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// 200 scans of the hot keys while `key`s are overwritten, 64 puts in flight: (p50 µs, p99
/// µs) of the scans, and the puts a second.
async fn scans_while_overwriting(
    db: &Db,
    key: fn(u64) -> Vec<u8>,
    span: Duration,
) -> Result<((f64, f64), f64), String> {
    let writing = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn({
        let (db, writing) = (db.clone(), writing.clone());
        async move {
            let puts = Workload::Puts {
                key,
                value: VALUE.to_vec(),
            };
            let mut written = 0;
            while writing.load(Ordering::Relaxed) {
                written += on_runtime(pipelined(db.clone(), span / 10, 64, puts.clone()))
                    .await?
                    .0;
            }
            Ok::<u64, String>(written)
        }
    });
    let started = Instant::now();
    let during = scans(db, 200).await;
    writing.store(false, Ordering::Relaxed);
    let written = writer.await.map_err(|e| e.to_string())??;
    Ok((during?, written as f64 / started.elapsed().as_secs_f64()))
}

pub(super) async fn measure(
    base: &Path,
    store: &ToolStore,
    span: Duration,
) -> Result<Value, Failure> {
    let (_leader, db) = follow_child_leader(&base.join("hot-keys"), store).await?;
    for n in 0..HOT_KEYS {
        db.put(hot_key(n), VALUE).await.map_err(|e| e.to_string())?;
    }
    let (quiet_p50, quiet_p99) = scans(&db, 200).await?;
    let ((elsewhere_p50, _), other_overwrites_per_s) =
        scans_while_overwriting(&db, other_key, span).await?;
    let ((during_p50, during_p99), overwrites_per_s) =
        scans_while_overwriting(&db, hot_key, span).await?;
    let (after_p50, after_p99) = on_runtime({
        let db = db.clone();
        async move { scans(&db, 200).await }
    })
    .await?;
    db.close().await.map_err(|e| e.to_string())?;
    Ok(json!({
        "quiet_scan_p50_us": quiet_p50,
        "quiet_scan_p99_us": quiet_p99,
        "during_overwrites_scan_p50_us": during_p50,
        "during_overwrites_scan_p99_us": during_p99,
        "during_other_overwrites_scan_p50_us": elsewhere_p50,
        "other_overwrites_per_s": other_overwrites_per_s,
        "after_overwrites_scan_p50_us": after_p50,
        "after_overwrites_scan_p99_us": after_p99,
        "overwrites_per_s": overwrites_per_s,
    }))
}

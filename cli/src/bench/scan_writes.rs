//! Writes during scans: another process's puts, one at a time, while this process scans the
//! whole store over and over, against the same puts with no scan running. A scan that
//! shares the leader's store thread with the writes shows up in their tail latency.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{fill, first_line, follow_child_leader, full_scans, leader_child};
use crate::failure::Failure;
use crate::tool_store::ToolStore;

/// p50 and p99 of `count` puts by a new follower process, in µs.
async fn writer_latency(dir: &Path, store: &ToolStore, count: u64) -> Result<(f64, f64), Failure> {
    let mut writer = leader_child(dir, store, &["puts", &count.to_string()])?;
    let answer = tokio::task::spawn_blocking(move || -> Result<String, String> {
        let ready = first_line(&mut writer)?;
        if ready != "ready follower" {
            return Err(format!("the writer of the scan bench said {ready:?}"));
        }
        first_line(&mut writer)
    })
    .await
    .map_err(|e| e.to_string())??;
    let figures: Vec<f64> = answer
        .strip_prefix("latency ")
        .map(|rest| rest.split(' ').filter_map(|w| w.parse().ok()).collect())
        .unwrap_or_default();
    match figures[..] {
        [p50, p99] => Ok((p50, p99)),
        _ => Err(format!("the writer of the scan bench said {answer:?}").into()),
    }
}

pub(super) async fn measure(base: &Path, store: &ToolStore, count: u64) -> Result<Value, Failure> {
    let dir = base.join("scan-writes");
    let (_leader, db) = follow_child_leader(&dir, store).await?;
    fill(&db).await?;
    let (quiet_p50, quiet_p99) = writer_latency(&dir, store, count).await?;
    let scanning = Arc::new(AtomicBool::new(true));
    let scans_done = Arc::new(AtomicU64::new(0));
    let scanner = tokio::spawn({
        let (db, scanning, scans_done) = (db.clone(), scanning.clone(), scans_done.clone());
        async move {
            while scanning.load(Ordering::Relaxed) {
                full_scans(db.clone(), 1).await?;
                scans_done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), String>(())
        }
    });
    let started = std::time::Instant::now();
    let during = writer_latency(&dir, store, count).await;
    scanning.store(false, Ordering::Relaxed);
    // Counted once the scan under way has ended too: a quick run's puts can end before
    // the first scan does.
    scanner.await.map_err(|e| e.to_string())??;
    let scans_per_s = scans_done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let (scan_p50, scan_p99) = during?;
    db.close().await.map_err(|e| e.to_string())?;
    Ok(json!({
        "quiet_put_p50_us": quiet_p50,
        "quiet_put_p99_us": quiet_p99,
        "during_scans_put_p50_us": scan_p50,
        "during_scans_put_p99_us": scan_p99,
        "scans_per_s": scans_per_s,
    }))
}

//! The change feed: put-to-delivery latency and delivered changes per second with one and
//! with eight subscriber processes.

use std::path::Path;
use std::time::Duration;

use party_core::{Db, Role};
use serde_json::{json, Value};

use super::{
    first_line, leader_child, micros_now, on_runtime, percentile, pipelined, Workload, VALUE,
};
use crate::failure::Failure;
use crate::out;
use crate::tool_store::ToolStore;

/// A subscriber of every key (bench-node mode `subscribe`): prints `watching` once
/// subscribed; then for the puts of `lat/…`, whose value is the wall-clock microsecond they
/// were issued at, it takes the time to delivery, and on `end/lat` prints `latency P50 P99
/// COUNT` (µs); it counts the puts of `thr/…` and on `end/thr` prints `throughput
/// CHANGES_PER_S COUNT`, from the first to the last, and ends.
pub(super) async fn subscriber(db: Db) -> Result<(), String> {
    let mut watch = db
        .watch(party_core::KeyRange::all())
        .await
        .map_err(|e| e.to_string())?;
    out::line("watching").map_err(|f| f.message)?;
    let mut latencies = Vec::new();
    let (mut first, mut last, mut count) = (0u64, 0u64, 0u64);
    while let Some(change) = watch.next().await {
        let party_core::Change::Put { key, value, .. } = change.map_err(|e| e.to_string())? else {
            continue;
        };
        let now = micros_now();
        match key.as_slice() {
            [b'l', b'a', b't', b'/', ..] => {
                let issued: u64 = String::from_utf8_lossy(&value).parse().unwrap_or(now);
                latencies.push(Duration::from_micros(now.saturating_sub(issued)));
            }
            [b't', b'h', b'r', b'/', ..] => {
                if count == 0 {
                    first = now;
                }
                last = now;
                count += 1;
            }
            b"end/lat" => {
                latencies.sort();
                let line = format!(
                    "latency {} {} {}",
                    percentile(&latencies, 0.5),
                    percentile(&latencies, 0.99),
                    latencies.len()
                );
                out::line(line).map_err(|f| f.message)?;
            }
            b"end/thr" => {
                let seconds = (last.saturating_sub(first)).max(1) as f64 / 1e6;
                let line = format!("throughput {} {count}", count as f64 / seconds);
                out::line(line).map_err(|f| f.message)?;
                return Ok(());
            }
            _ => {}
        }
    }
    Err("the subscription ended".into())
}

/// The change feed with `subscribers` processes following every key while this process
/// writes through a follower: the time from a put's issue to its delivery to each
/// subscriber, one put at a time (p50 and p99 over all subscribers), and the changes per
/// second each subscriber receives while puts go 64 at a time (the slowest one's).
async fn feed_with(
    dir: &Path,
    store: &ToolStore,
    db: &Db,
    subscribers: usize,
    span: Duration,
    count: u64,
) -> Result<Value, Failure> {
    let mut children = (0..subscribers)
        .map(|_| leader_child(dir, store, &["subscribe"]))
        .collect::<Result<Vec<_>, _>>()?;
    for child in &mut children {
        if first_line(child)? != "ready follower" || first_line(child)? != "watching" {
            return Err("a subscriber of the feed bench did not follow".into());
        }
    }
    for n in 0..count {
        db.put(format!("lat/{n:08}"), micros_now().to_string())
            .await
            .map_err(|e| e.to_string())?;
    }
    db.put("end/lat", "").await.map_err(|e| e.to_string())?;
    let (written, write_rate) = on_runtime(pipelined(
        db.clone(),
        span,
        64,
        Workload::Puts {
            key: |n| format!("thr/{n:010}").into_bytes(),
            value: VALUE.to_vec(),
        },
    ))
    .await?;
    db.put("end/thr", "").await.map_err(|e| e.to_string())?;
    let (mut p50s, mut p99s, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    for child in &mut children {
        let words = first_line(child)?;
        let latency: Vec<f64> = words
            .strip_prefix("latency ")
            .map(|rest| rest.split(' ').filter_map(|w| w.parse().ok()).collect())
            .unwrap_or_default();
        let words = first_line(child)?;
        let throughput: Vec<f64> = words
            .strip_prefix("throughput ")
            .map(|rest| rest.split(' ').filter_map(|w| w.parse().ok()).collect())
            .unwrap_or_default();
        let (&[p50, p99, seen_latency], &[rate, seen]) =
            (latency.as_slice(), throughput.as_slice())
        else {
            return Err(format!("a subscriber of the feed bench said {words:?}").into());
        };
        if seen_latency as u64 != count || seen as u64 != written {
            return Err(format!(
                "a subscriber saw {seen_latency} of {count} and {seen} of {written} changes"
            )
            .into());
        }
        p50s.push(p50);
        p99s.push(p99);
        rates.push(rate);
    }
    p50s.sort_by(f64::total_cmp);
    Ok(json!({
        "issue_to_delivery_p50_us": p50s[p50s.len() / 2],
        "issue_to_delivery_p99_us": p99s.iter().copied().fold(0.0, f64::max),
        "delivered_changes_per_s_slowest": rates.iter().copied().fold(f64::INFINITY, f64::min),
        "written_ops_per_s": write_rate,
    }))
}

pub(super) async fn feed(
    base: &Path,
    store: &ToolStore,
    span: Duration,
    quick: bool,
) -> Result<Value, Failure> {
    let dir = base.join("feed");
    let mut leader = leader_child(&dir, store, &["feed", "idle"])?;
    if first_line(&mut leader)? != "ready leader" {
        return Err("the feed bench's leader did not lead".into());
    }
    let db = crate::open_on(&dir, store).await?;
    if db.ready().await.map_err(|e| e.to_string())? != Role::Follower {
        return Err("this process did not follow".into());
    }
    let count = if quick { 500 } else { 5_000 };
    let mut report = serde_json::Map::new();
    for subscribers in [1, 8] {
        out::note(format_args!(
            "bench: change feed, {subscribers} subscribers…"
        ));
        report.insert(
            subscribers.to_string(),
            feed_with(&dir, store, &db, subscribers, span, count).await?,
        );
    }
    db.close().await.map_err(|e| e.to_string())?;
    Ok(Value::Object(report))
}

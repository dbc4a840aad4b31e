//! The node child process: a handle that leads, or follows and loads, watches, writes,
//! subscribes or answers probes.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use party_core::Db;

use super::feed::subscriber;
use super::transactions::one_at_a_time;
use super::{key, micros_now, on_runtime, pipelined, rss_kib, sequential, Workload, KEYS};
use crate::failure::Failure;
use crate::out;

/// The node worker `DIR BACKEND [feed] [spin] [record RECORD_DIR] MODE`: a handle (with a
/// change feed, in low-latency mode with [`super::SPIN`], recording into RECORD_DIR, when
/// told) that prints `ready ROLE` once settled, then
/// `idle` (waits), `load SECONDS` (64 gets in flight, prints `ops N`, then `rss KIB`: its resident
/// size then), `puts COUNT` (one put
/// at a time, then prints `latency P50 P99` in µs), or `watch` (one get at
/// a time forever, printing `gap FROM TO` in wall-clock microseconds after every stall over
/// a millisecond, `role NAME` on every change, and `opened MICROS` with the store's open
/// time when it takes over), or `probe` (prints `term N`, the term of its leader; then
/// idles, but whenever it loses its leader it asks a
/// get at once, and prints `answered MICROS ROLE TERM OPEN`: the wall-clock microsecond the
/// get completed, the role and the leader's term then, as far as the handle knows yet, and
/// the microseconds its store took to open if it leads).
pub async fn node(args: &[String]) -> Result<ExitCode, Failure> {
    let [dir, backend, mode @ ..] = args else {
        return Err(Failure::usage(
            "usage: bench-node DIR BACKEND [feed] [spin] [record RECORD_DIR] MODE",
        ));
    };
    let (feed, mode) = match mode {
        [first, rest @ ..] if first == "feed" => (true, rest),
        rest => (false, rest),
    };
    let (spin, mode) = match mode {
        [first, rest @ ..] if first == "spin" => (Some(super::SPIN), rest),
        rest => (None, rest),
    };
    let (record, mode) = match mode {
        [first, record, rest @ ..] if first == "record" => {
            (Some(party_core::Recording::new(record)), rest)
        }
        rest => (None, rest),
    };
    let store = crate::tool_store::ToolStore::from_word(backend)?;
    let mut options = store.options(dir.as_ref()).change_feed(feed).spin(spin);
    if record.is_some() {
        options = options.record(record);
    }
    let db = party_core::open(dir, options)
        .await
        .map_err(|e| e.to_string())?;
    let role = db.ready().await.map_err(|e| e.to_string())?;
    out::line(format_args!("ready {}", role.name()))?;
    match mode {
        [m] if m == "idle" => {
            let _ = std::io::stdin().read(&mut [0u8; 1]);
        }
        [m, seconds] if m == "load" => {
            let seconds: f64 = seconds.parse().map_err(|_| "load SECONDS")?;
            let ops = on_runtime(pipelined(
                db.clone(),
                Duration::from_secs_f64(seconds),
                64,
                Workload::gets(),
            ))
            .await?
            .0;
            out::line(format_args!("ops {ops}"))?;
            match rss_kib(std::process::id()) {
                Some(kib) => out::line(format_args!("rss {kib}"))?,
                None => out::line("rss unknown")?,
            }
        }
        [m] if m == "watch" => {
            let mut roles = db.watch_role();
            let mut last = micros_now();
            let mut n = 0u64;
            loop {
                db.get(key(n % KEYS)).await.map_err(|e| e.to_string())?;
                n += 1;
                let now = micros_now();
                if now - last > 1_000 {
                    out::line(format_args!("gap {last} {now}"))?;
                }
                if roles.has_changed() {
                    let state = roles.current();
                    out::line(format_args!("role {}", state.role.name()))?;
                    if let Some(open) = state.store_open_time {
                        out::line(format_args!("opened {}", open.as_micros()))?;
                    }
                }
                last = now;
            }
        }
        [m, count] if m == "puts" => {
            let count: u64 = count.parse().map_err(|_| "puts COUNT")?;
            let (p50, p99, _) = on_runtime(sequential(db.clone(), count, true)).await?;
            out::line(format_args!("latency {p50} {p99}"))?;
        }
        [m, seconds, what] if m == "writes" => {
            let seconds: f64 = seconds.parse().map_err(|_| "writes SECONDS WHAT")?;
            // Together with the others: each starts when told, on one line of stdin.
            let _ = std::io::stdin().read(&mut [0u8; 1]);
            let counter = match what.as_str() {
                "shared" => Some("count/shared".to_owned()),
                "own" => Some(format!("count/{}", std::process::id())),
                _ => None,
            };
            let ops = on_runtime(one_at_a_time(
                db.clone(),
                Duration::from_secs_f64(seconds),
                counter,
            ))
            .await?;
            out::line(format_args!("ops {ops}"))?;
        }
        [m] if m == "subscribe" => on_runtime(subscriber(db.clone())).await?,
        [m] if m == "probe" => on_runtime(probe(db.clone())).await?,
        _ => {
            return Err(
                "MODE is idle, load SECONDS, watch, puts COUNT, writes SECONDS WHAT, subscribe or probe".into(),
            )
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `probe` mode: see [`node`].
async fn probe(db: Db) -> Result<(), String> {
    let line = |text: std::fmt::Arguments| out::line(text).map_err(|f| f.message);
    let mut roles = db.watch_role();
    let mut answered_by = roles.current().term;
    line(format_args!("term {}", answered_by.unwrap_or(0)))?;
    loop {
        let state = roles.changed().await.map_err(|e| e.to_string())?;
        // Seen leaderless, or (when that passed unseen) served by another leader.
        if state.role == party_core::Role::Electing || state.term != answered_by {
            db.get(key(0)).await.map_err(|e| e.to_string())?;
            let micros = micros_now();
            let state = db.watch_role().current();
            answered_by = state.term;
            let (role, term) = (state.role.name(), state.term.unwrap_or(0));
            let opened = state.store_open_time.map_or(0, |open| open.as_micros());
            line(format_args!("answered {micros} {role} {term} {opened}"))?;
        }
    }
}

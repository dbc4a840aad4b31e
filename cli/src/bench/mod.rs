//! `party bench`: what a user cares about, measured side by side in one run on this machine.
//!
//! - baseline ([`baseline`]): a raw local-socket ping-pong with party's framing (a child
//!   echoes a get's reply for every request), sequential round trips and pipelined messages
//!   per second;
//! - in-process: this process as leader, gets and puts through its own handle; and
//!   ([`store_alone`]) the same puts written straight into a store in groups, no party;
//! - one follower: this process following a child leader, sequential and pipelined;
//! - low-latency mode ([`low_latency`]): one follower's sequential gets and puts with
//!   both ends polling before they park, against the default, with the CPU both spend;
//! - recording ([`recording`]): one follower's pipelined gets and puts, and full scans, with
//!   both processes recording for `party-sim --replay`, against neither;
//! - big values ([`values`]): MB/s of 1 KiB, 64 KiB and 1 MiB puts and gets, in-process,
//!   through a follower, and through a raw socket with party's framing (the ceiling);
//! - writes during scans ([`scan_writes`]): another process's put latency while this one
//!   scans the whole store, against the same with no scan;
//! - hot keys ([`hot_keys`]): scans of 16 keys overwritten all the time, against the same
//!   scans when the keys are left alone (quiet, and while other keys are overwritten) and
//!   right after the overwrites stop;
//! - four followers at once (child processes), aggregate gets per second;
//! - failover ([`failover`]): the leader SIGKILLed repeatedly with three followers reading;
//!   the time until every follower has completed an operation again; and the same on a store
//!   whose past holds 100 000 clients (their dedup records), which a new leader must not read;
//! - transactions ([`transactions`]), the change feed ([`feed`]), one-shot commands
//!   ([`one_shot`]);
//! - failover at scale: the leader SIGKILLed with 1, 16 and 64 idle followers; the time
//!   until every one of them has answered a get asked right after the kill, and until the
//!   new leader has (and of that, its store's open);
//! - memory: resident size of a follower after a load (one of the four followers), of an
//!   idle follower, and of a fresh leader before and after 64 idle followers joined (the
//!   cost of one follower to its leader).
//!
//! The ratios the targets are set in close the report, among them each of issue 18's rows
//! over the JavaScript anchor's ([`anchor`]).
//!
//! The child processes' roles are in [`node`](mod@node); the report for people in [`table`].
//! Speed is only ever measured here, never asserted in tests.

mod anchor;
mod baseline;
mod failover;
mod feed;
mod floor;
mod hot_keys;
mod low_latency;
mod node;
mod one_shot;
mod recording;
mod scan_writes;
mod store_alone;
mod table;
mod thread_cpu;
mod transactions;
mod values;

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use party_core::{Db, IterOptions, Role};
use serde_json::{json, Value};

use crate::children::{self, Worker};
use crate::failure::Failure;
use crate::out;
use crate::tool_store::ToolStore;

pub use baseline::echo;
pub use floor::{floor, FLOOR};
pub use node::node;

/// The worker that echoes frames, for the socket baseline.
pub const ECHO: &str = "bench-echo";
/// The worker that holds a handle: a leader, or a loaded or watching follower.
pub const NODE: &str = "bench-node";

const KEYS: u64 = 100_000;
/// Clients that wrote once in the past of the store of the second failover measure.
const PAST_CLIENTS: u64 = 100_000;
const VALUE: [u8; 100] = [b'v'; 100];
/// How long a waiting end polls in the low-latency measurements.
const SPIN: Duration = Duration::from_micros(200);

fn key(n: u64) -> [u8; 16] {
    let mut key = [b'k'; 16];
    key[8..].copy_from_slice(&n.to_be_bytes());
    key
}

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Percentile of sorted durations, in microseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

fn first_line(child: &mut Worker) -> Result<String, String> {
    let stdout = child.stdout.as_mut().ok_or("no stdout")?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte).map_err(|e| e.to_string())? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// What of a process's resident memory is its own: most of an idle follower's resident size
/// is the program's code and libraries, shared with every other process running them (and
/// moved by how the code happens to be laid out: half a megabyte between two builds).
fn private_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = rollup.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("Private_Clean:")? + field("Private_Dirty:")?)
}

// ---- measurements ---------------------------------------------------------------------

/// Runs a measurement loop as a task on the runtime, where an async program's work runs,
/// rather than on the thread blocked in `block_on`: waking that thread for every reply is
/// a futex round trip (~40 µs here when the other core idles), which would be counted as
/// party's. The report also gives the sequential get from that thread, for comparison.
async fn on_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    tokio::spawn(work)
        .await
        .map_err(|e| format!("a measurement task failed: {e}"))?
}

/// What a pipelined measurement does, the n-th operation with `key(n)`.
#[derive(Clone)]
enum Workload {
    Gets {
        key: fn(u64) -> Vec<u8>,
    },
    Puts {
        key: fn(u64) -> Vec<u8>,
        value: Vec<u8>,
    },
}

impl Workload {
    /// Gets of the bench's keys, round and round.
    fn gets() -> Workload {
        Workload::Gets { key: bench_key }
    }

    /// Puts of the bench's keys, round and round.
    fn puts() -> Workload {
        Workload::Puts {
            key: bench_key,
            value: VALUE.to_vec(),
        }
    }
}

fn bench_key(n: u64) -> Vec<u8> {
    key(n % KEYS).to_vec()
}

/// Operations per second with `depth` in flight for `duration`: (operations done, per second).
async fn pipelined(
    db: Db,
    duration: Duration,
    depth: usize,
    workload: Workload,
) -> Result<(u64, f64), String> {
    let start = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    let mut done = 0u64;
    let mut n = 0u64;
    while start.elapsed() < duration {
        while in_flight.len() < depth {
            let op: std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), party_core::Error>> + Send>,
            > = match &workload {
                Workload::Puts { key, value } => Box::pin(db.put(key(n), value)),
                Workload::Gets { key } => {
                    let get = db.get(key(n));
                    Box::pin(async move { get.await.map(|_| ()) })
                }
            };
            in_flight.push_back(op);
            n += 1;
        }
        if let Some(op) = in_flight.pop_front() {
            op.await.map_err(|e| e.to_string())?;
            done += 1;
        }
    }
    for op in in_flight {
        op.await.map_err(|e| e.to_string())?;
        done += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok((done, done as f64 / seconds))
}

/// Entries per second of a full scan: the median of `runs` scans (one takes ~0.1 s).
async fn full_scans(db: Db, runs: usize) -> Result<f64, String> {
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(full_scan(&db).await?.1);
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// One full scan: the entries, and how many a second.
async fn full_scan(db: &Db) -> Result<(u64, f64), String> {
    let start = Instant::now();
    let scanned = db
        .iter(IterOptions::default())
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .len() as u64;
    Ok((scanned, scanned as f64 / start.elapsed().as_secs_f64()))
}

/// Sequential round trips: (p50 µs, p99 µs, ops/s).
async fn sequential(db: Db, count: u64, puts: bool) -> Result<(f64, f64, f64), String> {
    let mut times = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for n in 0..count {
        let began = Instant::now();
        if puts {
            db.put(key(n % KEYS), VALUE)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            db.get(key(n % KEYS)).await.map_err(|e| e.to_string())?;
        }
        times.push(began.elapsed());
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), rate))
}

/// Writes the benchmark's 100 000 keys, 256 in flight.
async fn fill(db: &Db) -> Result<(), String> {
    let mut pending = std::collections::VecDeque::new();
    for n in 0..KEYS {
        pending.push_back(db.put(key(n), VALUE));
        if pending.len() >= 256 {
            pending
                .pop_front()
                .expect("non-empty")
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    for put in pending {
        put.await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A child process that leads `dir` and idles, and this process following it.
async fn follow_child_leader(dir: &Path, store: &ToolStore) -> Result<(Worker, Db), Failure> {
    let leader = start_leader(dir, store)?;
    let db = crate::open_on(dir, store).await?;
    if db.ready().await.map_err(|e| e.to_string())? != Role::Follower {
        return Err(format!(
            "this process did not follow the leader of {}",
            dir.display()
        )
        .into());
    }
    Ok((leader, db))
}

/// A child process that leads `dir` and idles.
fn start_leader(dir: &Path, store: &ToolStore) -> Result<Worker, Failure> {
    start_leader_as(dir, store, &["idle"])
}

/// A child process that leads `dir` as `mode` says (see [`node`](mod@node)).
fn start_leader_as(dir: &Path, store: &ToolStore, mode: &[&str]) -> Result<Worker, Failure> {
    let mut leader = leader_child(dir, store, mode)?;
    if first_line(&mut leader)? != "ready leader" {
        return Err(format!("the process started to lead {} did not", dir.display()).into());
    }
    Ok(leader)
}

fn leader_child(dir: &Path, store: &ToolStore, mode: &[&str]) -> Result<Worker, Failure> {
    let word = store.word();
    let mut args = vec![dir.to_str().ok_or("path")?, &word];
    args.extend_from_slice(mode);
    children::spawn(NODE, &args)
}

/// `party bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Answer with one JSON object (the schema is in the README).
    #[arg(long)]
    pub json: bool,
    /// Shorter runs: a quick look, not figures to compare.
    #[arg(long)]
    quick: bool,
    /// Only these measurements (repeat the flag or separate by commas); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
}

/// The measurements, each of which `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Baseline,
    InProcess,
    Follower,
    LowLatency,
    Recording,
    Values,
    FourFollowers,
    ScanWrites,
    HotKeys,
    Failover,
    FailoverIdle,
    Transactions,
    Feed,
    OneShot,
}

pub async fn run(store: &ToolStore, as_json: bool, args: BenchArgs) -> Result<ExitCode, Failure> {
    children::clean_up_when_interrupted()?;
    let base = children::TempDir::new("party-bench-")?;
    let report = measure(base.path(), store, &args).await?;
    if as_json {
        out::line(report)?;
    } else {
        out::line(table::table(&report).join("\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// How long, and how often, each measurement runs.
struct Lengths {
    span: Duration,
    kills: usize,
    quick: bool,
}

async fn measure(base: &Path, store: &ToolStore, args: &BenchArgs) -> Result<Value, Failure> {
    let quick = args.quick;
    let lengths = Lengths {
        span: Duration::from_millis(if quick { 300 } else { 2000 }),
        kills: if quick { 3 } else { 20 },
        quick,
    };
    let span = lengths.span;
    let wanted = |section| args.only.is_empty() || args.only.contains(&section);
    std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
    let mut report = serde_json::Map::new();
    report.insert("backend".into(), store.kind().name().into());
    if wanted(Section::Baseline) {
        out::note(format_args!("bench: raw socket baseline…"));
        report.insert("baseline".into(), baseline::socket_baseline(base)?);
    }
    if wanted(Section::InProcess) {
        out::note(format_args!("bench: leader in-process…"));
        report.insert("in_process".into(), in_process(base, store, span).await?);
    }
    if wanted(Section::Follower) {
        out::note(format_args!("bench: one follower…"));
        report.insert(
            "one_follower".into(),
            one_follower(base, store, &lengths).await?,
        );
    }
    if wanted(Section::LowLatency) {
        out::note(format_args!("bench: low-latency mode…"));
        report.insert(
            "low_latency".into(),
            low_latency::measure(base, store, quick, span).await?,
        );
    }
    if wanted(Section::Recording) {
        out::note(format_args!("bench: recording…"));
        report.insert(
            "recording".into(),
            recording::measure(base, store, span).await?,
        );
    }
    if wanted(Section::Values) {
        out::note(format_args!("bench: big values…"));
        report.insert(
            "big_values".into(),
            values::measure(base, store, span / 2).await?,
        );
    }
    if wanted(Section::FourFollowers) {
        out::note(format_args!("bench: four followers…"));
        let (rate, rss) = four_followers(base, store, span).await?;
        report.insert("four_followers_get_ops_per_s".into(), rate.into());
        report.insert("loaded_follower_rss_kib".into(), rss.into());
    }
    if wanted(Section::ScanWrites) {
        out::note(format_args!("bench: writes during full scans…"));
        let count = if quick { 500 } else { 5_000 };
        let measured = scan_writes::measure(base, store, count).await?;
        report.insert("writes_during_scans".into(), measured);
    }
    if wanted(Section::HotKeys) {
        out::note(format_args!("bench: scans of overwritten keys…"));
        report.insert(
            "hot_keys".into(),
            hot_keys::measure(base, store, span).await?,
        );
    }
    if wanted(Section::Failover) {
        let kills = lengths.kills;
        out::note(format_args!("bench: failover ×{kills}…"));
        let failover = failover::failovers(&base.join("failover"), store, kills).await?;
        report.insert("failover".into(), failover);
        out::note(format_args!(
            "bench: failover ×{kills} after {PAST_CLIENTS} past clients…"
        ));
        let past = base.join("failover-past");
        failover::with_past_clients(&past, store, PAST_CLIENTS).await?;
        let failover_past = failover::failovers(&past, store, kills).await?;
        report.insert("failover_past_clients".into(), PAST_CLIENTS.into());
        report.insert("failover_after_past_clients".into(), failover_past);
    }
    if wanted(Section::FailoverIdle) {
        let mut at_scale = serde_json::Map::new();
        let kills = lengths.kills.div_ceil(4);
        for followers in [1, 16, 64] {
            out::note(format_args!(
                "bench: failover ×{kills} with {followers} idle followers…"
            ));
            let dir = base.join(format!("failover-{followers}"));
            let measured = failover::failover_at_scale(&dir, store, followers, kills)?;
            at_scale.insert(followers.to_string(), measured);
        }
        report.insert("failover_idle_followers".into(), Value::Object(at_scale));
        out::note(format_args!(
            "bench: the floor of failover ×{kills}, 64 minimal processes…"
        ));
        let floor = floor::failover(&base.join("failover-floor"), 64, kills)?;
        report.insert("failover_idle_floor".into(), json!({ "64": floor }));
        out::note(format_args!(
            "bench: 16 followers waiting while another program holds the store…"
        ));
        let waiting = failover::waiting_for_a_held_store(&base.join("held-store"), store, 16)?;
        report.insert("followers_waiting_for_a_held_store".into(), waiting);
    }
    if wanted(Section::Transactions) {
        let transactions = transactions::transactions(base, store, span)?;
        report.insert("transactions".into(), transactions);
    }
    if wanted(Section::Feed) {
        report.insert("feed".into(), feed::feed(base, store, span, quick).await?);
    }
    if wanted(Section::OneShot) {
        out::note(format_args!("bench: one-shot commands…"));
        let runs = if quick { 3 } else { 15 };
        let one_shot = one_shot::one_shot_commands(base, store, runs)?;
        report.insert("one_shot".into(), one_shot);
    }
    let mut report = Value::Object(report);
    report["memory_kib"] = memory(&report);
    report["ratios"] = ratios(&report);
    Ok(report)
}

/// This process as leader: gets and puts, 256 in flight; then the store alone.
async fn in_process(base: &Path, store: &ToolStore, span: Duration) -> Result<Value, Failure> {
    let db = crate::open_on(&base.join("local"), store).await?;
    if db.ready().await.map_err(|e| e.to_string())? != Role::Leader {
        return Err("the in-process handle did not lead".into());
    }
    fill(&db).await?;
    let get = on_runtime(pipelined(db.clone(), span, 256, Workload::gets()))
        .await?
        .1;
    let put = on_runtime(pipelined(db.clone(), span, 256, Workload::puts()))
        .await?
        .1;
    let scan = on_runtime(full_scans(db.clone(), 5)).await?;
    db.close().await.map_err(|e| e.to_string())?;
    let alone = store_alone::store_alone(&base.join("store-alone"), store, span)?;
    Ok(json!({
        "get_ops_per_s": get,
        "put_ops_per_s": put,
        "scan_entries_per_s": scan,
        "store_alone": alone,
    }))
}

/// This process following a child leader: sequential round trips, pipelined at 16, 64 and
/// 256 in flight, and full scans.
async fn one_follower(base: &Path, store: &ToolStore, lengths: &Lengths) -> Result<Value, Failure> {
    let (span, quick) = (lengths.span, lengths.quick);
    let (_leader, db) = follow_child_leader(&base.join("shared"), store).await?;
    fill(&db).await?;
    let count = if quick { 2_000 } else { 20_000 };
    let (get_p50, get_p99, get_rate) = on_runtime(sequential(db.clone(), count, false)).await?;
    let (put_p50, put_p99, put_rate) = on_runtime(sequential(db.clone(), count, true)).await?;
    let (main_thread_get_p50, _, _) = sequential(db.clone(), count, false).await?;
    let mut depths = serde_json::Map::new();
    for depth in [16, 64, 256] {
        let get = on_runtime(pipelined(db.clone(), span, depth, Workload::gets()))
            .await?
            .1;
        let put = on_runtime(pipelined(db.clone(), span, depth, Workload::puts()))
            .await?
            .1;
        depths.insert(
            depth.to_string(),
            json!({"get_ops_per_s": get, "put_ops_per_s": put}),
        );
    }
    let scan_rate = on_runtime(full_scans(db.clone(), if quick { 3 } else { 5 })).await?;
    db.close().await.map_err(|e| e.to_string())?;
    Ok(json!({
        "sync_get": {"p50_us": get_p50, "p99_us": get_p99, "ops_per_s": get_rate},
        "sync_put": {"p50_us": put_p50, "p99_us": put_p99, "ops_per_s": put_rate},
        "sync_get_from_block_on_thread_p50_us": main_thread_get_p50,
        "pipelined": depths,
        "scan_entries_per_s": scan_rate,
    }))
}

/// Four follower processes at once, 64 gets in flight each: gets per second in all, and
/// the largest resident size of one of them at the end (a follower's own memory under
/// load, in a fresh process).
async fn four_followers(
    base: &Path,
    store: &ToolStore,
    span: Duration,
) -> Result<(f64, Option<u64>), Failure> {
    let dir = base.join("four");
    let _leader = start_leader(&dir, store)?;
    let keys = crate::open_on(&dir, store).await?;
    fill(&keys).await?;
    keys.close().await.map_err(|e| e.to_string())?;
    let seconds = span.as_secs_f64().to_string();
    let mut loaders = Vec::new();
    for _ in 0..4 {
        loaders.push(leader_child(&dir, store, &["load", &seconds])?);
    }
    let mut aggregate = 0u64;
    let mut largest_rss = None;
    for mut loader in loaders {
        let _ready = first_line(&mut loader)?;
        let ops = first_line(&mut loader)?;
        aggregate += ops
            .strip_prefix("ops ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let rss = first_line(&mut loader)?;
        let rss: Option<u64> = rss.strip_prefix("rss ").and_then(|n| n.parse().ok());
        largest_rss = largest_rss.max(rss);
        let _ = loader.wait();
    }
    Ok((aggregate as f64 / span.as_secs_f64(), largest_rss))
}

/// The memory figures, gathered from the measurements that took them.
fn memory(report: &Value) -> Value {
    let scale = &report["failover_idle_followers"]["64"];
    json!({
        "loaded_follower_rss": report["loaded_follower_rss_kib"],
        "idle_follower_rss": scale["idle_follower_rss_kib"],
        "idle_follower_private": scale["idle_follower_private_kib"],
        "fresh_leader_rss": scale["fresh_leader_rss_kib"],
        "leader_rss_with_64_idle_followers": scale["leader_rss_with_followers_kib"],
        "leader_rss_per_idle_follower": scale["leader_rss_per_follower_kib"],
    })
}

/// What the report's figures say side by side (null where a side was not measured).
fn ratios(report: &Value) -> Value {
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let (local, follower) = (&report["in_process"], &report["one_follower"]);
    let one_shot = &report["one_shot"];
    json!({
        "big_values_follower_vs_in_process":
            values::ratios(&report["big_values"], "follower", "in_process"),
        "big_values_follower_vs_socket": values::ratios(&report["big_values"], "follower", "socket"),
        "big_values_socket_vs_in_process":
            values::ratios(&report["big_values"], "socket", "in_process"),
        "follower_pipelined_get_vs_in_process":
            number(&follower["pipelined"]["256"]["get_ops_per_s"]) / number(&local["get_ops_per_s"]),
        "follower_pipelined_put_vs_in_process":
            number(&follower["pipelined"]["256"]["put_ops_per_s"]) / number(&local["put_ops_per_s"]),
        "follower_pipelined_64_put_vs_store_alone_16": number(&follower["pipelined"]["64"]["put_ops_per_s"])
            / number(&local["store_alone"]["put_ops_per_s_in_groups_of"]["16"]),
        "follower_scan_vs_in_process":
            number(&follower["scan_entries_per_s"]) / number(&local["scan_entries_per_s"]),
        "follower_sync_p50_vs_socket_p50":
            number(&follower["sync_get"]["p50_us"]) / number(&report["baseline"]["rtt_p50_us"]),
        "follower_spinning_sync_p50_vs_spinning_socket_p50":
            number(&report["low_latency"]["spinning"]["sync_get"]["p50_us"])
                / number(&report["baseline"]["spinning_rtt_p50_us"]),
        "failover_64_idle_vs_floor":
            number(&report["failover_idle_followers"]["64"]["all_answered_p50_ms"])
                / number(&report["failover_idle_floor"]["64"]["all_answered_p50_ms"]),
        "one_shot_put_vs_process_start":
            number(&one_shot["put_as_leader_p50_ms"]) / number(&one_shot["process_start_p50_ms"]),
        "times_rave_level": anchor::times_anchor(report),
    })
}

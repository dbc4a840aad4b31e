//! `party bench`: what a user cares about, measured side by side in one run on this machine.
//!
//! - baseline: a raw local-socket ping-pong with party's framing (a child echoes a get's
//!   reply for every request), sequential round trips and pipelined messages per second;
//! - in-process: this process as leader, gets and puts through its own handle;
//! - one follower: this process following a child leader, sequential and pipelined;
//! - four followers at once (child processes), aggregate gets per second;
//! - failover: the leader SIGKILLed repeatedly with three followers reading; the time until
//!   every follower has completed an operation again; and the same on a store whose past
//!   holds 100 000 clients (their dedup records), which a new leader must not read;
//! - memory: resident size of a follower, and of a leader with eight idle followers.
//!
//! Speed is only ever measured here, never asserted in tests.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use party_core::{Db, IterOptions, Role};
use party_proto::wire::{
    encode_frame, ClientMessage, FrameDecoder, ReadOp, Response, ServerMessage,
};
use party_proto::RequestId;
use serde_json::{json, Value};

use crate::children::{self, Worker};
use crate::failure::Failure;
use crate::out;
use crate::tool_store::ToolStore;

/// The worker that echoes frames, for the socket baseline.
pub const ECHO: &str = "bench-echo";
/// The worker that holds a handle: a leader, or a loaded or watching follower.
pub const NODE: &str = "bench-node";

const KEYS: u64 = 100_000;
/// Clients that wrote once in the past of the store of the second failover measure.
const PAST_CLIENTS: u64 = 100_000;
const VALUE: [u8; 100] = [b'v'; 100];
/// The puts of the pipelined measurements: the bench's keys, round and round.
const BENCH_PUTS: Option<fn(u64) -> Vec<u8>> = Some(|n| key(n % KEYS).to_vec());
const CAP: u32 = 1 << 26;

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

// ---- child roles --------------------------------------------------------------------

/// The echo worker `SOCKET`: answers every request frame with a get's reply frame.
pub fn echo(args: &[String]) -> Result<ExitCode, Failure> {
    let [socket] = args else {
        return Err(Failure::usage("usage: bench-echo SOCKET"));
    };
    let listener = UnixListener::bind(socket).map_err(|e| e.to_string())?;
    out::line("ready")?;
    let (mut stream, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(CAP);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let n = stream.read(&mut buffer).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        let mut input = &buffer[..n];
        while let Some(message) = decoder
            .decode::<ClientMessage>(&mut input)
            .map_err(|e| e.to_string())?
        {
            if let ClientMessage::Read { id, .. } = message {
                let reply = ServerMessage::Reply {
                    id,
                    result: Ok(Response::Value(Some(VALUE.to_vec()))),
                };
                encode_frame(&reply, CAP, &mut out).map_err(|e| e.to_string())?;
            }
        }
        stream.write_all(&out).map_err(|e| e.to_string())?;
        out.clear();
    }
}

/// The node worker `DIR BACKEND MODE`: a handle that prints `ready ROLE` once settled, then
/// `idle` (waits), `load SECONDS` (64 gets in flight, prints `ops N`), or `watch` (one get at
/// a time forever, printing `gap FROM TO` in wall-clock microseconds after every stall over
/// a millisecond, `role NAME` on every change, and `opened MICROS` with the store's open
/// time when it takes over).
pub async fn node(args: &[String]) -> Result<ExitCode, Failure> {
    let [dir, backend, mode @ ..] = args else {
        return Err(Failure::usage("usage: bench-node DIR BACKEND [feed] MODE"));
    };
    // `feed` first: the handle keeps a change feed when it leads.
    let (feed, mode) = match mode {
        [first, rest @ ..] if first == "feed" => (true, rest),
        rest => (false, rest),
    };
    let store = crate::tool_store::ToolStore::from_word(backend)?;
    let db = party_core::open(dir, store.options(dir.as_ref()).change_feed(feed))
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
                None,
            ))
            .await?
            .0;
            out::line(format_args!("ops {ops}"))?;
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
        _ => {
            return Err(
                "MODE is idle, load SECONDS, watch, writes SECONDS WHAT or subscribe".into(),
            )
        }
    }
    Ok(ExitCode::SUCCESS)
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

/// Operations per second with `depth` in flight for `duration`: gets, or puts (of
/// `put_key(n)` for the n-th, when given; else of the bench's keys).
async fn pipelined(
    db: Db,
    duration: Duration,
    depth: usize,
    put_key: Option<fn(u64) -> Vec<u8>>,
) -> Result<(u64, f64), String> {
    let start = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    let mut done = 0u64;
    let mut n = 0u64;
    while start.elapsed() < duration {
        while in_flight.len() < depth {
            let op: std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(), party_core::Error>> + Send>,
            > = if let Some(put_key) = put_key {
                Box::pin(db.put(put_key(n), VALUE))
            } else {
                let get = db.get(key(n % KEYS));
                Box::pin(async move { get.await.map(|_| ()) })
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

/// Writes done in `duration`, one at a time: increments of `counter` by transaction, or
/// plain puts when `None`.
async fn one_at_a_time(db: Db, duration: Duration, counter: Option<String>) -> Result<u64, String> {
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

/// A subscriber of every key (bench-node mode `subscribe`): prints `watching` once
/// subscribed; then for the puts of `lat/…`, whose value is the wall-clock microsecond they
/// were issued at, it takes the time to delivery, and on `end/lat` prints `latency P50 P99
/// COUNT` (µs); it counts the puts of `thr/…` and on `end/thr` prints `throughput
/// CHANGES_PER_S COUNT`, from the first to the last, and ends.
async fn subscriber(db: Db) -> Result<(), String> {
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
        Some(|n: u64| format!("thr/{n:010}").into_bytes()),
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

async fn feed(
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

/// Transactions per second by 1, 4 and 16 processes, contended and not, next to plain puts.
fn transactions(base: &Path, store: &ToolStore, span: Duration) -> Result<Value, Failure> {
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

/// Entries per second of a full scan: the median of `runs` scans (one takes ~0.1 s).
async fn full_scans(db: Db, runs: usize) -> Result<f64, String> {
    let mut rates = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let scanned = db
            .iter(IterOptions::default())
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .len();
        rates.push(scanned as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
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

fn socket_baseline(dir: &Path) -> Result<Value, Failure> {
    let socket = dir.join("echo.sock");
    let mut echo = children::spawn(ECHO, &[&socket])?;
    if first_line(&mut echo)? != "ready" {
        return Err("the echo process did not start".into());
    }
    let mut stream = UnixStream::connect(&socket).map_err(|e| e.to_string())?;
    let mut reader = stream.try_clone().map_err(|e| e.to_string())?;
    let mut decoder = FrameDecoder::new(CAP);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut frame = Vec::new();
    let request = |id: u64, frame: &mut Vec<u8>| {
        let message = ClientMessage::Read {
            id: RequestId(id),
            op: ReadOp::Get {
                key: key(id).to_vec(),
            },
        };
        encode_frame(&message, CAP, frame).map(|_| ())
    };
    let mut read_replies = |count: usize, reader: &mut UnixStream| -> Result<(), String> {
        let mut got = 0;
        while got < count {
            let n = reader.read(&mut buffer).map_err(|e| e.to_string())?;
            let mut input = &buffer[..n];
            while decoder
                .decode::<ServerMessage>(&mut input)
                .map_err(|e| e.to_string())?
                .is_some()
            {
                got += 1;
            }
        }
        Ok(())
    };
    let mut times = Vec::new();
    for id in 0..20_000u64 {
        frame.clear();
        request(id, &mut frame).map_err(|e| e.to_string())?;
        let began = Instant::now();
        stream.write_all(&frame).map_err(|e| e.to_string())?;
        read_replies(1, &mut reader)?;
        times.push(began.elapsed());
    }
    times.sort();
    // Pipelined: a writer thread keeps sending while this thread reads.
    let total = 200_000u64;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let sender = std::thread::spawn(move || -> Result<(), String> {
        let mut batch = Vec::new();
        for id in 0..total {
            request(id, &mut batch).map_err(|e| e.to_string())?;
            if batch.len() > 16 * 1024 {
                writer.write_all(&batch).map_err(|e| e.to_string())?;
                batch.clear();
            }
        }
        writer.write_all(&batch).map_err(|e| e.to_string())
    });
    read_replies(total as usize, &mut reader)?;
    sender.join().map_err(|_| "sender panicked")??;
    let pipelined = total as f64 / start.elapsed().as_secs_f64();
    drop(echo);
    Ok(json!({
        "rtt_p50_us": percentile(&times, 0.5),
        "rtt_p99_us": percentile(&times, 0.99),
        "pipelined_msgs_per_s": pipelined,
    }))
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

/// A child process that leads `dir` and idles.
fn start_leader(dir: &Path, store: &ToolStore) -> Result<Worker, Failure> {
    let mut leader = leader_child(dir, store, &["idle"])?;
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
    /// Shorter runs: a quick look, not figures to compare.
    #[arg(long)]
    quick: bool,
}

pub async fn run(store: &ToolStore, as_json: bool, args: BenchArgs) -> Result<ExitCode, Failure> {
    children::clean_up_when_interrupted()?;
    let base = children::TempDir::new("party-bench-")?;
    let report = measure(base.path(), store, args.quick).await?;
    if as_json {
        out::line(report)?;
    } else {
        out::line(table(&report).join("\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn measure(base: &Path, store: &ToolStore, quick: bool) -> Result<Value, Failure> {
    let span = Duration::from_millis(if quick { 300 } else { 2000 });
    let kills = if quick { 3 } else { 20 };
    std::fs::create_dir_all(base).map_err(|e| e.to_string())?;
    out::note(format_args!("bench: raw socket baseline…"));
    let baseline = socket_baseline(base)?;

    out::note(format_args!("bench: leader in-process…"));
    let local_dir = base.join("local");
    let db = crate::open_on(&local_dir, store).await?;
    if db.ready().await.map_err(|e| e.to_string())? != Role::Leader {
        return Err("the in-process handle did not lead".into());
    }
    fill(&db).await?;
    let local_get = on_runtime(pipelined(db.clone(), span, 256, None)).await?.1;
    let local_put = on_runtime(pipelined(db.clone(), span, 256, BENCH_PUTS))
        .await?
        .1;
    db.close().await.map_err(|e| e.to_string())?;

    out::note(format_args!("bench: one follower…"));
    let shared = base.join("shared");
    let leader = start_leader(&shared, store)?;
    let db = crate::open_on(&shared, store).await?;
    if db.ready().await.map_err(|e| e.to_string())? != Role::Follower {
        return Err("this process did not follow".into());
    }
    fill(&db).await?;
    let count = if quick { 2_000 } else { 20_000 };
    let (get_p50, get_p99, get_rate) = on_runtime(sequential(db.clone(), count, false)).await?;
    let (put_p50, put_p99, put_rate) = on_runtime(sequential(db.clone(), count, true)).await?;
    let (main_thread_get_p50, _, _) = sequential(db.clone(), count, false).await?;
    let mut depths = serde_json::Map::new();
    for depth in [16, 64, 256] {
        let get = on_runtime(pipelined(db.clone(), span, depth, None))
            .await?
            .1;
        let put = on_runtime(pipelined(db.clone(), span, depth, BENCH_PUTS))
            .await?
            .1;
        depths.insert(
            depth.to_string(),
            json!({"get_ops_per_s": get, "put_ops_per_s": put}),
        );
    }
    let scan_rate = on_runtime(full_scans(db.clone(), if quick { 3 } else { 5 })).await?;
    let follower_rss = rss_kib(std::process::id());
    db.close().await.map_err(|e| e.to_string())?;

    out::note(format_args!("bench: four followers…"));
    let seconds = span.as_secs_f64().to_string();
    let mut loaders = Vec::new();
    for _ in 0..4 {
        loaders.push(leader_child(&shared, store, &["load", &seconds])?);
    }
    let mut aggregate = 0u64;
    for mut loader in loaders {
        let _ready = first_line(&mut loader)?;
        let ops = first_line(&mut loader)?;
        aggregate += ops
            .strip_prefix("ops ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let _ = loader.wait();
    }
    let aggregate_rate = aggregate as f64 / span.as_secs_f64();

    out::note(format_args!("bench: memory with 8 idle followers…"));
    let leader_rss_alone = rss_kib(leader.id());
    let idle: Vec<Worker> = (0..8)
        .map(|_| leader_child(&shared, store, &["idle"]))
        .collect::<Result<_, _>>()?;
    let mut idle = idle;
    for child in &mut idle {
        first_line(child)?;
    }
    let leader_rss = rss_kib(leader.id());
    let idle_rss = idle.first().and_then(|c| rss_kib(c.id()));
    drop(idle);
    drop(leader);

    out::note(format_args!("bench: failover ×{kills}…"));
    let failover = failovers(&base.join("failover"), store, kills).await?;
    out::note(format_args!(
        "bench: failover ×{kills} after {PAST_CLIENTS} past clients…"
    ));
    let past = base.join("failover-past");
    with_past_clients(&past, store, PAST_CLIENTS).await?;
    let failover_past = failovers(&past, store, kills).await?;

    let transactions = transactions(base, store, span)?;
    let feed = feed(base, store, span, quick).await?;

    out::note(format_args!("bench: one-shot commands…"));
    let one_shot = one_shot_commands(base, store, if quick { 3 } else { 15 })?;

    let socket_p50 = baseline["rtt_p50_us"].as_f64().unwrap_or(f64::NAN);
    let follower_get_256 = depths["256"]["get_ops_per_s"].as_f64().unwrap_or(f64::NAN);
    let follower_put_256 = depths["256"]["put_ops_per_s"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "backend": store.kind().name(),
        "baseline": baseline,
        "in_process": {"get_ops_per_s": local_get, "put_ops_per_s": local_put},
        "one_follower": {
            "sync_get": {"p50_us": get_p50, "p99_us": get_p99, "ops_per_s": get_rate},
            "sync_put": {"p50_us": put_p50, "p99_us": put_p99, "ops_per_s": put_rate},
            "sync_get_from_block_on_thread_p50_us": main_thread_get_p50,
            "pipelined": depths,
            "scan_entries_per_s": scan_rate,
        },
        "four_followers_get_ops_per_s": aggregate_rate,
        "failover_past_clients": PAST_CLIENTS,
        "failover_after_past_clients": failover_past,
        "failover": failover,
        "one_shot": one_shot,
        "transactions": transactions,
        "feed": feed,
        "memory_kib": {
            "follower_rss": follower_rss,
            "idle_follower_rss": idle_rss,
            "leader_rss_alone": leader_rss_alone,
            "leader_rss_with_8_idle_followers": leader_rss,
            "leader_rss_per_idle_follower": leader_rss.zip(leader_rss_alone).map(|(with, alone)| (with as f64 - alone as f64) / 8.0),
        },
        "ratios": {
            "follower_pipelined_get_vs_in_process": follower_get_256 / local_get,
            "follower_pipelined_put_vs_in_process": follower_put_256 / local_put,
            "follower_sync_p50_vs_socket_p50": get_p50 / socket_p50,
            "one_shot_put_vs_process_start": one_shot["put_as_leader_p50_ms"].as_f64().unwrap_or(f64::NAN)
                / one_shot["process_start_p50_ms"].as_f64().unwrap_or(f64::NAN),
        },
    }))
}

/// `party DIR put` as a shell script runs it: a new process that leads, writes, and exits;
/// against the same program asked only for its version. Then ten at once on one directory.
fn one_shot_commands(base: &Path, store: &ToolStore, runs: usize) -> Result<Value, Failure> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let dir = base.join("one-shot");
    let command = |args: &[&str]| {
        let mut command = std::process::Command::new(&exe);
        command
            .args(store.command_options(&dir))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command
    };
    let dir_text = dir.to_str().ok_or("path")?;
    let timed = |args: &[&str]| -> Result<Duration, Failure> {
        let started = Instant::now();
        let status = command(args)
            .status()
            .map_err(|e| format!("cannot run {args:?}: {e}"))?;
        if !status.success() {
            return Err(format!("{args:?} failed: {status}").into());
        }
        Ok(started.elapsed())
    };
    timed(&[dir_text, "put", "created", "first"])?;
    let mut starts = Vec::new();
    let mut puts = Vec::new();
    for run in 0..runs {
        starts.push(timed(&["--version"])?);
        puts.push(timed(&[dir_text, "put", "k", &run.to_string()])?);
    }
    let mut together = Vec::new();
    for _ in 0..runs.min(5) {
        let started = Instant::now();
        let children = (0..10)
            .map(|n| command(&[dir_text, "put", &format!("k{n}"), "v"]).spawn())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot start a one-shot put: {e}"))?;
        for mut child in children {
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("a concurrent one-shot put failed: {status}").into());
            }
        }
        together.push(started.elapsed());
    }
    starts.sort();
    puts.sort();
    together.sort();
    Ok(json!({
        "process_start_p50_ms": percentile(&starts, 0.5) / 1000.0,
        "put_as_leader_p50_ms": percentile(&puts, 0.5) / 1000.0,
        "ten_concurrent_puts_p50_ms": percentile(&together, 0.5) / 1000.0,
    }))
}

/// Leaves in the store of `dir` the dedup records of `count` clients that each wrote once,
/// as months of short-lived processes would: written straight into the store, as their
/// leaders did, after a first leader created it.
async fn with_past_clients(dir: &Path, store: &ToolStore, count: u64) -> Result<(), Failure> {
    let first = crate::open_on(dir, store).await?;
    first.ready().await.map_err(|e| e.to_string())?;
    first.close().await.map_err(|e| e.to_string())?;
    // The store's calls block: not on an async worker.
    tokio::task::block_in_place(|| -> Result<(), Failure> {
        let store = store.open_store(dir)?;
        let now_ms = micros_now() / 1000;
        let record = party_proto::DedupRecord {
            applied_through: party_proto::WriteSeq(1),
            failed: Vec::new(),
            last_write_ms: now_ms,
        };
        let ids: Vec<u64> = (0..count).collect();
        for chunk in ids.chunks(store.max_batch_ops().unwrap_or(10_000)) {
            let batch = party_backends::WriteBatch {
                ops: Vec::new(),
                records: chunk
                    .iter()
                    .map(|n| (party_proto::ClientId(u128::from(*n) << 64), record.clone()))
                    .collect(),
                log: None,
            };
            store.write(&batch).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Kills the leader of `dir` `kills` times while three followers read; measures, per kill,
/// the time until every follower has completed a get again.
async fn failovers(dir: &Path, store: &ToolStore, kills: usize) -> Result<Value, Failure> {
    let dir = dir.to_owned();
    let mut leader = start_leader(&dir, store)?;
    let keys = crate::open_on(&dir, store).await?;
    fill(&keys).await?;
    keys.close().await.map_err(|e| e.to_string())?;
    let (lines_tx, lines) = std::sync::mpsc::channel::<(usize, String)>();
    let mut watchers: Vec<Option<Worker>> = Vec::new();
    let spawn_watcher = |index: usize, watchers: &mut Vec<Option<Worker>>| -> Result<(), Failure> {
        let mut child = leader_child(&dir, store, &["watch"])?;
        child.forward_lines(&lines_tx, move |line| (index, line))?;
        if index < watchers.len() {
            watchers[index] = Some(child);
        } else {
            watchers.push(Some(child));
        }
        Ok(())
    };
    for index in 0..3 {
        spawn_watcher(index, &mut watchers)?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut recoveries = Vec::new();
    let mut opens = Vec::new();
    let mut current_leader: Option<usize> = None; // None: the first, separate leader process
    let mut is_leader = [false; 3];
    for _ in 0..kills {
        while let Ok((index, line)) = lines.try_recv() {
            if let Some(role) = line.strip_prefix("role ") {
                is_leader[index] = role == "leader";
            }
        }
        let killed_at = micros_now();
        match current_leader {
            None => {
                let _ = leader.kill();
                let _ = leader.wait();
            }
            Some(index) => {
                drop(watchers[index].take());
            }
        }
        let followers: Vec<usize> = (0..3).filter(|i| Some(*i) != current_leader).collect();
        let mut recovered = std::collections::BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while recovered.len() < followers.len() && Instant::now() < deadline {
            let Ok((index, line)) = lines.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            if let Some(role) = line.strip_prefix("role ") {
                is_leader[index] = role == "leader";
            }
            if let Some(micros) = line.strip_prefix("opened ").and_then(|m| m.parse().ok()) {
                opens.push(Duration::from_micros(micros));
            }
            let mut words = line.split_whitespace();
            if let (Some("gap"), Some(_), Some(to)) = (
                words.next(),
                words.next(),
                words.next().and_then(|t| t.parse::<u64>().ok()),
            ) {
                if followers.contains(&index) && to > killed_at {
                    recovered.entry(index).or_insert(to - killed_at);
                }
            }
        }
        // Followers that never stalled recovered at once.
        let worst = followers
            .iter()
            .map(|i| recovered.get(i).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        recoveries.push(Duration::from_micros(worst));
        if let Some(index) = current_leader {
            spawn_watcher(index, &mut watchers)?;
        }
        std::thread::sleep(Duration::from_millis(150));
        while let Ok((index, line)) = lines.try_recv() {
            if let Some(role) = line.strip_prefix("role ") {
                is_leader[index] = role == "leader";
            }
        }
        current_leader = is_leader.iter().position(|l| *l);
        if current_leader.is_none() {
            return Err("no follower took over".into());
        }
    }
    drop(watchers);
    recoveries.sort();
    opens.sort();
    Ok(json!({
        "kills": kills,
        "all_followers_back_p50_ms": percentile(&recoveries, 0.5) / 1000.0,
        "all_followers_back_p99_ms": percentile(&recoveries, 0.99) / 1000.0,
        "new_leader_store_open_p50_ms": percentile(&opens, 0.5) / 1000.0,
        "new_leader_store_open_p99_ms": percentile(&opens, 0.99) / 1000.0,
    }))
}

/// The report as a table for people, one measurement a line.
fn table(report: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let number = |v: &Value| v.as_f64().map_or("-".into(), |n| format!("{n:.1}"));
    let rate = |v: &Value| v.as_f64().map_or("-".into(), |n| format!("{:.0}", n));
    lines.push(format!(
        "party bench on {}",
        report["backend"].as_str().unwrap_or("?")
    ));
    let b = &report["baseline"];
    lines.push(format!(
        "raw socket ping-pong        p50 {} µs  p99 {} µs  pipelined {} msg/s",
        number(&b["rtt_p50_us"]),
        number(&b["rtt_p99_us"]),
        rate(&b["pipelined_msgs_per_s"])
    ));
    let l = &report["in_process"];
    lines.push(format!(
        "leader in-process           get {} ops/s  put {} ops/s",
        rate(&l["get_ops_per_s"]),
        rate(&l["put_ops_per_s"])
    ));
    let f = &report["one_follower"];
    lines.push(format!(
        "follower sync get           p50 {} µs  p99 {} µs  {} ops/s",
        number(&f["sync_get"]["p50_us"]),
        number(&f["sync_get"]["p99_us"]),
        rate(&f["sync_get"]["ops_per_s"])
    ));
    lines.push(format!(
        "follower sync put           p50 {} µs  p99 {} µs  {} ops/s",
        number(&f["sync_put"]["p50_us"]),
        number(&f["sync_put"]["p99_us"]),
        rate(&f["sync_put"]["ops_per_s"])
    ));
    lines.push(format!(
        "follower sync get, caller on the block_on thread  p50 {} µs",
        number(&f["sync_get_from_block_on_thread_p50_us"])
    ));
    for depth in ["16", "64", "256"] {
        let d = &f["pipelined"][depth];
        lines.push(format!(
            "follower pipelined {depth:>3}      get {} ops/s  put {} ops/s",
            rate(&d["get_ops_per_s"]),
            rate(&d["put_ops_per_s"])
        ));
    }
    lines.push(format!(
        "follower full scan          {} entries/s",
        rate(&f["scan_entries_per_s"])
    ));
    lines.push(format!(
        "four followers              {} get ops/s",
        rate(&report["four_followers_get_ops_per_s"])
    ));
    let o = &report["failover"];
    lines.push(format!(
        "failover ×{}                 all followers back p50 {} ms  p99 {} ms; new leader's store open p50 {} ms  p99 {} ms",
        o["kills"],
        number(&o["all_followers_back_p50_ms"]),
        number(&o["all_followers_back_p99_ms"]),
        number(&o["new_leader_store_open_p50_ms"]),
        number(&o["new_leader_store_open_p99_ms"])
    ));
    let o = &report["failover_after_past_clients"];
    lines.push(format!(
        "failover, {} past clients   all followers back p50 {} ms  p99 {} ms; new leader's store open p50 {} ms  p99 {} ms",
        report["failover_past_clients"],
        number(&o["all_followers_back_p50_ms"]),
        number(&o["all_followers_back_p99_ms"]),
        number(&o["new_leader_store_open_p50_ms"]),
        number(&o["new_leader_store_open_p99_ms"])
    ));
    for processes in ["1", "4", "16"] {
        let t = &report["transactions"][processes];
        lines.push(format!(
            "increments, {processes:>2} processes    contended {} txn/s  uncontended {} txn/s  (plain puts {} ops/s)",
            rate(&t["contended_txn_per_s"]),
            rate(&t["uncontended_txn_per_s"]),
            rate(&t["put_ops_per_s"])
        ));
    }
    for subscribers in ["1", "8"] {
        let f = &report["feed"][subscribers];
        lines.push(format!(
            "change feed, {subscribers} subscriber{}  put → delivery p50 {} µs  p99 {} µs; delivered {} changes/s each (puts {} ops/s, 64 in flight)",
            if subscribers == "1" { " " } else { "s" },
            number(&f["issue_to_delivery_p50_us"]),
            number(&f["issue_to_delivery_p99_us"]),
            rate(&f["delivered_changes_per_s_slowest"]),
            rate(&f["written_ops_per_s"])
        ));
    }
    let c = &report["one_shot"];
    lines.push(format!(
        "one-shot put                leading, as a new process: p50 {} ms (the process alone: {} ms); ten at once: {} ms",
        number(&c["put_as_leader_p50_ms"]),
        number(&c["process_start_p50_ms"]),
        number(&c["ten_concurrent_puts_p50_ms"])
    ));
    let m = &report["memory_kib"];
    lines.push(format!("memory                      follower {} KiB  idle follower {} KiB  leader alone {} KiB, with 8 idle followers {} KiB ({} KiB each)", m["follower_rss"], m["idle_follower_rss"], m["leader_rss_alone"], m["leader_rss_with_8_idle_followers"], number(&m["leader_rss_per_idle_follower"])));
    let r = &report["ratios"];
    lines.push(format!("ratios                      pipelined get follower/in-process {}  put {}  sync p50 follower/socket {}", number(&r["follower_pipelined_get_vs_in_process"]), number(&r["follower_pipelined_put_vs_in_process"]), number(&r["follower_sync_p50_vs_socket_p50"])));
    lines
}

//! `party chaos`: real processes under SIGKILL, checked for what the simulator checks on
//! virtual ones.
//!
//! N worker processes share one directory. Each owns a register (`reg/<worker>`) that only it
//! writes, with increasing values, and writes a unique key (`uniq/<worker>/<n>`) in the same
//! batch; between writes it reads every register and reports one that went backwards. A
//! controller SIGKILLs the leader every 200–500 ms (and now and then a follower) and starts
//! a new worker for each one killed; a new worker takes a register of its own, so a dead
//! worker's write still in flight cannot pass for a step backwards.
//!
//! Each worker also increments shared counters (`count/<c>`) with transactions, one at a
//! time, each writing a unique key (`incr/<worker>/<n>`) with its increment. Every other
//! worker does so through a handle of its own without retries, whose increments in flight
//! at a failover end unknown (`ConnectionLost`) instead of being re-sent.
//!
//! Each worker also watches the unique keys (`Db::watch`) while it runs: every register's
//! writes must reach it one after the other (`n`, then `n + 1`), across every failover of
//! its run; a write seen twice, out of order, or skipped is reported (`feed-gap`).
//!
//! At the end: every acknowledged write is there; every register holds its last
//! acknowledged value or a later one; no register was ever read going backwards — which is
//! how a re-sent write applied a second time would show. The change log, replayed from the
//! store's first commit by a subscription of the controller's own, holds every
//! acknowledged write exactly once, each register's in order. Every acknowledged increment is
//! there, and each counter holds exactly as many increments as were committed (its unique
//! keys): an increment lost to a race, or applied twice after a failover, would show as a
//! difference. The increments committed but never acknowledged can only be those of killed
//! workers (one each at most) and those that ended unknown.
//!
//! A worker runs until it is killed: one that exits on its own failed (a write, a read or
//! its watch met an error the run does not expect), and so does the run, with the last line
//! the worker wrote on stderr. Every worker's stderr is shown with its register.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use party_core::{BatchOp, Role};

use crate::children;
use crate::failure::Failure;
use crate::out;
use crate::tool_store::ToolStore;

/// Writes each worker keeps in flight.
const IN_FLIGHT: usize = 8;

/// The worker's name.
pub const WORKER: &str = "chaos-worker";

/// `party chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Worker processes at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    processes: u16,
    /// How long to run, in seconds.
    #[arg(long, value_name = "S", default_value_t = 15.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Run in this data directory (kept afterwards) instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Record every process of the run into DIR (see `party_core::Recording`): a failing
    /// run keeps the recordings and prints the `party-sim --replay DIR` that replays and
    /// checks them; a passing run deletes them.
    #[arg(long, value_name = "DIR")]
    record: Option<PathBuf>,
    /// Commits the change log keeps at most (`Options::change_retention`, whose 64 MiB
    /// bound stays): a run with more trims the oldest, and its check of the change log
    /// covers what is left.
    #[arg(long, value_name = "COMMITS", default_value_t = party_core::ChangeRetention::default().groups,
          value_parser = clap::value_parser!(u64).range(1..))]
    change_retention: u64,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(seconds),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// The counters the workers increment.
const COUNTERS: usize = 2;

/// How long a run may go without an acknowledged write: a failover on a loaded machine,
/// a debug build's included, takes much less.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// The worker `DIR BACKEND REGISTER RETENTION [RECORD_DIR]` (RETENTION: the change log's
/// commits): writes its register forever, reads all registers,
/// prints `acked REGISTER N ROLE` per acknowledged write (`leader` if either of its handles
/// leads) and `backwards REGISTER FROM TO`;
/// meanwhile increments the counters, printing `incremented REGISTER N` per increment, and
/// watches the unique keys, printing `watched REGISTER COUNT` now and then and
/// `feed-gap …` for a write seen out of turn.
pub async fn worker(args: &[String]) -> Result<ExitCode, Failure> {
    let (dir, backend, register, retention, record) = match args {
        [dir, backend, register, retention] => (dir, backend, register, retention, None),
        [dir, backend, register, retention, record] => {
            (dir, backend, register, retention, Some(record))
        }
        _ => {
            return Err(Failure::usage(
                "usage: chaos-worker DIR BACKEND REGISTER RETENTION [RECORD_DIR]",
            ))
        }
    };
    let register: usize = register.parse().map_err(|_| "REGISTER is a number")?;
    let retention: u64 = retention.parse().map_err(|_| "RETENTION is a number")?;
    let store = crate::tool_store::ToolStore::from_word(backend)?;
    let options = || chaos_options(&store, dir.as_ref(), retention, record);
    let db = party_core::open(dir, options())
        .await
        .map_err(|e| e.to_string())?;
    let incrementer = if register % 2 == 1 {
        let options = options().retry(false);
        party_core::open(dir, options)
            .await
            .map_err(|e| e.to_string())?
    } else {
        db.clone()
    };
    // The run kills the leader's process: that is this one when either handle leads (the
    // incrementer's may take over while the writer's follows it).
    let handles = [db.clone(), incrementer.clone()];
    let process_role = move || {
        if handles.iter().any(|db| db.role() == Role::Leader) {
            Role::Leader.name()
        } else {
            handles[0].role().name()
        }
    };
    let incrementing = tokio::spawn(increments(incrementer, register));
    let watcher = tokio::spawn(watching(db.clone(), register));
    let mut highest_read = HighestRead::default();
    // Several writes in flight: a write applied a second time after a failover would then
    // set the register back below a value others have already read.
    let mut in_flight = std::collections::VecDeque::new();
    for n in 1u64.. {
        let value = n.to_string().into_bytes();
        let ops = vec![
            BatchOp::Put {
                key: format!("reg/{register:04}").into_bytes(),
                value: value.clone(),
            },
            BatchOp::Put {
                key: format!("uniq/{register:04}/{n:08}").into_bytes(),
                value,
            },
        ];
        in_flight.push_back((n, db.batch(ops)));
        if in_flight.len() < IN_FLIGHT {
            continue;
        }
        let (acked, write) = in_flight.pop_front().expect("full");
        write.await.map_err(|e| e.to_string())?;
        out::line(format_args!("acked {register} {acked} {}", process_role()))?;
        let registers = party_core::IterOptions::default()
            .range(party_core::KeyRange::all().gte("reg/").lt("reg0"));
        for entry in db
            .iter(registers)
            .await
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?
        {
            let value: u64 = String::from_utf8_lossy(&entry.value).parse().unwrap_or(0);
            if let Some(highest) = highest_read.went_back(&entry.key, value) {
                out::line(format_args!(
                    "backwards {} {} {}",
                    String::from_utf8_lossy(&entry.key),
                    highest,
                    value
                ))?;
            }
        }
        if incrementing.is_finished() {
            break;
        }
        // A watch fails only for a reason the run must report: the worker exits with it.
        if watcher.is_finished() {
            watcher.await.map_err(|e| e.to_string())??;
            return Err("the watch of the unique keys ended".into());
        }
    }
    incrementing.await.map_err(|e| e.to_string())?
}

/// The highest value a worker has read in each register: a read below it went backwards.
#[derive(Default)]
struct HighestRead(BTreeMap<Vec<u8>, u64>);

impl HighestRead {
    /// Takes a read of `value` in `key`: the highest read before it, if `value` is below.
    fn went_back(&mut self, key: &[u8], value: u64) -> Option<u64> {
        let highest = self.0.entry(key.to_vec()).or_insert(0);
        let before = *highest;
        *highest = before.max(value);
        (value < before).then_some(before)
    }
}

/// The unique keys' range: `uniq/<register>/<n>`.
fn unique_keys() -> party_core::KeyRange {
    party_core::KeyRange::all().gte("uniq/").lt("uniq0")
}

/// The register and number of a unique key, `uniq/<register>/<n>`.
fn unique_key(key: &[u8]) -> Option<(usize, u64)> {
    let key = std::str::from_utf8(key).ok()?.strip_prefix("uniq/")?;
    let (register, n) = key.split_once('/')?;
    Some((register.parse().ok()?, n.parse().ok()?))
}

/// Follows the unique keys from now on: each register's writes must come one after the
/// other. Reports `feed-gap WATCHER REGISTER LAST N` for one that does not, and every
/// 100 changes `watched WATCHER COUNT`.
async fn watching(db: party_core::Db, watcher: usize) -> Result<(), Failure> {
    let mut watch = db.watch(unique_keys()).await.map_err(|e| e.to_string())?;
    let mut order = FeedOrder::default();
    let mut count = 0u64;
    while let Some(change) = watch.next().await {
        match change {
            Ok(party_core::Change::Put { key, .. }) => {
                let Some((register, n)) = unique_key(&key) else {
                    continue;
                };
                if let Some(previous) = order.out_of_turn(register, n) {
                    out::line(format_args!("feed-gap {watcher} {register} {previous} {n}"))?;
                }
                count += 1;
                if count.is_multiple_of(100) {
                    out::line(format_args!("watched {watcher} {count}"))?;
                }
            }
            Ok(_) => {}
            Err(party_core::Error::Lagged { .. }) => order.lagged(),
            Err(error) => return Err(error.to_string().into()),
        }
    }
    Ok(())
}

/// The last write a watch saw of each register: the next must be the one after it.
#[derive(Default)]
struct FeedOrder(BTreeMap<usize, u64>);

impl FeedOrder {
    /// Takes write `n` of `register`: the write seen before it, if `n` does not follow it.
    fn out_of_turn(&mut self, register: usize, n: u64) -> Option<u64> {
        let previous = self.0.insert(register, n)?;
        (n != previous + 1).then_some(previous)
    }

    /// Commits were lost, and the feed said so: each register starts over from what comes
    /// next.
    fn lagged(&mut self) {
        self.0.clear();
    }
}

/// Increments the counters by transaction, one at a time, forever: increment `n` of this
/// worker adds one to `count/<n mod COUNTERS>` and writes `incr/<register>/<n>`. Prints
/// `incremented REGISTER N` when acknowledged, `unknown REGISTER N` when its outcome was
/// lost (no retries) and the worker goes on with the next.
async fn increments(db: party_core::Db, register: usize) -> Result<ExitCode, Failure> {
    for n in 1u64.. {
        let counter = format!("count/{}", n as usize % COUNTERS);
        let unique = format!("incr/{register:04}/{n:08}");
        let (counter, unique) = (&counter, &unique);
        loop {
            let result = db
                .transaction(|tx| async move {
                    let held = tx.get(counter).await?;
                    let count: u64 =
                        held.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
                    tx.put(counter, (count + 1).to_string());
                    tx.put(unique, counter);
                    Ok::<_, party_core::Error>(())
                })
                .await;
            match result {
                Ok(()) => {
                    out::line(format_args!("incremented {register} {n}"))?;
                    break;
                }
                // Contended through a failover for longer than its attempts: nothing was
                // written, so the same increment goes again.
                Err(party_core::TransactionError::Conflict { .. }) => continue,
                // Without retries: the read or the commit lost with its connection.
                Err(party_core::TransactionError::Db(party_core::Error::ConnectionLost)) => {
                    out::line(format_args!("unknown {register} {n}"))?;
                    break;
                }
                Err(error) => return Err(error.to_string().into()),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Worker {
    /// Killed when the worker is dropped.
    process: children::Worker,
    register: usize,
    role: String,
    started: Instant,
}

impl Worker {
    /// Kills the worker; tells how it had exited if it had already, on its own (a worker
    /// runs until it is killed, unless it fails).
    fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.process.try_wait().ok().flatten()
    }
}

/// A line a worker printed, with the worker's register.
enum Report {
    /// On stdout: what it did (`acked …`, `backwards …`, see [`worker`]).
    Said(usize, String),
    /// On stderr: a warning, or the error it exits with.
    Complained(usize, String),
}

fn spawn_worker(
    dir: &str,
    store: &ToolStore,
    register: usize,
    retention: u64,
    record: Option<&str>,
    reports: &Sender<Report>,
) -> Result<Worker, Failure> {
    let mut args = vec![
        dir.to_owned(),
        store.word(),
        register.to_string(),
        retention.to_string(),
    ];
    args.extend(record.map(str::to_owned));
    let mut child = children::spawn_with_errors(WORKER, &args)?;
    child.forward_lines(reports, move |line| Report::Said(register, line))?;
    child.forward_errors(reports, move |line| Report::Complained(register, line))?;
    Ok(Worker {
        process: child,
        register,
        role: String::new(),
        started: Instant::now(),
    })
}

/// What the workers reported: each register's last acknowledged write, and every read
/// that went backwards.
#[derive(Default)]
struct Tally {
    acked: BTreeMap<usize, u64>,
    /// When the last write of any worker was acknowledged (the run's start, before the
    /// first).
    last_ack: Option<Instant>,
    /// The longest time the run went without an acknowledged write, until `last_ack`, and
    /// when it ended.
    longest_pause: (Duration, Option<Instant>),
    /// Each worker's acknowledged increments, and how many ended unknown.
    incremented: BTreeMap<usize, Vec<u64>>,
    unknown: u64,
    backwards: Vec<String>,
    /// The changes the workers' subscriptions saw, by the last count each reported.
    watched: BTreeMap<usize, u64>,
    /// Each worker's last line on stderr (its error, if it failed).
    complaints: BTreeMap<usize, String>,
    /// The workers that exited on their own, and how.
    exited: BTreeMap<usize, std::process::ExitStatus>,
}

impl Tally {
    /// Takes one report; gives back the worker's register and the role an ack names. A
    /// complaint is shown at once on stderr, with the worker's register.
    fn take(&mut self, report: Report) -> (usize, Option<String>) {
        match report {
            Report::Said(register, line) => (register, self.record(register, &line)),
            Report::Complained(register, line) => {
                out::note(format_args!("the worker of register {register}: {line}"));
                self.complaints.insert(register, line);
                (register, None)
            }
        }
    }

    /// Stops a worker, and keeps how it exited if it did on its own.
    fn stop(&mut self, worker: Worker) {
        let register = worker.register;
        if let Some(status) = worker.stop() {
            self.exited.insert(register, status);
        }
    }

    /// How long the run had gone without an acknowledged write when it `ended`.
    fn quiet(&self, ended: Instant) -> Duration {
        self.last_ack
            .map_or(Duration::ZERO, |at| ended.saturating_duration_since(at))
    }

    /// The longest time the run went without an acknowledged write, until it `ended`; and
    /// when that pause ended.
    fn longest_pause(&self, ended: Instant) -> (Duration, Instant) {
        let quiet = self.quiet(ended);
        match self.longest_pause {
            (pause, Some(at)) if pause > quiet => (pause, at),
            _ => (quiet, ended),
        }
    }

    /// The run's failures to go on, once it `ended`: each worker that exited on its own,
    /// with its last words; each worker alive at the end (`ages`: how long it ran) that got
    /// no write through while others did, a second or more after it started; and a pause
    /// of the whole run, no write acknowledged, longer than any failover takes (a pause
    /// shorter than that at the run's end is not a worker's failure: the last failover
    /// had not ended, slow on a loaded machine).
    fn stalls(&self, ages: &BTreeMap<usize, Duration>, ended: Instant) -> Vec<String> {
        let mut stalls = Vec::new();
        for (register, status) in &self.exited {
            let said = self
                .complaints
                .get(register)
                .map_or("nothing", String::as_str);
            stalls.push(format!(
                "the worker of register {register} exited on its own ({status}); its last words: {said}"
            ));
        }
        let quiet = self.quiet(ended);
        for (register, age) in ages {
            let others_went_on = age.saturating_sub(quiet) >= Duration::from_secs(1);
            let progressed = self.acked.contains_key(register);
            let exited = self.exited.contains_key(register);
            if others_went_on && !progressed && !exited {
                stalls.push(format!(
                    "the worker of register {register} got no write through in its {:.1} s, \
                     while others did",
                    age.as_secs_f64()
                ));
            }
        }
        let (longest_pause, _) = self.longest_pause(ended);
        if longest_pause >= LONGEST_PAUSE {
            stalls.push(format!(
                "no write was acknowledged for {:.1} s (a failover takes {} s at most)",
                longest_pause.as_secs_f64(),
                LONGEST_PAUSE.as_secs()
            ));
        }
        stalls
    }

    /// Takes one line of the worker of `register`'s stdout; gives back the role an ack
    /// names.
    fn record(&mut self, register: usize, line: &str) -> Option<String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["acked", _, n, role] => {
                if let Ok(n) = n.parse() {
                    self.acked.insert(register, n);
                    let now = Instant::now();
                    if let Some(last) = self.last_ack.replace(now) {
                        if now - last > self.longest_pause.0 {
                            self.longest_pause = (now - last, Some(now));
                        }
                    }
                }
                Some((*role).to_owned())
            }
            ["backwards", ..] | ["feed-gap", ..] => {
                self.backwards.push(line.to_owned());
                None
            }
            ["watched", _, count] => {
                if let Ok(count) = count.parse() {
                    self.watched.insert(register, count);
                }
                None
            }
            ["incremented", _, n] => {
                if let Ok(n) = n.parse() {
                    self.incremented.entry(register).or_default().push(n);
                }
                None
            }
            ["unknown", ..] => {
                self.unknown += 1;
                None
            }
            _ => None,
        }
    }
}

pub async fn run(store: &ToolStore, args: ChaosArgs) -> Result<ExitCode, Failure> {
    children::clean_up_when_interrupted()?;
    let (processes, seconds) = (usize::from(args.processes), args.seconds);
    let retention = args.change_retention;
    let temporary;
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            temporary = children::TempDir::new("party-chaos-")?;
            temporary.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir_text = dir.to_str().ok_or("the directory is not UTF-8")?.to_owned();
    let record = match &args.record {
        Some(record) => Some(
            record
                .to_str()
                .ok_or("the recording directory is not UTF-8")?
                .to_owned(),
        ),
        None => None,
    };
    let record = record.as_deref();
    out::line(format_args!(
        "party chaos in {} on {}: {processes} processes for {seconds} s",
        dir.display(),
        store.kind().name()
    ))?;

    let (sender, reports) = channel();
    let mut workers = Vec::new();
    for register in 0..processes {
        workers.push(spawn_worker(
            &dir_text, store, register, retention, record, &sender,
        )?);
    }
    let mut next_register = processes;
    let begun = Instant::now();
    let mut tally = Tally {
        last_ack: Some(begun),
        ..Tally::default()
    };
    let (mut kills, mut leader_kills) = (0, 0);
    let mut rng = u64::from(std::process::id()) | 1;
    let mut random = move |low: u64, high: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        low + rng % (high - low)
    };
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut next_kill = Instant::now() + Duration::from_millis(random(200, 500));
    // Mostly the leader; now and then a follower.
    let mut kill_leader = random(0, 5) != 0;
    while Instant::now() < end {
        while let Ok(report) = reports.recv_timeout(Duration::from_millis(5)) {
            if let (register, Some(role)) = tally.take(report) {
                if let Some(worker) = workers.iter_mut().find(|w| w.register == register) {
                    worker.role = role;
                }
            }
            if Instant::now() >= next_kill {
                break;
            }
        }
        if Instant::now() < next_kill {
            continue;
        }
        let role = if kill_leader { "leader" } else { "follower" };
        let victim = workers.iter().position(|w| w.role == role);
        // No leader known while a failover is under way: the kill waits for the next report,
        // so that leaders are the most killed however long failovers take. No follower (a
        // run of one process): the next kill.
        if victim.is_some() || !kill_leader {
            next_kill = Instant::now() + Duration::from_millis(random(200, 500));
            kill_leader = random(0, 5) != 0;
        }
        if let Some(index) = victim {
            let killed = workers.remove(index);
            leader_kills += usize::from(killed.role == "leader");
            tally.stop(killed);
            kills += 1;
            workers.push(spawn_worker(
                &dir_text,
                store,
                next_register,
                retention,
                record,
                &sender,
            )?);
            next_register += 1;
        }
    }
    // How long each worker alive at the end had run; those that ran a second or more were
    // writing at the end, and the change log must keep their writes.
    let ages: BTreeMap<usize, Duration> = workers
        .iter()
        .map(|w| (w.register, w.started.elapsed()))
        .collect();
    let settled: Vec<usize> = ages
        .iter()
        .filter(|(_, age)| **age >= Duration::from_secs(1))
        .map(|(register, _)| *register)
        .collect();
    let ended = Instant::now();
    // Stopped at the end as the killed ones were: each with an increment in flight, maybe.
    let stopped = workers.len() as u64;
    for worker in workers {
        tally.stop(worker);
    }
    drop(sender);
    while let Ok(report) = reports.recv_timeout(Duration::from_millis(200)) {
        tally.take(report);
    }
    let stalls = tally.stalls(&ages, ended);
    let (longest_pause, pause_end) = tally.longest_pause(ended);
    let Tally {
        acked,
        incremented,
        unknown,
        backwards,
        watched,
        ..
    } = tally;

    // Every acknowledged write must be there, and no register behind its last ack.
    let options = chaos_options(store, &dir, retention, record);
    let db = party_core::open(&dir, options)
        .await
        .map_err(|e| e.to_string())?;
    let mut missing = Vec::new();
    let mut total = 0u64;
    for (register, last) in &acked {
        total += last;
        let keys: Vec<String> = (1..=*last)
            .map(|n| format!("uniq/{register:04}/{n:08}"))
            .collect();
        for (key, value) in keys
            .iter()
            .zip(db.get_many(&keys).await.map_err(|e| e.to_string())?)
        {
            if value.is_none() {
                missing.push(key.clone());
            }
        }
        let stored = db
            .get(format!("reg/{register:04}"))
            .await
            .map_err(|e| e.to_string())?;
        let stored: u64 = stored.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
        if stored < *last {
            missing.push(format!(
                "reg/{register:04} = {stored} < acknowledged {last}"
            ));
        }
    }
    let unanswered = unknown + kills as u64 + stopped;
    let increments = check_counters(&db, &incremented, unanswered, &mut missing).await?;
    let replayed = check_change_log(&db, &acked, &settled, &mut missing).await?;
    db.close().await.map_err(|e| e.to_string())?;
    missing.extend(stalls);
    let violations = missing.len() + backwards.len();
    let watched: u64 = watched.values().sum();
    out::line(format_args!(
        "kills survived: {kills} ({leader_kills} of them leaders); writes acknowledged: \
         {total}; increments acknowledged: {increments} ({unknown} more ended unknown, \
         without retries); changes watched live: {watched}, replayed: {replayed}; longest \
         pause without an acknowledged write: {} ms, to {:.1} s into the run; violations: \
         {violations}",
        longest_pause.as_millis(),
        (pause_end - begun).as_secs_f64()
    ))?;
    // Ten of each kind at most: a run whose checks found many missing writes still shows
    // what its watches saw out of turn.
    for line in missing.iter().take(10).chain(backwards.iter().take(10)) {
        out::line(format_args!("  {line}"))?;
    }
    let passed = violations == 0 && kills > 0 && total > 0 && increments > 0 && watched > 0;
    if let Some(record) = &args.record {
        if passed {
            remove_recordings(record)?;
        } else {
            out::line(format_args!(
                "the recordings are kept; replay: party-sim --replay {}",
                record.display()
            ))?;
        }
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The options of every handle of a run: a change feed keeping `retention` commits,
/// recording into `record` if given (else as `PARTY_RECORD` says).
fn chaos_options(
    store: &ToolStore,
    dir: &std::path::Path,
    retention: u64,
    record: Option<impl AsRef<str>>,
) -> party_core::Options {
    let retention = party_core::ChangeRetention {
        groups: retention,
        ..Default::default()
    };
    let options = store
        .options(dir)
        .change_feed(true)
        .change_retention(retention);
    match record {
        Some(dir) => options.record(Some(party_core::Recording::new(dir.as_ref()))),
        None => options,
    }
}

/// Deletes the segment files (`*.rec`) of a passing run, and their directory once empty.
fn remove_recordings(dir: &std::path::Path) -> Result<(), Failure> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|extension| extension == "rec") {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
    }
    // Kept if it holds anything else: it was the user's.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Replays the change log from the store's first commit to its last: each register's
/// writes must be in it once each and in order, every acknowledged one included. Gives the
/// number of unique-key changes replayed; a log trimmed before the end of the run (more
/// commits than `Options::change_retention`) is said, and only what is left checked: a
/// register none of whose writes are left is passed over, unless its worker was still
/// writing at the end (`alive_at_the_end`), whose last writes a trimmed log still holds.
async fn check_change_log(
    db: &party_core::Db,
    acked: &BTreeMap<usize, u64>,
    alive_at_the_end: &[usize],
    missing: &mut Vec<String>,
) -> Result<u64, Failure> {
    let snapshot = db
        .iter(party_core::IterOptions::default().limit(Some(1)))
        .await
        .map_err(|e| e.to_string())?;
    let mut snapshot = snapshot;
    snapshot.next().await;
    let last = snapshot
        .seq()
        .ok_or("the store did not say its last commit")?;
    // Every key, so that each commit with a write moves the position on.
    let mut watch = db
        .watch_from(party_core::KeyRange::all(), party_core::CommitSeq(1))
        .await
        .map_err(|e| e.to_string())?;
    let mut seen: BTreeMap<usize, u64> = BTreeMap::new();
    let mut replayed = 0;
    let mut trimmed = false;
    while watch.position() <= last {
        // The last commits may write nothing (a read-only transaction): nothing comes then.
        let Ok(next) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await else {
            break;
        };
        match next {
            Some(Ok(party_core::Change::Put { key, .. })) => {
                let Some((register, n)) = unique_key(&key) else {
                    continue;
                };
                replayed += 1;
                let previous = seen.insert(register, n).unwrap_or(0);
                if n != previous + 1 && !(trimmed && previous == 0) {
                    missing.push(format!(
                        "the change log has uniq/{register:04}/{n:08} after {previous}"
                    ));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(party_core::Error::Lagged { missed })) => {
                out::line(format_args!(
                    "  the change log no longer holds the first {missed} commits"
                ))?;
                trimmed = true;
            }
            Some(Err(error)) => return Err(error.to_string().into()),
            None => break,
        }
    }
    for (register, last) in acked {
        match seen.get(register) {
            Some(seen) if seen >= last => {}
            // Every write of this register may be older than the log still holds (the
            // workers killed early in a long run).
            None if trimmed && !alive_at_the_end.contains(register) => {}
            seen => missing.push(format!(
                "acknowledged uniq/{register:04}/{last:08} is not in the change log (it has \
                 {} of register {register}'s writes)",
                seen.map_or("none".to_owned(), |seen| format!("those up to {seen}"))
            )),
        }
    }
    Ok(replayed)
}

/// Every acknowledged increment must be there, each counter must hold exactly the
/// increments committed to it (the unique keys naming it), and at most `unanswered` more
/// were committed than acknowledged (the killed and stopped workers' last, and those that
/// ended unknown).
/// Gives the number acknowledged.
async fn check_counters(
    db: &party_core::Db,
    incremented: &BTreeMap<usize, Vec<u64>>,
    unanswered: u64,
    missing: &mut Vec<String>,
) -> Result<u64, Failure> {
    let committed = db
        .iter(
            party_core::IterOptions::default()
                .range(party_core::KeyRange::all().gte("incr/").lt("incr0")),
        )
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut acknowledged = 0;
    for (register, numbers) in incremented {
        acknowledged += numbers.len() as u64;
        for n in numbers {
            let key = format!("incr/{register:04}/{n:08}").into_bytes();
            if committed
                .binary_search_by(|entry| entry.key.cmp(&key))
                .is_err()
            {
                missing.push(format!(
                    "increment {register}/{n} acknowledged, not committed"
                ));
            }
        }
    }
    let committed_total = committed.len() as u64;
    if committed_total > acknowledged + unanswered {
        missing.push(format!(
            "{committed_total} increments committed, but only {acknowledged} were acknowledged \
             and {unanswered} left unanswered"
        ));
    }
    for counter in 0..COUNTERS {
        let name = format!("count/{counter}");
        let increments = committed
            .iter()
            .filter(|entry| entry.value == name.as_bytes())
            .count() as u64;
        let held = db.get(&name).await.map_err(|e| e.to_string())?;
        let count: u64 = held.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
        if count != increments {
            missing.push(format!(
                "{name} = {count}, but {increments} increments of it were committed"
            ));
        }
    }
    Ok(acknowledged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const SECOND: Duration = Duration::from_secs(1);

    /// A run whose last write was acknowledged `quiet` before its end, and whose longest
    /// pause before that was `pause`; the worker of register 0 had acknowledged writes.
    fn run(quiet: Duration, pause: Duration) -> (Tally, Instant) {
        let ended = Instant::now() + 10 * SECOND;
        let mut tally = Tally {
            last_ack: Some(ended - quiet),
            longest_pause: (pause, Some(ended - 5 * SECOND)),
            ..Tally::default()
        };
        tally.acked.insert(0, 40);
        (tally, ended)
    }

    /// A store of the run's options in `dir`, holding `puts` (one commit each, in order).
    async fn store_holding(dir: &std::path::Path, puts: &[(&str, &str)]) -> party_core::Db {
        let store = ToolStore::from_word("fjall").unwrap();
        let options = chaos_options(&store, dir, 100_000, None::<&str>);
        let db = party_core::open(dir, options).await.unwrap();
        for (key, value) in puts {
            db.put(key, value).await.unwrap();
        }
        db
    }

    /// The violations `check_counters` finds in `db`.
    async fn counter_violations(
        db: &party_core::Db,
        incremented: &BTreeMap<usize, Vec<u64>>,
        unanswered: u64,
    ) -> Vec<String> {
        let mut missing = Vec::new();
        check_counters(db, incremented, unanswered, &mut missing)
            .await
            .unwrap();
        missing
    }

    /// A counter that holds fewer increments than were committed to it (two increments
    /// read the same count: one was lost) is a violation, and so is one that holds more (an
    /// increment applied twice); a counter that holds exactly its committed ones is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_counter_off_its_committed_increments_either_way_is_a_violation() {
        let dir = tempfile::tempdir().unwrap();
        // Worker 0's increments 1 and 3 went to count/1, 2 to count/0.
        let db = store_holding(
            dir.path(),
            &[
                ("incr/0000/00000001", "count/1"),
                ("incr/0000/00000002", "count/0"),
                ("incr/0000/00000003", "count/1"),
                ("count/0", "1"),
                ("count/1", "1"),
            ],
        )
        .await;
        let incremented = BTreeMap::from([(0, vec![1, 2, 3])]);
        let mut missing = Vec::new();
        let acknowledged = check_counters(&db, &incremented, 0, &mut missing)
            .await
            .unwrap();
        assert_eq!(acknowledged, 3);
        assert_eq!(
            missing,
            ["count/1 = 1, but 2 increments of it were committed"],
            "a lost increment"
        );
        db.put("count/1", "3").await.unwrap();
        assert_eq!(
            counter_violations(&db, &incremented, 0).await,
            ["count/1 = 3, but 2 increments of it were committed"],
            "an increment applied twice"
        );
        db.put("count/1", "2").await.unwrap();
        assert_eq!(
            counter_violations(&db, &incremented, 0).await,
            Vec::<String>::new()
        );
        db.close().await.unwrap();
    }

    /// An increment is committed without an answer only by a worker killed or stopped
    /// with it in flight, or when it ended unknown: more committed than acknowledged and
    /// left unanswered is a violation (an increment applied though its worker was told
    /// it failed), as many is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn more_increments_committed_than_acknowledged_or_unanswered_is_a_violation() {
        let dir = tempfile::tempdir().unwrap();
        let db = store_holding(
            dir.path(),
            &[
                ("incr/0000/00000001", "count/1"),
                ("incr/0000/00000002", "count/0"),
                ("count/0", "1"),
                ("count/1", "1"),
            ],
        )
        .await;
        let incremented = BTreeMap::from([(0, vec![1])]);
        assert_eq!(
            counter_violations(&db, &incremented, 0).await,
            ["2 increments committed, but only 1 were acknowledged and 0 left unanswered"]
        );
        assert_eq!(
            counter_violations(&db, &incremented, 1).await,
            Vec::<String>::new()
        );
        db.close().await.unwrap();
    }

    /// The replayed change log must hold each register's writes one after the other: a
    /// write left out of it (register 0's second) is a violation, though the register's
    /// last acknowledged write is there; and a register with acknowledged writes none of
    /// which is in an untrimmed log (register 1's) is one too, whether its worker was
    /// alive at the end or not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_log_missing_acknowledged_writes_is_a_violation() {
        let dir = tempfile::tempdir().unwrap();
        let db = store_holding(
            dir.path(),
            &[("uniq/0000/00000001", "1"), ("uniq/0000/00000003", "3")],
        )
        .await;
        let acked = BTreeMap::from([(0, 3), (1, 1)]);
        // Registers whose workers were writing at the end, then none.
        for settled in [&[0, 1][..], &[]] {
            let mut missing = Vec::new();
            let replayed = check_change_log(&db, &acked, settled, &mut missing)
                .await
                .unwrap();
            assert_eq!(replayed, 2);
            assert_eq!(
                missing,
                [
                    "the change log has uniq/0000/00000003 after 1",
                    "acknowledged uniq/0001/00000001 is not in the change log (it has none \
                     of register 1's writes)"
                ],
                "{settled:?}"
            );
        }
        db.close().await.unwrap();
    }

    #[test]
    fn a_write_out_of_turn_is_a_gap_unless_the_feed_said_it_lagged() {
        let mut order = FeedOrder::default();
        assert_eq!(order.out_of_turn(0, 1), None);
        assert_eq!(order.out_of_turn(0, 2), None);
        assert_eq!(order.out_of_turn(1, 7), None, "another register's first");
        assert_eq!(order.out_of_turn(0, 4), Some(2), "one skipped");
        assert_eq!(order.out_of_turn(0, 4), Some(4), "one seen twice");
        assert_eq!(order.out_of_turn(0, 3), Some(4), "one seen late");
        order.lagged();
        assert_eq!(order.out_of_turn(0, 9), None, "the first after a lag");
        assert_eq!(order.out_of_turn(1, 12), None, "the first after a lag");
        assert_eq!(order.out_of_turn(1, 14), Some(12));
    }

    #[test]
    fn a_register_read_below_its_highest_went_back_by_any_step() {
        let mut read = HighestRead::default();
        assert_eq!(read.went_back(b"reg/0000", 5), None);
        assert_eq!(read.went_back(b"reg/0000", 5), None, "the same again");
        assert_eq!(read.went_back(b"reg/0000", 4), Some(5), "one step back");
        assert_eq!(
            read.went_back(b"reg/0000", 4),
            Some(5),
            "still below the highest"
        );
        assert_eq!(read.went_back(b"reg/0001", 1), None, "another register");
        assert_eq!(read.went_back(b"reg/0000", 6), None);
        assert_eq!(read.went_back(b"reg/0000", 3), Some(6));
    }

    #[test]
    fn a_worker_without_writes_while_others_went_on_is_a_stall() {
        let (tally, ended) = run(SECOND / 10, SECOND / 2);
        let ages = BTreeMap::from([(0, 9 * SECOND), (1, 2 * SECOND), (2, SECOND / 2)]);
        let stalls = tally.stalls(&ages, ended);
        assert_eq!(stalls.len(), 1, "{stalls:?}");
        assert!(
            stalls[0].starts_with("the worker of register 1 got no write through in its 2.0 s"),
            "{stalls:?}"
        );
    }

    #[test]
    fn a_run_paused_at_its_end_by_a_slow_failover_blames_no_worker() {
        let (tally, ended) = run(2 * SECOND, SECOND / 2);
        let ages = BTreeMap::from([(0, 9 * SECOND), (1, 2 * SECOND), (2, SECOND)]);
        assert_eq!(tally.stalls(&ages, ended), Vec::<String>::new());
        assert_eq!(tally.longest_pause(ended), (2 * SECOND, ended));
    }

    #[test]
    fn a_pause_longer_than_a_failover_is_a_stall_wherever_it_was() {
        for (quiet, pause) in [(LONGEST_PAUSE, SECOND), (SECOND, LONGEST_PAUSE)] {
            let (tally, ended) = run(quiet, pause);
            let stalls = tally.stalls(&BTreeMap::new(), ended);
            assert_eq!(
                stalls,
                ["no write was acknowledged for 5.0 s (a failover takes 5 s at most)"]
            );
        }
    }

    #[test]
    fn a_worker_that_exited_on_its_own_is_named_with_its_last_words() {
        let (mut tally, ended) = run(SECOND / 10, SECOND / 2);
        tally
            .exited
            .insert(3, std::process::ExitStatus::from_raw(3 << 8));
        tally
            .complaints
            .insert(3, "party chaos-worker: the handle is closed".to_owned());
        let ages = BTreeMap::from([(0, 9 * SECOND)]);
        assert_eq!(
            tally.stalls(&ages, ended),
            [
                "the worker of register 3 exited on its own (exit status: 3); its last words: \
              party chaos-worker: the handle is closed"
            ]
        );
    }
}

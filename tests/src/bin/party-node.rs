//! A test node: one party handle driven line by line from stdin, for the multi-process
//! tests. Every command prints exactly one answer line (`ok …`, `none`, or `err KIND …`);
//! role changes are printed as `role NAME PID` lines whenever they happen.
//!
//! Usage: `party-node DIR [--backend NAME] [--no-retry] [--change-feed] [--put-first KEY VALUE]
//! [--dedup-retention-ms MS] [--request-timeout-ms MS] [--spin-us MICROS] [--transaction-attempts N]
//! [--max-connections N] [--sigpipe-default] [--etcd-endpoints URL,URL… [--etcd-prefix PREFIX]]`
//!
//! Commands (keys and values are words without spaces):
//! - `ready` → `ok ROLE`
//! - `put K V`, `del K` → `ok`; `get K` → `ok V` or `none`
//! - `burst PREFIX N`: N writes issued at once, in order, each a batch putting
//!   `PREFIX/<i>` = i and `PREFIX/last` = i → `ok N` when all are acknowledged, or the
//!   first error
//! - `fill-edge N`: writes N keys (4-byte big-endian numbers) and keys at the byte edges
//!   (empty, 0x00, 0xff, 0xffff, and prefixes of one another), each with itself as value
//! - `scan FORWARD|REVERSE PAUSE_MS`: reads the whole store 50 entries at a time, pausing
//!   between chunks → `ok COUNT HEXKEY,HEXKEY,…`
//! - `open-iter` then `next-chunk N`: an iterator read by hand → `ok COUNT` or `err …`
//! - `seq-puts PREFIX N`: N puts one after the other, `PREFIX<i>` = i for i = 000001… →
//!   `ok N`
//! - `watch-start PREFIX`: subscribes to the keys under PREFIX (a task collects the
//!   changes) → `ok POSITION` once subscribed; `watch-seen` → `ok COUNT` of changes so far
//!   (`err …` once it failed); `watch-wait N` → the same once N changes were seen (or it
//!   failed, or fell behind: `err lagged …`); `watch-list` → `ok KEY,KEY,…` of the puts seen, in order,
//!   or `err order …` if commit numbers did not rise, `err lagged …` if any was lost
//! - `socket` → `ok PATH`: where the directory's socket is
//! - `followers` → `ok COUNT` of the followers the leader serves now
//! - `takeover` → `ok CAUSE` of the last failover the handle lived through, or `none`
//! - `close` → `ok` after the handle closed; `close-before-exit` → `ok` after
//!   `Db::close_before_exit`, then returns from main; `exit` → ends the process without
//!   closing

use std::time::Duration;

use std::sync::{Arc, Mutex};

use party_core::{open, BatchOp, Change, Db, Error, Iter, IterOptions, KeyRange, Options, Role};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!(
            "usage: party-node DIR [--backend NAME] [--no-retry] [--put-first KEY VALUE] \
             [--max-frame-len BYTES] [--iter-window ENTRIES] [--dedup-retention-ms MS] \
             [--request-timeout-ms MS] [--spin-us MICROS] [--transaction-attempts N] \
             [--max-connections N] [--min-free-space-gib GIB] [--sigpipe-default] \
             [--etcd-endpoints URL,URL… [--etcd-prefix PREFIX]]"
        );
        std::process::exit(2);
    };
    if args.iter().any(|a| a == "--sigpipe-default") {
        restore_sigpipe_default();
    }
    let mut options = Options::default()
        .retry(!args.iter().any(|a| a == "--no-retry"))
        .change_feed(args.iter().any(|a| a == "--change-feed"));
    if let Some(i) = args.iter().position(|a| a == "--backend") {
        match args.get(i + 1).map(|name| name.parse()) {
            Some(Ok(backend)) => options.backend = backend,
            _ => {
                println!("err usage --backend needs fjall, sled or rocksdb");
                std::process::exit(2);
            }
        }
    }
    if let Some(i) = args.iter().position(|a| a == "--etcd-endpoints") {
        let endpoints: Vec<String> = args[i + 1].split(',').map(str::to_owned).collect();
        let prefix = args
            .iter()
            .position(|a| a == "--etcd-prefix")
            .map_or("party/", |j| args[j + 1].as_str());
        options = options.etcd(endpoints, prefix);
    }
    if let Some(max) = number_option(&args, "--max-frame-len") {
        options.limits.max_frame_len = max;
    }
    if let Some(ms) = number_option(&args, "--dedup-retention-ms") {
        options = options.dedup_retention(Duration::from_millis(u64::from(ms)));
    }
    if let Some(window) = number_option(&args, "--iter-window") {
        options.iter_window = window;
    }
    if let Some(ms) = number_option(&args, "--request-timeout-ms") {
        options = options.request_timeout(Some(Duration::from_millis(u64::from(ms))));
    }
    if let Some(micros) = number_option(&args, "--spin-us") {
        options = options.spin(Some(Duration::from_micros(u64::from(micros))));
    }
    if let Some(gib) = number_option(&args, "--min-free-space-gib") {
        options.limits.min_free_space = u64::from(gib) << 30;
    }
    if let Some(connections) = number_option(&args, "--max-connections") {
        options.limits.max_connections = connections;
    }
    if let Some(attempts) = number_option(&args, "--transaction-attempts") {
        options = options.transaction_attempts(attempts);
    }
    let db = match open(dir, options).await {
        Ok(db) => db,
        Err(error) => {
            println!("err open {error}");
            std::process::exit(1);
        }
    };
    // Issued before the role is settled: queued until it is.
    let first_put = args.iter().position(|a| a == "--put-first").map(|i| {
        let db = db.clone();
        let (key, value) = (args[i + 1].clone(), args[i + 2].clone());
        tokio::spawn(async move { db.put(key, value).await })
    });
    tokio::spawn(print_roles(db.clone()));
    if let Some(put) = first_put {
        match put.await.expect("put task") {
            Ok(()) => println!("ok put-first"),
            Err(error) => println!("err {}", describe(&error)),
        }
    }

    let mut iter: Option<Iter> = None;
    let watched = Watched::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["ready"] => db
                .ready()
                .await
                .map(|role| format!("ok {}", role_name(role))),
            ["put", key, value] => db.put(key, value).await.map(|()| "ok".into()),
            ["del", key] => db.del(key).await.map(|()| "ok".into()),
            ["get", key] => db.get(key).await.map(|value| match value {
                Some(value) => format!("ok {}", String::from_utf8_lossy(&value)),
                None => "none".into(),
            }),
            ["get-many", keys @ ..] => db.get_many(keys).await.map(|values| {
                let lens: Vec<String> = values
                    .iter()
                    .map(|value| {
                        value
                            .as_ref()
                            .map_or("none".into(), |v| v.len().to_string())
                    })
                    .collect();
                format!("ok {}", lens.join(","))
            }),
            ["burst", prefix, count] => burst(&db, prefix, count.parse().unwrap_or(0)).await,
            ["seq-puts", prefix, count] => seq_puts(&db, prefix, count.parse().unwrap_or(0)).await,
            ["watch-start", prefix] => watch_start(&db, prefix, &watched).await,
            ["watch-seen"] => Ok(watched.seen()),
            ["watch-wait", count] => Ok(watched.wait_seen(count.parse().unwrap_or(0)).await),
            ["watch-list"] => Ok(watched.list()),
            ["incr", counter, count] => increments(&db, counter, count.parse().unwrap_or(0)).await,
            ["cas", key, old, new] => {
                let given = |word: &str| (word != "_").then(|| word.to_owned());
                db.compare_and_swap(key, given(old), given(new)).await.map(
                    |swapped| match swapped {
                        Ok(()) => "ok".into(),
                        Err(conflict) => format!(
                            "conflict {}",
                            conflict
                                .current
                                .map_or("none".into(), |v| String::from_utf8_lossy(&v)
                                    .into_owned())
                        ),
                    },
                )
            }
            ["fill-big", count, size] => {
                fill_big(&db, count.parse().unwrap_or(0), size.parse().unwrap_or(0)).await
            }
            ["fill-edge", count] => fill_edge(&db, count.parse().unwrap_or(0)).await,
            ["fill-marked", count, size] => {
                fill_marked(&db, count.parse().unwrap_or(0), size.parse().unwrap_or(0)).await
            }
            ["check-marked", count, size] => {
                check_marked(&db, count.parse().unwrap_or(0), size.parse().unwrap_or(0)).await
            }
            ["scan", direction, pause] => {
                scan(&db, *direction == "REVERSE", pause.parse().unwrap_or(0)).await
            }
            ["open-iter"] => db.iter(IterOptions::default()).await.map(|opened| {
                iter = Some(opened);
                "ok".into()
            }),
            ["next-chunk", max] => match &mut iter {
                Some(iter) => iter
                    .next_chunk(max.parse().unwrap_or(1))
                    .await
                    .map(|chunk| format!("ok {}", chunk.map_or(0, |c| c.len()))),
                None => Ok("err usage no iterator".into()),
            },
            ["socket"] => Ok(format!("ok {}", db.socket_path().display())),
            ["takeover"] => Ok(match db.watch_role().current().last_takeover {
                Some(takeover) => format!("ok {}", takeover.cause.name()),
                None => "none".into(),
            }),
            ["followers"] => db
                .status()
                .await
                .map(|status| format!("ok {}", status.followers)),
            ["close"] => db.close().await.map(|()| "ok".into()),
            ["close-before-exit"] => db.close_before_exit().await.map(|()| "ok".into()),
            ["exit"] => std::process::exit(0),
            _ => Ok(format!("err usage {line}")),
        };
        match answer {
            Ok(line) => println!("{line}"),
            Err(error) => println!("err {}", describe(&error)),
        }
        if words == ["close-before-exit"] {
            // Out of main, as a program ends: its exit runs the C++ static destructors.
            return;
        }
    }
}

/// `--sigpipe-default`: a write to a socket whose other end is gone kills this process, as
/// it would a C program embedding party, or a Rust one that restored the signal's default
/// (Rust's start-up ignores it).
#[cfg(unix)]
#[allow(unsafe_code)]
fn restore_sigpipe_default() {
    // SAFETY: installs no handler, and the disposition is the process's whole, whichever
    // thread sets it: nothing in this program depends on the signal being ignored.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

#[cfg(not(unix))]
fn restore_sigpipe_default() {}

/// The number after `name` in `args`; exits with a usage error if it is not one.
fn number_option(args: &[String], name: &str) -> Option<u32> {
    let i = args.iter().position(|a| a == name)?;
    match args.get(i + 1).map(|n| n.parse()) {
        Some(Ok(n)) => Some(n),
        _ => {
            println!("err usage {name} needs a number");
            std::process::exit(2);
        }
    }
}

/// Writes `count` keys `big/NNNNNN` of `size` bytes each, 256 in flight.
async fn fill_big(db: &Db, count: u64, size: usize) -> Result<String, Error> {
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..count {
        in_flight.push_back(db.put(format!("big/{i:06}"), vec![b'v'; size]));
        if in_flight.len() >= 256 {
            in_flight.pop_front().expect("non-empty").await?;
        }
    }
    for put in in_flight {
        put.await?;
    }
    Ok(format!("ok {count}"))
}

/// A value of `marked/{i}` as `fill-marked` writes it: `size` bytes plus up to 4 KiB more,
/// by `i`, so that values of one run differ in length as well as in every byte.
fn marked_value(i: u64, size: usize) -> Vec<u8> {
    let len = size + (i as usize * 1031) % 4096;
    (0..len)
        .map(|at| (i as usize * 7 + at * 13 + at / 251) as u8)
        .collect()
}

/// Writes `count` values of [`marked_value`].
async fn fill_marked(db: &Db, count: u64, size: usize) -> Result<String, Error> {
    for i in 0..count {
        db.put(format!("marked/{i:06}"), marked_value(i, size))
            .await?;
    }
    Ok(format!("ok {count}"))
}

/// Reads `fill-marked`'s values back, 16 in flight, over and over until every one came
/// back whole three times: `ok N` with the values read, or the first that differs.
async fn check_marked(db: &Db, count: u64, size: usize) -> Result<String, Error> {
    let mut in_flight = std::collections::VecDeque::new();
    let mut read = 0u64;
    for n in 0..count * 3 {
        let i = n % count.max(1);
        in_flight.push_back((i, db.get(format!("marked/{i:06}"))));
        if in_flight.len() >= 16 {
            let (i, get) = in_flight.pop_front().expect("non-empty");
            if get.await? != Some(marked_value(i, size)) {
                return Ok(format!("err marked/{i:06} differs"));
            }
            read += 1;
        }
    }
    for (i, get) in in_flight {
        if get.await? != Some(marked_value(i, size)) {
            return Ok(format!("err marked/{i:06} differs"));
        }
        read += 1;
    }
    Ok(format!("ok {read}"))
}

/// Issues all the writes at once, in order (operations are issued when called), then waits
/// for every answer.
async fn burst(db: &Db, prefix: &str, count: u64) -> Result<String, Error> {
    let writes: Vec<_> = (1..=count)
        .map(|i| {
            let value = i.to_string().into_bytes();
            db.batch(vec![
                BatchOp::Put {
                    key: format!("{prefix}/{i:06}").into_bytes(),
                    value: value.clone(),
                },
                BatchOp::Put {
                    key: format!("{prefix}/last").into_bytes(),
                    value,
                },
            ])
        })
        .collect();
    for write in writes {
        write.await?;
    }
    Ok(format!("ok {count}"))
}

/// Increments `counter` `count` times, one transaction after the other, each also writing
/// a key of its own (`<counter>/<id>/<n>`, the id this process's pid) so that a check can
/// count the increments committed.
async fn seq_puts(db: &Db, prefix: &str, count: u64) -> Result<String, Error> {
    for n in 1..=count {
        db.put(format!("{prefix}{n:06}"), n.to_string()).await?;
    }
    Ok(format!("ok {count}"))
}

/// What a subscription has seen: each change's commit number and, for a put, its key.
#[derive(Default, Clone)]
struct Watched {
    log: Arc<Mutex<WatchLog>>,
    /// Sent to after every change, so that `watch-wait` wakes when the log grows.
    grown: Arc<tokio::sync::watch::Sender<()>>,
}

#[derive(Default)]
struct WatchLog {
    changes: Vec<(u64, Option<String>)>,
    lagged: u64,
    failed: Option<String>,
}

impl Watched {
    fn log(&self) -> std::sync::MutexGuard<'_, WatchLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the subscription has seen `count` changes, failed or fallen behind;
    /// then as `seen`.
    async fn wait_seen(&self, count: usize) -> String {
        let mut grown = self.grown.subscribe();
        loop {
            let enough = {
                let log = self.log();
                log.failed.is_some() || log.lagged > 0 || log.changes.len() >= count
            };
            if enough {
                return self.seen();
            }
            // The sender lives in `self`: this ends only by a change.
            let _ = grown.changed().await;
        }
    }

    fn seen(&self) -> String {
        let log = self.log();
        match &log.failed {
            Some(error) => format!("err {error}"),
            None if log.lagged > 0 => format!("err lagged {}", log.lagged),
            None => format!("ok {}", log.changes.len()),
        }
    }

    fn list(&self) -> String {
        let log = self.log();
        if log.lagged > 0 {
            return format!("err lagged {}", log.lagged);
        }
        if let Some(pair) = log.changes.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
            return format!("err order {} then {}", pair[0].0, pair[1].0);
        }
        let keys: Vec<&str> = log
            .changes
            .iter()
            .filter_map(|(_, key)| key.as_deref())
            .collect();
        format!("ok {}", keys.join(","))
    }
}

/// Subscribes to the keys under `prefix` and collects what comes in a task of its own.
async fn watch_start(db: &Db, prefix: &str, watched: &Watched) -> Result<String, Error> {
    let range = KeyRange::all()
        .gte(prefix)
        .lt([prefix.as_bytes(), &[0xff]].concat());
    let mut watch = db.watch(range).await?;
    let position = watch.position();
    let watched = watched.clone();
    tokio::spawn(async move {
        while let Some(next) = watch.next().await {
            let mut log = watched.log();
            match next {
                Ok(change) => {
                    let key = match &change {
                        Change::Put { key, .. } => Some(String::from_utf8_lossy(key).into_owned()),
                        _ => None,
                    };
                    log.changes.push((change.seq().0, key));
                }
                Err(Error::Lagged { missed }) => log.lagged += missed,
                Err(error) => log.failed = Some(error.to_string()),
            }
            drop(log);
            watched.grown.send_replace(());
        }
    });
    Ok(format!("ok {}", position.0))
}

async fn increments(db: &Db, counter: &str, count: u64) -> Result<String, Error> {
    let id = std::process::id();
    for n in 1..=count {
        let unique = format!("{counter}/{id}/{n:06}");
        let (counter, unique) = (counter, &unique);
        let committed = db
            .transaction(|tx| async move {
                let held = tx.get(counter).await?;
                let value: u64 =
                    held.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
                tx.put(counter, (value + 1).to_string());
                tx.put(unique, "1");
                Ok::<_, Error>(())
            })
            .await;
        match committed {
            Ok(()) => {}
            Err(party_core::TransactionError::Db(error)) => return Err(error),
            Err(other) => return Ok(format!("err {other}")),
        }
    }
    Ok(format!("ok {count}"))
}

/// Writes [`party_tests::edge_and_numbered_keys`], each with itself as value.
async fn fill_edge(db: &Db, count: u32) -> Result<String, Error> {
    let keys = party_tests::edge_and_numbered_keys(count);
    let total = keys.len();
    // Batches every store takes whole (etcd: 127 operations, the dedup record included).
    for chunk in keys.chunks(100) {
        let ops = chunk
            .iter()
            .map(|key| BatchOp::Put {
                key: key.clone(),
                value: key.clone(),
            })
            .collect();
        db.batch(ops).await?;
    }
    Ok(format!("ok {total}"))
}

async fn scan(db: &Db, reverse: bool, pause_ms: u64) -> Result<String, Error> {
    let options = IterOptions::default().reverse(reverse);
    let mut iter = db.iter(options).await?;
    let mut keys = Vec::new();
    while let Some(chunk) = iter.next_chunk(50).await? {
        keys.extend(chunk.into_iter().map(|entry| hex(&entry.key)));
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
    Ok(format!("ok {} {}", keys.len(), keys.join(",")))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn print_roles(db: Db) {
    let mut roles = db.watch_role();
    let mut state = roles.current();
    loop {
        println!("role {} {}", role_name(state.role), std::process::id());
        match roles.changed().await {
            Ok(next) => state = next,
            Err(_) => return,
        }
    }
}

fn role_name(role: Role) -> &'static str {
    role.name()
}

fn describe(error: &Error) -> String {
    let kind = match error {
        Error::Closed => "closed",
        Error::ConnectionLost => "connection_lost",
        Error::TimedOut => "timed_out",
        Error::ReplyTooLarge { .. } => "reply_too_large",
        Error::OutcomeUnknown { .. } => "outcome_unknown",
        _ => "other",
    };
    format!("{kind} {error}")
}

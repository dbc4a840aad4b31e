//! How fast a new leader opens the store after the old one was killed.
//!
//! For each compiled-in store: a child process writes 100 000 values of 100 bytes (100 per
//! commit, as a leader's group commit would), is killed with SIGKILL, and the store is
//! reopened. The baseline is opening a fresh, empty store in the same run. Target for fjall:
//! reopen after kill -9 ≤ 50 ms.
//!
//! Run: `cargo bench -p party-backends --bench reopen` (add `--features sled,rocksdb` for
//! the others).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use party_backends::BackendKind;

const WRITES: u64 = 100_000;
const ROUNDS: usize = 3;

fn timed_open(kind: BackendKind, path: &std::path::Path) -> Duration {
    let start = Instant::now();
    let store = kind.open(path).expect("store opens");
    let elapsed = start.elapsed();
    drop(store);
    elapsed
}

fn reopen_after_kill(kind: BackendKind) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_party-backend-writer"))
        .args([
            kind.name(),
            dir.path().to_str().unwrap(),
            "fill",
            &WRITES.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn party-backend-writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().expect("writer output").unwrap(), "filled");
    child.kill().unwrap();
    child.wait().unwrap();
    timed_open(kind, dir.path())
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let kinds = [BackendKind::Fjall, BackendKind::Sled, BackendKind::Rocksdb];
    println!("reopen after kill -9 following {WRITES} writes of 100 B (median of {ROUNDS})");
    println!(
        "{:<8} {:>14} {:>20} {:>8}",
        "store", "fresh open ms", "reopen after kill ms", "ratio"
    );
    for kind in kinds {
        let dir = tempfile::tempdir().unwrap();
        if kind.open(dir.path()).is_err() {
            continue; // not compiled in
        }
        let fresh = median(
            (0..ROUNDS)
                .map(|_| timed_open(kind, tempfile::tempdir().unwrap().path()))
                .collect(),
        );
        let reopen = median((0..ROUNDS).map(|_| reopen_after_kill(kind)).collect());
        println!(
            "{:<8} {:>14.2} {:>20.2} {:>8.1}",
            kind.name(),
            fresh.as_secs_f64() * 1e3,
            reopen.as_secs_f64() * 1e3,
            reopen.as_secs_f64() / fresh.as_secs_f64(),
        );
    }
}

//! How fast a new leader finds the ends of a change log whose oldest entries were trimmed.
//!
//! A new leader's writer reads the log's oldest and newest entries before its first commit
//! (`Backend::change_log_ends`). The writer trims the log's oldest entries as it grows
//! (a page of 1024 at a time), and fjall and RocksDB keep the tombstones of those entries
//! until a compaction drops them, so a forward read from the log's start walks all of
//! them. For each compiled-in store: 40 000 commits with a change log entry of 1 KiB each,
//! then all but the last 1 000 trimmed in the writer's pages (the writer trims as the log
//! grows, so its tombstones lie among later commits); then, reopened (a takeover), the
//! time `change_log_ends` takes, against the same store reopened before the trim (the
//! baseline, same run). Target: the trimmed log's ends ≤ 4× the untrimmed one's (fjall
//! with a forward read from the log's start, as before: 337×, 71 ms). That forward read is
//! shown too.
//!
//! Run: `cargo bench -p party-backends --bench log_ends` (add `--features sled,rocksdb`
//! for the others).

use std::time::{Duration, Instant};

use party_backends::{Backend, BackendKind, OpenError, WriteBatch};
use party_proto::feed::{encode_entry, TRIM_PAGE};
use party_proto::wire::WriteOp;
use party_proto::{CommitSeq, LogAppend};

const COMMITS: u64 = 40_000;
const KEPT: u64 = 1_000;
const ROUNDS: usize = 5;

fn fill(store: &dyn Backend) {
    let mut bytes_before = 0;
    for n in 1..=COMMITS {
        let ops = [WriteOp::Put {
            key: format!("key/{n:08}").into_bytes(),
            value: vec![b'v'; 1024],
        }];
        let entry = encode_entry(bytes_before, &ops);
        bytes_before += entry.len() as u64;
        store
            .write(&WriteBatch {
                ops: ops.to_vec(),
                records: Vec::new(),
                log: Some(LogAppend {
                    seq: CommitSeq(n),
                    entry,
                }),
            })
            .expect("a commit");
    }
}

fn trim(store: &dyn Backend) {
    let mut from = 1;
    while from <= COMMITS - KEPT {
        let to = (from + TRIM_PAGE as u64).min(COMMITS - KEPT + 1);
        let page: Vec<CommitSeq> = (from..to).map(CommitSeq).collect();
        store.remove_changes(&page).expect("a trim");
        from = to;
    }
}

/// Reopens the store at `path` `ROUNDS` times; the median time of `read` on each fresh open.
fn after_reopen(
    kind: BackendKind,
    path: &std::path::Path,
    read: impl Fn(&dyn Backend),
) -> Duration {
    let mut samples: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let store = kind.open(path).expect("the store opens");
            let start = Instant::now();
            read(&*store);
            let took = start.elapsed();
            drop(store);
            took
        })
        .collect();
    samples.sort();
    samples[ROUNDS / 2]
}

fn ends(expected_first: u64) -> impl Fn(&dyn Backend) {
    move |store| {
        let ends = store.change_log_ends().expect("the ends").expect("a log");
        assert_eq!(
            (ends.first.seq, ends.last.seq),
            (CommitSeq(expected_first), CommitSeq(COMMITS))
        );
    }
}

fn forward_from_start(store: &dyn Backend) {
    let first = store
        .change_entries(CommitSeq(0), false, 1)
        .expect("a read");
    assert_eq!(first.len(), 1);
}

fn main() {
    let kinds = [BackendKind::Fjall, BackendKind::Sled, BackendKind::Rocksdb];
    println!(
        "change_log_ends on reopen after {COMMITS} commits of 1 KiB, all but {KEPT} trimmed \
         (median of {ROUNDS})"
    );
    println!(
        "{:<8} {:>14} {:>12} {:>8} {:>22}",
        "store", "untrimmed ms", "trimmed ms", "ratio", "forward read, trimmed ms"
    );
    for kind in kinds {
        let dir = tempfile::tempdir().unwrap();
        let store = match kind.open(dir.path()) {
            Ok(store) => store,
            Err(OpenError::NotCompiled { .. }) => continue,
            Err(error) => panic!("{} does not open: {error}", kind.name()),
        };
        fill(&*store);
        store.checkpoint().expect("a checkpoint");
        drop(store);
        let untrimmed = after_reopen(kind, dir.path(), ends(1));
        let store = kind.open(dir.path()).expect("the store opens");
        trim(&*store);
        store.checkpoint().expect("a checkpoint");
        drop(store);
        let trimmed = after_reopen(kind, dir.path(), ends(COMMITS - KEPT + 1));
        let forward = after_reopen(kind, dir.path(), forward_from_start);
        // sled deletes for good: it keeps the forward read.
        let name = match kind {
            BackendKind::Sled => "sled (forward read)".to_owned(),
            _ => kind.name().to_owned(),
        };
        println!(
            "{:<8} {:>14.3} {:>12.3} {:>8.1} {:>22.3}",
            name,
            untrimmed.as_secs_f64() * 1e3,
            trimmed.as_secs_f64() * 1e3,
            trimmed.as_secs_f64() / untrimmed.as_secs_f64(),
            forward.as_secs_f64() * 1e3,
        );
    }
}

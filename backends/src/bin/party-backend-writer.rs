//! A tool for the crash tests and the reopen benchmark: it opens a store and either holds it
//! open (`hold`), commits numbered batches until it is killed (`batches`, or `overwrites`:
//! the same few keys written over with big values), printing each batch number only after
//! its commit has returned — the point at which a leader would acknowledge it — or writes
//! `count` keys of 100 bytes, 100 per commit, prints `filled` and waits to be killed
//! (`fill <count>`). Every commit carries a dedup record and a change log entry, as a
//! leader's do.
//!
//! Batch `i` puts the keys `batch/<i>/<j>` for `j` in `0..KEYS_PER_BATCH` and stores the
//! dedup record `applied_through = i` for client [`CLIENT`], all in one commit.
//!
//! Batch `i` of `overwrites` puts `big/<j>` for `j` in `0..KEYS_PER_BATCH`, each
//! [`big_value`]`(i, j)`.
//!
//! Usage:
//! `party-backend-writer <fjall|sled|rocksdb> <path> <hold|batches|overwrites|fill COUNT>`

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use party_backends::{Backend, BackendKind, WriteBatch};
use party_proto::wire::{BatchOp, WriteOp};
use party_proto::{ClientId, DedupRecord, WriteSeq};

const KEYS_PER_BATCH: u32 = 20;
const CLIENT: ClientId = ClientId(7);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, path, mode) = match args.as_slice() {
        [kind, path, mode] => (kind, path, mode.as_str()),
        [kind, path, mode, count] if mode == "fill" => (kind, path, count.as_str()),
        _ => {
            eprintln!(
                "usage: party-backend-writer <fjall|sled|rocksdb> <path> \
                 <hold|batches|overwrites|fill COUNT>"
            );
            return ExitCode::from(2);
        }
    };
    let mode = match mode.parse() {
        Ok(count) => Mode::Fill(count),
        Err(_) => Mode::Named(mode),
    };
    match run(kind, Path::new(path), mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("party-backend-writer: {error}");
            ExitCode::FAILURE
        }
    }
}

enum Mode<'a> {
    Named(&'a str),
    Fill(u64),
}

fn run(kind: &str, path: &Path, mode: Mode) -> Result<(), Box<dyn std::error::Error>> {
    let store = BackendKind::from_str(kind)?.open(path)?;
    let mut out = std::io::stdout().lock();
    match mode {
        Mode::Named("hold") => {
            writeln!(out, "ready")?;
            out.flush()?;
            park_forever()
        }
        Mode::Fill(count) => {
            let keys: Vec<u64> = (0..count).collect();
            let mut log = ChangeLog::default();
            for (i, group) in (1u64..).zip(keys.chunks(100)) {
                let ops = group
                    .iter()
                    .map(|n| BatchOp::Put {
                        key: format!("fill/{n:010}").into_bytes(),
                        value: vec![b'v'; 100],
                    })
                    .collect();
                store.write(&log.batch(i, ops))?;
            }
            writeln!(out, "filled")?;
            out.flush()?;
            park_forever()
        }
        Mode::Named("batches") => acked_until_killed(&*store, &mut out, |i, j| BatchOp::Put {
            key: format!("batch/{i:08}/{j:02}").into_bytes(),
            value: vec![b'v'; 100],
        }),
        Mode::Named("overwrites") => acked_until_killed(&*store, &mut out, |i, j| BatchOp::Put {
            key: format!("big/{j:02}").into_bytes(),
            value: big_value(i, j),
        }),
        Mode::Named(other) => Err(format!("unknown mode {other:?}").into()),
    }
}

/// Commits batch after batch, each of [`KEYS_PER_BATCH`] puts `put(i, j)`, and says
/// `acked i` once batch `i` has committed.
fn acked_until_killed(
    store: &dyn Backend,
    out: &mut impl Write,
    put: impl Fn(u64, u32) -> BatchOp,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut log = ChangeLog::default();
    for i in 1u64.. {
        let ops = (0..KEYS_PER_BATCH).map(|j| put(i, j)).collect();
        store.write(&log.batch(i, ops))?;
        writeln!(out, "acked {i}")?;
        out.flush()?;
    }
    Ok(())
}

/// Commits as a leader's group commits do: with [`CLIENT`]'s dedup record and the
/// change log's entry.
#[derive(Default)]
struct ChangeLog {
    bytes_before: u64,
}

impl ChangeLog {
    /// Commit `i`: `ops` in one batch, the record `applied_through = i`, log entry `i`.
    fn batch(&mut self, i: u64, ops: Vec<BatchOp>) -> WriteBatch {
        let record = DedupRecord {
            applied_through: WriteSeq(i),
            failed: Vec::new(),
            last_write_ms: i,
        };
        let ops = vec![WriteOp::Batch { ops }];
        let entry = party_proto::feed::encode_entry(self.bytes_before, &ops);
        self.bytes_before += entry.len() as u64;
        WriteBatch {
            ops,
            records: vec![(CLIENT, record)],
            log: Some(party_proto::LogAppend {
                seq: party_proto::CommitSeq(i),
                entry,
            }),
        }
    }
}

/// The value of `big/<j>` in batch `i` of `overwrites`: its name, repeated to 64 KiB.
fn big_value(i: u64, j: u32) -> Vec<u8> {
    format!("{i:08}/{j:02}/")
        .repeat(BIG_VALUE_LEN / 12)
        .into_bytes()
}

/// About the length of a value of `overwrites` (a multiple of its 12-byte name).
const BIG_VALUE_LEN: usize = 64 * 1024;

fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

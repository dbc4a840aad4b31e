//! A tool for the crash tests of the conformance suite: it opens a store and either holds it
//! open (`hold`) or commits numbered batches until it is killed (`batches`), printing each
//! batch number only after its commit has returned — the point at which a leader would
//! acknowledge it.
//!
//! Batch `i` puts the keys `batch/<i>/<j>` for `j` in `0..KEYS_PER_BATCH` and stores the
//! dedup record `applied_through = i` for client [`CLIENT`], all in one commit.
//!
//! Usage: `party-backend-writer <fjall|sled|rocksdb> <path> <hold|batches>`

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use party_backends::{BackendKind, WriteBatch};
use party_proto::wire::{BatchOp, WriteOp};
use party_proto::{ClientId, DedupRecord, WriteSeq};

const KEYS_PER_BATCH: u32 = 20;
const CLIENT: ClientId = ClientId(7);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, path, mode] = args.as_slice() else {
        eprintln!("usage: party-backend-writer <fjall|sled|rocksdb> <path> <hold|batches>");
        return ExitCode::from(2);
    };
    match run(kind, Path::new(path), mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("party-backend-writer: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(kind: &str, path: &Path, mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = BackendKind::from_str(kind)?.open(path)?;
    let mut out = std::io::stdout().lock();
    match mode {
        "hold" => {
            writeln!(out, "ready")?;
            out.flush()?;
            loop {
                std::thread::park();
            }
        }
        "batches" => {
            for i in 1u64.. {
                let ops = (0..KEYS_PER_BATCH)
                    .map(|j| BatchOp::Put {
                        key: format!("batch/{i:08}/{j:02}").into_bytes(),
                        value: vec![b'v'; 100],
                    })
                    .collect();
                let record = DedupRecord {
                    applied_through: WriteSeq(i),
                    failed: Vec::new(),
                };
                let batch = WriteBatch {
                    ops: vec![WriteOp::Batch { ops }],
                    records: vec![(CLIENT, record)],
                };
                store.write(&batch)?;
                writeln!(out, "acked {i}")?;
                out.flush()?;
            }
            Ok(())
        }
        other => Err(format!("unknown mode {other:?}").into()),
    }
}

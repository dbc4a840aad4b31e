//! A process that closes its handle with `close_before_exit` and then ends, as the CLI's
//! one-shot commands do, exits cleanly on every store, and its writes are there for the
//! next process.

use party_core::{open, BackendKind, Options};
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// One-shot processes in a row, per store. RocksDB aborted about one exit in six when a
/// process could exit while it closed; 30 exits all clean had a chance of about 1 in 200.
const PROCESSES: u32 = 30;

fn one_shot_processes_exit_cleanly_with_their_writes_stored(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    for process in 0..PROCESSES {
        let key = format!("k{process}");
        let mut node = Node::spawn(
            NODE,
            dir.path(),
            &["--backend", store, "--put-first", &key, "written"],
        );
        assert_eq!(node.answer(), "ok put-first", "{store}, process {process}");
        assert_eq!(node.send("close-before-exit"), "ok", "{store}");
        let status = node.wait_exit();
        assert!(status.success(), "{store}, process {process}: {status}");
    }
    let kind: BackendKind = store.parse().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let next = open(dir.path(), Options::default().backend(kind))
            .await
            .unwrap();
        for process in 0..PROCESSES {
            let got = next.get(format!("k{process}")).await.unwrap();
            assert_eq!(got.as_deref(), Some(&b"written"[..]), "{store}, k{process}");
        }
        next.close().await.unwrap();
    });
}

#[test]
fn fjall() {
    one_shot_processes_exit_cleanly_with_their_writes_stored("fjall");
}

#[cfg(feature = "sled")]
#[test]
fn sled() {
    one_shot_processes_exit_cleanly_with_their_writes_stored("sled");
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb() {
    one_shot_processes_exit_cleanly_with_their_writes_stored("rocksdb");
}

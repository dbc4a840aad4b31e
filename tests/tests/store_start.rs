//! A store's creation survives a crash: the first process of a data directory, killed with
//! SIGKILL at any moment of its start (creating the directory, its marker, its store), leaves
//! a directory that the next process opens, with every acknowledged write in it.

use std::time::{Duration, Instant};

use party_core::{open, BackendKind, Options, Role};
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// Starts of a first process cut short, per store.
const KILLS: u32 = 40;

/// How long a first process takes here from spawn to its first write acknowledged, the
/// slowest of three.
fn whole_start(store: &str) -> Duration {
    (0..3)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let started = Instant::now();
            let mut first = first_process(store, dir.path());
            assert_eq!(first.answer(), "ok put-first");
            started.elapsed()
        })
        .max()
        .unwrap()
}

fn first_process(store: &str, dir: &std::path::Path) -> Node {
    Node::spawn(
        NODE,
        dir,
        &["--backend", store, "--put-first", "k", "acknowledged"],
    )
}

fn killed_at_any_moment_of_its_start_the_first_process_leaves_a_directory_that_opens(store: &str) {
    let kind: BackendKind = store.parse().unwrap();
    let whole = whole_start(store);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for kill in 0..KILLS {
        let dir = tempfile::tempdir().unwrap();
        // The kill moments sweep the whole start, a little past it; a fixed spread rather
        // than random ones, so that every run covers early, middle and late.
        let at = whole.mul_f64(1.2 * f64::from(kill) / f64::from(KILLS));
        let mut first = first_process(store, dir.path());
        std::thread::sleep(at);
        first.kill();
        first.poll_roles();
        let acknowledged = first.try_answer().as_deref() == Some("ok put-first");

        runtime.block_on(async {
            let next = open(dir.path(), Options::default().backend(kind))
                .await
                .unwrap_or_else(|e| panic!("{store}, killed after {at:?}: open: {e}"));
            let role = next.ready().await;
            assert!(
                matches!(role, Ok(Role::Leader)),
                "{store}, killed after {at:?}: {role:?}"
            );
            let got = next.get("k").await.unwrap();
            if acknowledged {
                assert_eq!(got.as_deref(), Some(&b"acknowledged"[..]), "{store}");
            }
            next.put("k", "next").await.unwrap();
            assert_eq!(next.get("k").await.unwrap().as_deref(), Some(&b"next"[..]));
            next.close().await.unwrap();
        });
    }
}

#[test]
fn fjall() {
    killed_at_any_moment_of_its_start_the_first_process_leaves_a_directory_that_opens("fjall");
}

#[cfg(feature = "sled")]
#[test]
fn sled() {
    killed_at_any_moment_of_its_start_the_first_process_leaves_a_directory_that_opens("sled");
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb() {
    killed_at_any_moment_of_its_start_the_first_process_leaves_a_directory_that_opens("rocksdb");
}

//! A leader killed with SIGKILL lets its directory's lock go, and its store's, before its
//! connections end (`party_backends::lock_order`): its follower, trying the lock the
//! moment its connection ends, takes it at once and opens the store, rather than finding
//! either still held by a process whose files are still closing and waiting out a retry.
//! Real processes; the follower records its machine's inputs, which tell what its tries
//! found.

#![cfg(target_os = "linux")]

use std::path::Path;

use party_proto::recording::{decode_segment, Record};
use party_proto::{ElectionInput, ProcessInput};
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// Failovers: a lock let go after the connections was still held at the first try in
/// about half of them (the dying leader's other files close in between).
const ROUNDS: usize = 6;

#[test]
fn a_killed_leaders_follower_takes_its_locks_at_the_first_try() {
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let records = tempfile::tempdir().unwrap();
        let mut leader = Node::spawn(NODE, dir.path(), &[]);
        assert_eq!(leader.send("ready"), "ok leader");
        let mut follower = Node::spawn_with_env(
            NODE,
            dir.path(),
            &[],
            &[("PARTY_RECORD", records.path().to_str().unwrap())],
        );
        assert_eq!(follower.send("ready"), "ok follower");
        // Killed while it serves the follower's writes.
        follower.submit("seq-puts k 3000");
        assert!(leader.send("seq-puts l 100").starts_with("ok"));
        leader.sigkill();
        assert!(follower.answer().starts_with("ok"), "round {round}");
        assert_eq!(follower.send("ready"), "ok leader");
        assert_eq!(follower.send("close"), "ok");
        let tries = lock_tries(records.path());
        assert_eq!(
            tries.first(),
            Some(&ElectionInput::LockAcquired),
            "round {round}: the lock tries after the leader's death found {tries:?}"
        );
        assert!(
            !tries.contains(&ElectionInput::StoreLocked),
            "round {round}: the store was still locked: {tries:?}"
        );
    }
}

/// The order above rests on where a leader's locks sit: at the top of its descriptor
/// table (its limit, at most 1024), the store's own lock on the highest descriptor and the
/// directory's just below it, so that a killed leader lets go of the store's first.
#[test]
fn a_leaders_locks_sit_at_the_top_of_its_descriptors_the_stores_highest() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let process = Path::new("/proc").join(leader.pid().to_string());
    // "Max open files  <soft>  <hard>  files"; "unlimited" leaves the ceiling.
    let limits = std::fs::read_to_string(process.join("limits")).unwrap();
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<u32>().ok());
    let top = soft.unwrap_or(u32::MAX).min(1024);
    let file_on = |descriptor: u32| {
        let target = std::fs::read_link(process.join("fd").join(descriptor.to_string()));
        target
            .ok()
            .and_then(|path| Some(path.file_name()?.to_owned()))
    };
    assert_eq!(
        file_on(top - 1),
        Some("store.lock".into()),
        "the store's lock"
    );
    assert_eq!(
        file_on(top - 2),
        Some("party.lock".into()),
        "the directory's"
    );
}

/// What the recorded handle's tries of the lock and opens of the store found after its
/// first connection ended (the leader's death), in order.
fn lock_tries(dir: &Path) -> Vec<ElectionInput> {
    let mut ended = false;
    let mut found = Vec::new();
    for file in party_tests::recorded_processes(dir) {
        let segment = decode_segment(&std::fs::read(&file).unwrap()).unwrap();
        for record in segment.records {
            let Record::Input { input, .. } = record else {
                continue;
            };
            match input.into_owned() {
                ProcessInput::LinkClosed | ProcessInput::LinkBroken(_) => ended = true,
                ProcessInput::Election(
                    input @ (ElectionInput::LockAcquired
                    | ElectionInput::LockBusy
                    | ElectionInput::StoreLocked),
                ) if ended => found.push(input),
                _ => {}
            }
        }
    }
    assert!(ended, "the recording has no end of a connection");
    found
}

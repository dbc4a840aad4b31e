//! Big answers through a follower's ring (party-core's `value_ring.rs`): a follower that is
//! sent big values offers its leader a memory file, and the leader writes each big value
//! there. Real processes: values that differ in every byte and in length come back whole
//! as they wrap round the ring and as it fills (the rest going by the socket), and after
//! the leader is killed, through the ring the follower offers its new leader.

#![cfg(target_os = "linux")]

use std::time::Duration;

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// Bound on a takeover, against a hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// The rings process `pid` holds open: its own, as a follower, and its followers', as a
/// leader (a ring's file is a `memfd` named `party-ring`).
fn rings_held(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("/memfd:party-ring"))
        .count()
}

#[test]
fn big_values_come_whole_through_the_ring_and_through_the_next_leaders_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut followers = [
        Node::spawn(NODE, dir.path(), &[]),
        Node::spawn(NODE, dir.path(), &[]),
    ];
    for follower in &mut followers {
        assert_eq!(follower.send("ready"), "ok follower");
    }
    // 8 MiB and more of values of 64 KiB to 68 KiB: twice round a ring of 4 MiB.
    assert_eq!(leader.send("fill-marked 120 65536"), "ok 120");
    assert_eq!(followers[0].send("check-marked 120 65536"), "ok 360");
    assert_eq!(
        rings_held(followers[0].pid()),
        1,
        "the follower offered no ring"
    );
    assert_eq!(rings_held(leader.pid()), 1, "the leader opened no ring");
    // Values of 1 MiB: four fill the ring, and the rest of the 16 in flight go by the
    // socket until the follower has taken those.
    assert_eq!(leader.send("fill-marked 24 1048576"), "ok 24");
    assert_eq!(followers[1].send("check-marked 24 1048576"), "ok 72");
    assert_eq!(rings_held(leader.pid()), 2);

    leader.sigkill();
    let led = Node::wait_any_role(&mut followers, "leader", PATIENCE).expect("a new leader");
    let follower = &mut followers[1 - led];
    assert_eq!(follower.send("check-marked 24 1048576"), "ok 72");
    // The dead leader's ring went with its connection; the follower offered the new one
    // another, which the new leader holds alone (its own ring went with its link).
    assert_eq!(rings_held(follower.pid()), 1);
    assert_eq!(rings_held(followers[led].pid()), 1);
}

#[test]
fn a_recording_follower_offers_no_ring_and_reads_big_values_whole() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let record = recordings.path().to_str().unwrap();
    let mut follower = Node::spawn_with_env(NODE, dir.path(), &[], &[("PARTY_RECORD", record)]);
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(leader.send("fill-marked 20 65536"), "ok 20");
    assert_eq!(follower.send("check-marked 20 65536"), "ok 60");
    assert_eq!(rings_held(follower.pid()), 0);
    assert_eq!(rings_held(leader.pid()), 0);
}

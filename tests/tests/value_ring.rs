//! Big answers through a follower's ring (party-core's `value_ring.rs`): a follower that is
//! sent big values offers its leader a memory file, and the leader writes each big value
//! there. Real processes: values that differ in every byte and in length come back whole
//! as they wrap round the ring and as it fills (the rest going by the socket), and after
//! the leader is killed, through the ring the follower offers its new leader. A leader finds
//! the ring through the follower's process id, which it cannot see from another process id
//! namespace: values then go by the socket.

#![cfg(target_os = "linux")]

use std::process::Command;
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

/// The rings process `pid` has mapped: each ring it holds, and none it let go of.
fn rings_mapped(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("the process's mappings")
        .lines()
        .filter(|mapping| mapping.contains("/memfd:party-ring"))
        .count()
}

/// How far the follower `pid` has taken values from its ring, over every lap: the
/// position it tells its leader, the ring's first 8 bytes (an atomic counter, in the
/// machine's byte order).
fn ring_position(pid: u32) -> u64 {
    use std::io::Read;
    let ring = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's descriptors")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|fd| {
            std::fs::read_link(fd)
                .is_ok_and(|target| target.to_string_lossy().starts_with("/memfd:party-ring"))
        })
        .expect("the follower's ring");
    let mut counter = [0; 8];
    let mut file = std::fs::File::open(ring).expect("the ring's file");
    file.read_exact(&mut counter).expect("the ring's counter");
    u64::from_ne_bytes(counter)
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
    // Only the values sent before the ring was offered (16 in flight at most) come by
    // the socket; the ring carries the rest however often it wraps, its room made again
    // as the follower tells how far it took the values.
    let through_ring = ring_position(followers[0].pid());
    let values = 360 * 65536;
    assert!(
        through_ring > values * 7 / 8,
        "{through_ring} of {values} bytes of values came through the ring"
    );
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
    // Each holds one ring mapped too: none it let go of stays.
    let follower = follower.pid();
    assert_eq!((rings_held(follower), rings_mapped(follower)), (1, 1));
    let leader = followers[led].pid();
    assert_eq!((rings_held(leader), rings_mapped(leader)), (1, 1));
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

/// `party-node DIR` in a process id namespace of its own (`unshare`, which needs root, as
/// `peers.rs`'s other users do), killed with the `unshare` process the `Node` holds.
fn spawn_in_new_pid_namespace(dir: &std::path::Path) -> Node {
    let mut command = Command::new("unshare");
    command.args(["--pid", "--kill-child", "--", NODE]).arg(dir);
    Node::spawn_command(command)
}

/// The process id, as this process sees it, of the node `unshare` started (once it has
/// answered: `unshare` has forked it by then).
fn node_under(unshare: &Node) -> u32 {
    let pid = unshare.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
    let children = children.expect("unshare's children");
    let node = children.split_whitespace().next().expect("unshare's node");
    node.parse().expect("a process id")
}

/// A leader in a process id namespace of its own sees a follower outside it as process 0
/// and cannot open its ring: big values come whole through the socket. A follower in its
/// own namespace, whose process id its leader can see, has its ring used.
#[test]
fn a_leader_that_cannot_see_its_followers_process_sends_big_values_by_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = spawn_in_new_pid_namespace(dir.path());
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(leader.send("fill-marked 40 65536"), "ok 40");
    assert_eq!(follower.send("check-marked 40 65536"), "ok 120");
    assert_eq!(
        rings_held(follower.pid()),
        1,
        "the follower offered no ring"
    );
    assert_eq!(
        rings_held(node_under(&leader)),
        0,
        "the leader opened a ring"
    );
    drop(leader);

    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = spawn_in_new_pid_namespace(dir.path());
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(leader.send("fill-marked 40 65536"), "ok 40");
    assert_eq!(follower.send("check-marked 40 65536"), "ok 120");
    assert_eq!(
        rings_held(node_under(&follower)),
        1,
        "the follower offered no ring"
    );
    assert_eq!(rings_held(leader.pid()), 1, "the leader opened no ring");
}

//! party across real processes: `party-node` children, leaders killed with SIGKILL. Every
//! scenario runs on fjall, on fjall with every process in low-latency mode (`fjall+spin`),
//! and on sled, rocksdb and etcd when their features are on (see the `on_store!` lines at
//! the end; etcd on a three-member cluster this test binary starts, each data directory
//! under a prefix of its own).

use std::collections::BTreeSet;
use std::time::Duration;

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");
/// How long a waiting end polls in low-latency mode.
const SPIN_MICROS: u32 = 200;

/// Starts a node of `dir` on `setup`: a store's name, with `+spin` for low-latency mode.
fn node(setup: &str, dir: &std::path::Path, args: &[&str]) -> Node {
    node_with_env(setup, dir, args, &[])
}

/// [`node`], with these environment variables set.
fn node_with_env(setup: &str, dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Node {
    let (store, spin) = match setup.strip_suffix("+spin") {
        Some(store) => (store, true),
        None => (setup, false),
    };
    let mut all: Vec<String> = vec!["--backend".into(), store.into()];
    if spin {
        all.extend(["--spin-us".into(), SPIN_MICROS.to_string()]);
    }
    #[cfg(feature = "etcd")]
    if store == "etcd" {
        all.extend(etcd_options(dir));
    }
    all.extend(args.iter().map(|arg| arg.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    Node::spawn_with_env(NODE, dir, &all, env)
}

/// Where the etcd store of `dir` lives: the binary's cluster, under the directory's path.
#[cfg(feature = "etcd")]
fn etcd_options(dir: &std::path::Path) -> [String; 4] {
    static CLUSTER: std::sync::OnceLock<party_core::LocalCluster> = std::sync::OnceLock::new();
    let cluster = CLUSTER.get_or_init(|| party_core::LocalCluster::start(3).unwrap());
    [
        "--etcd-endpoints".into(),
        cluster.endpoints().join(","),
        "--etcd-prefix".into(),
        format!("{}/", dir.display()),
    ]
}

fn leader_and_follower(store: &str, dir: &std::path::Path) -> (Node, Node) {
    let mut leader = node(store, dir, &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = node(store, dir, &[]);
    assert_eq!(follower.send("ready"), "ok follower");
    (leader, follower)
}

fn two_processes_put_and_get_through_each_other(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, mut follower) = leader_and_follower(store, dir.path());
    assert_eq!(leader.send("put a 1"), "ok");
    assert_eq!(follower.send("get a"), "ok 1");
    assert_eq!(follower.send("put b 2"), "ok");
    assert_eq!(leader.send("get b"), "ok 2");
    assert_eq!(follower.send("get nothing"), "none");
}

fn two_directories_do_not_interfere(store: &str) {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = node(store, one.path(), &[]);
    let mut b = node(store, two.path(), &[]);
    assert_eq!(a.send("ready"), "ok leader");
    assert_eq!(
        b.send("ready"),
        "ok leader",
        "a second directory has its own leader"
    );
    assert_eq!(a.send("put k from-one"), "ok");
    assert_eq!(b.send("get k"), "none");
}

/// How many writes a burst holds for the leader to be killed in its middle: etcd commits
/// 2000 in a few group commits, which a reader would see land all at once, and in
/// low-latency mode 2000 can land before a reader's first get does.
fn burst_size(store: &str) -> u64 {
    if store == "etcd" || store.ends_with("+spin") {
        8000
    } else {
        2000
    }
}

/// Runs `scenario` on a burst of [`burst_size`] writes, then on bursts twice and four times
/// as large while the whole burst landed before the leader was cut off (on a loaded machine
/// a burst can land before the test's first read sees any of it). `scenario` checks all
/// else whatever the timing, and returns whether its cut came mid-burst.
fn with_a_burst_cut_midway(store: &str, scenario: impl Fn(u64) -> bool) {
    let bursts = [1, 2, 4].map(|times| times * burst_size(store));
    assert!(
        bursts.into_iter().any(scenario),
        "bursts of {bursts:?} writes each landed whole before the leader was cut off: the \
         test proved nothing"
    );
}

/// level-party's conformance scenario, made stricter: the leader is killed while a follower
/// has a burst of writes in flight (2000 or more), each a batch that also sets `p/last`. All
/// land, and the newest value wins.
fn leader_killed_with_writes_in_flight_all_land(store: &str) {
    with_a_burst_cut_midway(store, |burst| {
        leader_killed_with_a_burst_in_flight(store, burst)
    });
}

/// [`leader_killed_with_writes_in_flight_all_land`] with a burst of `burst` writes: whether
/// the kill came before the whole burst landed.
fn leader_killed_with_a_burst_in_flight(store: &str, burst: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, mut writer) = leader_and_follower(store, dir.path());
    let mut standby = node(store, dir.path(), &[]);
    assert_eq!(standby.send("ready"), "ok follower");
    writer.submit(&format!("burst p {burst}"));
    // Kill the leader as soon as part of the burst is visible, so the rest is in flight.
    let applied_before_kill: u64 = loop {
        if let Some(value) = standby.send("get p/last").strip_prefix("ok ") {
            break value.parse().unwrap();
        }
    };
    leader.kill();
    assert_eq!(
        writer.answer(),
        format!("ok {burst}"),
        "every write of the burst is acknowledged"
    );
    assert_eq!(writer.send("get p/last"), format!("ok {burst}"));
    assert_eq!(standby.send("get p/last"), format!("ok {burst}"));
    for i in [1, burst / 2, burst] {
        assert_eq!(standby.send(&format!("get p/{i:06}")), format!("ok {i}"));
    }
    let scan = writer.send("scan FORWARD 0");
    assert!(
        scan.starts_with(&format!("ok {} ", burst + 1)),
        "the burst's keys and p/last"
    );
    applied_before_kill < burst
}

/// The leader dies (SIGKILL, by itself: `PARTY_INJECT=die-after-commit`) right after its
/// store committed a follower's compare-and-swap, before answering it. The follower sends
/// it again to the next leader, which must answer it as done, from the dedup record the
/// commit carried: checked again instead, it would be refused (its key is no longer
/// absent), and a write that landed would be reported as one that did not. (Every store
/// keeps a commit through its process's SIGKILL, so the re-sent swap meets its first
/// landing; on one that lost it, a fresh landing would pass this test too.)
fn a_write_committed_by_a_leader_killed_before_answering_is_answered_as_done(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dies = [("PARTY_INJECT", "die-after-commit")];
    let mut leader = node_with_env(store, dir.path(), &[], &dies);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut writer = node(store, dir.path(), &[]);
    assert_eq!(writer.send("ready"), "ok follower");
    let mut standby = node(store, dir.path(), &[]);
    assert_eq!(standby.send("ready"), "ok follower");
    assert_eq!(
        writer.send("put before 1"),
        "ok",
        "the fault spares other keys"
    );

    assert_eq!(writer.send("cas die-after-commit _ 1"), "ok");
    let exit = leader
        .exit_within(Duration::from_secs(30))
        .expect("the leader did not kill itself at the commit");
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9),
        "killed by SIGKILL: {exit:?}"
    );
    #[cfg(not(unix))]
    let _ = exit;
    assert_eq!(standby.send("get die-after-commit"), "ok 1");
    assert_eq!(standby.send("cas die-after-commit _ 2"), "conflict 1");
    assert_eq!(writer.send("get before"), "ok 1");
}

/// Two followers increment one counter by transaction, one increment after the other,
/// while the leader is killed: every increment counts exactly once (the counter equals the
/// increments' own keys, none lost to a race, none applied twice after a re-send), and a
/// compare-and-swap from a stale value is refused on the new leader.
///
/// The incrementers retry without a practical limit: when one of them becomes the leader,
/// the other, a socket round trip behind, can lose many races for the counter in a row (on sled, whose
/// reads wait for the flush of the commit before them, it has seen 27 conflicts in a row
/// on a quiet machine, and more than the default 32 under load), and exactly-once is what
/// is tested here, not how long a transaction may be starved.
fn increments_from_two_processes_through_a_leader_kill_count_exactly_once(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = node(store, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let incrementer = ["--transaction-attempts", "100000"];
    let mut one = node(store, dir.path(), &incrementer);
    assert_eq!(one.send("ready"), "ok follower");
    let mut two = node(store, dir.path(), &incrementer);
    assert_eq!(two.send("ready"), "ok follower");
    // A follower watches: in low-latency mode the leader's own handle can answer its
    // first get only after every increment landed (its connections poll, and its own
    // tasks wait longer for their turn).
    let mut watcher = node(store, dir.path(), &[]);
    assert_eq!(watcher.send("ready"), "ok follower");
    let each = if store == "etcd" { 300 } else { 1000 };
    one.submit(&format!("incr c {each}"));
    two.submit(&format!("incr c {each}"));
    let before_kill: u64 = loop {
        if let Some(value) = watcher.send("get c").strip_prefix("ok ") {
            break value.parse().unwrap();
        }
    };
    leader.kill();
    assert!(
        before_kill < 2 * each,
        "every increment landed before the kill; the test proved nothing"
    );
    assert_eq!(one.answer(), format!("ok {each}"));
    assert_eq!(two.answer(), format!("ok {each}"));
    assert_eq!(one.send("get c"), format!("ok {}", 2 * each));
    let scan = two.send("scan FORWARD 0");
    assert!(
        scan.starts_with(&format!("ok {} ", 2 * each + 1)),
        "one key per increment, and the counter: {scan}"
    );
    assert_eq!(one.send("cas c 0 1"), format!("conflict {}", 2 * each));
    assert_eq!(two.send(&format!("cas c {} done", 2 * each)), "ok");
    assert_eq!(one.send("get c"), "ok done");
}

/// A subscriber in another process sees every write of its range exactly once, in commit
/// order, while the leader is SIGKILLed again and again (the subscriber and the writer are
/// held stopped over each kill, so that a spare process takes over: a subscriber killed
/// with the leader would prove nothing).
fn a_watcher_sees_every_acknowledged_write_once_in_order_through_leader_kills(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = node(store, dir.path(), &["--change-feed"]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut spares: Vec<Node> = (0..3)
        .map(|_| {
            let mut spare = node(store, dir.path(), &["--change-feed"]);
            assert_eq!(spare.send("ready"), "ok follower");
            spare
        })
        .collect();
    let mut watcher = node(store, dir.path(), &["--change-feed"]);
    assert_eq!(watcher.send("ready"), "ok follower");
    assert!(watcher.send("watch-start w/").starts_with("ok "));
    let mut writer = node(store, dir.path(), &["--change-feed"]);
    assert_eq!(writer.send("ready"), "ok follower");
    assert_eq!(writer.send("put other 1"), "ok", "outside the range");
    let total: u64 = if store == "etcd" { 1_500 } else { 20_000 };
    writer.submit(&format!("seq-puts w/ {total}"));
    // Each wait has a deadline of its own (the answer's): on a loaded machine the whole
    // test takes longer than one.
    let wait_seen = |watcher: &mut Node, count: u64| -> u64 {
        let answer = watcher.send(&format!("watch-wait {count}"));
        answer
            .strip_prefix("ok ")
            .and_then(|seen| seen.parse().ok())
            .unwrap_or_else(|| panic!("the subscription failed: {answer}"))
    };
    for round in 1..=3u64 {
        wait_seen(&mut watcher, round * total / 5);
        writer.poll_roles();
        assert!(
            writer.try_answer().is_none(),
            "the writes were done before kill {round}: the test proves nothing"
        );
        watcher.stop();
        writer.stop();
        leader.kill();
        let next = Node::wait_any_role(&mut spares, "leader", party_tests::ANSWER_TIMEOUT)
            .expect("no spare took over");
        leader = spares.remove(next);
        watcher.cont();
        writer.cont();
    }
    assert_eq!(writer.answer(), format!("ok {total}"));
    assert_eq!(wait_seen(&mut watcher, total), total);
    let expected: Vec<String> = (1..=total).map(|n| format!("w/{n:06}")).collect();
    assert_eq!(
        watcher.send("watch-list"),
        format!("ok {}", expected.join(",")),
        "every write once, in order"
    );
    assert_eq!(
        watcher.send("watch-seen"),
        format!("ok {total}"),
        "and nothing after"
    );
}

/// A leader closed on purpose (not killed) while a follower has a burst of writes in flight
/// and another scans: with retries on, nothing fails and nothing is lost or repeated.
fn a_leader_closing_mid_burst_and_mid_scan_fails_no_operation(store: &str) {
    with_a_burst_cut_midway(store, |burst| {
        a_leader_closing_mid_a_burst_and_mid_scan(store, burst)
    });
}

/// [`a_leader_closing_mid_burst_and_mid_scan_fails_no_operation`] with a burst of `burst`
/// writes: whether the close came before the whole burst landed.
fn a_leader_closing_mid_a_burst_and_mid_scan(store: &str, burst: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, mut writer) = leader_and_follower(store, dir.path());
    let mut scanner = node(store, dir.path(), &[]);
    assert_eq!(scanner.send("ready"), "ok follower");
    assert_eq!(writer.send("fill-edge 3000"), "ok 3008");
    scanner.submit("scan FORWARD 2");
    writer.submit(&format!("burst p {burst}"));
    let applied_before_close: u64 = loop {
        if let Some(value) = leader.send("get p/last").strip_prefix("ok ") {
            break value.parse().unwrap();
        }
    };
    assert_eq!(leader.send("close"), "ok");
    assert_eq!(
        writer.answer(),
        format!("ok {burst}"),
        "no write of the burst failed"
    );
    // A scan resumed on the new leader reads a new snapshot, so burst keys may show too;
    // every entry that was there all along shows exactly once, in order.
    let scan = scanner.answer();
    let keys: Vec<&str> = scan
        .strip_prefix("ok ")
        .and_then(|rest| rest.split_once(' '))
        .map(|(_, keys)| keys.split(',').collect())
        .unwrap_or_else(|| panic!("the scan failed: {}", &scan[..scan.len().min(80)]));
    assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "order");
    let burst_key = |key: &&str| key.starts_with("702f"); // "p/"
    assert_eq!(keys.iter().filter(|key| !burst_key(key)).count(), 3008);
    assert_eq!(scanner.send("get p/last"), format!("ok {burst}"));
    for i in [1, burst / 2, burst] {
        assert_eq!(writer.send(&format!("get p/{i:06}")), format!("ok {i}"));
    }
    applied_before_close < burst
}

fn ten_processes_each_put_one_key_and_exit_and_a_fresh_handle_sees_all(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut children: Vec<Node> = (0..10).map(|_| node(store, dir.path(), &[])).collect();
    for (i, child) in children.iter_mut().enumerate() {
        child.submit(&format!("put key{i} value{i}"));
        child.submit("close");
        child.submit("exit");
    }
    for child in &mut children {
        assert_eq!(child.answer(), "ok");
        assert_eq!(child.answer(), "ok");
        assert!(child.wait_exit().success());
    }
    let mut fresh = node(store, dir.path(), &[]);
    for i in 0..10 {
        assert_eq!(fresh.send(&format!("get key{i}")), format!("ok value{i}"));
    }
}

fn a_put_issued_before_the_role_is_settled_is_applied(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = node(store, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut early = node(store, dir.path(), &["--put-first", "early", "bird"]);
    assert_eq!(early.answer(), "ok put-first");
    assert_eq!(leader.send("get early"), "ok bird");
}

fn without_retry_an_iterator_on_a_killed_leader_fails_with_connection_lost(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = node(store, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    assert_eq!(leader.send("burst k 2000"), "ok 2000");
    // A window short of the 2000 keys: the dead leader cannot have sent them all.
    let mut reader = node(store, dir.path(), &["--no-retry", "--iter-window", "256"]);
    assert_eq!(reader.send("ready"), "ok follower");
    assert_eq!(reader.send("open-iter"), "ok");
    assert_eq!(reader.send("next-chunk 10"), "ok 10");
    leader.kill();
    let mut answer = reader.send("next-chunk 1000");
    // Entries already buffered from the dead leader's snapshot may still be handed out
    // until the loss is noticed; after that the iterator fails.
    while answer.starts_with("ok ") && answer != "ok 0" {
        answer = reader.send("next-chunk 1000");
    }
    assert!(answer.starts_with("err connection_lost"), "{answer}");
    assert_eq!(
        reader.send("put after loss"),
        "ok",
        "new operations go to the new leader"
    );
}

fn a_rogue_client_sending_garbage_does_not_disturb_the_others(store: &str) {
    use party_proto::wire::{FrameDecoder, ServerMessage};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    let dir = tempfile::tempdir().unwrap();
    let (mut leader, mut follower) = leader_and_follower(store, dir.path());
    let socket = dir.path().canonicalize().unwrap().join("party.sock");
    let mut rogue = UnixStream::connect(&socket).expect("connect to the leader's socket");
    rogue
        .write_all(b"GET / HTTP/1.1\r\nHost: party\r\n\r\n")
        .unwrap();
    let mut huge = UnixStream::connect(&socket).unwrap();
    huge.write_all(&u32::MAX.to_le_bytes()).unwrap();
    // A well-formed hello from another protocol version is answered with Rejected.
    {
        use party_proto::wire::{encode_frame, ProtocolId};
        let mut other_version = UnixStream::connect(&socket).unwrap();
        // A hello as version 4 sent it, before the store kind was added: a layout this
        // version cannot decode, still answered as a protocol mismatch.
        let protocol = ProtocolId {
            version: 4,
            ..ProtocolId::CURRENT
        };
        let hello = (0u32, protocol, party_proto::ClientId(1));
        let mut frame = Vec::new();
        encode_frame(&hello, 1 << 20, &mut frame).unwrap();
        other_version.write_all(&frame).unwrap();
        let reply = read_until_closed(&mut other_version);
        let answer: ServerMessage = FrameDecoder::new(1 << 20)
            .decode(&mut reply.as_slice())
            .unwrap()
            .expect("a whole frame before the leader closed");
        assert!(
            matches!(
                answer,
                ServerMessage::Rejected(party_proto::ErrorCode::ProtocolMismatch { .. })
            ),
            "{answer:?}"
        );
    }
    // Both are told why and hung up on, not left waiting.
    for stream in [&mut rogue, &mut huge] {
        let reply = read_until_closed(stream);
        let answer: ServerMessage = FrameDecoder::new(1 << 20)
            .decode(&mut reply.as_slice())
            .unwrap()
            .expect("a whole frame before the leader closed");
        assert!(matches!(answer, ServerMessage::Rejected(_)), "{answer:?}");
    }
    assert_eq!(follower.send("put still fine"), "ok");
    assert_eq!(leader.send("get still"), "ok fine");
    assert_eq!(leader.role(), "leader");
}

/// What the peer sends until it closes the connection, failing if it keeps it open for
/// 30 s (a bound against a hang, not a timing expectation).
fn read_until_closed(stream: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut received = Vec::new();
    stream
        .read_to_end(&mut received)
        .expect("the leader closes the connection");
    received
}

fn a_data_directory_too_deep_for_a_unix_socket_path_still_works(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a-long-directory-name/".repeat(6));
    assert!(deep.join("party.sock").as_os_str().len() > 108);
    let (mut leader, mut follower) = leader_and_follower(store, &deep);
    assert_eq!(follower.send("put deep yes"), "ok");
    assert_eq!(leader.send("get deep"), "ok yes");
}

/// Six handles in six processes: each round every live one puts its key and its neighbour
/// reads it, then the first live one closes — until one is left.
fn six_handles_close_one_by_one_while_each_puts_and_its_neighbour_reads(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> = (0..6).map(|_| node(store, dir.path(), &[])).collect();
    for round in 0..6 {
        let alive: Vec<usize> = (round..6).collect();
        for &i in &alive {
            assert_eq!(nodes[i].send(&format!("put n{i} r{round}")), "ok");
        }
        for (pos, &i) in alive.iter().enumerate() {
            let neighbour = alive[(pos + 1) % alive.len()];
            assert_eq!(
                nodes[neighbour].send(&format!("get n{i}")),
                format!("ok r{round}")
            );
        }
        // Close without waiting for the others to notice.
        nodes[round].submit("close");
    }
    let mut last = node(store, dir.path(), &[]);
    let keys: BTreeSet<String> = (0..6).map(|i| last.send(&format!("get n{i}"))).collect();
    assert_eq!(keys.len(), 6);
}

/// Keys `fill-edge 10000` writes, hex-encoded, in byte order.
fn edge_keys_hex(count: u32) -> Vec<String> {
    let keys: BTreeSet<Vec<u8>> = party_tests::edge_and_numbered_keys(count)
        .into_iter()
        .collect();
    keys.iter()
        .map(|key| key.iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

/// A follower scans 10 000 entries (with byte-edge keys) slowly while the test kills
/// whichever standby process leads, again and again. The scan returns every key once, in
/// order — forward and reverse. (The scanner itself may win an election; then the scan
/// goes on locally and the kills stop.)
fn an_iterator_survives_repeated_leader_kills_forward_and_reverse(store: &str) {
    for direction in ["FORWARD", "REVERSE"] {
        let dir = tempfile::tempdir().unwrap();
        let mut standbys = vec![node(store, dir.path(), &[])];
        assert_eq!(standbys[0].send("ready"), "ok leader");
        assert_eq!(standbys[0].send("fill-edge 10000"), "ok 10008");
        standbys.extend((0..3).map(|_| node(store, dir.path(), &[])));
        let mut scanner = node(store, dir.path(), &[]);
        assert_eq!(scanner.send("ready"), "ok follower");
        scanner.submit(&format!("scan {direction} 3"));

        let mut kills = 0;
        let answer = loop {
            if let Some(answer) = scanner.try_answer() {
                break answer;
            }
            std::thread::sleep(Duration::from_millis(40));
            for standby in &mut standbys {
                standby.poll_roles();
            }
            if let Some(leader) = standbys.iter_mut().find(|s| s.role() == "leader") {
                leader.kill();
                kills += 1;
                standbys.retain(|s| s.role() != "dead");
                standbys.push(node(store, dir.path(), &[]));
            }
        };
        let mut want = edge_keys_hex(10_000);
        if direction == "REVERSE" {
            want.reverse();
        }
        let (count, keys) = answer
            .strip_prefix("ok ")
            .and_then(|rest| rest.split_once(' '))
            .unwrap_or_else(|| panic!("scan failed: {answer}"));
        let keys: Vec<&str> = keys.split(',').collect();
        assert_eq!(count, want.len().to_string());
        assert!(
            keys == want,
            "{direction}: keys differ after {kills} leader kills"
        );
        assert!(
            kills >= 1,
            "{direction}: no leader was killed during the scan"
        );
        eprintln!("{direction}: scan of {count} entries survived {kills} leader kills");
    }
}

/// CPU time every thread of process `pid` has run.
fn cpu_time(pid: u32) -> Duration {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let nanos: u64 = threads
        .map(|thread| std::fs::read_to_string(thread.unwrap().path().join("schedstat")).unwrap())
        .map(|stat| {
            stat.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    Duration::from_nanos(nanos)
}

/// Low-latency mode polls only while an answer is due: a follower and its leader left
/// alone after many exchanges stay off the CPU (spinning would keep one on it all along).
#[test]
fn in_low_latency_mode_an_idle_follower_and_its_leader_do_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, mut follower) = leader_and_follower("fjall+spin", dir.path());
    for i in 0..200 {
        assert_eq!(follower.send(&format!("put k{i} {i}")), "ok");
        assert_eq!(follower.send(&format!("get k{i}")), format!("ok {i}"));
    }
    assert_eq!(leader.send("get k7"), "ok 7");
    let busy = |leader: &Node, follower: &Node| cpu_time(leader.pid()) + cpu_time(follower.pid());
    let before = busy(&leader, &follower);
    let window = Duration::from_millis(500);
    std::thread::sleep(window);
    let used = busy(&leader, &follower) - before;
    assert!(
        used < window / 5,
        "an idle pair in low-latency mode used {used:?} of CPU in {window:?}"
    );
    assert_eq!(follower.send("get k199"), "ok 199", "and it still answers");
}

/// A leader killed before its checkpoint leaves its write in fjall's journal, unflushed;
/// the next open replays it into a memtable and flushes nothing by itself. The successor
/// checkpoints it a quiet period after it takes over, though it writes nothing, and the
/// write reaches a table (fjall's layout: `fjall/fjall/partitions/data/segments/` in the
/// store's directory); otherwise every later leader that only reads would replay it again
/// at each open.
#[test]
fn a_new_leader_checkpoints_what_its_killed_predecessor_left_unflushed() {
    let dir = tempfile::tempdir().unwrap();
    let tables = dir.path().join("fjall/fjall/partitions/data/segments");
    let (mut leader, mut follower) = leader_and_follower("fjall", dir.path());
    // One write, so that the kill follows its commit at once (a leader quiet for 100 ms
    // would checkpoint it itself); over the 64 KiB under which a checkpoint leaves a
    // memtable be.
    let value = "v".repeat(160 << 10);
    assert_eq!(leader.send(&format!("put k {value}")), "ok");
    leader.kill();
    assert!(follower.wait_role("leader", Duration::from_secs(10)));
    // fjall flushes in the background and tells no event of it: the condition is polled.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&tables).unwrap().next().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new leader left the killed leader's write unflushed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(follower.send("get k"), format!("ok {value}"));
}

macro_rules! on_store {
    ($module:ident, $store:literal) => {
        mod $module {
            #[test]
            fn two_processes_put_and_get_through_each_other() {
                super::two_processes_put_and_get_through_each_other($store);
            }
            #[test]
            fn two_directories_do_not_interfere() {
                super::two_directories_do_not_interfere($store);
            }
            #[test]
            fn leader_killed_with_writes_in_flight_all_land() {
                super::leader_killed_with_writes_in_flight_all_land($store);
            }
            #[test]
            fn ten_processes_each_put_one_key_and_exit_and_a_fresh_handle_sees_all() {
                super::ten_processes_each_put_one_key_and_exit_and_a_fresh_handle_sees_all($store);
            }
            #[test]
            fn a_write_committed_by_a_leader_killed_before_answering_is_answered_as_done() {
                super::a_write_committed_by_a_leader_killed_before_answering_is_answered_as_done(
                    $store,
                );
            }
            #[test]
            fn increments_from_two_processes_through_a_leader_kill_count_exactly_once() {
                super::increments_from_two_processes_through_a_leader_kill_count_exactly_once(
                    $store,
                );
            }
            #[test]
            fn a_watcher_sees_every_acknowledged_write_once_in_order_through_leader_kills() {
                super::a_watcher_sees_every_acknowledged_write_once_in_order_through_leader_kills(
                    $store,
                );
            }
            #[test]
            fn a_leader_closing_mid_burst_and_mid_scan_fails_no_operation() {
                super::a_leader_closing_mid_burst_and_mid_scan_fails_no_operation($store);
            }
            #[test]
            fn a_put_issued_before_the_role_is_settled_is_applied() {
                super::a_put_issued_before_the_role_is_settled_is_applied($store);
            }
            #[test]
            fn without_retry_an_iterator_on_a_killed_leader_fails_with_connection_lost() {
                super::without_retry_an_iterator_on_a_killed_leader_fails_with_connection_lost(
                    $store,
                );
            }
            #[test]
            fn a_rogue_client_sending_garbage_does_not_disturb_the_others() {
                super::a_rogue_client_sending_garbage_does_not_disturb_the_others($store);
            }
            #[test]
            fn a_data_directory_too_deep_for_a_unix_socket_path_still_works() {
                super::a_data_directory_too_deep_for_a_unix_socket_path_still_works($store);
            }
            #[test]
            fn six_handles_close_one_by_one_while_each_puts_and_its_neighbour_reads() {
                super::six_handles_close_one_by_one_while_each_puts_and_its_neighbour_reads($store);
            }
            #[test]
            fn an_iterator_survives_repeated_leader_kills_forward_and_reverse() {
                super::an_iterator_survives_repeated_leader_kills_forward_and_reverse($store);
            }
        }
    };
}

on_store!(fjall, "fjall");
on_store!(fjall_spin, "fjall+spin");
#[cfg(feature = "sled")]
on_store!(sled, "sled");
#[cfg(feature = "rocksdb")]
on_store!(rocksdb, "rocksdb");
#[cfg(feature = "etcd")]
on_store!(etcd, "etcd");

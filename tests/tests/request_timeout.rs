//! The request timeout bounds what a follower waits for a leader that does not answer:
//! the leader's process is stopped (SIGSTOP), holding its lock and socket, and the
//! follower's get, its iterator's next entries, and a new iterator's first ones fail with
//! `TimedOut` instead of waiting for ever. Once the leader goes on, so does the follower.
//! And a process whose store takes for ever to open as it takes over times out its own
//! operations meanwhile.

use std::time::{Duration, Instant};

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// The follower's request timeout.
const TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn a_stopped_leader_times_out_gets_and_iterators() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    let timeout_ms = TIMEOUT.as_millis().to_string();
    // A window of one entry: most of the store is still at the leader when it stops.
    let args = ["--request-timeout-ms", &timeout_ms, "--iter-window", "1"];
    let mut follower = Node::spawn(NODE, dir.path(), &args);
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(follower.send("seq-puts k 20"), "ok 20");
    assert_eq!(follower.send("open-iter"), "ok");
    assert_eq!(follower.send("next-chunk 1"), "ok 1");

    leader.stop();
    let started = Instant::now();
    assert!(follower.send("get k000001").starts_with("err timed_out"));
    assert!(started.elapsed() >= TIMEOUT, "{:?}", started.elapsed());
    // The window's entry may have come before the stop; the wait after it times out, a
    // whole request timeout from the call that found nothing.
    let mut answers = Vec::new();
    let waited = loop {
        let asked = Instant::now();
        let answer = follower.send("next-chunk 1");
        let failed = answer.starts_with("err");
        answers.push(answer);
        if failed || answers.len() > 2 {
            break asked.elapsed();
        }
    };
    assert!(
        answers.last().unwrap().starts_with("err timed_out"),
        "{answers:?}"
    );
    assert!(answers.len() <= 2, "a window of one entry: {answers:?}");
    assert!(waited >= TIMEOUT, "{waited:?}");
    // A new iterator's opening is not answered either.
    assert_eq!(follower.send("open-iter"), "ok");
    let asked = Instant::now();
    assert!(follower.send("next-chunk 1").starts_with("err timed_out"));
    assert!(asked.elapsed() >= TIMEOUT, "{:?}", asked.elapsed());

    leader.cont();
    assert_eq!(follower.send("get k000001"), "ok 1");
    assert_eq!(follower.send("open-iter"), "ok");
    assert_eq!(follower.send("next-chunk 1"), "ok 1");
}

/// A store that never finishes opening (`PARTY_INJECT=store-open-hangs`, an etcd cluster
/// that does not answer, say): the process that took the lock and opens it answers its own
/// operations `TimedOut` a request timeout after they were asked, rather than once the open
/// ends, and so does a process waiting for it to serve. Once the opener is gone, the other
/// takes over, with nothing of what timed out applied.
#[test]
fn operations_time_out_while_the_leaders_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let timeout_ms = TIMEOUT.as_millis().to_string();
    let args = ["--request-timeout-ms", &timeout_ms];
    let hangs = [("PARTY_INJECT", "store-open-hangs")];
    let mut opener = Node::spawn_with_env(NODE, dir.path(), &args, &hangs);
    let asked = Instant::now();
    assert!(opener.send("get k").starts_with("err timed_out"));
    assert!(asked.elapsed() >= TIMEOUT, "{:?}", asked.elapsed());
    let answer = opener.send("put k v");
    assert!(answer.starts_with("err timed_out"), "{answer}");
    assert_eq!(opener.role(), "electing");

    let mut waiting = Node::spawn(NODE, dir.path(), &args);
    assert!(waiting.send("get k").starts_with("err timed_out"));
    opener.kill();
    assert_eq!(waiting.send("ready"), "ok leader");
    assert_eq!(waiting.send("get k"), "none");
}

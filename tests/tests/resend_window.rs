//! A write is re-sent after a failover only while its client's dedup record is sure to be
//! kept: within half the dedup retention of its first sending. One in flight longer ends
//! with `OutcomeUnknown` rather than risk being applied twice; a younger one is re-sent and
//! applied once. Real processes: the leader is stopped (SIGSTOP) with both writes sent to it,
//! then killed.

use std::time::Duration;

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

#[test]
fn a_write_in_flight_longer_than_the_resend_window_ends_unknown_a_younger_one_lands() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(leader.send("ready"), "ok leader");
    // Resend windows of 100 ms and of the default half day.
    let mut short = Node::spawn(NODE, dir.path(), &["--dedup-retention-ms", "200"]);
    let mut long = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(short.send("ready"), "ok follower");
    assert_eq!(long.send("ready"), "ok follower");

    leader.stop();
    short.submit("put old-write v");
    long.submit("put young-write v");
    // The writes' age is what is under test: both wait at the stopped leader for longer
    // than the short window.
    std::thread::sleep(Duration::from_millis(300));
    leader.kill();

    let answer = short.answer();
    assert!(answer.starts_with("err outcome_unknown"), "{answer}");
    assert_eq!(
        long.answer(),
        "ok",
        "re-sent to the next leader and applied"
    );
    // The stopped leader never read them: the old write was not applied, and nothing
    // re-sent it.
    assert_eq!(long.send("get old-write"), "none");
    assert_eq!(short.send("get young-write"), "ok v");
}

//! A write is re-sent after a failover only while its client's dedup record is sure to be
//! kept: within half the dedup retention of its first sending. One in flight longer ends
//! with `OutcomeUnknown` rather than risk being applied twice; a younger one is re-sent and
//! applied once. Real processes, all with a dedup retention of one second (a resend window
//! of half a second): the leader is stopped (SIGSTOP) with both writes sent to it, the
//! first well before the second, then killed.

use std::time::Duration;

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// Longer than the resend window of the nodes' one-second retention (half of it).
const PAST_THE_WINDOW: Duration = Duration::from_millis(700);

/// A node of `dir` with a dedup retention of one second, settled as `role`.
fn started(dir: &std::path::Path, role: &str) -> Node {
    let mut node = Node::spawn(NODE, dir, &["--dedup-retention-ms", "1000"]);
    assert_eq!(node.send("ready"), format!("ok {role}"));
    node
}

#[test]
fn a_write_in_flight_longer_than_the_resend_window_ends_unknown_a_younger_one_lands() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = started(dir.path(), "leader");
    let (mut old, mut young) = (
        started(dir.path(), "follower"),
        started(dir.path(), "follower"),
    );

    leader.stop();
    old.submit("put old-write v");
    // The writes' age is what is under test: the first waits at the stopped leader for
    // longer than the window, the second for a moment.
    std::thread::sleep(PAST_THE_WINDOW);
    young.submit("put young-write v");
    leader.kill();

    let answer = old.answer();
    assert!(answer.starts_with("err outcome_unknown"), "{answer}");
    assert_eq!(
        young.answer(),
        "ok",
        "re-sent to the next leader and applied"
    );
    // The stopped leader never read them: the old write was not applied, and nothing
    // re-sent it.
    assert_eq!(young.send("get old-write"), "none");
    assert_eq!(old.send("get young-write"), "ok v");
}

/// A leader that wakes from a stop longer than the resend window with a write in its socket
/// does not apply it (the write's record could have expired meanwhile, had it been a
/// re-send): it answers `OutcomeUnknown`. A write sent after it wakes lands.
#[test]
fn a_leader_woken_past_the_resend_window_does_not_apply_the_write_that_waited() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = started(dir.path(), "leader");
    let mut writer = started(dir.path(), "follower");

    leader.stop();
    writer.submit("put waited v");
    // The leader reads the write only after the window.
    std::thread::sleep(PAST_THE_WINDOW);
    leader.cont();

    let answer = writer.answer();
    assert!(answer.starts_with("err outcome_unknown"), "{answer}");
    assert_eq!(writer.send("get waited"), "none", "not applied");
    assert_eq!(writer.send("put after v"), "ok");
    assert_eq!(leader.send("get after"), "ok v");
}

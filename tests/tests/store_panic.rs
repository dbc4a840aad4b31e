//! A panic of the leader's store thread (a bug of the store or of party, re-created with
//! `PARTY_INJECT=store-thread-panic`: the store thread panics at a put of that key) fails
//! the leader's handle at once, with the cause, instead of leaving its operations waiting
//! for ever. Its process keeps the store locked until it exits (the store may still be
//! open in it); then a follower takes over, with everything committed before.

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

#[test]
fn a_store_thread_panic_fails_the_leaders_handle_and_a_follower_takes_over_at_its_exit() {
    let dir = tempfile::tempdir().unwrap();
    let panics = [("PARTY_INJECT", "store-thread-panic")];
    let mut leader = Node::spawn_with_env(NODE, dir.path(), &[], &panics);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = Node::spawn(NODE, dir.path(), &[]);
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(follower.send("put k v"), "ok");

    // Handed to the store, which may have applied it before it panicked.
    let answer = leader.send("put store-thread-panic x");
    assert!(
        answer.starts_with("err outcome_unknown") && answer.contains("the store thread panicked"),
        "{answer}"
    );
    let answer = leader.send("get k");
    assert!(
        answer.starts_with("err") && answer.contains("the store thread panicked"),
        "{answer}"
    );

    // The store stays locked while the leader's process lives (its lock neither let go
    // nor taken by the follower, which heard the leader leave), and is taken over once it
    // is gone.
    assert_eq!(party_tests::lock_holders(dir.path()), [leader.pid()]);
    follower.submit("get k");
    leader.kill();
    assert_eq!(follower.answer(), "ok v");
    assert_eq!(follower.send("get store-thread-panic"), "none");
    // The leader stopped serving without closing, and said why: its store failed (not a
    // crash: the connection ended with a word).
    assert_eq!(follower.send("takeover"), "ok store_failed");
}

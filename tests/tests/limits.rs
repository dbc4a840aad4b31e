//! The leader's limits between real processes: answers too large for a frame fail alone
//! and scans are cut to fit, an iterator window over the leader's credit cap is cut to it.
//! Each used to hang (a reply re-sent forever, a scan waiting for credits never granted).

use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

#[test]
fn an_answer_over_the_frame_limit_fails_alone_and_a_scan_of_big_values_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let limit = ["--max-frame-len", "1048576"];
    let mut leader = Node::spawn(NODE, dir.path(), &limit);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = Node::spawn(NODE, dir.path(), &limit);
    assert_eq!(follower.send("ready"), "ok follower");
    // Two values of 700 KiB: each fits a frame, both together do not.
    assert_eq!(follower.send("fill-big 2 716800"), "ok 2");
    for node in [&mut follower, &mut leader] {
        let both = node.send("get-many big/000000 big/000001");
        assert!(both.starts_with("err reply_too_large"), "{both}");
        assert_eq!(node.send("get-many big/000001 none"), "ok 716800,none");
        let scan = node.send("scan FORWARD 0");
        assert!(scan.starts_with("ok 2 "), "{}", &scan[..scan.len().min(80)]);
    }
    assert_eq!(
        follower.send("ready"),
        "ok follower",
        "the connection stayed up"
    );
}

#[test]
fn an_iterator_window_over_the_leaders_credit_cap_still_reads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let window = ["--iter-window", "10000"];
    let mut leader = Node::spawn(NODE, dir.path(), &window);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = Node::spawn(NODE, dir.path(), &window);
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(follower.send("fill-big 6000 8"), "ok 6000");
    for node in [&mut follower, &mut leader] {
        let scan = node.send("scan FORWARD 0");
        assert!(
            scan.starts_with("ok 6000 "),
            "{}",
            &scan[..scan.len().min(80)]
        );
    }
}

//! party on etcd, across real processes: the data directories of two "hosts" share one
//! etcd prefix, each with its own leader and followers, while leaders are killed on each.
//! The cluster (three members on loopback ports) is started by the test.

#![cfg(feature = "etcd")]

use party_core::LocalCluster;
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

fn node(cluster: &LocalCluster, dir: &std::path::Path) -> Node {
    let endpoints = cluster.endpoints().join(",");
    Node::spawn(
        NODE,
        dir,
        &["--etcd-endpoints", &endpoints, "--etcd-prefix", "shared/"],
    )
}

#[test]
fn two_hosts_share_one_etcd_prefix_through_leader_kills_on_each() {
    let cluster = LocalCluster::start(3).unwrap();
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a_leader = node(&cluster, host_a.path());
    assert_eq!(a_leader.send("ready"), "ok leader");
    let mut a_follower = node(&cluster, host_a.path());
    assert_eq!(a_follower.send("ready"), "ok follower");
    let mut b_leader = node(&cluster, host_b.path());
    assert_eq!(
        b_leader.send("ready"),
        "ok leader",
        "each host has its leader"
    );
    let mut b_follower = node(&cluster, host_b.path());
    assert_eq!(b_follower.send("ready"), "ok follower");

    // Every process sees what the other host wrote.
    assert_eq!(a_follower.send("put a1 1"), "ok");
    assert_eq!(b_follower.send("get a1"), "ok 1");
    assert_eq!(b_follower.send("put b1 2"), "ok");
    assert_eq!(a_leader.send("get b1"), "ok 2");

    // A's leader dies with a burst in flight: every write of it lands, through A's new
    // leader.
    a_follower.submit("burst a 200");
    a_leader.kill();
    assert_eq!(a_follower.answer(), "ok 200");
    assert_eq!(a_follower.send("ready"), "ok leader");
    assert_eq!(b_leader.send("get a/last"), "ok 200");

    // Then B's: B's follower leads, and both hosts still serve one store.
    b_follower.submit("burst b 200");
    b_leader.kill();
    assert_eq!(b_follower.answer(), "ok 200");
    assert_eq!(a_follower.send("get b/last"), "ok 200");
    assert_eq!(b_follower.send("get a1"), "ok 1");

    // One store per directory covers etcd: a process of host A configured for fjall is
    // refused, and leads from no empty fjall store.
    let mut stray = Node::spawn(NODE, host_a.path(), &["--backend", "fjall"]);
    let refused = stray.send("ready");
    assert!(refused.contains("store is etcd"), "{refused}");
    assert!(!host_a.path().join("fjall").exists());
}

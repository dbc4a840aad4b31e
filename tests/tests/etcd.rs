//! party on etcd, across real processes: the data directories of two "hosts" share one
//! etcd prefix, each with its own leader and followers, while leaders are killed on each.
//! The cluster (three members on loopback ports) is started by the test.

#![cfg(feature = "etcd")]

use party_core::LocalCluster;
use party_tests::{HoldingProxy, Node};

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

fn node(cluster: &LocalCluster, dir: &std::path::Path) -> Node {
    let endpoints = cluster.endpoints().join(",");
    Node::spawn(
        NODE,
        dir,
        &["--etcd-endpoints", &endpoints, "--etcd-prefix", "shared/"],
    )
}

/// A process of `dir` whose etcd member is behind `proxy`, leading, with `k` written.
fn leader_through(proxy: &HoldingProxy, dir: &std::path::Path) -> Node {
    let endpoint = proxy.endpoint();
    let args = ["--etcd-endpoints", &endpoint, "--etcd-prefix", "shared/"];
    let mut leader = Node::spawn(NODE, dir, &args);
    assert_eq!(leader.send("ready"), "ok leader");
    assert_eq!(leader.send("put k before"), "ok");
    leader
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

/// The leaders of two hosts increment one counter at once, each in its own transactions:
/// neither writer sees the other's commits coming, so etcd's own compares refuse a commit
/// whose reads the other host changed, and the transaction is checked again. No increment
/// is lost, and a scan in a transaction sees no key the other host added after it.
#[test]
fn two_hosts_on_one_etcd_prefix_increment_without_losing_any() {
    let cluster = LocalCluster::start(1).unwrap();
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = node(&cluster, host_a.path());
    assert_eq!(a.send("ready"), "ok leader");
    let mut b = node(&cluster, host_b.path());
    assert_eq!(b.send("ready"), "ok leader", "each host has its leader");
    a.submit("incr c 300");
    b.submit("incr c 300");
    assert_eq!(a.answer(), "ok 300");
    assert_eq!(b.answer(), "ok 300");
    assert_eq!(a.send("get c"), "ok 600");
    assert_eq!(b.send("get c"), "ok 600");
}

/// The followers of two hosts increment one counter while each host's leader is killed in
/// turn: through etcd's compares, the writers' re-checks and the fenced commit marker,
/// every increment counts exactly once.
#[test]
fn two_hosts_on_one_etcd_prefix_increment_exactly_once_through_leader_kills() {
    let cluster = LocalCluster::start(1).unwrap();
    let (host_a, host_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut hosts = Vec::new();
    for dir in [host_a.path(), host_b.path()] {
        let mut leader = node(&cluster, dir);
        assert_eq!(leader.send("ready"), "ok leader");
        let mut incrementer = node(&cluster, dir);
        assert_eq!(incrementer.send("ready"), "ok follower");
        let mut watcher = node(&cluster, dir);
        assert_eq!(watcher.send("ready"), "ok follower");
        hosts.push((leader, incrementer, watcher));
    }
    let each = 200;
    for (_, incrementer, _) in &mut hosts {
        incrementer.submit(&format!("incr c {each}"));
    }
    let count = |watcher: &mut Node| -> u64 {
        watcher
            .send("get c")
            .strip_prefix("ok ")
            .map_or(0, |n| n.parse().unwrap())
    };
    let mut seen = 0;
    for (leader, _, watcher) in &mut hosts {
        // Kill this host's leader once more increments have landed.
        while count(watcher) <= seen {}
        seen = count(watcher);
        leader.kill();
    }
    assert!(seen < 2 * each, "every increment landed before the kills");
    for (_, incrementer, _) in &mut hosts {
        assert_eq!(incrementer.answer(), format!("ok {each}"));
    }
    for (_, _, watcher) in &mut hosts {
        assert_eq!(watcher.send("get c"), format!("ok {}", 2 * each));
    }
    let scan = hosts[0].2.send("scan FORWARD 0");
    assert!(
        scan.starts_with(&format!("ok {} ", 2 * each + 1)),
        "one key per increment, and the counter"
    );
}

/// A leader killed with a commit still on the network (held by a proxy between it and
/// etcd): its follower takes over, commits the re-sent write itself and writes the key
/// again; the dead leader's commit reaches etcd only then, and must apply nothing (the
/// new leader moved the directory's commit marker as it connected), or the key would go
/// back to a value overwritten since, and the write would be applied twice.
#[test]
fn a_dead_leaders_commit_reaching_etcd_after_the_takeover_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    late_commit_of_a_dead_leader(dir.path());
}

/// The same in a directory an earlier party marked as on etcd, before directories
/// recorded their succession of leaders: its next leader records one.
#[test]
fn a_dead_leaders_late_commit_applies_nothing_in_a_directory_from_before_successions() {
    let dir = tempfile::tempdir().unwrap();
    let prefix: String = b"shared/".iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        dir.path().join("party.store"),
        format!("party-store 1\nkind etcd\netcd-prefix {prefix}\n"),
    )
    .unwrap();
    late_commit_of_a_dead_leader(dir.path());
}

fn late_commit_of_a_dead_leader(dir: &std::path::Path) {
    let cluster = LocalCluster::start(1).unwrap();
    let proxy = HoldingProxy::start(&cluster.endpoints()[0]);
    let through_proxy = [
        "--etcd-endpoints",
        &proxy.endpoint(),
        "--etcd-prefix",
        "shared/",
    ];
    let mut leader = Node::spawn(NODE, dir, &through_proxy);
    assert_eq!(leader.send("ready"), "ok leader");
    let mut follower = node(&cluster, dir);
    assert_eq!(follower.send("ready"), "ok follower");
    assert_eq!(follower.send("put k before"), "ok");

    proxy.hold();
    follower.submit("put k held-write");
    let timeout = std::time::Duration::from_secs(30);
    proxy.wait_held(b"held-write", timeout);
    leader.kill();
    assert_eq!(
        follower.answer(),
        "ok",
        "the write, re-sent to the new leader"
    );
    assert_eq!(follower.send("ready"), "ok leader");
    assert_eq!(follower.send("put k after"), "ok");

    proxy.release(timeout);
    assert_eq!(follower.send("get k"), "ok after");
}

/// A leader's commit lands, its answer lost (the connection cut), and before the etcd
/// client's try of it again arrives, another writer moves the directory's commit marker
/// (the leader of a copy of the directory, with its succession). The try sent again is
/// refused, and its writer can no longer tell whether an earlier try landed: the write
/// ends with `OutcomeUnknown`, not with an error that says nothing was applied, since it
/// was.
#[test]
fn a_commit_tried_again_after_another_writer_moved_the_marker_has_an_unknown_outcome() {
    let cluster = LocalCluster::start(1).unwrap();
    let proxy = HoldingProxy::start(&cluster.endpoints()[0]);
    let (dir, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = leader_through(&proxy, dir.path());

    proxy.hold();
    leader.submit("put k first-try-landed");
    let timeout = std::time::Duration::from_secs(30);
    proxy.wait_held(b"first-try-landed", timeout);
    proxy.release_losing_answers(timeout);
    proxy.wait_held(b"first-try-landed", timeout);

    std::fs::copy(
        dir.path().join("party.store"),
        copy.path().join("party.store"),
    )
    .unwrap();
    let mut other_writer = node(&cluster, copy.path());
    assert_eq!(other_writer.send("ready"), "ok leader");
    assert_eq!(other_writer.send("get k"), "ok first-try-landed");
    assert_eq!(other_writer.send("put other 1"), "ok");

    proxy.release(timeout);
    let answer = leader.answer();
    assert!(
        answer.starts_with("err outcome_unknown"),
        "the write landed, but its writer said: {answer}"
    );
}

/// A transaction's commit is held on the network while its writer, cut off, sends it
/// again; the copy arrives first and is refused, another host having changed what the
/// transaction read. That host then sets the value back, and the first try arrives: it
/// must not land, since its writer answered that the transaction did not apply (a
/// compare-and-swap told it lost, say, while its write went in). The writer moved its
/// commit marker before it answered so (it knew it had sent the commit twice), and the
/// first try compares with the marker as it was.
#[test]
fn a_refused_commit_sent_twice_is_fenced_before_it_is_called_stale() {
    use party_backends::{Backend, BackendError, EtcdBackend, EtcdConfig, WriteBatch};
    use party_proto::wire::{BatchOp, ReadCheck, WriteOp};
    let put = |key: &[u8], value: &[u8]| WriteBatch {
        ops: vec![WriteOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }],
        records: Vec::new(),
        log: None,
    };
    let cluster = LocalCluster::start(1).unwrap();
    let proxy = HoldingProxy::start(&cluster.endpoints()[0]);
    let connect = |endpoint: String| {
        let config = EtcdConfig {
            endpoints: vec![endpoint],
            prefix: b"shared/".to_vec(),
        };
        EtcdBackend::connect(&config).unwrap()
    };
    // Two hosts' stores on one prefix, each with a commit marker of its own.
    let writer = connect(proxy.endpoint());
    let other = connect(cluster.endpoints()[0].clone());
    other.write(&put(b"k", b"A")).unwrap();
    writer.write(&put(b"settled", b"1")).unwrap();

    proxy.hold_open_connections();
    let committing = std::thread::spawn(move || {
        let swap = WriteBatch {
            ops: vec![WriteOp::Transaction {
                reads: vec![ReadCheck::Key {
                    key: b"k".to_vec(),
                    value: Some(b"A".to_vec()),
                }],
                writes: vec![BatchOp::Put {
                    key: b"out".to_vec(),
                    value: b"swapped-by-the-held-try".to_vec(),
                }],
            }],
            records: Vec::new(),
            log: None,
        };
        writer.write(&swap)
    });
    let timeout = std::time::Duration::from_secs(30);
    proxy.wait_held(b"swapped-by-the-held-try", timeout);
    other.write(&put(b"k", b"B")).unwrap();
    proxy.cut_clients();
    let refused = committing.join().unwrap();
    assert!(
        matches!(refused, Err(BackendError::Stale { .. })),
        "{refused:?}"
    );

    other.write(&put(b"k", b"A")).unwrap();
    proxy.release(timeout);
    assert_eq!(
        other.get(b"out").unwrap(),
        None,
        "the first try landed after its writer called it stale"
    );
}

/// The leader's only etcd member stops answering without a word (a proxy holds whatever
/// reaches it, as a partition would, with no reset): a write ends `OutcomeUnknown` once its
/// tries and the move of the marker that would settle it have each waited out their time,
/// instead of holding the store thread until TCP gives up. Once the member answers again,
/// the marker is settled and the store serves.
#[test]
fn a_write_to_a_member_that_stopped_answering_ends_unknown_and_the_store_serves_after() {
    let cluster = LocalCluster::start(1).unwrap();
    let proxy = HoldingProxy::start(&cluster.endpoints()[0]);
    let dir = tempfile::tempdir().unwrap();
    let mut leader = leader_through(&proxy, dir.path());

    proxy.hold();
    let answer = leader.send("put k unanswered");
    assert!(
        answer.starts_with("err outcome_unknown"),
        "a write no member answered: {answer}"
    );
    proxy.release(std::time::Duration::from_secs(30));
    assert_eq!(leader.send("put k after"), "ok");
    assert_eq!(leader.send("get k"), "ok after");
}

/// A handle's runtime shut down while the store of a new directory opens (its etcd
/// connection held up by a proxy): the open goes on, on its blocking thread, and as it ends
/// it records the directory's succession. The directory's lock stays taken until then, so
/// that no other process leads beside it (its own succession, recorded first, would be
/// overwritten, and its late commits then left unfenced by the leader after it); once the
/// open ended, another process leads.
#[test]
fn a_runtime_shut_down_while_the_store_opens_keeps_the_lock_until_the_open_ends() {
    use party_core::lock::ElectionLock;
    use party_core::{open, Options};
    let cluster = LocalCluster::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = std::sync::Arc::new(HoldingProxy::start(&cluster.endpoints()[0]));
    proxy.hold();
    // One thread: its shutdown drops the handle's tasks before it returns.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let options = Options::default().etcd(vec![proxy.endpoint()], "shared/");
    let timeout = std::time::Duration::from_secs(30);
    let connecting = proxy.clone();
    let db = runtime.block_on(async {
        let db = open(dir.path(), options).await.unwrap();
        tokio::task::spawn_blocking(move || connecting.wait_held(b"PRI * HTTP/2.0", timeout))
            .await
            .unwrap();
        db
    });
    runtime.shutdown_background();
    assert!(
        ElectionLock::try_acquire(dir.path()).unwrap().is_none(),
        "the lock was let go while the store still opens"
    );
    proxy.release(timeout);
    let mut next = node(&cluster, dir.path());
    assert_eq!(next.send("put k 1"), "ok");
    assert_eq!(next.send("put k 2"), "ok");
    assert_eq!(next.send("ready"), "ok leader");
    drop(db);
}

/// A single write larger than one etcd transaction, in operations or in bytes, fails whole
/// with a typed error; the largest that fits is applied.
#[test]
fn a_batch_over_etcds_transaction_limit_fails_whole_and_typed() {
    use party_core::{open, BatchOp, Error, Options};
    // Started before the runtime: its client blocks, as the store's does on its threads.
    let cluster = LocalCluster::start(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let batch = |n: u32| -> Vec<BatchOp> {
        (0..n)
            .map(|i| BatchOp::Put {
                key: i.to_be_bytes().to_vec(),
                value: b"v".to_vec(),
            })
            .collect()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let options = Options::default().etcd(cluster.endpoints(), "big/");
        let db = open(dir.path(), options).await.unwrap();
        // 125 puts and the client's dedup record: 126 operations, the most that fit with
        // the commit marker and the change log entry.
        db.batch(batch(125)).await.unwrap();
        let refused = db.batch(batch(126)).await;
        assert!(
            matches!(refused, Err(Error::BatchTooLarge { ops: 127, max: 126 })),
            "{refused:?}"
        );
        assert_eq!(
            db.get(125u32.to_be_bytes()).await.unwrap(),
            None,
            "nothing applied"
        );
        // Over etcd's 1.5 MiB a request, in bytes: typed too, and nothing applied.
        let big = vec![b'v'; 2 << 20];
        let refused = db.put("big", big).await;
        assert!(
            matches!(refused, Err(Error::TooLarge { .. })),
            "{refused:?}"
        );
        assert_eq!(db.get("big").await.unwrap(), None);
        db.put("fits", vec![b'v'; 1 << 20]).await.unwrap();
        db.close().await.unwrap();
    });
}

/// Two of three members die: etcd has no quorum. Writes and reads fail with typed errors
/// after a bounded wait (a write whose commit cannot be settled: `OutcomeUnknown`; a read:
/// `Backend`), none hangs, and once the members are back the same handle serves again, the
/// write of unknown outcome either there or not, never half.
#[test]
fn losing_etcds_quorum_fails_operations_typed_and_service_resumes_after() {
    use party_core::{open, BatchOp, Db, Error, Options};
    use std::time::Duration;
    // Cluster calls block: the cluster is started and its members killed outside the runtime.
    let mut cluster = LocalCluster::start(3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = Options::default().etcd(cluster.endpoints(), "quorum/");
    let db: Db = runtime.block_on(async {
        let db = open(dir.path(), options).await.unwrap();
        db.put("before", "1").await.unwrap();
        db
    });
    cluster.kill(1);
    cluster.kill(2);
    let pair = |value: &str| {
        ["x", "y"].map(|key| BatchOp::Put {
            key: key.into(),
            value: value.into(),
        })
    };
    runtime.block_on(async {
        // Bounded: a hang is the failure this test is after, not the time it takes.
        let bound = Duration::from_secs(120);
        let write = tokio::time::timeout(bound, db.batch(pair("lost quorum").to_vec()))
            .await
            .expect("the write ends");
        assert!(
            matches!(write, Err(Error::OutcomeUnknown { .. })),
            "{write:?}"
        );
        let read = tokio::time::timeout(bound, db.get("before"))
            .await
            .expect("the read ends");
        assert!(matches!(read, Err(Error::Backend { .. })), "{read:?}");
    });
    cluster.restart(1).unwrap();
    cluster.restart(2).unwrap();
    runtime.block_on(async {
        let unknown = db.get_many(&["x", "y"]).await.unwrap();
        assert_eq!(unknown[0], unknown[1], "all or nothing");
        db.batch(pair("back").to_vec()).await.unwrap();
        assert_eq!(db.get("before").await.unwrap().as_deref(), Some(&b"1"[..]));
        let both = db.get_many(&["x", "y"]).await.unwrap();
        assert_eq!(both, [Some(b"back".to_vec()), Some(b"back".to_vec())]);
        db.close().await.unwrap();
    });
}

/// The directory's store marker covers etcd: a directory whose store is in etcd refuses a
/// handle configured for fjall (which would lead from an empty fjall store of its own) or
/// for another etcd prefix, and a directory of fjall refuses a handle configured for etcd.
#[test]
fn a_directory_holds_one_store_etcd_included() {
    use party_core::{open, BackendKind, Error, Options};
    let cluster = LocalCluster::start(1).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = || Options::default().etcd(cluster.endpoints(), "marker/");
    let fjall = || Options::default().backend(BackendKind::Fjall);
    let refused = |error: &Error, found: BackendKind, wanted: BackendKind| {
        matches!(error, Error::ElectionFailed(cause)
            if matches!(**cause, Error::WrongBackend { found: f, wanted: w } if f == found && w == wanted))
    };
    runtime.block_on(async {
        let on_etcd = tempfile::tempdir().unwrap();
        let first = open(on_etcd.path(), etcd()).await.unwrap();
        first.put("k", "in etcd").await.unwrap();
        first.close().await.unwrap();
        let other = open(on_etcd.path(), fjall()).await.unwrap();
        let got = other.get("k").await;
        assert!(
            got.as_ref()
                .is_err_and(|e| refused(e, BackendKind::Etcd, BackendKind::Fjall)),
            "{got:?}"
        );
        other.close().await.unwrap();
        assert!(
            !on_etcd.path().join("fjall").exists(),
            "no empty fjall store made"
        );

        let on_fjall = tempfile::tempdir().unwrap();
        let first = open(on_fjall.path(), fjall()).await.unwrap();
        first.put("k", "in fjall").await.unwrap();
        first.close().await.unwrap();
        let other = open(on_fjall.path(), etcd()).await.unwrap();
        let got = other.get("k").await;
        assert!(
            got.as_ref()
                .is_err_and(|e| refused(e, BackendKind::Fjall, BackendKind::Etcd)),
            "{got:?}"
        );
        other.close().await.unwrap();
        let back = open(on_etcd.path(), etcd()).await.unwrap();
        assert_eq!(
            back.get("k").await.unwrap().as_deref(),
            Some(&b"in etcd"[..])
        );
        back.close().await.unwrap();

        // Nor may a handle for another prefix lead from that prefix's (empty) store.
        let elsewhere = Options::default().etcd(cluster.endpoints(), "elsewhere/");
        let other = open(on_etcd.path(), elsewhere).await.unwrap();
        let got = other.get("k").await;
        assert!(
            matches!(&got, Err(Error::ElectionFailed(cause))
                if matches!(**cause, Error::WrongEtcdPrefix { .. })),
            "{got:?}"
        );
        other.close().await.unwrap();
    });
}

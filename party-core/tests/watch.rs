#![cfg(not(loom))]
//! The change feed through the public API: a follower subscribes to a range and sees
//! exactly the writes committed to it, in commit order; an iteration and a subscription
//! from its snapshot together miss nothing and repeat nothing; a subscriber that falls
//! behind the kept log is told so; sublevels confine subscriptions.

use std::ops::Bound;
use std::time::Duration;

use party_core::{
    open, BatchOp, Change, ChangeRetention, CommitSeq, Error, IterOptions, KeyRange, Options, Role,
    Watch,
};

mod common;

/// A leader and a follower that keep the change feed.
async fn pair(dir: &std::path::Path) -> (party_core::Db, party_core::Db) {
    common::pair_with(dir, Options::default().change_feed(true)).await
}

/// The next change, failing the test if none comes in time.
async fn next(watch: &mut Watch) -> Result<Change, Error> {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change in time")
        .expect("the subscription goes on")
}

fn put(seq: CommitSeq, key: &str, value: &str) -> Change {
    Change::Put {
        seq,
        key: key.into(),
        value: value.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_every_write_of_its_range_in_commit_order_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    leader.put("b0", "before").await.unwrap();
    let range = KeyRange::all().gte("b").lt("c");
    let mut watch = follower.watch(range).await.unwrap();
    let start = watch.position();

    leader.put("a", "outside").await.unwrap();
    leader.put("b1", "one").await.unwrap();
    follower.del("b0").await.unwrap();
    leader
        .batch(vec![
            BatchOp::Put {
                key: b"b2".to_vec(),
                value: b"two".to_vec(),
            },
            BatchOp::Put {
                key: b"c".to_vec(),
                value: b"outside".to_vec(),
            },
        ])
        .await
        .unwrap();
    follower
        .clear(KeyRange::all().gte("a").lt("b1"))
        .await
        .unwrap();

    let changes = [
        next(&mut watch).await.unwrap(),
        next(&mut watch).await.unwrap(),
        next(&mut watch).await.unwrap(),
        next(&mut watch).await.unwrap(),
    ];
    let seqs: Vec<u64> = changes.iter().map(|c| c.seq().0).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "commit order: {seqs:?}"
    );
    assert!(
        seqs[0] > start.0,
        "the write outside the range took a number first"
    );
    assert_eq!(changes[0], put(changes[0].seq(), "b1", "one"));
    assert_eq!(
        changes[1],
        Change::Del {
            seq: changes[1].seq(),
            key: b"b0".to_vec()
        }
    );
    assert_eq!(changes[2], put(changes[2].seq(), "b2", "two"));
    assert_eq!(
        changes[3],
        Change::Clear {
            seq: changes[3].seq(),
            range: KeyRange {
                start: Bound::Included(b"b".to_vec()),
                end: Bound::Excluded(b"b1".to_vec()),
            }
        },
        "the part of the clear inside the range"
    );
    assert_eq!(watch.position(), changes[3].seq().next());
    // Nothing more: a write elsewhere does not wake it.
    leader.put("z", "outside").await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(200), watch.next()).await;
    assert!(quiet.is_err(), "nothing of the range: {quiet:?}");
}

/// Load a range with an iterator, then follow it from the iterator's snapshot: the writes
/// before the snapshot are in the iteration only, those after it in the feed only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iteration_then_a_subscription_from_its_snapshot_miss_nothing_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    for n in 0..5 {
        leader.put(format!("k{n}"), "old").await.unwrap();
    }
    let mut iter = follower.iter(IterOptions::default()).await.unwrap();
    let first = iter.next().await.unwrap().unwrap();
    let seq = iter.seq().expect("the snapshot's commit is known");
    // Written after the snapshot, while the iteration is still being read.
    leader.put("k0", "new").await.unwrap();
    leader.put("k9", "new").await.unwrap();
    let mut loaded = vec![first];
    while let Some(entry) = iter.next().await {
        loaded.push(entry.unwrap());
    }
    assert_eq!(loaded.len(), 5, "the snapshot holds the old keys only");
    assert!(loaded.iter().all(|e| e.value == b"old"));
    let mut watch = follower
        .watch_from(KeyRange::all(), seq.next())
        .await
        .unwrap();
    let a = next(&mut watch).await.unwrap();
    let b = next(&mut watch).await.unwrap();
    assert_eq!(a, put(seq.next(), "k0", "new"));
    assert_eq!(b, put(seq.next().next(), "k9", "new"));
}

/// An iteration of an empty range tells its snapshot as well, once it has ended: followed
/// from there, the range's first write is seen. On both roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_iteration_tells_its_snapshot_and_a_subscription_from_it_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    leader.put("a", "outside").await.unwrap();
    for (n, handle) in [&leader, &follower].into_iter().enumerate() {
        let range = KeyRange::all()
            .gte(format!("empty{n}/"))
            .lt(format!("empty{n}0"));
        let options = IterOptions::default().range(range.clone());
        let mut iter = handle.iter(options).await.unwrap();
        assert!(iter.next().await.is_none(), "the range is empty");
        let seq = iter
            .seq()
            .expect("the snapshot's commit is known at the end");
        handle.put(format!("empty{n}/k"), "first").await.unwrap();
        let mut watch = handle.watch_from(range, seq.next()).await.unwrap();
        let change = next(&mut watch).await.unwrap();
        assert_eq!(change, put(change.seq(), &format!("empty{n}/k"), "first"));
        assert!(change.seq() > seq);
    }
}

/// A subscriber that reads nothing while the log moves past what the leader keeps is told
/// how many commits it lost, then goes on with the ones kept: never a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_the_kept_log_is_told_it_lagged_then_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .change_feed(true)
        .change_retention(ChangeRetention {
            groups: 4,
            bytes: 1 << 20,
        })
        .watch_window(1);
    let leader = open(dir.path(), options.clone()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir.path(), options).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    let mut watch = follower.watch(KeyRange::all()).await.unwrap();
    let start = watch.position();
    let (mut written, mut seen, mut lost) = (0u64, Vec::new(), 0);
    // The leader trims on its timer, between writes: rounds of writes the subscriber does
    // not read, until one of them has outrun the kept log.
    while lost == 0 {
        assert!(
            written < 20_000,
            "the log was never trimmed past the subscriber"
        );
        for _ in 0..200 {
            leader.put(format!("{written:05}"), "v").await.unwrap();
            written += 1;
        }
        // The newest commit is never trimmed: it comes.
        while seen.last().map(|c: &Change| c.seq().0) != Some(start.0 + written - 1) {
            match next(&mut watch).await {
                Ok(change) => seen.push(change),
                Err(Error::Lagged { missed }) => {
                    lost += missed;
                    // The lost commits lie behind the subscription's position: one
                    // reopened from there would not ask for them again.
                    let unseen = seen.last().map_or(start.0, |c: &Change| c.seq().0 + 1);
                    assert!(
                        watch.position().0 >= unseen + missed,
                        "position {} after {missed} lost from {unseen} on",
                        watch.position().0
                    );
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
    assert_eq!(
        seen.len() as u64 + lost,
        written,
        "every commit either seen or reported lost"
    );
    let seqs: Vec<u64> = seen.iter().map(|c| c.seq().0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sublevel_watches_its_own_keys_as_it_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let users = follower.sublevel("users").unwrap();
    let mut watch = users.watch(KeyRange::all()).await.unwrap();
    leader.put("alice", "root's").await.unwrap();
    leader
        .sublevel("posts")
        .unwrap()
        .put("alice", "a post")
        .await
        .unwrap();
    leader
        .sublevel("users")
        .unwrap()
        .put("alice", "a user")
        .await
        .unwrap();
    leader
        .sublevel("users")
        .unwrap()
        .del("alice")
        .await
        .unwrap();
    leader.drop_sublevel("users").await.unwrap();
    let change = next(&mut watch).await.unwrap();
    assert_eq!(change, put(change.seq(), "alice", "a user"));
    let deleted = next(&mut watch).await.unwrap();
    assert_eq!(
        deleted,
        Change::Del {
            seq: deleted.seq(),
            key: b"alice".to_vec(),
        }
    );
    let cleared = next(&mut watch).await.unwrap();
    assert_eq!(
        cleared,
        Change::Clear {
            seq: cleared.seq(),
            range: KeyRange {
                start: Bound::Included(Vec::new()),
                end: Bound::Unbounded,
            }
        },
        "dropping the sublevel clears all of it"
    );
}

/// A position from another store is refused rather than followed past commits unseen; a
/// position kept from a subscription resumes it with nothing repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resumes_from_a_kept_position_and_refuses_one_ahead_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let mut watch = follower.watch(KeyRange::all()).await.unwrap();
    leader.put("a", "1").await.unwrap();
    leader.put("b", "2").await.unwrap();
    let first = next(&mut watch).await.unwrap();
    let kept = watch.position();
    drop(watch);
    let mut resumed = follower.watch_from(KeyRange::all(), kept).await.unwrap();
    let second = next(&mut resumed).await.unwrap();
    assert_eq!(first, put(first.seq(), "a", "1"));
    assert_eq!(second, put(first.seq().next(), "b", "2"));

    // From 0 is from the first commit: nothing was lost before it.
    let mut from_zero = follower
        .watch_from(KeyRange::all(), CommitSeq(0))
        .await
        .unwrap();
    assert_eq!(next(&mut from_zero).await.unwrap(), first);
    assert_eq!(next(&mut from_zero).await.unwrap(), second);

    // Refused by its opening, not by its first event.
    match follower
        .watch_from(KeyRange::all(), CommitSeq(1_000_000))
        .await
    {
        Err(Error::WatchAhead { from, next }) => {
            assert_eq!((from, next), (1_000_000, second.seq().0 + 1))
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a subscription past the store's next commit was opened"),
    }
    // From the next commit it starts at once, before any commit comes (generous: without
    // that it would wait for ever).
    let opening = follower.watch_from(KeyRange::all(), second.seq().next());
    let at_the_end = tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .expect("a subscription from the next commit waited for a commit")
        .unwrap();
    assert_eq!(at_the_end.position(), second.seq().next());
}

/// A leader without the change feed refuses subscriptions; its commits still take their
/// numbers, so a subscriber that comes to them later is told it lost them, never misses
/// them silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_of_a_leader_without_the_feed_are_reported_lost_and_it_refuses_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let with_feed = Options::default().change_feed(true);
    let first = open(dir.path(), with_feed.clone()).await.unwrap();
    assert_eq!(first.ready().await.unwrap(), Role::Leader);
    first.put("a", "kept").await.unwrap();
    let mut iter = first.iter(IterOptions::default()).await.unwrap();
    iter.next().await.unwrap().unwrap();
    let before = iter.seq().unwrap();
    drop(iter);
    first.close().await.unwrap();

    let plain = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(plain.ready().await.unwrap(), Role::Leader);
    // More commits than a read of the log takes (a subscription's window of groups).
    const UNKEPT: u64 = 300;
    for n in 0..UNKEPT {
        plain.put(format!("b{n}"), "not kept").await.unwrap();
    }
    assert!(matches!(
        plain.watch(KeyRange::all()).await,
        Err(Error::FeedOff)
    ));
    assert!(matches!(
        plain.watch_from(KeyRange::all(), before).await,
        Err(Error::FeedOff)
    ));
    plain.close().await.unwrap();

    let again = open(dir.path(), with_feed).await.unwrap();
    assert_eq!(again.ready().await.unwrap(), Role::Leader);
    again.put("d", "kept").await.unwrap();
    let mut watch = again.watch_from(KeyRange::all(), before).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), put(before, "a", "kept"));
    // Said once for the whole run, however many reads of the log it took.
    match next(&mut watch).await {
        Err(Error::Lagged { missed }) => assert_eq!(missed, UNKEPT, "the commits without the feed"),
        other => panic!("{other:?}"),
    }
    let after = next(&mut watch).await.unwrap();
    assert_eq!(after, put(CommitSeq(before.0 + UNKEPT + 1), "d", "kept"));
}

/// A caller that stops waiting for the next change (a `select!` that took another branch)
/// loses nothing: what arrived meanwhile comes at its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_given_up_on_loses_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let mut watch = follower.watch(KeyRange::all()).await.unwrap();
    let given_up = tokio::time::timeout(Duration::from_millis(20), watch.next()).await;
    assert!(given_up.is_err(), "nothing was written yet");
    leader.put("a", "1").await.unwrap();
    leader.put("b", "2").await.unwrap();
    let first = next(&mut watch).await.unwrap();
    assert_eq!(first, put(first.seq(), "a", "1"));
    assert_eq!(
        next(&mut watch).await.unwrap(),
        put(first.seq().next(), "b", "2")
    );
}

/// Calls given up on after one poll, between calls waited for, while commits arrive: no
/// change lost, none repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_given_up_on_between_commits_lose_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let mut watch = follower.watch(KeyRange::all()).await.unwrap();
    let writer = tokio::spawn(async move {
        for n in 0..100 {
            leader.put(format!("k{n:03}"), "v").await.unwrap();
        }
        leader
    });
    let mut keys = Vec::new();
    while keys.len() < 100 {
        let mut given_up = Box::pin(watch.next());
        let polled = std::future::Future::poll(
            given_up.as_mut(),
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
        );
        drop(given_up);
        let change = match polled {
            std::task::Poll::Ready(change) => change.unwrap().unwrap(),
            std::task::Poll::Pending => next(&mut watch).await.unwrap(),
        };
        let Change::Put { key, .. } = change else {
            panic!("{change:?}")
        };
        keys.push(key);
    }
    let wanted: Vec<Vec<u8>> = (0..100).map(|n| format!("k{n:03}").into_bytes()).collect();
    assert_eq!(keys, wanted);
    writer.await.unwrap();
}

/// A call given up on after the driver handed it a change (its caller's future dropped
/// between the hand-over and reading it) loses nothing: the change comes at the next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_given_up_on_after_its_answer_came_loses_no_change() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let mut watch = follower.watch(KeyRange::all()).await.unwrap();
    let mut keys = Vec::new();
    for n in 0..20 {
        let mut given_up = Box::pin(watch.next());
        let polled = std::future::Future::poll(
            given_up.as_mut(),
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
        );
        assert!(polled.is_pending(), "nothing written since the last call");
        leader.put(format!("k{n:02}"), "v").await.unwrap();
        // A round trip behind the commit: the change reached the follower's driver, which
        // handed it to the call waiting for it.
        follower.get("k00").await.unwrap();
        drop(given_up);
        let Change::Put { key, .. } = next(&mut watch).await.unwrap() else {
            panic!("a put")
        };
        keys.push(key);
    }
    let wanted: Vec<Vec<u8>> = (0..20).map(|n| format!("k{n:02}").into_bytes()).collect();
    assert_eq!(keys, wanted);
}

/// On a store that has committed nothing yet, a subscription from commit 0 (or 1) waits
/// for the first commit and gets it, with no lag before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_from_the_start_of_an_empty_store_gets_its_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let mut from_zero = follower
        .watch_from(KeyRange::all(), CommitSeq(0))
        .await
        .unwrap();
    let mut from_one = follower
        .watch_from(KeyRange::all(), CommitSeq(1))
        .await
        .unwrap();
    leader.put("a", "1").await.unwrap();
    let first = next(&mut from_one).await.unwrap();
    assert_eq!(first, put(CommitSeq(1), "a", "1"));
    assert_eq!(next(&mut from_zero).await.unwrap(), first);
}

#![cfg(not(loom))]
//! Several handles on one directory within one process: the fast checks of the API. The
//! real-process tests live in the workspace's `tests/` crate.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use party_core::{open, BatchOp, IterOptions, KeyRange, Options, Role};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_one_leads_one_follows_and_both_see_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(first.ready().await.unwrap(), Role::Leader);
    let second = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(second.ready().await.unwrap(), Role::Follower);
    assert_eq!(second.leader_pid(), Some(std::process::id()));

    first.put("a", "1").await.unwrap();
    second.put("b", "2").await.unwrap();
    assert_eq!(second.get("a").await.unwrap(), Some(b"1".to_vec()));
    assert_eq!(first.get("b").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(second.get("missing").await.unwrap(), None);

    second
        .batch(vec![
            BatchOp::Put {
                key: b"c".to_vec(),
                value: b"3".to_vec(),
            },
            BatchOp::Del { key: b"a".to_vec() },
        ])
        .await
        .unwrap();
    assert_eq!(
        first.get_many(&["a", "b", "c"]).await.unwrap(),
        vec![None, Some(b"2".to_vec()), Some(b"3".to_vec())]
    );
    let entries = second
        .iter(IterOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = entries.into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec![b"b".to_vec(), b"c".to_vec()]);
    second.clear(KeyRange::all()).await.unwrap();
    assert_eq!(first.get("b").await.unwrap(), None);
}

/// Reads skip the store thread when they can; a read issued after a write of the same
/// handle must still see it, on either role, even with both in flight together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sees_the_writes_its_handle_issued_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = common::pair(dir.path()).await;
    for db in [&leader, &follower] {
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for n in 0..500u32 {
            let value = n.to_string();
            writes.push(db.put("counter", value.clone()));
            reads.push((value, db.get("counter")));
        }
        for (value, read) in reads {
            assert_eq!(read.await.unwrap(), Some(value.into_bytes()));
        }
        for write in writes {
            write.await.unwrap();
        }
        // An iterator is issued when called too: it sees the put before it, not the one after,
        // though it is first awaited after both.
        let key = |what: &str| format!("{:?}-{what}", db.role());
        let before = db.put(key("order"), "before");
        let range = KeyRange::default().gte(key("order")).lt(key("order-z"));
        let scan = db.iter(IterOptions::default().range(range));
        let after = db.put(key("order-after"), "x");
        let (before, scan, after) = tokio::join!(before, scan, after);
        before.unwrap();
        after.unwrap();
        let entries = scan.unwrap().collect().await.unwrap();
        let keys: Vec<_> = entries.iter().map(|entry| entry.key.clone()).collect();
        assert_eq!(keys, [key("order").into_bytes()]);
        assert_eq!(entries[0].value, b"before");
    }
}

/// Far more in flight than socket buffers hold: the follower's writes must go out whole and
/// in order while the replies are read, or both sides stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deeper_than_the_socket_buffers_completes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    // Without retries a torn or reordered stream shows as a failed write.
    let follower = open(dir.path(), Options::default().retry(false))
        .await
        .unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    let value = |n: u32| vec![(n % 251) as u8; 16 * 1024];
    let writes: Vec<_> = (0..2_000u32)
        .map(|n| follower.put(format!("k{}", n % 100), value(n)))
        .collect();
    for write in writes {
        write.await.unwrap();
    }
    for n in 1_900..2_000u32 {
        let key = format!("k{}", n % 100);
        assert_eq!(leader.get(&key).await.unwrap(), Some(value(n)), "{key}");
    }
}

/// Holds the directory's election lock without serving: handles can find no leader.
fn hold_lock(dir: &std::path::Path) -> party_core::lock::ElectionLock {
    party_core::lock::ElectionLock::try_acquire(dir)
        .unwrap()
        .expect("the directory is free")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_on_both_roles() {
    use party_core::Json;
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Point {
        x: i32,
        tags: Vec<String>,
    }
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = common::pair(dir.path()).await;
    let (leader, follower) = (
        leader.with_codec(Json::<Point>::default()),
        follower.with_codec(Json::<Point>::default()),
    );
    let p = Point {
        x: -3,
        tags: vec!["a".into()],
    };
    follower.put("p", &p).await.unwrap();
    assert_eq!(leader.get("p").await.unwrap(), Some(p));
    leader
        .put("q", &Point { x: 9, tags: vec![] })
        .await
        .unwrap();
    let entries = follower.entries(IterOptions::default()).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].1.x, 9);
    // A stored value that is not JSON is a typed codec error, not a panic.
    leader.db().put("bad", "not json").await.unwrap();
    assert!(matches!(
        follower.get("bad").await,
        Err(party_core::Error::Codec(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_with_every_bound_reverse_and_limit_through_a_follower() {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    leader.ready().await.unwrap();
    for key in ["a", "b", "c", "d", "e"] {
        leader.put(key, key).await.unwrap();
    }
    let follower = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    let keys = |entries: Vec<party_core::Entry>| -> String {
        entries
            .into_iter()
            .map(|e| String::from_utf8(e.key).unwrap())
            .collect()
    };
    let cases = [
        (Excluded("b"), Unbounded, false, None, "cde"), // gt
        (Included("b"), Excluded("d"), false, None, "bc"), // gte, lt
        (Unbounded, Included("c"), true, None, "cba"),  // lte, reverse
        (Included("a"), Unbounded, true, Some(2), "ed"), // reverse, limit
        (Excluded("a"), Excluded("e"), false, Some(2), "bc"),
        (Included("d"), Excluded("b"), false, None, ""), // inverted: empty
        (Unbounded, Unbounded, false, Some(0), ""),      // a limit of 0: nothing
    ];
    for (start, end, reverse, limit, want) in cases {
        let range = KeyRange {
            start: start.map(|k: &str| k.as_bytes().to_vec()),
            end: end.map(|k: &str| k.as_bytes().to_vec()),
        };
        let options = IterOptions::default()
            .range(range)
            .reverse(reverse)
            .limit(limit);
        let got = keys(
            follower
                .iter(options)
                .await
                .unwrap()
                .collect()
                .await
                .unwrap(),
        );
        assert_eq!(
            got, want,
            "{start:?}..{end:?} reverse={reverse} limit={limit:?}"
        );
    }
    let values_only = IterOptions::default().keys(false);
    let entries = follower
        .iter(values_only)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(entries.iter().all(|e| e.key.is_empty()) && entries[0].value == b"a");
}

/// Writes the keys `k00000`, `k00001`, … (`count` of them, each with the value `v`) in
/// one batch through `db`, and gives them in order.
async fn write_numbered(db: &party_core::Db, count: u32) -> Vec<Vec<u8>> {
    let keys: Vec<_> = (0..count)
        .map(|n| format!("k{n:05}").into_bytes())
        .collect();
    let ops = keys.iter().map(|key| BatchOp::Put {
        key: key.clone(),
        value: b"v".to_vec(),
    });
    db.batch(ops.collect()).await.unwrap();
    keys
}

/// `next_chunk(0)` gives one entry at a time, as `next_chunk(1)` does, and every entry:
/// asked for none, the cursor ended early past what it held (a small range), or waited for
/// credits it never granted (a range past the window of 4096 entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_chunk_of_none_still_gives_each_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = common::pair(dir.path()).await;
    let written = write_numbered(&leader, 5000).await;
    for db in [&leader, &follower] {
        for (end, expected) in [("k00003", 3), ("k99999", 5000)] {
            let options = IterOptions::default().range(KeyRange::default().lt(end));
            let mut iter = db.iter(options).await.unwrap();
            let mut keys = Vec::new();
            let drained = tokio::time::timeout(std::time::Duration::from_secs(60), async {
                while let Some(chunk) = iter.next_chunk(0).await.unwrap() {
                    assert_eq!(chunk.len(), 1);
                    keys.extend(chunk.into_iter().map(|entry| entry.key));
                }
            });
            drained.await.expect("the iteration ended");
            assert_eq!(keys, written[..expected]);
        }
    }
}

/// `next_chunk(max)` gives at most `max` entries, also out of what an earlier call took
/// and kept (`next` takes a whole chunk and gives one), and never skips or repeats one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_chunk_gives_at_most_what_it_is_asked_for_from_what_next_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = common::pair(dir.path()).await;
    let wanted = write_numbered(&leader, 20).await;
    for db in [&leader, &follower] {
        let mut iter = db.iter(IterOptions::default()).await.unwrap();
        let first = iter.next().await.unwrap().unwrap();
        let mut keys = vec![first.key];
        for max in [3, 1, 5] {
            let chunk = iter.next_chunk(max).await.unwrap().unwrap();
            assert_eq!(chunk.len(), max, "asked for {max}");
            keys.extend(chunk.into_iter().map(|entry| entry.key));
        }
        while let Some(chunk) = iter.next_chunk(usize::MAX).await.unwrap() {
            keys.extend(chunk.into_iter().map(|entry| entry.key));
        }
        assert_eq!(keys, wanted);
    }
}

/// A call for the next entries given up on (a `select!` that took another branch, a
/// timeout) loses none: what the driver hands it comes at the next call. A small window
/// keeps the follower's cursor holding entries the driver hands out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iterator_call_given_up_on_loses_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) =
        common::pair_with(dir.path(), party_core::Options::default().iter_window(2)).await;
    let wanted = write_numbered(&leader, 200).await;
    for db in [&leader, &follower] {
        let mut iter = db.iter(IterOptions::default()).await.unwrap();
        let mut keys = Vec::new();
        let drained = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                // Asked, polled once, given up on; then asked again and waited for.
                let mut given_up = Box::pin(iter.next_chunk(3));
                let polled = poll_once(given_up.as_mut());
                drop(given_up);
                let chunk = match polled {
                    Poll::Ready(chunk) => chunk.unwrap(),
                    Poll::Pending => iter.next_chunk(1).await.unwrap(),
                };
                let Some(chunk) = chunk else { break };
                keys.extend(chunk.into_iter().map(|entry| entry.key));
            }
        });
        drained.await.expect("the iteration ended");
        assert_eq!(keys.len(), wanted.len(), "entries lost or repeated");
        assert_eq!(keys, wanted);
    }
}

/// Polls `future` once, without waiting.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Returns once the handle's driver has taken every operation issued before and handed out
/// what taking them produced. The driver answers an iterator's opening itself, in the order
/// operations are issued, so the first opening is answered once the earlier operations are
/// taken; the second is taken in a later round, after the driver has sent out the answers
/// of the first. (Were the second taken in the same burst as the first, the caller's check
/// would only come early: weaker, never wrong.)
async fn driver_caught_up(db: &party_core::Db) {
    for _ in 0..2 {
        drop(db.iter(IterOptions::default()).await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_before_any_leader_exists_resolves_once_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = hold_lock(dir.path());
    let db = open(dir.path(), Options::default()).await.unwrap();
    // Operations are issued when called.
    let mut pending = pin!(db.get("k"));
    let put = db.put("k", "v");
    driver_caught_up(&db).await;
    assert_eq!(db.role(), Role::Electing, "there is no leader yet");
    assert!(
        poll_once(pending.as_mut()).is_pending(),
        "the get waits for a leader"
    );
    drop(squatter);
    assert_eq!(pending.await.unwrap(), None, "issued before the put");
    put.await.unwrap();
    assert_eq!(db.get("k").await.unwrap(), Some(b"v".to_vec()));
    assert!(db.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_fails_pending_operations_and_iterators_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let _squatter = hold_lock(dir.path());
    let db = open(dir.path(), Options::default()).await.unwrap();
    let get = db.get("k");
    let mut iter = db.iter(IterOptions::default()).await.unwrap();
    let mut next = pin!(iter.next());
    // The first poll asks the driver for entries; with no leader, none come.
    assert!(poll_once(next.as_mut()).is_pending());
    db.close().await.unwrap();
    // The timeouts only bound a failure: close answers what is pending.
    let bound = std::time::Duration::from_secs(10);
    let get = tokio::time::timeout(bound, get).await.expect("the get");
    assert!(matches!(get, Err(party_core::Error::Closed)));
    let next = tokio::time::timeout(bound, next)
        .await
        .expect("the iterator");
    assert!(matches!(next, Some(Err(party_core::Error::Closed))));
    assert!(matches!(
        db.put("k", "v").await,
        Err(party_core::Error::Closed)
    ));
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_file_the_socket_and_the_directories_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("new");
    let db = open(&dir, Options::default()).await.unwrap();
    db.ready().await.unwrap();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for file in [db.dir().join("party.lock"), db.socket_path().to_owned()] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // Directories party creates keep the store's files from other users.
    for created in [dir.clone(), dir.join("fjall")] {
        assert_eq!(mode(&created), 0o700, "{}", created.display());
    }
}

#[test]
fn the_blocking_handle_outside_and_inside_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let db = party_core::BlockingDb::open(dir.path(), Options::default()).unwrap();
    assert!(db.is_leader());
    db.put("a", "1").unwrap();
    db.put("b", "2").unwrap();
    assert_eq!(db.get("a").unwrap(), Some(b"1".to_vec()));
    let keys: Vec<Vec<u8>> = db
        .iter(IterOptions::default().reverse(true))
        .unwrap()
        .map(|entry| entry.unwrap().key)
        .collect();
    assert_eq!(keys, vec![b"b".to_vec(), b"a".to_vec()]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let inside = runtime.block_on(async { db.get("a") });
    assert!(matches!(inside, Err(party_core::Error::BlockingInRuntime)));
    // A transaction's read inside a runtime is refused too, not a panic of tokio's.
    let in_transaction = db.transaction(|tx| {
        let _inside = runtime.enter();
        tx.get("a").map(|_| ())
    });
    assert!(
        matches!(
            in_transaction,
            Err(party_core::TransactionError::Aborted(
                party_core::Error::BlockingInRuntime
            ))
        ),
        "{in_transaction:?}"
    );
    drop(db);
    // Dropping the last handle closed it properly: the directory is free at once.
    let again = party_core::BlockingDb::open(dir.path(), Options::default()).unwrap();
    assert_eq!(again.get("b").unwrap(), Some(b"2".to_vec()));
    // Even when the last handle goes inside an async runtime (tokio refuses to drop a
    // runtime there): it is closed all the same, the directory free when the drop returns.
    runtime.block_on(async move { drop(again) });
    // It stepped down before the drop returned: its socket is gone (a close left running
    // behind the drop would still serve on it now).
    let socket = dir.path().join("party.sock");
    assert!(!socket.exists(), "the dropped leader still serves");
    let third = party_core::BlockingDb::open(dir.path(), Options::default()).unwrap();
    assert!(third.is_leader());
    assert_eq!(third.get("a").unwrap(), Some(b"1".to_vec()));
}

/// A fake leader: holds the lock, accepts on the socket, reads whatever comes and answers
/// each connection with `reply`.
#[cfg(unix)]
fn fake_leader(dir: &std::path::Path, reply: Vec<u8>) -> party_core::lock::ElectionLock {
    use std::io::{Read, Write};
    let lock = hold_lock(dir);
    let listener = std::os::unix::net::UnixListener::bind(dir.join("party.sock")).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut first = [0u8; 64];
            let _ = stream.read(&mut first);
            let _ = stream.write_all(&reply);
        }
    });
    lock
}

/// A leader that refuses this process as of another user (its `OtherUser`): the caller is
/// told it was refused for its own user, not that it refused the leader.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_refusing_this_user_is_other_user_not_leader_of_other_user() {
    use party_proto::wire::{encode_frame, ServerMessage};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let mut reply = Vec::new();
    let rejected = ServerMessage::Rejected(party_proto::ErrorCode::OtherUser { uid: 4242 });
    encode_frame(&rejected, 1 << 20, &mut reply).unwrap();
    let _leader = fake_leader(&dir, reply);
    let db = open(&dir, Options::default()).await.unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), db.get("k"))
        .await
        .expect("a refused handle is answered");
    assert!(
        matches!(result, Err(party_core::Error::OtherUser { uid: 4242 })),
        "{result:?}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_speaking_another_version_is_a_protocol_mismatch() {
    use party_proto::wire::{encode_frame, ProtocolId, ServerMessage};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let theirs = ProtocolId {
        version: ProtocolId::CURRENT.version + 1,
        ..ProtocolId::CURRENT
    };
    let mut reply = Vec::new();
    let rejected = ServerMessage::Rejected(party_proto::ErrorCode::ProtocolMismatch {
        expected: theirs,
        got: ProtocolId::CURRENT,
    });
    encode_frame(&rejected, 1 << 20, &mut reply).unwrap();
    let _leader = fake_leader(&dir, reply);
    let db = open(&dir, Options::default()).await.unwrap();
    let result = db.get("k").await;
    assert!(
        matches!(result, Err(party_core::Error::ProtocolMismatch { ours, leader })
            if ours == ProtocolId::CURRENT.version && leader == theirs.version),
        "{result:?}"
    );
    let ready = db.ready().await;
    assert!(
        matches!(ready, Err(party_core::Error::ProtocolMismatch { .. })),
        "{ready:?}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_leader_loses_the_connection_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let _leader = fake_leader(
        &dir,
        b"\x05\x00\x00\x00\xff\xff\xff\xff\xffHTTP/1.1 400".to_vec(),
    );
    let db = open(&dir, Options::default().retry(false)).await.unwrap();
    let result = db.get("k").await;
    assert!(
        matches!(&result, Err(party_core::Error::Protocol(message)) if message.contains("from the leader")),
        "{result:?}"
    );
}

/// A leader that names a value in a ring the follower never offered breaks the protocol:
/// the connection is lost with a clear error, not the answer dropped and the caller left
/// waiting.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_in_a_ring_the_follower_never_offered_loses_the_connection() {
    use party_proto::wire::{encode_frame, ServerMessage};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let in_ring = ServerMessage::ReplyInRing {
        id: party_proto::RequestId(1),
        end: 10,
        len: 10,
    };
    let mut reply = Vec::new();
    encode_frame(&in_ring, 1 << 20, &mut reply).unwrap();
    let _leader = fake_leader(&dir, reply);
    let db = open(&dir, Options::default().retry(false)).await.unwrap();
    // The timeout only bounds a failure (the get left waiting for an answer dropped).
    let result = tokio::time::timeout(std::time::Duration::from_secs(30), db.get("k")).await;
    let result = result.expect("the get is answered");
    assert!(
        matches!(&result, Err(party_core::Error::Protocol(message))
            if message.contains("from the leader") && message.contains("ring")),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_counts_the_followers_the_leader_serves() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    leader.ready().await.unwrap();
    assert_eq!(leader.status().await.unwrap().followers, 0);
    let follower = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    let status = follower.status().await.unwrap();
    assert_eq!((status.role, status.followers), (Role::Follower, 1));
    assert_eq!(status.leader_pid, Some(std::process::id()));
    follower.close().await.unwrap();
    // The leader counts a follower until its connection task reads the end of the
    // connection, which nothing in the API signals: ask the leader (each answer a round trip
    // through it) until it no longer counts the follower. The timeout only bounds a failure.
    let uncounted = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while leader.status().await.unwrap().followers != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(uncounted.is_ok(), "a closed follower is still counted");
}

/// Gets of big values asked at once are answered whole and each with its own value: the
/// leader sends a turn's first answers before it encodes the rest, then goes on with the
/// rest at once (nothing else comes to wake it: the follower only waits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_of_big_values_asked_at_once_are_all_answered() {
    const VALUE_LEN: usize = 1 << 20;
    const GETS: u8 = 16;
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    for i in 0..GETS {
        leader.put([i], vec![i; VALUE_LEN]).await.unwrap();
    }
    let follower = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    // Each get is sent as it is called, so they reach the leader together.
    let gets: Vec<_> = (0..GETS).map(|i| follower.get([i])).collect();
    for (i, get) in (0..GETS).zip(gets) {
        // The timeout only bounds a failure (a leader that stops after its first answers).
        let answer = tokio::time::timeout(std::time::Duration::from_secs(60), get).await;
        let value = answer.expect("answered").unwrap().expect("a value");
        assert!(
            value.len() == VALUE_LEN && value.iter().all(|b| *b == i),
            "get {i}"
        );
    }
}

/// Puts of big values a follower sends at once arrive whole, each with its own value: they
/// are written from the operations the follower keeps, the socket takes part of a turn
/// (each value is bigger than a socket's buffer), and the link's writer task writes the
/// rest from where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_of_big_values_sent_at_once_arrive_whole() {
    const VALUE_LEN: usize = 8 << 20;
    const PUTS: u8 = 4;
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    let value = |i: u8| {
        (0..VALUE_LEN)
            .map(|at| (at % 251) as u8 ^ i)
            .collect::<Vec<u8>>()
    };
    let values: Vec<Vec<u8>> = (0..PUTS).map(value).collect();
    // Each put is sent as it is called.
    let puts: Vec<_> = (0..PUTS)
        .map(|i| follower.put([i], &values[usize::from(i)]))
        .collect();
    for (i, put) in (0..PUTS).zip(puts) {
        // The timeout only bounds a failure (a turn's rest never written).
        let written = tokio::time::timeout(std::time::Duration::from_secs(60), put).await;
        written
            .expect("answered")
            .unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
    for i in 0..PUTS {
        let stored = leader.get([i]).await.unwrap().expect("a value");
        assert!(
            stored == values[usize::from(i)],
            "put {i} stored other bytes"
        );
    }
}

/// A follower that sends requests but never reads the replies must not keep the leader from
/// closing (its connection task used to block in a write the leader could not cancel).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_never_reads_does_not_keep_the_leader_from_closing() {
    use party_proto::wire::{
        encode_frame, ClientMessage, FrameDecoder, Hello, ProtocolId, ReadOp, ServerMessage,
    };
    use std::io::{Read, Write};
    // One reply far larger than a socket holds (Linux's default is about 200 KiB): once the
    // leader starts writing it, its connection task stays in that write while nobody reads.
    const VALUE_LEN: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    leader.ready().await.unwrap();
    leader.put("k", vec![b'v'; VALUE_LEN]).await.unwrap();
    let mut stalled = std::os::unix::net::UnixStream::connect(leader.socket_path()).unwrap();
    let mut frames = Vec::new();
    let hello = Hello {
        protocol: ProtocolId::CURRENT,
        client_id: party_proto::ClientId(9),
        store: "fjall".into(),
    };
    encode_frame(&ClientMessage::Hello(hello), 1 << 20, &mut frames).unwrap();
    let get = ClientMessage::Read {
        id: party_proto::RequestId(0),
        op: ReadOp::Get { key: b"k".to_vec() },
    };
    encode_frame(&get, 1 << 20, &mut frames).unwrap();
    stalled.write_all(&frames).unwrap();
    // The read timeout only bounds a failure.
    stalled
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let stalled = tokio::task::spawn_blocking(move || {
        // The welcome comes first: read it whole...
        let mut header = [0u8; 4];
        stalled.read_exact(&mut header).unwrap();
        let mut welcome = header.to_vec();
        welcome.resize(4 + u32::from_le_bytes(header) as usize, 0);
        stalled.read_exact(&mut welcome[4..]).unwrap();
        let message = FrameDecoder::new(1 << 20)
            .decode::<ServerMessage>(&mut welcome.as_slice())
            .unwrap();
        assert!(
            matches!(message, Some(ServerMessage::Welcome(_))),
            "{message:?}"
        );
        // ...then wait for the first byte of the reply: from here the leader's connection
        // task is blocked writing the rest, as nothing more is read.
        stalled.read_exact(&mut [0u8; 1]).unwrap();
        stalled
    })
    .await
    .unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(10), leader.close()).await;
    assert!(
        closed.is_ok(),
        "the leader hung closing behind a stalled follower"
    );
    drop(stalled);
}

/// Many requests in one socket write, as a deep pipeline sends them: the leader hands them
/// to its session a turn at a time and commits the writes among them in bursts, yet answers
/// every one, and each get sees the put its follower sent before it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_sent_in_one_write_are_all_answered_in_order_with_the_writes() {
    use party_proto::wire::{
        encode_frame, ClientMessage, FrameDecoder, Hello, ProtocolId, ReadOp, Response,
        ServerMessage, WriteOp,
    };
    use party_proto::{RequestId, WriteSeq};
    use std::io::{Read, Write};
    const PAIRS: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    leader.ready().await.unwrap();
    let mut frames = Vec::new();
    let mut frame = |message: ClientMessage| encode_frame(&message, 1 << 20, &mut frames).unwrap();
    frame(ClientMessage::Hello(Hello {
        protocol: ProtocolId::CURRENT,
        client_id: party_proto::ClientId(9),
        store: "fjall".into(),
    }));
    let first_sent_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for n in 0..PAIRS {
        frame(ClientMessage::Write {
            id: RequestId(2 * n),
            seq: WriteSeq(n + 1),
            oldest_pending: WriteSeq(1),
            first_sent_ms,
            op: WriteOp::Put {
                key: format!("k{n}").into_bytes(),
                value: format!("v{n}").into_bytes(),
            }
            .into(),
        });
        frame(ClientMessage::Read {
            id: RequestId(2 * n + 1),
            op: ReadOp::Get {
                key: format!("k{n}").into_bytes(),
            },
        });
    }
    let mut follower = std::os::unix::net::UnixStream::connect(leader.socket_path()).unwrap();
    follower.write_all(&frames).unwrap();
    // The read timeout only bounds a failure (a turn left unanswered).
    follower
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let answers = tokio::task::spawn_blocking(move || {
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut answers = std::collections::BTreeMap::new();
        let mut buffer = vec![0u8; 64 * 1024];
        while answers.len() < 2 * PAIRS as usize {
            let read = follower.read(&mut buffer).expect("every request answered");
            assert!(read > 0, "the leader hung up");
            let mut input = &buffer[..read];
            while let Some(message) = decoder.decode::<ServerMessage>(&mut input).unwrap() {
                if let ServerMessage::Reply { id, result } = message {
                    answers.insert(id.0, result.unwrap());
                }
            }
        }
        answers
    })
    .await
    .unwrap();
    for n in 0..PAIRS {
        assert_eq!(answers[&(2 * n)], Response::Written, "put {n}");
        let value = Some(format!("v{n}").into_bytes());
        assert_eq!(
            answers[&(2 * n + 1)],
            Response::Value(value.map(Into::into)),
            "get {n}"
        );
    }
    leader.close().await.unwrap();
}

/// The state a role watch hands out counts as seen: once the role has settled, the watch
/// tells no change until there is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_state_read_now_counts_as_seen() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Options::default()).await.unwrap();
    let mut roles = db.watch_role();
    assert_eq!(db.ready().await.unwrap(), Role::Leader);
    // Whatever the handle still publishes as it settles, a state read after the last
    // publication leaves nothing unseen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(roles.current().role, Role::Leader);
        if !roles.has_changed() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a state read never counted as seen"
        );
        tokio::task::yield_now().await;
    }
}

/// Callers get copies of the role state, never a borrow: one held across awaits cannot hold
/// up the handle's driver, which goes on publishing (it used to deadlock the handle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_holding_the_role_state_never_blocks_the_handle() {
    let dir = tempfile::tempdir().unwrap();
    let leader = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir.path(), Options::default()).await.unwrap();
    let mut watch = follower.watch_role();
    let held = watch
        .wait_for(|state| state.role == Role::Follower)
        .await
        .unwrap();
    leader.close().await.unwrap();
    let took_over = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        watch.wait_for(|state| state.role == Role::Leader),
    )
    .await
    .expect("the follower never published its new role");
    assert_eq!(took_over.unwrap().leader_pid, Some(std::process::id()));
    follower.put("k", "v").await.unwrap();
    assert_eq!(held.role, Role::Follower, "the copy is the caller's");
}

/// `close` returns once the store is closed and its lock released, so that anything may
/// use the directory next; `close_before_exit` returns once the handle has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_with_the_lock_released() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let db = open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(db.ready().await.unwrap(), Role::Leader);
        db.put("k", "v").await.unwrap();
        db.close().await.unwrap();
        let lock = party_core::lock::ElectionLock::try_acquire(dir.path()).unwrap();
        assert!(lock.is_some(), "the lock is free once close returns");
    }
    let db = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(db.ready().await.unwrap(), Role::Leader);
    db.put("k", "again").await.unwrap();
    db.close_before_exit().await.unwrap();
    assert!(matches!(db.get("k").await, Err(party_core::Error::Closed)));
    // A closed handle will never lead or follow again: waiting for it says so.
    assert!(matches!(db.ready().await, Err(party_core::Error::Closed)));
    // A close after it (the driver has stopped by then) still returns only once the store
    // is closed and the lock free.
    db.close().await.unwrap();
    let lock = party_core::lock::ElectionLock::try_acquire(dir.path()).unwrap();
    assert!(
        lock.is_some(),
        "the lock is free once a later close returns"
    );
}

/// Operations asked as the handle's driver stops, from another thread, fail with `Closed`;
/// none waits for ever. Once the handle says it is closed, a thread asks again and again
/// until it has been refused many times in a row, so that some asks come exactly as the
/// driver lets go of its queue: one sent then used to stay in the queue, unanswered for as
/// long as the handle lived. Several handles (directories) at once, for more such moments.
#[test]
fn operations_asked_as_the_handle_stops_fail_as_closed() {
    const HANDLES: usize = 4;
    const ROUNDS: usize = 25;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let closers: Vec<_> = (0..HANDLES)
        .map(|_| {
            let runtime = runtime.handle().clone();
            std::thread::spawn(move || {
                let dir = tempfile::tempdir().unwrap();
                for _ in 0..ROUNDS {
                    ask_as_it_stops(dir.path(), &runtime);
                }
            })
        })
        .collect();
    for closer in closers {
        closer.join().unwrap();
    }
}

/// Opens `dir`, closes it, and asks gets from another thread as it stops: each is answered
/// `Closed`.
fn ask_as_it_stops(dir: &std::path::Path, runtime: &tokio::runtime::Handle) {
    let db = runtime.block_on(async {
        let db = open(dir, Options::default()).await.unwrap();
        assert_eq!(db.ready().await.unwrap(), Role::Leader);
        db
    });
    let asker = {
        let db = db.clone();
        std::thread::spawn(move || {
            while db.role() != Role::Closed {
                std::thread::yield_now();
            }
            ask_until_refused(&db)
        })
    };
    runtime.block_on(db.close_before_exit()).unwrap();
    let (asked, served) = asker.join().unwrap();
    assert_eq!(served, 0, "gets asked of a closed handle were served");
    for answer in runtime.block_on(answers(asked)) {
        assert!(
            matches!(answer, Err(party_core::Error::Closed)),
            "{answer:?}"
        );
    }
    runtime.block_on(db.close()).unwrap();
}

/// A handle whose runtime shuts down under it (its driver dropped, not ended) while other
/// threads ask gets: each is answered, none waits for ever. The queue of such a driver goes
/// with it, and a get sent just then used to stay in it unanswered. And the shutdown comes
/// soon: a driver flooded with gets used to take them for 128 turns of its loop before it
/// let the runtime stop it, by which time the askers had given up.
#[test]
fn operations_asked_as_the_handles_runtime_shuts_down_fail_as_closed() {
    const ROUNDS: usize = 40;
    const ASKERS: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..ROUNDS {
        let doomed = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = doomed.block_on(async {
            let db = open(dir.path(), Options::default()).await.unwrap();
            assert_eq!(db.ready().await.unwrap(), Role::Leader);
            db
        });
        let asking = std::sync::Arc::new(std::sync::Barrier::new(ASKERS + 1));
        let askers: Vec<_> = (0..ASKERS)
            .map(|_| {
                let db = db.clone();
                let asking = asking.clone();
                std::thread::spawn(move || {
                    asking.wait();
                    ask_until_refused(&db)
                })
            })
            .collect();
        asking.wait();
        drop(doomed);
        let after = tokio::runtime::Runtime::new().unwrap();
        for asker in askers {
            let (asked, _served) = asker.join().unwrap();
            assert!(
                asked.len() < MAX_WAITING,
                "an asker gave up before the driver was dropped"
            );
            // Those the driver took in time are served, the others refused.
            for answer in after.block_on(answers(asked)) {
                assert!(
                    matches!(answer, Ok(None) | Err(party_core::Error::Closed)),
                    "{answer:?}"
                );
            }
        }
        after.block_on(db.close()).unwrap();
    }
}

/// Gets of `db` not answered at once.
type Asked = Vec<Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, party_core::Error>> + Send>>>;

/// Most gets [`ask_until_refused`] keeps waiting.
const MAX_WAITING: usize = 100_000;

/// Asks gets of `db` again and again until it has been refused many times in a row, so that
/// some asks come exactly as its driver lets go of its queue. Returns those not answered at
/// once, and how many were served at once. It keeps at most `MAX_WAITING` waiting, and
/// stops asking then: a driver that takes gets as fast as they come would otherwise fill
/// the memory with them.
fn ask_until_refused(db: &party_core::Db) -> (Asked, usize) {
    /// Refusals in a row after which the asker takes the handle's queue for gone.
    const REFUSED_IN_A_ROW: usize = 1000;
    let mut asked: Asked = Vec::new();
    let mut served = 0;
    let mut refused = 0;
    while refused < REFUSED_IN_A_ROW && asked.len() < MAX_WAITING {
        let mut get = Box::pin(db.get("k"));
        match poll_once(get.as_mut()) {
            Poll::Ready(Err(party_core::Error::Closed)) => refused += 1,
            Poll::Ready(Ok(None)) => {
                refused = 0;
                served += 1;
            }
            Poll::Ready(other) => panic!("a get as the handle stops: {other:?}"),
            Poll::Pending => {
                refused = 0;
                asked.push(get);
            }
        }
    }
    (asked, served)
}

/// The answers of `asked`, each of which must come.
async fn answers(asked: Asked) -> Vec<Result<Option<Vec<u8>>, party_core::Error>> {
    let mut answers = Vec::new();
    for get in asked {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(30), get)
            .await
            .expect("a get asked as the handle stopped never got its answer");
        answers.push(answer);
    }
    answers
}

/// A leading handle whose runtime shut down under it (its driver dropped mid-leadership): a
/// close from another runtime still returns only once its store is closed and the lock
/// free, not at once.
#[test]
fn a_close_after_the_handles_runtime_shut_down_waits_for_the_store_to_close() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let first = tokio::runtime::Runtime::new().unwrap();
        let db = first.block_on(async {
            let db = open(dir.path(), Options::default()).await.unwrap();
            assert_eq!(db.ready().await.unwrap(), Role::Leader);
            db.put("k", "v").await.unwrap();
            db
        });
        drop(first);
        let second = tokio::runtime::Runtime::new().unwrap();
        second.block_on(db.close()).unwrap();
        let lock = party_core::lock::ElectionLock::try_acquire(dir.path()).unwrap();
        assert!(lock.is_some(), "the lock is free once close returns");
    }
}

/// Holds the lock and the socket, accepts connections and never says a word: a stuck
/// leader, or another program on the socket.
fn mute_leader(dir: &std::path::Path) -> party_core::lock::ElectionLock {
    let lock = hold_lock(dir);
    let listener = std::os::unix::net::UnixListener::bind(dir.join("party.sock")).unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().flatten().collect();
        drop(held);
    });
    lock
}

/// A peer that accepts and never welcomes is no leader: the handle gives up on it (the
/// role says why), tries again later, and serves its operations once a real leader can
/// be found or become, instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_welcomes_is_no_leader() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let lock = mute_leader(&dir);
    let db = open(&dir, Options::default()).await.unwrap();
    let get = tokio::spawn({
        let db = db.clone();
        async move { db.get("k").await }
    });
    let mut roles = db.watch_role();
    let state = roles
        .wait_for(|state| matches!(state.rejected(), Some(party_core::Error::TimedOut)))
        .await
        .unwrap();
    assert_eq!(state.role, Role::Electing);
    drop(lock);
    assert_eq!(
        get.await.unwrap().unwrap(),
        None,
        "served once it could lead"
    );
    assert_eq!(db.role(), Role::Leader);
}

/// A leader that closes after a burst of writes leaves the next process to open the store
/// nothing to replay: one journal, the empty one fjall starts after its last flush (fjall's
/// layout: `fjall/fjall/journals/` in the store's directory). Without that, every later
/// open replayed what the burst had not flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_closes_after_a_burst_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let journals = dir.path().join("fjall").join("fjall").join("journals");
    let db = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(db.ready().await.unwrap(), Role::Leader);
    let value = vec![b'v'; 64 << 10];
    for n in 0..96 {
        db.put(format!("k{n:02}"), &value).await.unwrap();
    }
    // As a one-shot command closes: the store checkpoints before this returns.
    db.close_before_exit().await.unwrap();
    assert_eq!(std::fs::read_dir(&journals).unwrap().count(), 1);
    let next = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(next.ready().await.unwrap(), Role::Leader);
    assert_eq!(next.get("k95").await.unwrap(), Some(value));
    next.close().await.unwrap();
}

/// A `get_many` and a scan see each batch whole or not at all, whichever handle writes
/// and whichever reads (a follower's reads run on its connection's task at the leader,
/// beside commits made by the store thread and by other connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_no_batch_in_part_beside_writes_of_other_handles() {
    const KEYS: [&str; 4] = ["many/0", "many/1", "many/2", "many/3"];
    let unlike = |values: &[Option<Vec<u8>>]| values.iter().any(|value| *value != values[0]);
    for (writer_leads, reader_leads) in [(true, false), (false, true), (false, false)] {
        let dir = tempfile::tempdir().unwrap();
        let leader = open(dir.path(), Options::default()).await.unwrap();
        assert_eq!(leader.ready().await.unwrap(), Role::Leader);
        let mut followers = Vec::new();
        for _ in 0..2 {
            let follower = open(dir.path(), Options::default()).await.unwrap();
            assert_eq!(follower.ready().await.unwrap(), Role::Follower);
            followers.push(follower);
        }
        let writer = if writer_leads { &leader } else { &followers[0] }.clone();
        let reader = if reader_leads { &leader } else { &followers[1] };
        let writes = tokio::spawn(async move {
            for n in 0..2_000u32 {
                let value = n.to_string().into_bytes();
                let ops = KEYS
                    .iter()
                    .map(|key| BatchOp::Put {
                        key: key.as_bytes().to_vec(),
                        value: value.clone(),
                    })
                    .collect();
                writer.batch(ops).await.unwrap();
            }
        });
        let (mut reads, mut torn) = (0, Vec::new());
        while !writes.is_finished() {
            let many = reader.get_many(&KEYS).await.unwrap();
            let entries = reader
                .iter(IterOptions::default())
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let scanned: Vec<Option<Vec<u8>>> = KEYS
                .iter()
                .map(|key| {
                    let found = entries.iter().find(|entry| entry.key == key.as_bytes());
                    found.map(|entry| entry.value.clone())
                })
                .collect();
            reads += 1;
            for values in [many, scanned] {
                if unlike(&values) {
                    torn.push(values);
                }
            }
        }
        writes.await.unwrap();
        assert!(reads >= 10, "only {reads} reads met the writes");
        assert!(
            torn.is_empty(),
            "writer leads {writer_leads}, reader leads {reader_leads}: {} of {reads} reads \
             saw a batch in part, the first: {:?}",
            torn.len(),
            torn.first()
        );
    }
}

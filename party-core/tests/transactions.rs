#![cfg(not(loom))]
//! Compare-and-swap and transactions through the public API, on a leader and a follower in
//! one process. The multi-process runs under SIGKILL live in the workspace's `tests/`.

use party_core::{
    open, BatchOp, BlockingDb, Error, IterOptions, KeyRange, Options, TransactionError,
};

mod common;
use common::pair;

fn number(value: Option<Vec<u8>>) -> u64 {
    value.map_or(0, |v| String::from_utf8(v).unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_swaps_only_from_the_expected_value_and_says_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let created = follower
        .compare_and_swap("k", None::<&[u8]>, Some("1"))
        .await;
    assert_eq!(created.unwrap(), Ok(()));
    let stale = leader.compare_and_swap("k", None::<&[u8]>, Some("2")).await;
    assert_eq!(stale.unwrap().unwrap_err().current, Some(b"1".to_vec()));
    let swapped = leader.compare_and_swap("k", Some("1"), Some("2")).await;
    assert_eq!(swapped.unwrap(), Ok(()));
    let deleted = follower
        .compare_and_swap("k", Some("2"), None::<&[u8]>)
        .await;
    assert_eq!(deleted.unwrap(), Ok(()));
    assert_eq!(leader.get("k").await.unwrap(), None);
    let missing = follower.compare_and_swap("k", Some("2"), Some("3")).await;
    assert_eq!(missing.unwrap().unwrap_err().current, None);
}

/// Increments from both handles at once, each a read then a write: none is lost, as each
/// increment that read a value another changed meanwhile runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_by_transaction_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let increments = |db: party_core::Db| async move {
        for _ in 0..50 {
            db.transaction(|tx| async move {
                let n = number(tx.get("counter").await?);
                tx.put("counter", (n + 1).to_string());
                Ok::<_, Error>(())
            })
            .await
            .unwrap();
        }
    };
    let tasks: Vec<_> = [
        leader.clone(),
        follower.clone(),
        follower.clone(),
        leader.clone(),
    ]
    .into_iter()
    .map(|db| tokio::spawn(increments(db)))
    .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(number(leader.get("counter").await.unwrap()), 200);
}

/// A key written into a range a transaction read (a phantom) makes it run again, and
/// the second run sees the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_appearing_in_a_range_read_makes_the_transaction_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    leader.put("job/1", "a").await.unwrap();
    let runs = std::sync::atomic::AtomicU32::new(0);
    let jobs = KeyRange::all().gte("job/").lt("job0");
    let seen = follower
        .transaction(|tx| {
            let (leader, runs, jobs) = (leader.clone(), &runs, jobs.clone());
            async move {
                let entries = tx.iter(IterOptions::default().range(jobs)).await?;
                if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    // Another process adds a job after this one listed them.
                    leader.put("job/2", "b").await?;
                }
                tx.put("count", entries.len().to_string());
                Ok::<_, Error>(entries.len())
            }
        })
        .await
        .unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(seen, 2);
    assert_eq!(leader.get("count").await.unwrap(), Some(b"2".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_reads_its_own_writes_and_an_aborted_one_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    leader.put("b", "old").await.unwrap();
    let listed = follower
        .transaction(|tx| async move {
            tx.put("a", "new");
            tx.del("b");
            let own = tx.get("a").await?;
            let entries = tx.iter(IterOptions::default().reverse(true)).await?;
            Ok::<_, Error>((own, entries.into_iter().map(|e| e.key).collect::<Vec<_>>()))
        })
        .await
        .unwrap();
    assert_eq!(listed, (Some(b"new".to_vec()), vec![b"a".to_vec()]));
    assert_eq!(leader.get("b").await.unwrap(), None);
    let aborted = follower
        .transaction(|tx| async move {
            tx.put("a", "never");
            Err::<(), _>("changed my mind")
        })
        .await;
    assert!(matches!(
        aborted,
        Err(TransactionError::Aborted("changed my mind"))
    ));
    assert_eq!(leader.get("a").await.unwrap(), Some(b"new".to_vec()));
}

/// A transaction's range read shows its own writes inside the range and none outside it,
/// and a reverse read with a limit gives the last entries of the range, last first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_read_in_a_transaction_keeps_to_its_range_and_its_limit_counts_from_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    for key in ["a", "b", "c", "d"] {
        leader.put(key, key).await.unwrap();
    }
    let (inside, last_two) = follower
        .transaction(|tx| async move {
            tx.put("bb", "mine");
            tx.put("z", "outside");
            tx.del("c");
            let range = KeyRange::all().gte("b").lt("d");
            let inside = tx.iter(IterOptions::default().range(range)).await?;
            let last_two = tx
                .iter(IterOptions::default().reverse(true).limit(Some(2)))
                .await?;
            Ok::<_, Error>((inside, last_two))
        })
        .await
        .unwrap();
    let keys = |entries: Vec<party_core::Entry>| -> Vec<Vec<u8>> {
        entries.into_iter().map(|entry| entry.key).collect()
    };
    assert_eq!(keys(inside), [b"b".to_vec(), b"bb".to_vec()]);
    assert_eq!(keys(last_two), [b"z".to_vec(), b"d".to_vec()]);
}

/// A transaction that only reads is checked at commit all the same: reads of two keys
/// with a write to both between them (another process moving funds from one to the other)
/// do not hold together, so the body runs again and sees the sum kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_only_reads_sees_its_reads_hold_together() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    leader.put("x", "60").await.unwrap();
    leader.put("y", "40").await.unwrap();
    let runs = std::sync::atomic::AtomicU32::new(0);
    let sum = follower
        .transaction(|tx| {
            let (leader, runs) = (leader.clone(), &runs);
            async move {
                let x = number(tx.get("x").await?);
                if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    let put = |key: &str| BatchOp::Put {
                        key: key.into(),
                        value: b"50".to_vec(),
                    };
                    leader.batch(vec![put("x"), put("y")]).await?;
                }
                let y = number(tx.get("y").await?);
                Ok::<_, Error>(x + y)
            }
        })
        .await
        .unwrap();
    assert_eq!(sum, 100, "the reads of one run held together");
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A body that gives up on what it read is believed only if what it read held together:
/// one that gave up on a value changed meanwhile runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_on_reads_that_no_longer_hold_runs_the_body_again() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    leader.put("funds", "0").await.unwrap();
    let runs = std::sync::atomic::AtomicU32::new(0);
    let result = follower
        .transaction(|tx| {
            let (leader, runs) = (leader.clone(), &runs);
            async move {
                let funds = number(tx.get("funds").await?);
                if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    // Funds arrive after the first run read none.
                    leader.put("funds", "5").await?;
                }
                if funds == 0 {
                    return Err(Error::Protocol("no funds".into()));
                }
                tx.put("funds", (funds - 1).to_string());
                Ok(funds)
            }
        })
        .await
        .unwrap();
    assert_eq!(result, 5);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    let refused = follower
        .transaction(|tx| async move {
            tx.get("funds").await.map_err(|_| "the read failed")?;
            Err::<(), _>("no")
        })
        .await;
    assert!(matches!(refused, Err(TransactionError::Aborted("no"))));
}

/// A transaction that keeps meeting conflicts gives up after its attempts, writing
/// nothing, with a typed error naming the key as its handle names it (a sublevel's too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_always_conflicts_gives_up_after_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let root = open(dir.path(), Options::default().transaction_attempts(3))
        .await
        .unwrap();
    root.ready().await.unwrap();
    for db in [root.clone(), root.sublevel("users").unwrap()] {
        let mut runs = 0;
        let result = db
            .transaction(|tx| {
                runs += 1;
                let db = db.clone();
                async move {
                    let n = number(tx.get("hot").await?);
                    db.put("hot", (n + 100).to_string()).await?;
                    tx.put("hot", (n + 1).to_string());
                    Ok::<_, Error>(())
                }
            })
            .await;
        match result {
            Err(TransactionError::Conflict { attempts, key }) => {
                assert_eq!((attempts, key), (3, b"hot".to_vec()));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert_eq!(runs, 3);
        assert_eq!(number(db.get("hot").await.unwrap()), 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_ends_the_transaction_with_the_stores_error_not_as_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Options::default()).await.unwrap();
    db.ready().await.unwrap();
    let closer = db.clone();
    let result = db
        .transaction(|tx| {
            let closer = closer.clone();
            async move {
                closer.close().await?;
                tx.get("k").await?;
                Ok::<_, Error>(())
            }
        })
        .await;
    assert!(
        matches!(result, Err(TransactionError::Db(Error::Closed))),
        "{result:?}"
    );
}

/// A read whose answer is over the leader's message limit (a value written under a larger
/// limit, read under a smaller one) fails in a transaction as a plain get does, for the
/// body (which might read less) and for the caller alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_too_large_for_the_leaders_limit_fails_a_transaction_as_reply_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Options::default()).await.unwrap();
    db.put("big", vec![7u8; 4096]).await.unwrap();
    db.close().await.unwrap();
    let limits = party_core::Limits::default().max_frame_len(1024);
    let db = open(dir.path(), Options::default().limits(limits))
        .await
        .unwrap();
    let plain = db.get("big").await.unwrap_err();
    assert!(
        matches!(plain, Error::ReplyTooLarge { max: 1024, .. }),
        "{plain:?}"
    );
    let seen_by_body = std::sync::Arc::new(std::sync::Mutex::new(None));
    let result = db
        .transaction(|tx| {
            let seen_by_body = seen_by_body.clone();
            async move {
                let read = tx.get("big").await;
                let too_large = matches!(read, Err(Error::ReplyTooLarge { max: 1024, .. }));
                *seen_by_body.lock().unwrap() = Some((too_large, format!("{read:?}")));
                read.map(drop)
            }
        })
        .await;
    let (too_large, seen_by_body) = seen_by_body.lock().unwrap().take().unwrap();
    assert!(too_large, "the body saw {seen_by_body}");
    assert!(
        matches!(
            result,
            Err(TransactionError::Db(Error::ReplyTooLarge { max: 1024, .. }))
        ),
        "{result:?}"
    );
}

#[test]
fn the_blocking_forms() {
    let dir = tempfile::tempdir().unwrap();
    let db = BlockingDb::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        db.compare_and_swap("k", None::<&[u8]>, Some("1")).unwrap(),
        Ok(())
    );
    let total = db
        .transaction(|tx| {
            let n = number(tx.get("k")?);
            tx.put("k", (n + 1).to_string());
            tx.put("other", "x");
            let entries = tx.iter(IterOptions::default())?;
            Ok::<_, Error>(entries.len())
        })
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(db.get("k").unwrap(), Some(b"2".to_vec()));
}

/// A handle asked for no transaction attempts still runs each transaction once (the
/// option's floor), in both forms.
#[test]
fn a_transaction_runs_once_when_no_attempts_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().transaction_attempts(0);
    let db = BlockingDb::open(dir.path(), options).unwrap();
    let ran = db
        .transaction(|tx| {
            tx.put("blocking", "ran");
            Ok::<_, Error>(())
        })
        .map_err(|error| error.to_string());
    assert_eq!(ran, Ok(()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ran = runtime.block_on(db.db().transaction(|tx| async move {
        tx.put("async", "ran");
        Ok::<_, Error>(())
    }));
    assert_eq!(ran.map_err(|error| error.to_string()), Ok(()));
    assert_eq!(db.get("blocking").unwrap(), Some(b"ran".to_vec()));
    assert_eq!(db.get("async").unwrap(), Some(b"ran".to_vec()));
}

/// The blocking form, like the async one, runs its body again when what it read changed
/// before its commit, and believes an abort only if what the body read held.
#[test]
fn a_blocking_transaction_runs_again_on_a_conflict_and_on_an_abort_on_stale_reads() {
    let dir = tempfile::tempdir().unwrap();
    let db = BlockingDb::open(dir.path(), Options::default()).unwrap();
    db.put("counter", "0").unwrap();
    let mut runs = 0;
    let counted = db
        .transaction(|tx| {
            runs += 1;
            let n = number(tx.get("counter")?);
            if runs == 1 {
                // Another write of what the first run read, before its commit.
                db.put("counter", "10")?;
            }
            tx.put("counter", (n + 1).to_string());
            Ok::<_, Error>(n + 1)
        })
        .unwrap();
    assert_eq!((counted, runs), (11, 2));
    assert_eq!(db.get("counter").unwrap(), Some(b"11".to_vec()));

    db.put("funds", "0").unwrap();
    let mut runs = 0;
    let spent = db
        .transaction(|tx| {
            runs += 1;
            let funds = number(tx.get("funds")?);
            if runs == 1 {
                // Funds arrive after the first run read none.
                db.put("funds", "5")?;
            }
            if funds == 0 {
                return Err(Error::Protocol("no funds".into()));
            }
            tx.put("funds", (funds - 1).to_string());
            Ok(funds)
        })
        .unwrap();
    assert_eq!((spent, runs), (5, 2));
    assert_eq!(db.get("funds").unwrap(), Some(b"4".to_vec()));
    let refused = db.transaction(|tx| {
        tx.get("funds").map_err(|_| "the read failed")?;
        Err::<(), _>("no")
    });
    assert!(matches!(refused, Err(TransactionError::Aborted("no"))));
}

#![cfg(not(loom))]
//! Sublevels through the public API, on a leader and a follower: each a key space of its
//! own for every operation, nested, listed and dropped.

use party_core::{BatchOp, Error, IterOptions, Json, KeyRange};

mod common;
use common::pair;

fn keys(entries: Vec<party_core::Entry>) -> Vec<String> {
    entries
        .into_iter()
        .map(|e| String::from_utf8(e.key).unwrap())
        .collect()
}

async fn all_keys(db: &party_core::Db, options: IterOptions) -> Vec<String> {
    keys(db.iter(options).await.unwrap().collect().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sublevel_confines_reads_writes_iterators_and_clear_to_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let users = follower.sublevel("users").unwrap();
    let posts = leader.sublevel("posts").unwrap();
    leader.put("root", "r").await.unwrap();
    for key in ["alice", "bob", "carol"] {
        users.put(key, format!("user {key}")).await.unwrap();
        posts.put(key, format!("post {key}")).await.unwrap();
    }
    users
        .batch(vec![
            BatchOp::Put {
                key: b"dave".to_vec(),
                value: b"user dave".to_vec(),
            },
            BatchOp::Del {
                key: b"carol".to_vec(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        leader.sublevel("users").unwrap().get("bob").await.unwrap(),
        Some(b"user bob".to_vec())
    );
    assert_eq!(users.get("root").await.unwrap(), None);
    assert_eq!(
        users.get_many(&["alice", "carol"]).await.unwrap(),
        vec![Some(b"user alice".to_vec()), None]
    );
    assert_eq!(
        all_keys(&users, IterOptions::default()).await,
        ["alice", "bob", "dave"]
    );
    assert_eq!(
        all_keys(&users, IterOptions::default().reverse(true).limit(Some(2))).await,
        ["dave", "bob"]
    );
    assert_eq!(
        all_keys(
            &users,
            IterOptions::default().range(KeyRange::all().gt("alice").lte("bob"))
        )
        .await,
        ["bob"]
    );
    let values_only = users
        .iter(IterOptions::default().keys(false))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(values_only[0].value, b"user alice");
    // The parent sees its sublevels' keys under their prefixes, as level does.
    assert_eq!(
        all_keys(&leader, IterOptions::default()).await,
        [
            "!posts!alice",
            "!posts!bob",
            "!posts!carol",
            "!users!alice",
            "!users!bob",
            "!users!dave",
            "root"
        ]
    );
    users.clear(KeyRange::all().lt("c")).await.unwrap();
    assert_eq!(all_keys(&users, IterOptions::default()).await, ["dave"]);
    assert_eq!(all_keys(&posts, IterOptions::default()).await.len(), 3);
    assert_eq!(leader.get("root").await.unwrap(), Some(b"r".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sublevels_nest_are_listed_and_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let logs = follower.sublevel("logs").unwrap();
    let day = logs.sublevel("2026-11-29").unwrap();
    assert_eq!(day.prefix(), b"!logs!!2026-11-29!");
    day.put("a", "1").await.unwrap();
    logs.sublevel("2026-11-30")
        .unwrap()
        .put("b", "2")
        .await
        .unwrap();
    logs.put("plain", "3").await.unwrap();
    leader
        .sublevel("metrics")
        .unwrap()
        .put("m", "4")
        .await
        .unwrap();
    leader.sublevel("empty").unwrap();
    leader.put("!not-closed", "5").await.unwrap();
    // Under `!!` and under a name that is not UTF-8: no name `sublevel` would take.
    leader.put("!!empty-name", "6").await.unwrap();
    leader.put(b"!\xff!not-utf8", "7").await.unwrap();
    // A `!` in a key that does not start with one is no sublevel's.
    leader.put("ab!c", "8").await.unwrap();
    logs.put("plain!x", "9").await.unwrap();
    // Bounded: a listing that strayed past the `!` keys could go round for ever.
    let listed = tokio::time::timeout(std::time::Duration::from_secs(60), leader.sublevels());
    assert_eq!(listed.await.expect("listed").unwrap(), ["logs", "metrics"]);
    assert_eq!(
        logs.sublevels().await.unwrap(),
        ["2026-11-29", "2026-11-30"]
    );
    assert_eq!(day.sublevels().await.unwrap(), Vec::<String>::new());
    logs.drop_sublevel("2026-11-29").await.unwrap();
    assert_eq!(logs.sublevels().await.unwrap(), ["2026-11-30"]);
    assert_eq!(logs.get("plain").await.unwrap(), Some(b"3".to_vec()));
    leader.drop_sublevel("logs").await.unwrap();
    assert_eq!(leader.sublevels().await.unwrap(), ["metrics"]);
    assert_eq!(
        leader.get("!not-closed").await.unwrap(),
        Some(b"5".to_vec())
    );
    for bad in ["", "a!b"] {
        assert!(matches!(
            leader.sublevel(bad),
            Err(Error::InvalidSublevelName { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codecs_transactions_and_compare_and_swap_stay_in_their_sublevel() {
    let dir = tempfile::tempdir().unwrap();
    let (leader, follower) = pair(dir.path()).await;
    let scores = follower
        .sublevel("scores")
        .unwrap()
        .with_codec(Json::<Vec<u32>>::default());
    scores.put("alice", &vec![3, 5]).await.unwrap();
    assert_eq!(scores.get("alice").await.unwrap(), Some(vec![3, 5]));
    leader.put("alice", "root's").await.unwrap();

    let counters = follower.sublevel("counters").unwrap();
    let swapped = counters
        .compare_and_swap("n", None::<&[u8]>, Some("1"))
        .await
        .unwrap();
    assert_eq!(swapped, Ok(()));
    let total = counters
        .transaction(|tx| async move {
            let n: u32 = String::from_utf8(tx.get("n").await?.unwrap_or_default())
                .unwrap()
                .parse()
                .unwrap_or(0);
            tx.put("n", (n + 1).to_string());
            tx.put("m", "x");
            let seen = tx.iter(IterOptions::default()).await?;
            Ok::<_, Error>(seen.into_iter().map(|e| e.key).collect::<Vec<_>>())
        })
        .await
        .unwrap();
    assert_eq!(total, vec![b"m".to_vec(), b"n".to_vec()]);
    assert_eq!(
        leader.get("!counters!n").await.unwrap(),
        Some(b"2".to_vec())
    );
    assert_eq!(leader.get("n").await.unwrap(), None);
    assert_eq!(leader.get("alice").await.unwrap(), Some(b"root's".to_vec()));
    // A transaction in a sublevel conflicts on its own keys: a write of another
    // process into the range it read makes it run again.
    let runs = std::sync::atomic::AtomicU32::new(0);
    let listed = counters
        .transaction(|tx| {
            let (leader, runs) = (leader.clone(), &runs);
            async move {
                let seen = tx.iter(IterOptions::default()).await?;
                if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    leader.sublevel("counters")?.put("o", "new").await?;
                }
                tx.put("count", seen.len().to_string());
                Ok::<_, Error>(seen.len())
            }
        })
        .await
        .unwrap();
    assert_eq!(
        (listed, runs.load(std::sync::atomic::Ordering::SeqCst)),
        (3, 2)
    );
}

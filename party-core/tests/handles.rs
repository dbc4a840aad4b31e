//! Several handles on one directory within one process: the fast checks of the API. The
//! real-process tests live in the workspace's `tests/` crate.

use party_core::{open, BatchOp, IterOptions, KeyRange, Options, Role};

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

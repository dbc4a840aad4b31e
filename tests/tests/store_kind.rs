//! One store per data directory: a handle configured for another store never leads from
//! an empty one of its own (which made the data seem lost).

#![cfg(feature = "sled")]

use party_core::{open, BackendKind, Error, Options, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_for_another_store_cannot_take_over_and_hides_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let fjall = open(dir.path(), Options::default().backend(BackendKind::Fjall))
        .await
        .unwrap();
    assert_eq!(fjall.ready().await.unwrap(), Role::Leader);
    fjall.put("k", "v").await.unwrap();
    let sled = open(dir.path(), Options::default().backend(BackendKind::Sled))
        .await
        .unwrap();
    assert_eq!(sled.ready().await.unwrap(), Role::Follower);
    // The leader goes: the sled handle may not lead from an empty sled store.
    fjall.close().await.unwrap();
    let got = sled.get("k").await;
    assert!(
        matches!(&got, Err(Error::ElectionFailed(cause))
            if matches!(cause.as_ref(), Error::WrongBackend { found: BackendKind::Fjall, wanted: BackendKind::Sled })),
        "{got:?}"
    );
    assert!(
        !dir.path().join("sled").exists(),
        "no empty sled store made"
    );
    sled.close().await.unwrap();

    let again = open(dir.path(), Options::default().backend(BackendKind::Fjall))
        .await
        .unwrap();
    assert_eq!(again.get("k").await.unwrap(), Some(b"v".to_vec()));
}

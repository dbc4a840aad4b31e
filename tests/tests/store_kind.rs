//! One store per data directory: a handle configured for another store is refused by the
//! leader, and never leads from an empty store of its own (which made the data seem lost).

#![cfg(feature = "sled")]

use party_core::{open, BackendKind, Error, Options, Role};

fn wrong_backend(error: &Error) -> bool {
    matches!(
        error,
        Error::WrongBackend {
            found: BackendKind::Fjall,
            wanted: BackendKind::Sled
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_for_another_store_is_refused_and_cannot_take_over() {
    let dir = tempfile::tempdir().unwrap();
    let fjall = open(dir.path(), Options::default().backend(BackendKind::Fjall))
        .await
        .unwrap();
    assert_eq!(fjall.ready().await.unwrap(), Role::Leader);
    fjall.put("k", "v").await.unwrap();
    let follower = open(dir.path(), Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    assert_eq!(follower.status().await.unwrap().backend, BackendKind::Fjall);

    // The leader refuses a sled handle at its hello: it never follows, and each of its
    // operations fails with the reason.
    let sled = open(dir.path(), Options::default().backend(BackendKind::Sled))
        .await
        .unwrap();
    let ready = sled.ready().await;
    assert!(ready.as_ref().is_err_and(wrong_backend), "{ready:?}");
    let got = sled.get("k").await;
    assert!(got.as_ref().is_err_and(wrong_backend), "{got:?}");
    assert_eq!(follower.get("k").await.unwrap(), Some(b"v".to_vec()));

    // The leader goes: the sled handle may not lead from an empty sled store.
    fjall.close().await.unwrap();
    follower.close().await.unwrap();
    let got = sled.get("k").await;
    assert!(
        matches!(&got, Err(Error::ElectionFailed(cause)) if wrong_backend(cause)),
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

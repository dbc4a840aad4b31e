#![cfg(not(loom))]
//! Each cause a caller can act on arrives as its own variant, the same on the leader's own
//! handle and on a follower, with the underlying error as its source where there is one.

use std::error::Error as _;
use std::time::Duration;

use party_core::{
    open, BackendKind, BatchOp, ChangeRetention, Error, IterOptions, Json, KeyRange, Limits,
    Options, Role, Utf8,
};

/// The longest key party stores in fjall (fjall's 65 535 bytes less party's prefix).
const FJALL_MAX_KEY: u64 = 65_534;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_the_stores_limit_is_key_too_large_on_the_leader_and_on_a_follower() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().backend(BackendKind::Fjall);
    let leader = open(dir.path(), options.clone()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir.path(), options).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    let long = vec![b'k'; FJALL_MAX_KEY as usize + 1];
    for db in [&leader, &follower] {
        let put = db.put(&long, "v").await.unwrap_err();
        assert!(
            matches!(put, Error::KeyTooLarge { len, max } if len == FJALL_MAX_KEY + 1 && max == FJALL_MAX_KEY),
            "{put:?}"
        );
        // A batch fails whole: its good key is not written either.
        let ops = vec![
            BatchOp::Put {
                key: b"good".to_vec(),
                value: b"v".to_vec(),
            },
            BatchOp::Put {
                key: long.clone(),
                value: b"v".to_vec(),
            },
        ];
        let batch = db.batch(ops).await.unwrap_err();
        assert!(matches!(batch, Error::KeyTooLarge { .. }), "{batch:?}");
        assert_eq!(db.get("good").await.unwrap(), None);
    }
    // The longest allowed key still goes in, from either handle.
    let longest = vec![b'k'; FJALL_MAX_KEY as usize];
    follower.put(&longest, "v").await.unwrap();
    assert_eq!(leader.get(&longest).await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_by_another_program_is_locked_and_named_as_the_source() {
    let held = held_store().await;
    let (db, store) = (&held.db, &held.store);
    let failed = db.ready().await.unwrap_err();
    let Error::ElectionFailed(cause) = &failed else {
        panic!("{failed:?}");
    };
    assert!(
        matches!(cause.as_ref(), Error::Locked { path } if path == store),
        "{cause:?}"
    );
    let source = failed.source().expect("the cause is the source");
    assert_eq!(source.to_string(), cause.to_string());
}

/// A handle on a directory whose store another program holds open (outside party's
/// election lock): it tries to open it for 2 s, then its election fails.
struct HeldStore<Held> {
    db: party_core::Db,
    /// The store's path.
    store: std::path::PathBuf,
    _held: Held,
    _dir: tempfile::TempDir,
}

async fn held_store() -> HeldStore<impl Sized> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    let store = path.join(BackendKind::Fjall.name());
    let held = BackendKind::Fjall.open(&store).unwrap();
    let db = open(&path, Options::default().backend(BackendKind::Fjall))
        .await
        .unwrap();
    HeldStore {
        db,
        store,
        _held: held,
        _dir: dir,
    }
}

/// What waits on a handle whose election fails (a request, an iterator's entries, a
/// subscription's start) fails with the election's cause, not a bare election failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_waits_on_a_failing_election_fails_with_its_cause() {
    let held = held_store().await;
    let (db, store) = (&held.db, &held.store);
    // Issued while the handle still tries to open the store (for up to 2 s).
    let get = tokio::spawn(db.get("k"));
    let mut iter = db.iter(IterOptions::default()).await.unwrap();
    let next = tokio::spawn(async move { iter.next().await });
    let watch = tokio::spawn({
        let db = db.clone();
        async move { db.watch(KeyRange::all()).await.map(drop) }
    });
    let locked = |error: &Error| {
        matches!(error, Error::ElectionFailed(cause)
            if matches!(cause.as_ref(), Error::Locked { path } if path == store))
    };
    let failed = db.ready().await.unwrap_err();
    assert!(locked(&failed), "{failed:?}");
    let got = get.await.unwrap().unwrap_err();
    assert!(locked(&got), "get: {got:?}");
    let entry = next
        .await
        .unwrap()
        .expect("an error, not the end")
        .unwrap_err();
    assert!(locked(&entry), "iterator: {entry:?}");
    let started = watch.await.unwrap().unwrap_err();
    assert!(locked(&started), "watch: {started:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_codec_cannot_decode_keeps_the_decoders_error_as_source() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Options::default()).await.unwrap();
    db.put("n", "not json").await.unwrap();
    let error = db
        .with_codec(Json::<u32>::default())
        .get("n")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Codec(_)), "{error:?}");
    let source = error.source().expect("the decoder's error is the source");
    assert!(source.is::<serde_json::Error>(), "{source:?}");
    // Read among others, the value is an error too, not an entry left out.
    db.put("m", "7").await.unwrap();
    let entries = db
        .with_codec(Json::<u32>::default())
        .entries(IterOptions::default())
        .await;
    assert!(matches!(entries, Err(Error::Codec(_))), "{entries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_is_not_utf8_is_a_codec_error_not_a_mangled_string() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), Options::default()).await.unwrap();
    db.put("bytes", [0x66, 0x6f, 0xff, 0x6f]).await.unwrap();
    db.put("text", "fo\u{e9}o").await.unwrap();
    let strings = db.with_codec(Utf8);
    assert_eq!(
        strings.get("text").await.unwrap().as_deref(),
        Some("fo\u{e9}o")
    );
    let error = strings.get("bytes").await.unwrap_err();
    assert!(matches!(error, Error::Codec(_)), "{error:?}");
    let source = error.source().expect("the decoder's error is the source");
    assert!(source.is::<std::string::FromUtf8Error>(), "{source:?}");
}

/// Every setter chains, and what it set reads back from the fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_built_by_chained_setters() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("elsewhere.sock");
    let limits = Limits::default()
        .max_frame_len(1 << 20)
        .max_connections(8)
        .max_in_flight(16)
        .max_iterators(4)
        .max_watches(3)
        .min_free_space(0);
    let retention = ChangeRetention {
        groups: 1000,
        bytes: 1 << 20,
    };
    let options = Options::default()
        .backend(BackendKind::Fjall)
        .retry(false)
        .request_timeout(Some(Duration::from_secs(30)))
        .iter_window(2)
        .iter_window_bytes(1 << 16)
        .socket_path(&socket)
        .limits(limits)
        .transaction_attempts(5)
        .dedup_retention(Duration::from_secs(3600))
        .change_feed(true)
        .change_retention(retention)
        .watch_window(3)
        .spin(Some(Duration::from_micros(50)));
    assert!(!options.retry);
    assert_eq!(options.request_timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        (options.iter_window, options.iter_window_bytes),
        (2, 1 << 16)
    );
    assert_eq!(options.limits.max_watches, 3);
    assert_eq!(options.transaction_attempts, 5);
    assert_eq!(options.dedup_retention, Duration::from_secs(3600));
    assert!(options.change_feed);
    assert_eq!(options.change_retention, retention);
    assert_eq!(options.watch_window, 3);
    assert_eq!(options.spin, Some(Duration::from_micros(50)));
    assert_eq!(options.limits.max_frame_len, 1 << 20);
    assert_eq!(
        (options.limits.max_connections, options.limits.max_in_flight),
        (8, 16)
    );
    assert_eq!(
        (options.limits.max_iterators, options.limits.min_free_space),
        (4, 0)
    );
    let db = open(dir.path(), options).await.unwrap();
    assert_eq!(db.ready().await.unwrap(), Role::Leader);
    assert_eq!(db.socket_path(), socket);
    for key in ["a", "b", "c", "d", "e"] {
        db.put(key, key).await.unwrap();
    }
    // A window of 2 still reads every entry the options select.
    let range = KeyRange::all().gt("a").lte("d");
    let options = IterOptions::default()
        .range(range)
        .reverse(true)
        .limit(Some(2))
        .values(false);
    let entries = db.iter(options).await.unwrap().collect().await.unwrap();
    let keys: Vec<_> = entries.iter().map(|entry| entry.key.as_slice()).collect();
    assert_eq!(keys, [b"d", b"c"]);
    assert!(entries.iter().all(|entry| entry.value.is_empty()));
}

/// A leader that forgets an iterator (here a fake one that answers its opening with "not
/// found") fails it with `IteratorGone`, which says to open a new one.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iterator_the_leader_no_longer_knows_is_gone() {
    use party_proto::wire::{
        encode_frame, ClientMessage, FrameDecoder, LeaderLimits, ProtocolId, ServerMessage, Welcome,
    };
    use party_proto::ErrorCode;
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let _lock = party_core::lock::ElectionLock::try_acquire(&dir)
        .unwrap()
        .expect("the directory is free");
    let listener = std::os::unix::net::UnixListener::bind(dir.join("party.sock")).unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut decoder = FrameDecoder::new(1 << 20);
        let mut buffer = [0u8; 4096];
        loop {
            let read = stream.read(&mut buffer).unwrap();
            if read == 0 {
                return;
            }
            let mut input = &buffer[..read];
            while let Some(message) = decoder.decode::<ClientMessage>(&mut input).unwrap() {
                let reply = match message {
                    ClientMessage::Hello(_) => ServerMessage::Welcome(Welcome {
                        protocol: ProtocolId::CURRENT,
                        leader_pid: std::process::id(),
                        term: 1,
                        store: "fjall".into(),
                        limits: LeaderLimits {
                            max_frame_len: 1 << 20,
                            max_in_flight: 16,
                            max_iter_credits: 16,
                        },
                    }),
                    ClientMessage::IterOpen { iter, .. } => ServerMessage::IterFailed {
                        iter,
                        error: ErrorCode::NotFound,
                    },
                    _ => continue,
                };
                let mut frame = Vec::new();
                encode_frame(&reply, 1 << 20, &mut frame).unwrap();
                stream.write_all(&frame).unwrap();
            }
        }
    });
    let db = open(&dir, Options::default()).await.unwrap();
    assert_eq!(db.ready().await.unwrap(), Role::Follower);
    let mut iter = db.iter(IterOptions::default()).await.unwrap();
    let gone = iter.next().await.unwrap().unwrap_err();
    assert!(matches!(gone, Error::IteratorGone), "{gone:?}");
}

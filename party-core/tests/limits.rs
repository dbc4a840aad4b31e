#![cfg(not(loom))]
//! Each limit of `Options::limits`, gone past through the public API: a typed error for that
//! request, iterator or connection, and the leader goes on serving everyone else.

use std::time::Duration;

use party_core::{
    open, Change, Db, Error, IterOptions, KeyRange, Limit, Limits, Options, Role, Watch,
    MIN_FRAME_LEN,
};

async fn leader_with(dir: &std::path::Path, limits: Limits) -> Db {
    let options = Options::default().limits(limits);
    let leader = open(dir, options).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    leader
}

/// A leader and a follower, both with `limits`.
async fn both_with(dir: &std::path::Path, limits: Limits) -> (Db, Db) {
    let leader = leader_with(dir, limits.clone()).await;
    let options = Options::default().limits(limits);
    let follower = open(dir, options).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    (leader, follower)
}

/// Puts three iterator windows of entries; how many.
async fn past_a_window(db: &Db) -> usize {
    let entries = 3 * Options::default().iter_window as usize;
    let puts: Vec<_> = (0..entries)
        .map(|n| db.put(format!("k{n:05}"), "v"))
        .collect();
    for put in puts {
        put.await.unwrap();
    }
    entries
}

async fn follower(dir: &std::path::Path) -> Db {
    let follower = open(dir, Options::default()).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    follower
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_limit_is_refused_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_connections(1);
    let leader = leader_with(dir.path(), limits).await;
    let first = follower(dir.path()).await;
    let second = open(dir.path(), Options::default()).await.unwrap();
    let refused = second.ready().await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::LimitReached {
                limit: Limit::Connections,
                max: 1
            }
        ),
        "{refused:?}"
    );
    first.put("k", "v").await.unwrap();
    assert_eq!(leader.get("k").await.unwrap(), Some(b"v".to_vec()));
    // A slot that frees up is taken by the refused handle, which keeps trying.
    first.close().await.unwrap();
    let mut role = second.watch_role();
    let welcomed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        role.wait_for(|state| state.role == Role::Follower),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    assert!(welcomed, "the refused handle never got in");
    assert_eq!(second.get("k").await.unwrap(), Some(b"v".to_vec()));
}

/// A peer that connects and never says hello (a stuck process, or one that is no party
/// handle) holds its seat only until the handshake's time is up: the leader hangs up on it,
/// and a handle refused meanwhile gets in.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_hello_is_hung_up_on_and_gives_its_seat_back() {
    use std::io::Read;

    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_connections(1);
    let leader = leader_with(dir.path(), limits).await;
    let mut silent = std::os::unix::net::UnixStream::connect(leader.socket_path()).unwrap();
    let second = open(dir.path(), Options::default()).await.unwrap();
    let refused = second.ready().await.unwrap_err();
    assert!(matches!(refused, Error::LimitReached { .. }), "{refused:?}");
    // The read timeout only bounds a failure: the handshake's time is 10 s.
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let hung_up = tokio::task::spawn_blocking(move || silent.read_to_end(&mut Vec::new()))
        .await
        .unwrap();
    assert!(
        hung_up.is_ok(),
        "the silent peer kept its seat: {hung_up:?}"
    );
    let mut role = second.watch_role();
    let welcomed = tokio::time::timeout(
        Duration::from_secs(10),
        role.wait_for(|state| state.role == Role::Follower),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    assert!(welcomed, "the refused handle never got in");
}

/// A handle refused by its leader that then takes over is ready: the refusal was the last
/// leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_handle_that_takes_over_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_connections(1);
    let leader = leader_with(dir.path(), limits).await;
    let first = follower(dir.path()).await;
    let second = open(dir.path(), Options::default()).await.unwrap();
    assert!(second.ready().await.is_err(), "refused");
    first.close().await.unwrap();
    leader.close().await.unwrap();
    let mut role = second.watch_role();
    let led = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        role.wait_for(|state| state.role == Role::Leader),
    )
    .await
    .is_ok_and(|changed| changed.is_ok());
    assert!(led, "the refused handle never took over");
    assert_eq!(second.ready().await.unwrap(), Role::Leader);
}

/// The leader tells its in-flight cap in the welcome: a follower holds what goes past it
/// until earlier requests are answered, so a burst is never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_in_flight(4);
    let leader = leader_with(dir.path(), limits).await;
    leader.put("k", "v").await.unwrap();
    let follower = follower(dir.path()).await;
    for db in [&follower, &leader] {
        let burst: Vec<_> = (0..200).map(|n| db.put(format!("b{n}"), "x")).collect();
        for put in burst {
            put.await.unwrap();
        }
    }
    assert_eq!(follower.get("k").await.unwrap(), Some(b"v".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iterator_past_the_limit_fails_and_the_open_ones_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_iterators(2);
    let leader = leader_with(dir.path(), limits).await;
    // More than an iterator's window, so the first two stay open on the leader.
    let entries = past_a_window(&leader).await;
    let follower = follower(dir.path()).await;
    let mut open_ones = Vec::new();
    for _ in 0..2 {
        let mut iter = follower.iter(IterOptions::default()).await.unwrap();
        assert!(iter.next().await.unwrap().is_ok());
        open_ones.push(iter);
    }
    let mut third = follower.iter(IterOptions::default()).await.unwrap();
    let refused = third.next().await.unwrap().unwrap_err();
    assert!(
        matches!(
            refused,
            Error::LimitReached {
                limit: Limit::Iterators,
                max: 2
            }
        ),
        "{refused:?}"
    );
    for iter in open_ones {
        assert_eq!(iter.collect().await.unwrap().len(), entries - 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_frame_limit_is_refused_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_frame_len(1024);
    let (leader, follower) = both_with(dir.path(), limits).await;
    for db in [&leader, &follower] {
        let too_large = db.put("big", vec![0u8; 2000]).await.unwrap_err();
        assert!(
            matches!(too_large, Error::TooLarge { max: 1024, len } if len > 2000),
            "{too_large:?}"
        );
        db.put("small", vec![1u8; 100]).await.unwrap();
    }
    assert_eq!(leader.get("big").await.unwrap(), None);
    assert_eq!(follower.get("small").await.unwrap(), Some(vec![1u8; 100]));
}

/// A follower whose own limit is larger sends a frame over the leader's: that request fails
/// with a typed error (not a reconnect loop), and the follower goes on with smaller ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_leaders_limit_fails_with_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_frame_len(1024);
    let leader = leader_with(dir.path(), limits).await;
    let follower = follower(dir.path()).await;
    let put = follower.put("big", vec![0u8; 4096]);
    let too_large = tokio::time::timeout(std::time::Duration::from_secs(10), put)
        .await
        .expect("the big put was re-sent forever instead of failing")
        .unwrap_err();
    assert!(
        matches!(too_large, Error::TooLarge { max: 1024, .. }),
        "{too_large:?}"
    );
    follower.put("small", "fits").await.unwrap();
    assert_eq!(leader.get("small").await.unwrap(), Some(b"fits".to_vec()));
    assert_eq!(leader.get("big").await.unwrap(), None);
}

/// Two values that fit a frame each but not together: `get_many` of both fails alone with
/// `ReplyTooLarge` (it used to make the leader hang up, the follower re-send, forever), and
/// a scan over them sends one per frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_frame_limit_fails_alone_on_both_roles() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_frame_len(1 << 20);
    let (leader, follower) = both_with(dir.path(), limits).await;
    follower.put("a", vec![1u8; 700 * 1024]).await.unwrap();
    follower.put("b", vec![2u8; 700 * 1024]).await.unwrap();
    for db in [&follower, &leader] {
        let both =
            tokio::time::timeout(std::time::Duration::from_secs(10), db.get_many(&["a", "b"]))
                .await
                .expect("get_many of two big values never answered");
        assert!(
            matches!(both, Err(Error::ReplyTooLarge { max, len }) if max == 1 << 20 && len > 1400 * 1024),
            "{both:?}"
        );
        let one = db.get_many(&["b"]).await.unwrap();
        assert_eq!(one, [Some(vec![2u8; 700 * 1024])]);
        let scan = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            db.iter(IterOptions::default()).await.unwrap().collect(),
        )
        .await
        .expect("a scan of big values never finished")
        .unwrap();
        let keys: Vec<_> = scan.iter().map(|entry| entry.key.clone()).collect();
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(scan[1].value, vec![2u8; 700 * 1024]);
    }
    assert_eq!(follower.role(), Role::Follower, "the connection stayed up");
}

/// An iterator window over the leader's credit cap (4096) is cut to it; the scan used to
/// hang waiting for entries the leader would never send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iterator_window_over_the_credit_cap_reads_everything_on_both_roles() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().iter_window(10_000);
    let leader = open(dir.path(), options.clone()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir.path(), options).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    let puts: Vec<_> = (0..6000)
        .map(|n| leader.put(format!("k{n:05}"), "v"))
        .collect();
    for put in puts {
        put.await.unwrap();
    }
    for db in [&leader, &follower] {
        let scan = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            db.iter(IterOptions::default()).await.unwrap().collect(),
        )
        .await
        .expect("the scan hung")
        .unwrap();
        assert_eq!(scan.len(), 6000);
    }
}

/// Settings no handle could work with are refused at `open`, before anything is opened:
/// a message limit too small for every error to fit, no request in flight (every one would
/// wait forever), a dedup retention under 2 ms (every write would fail `OutcomeUnknown`).
/// At the smallest allowed values, both roles serve (reads: a write would have a
/// millisecond to reach the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_no_handle_could_work_with_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let refused = [
        (
            Options::default().limits(Limits::default().max_frame_len(MIN_FRAME_LEN - 1)),
            "limits.max_frame_len",
        ),
        (
            Options::default().limits(Limits::default().max_in_flight(0)),
            "limits.max_in_flight",
        ),
        (
            Options::default().request_timeout(Some(Duration::ZERO)),
            "request_timeout",
        ),
        (
            Options::default().dedup_retention(Duration::ZERO),
            "dedup_retention",
        ),
        (
            Options::default().dedup_retention(Duration::from_micros(1999)),
            "dedup_retention",
        ),
    ];
    for (options, name) in refused {
        let error = open(dir.path(), options).await.err();
        assert!(
            matches!(error, Some(Error::InvalidOption { option, .. }) if option == name),
            "{name}: {error:?}"
        );
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a refused open left files behind"
    );
    let smallest = Options::default()
        .limits(
            Limits::default()
                .max_frame_len(MIN_FRAME_LEN)
                .max_in_flight(1),
        )
        .dedup_retention(Duration::from_millis(2));
    let leader = open(dir.path(), smallest.clone()).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    let follower = open(dir.path(), smallest).await.unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    for db in [&leader, &follower] {
        let gets: Vec<_> = (0..20).map(|_| db.get("k")).collect();
        for get in gets {
            assert_eq!(get.await.unwrap(), None);
        }
    }
}

/// A request timeout past what the clock can count (`Duration::MAX`, the usual "never")
/// waits as `None` does, on the leader and on a follower: its deadline used to overflow
/// the driver's clock, whose task then panicked and left the handle `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_past_the_clocks_reach_never_fires() {
    let dir = tempfile::tempdir().unwrap();
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let options = Options::default().request_timeout(Some(timeout));
        let leader = open(dir.path(), options.clone()).await.unwrap();
        assert_eq!(leader.ready().await.unwrap(), Role::Leader);
        let follower = open(dir.path(), options).await.unwrap();
        assert_eq!(follower.ready().await.unwrap(), Role::Follower);
        for (n, db) in [&leader, &follower].into_iter().enumerate() {
            let key = format!("k{n}");
            db.put(&key, "v").await.unwrap();
            assert_eq!(db.get(&key).await.unwrap().as_deref(), Some(&b"v"[..]));
        }
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    }
}

/// An iterator whose opening the caller gave up on (its future dropped unpolled, or after
/// one poll), or dropped before its end, is closed, on the leader too: it does not hold
/// one of the connection's places among the leader's iterators for the rest of the
/// handle's life.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iterator_opening_given_up_on_holds_no_place_on_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits::default().max_iterators(2);
    let leader = leader_with(dir.path(), limits).await;
    // More than an iterator's window, so that one left open stays open on the leader.
    let entries = past_a_window(&leader).await;
    let follower = follower(dir.path()).await;
    for _ in 0..4 {
        // Given up on before the driver answered, and (most likely) after.
        drop(follower.iter(IterOptions::default()));
        let mut polled = Box::pin(follower.iter(IterOptions::default()));
        let _ = poll_once(polled.as_mut());
        drop(polled);
        // Given up on once the driver has answered: it opened the iterator for a caller
        // still there, whose answer is left untaken.
        let answered = follower.iter(IterOptions::default());
        follower.get("k00000").await.unwrap();
        drop(answered);
        // Opened, read from, and dropped before its end.
        let mut read_from = follower.iter(IterOptions::default()).await.unwrap();
        assert!(read_from.next().await.unwrap().is_ok());
        drop(read_from);
    }
    let iters = [
        follower.iter(IterOptions::default()).await.unwrap(),
        follower.iter(IterOptions::default()).await.unwrap(),
    ];
    for iter in iters {
        assert_eq!(iter.collect().await.unwrap().len(), entries);
    }
}

/// A leader that keeps the change feed, refusing a connection's third subscription.
async fn leader_with_two_watches(dir: &std::path::Path) -> Db {
    let options = Options::default()
        .limits(Limits::default().max_watches(2))
        .change_feed(true);
    let leader = open(dir, options).await.unwrap();
    assert_eq!(leader.ready().await.unwrap(), Role::Leader);
    leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_past_the_limit_fails_the_open_ones_see_changes_a_dropped_one_frees_its_place(
) {
    let dir = tempfile::tempdir().unwrap();
    let leader = leader_with_two_watches(dir.path()).await;
    let follower = follower(dir.path()).await;
    let mut open_ones = [
        follower.watch(KeyRange::all()).await.unwrap(),
        follower.watch(KeyRange::all()).await.unwrap(),
    ];
    let refused = follower.watch(KeyRange::all()).await.err();
    assert!(
        matches!(
            refused,
            Some(Error::LimitReached {
                limit: Limit::Watches,
                max: 2
            })
        ),
        "{refused:?}"
    );
    leader.put("k", "v").await.unwrap();
    for watch in &mut open_ones {
        assert_eq!(next_key(watch).await, b"k");
    }
    // A subscription dropped frees its place: its close goes before the next opening.
    let [kept, dropped] = open_ones;
    drop(dropped);
    let opened = follower.watch(KeyRange::all()).await.unwrap();
    leader.put("l", "v").await.unwrap();
    for mut watch in [kept, opened] {
        assert_eq!(next_key(&mut watch).await, b"l");
    }
}

/// The key of the next change `watch` sees, a put, failing the test if none comes in time.
async fn next_key(watch: &mut Watch) -> Vec<u8> {
    let change = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change in time")
        .expect("the subscription goes on")
        .unwrap();
    let Change::Put { key, .. } = change else {
        panic!("a put: {change:?}")
    };
    key
}

/// A subscription whose opening the caller gave up on (its future dropped unpolled, after
/// one poll, or after a round trip) is closed on the leader too: it does not
/// hold one of the connection's places among the leader's subscriptions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_opening_given_up_on_holds_no_place_on_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let leader = leader_with_two_watches(dir.path()).await;
    let follower = follower(dir.path()).await;
    for _ in 0..4 {
        drop(follower.watch(KeyRange::all()));
        let mut polled = Box::pin(follower.watch(KeyRange::all()));
        let _ = poll_once(polled.as_mut());
        drop(polled);
        let mut answered = Box::pin(follower.watch(KeyRange::all()));
        let _ = poll_once(answered.as_mut());
        follower.get("k").await.unwrap();
        drop(answered);
    }
    // An opening given up on before its answer is closed when the answer comes, which
    // may be after the next request's: until then the leader may still count it.
    let mut watches = [
        refused_while_closing(&follower).await,
        refused_while_closing(&follower).await,
    ];
    leader.put("k", "v").await.unwrap();
    for watch in &mut watches {
        assert_eq!(next_key(watch).await, b"k");
    }
}

/// A subscription opened on `follower` once the openings given up on have closed: asked
/// again after each round trip while the leader refuses it, for up to 10 s.
async fn refused_while_closing(follower: &Db) -> Watch {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match follower.watch(KeyRange::all()).await {
            Ok(watch) => return watch,
            Err(Error::LimitReached { .. }) if tokio::time::Instant::now() < deadline => {
                follower.get("k").await.unwrap();
            }
            Err(error) => panic!("the openings given up on still hold their places: {error:?}"),
        }
    }
}

fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// An iterator holds the operations issued before it and none issued after, through a
/// follower whose requests wait past the leader's in-flight cap, and through one whose
/// leader has not welcomed it yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iterator_holds_what_was_issued_before_it_whatever_waited() {
    let dir = tempfile::tempdir().unwrap();
    let leader = leader_with(dir.path(), Limits::default().max_in_flight(4)).await;
    let follower = follower(dir.path()).await;
    let puts: Vec<_> = (0..50)
        .map(|n| follower.put(format!("k{n:02}"), "v"))
        .collect();
    let iter = follower.iter(IterOptions::default());
    let after = follower.put("later", "v");
    for put in puts {
        put.await.unwrap();
    }
    after.await.unwrap();
    let keys: Vec<_> = iter.await.unwrap().collect().await.unwrap();
    assert_eq!(
        keys.len(),
        50,
        "the 50 puts issued before it, not the one after"
    );

    let unwelcomed = open(dir.path(), Options::default()).await.unwrap();
    let iter = unwelcomed.iter(IterOptions::default());
    let after = unwelcomed.put("latest", "v");
    after.await.unwrap();
    let keys: Vec<_> = iter.await.unwrap().collect().await.unwrap();
    assert!(
        !keys.iter().any(|entry| entry.key == b"latest"),
        "a put issued after the iterator"
    );
    drop(leader);
}

/// A follower whose own message limit is smaller than its leader's takes the leader's
/// answers and iterator data, which the leader sizes by its own limit: the follower's
/// limit bounds what it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_with_a_smaller_message_limit_reads_what_its_leader_sends() {
    let dir = tempfile::tempdir().unwrap();
    let leader = leader_with(dir.path(), Limits::default()).await;
    let small = Limits::default().max_frame_len(64 * 1024);
    let follower = open(dir.path(), Options::default().limits(small))
        .await
        .unwrap();
    assert_eq!(follower.ready().await.unwrap(), Role::Follower);
    for n in 0..50 {
        leader
            .put(format!("k{n:02}"), vec![1u8; 4096])
            .await
            .unwrap();
    }
    leader.put("big", vec![2u8; 100 * 1024]).await.unwrap();
    assert_eq!(
        follower.get("big").await.unwrap().map(|value| value.len()),
        Some(100 * 1024)
    );
    let entries = follower
        .iter(IterOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(entries.len(), 51);
    assert_eq!(follower.role(), Role::Follower);
    let too_large = follower.put("big2", vec![3u8; 100 * 1024]).await;
    assert!(
        matches!(too_large, Err(Error::TooLarge { max: 65536, .. })),
        "{too_large:?}"
    );
}

/// Every default is the one the docs (and the README's tables) give (the setters:
/// `options_are_built_by_chained_setters`).
#[test]
fn every_default_is_the_documented_one() {
    const MIB: u64 = 1 << 20;
    let limits = Limits::default();
    assert_eq!(
        (
            u64::from(limits.max_frame_len),
            limits.max_connections,
            limits.max_in_flight,
            limits.max_iterators,
            limits.max_watches,
            limits.min_free_space,
        ),
        (64 * MIB, 1024, 4096, 256, 64, 64 * MIB)
    );
    let options = Options::default();
    assert!(options.retry);
    assert_eq!(options.request_timeout, None);
    assert_eq!(
        (options.iter_window, options.iter_window_bytes),
        (4096, 4 * MIB)
    );
    assert_eq!(options.dedup_retention, Duration::from_secs(24 * 3600));
    assert_eq!(options.transaction_attempts, 32);
    assert!(!options.change_feed);
    assert_eq!(
        (
            options.change_retention.groups,
            options.change_retention.bytes
        ),
        (100_000, 64 * MIB)
    );
    assert_eq!(options.watch_window, 64);
    assert_eq!(options.spin, None);
}

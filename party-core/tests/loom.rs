//! loom models of the memory party-core shares between threads (`src/sync.rs`).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p party-core --release --test loom`.
#![cfg(loom)]

use std::ops::ControlFlow;

use loom::sync::mpsc::channel;
use loom::thread;
use party_core::sync::{rounds, ConnIds, Followers};

#[test]
fn connection_numbers_are_unique_across_threads() {
    loom::model(|| {
        let ids = ConnIds::default();
        let other = ids.clone();
        let drawn = thread::spawn(move || [other.next(), other.next()]);
        let mine = ids.next();
        let theirs = drawn.join().unwrap();
        assert!(!theirs.contains(&mine));
        assert_ne!(theirs[0], theirs[1]);
    });
}

#[test]
fn the_follower_count_returns_to_zero_whatever_the_interleaving() {
    loom::model(|| {
        let followers = Followers::default();
        let shared = followers.clone();
        let connection = thread::spawn(move || {
            let _joined = shared.join();
        });
        let here = followers.join();
        assert!(followers.count() >= 1, "this follower is counted");
        drop(here);
        connection.join().unwrap();
        assert_eq!(followers.count(), 0);
    });
}

/// Two senders, one receiver taking rounds of at most 2. (loom's channel does not model
/// the senders going away, so the model stops once it has every job; std's channel ends
/// the real loop when the leader drops its queue.)
#[test]
fn the_store_intake_takes_every_job_once_in_order_in_bounded_rounds() {
    loom::model(|| {
        let (queue, jobs) = channel();
        let second = queue.clone();
        let producer = thread::spawn(move || {
            second.send(1).unwrap();
            second.send(2).unwrap();
        });
        queue.send(0).unwrap();
        let mut seen = Vec::new();
        rounds(&jobs, 2, |round| {
            assert!(
                !round.is_empty() && round.len() <= 2,
                "round of {}",
                round.len()
            );
            seen.extend(round);
            if seen.len() >= 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        producer.join().unwrap();
        let position = |job| seen.iter().position(|j| *j == job).expect("a job was lost");
        assert_eq!(seen.len(), 3, "a job was taken twice: {seen:?}");
        assert!(
            position(1) < position(2),
            "one sender's jobs out of order: {seen:?}"
        );
        let _ = position(0);
    });
}

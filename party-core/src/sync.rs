//! The memory party-core shares between threads, behind a `cfg(loom)` shim (tokio's
//! pattern), so the loom models in `tests/loom.rs` check it under every interleaving.
//!
//! There is little of it by design: the driver owns the pending requests and the id
//! allocators of a handle alone, and hand-offs go through std and tokio channels. What is
//! ours: the connection numbers the accept loop and the driver draw from, the count of
//! connected followers (kept by connection tasks, read by the store thread), and the store
//! thread's intake loop.

use std::ops::ControlFlow;

#[cfg(loom)]
use loom::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    mpsc::Receiver,
    Arc,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{AtomicU64, AtomicUsize, Ordering},
    mpsc::Receiver,
    Arc,
};

/// Connection numbers, unique across every clone.
#[derive(Debug, Clone, Default)]
pub struct ConnIds(Arc<AtomicU64>);

impl ConnIds {
    pub fn next(&self) -> u64 {
        // Only uniqueness matters, not ordering with other memory.
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// How many followers are connected to the leader.
#[derive(Debug, Clone, Default)]
pub struct Followers(Arc<AtomicUsize>);

/// One connected follower; counted until dropped.
#[derive(Debug)]
pub struct Follower(Arc<AtomicUsize>);

impl Followers {
    pub fn join(&self) -> Follower {
        self.0.fetch_add(1, Ordering::Relaxed);
        Follower(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Feeds `round` with the jobs of `jobs` in the order sent: it waits for one job, takes
/// whatever else is already queued (at most `max` in all), and returns once every sender
/// is gone and the queue is empty, or when `round` says to stop.
pub fn rounds<T>(jobs: &Receiver<T>, max: usize, mut round: impl FnMut(Vec<T>) -> ControlFlow<()>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if round(batch).is_break() {
            return;
        }
    }
}

//! The memory party-core shares between threads, behind a `cfg(loom)` shim (tokio's
//! pattern), so the loom models in `tests/loom.rs` check it under every interleaving.
//!
//! There is little of it by design: the driver owns the pending requests and the id
//! allocators of a handle alone, and hand-offs go through std and tokio channels. What is
//! ours: the connection numbers the accept loop and the driver draw from, the count of
//! connected followers (kept by connection tasks, read by the store thread), the store
//! thread's intake loop, and the hand-off between a follower's driver and its link's writer
//! task.

use std::future::Future;
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

/// Where a follower's link writes: the socket to the leader.
pub trait Sink {
    /// Writes what the sink takes at once, without waiting; how many bytes that was.
    fn write_now(&mut self, bytes: &[u8]) -> usize;
    /// Writes all of `bytes`, waiting as needed; false when the sink failed.
    fn write_all(&mut self, bytes: &[u8]) -> impl Future<Output = bool>;
}

/// The writer's end of the queue the driver hands buffers over (first in, first out).
pub trait Handed {
    /// Waits for the next buffer; `None` once the driver is gone.
    fn next(&mut self) -> impl Future<Output = Option<Vec<u8>>>;
    /// The next buffer if one is queued already.
    fn queued(&mut self) -> Option<Vec<u8>>;
}

/// The hand-off between a follower's driver, which writes to the socket directly while the
/// socket takes the bytes at once, and the link's writer task, which writes out what it did
/// not take. Frames are never reordered or interleaved: the driver writes directly only
/// while the writer holds no buffer, and hands over everything else in order.
///
/// Counts the buffers handed to the writer and not yet written out. Only the driver hands
/// over (counts up); only the writer counts down, after writing.
#[derive(Debug, Clone, Default)]
pub struct Handover(Arc<AtomicUsize>);

impl Handover {
    /// The driver's side: sends the bytes (whole frames) in `out`, in order with everything
    /// sent before, and leaves `out` empty (its buffer kept when `sink` took it all). What
    /// the sink does not take at once goes to `hand`, which queues it for the writer.
    /// One thread only may send.
    #[inline]
    pub fn send(&self, out: &mut Vec<u8>, sink: &mut impl Sink, hand: impl FnOnce(Vec<u8>)) {
        if out.is_empty() {
            return;
        }
        // Only the sender hands buffers over, so once the writer has none left, writing here
        // cannot overtake it. Acquire: the writer's last write happens before this one.
        if self.0.load(Ordering::Acquire) == 0 {
            let sent = sink.write_now(out);
            out.drain(..sent);
        }
        if !out.is_empty() {
            // The queue orders the hand-off itself; the writer counts down only after
            // receiving the buffer, so the count cannot reach 0 before it.
            self.0.fetch_add(1, Ordering::Relaxed);
            hand(std::mem::take(out));
        }
    }

    /// The writer's side: writes out each buffer handed over, in order (those already
    /// queued together), until the queue ends or the sink fails.
    pub async fn write_handed(&self, sink: &mut impl Sink, handed: &mut impl Handed) {
        while let Some(mut bytes) = handed.next().await {
            let mut buffers = 1;
            while let Some(more) = handed.queued() {
                bytes.extend_from_slice(&more);
                buffers += 1;
            }
            if !sink.write_all(&bytes).await {
                return;
            }
            // Only once they are written. Release: pairs with the sender's Acquire.
            self.0.fetch_sub(buffers, Ordering::Release);
        }
    }
}

//! The memory party-core shares between threads, behind a `cfg(loom)` shim (tokio's
//! pattern), so the loom models in `tests/loom.rs` check it under every interleaving.
//!
//! There is little of it by design: the driver owns the pending requests and the id
//! allocators of a handle alone, and hand-offs go through std and tokio channels. What is
//! ours: the connection numbers the accept loop and the driver draw from, the count of
//! connected followers (kept by connection tasks, read by the store thread), the store
//! thread's intake (its queue, and the state a connection may take for small writes while
//! the thread has nothing to do), and the hand-off between a follower's driver and its
//! link's writer task.

use std::future::Future;
use std::ops::ControlFlow;

#[cfg(loom)]
use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    mpsc::{channel, Receiver, Sender},
    Arc, Mutex, MutexGuard,
};
#[cfg(not(loom))]
use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    mpsc::{channel, Receiver, Sender},
    Arc, Mutex, MutexGuard,
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

/// A queue of jobs for one thread, which works on a state of its own, `S`: a sender may
/// also carry a job out on its own thread while nothing sent is unfinished and no round is
/// under way ([`Intake::run_here`]), since nothing sent before it can then be overtaken.
pub struct Intake<T, S> {
    // Dropped before `jobs`: once the last sender is gone, the thread holds the only
    // reference to the state ([`IntakeEnd::into_state`]).
    shared: Arc<IntakeShared<S>>,
    jobs: Sender<T>,
}

// Not derived: `S` need not be `Clone`.
impl<T, S> Clone for Intake<T, S> {
    fn clone(&self) -> Self {
        Intake {
            shared: self.shared.clone(),
            jobs: self.jobs.clone(),
        }
    }
}

impl<T, S> std::fmt::Debug for Intake<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

struct IntakeShared<S> {
    /// Jobs sent and not yet carried out.
    unfinished: AtomicUsize,
    state: Mutex<S>,
    /// A job a sender ran panicked (caught there): the state is unknown.
    panicked: AtomicBool,
}

impl<S> IntakeShared<S> {
    fn state(&self) -> MutexGuard<'_, S> {
        // A job that panicked left the state unknown: the panic goes on here, on the
        // thread's side, however the first one was caught.
        let state = self
            .state
            .lock()
            .expect("a job on the intake's state panicked");
        self.check();
        state
    }

    fn check(&self) {
        assert!(
            !self.panicked.load(Ordering::Acquire),
            "a job on the intake's state panicked"
        );
    }
}

/// The thread's end of an [`Intake`].
pub struct IntakeEnd<T, S> {
    shared: Arc<IntakeShared<S>>,
    jobs: Receiver<T>,
}

impl<T, S> std::fmt::Debug for IntakeEnd<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeEnd").finish_non_exhaustive()
    }
}

/// A queue for a thread that works on `state`: the senders' end, and the thread's.
pub fn intake<T, S>(state: S) -> (Intake<T, S>, IntakeEnd<T, S>) {
    let shared = Arc::new(IntakeShared {
        unfinished: AtomicUsize::new(0),
        state: Mutex::new(state),
        panicked: AtomicBool::new(false),
    });
    let (jobs, taken) = channel();
    let end = IntakeEnd {
        shared: shared.clone(),
        jobs: taken,
    };
    (Intake { shared, jobs }, end)
}

impl<T, S> Intake<T, S> {
    /// Queues `job`; false once the thread's end is gone.
    pub fn send(&self, job: T) -> bool {
        // Counted before it can be taken, so that the count never misses a job queued.
        self.shared.unfinished.fetch_add(1, Ordering::AcqRel);
        let sent = self.jobs.send(job).is_ok();
        if !sent {
            self.shared.unfinished.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }

    /// Carries `job` (one job or several) out here with `run`, if every job sent before is
    /// done and no round is under way; otherwise gives it back (to be sent). A panic in
    /// `run` does not reach the caller (an async task, a handle's driver): the state is
    /// given up as if its thread had panicked, which it then does at its next job.
    pub fn run_here<J>(&self, job: J, run: impl FnOnce(&mut S, J)) -> Option<J> {
        if self.shared.unfinished.load(Ordering::Acquire) != 0
            || self.shared.panicked.load(Ordering::Acquire)
        {
            return Some(job);
        }
        match self.shared.state.try_lock() {
            Ok(mut state) => {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(&mut state, job);
                }));
                if ran.is_err() {
                    self.shared.panicked.store(true, Ordering::Release);
                }
                None
            }
            Err(_) => Some(job),
        }
    }
}

impl<T, S> IntakeEnd<T, S> {
    /// Feeds `round` with the state and the jobs in the order sent, as [`rounds`] does.
    pub fn rounds(&self, max: usize, mut round: impl FnMut(&mut S, Vec<T>) -> ControlFlow<()>) {
        rounds(&self.jobs, max, |jobs| {
            let count = jobs.len();
            let flow = round(&mut self.shared.state(), jobs);
            // Only once the round is over: until then a sender must not run a job itself.
            self.shared.unfinished.fetch_sub(count, Ordering::AcqRel);
            flow
        });
    }

    /// The state, once every [`Intake`] is gone (after [`IntakeEnd::rounds`] returned
    /// because they are): `None` if one is left.
    pub fn into_state(self) -> Option<S> {
        self.shared.check();
        let shared = Arc::try_unwrap(self.shared).ok()?;
        Some(
            shared
                .state
                .into_inner()
                .expect("a job on the intake's state panicked"),
        )
    }
}

/// The frames of one turn of a follower's link, as the hand-off moves them.
pub trait Frames {
    /// Bytes in all.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Empties them for the next turn.
    fn clear(&mut self);
    /// Takes them out, leaving an empty set for the next turn.
    fn take(&mut self) -> Self;
}

/// Bytes as a turn's frames, for the models and tests of the hand-off.
#[cfg(any(test, loom))]
impl Frames for Vec<u8> {
    fn len(&self) -> usize {
        self.len()
    }

    fn clear(&mut self) {
        self.clear();
    }

    fn take(&mut self) -> Self {
        std::mem::take(self)
    }
}

/// Where a follower's link writes: the socket to the leader.
pub trait Sink<F> {
    /// Writes what the sink takes at once of `frames` from byte `from` on, without
    /// waiting; how many bytes that was.
    fn write_now(&mut self, frames: &F, from: usize) -> usize;
    /// Writes all of `frames` from byte `from` on, waiting as needed; false when the sink
    /// failed.
    fn write_all(&mut self, frames: &F, from: usize) -> impl Future<Output = bool>;
}

/// The writer's end of the queue the driver hands frames over (first in, first out).
pub trait Handed<F> {
    /// Waits for the next frames, with the number of their bytes written already; `None`
    /// once the driver is gone.
    fn next(&mut self) -> impl Future<Output = Option<(F, usize)>>;
}

/// The hand-off between a follower's driver, which writes to the socket directly while the
/// socket takes the bytes at once, and the link's writer task, which writes out what it did
/// not take. Frames are never reordered or interleaved: the driver writes directly only
/// while the writer holds no frames, and hands over everything else in order.
///
/// Counts the turns handed to the writer and not yet written out. Only the driver hands
/// over (counts up); only the writer counts down, after writing.
#[derive(Debug, Clone, Default)]
pub struct Handover(Arc<AtomicUsize>);

impl Handover {
    /// The driver's side: sends `out` (whole frames), in order with everything sent
    /// before, and leaves it empty. What the sink does not take at once goes to `hand`,
    /// with how much of it was written, and `hand` queues it for the writer. One thread
    /// only may send.
    #[inline]
    pub fn send<F: Frames>(
        &self,
        out: &mut F,
        sink: &mut impl Sink<F>,
        hand: impl FnOnce(F, usize),
    ) {
        if out.is_empty() {
            return;
        }
        // Only the sender hands frames over, so once the writer has none left, writing here
        // cannot overtake it. Acquire: the writer's last write happens before this one.
        let mut sent = 0;
        if self.0.load(Ordering::Acquire) == 0 {
            sent = sink.write_now(out, 0);
        }
        if sent == out.len() {
            out.clear();
            return;
        }
        // The queue orders the hand-off itself; the writer counts down only after
        // receiving the frames, so the count cannot reach 0 before it.
        self.0.fetch_add(1, Ordering::Relaxed);
        hand(out.take(), sent);
    }

    /// The writer's side: writes out the frames handed over, in order, until the queue
    /// ends or the sink fails.
    pub async fn write_handed<F>(&self, sink: &mut impl Sink<F>, handed: &mut impl Handed<F>) {
        while let Some((frames, from)) = handed.next().await {
            if !sink.write_all(&frames, from).await {
                return;
            }
            // Only once they are written. Release: pairs with the sender's Acquire.
            self.0.fetch_sub(1, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_job_runs_here_only_while_nothing_sent_is_unfinished_and_no_round_is_under_way() {
        let (intake, end) = intake::<u32, Vec<u32>>(Vec::new());
        let log = |log: &mut Vec<u32>, job| log.push(job);
        assert_eq!(intake.run_here(1, log), None);
        // A round under way on the thread.
        let round = end.shared.state();
        assert_eq!(intake.run_here(2, log), Some(2));
        drop(round);
        // A job sent and not yet taken.
        assert!(intake.send(3));
        assert_eq!(intake.run_here(4, log), Some(4));
        assert!(intake.send(4));
        drop(intake);
        end.rounds(1, |log, jobs| {
            log.extend(jobs);
            ControlFlow::Continue(())
        });
        assert_eq!(end.into_state(), Some(vec![1, 3, 4]));
    }

    /// A round that took several jobs counts them all done: a job may run where it was
    /// sent again afterwards (else every later write would go to the thread).
    #[test]
    fn once_a_round_took_several_jobs_a_job_runs_here_again() {
        let (intake, end) = intake::<u32, Vec<u32>>(Vec::new());
        assert!(intake.send(1));
        assert!(intake.send(2));
        end.rounds(8, |log, jobs| {
            log.extend(jobs);
            ControlFlow::Break(())
        });
        assert_eq!(intake.run_here(3, |log, job| log.push(job)), None);
        drop(intake);
        assert_eq!(end.into_state(), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_job_that_panics_where_it_was_sent_gives_the_state_up_there_and_on_the_thread() {
        let (intake, end) = intake::<u32, Vec<u32>>(Vec::new());
        // The sender goes on; the job is gone, as in a round that panicked.
        assert_eq!(intake.run_here(1, |_, _| panic!("planted")), None);
        assert_eq!(intake.run_here(2, |log, job| log.push(job)), Some(2));
        assert!(intake.send(2));
        drop(intake);
        let thread = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            end.rounds(1, |log, jobs| {
                log.extend(jobs);
                ControlFlow::Continue(())
            })
        }));
        assert!(thread.is_err(), "the thread's next round panics");
    }

    /// A socket that takes everything at once, or nothing while `full`.
    #[derive(Default)]
    struct TestSink {
        full: bool,
        written: Vec<u8>,
    }

    impl Sink<Vec<u8>> for TestSink {
        fn write_now(&mut self, turn: &Vec<u8>, from: usize) -> usize {
            if self.full {
                return 0;
            }
            self.written.extend_from_slice(&turn[from..]);
            turn.len() - from
        }

        async fn write_all(&mut self, turn: &Vec<u8>, from: usize) -> bool {
            self.written.extend_from_slice(&turn[from..]);
            true
        }
    }

    /// The hand-off queue, its turns all there from the start.
    struct Queued(std::collections::VecDeque<(Vec<u8>, usize)>);

    impl Handed<Vec<u8>> for Queued {
        async fn next(&mut self) -> Option<(Vec<u8>, usize)> {
            self.0.pop_front()
        }
    }

    /// Once the writer has written out every turn handed over, it holds none: the driver
    /// writes to the socket itself again (else every later send of the link would go
    /// through the writer task, a wake-up each).
    #[test]
    fn once_the_writer_wrote_every_turn_handed_over_the_driver_writes_directly_again() {
        let handover = Handover::default();
        let mut sink = TestSink {
            full: true,
            ..TestSink::default()
        };
        let mut handed = std::collections::VecDeque::new();
        for frame in [&b"one"[..], b"two", b"three"] {
            let mut out = frame.to_vec();
            handover.send(&mut out, &mut sink, |turn, written| {
                handed.push_back((turn, written))
            });
            assert!(out.is_empty());
        }
        assert_eq!(handed.len(), 3, "a full socket hands every turn over");
        let mut queue = Queued(handed);
        {
            let writing = std::pin::pin!(handover.write_handed(&mut sink, &mut queue));
            let waker = std::task::Waker::noop();
            let polled = writing.poll(&mut std::task::Context::from_waker(waker));
            assert!(polled.is_ready(), "the queue ended");
        }
        assert_eq!(sink.written, b"onetwothree");
        sink.full = false;
        let mut out = b"four".to_vec();
        handover.send(&mut out, &mut sink, |_, _| {
            panic!("handed over although the writer holds nothing")
        });
        assert!(out.is_empty());
        assert_eq!(sink.written, b"onetwothreefour");
    }
}

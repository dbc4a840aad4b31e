//! loom models of the memory party-core shares between threads (`src/sync.rs`), and of the
//! ring a follower shares with its leader's process (`src/value_ring.rs`).
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p party-core --release --test loom`.
#![cfg(loom)]

use std::collections::VecDeque;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use loom::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};
use loom::sync::mpsc::channel;
use loom::sync::{Arc, Mutex};
use loom::thread;
use party_core::sync::{intake, rounds, ConnIds, Followers, Handed, Handover, Intake, Sink};
use party_core::value_ring::offered_ring;
use party_proto::wire::{Response, ServerMessage, LEND_AT};
use party_proto::RequestId;

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

/// The store thread's round in the intake models: logs the jobs; job 0 stops it.
fn log_until_zero(log: &mut Vec<u32>, jobs: Vec<u32>) -> ControlFlow<()> {
    let stop = jobs.contains(&0);
    log.extend(jobs.into_iter().filter(|job| *job != 0));
    if stop {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

/// A sender that runs a job itself (the store thread's intake, where a connection commits a
/// lone write on its own task) never overtakes a job sent before it, whatever the store
/// thread is doing meanwhile; and every job is carried out once. Job 0 stops the thread.
#[test]
fn a_job_run_by_its_sender_never_overtakes_one_sent_before_it() {
    loom::model(|| {
        let (queue, end) = intake::<u32, Vec<u32>>(Vec::new());
        let store_thread = thread::spawn(move || {
            end.rounds(2, log_until_zero);
            end
        });
        assert!(queue.send(1));
        if let Some(job) = queue.run_here(2, |log, job| log.push(job)) {
            assert!(queue.send(job));
        }
        assert!(queue.send(0));
        let end = store_thread.join().unwrap();
        drop(queue);
        let log = end.into_state().expect("no queue is left");
        assert_eq!(log, [1, 2], "the job sent first must be carried out first");
    });
}

/// Two senders (two connections) each send a job, then run one themselves if they may
/// (sending it otherwise), while the thread takes rounds: every job is carried out once,
/// and neither sender's second job overtakes its first. Job 0 stops the thread.
#[test]
fn two_senders_running_jobs_themselves_keep_each_ones_order_and_lose_nothing() {
    // Three threads: every interleaving takes minutes here; those with up to five
    // preemptions (most bugs need two or three, loom says) take seconds. LOOM_MAX_PREEMPTIONS
    // still has the last word.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = model.preemption_bound.or(Some(5));
    model.check(|| {
        let (queue, end) = intake::<u32, Vec<u32>>(Vec::new());
        let store_thread = thread::spawn(move || {
            end.rounds(2, log_until_zero);
            end
        });
        let sender = |queue: &Intake<u32, Vec<u32>>, first: u32| {
            assert!(queue.send(first));
            if let Some(job) = queue.run_here(first + 1, |log, job| log.push(job)) {
                assert!(queue.send(job));
            }
        };
        let other = queue.clone();
        let second = thread::spawn(move || sender(&other, 3));
        sender(&queue, 1);
        second.join().unwrap();
        assert!(queue.send(0));
        let end = store_thread.join().unwrap();
        drop(queue);
        let log = end.into_state().expect("no queue is left");
        let position = |job| log.iter().position(|j| *j == job).expect("a job was lost");
        let order = position(1) < position(2) && position(3) < position(4);
        assert_eq!(log.len(), 4, "a job was carried out twice: {log:?}");
        assert!(order, "a sender's second job overtook its first: {log:?}");
    });
}

/// The frames the driver sends, in order.
const FRAMES: [&[u8]; 3] = [&[1, 2], &[3, 4], &[5, 6]];
const TOTAL: usize = 6;

/// How much of a write the socket takes at once, for each of the driver's direct writes.
#[derive(Debug, Clone, Copy)]
enum Take {
    All,
    One,
    Nothing,
}

/// The socket as memory written with relaxed accesses only: the driver and the writer see
/// each other's bytes only through the hand-off's own synchronisation (a real socket orders
/// the writes in the kernel, but the hand-off must not lean on that). Two writers that race,
/// or one that does not see what the other wrote, overwrite bytes or interleave them.
#[derive(Debug)]
struct Bytes {
    len: AtomicUsize,
    bytes: [AtomicU8; TOTAL],
}

impl Bytes {
    fn new() -> Bytes {
        Bytes {
            len: AtomicUsize::new(0),
            bytes: std::array::from_fn(|_| AtomicU8::new(0)),
        }
    }

    fn push(&self, byte: u8) {
        let len = self.len.load(Relaxed);
        assert!(len < TOTAL, "more bytes written than sent");
        self.bytes[len].store(byte, Relaxed);
        self.len.store(len + 1, Relaxed);
    }

    fn contents(&self) -> Vec<u8> {
        let len = self.len.load(Relaxed);
        self.bytes[..len].iter().map(|b| b.load(Relaxed)).collect()
    }
}

/// One side's view of the socket: the driver's direct writes take what `takes` says; the
/// writer's waiting writes take everything, a byte at a time.
struct Socket<'a> {
    bytes: &'a Bytes,
    takes: std::slice::Iter<'a, Take>,
}

impl Sink<Vec<u8>> for Socket<'_> {
    fn write_now(&mut self, turn: &Vec<u8>, from: usize) -> usize {
        let rest = &turn[from..];
        let n = match self.takes.next().expect("a take for each direct write") {
            Take::All => rest.len(),
            Take::One => 1,
            Take::Nothing => 0,
        };
        for &byte in &rest[..n] {
            self.bytes.push(byte);
        }
        n
    }

    async fn write_all(&mut self, turn: &Vec<u8>, from: usize) -> bool {
        for &byte in &turn[from..] {
            self.bytes.push(byte);
        }
        true
    }
}

/// The hand-off queue (loom's channel does not model the sender going away).
#[derive(Debug, Default)]
struct Queue {
    turns: VecDeque<(Vec<u8>, usize)>,
    closed: bool,
}

struct Receiver(Arc<Mutex<Queue>>);

impl Handed<Vec<u8>> for Receiver {
    async fn next(&mut self) -> Option<(Vec<u8>, usize)> {
        loop {
            {
                let mut queue = self.0.lock().unwrap();
                if let Some(turn) = queue.turns.pop_front() {
                    return Some(turn);
                }
                if queue.closed {
                    return None;
                }
            }
            thread::yield_now();
        }
    }
}

/// Runs the writer task's future on its loom thread. (Its waits are spins in `Receiver`,
/// so it never returns `Pending`; if it did, it would spin here.)
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    loop {
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::yield_now(),
        }
    }
}

/// The driver sends `FRAMES` through the hand-off while the writer task writes out what it
/// was handed; whatever the interleaving, the socket holds exactly the frames, in order.
fn frames_arrive_in_order(takes: [Take; 3]) {
    loom::model(move || {
        let bytes = Arc::new(Bytes::new());
        let queue = Arc::new(Mutex::new(Queue::default()));
        let handover = Handover::default();
        let writer = {
            let (bytes, queue, handover) = (bytes.clone(), queue.clone(), handover.clone());
            thread::spawn(move || {
                let mut socket = Socket {
                    bytes: &bytes,
                    takes: [].iter(),
                };
                block_on(handover.write_handed(&mut socket, &mut Receiver(queue)));
            })
        };
        // The driver's direct writes (one per send while the writer holds nothing) take
        // what `takes` says, in turn.
        let mut socket = Socket {
            bytes: &bytes,
            takes: takes.iter(),
        };
        for frame in FRAMES {
            let mut out = frame.to_vec();
            handover.send(&mut out, &mut socket, |turn, written| {
                queue.lock().unwrap().turns.push_back((turn, written))
            });
            assert!(out.is_empty(), "send leaves nothing behind");
        }
        queue.lock().unwrap().closed = true;
        writer.join().unwrap();
        assert_eq!(bytes.contents(), FRAMES.concat());
    });
}

/// Every combination of what the socket takes of the driver's direct writes: all (nothing
/// handed over), part (the rest handed over) or nothing (all handed over).
#[test]
fn the_link_hand_off_neither_reorders_nor_interleaves_frames() {
    let choices = [Take::All, Take::One, Take::Nothing];
    for a in choices {
        for b in choices {
            for c in choices {
                frames_arrive_in_order([a, b, c]);
            }
        }
    }
}

/// A get's answer whose value of `len` bytes holds its id in every byte.
fn big_answer(id: u8, len: usize) -> ServerMessage {
    ServerMessage::Reply {
        id: RequestId(u64::from(id)),
        result: Ok(Response::Value(Some(vec![id; len].into()))),
    }
}

/// The ring big answers come through (`src/value_ring.rs`), its two processes as threads
/// and the socket between them as a channel. The leader places four big answers in a ring
/// with room for two at most, each where the follower's position says the values before
/// were taken (or sends it as it is, where it finds no room); the follower takes each out,
/// checks it whole, and tells its position, as it does after each read of its socket.
/// loom fails the model where the leader could write bytes the follower is still copying
/// out (the counter's Release and Acquire order the two), and the check fails where a value
/// came out overwritten.
#[test]
fn a_leader_never_writes_over_a_value_its_follower_is_still_taking_out() {
    // One value fills a lap to its end, one skips to the next lap, one fills the ring.
    const SIZES: [usize; 4] = [LEND_AT, LEND_AT * 3 / 2, LEND_AT, 2 * LEND_AT];
    loom::model(|| {
        let (mut follower, mut leader) = offered_ring(2 * LEND_AT as u64);
        let (socket, frames) = channel();
        let taker = thread::spawn(move || {
            for (id, len) in (0..).zip(SIZES) {
                let message = frames.recv().unwrap();
                assert_eq!(follower.resolve(message), Ok(big_answer(id, len)));
                follower.tell_taken();
            }
        });
        let mut in_ring = 0;
        for (id, len) in (0..).zip(SIZES) {
            let (message, placed) = leader.place(big_answer(id, len));
            if placed > 0 {
                assert!(matches!(message, ServerMessage::ReplyInRing { .. }));
                in_ring += 1;
            }
            socket.send(message).unwrap();
        }
        taker.join().unwrap();
        assert!(in_ring >= 1, "the first value always has room");
    });
}

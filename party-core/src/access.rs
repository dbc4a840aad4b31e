//! One connection's way to the store: a follower's connection, or the leader's own handle.
//!
//! The work a connection's [`ServerSession`] asks for goes to the store thread in the order
//! asked, with two exceptions, where the store answers fast on any thread: a point read the
//! session marks as not behind any write of the connection runs at once on the connection's
//! own task ([`Backend::reads_fast`]; not etcd, which would hold an async worker for a round
//! trip), and so do small writes (a few keys, at most 64 KiB) while the store thread has
//! nothing to do and no commit here was slow of late ([`StoreQueue::write_here`];
//! [`Backend::writes_fast`]: not sled, which syncs each commit to disk, nor etcd): on a
//! follower's connection, the writes a turn of its session asks for in a row, grouped as
//! the store thread would group them; on the leader's own handle, a write its client sent
//! alone (with no other of its own pending: a burst's writes go to the store thread, to
//! commit together). Either still sees every write its connection sent before it (and,
//! like any read, every acknowledged write), and skips two hand-offs between threads,
//! which cost more than the read or the commit itself here.

use std::sync::Arc;

use party_backends::Backend;
use party_proto::wire::{ReadCheck, ServerMessage, WriteOp};
use party_proto::{ServerInput, ServerOutput, ServerSession};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::clock;
use crate::store::{point_read, ConnId, ReplyTo, StoreJob, StoreQueue};
use crate::sync::ConnIds;
use crate::value_ring::RingOffer;

/// Hands out a [`StoreAccess`] to each new connection, numbered uniquely.
#[derive(Clone)]
pub(crate) struct Accesses {
    pub backend: Arc<dyn Backend>,
    pub queue: StoreQueue,
    pub conn_ids: ConnIds,
}

impl Accesses {
    pub fn open(&self) -> StoreAccess {
        let (to, replies) = unbounded_channel();
        StoreAccess {
            conn: self.conn_ids.next(),
            reads_here: self.backend.reads_fast(),
            writes_here: self.backend.writes_fast(),
            backend: self.backend.clone(),
            queue: self.queue.clone(),
            to,
            replies,
        }
    }
}

pub(crate) struct StoreAccess {
    conn: ConnId,
    /// Point reads may run on the connection's task.
    reads_here: bool,
    /// Small writes may run on the connection's task.
    writes_here: bool,
    backend: Arc<dyn Backend>,
    queue: StoreQueue,
    to: ReplyTo,
    replies: UnboundedReceiver<ServerInput>,
}

impl StoreAccess {
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Carries out a session's outputs: messages to `send` (which says whether it took them,
    /// and whether it holds enough for now), work to the store.
    ///
    /// The small writes a turn of the session asks for in a row commit together, on this
    /// task while the store thread has nothing to do ([`StoreAccess::commit_burst`]). Once
    /// the sender is full the rest of the outputs wait in the session for the next run.
    pub fn run_outputs(
        &mut self,
        session: &mut ServerSession,
        mut send: impl FnMut(ServerMessage) -> Sent,
    ) -> Ran {
        let mut ran = Ran::default();
        let mut burst = Burst::default();
        loop {
            while !ran.full {
                let Some(output) = session.poll_output() else {
                    break;
                };
                match output {
                    ServerOutput::Send(message) => match send(message) {
                        Sent::Taken => {}
                        Sent::Full => ran.full = true,
                        Sent::Failed => ran.closing = true,
                    },
                    ServerOutput::Close(reason) => {
                        tracing::warn!("closing connection {}: {reason}", self.conn);
                        ran.closing = true;
                    }
                    ServerOutput::RingOffered { fd, len, token } => {
                        ran.ring_offered = Some(RingOffer { fd, len, token });
                    }
                    ServerOutput::Write { id, stamp, op } if self.writes_here && is_small(&op) => {
                        let len = op.request_len_bound();
                        if burst.bytes + len > BURST_BYTES {
                            self.commit_burst(&mut burst, session);
                        }
                        burst.bytes += len;
                        let to = self.to.clone();
                        burst.writes.push(StoreJob::Write { id, stamp, op, to });
                    }
                    work => {
                        // Whatever comes after the burst's writes must not overtake them.
                        self.commit_burst(&mut burst, session);
                        if let Some(answer) = self.carry_out(work) {
                            session.handle_input(clock::now(), answer);
                        }
                    }
                }
            }
            if burst.writes.is_empty() {
                return ran;
            }
            // Their answers, if they committed here, are the session's next messages.
            self.commit_burst(&mut burst, session);
            if ran.full {
                return ran;
            }
        }
    }

    /// Commits the writes of `burst` on this task if the store thread has nothing to do,
    /// and hands the session every answer then waiting; otherwise queues them, in order.
    fn commit_burst(&mut self, burst: &mut Burst, session: &mut ServerSession) {
        let writes = std::mem::take(burst).writes;
        if writes.is_empty() {
            return;
        }
        match self.queue.write_here(writes) {
            Ok(()) => self.hand_waiting_replies(session),
            Err(writes) => self.queue_all(writes),
        }
    }

    /// Queues `jobs` for the store thread, in order.
    fn queue_all(&self, jobs: Vec<StoreJob>) {
        for job in jobs {
            // As in carry_out: a failed send means the leader is stopping anyway.
            self.queue.send(job);
        }
    }

    /// Hands one piece of store work to the store thread, or carries it out at once (a
    /// point read that keeps the connection's order, a lone write) and gives the first
    /// answer waiting (its own, or one before it). Messages and closes are the caller's.
    pub fn carry_out(&mut self, work: ServerOutput) -> Option<ServerInput> {
        let conn = self.conn;
        let job = match work {
            ServerOutput::Send(_) | ServerOutput::Close(_) | ServerOutput::RingOffered { .. } => {
                return None
            }
            ServerOutput::Read {
                id,
                op,
                behind_writes,
            } => {
                // The session says when running at once keeps the connection's order;
                // a status read's follower count lives with the store thread.
                let here = if behind_writes || !self.reads_here {
                    Err(op)
                } else {
                    point_read(&*self.backend, op)
                };
                match here {
                    Ok(result) => return Some(ServerInput::Completed { id, result }),
                    Err(op) => StoreJob::Read {
                        id,
                        op,
                        to: self.to.clone(),
                    },
                }
            }
            ServerOutput::Write { id, stamp, op } => {
                let here = self.writes_here && stamp.alone() && is_small(&op);
                let write = StoreJob::Write {
                    id,
                    stamp,
                    op,
                    to: self.to.clone(),
                };
                if !here {
                    write
                } else {
                    if let Err(given_back) = self.queue.write_here(vec![write]) {
                        self.queue_all(given_back);
                        return None;
                    }
                    return self.replies.try_recv().ok();
                }
            }
            ServerOutput::IterOpen { iter, options } => StoreJob::IterOpen {
                conn,
                iter,
                options,
                to: self.to.clone(),
            },
            ServerOutput::IterPull {
                iter,
                max,
                max_bytes,
            } => StoreJob::IterPull {
                conn,
                iter,
                max,
                max_bytes,
                to: self.to.clone(),
            },
            ServerOutput::IterDrop { iter } => StoreJob::IterDrop { conn, iter },
            ServerOutput::WatchPull { watch, from, max } => StoreJob::WatchPull {
                conn,
                watch,
                from,
                max,
                to: self.to.clone(),
            },
            ServerOutput::WatchDrop { watch } => StoreJob::WatchDrop { conn, watch },
        };
        // The store thread outlives every connection; a failed send means it is gone and
        // the leader is stopping anyway.
        self.queue.send(job);
        None
    }

    /// The store thread's next answer for this connection; `None` once it is gone.
    pub async fn next_reply(&mut self) -> Option<ServerInput> {
        self.replies.recv().await
    }

    /// An answer already waiting, if any.
    pub fn try_next_reply(&mut self) -> Option<ServerInput> {
        self.replies.try_recv().ok()
    }

    /// Hands `session` every answer of the store already waiting.
    pub fn hand_waiting_replies(&mut self, session: &mut ServerSession) {
        while let Some(answer) = self.try_next_reply() {
            session.handle_input(clock::now(), answer);
        }
    }
}

/// What a sender did with a message it was handed.
pub(crate) enum Sent {
    Taken,
    /// Taken, and the sender holds enough to send for now.
    Full,
    /// Not sent: the connection is to be closed.
    Failed,
}

/// How a run of a session's outputs ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Ran {
    /// The connection is to be closed.
    pub closing: bool,
    /// The sender filled up: outputs may be left in the session for the next run.
    pub full: bool,
    /// The follower offered a ring for big answers.
    pub ring_offered: Option<RingOffer>,
}

/// Small writes in a row, to commit together on a connection's task.
#[derive(Default)]
struct Burst {
    writes: Vec<StoreJob>,
    /// The requests' sizes, added up.
    bytes: u64,
}

/// Most bytes of writes committed on a connection's task at once, a burst's or a lone
/// write's. Bigger values take long enough to copy into the store that the connection
/// does better to read its next requests while the store thread commits them (16 puts of
/// 1 MiB in flight: 113 MB/s in bursts, 165 on the store thread).
const BURST_BYTES: u64 = 64 * 1024;

/// Most operations of a batch or transaction committed on a connection's task.
const QUICK_OPS: usize = 64;

/// Whether `op` may commit on a connection's task: it [commits quickly](commits_quickly)
/// and carries at most [`BURST_BYTES`].
fn is_small(op: &WriteOp) -> bool {
    commits_quickly(op) && op.request_len_bound() <= BURST_BYTES
}

/// Whether `op` commits in a few microseconds on a store whose writes are fast: a few keys,
/// and no range to read (a clear, or a transaction's check of a range, reads it all).
fn commits_quickly(op: &WriteOp) -> bool {
    match op {
        WriteOp::Put { .. } | WriteOp::Del { .. } => true,
        WriteOp::Batch { ops } => ops.len() <= QUICK_OPS,
        WriteOp::Transaction { reads, writes } => {
            reads.len() + writes.len() <= QUICK_OPS
                && reads
                    .iter()
                    .all(|read| matches!(read, ReadCheck::Key { .. }))
        }
        WriteOp::Clear { .. } => false,
    }
}

impl Drop for StoreAccess {
    /// The connection is gone: its iterators can go too.
    fn drop(&mut self) {
        self.queue.send(StoreJob::Disconnected { conn: self.conn });
    }
}

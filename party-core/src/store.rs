//! The leader's store thread: every read, write and iterator of every connection (the
//! leader's own handle included) runs here, against one [`Backend`].
//!
//! Jobs run in arrival order, so a read sees every write that arrived before it. Writes that
//! arrive together form one group: each is admitted against the [`DedupTable`], and the
//! group commits as one atomic batch together with its dedup records — one flush for the
//! whole group. If a group fails, its writes are retried one by one, so one bad write (a key
//! too long for the store, say) fails alone. A group meets a full or read-only disk before
//! it reaches the store (see [`Headroom`]).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use party_backends::{Backend, Chunks, WriteBatch};
use party_proto::wire::{LeaderStatus, ReadOp, Response, WriteOp};
use party_proto::{
    Admission, DedupTable, ErrorCode, IterId, IterOptions, RequestId, ServerInput, WriteStamp,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::headroom::Headroom;
use crate::sync::Followers;

/// Numbers a connection to the leader (the leader's own handle is one too).
pub(crate) type ConnId = u64;

/// Where the answer to a job goes: the connection's session.
pub(crate) type ReplyTo = UnboundedSender<ServerInput>;

/// Work for the store thread.
pub(crate) enum StoreJob {
    Read {
        id: RequestId,
        op: ReadOp,
        to: ReplyTo,
    },
    Write {
        id: RequestId,
        stamp: WriteStamp,
        op: WriteOp,
        to: ReplyTo,
    },
    IterOpen {
        conn: ConnId,
        iter: IterId,
        options: IterOptions,
        to: ReplyTo,
    },
    IterPull {
        conn: ConnId,
        iter: IterId,
        max: u32,
        to: ReplyTo,
    },
    IterDrop {
        conn: ConnId,
        iter: IterId,
    },
    /// A connection is gone: drop its iterators.
    Disconnected {
        conn: ConnId,
    },
    /// Sent every [`QUIET_PERIOD`]: a checkpoint is due if nothing was written since the
    /// last tick.
    Tick,
}

/// How long writes must pause before the store is checkpointed, so that a leader killed
/// while quiet leaves its successor little to replay.
pub(crate) const QUIET_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);

/// Most jobs taken in one round; bounds the size of a write group.
const MAX_ROUND: usize = 1024;

/// Runs jobs until every sender is gone, then returns (dropping the store).
pub(crate) fn run(
    store: Arc<dyn Backend>,
    dedup: DedupTable,
    followers: Followers,
    headroom: Headroom,
    jobs: Receiver<StoreJob>,
) {
    let mut worker = Worker {
        store,
        dedup,
        followers,
        headroom,
        iters: HashMap::new(),
        // What the store replayed when it opened is not checkpointed yet.
        unsaved: true,
        wrote_since_tick: false,
    };
    crate::sync::rounds(&jobs, MAX_ROUND, |round| {
        worker.round(round);
        std::ops::ControlFlow::Continue(())
    });
}

struct PendingWrite {
    id: RequestId,
    stamp: WriteStamp,
    op: WriteOp,
    to: ReplyTo,
}

struct Worker {
    store: Arc<dyn Backend>,
    dedup: DedupTable,
    followers: Followers,
    headroom: Headroom,
    iters: HashMap<(ConnId, IterId), Chunks>,
    /// Written since the last checkpoint.
    unsaved: bool,
    wrote_since_tick: bool,
}

impl Worker {
    fn round(&mut self, jobs: Vec<StoreJob>) {
        let mut writes = Vec::new();
        for job in jobs {
            match job {
                StoreJob::Write { id, stamp, op, to } => {
                    writes.push(PendingWrite { id, stamp, op, to });
                    continue;
                }
                other => {
                    // Whatever came before this job must be visible to it.
                    self.write_group(std::mem::take(&mut writes));
                    self.run_job(other);
                }
            }
        }
        self.write_group(writes);
    }

    fn run_job(&mut self, job: StoreJob) {
        match job {
            StoreJob::Read { id, op, to } => {
                let result = point_read(&*self.store, op).unwrap_or_else(|_status| {
                    Ok(Response::Status(LeaderStatus {
                        followers: u32::try_from(self.followers.count()).unwrap_or(u32::MAX),
                    }))
                });
                let _ = to.send(ServerInput::Completed { id, result });
            }
            StoreJob::IterOpen {
                conn,
                iter,
                options,
                to,
            } => match self.store.chunks(&options) {
                Ok(chunks) => {
                    self.iters.insert((conn, iter), chunks);
                }
                Err(error) => {
                    let error = ErrorCode::from(error);
                    let _ = to.send(ServerInput::IterFailed { iter, error });
                }
            },
            StoreJob::IterPull {
                conn,
                iter,
                max,
                to,
            } => {
                let Some(chunks) = self.iters.get_mut(&(conn, iter)) else {
                    return;
                };
                let input = match chunks.next_chunk(max as usize) {
                    Ok((entries, exhausted)) => {
                        if exhausted {
                            self.iters.remove(&(conn, iter));
                        }
                        ServerInput::IterChunk {
                            iter,
                            entries,
                            exhausted,
                        }
                    }
                    Err(error) => {
                        self.iters.remove(&(conn, iter));
                        ServerInput::IterFailed {
                            iter,
                            error: error.into(),
                        }
                    }
                };
                let _ = to.send(input);
            }
            StoreJob::IterDrop { conn, iter } => {
                self.iters.remove(&(conn, iter));
            }
            StoreJob::Disconnected { conn } => self.iters.retain(|(c, _), _| *c != conn),
            StoreJob::Tick => {
                if self.unsaved && !self.wrote_since_tick {
                    match self.store.checkpoint() {
                        Ok(()) => self.unsaved = false,
                        Err(error) => tracing::warn!("checkpoint failed: {error}"),
                    }
                }
                self.wrote_since_tick = false;
            }
            StoreJob::Write { .. } => unreachable!("writes are grouped by round()"),
        }
    }

    fn write_group(&mut self, writes: Vec<PendingWrite>) {
        if writes.is_empty() {
            return;
        }
        self.unsaved = true;
        self.wrote_since_tick = true;
        let mut batch = WriteBatch::new();
        let mut applied = Vec::new();
        let mut in_group = Vec::new();
        for write in writes {
            match self.dedup.admit(write.stamp) {
                Admission::Apply => {
                    batch.push(write.op.clone());
                    applied.push(write);
                }
                Admission::InGroup => in_group.push(write),
                Admission::AlreadyApplied => reply(&write, Ok(Response::Written)),
            }
        }
        if !applied.is_empty() {
            if let Err(error) = self.headroom.check() {
                return self.fail_group(applied.iter().chain(&in_group), error);
            }
        }
        batch.records = self.dedup.group_records();
        match self.store.write(&batch) {
            Ok(()) => {
                self.dedup.commit_group();
                for write in applied.iter().chain(&in_group) {
                    reply(write, Ok(Response::Written));
                }
            }
            Err(error) if applied.len() > 1 => {
                tracing::debug!(
                    "group of {} writes failed ({error}); retrying one by one",
                    applied.len()
                );
                self.dedup.abort_group();
                // Each write alone: the good ones land, the bad one fails by itself. A
                // duplicate from the same group is admitted again and answered with it.
                for write in applied.into_iter().chain(in_group) {
                    self.write_group(vec![write]);
                }
            }
            Err(error) => self.fail_group(applied.iter().chain(&in_group), error.into()),
        }
    }

    /// The group was not applied: each of its writes fails with `error` (and may be
    /// re-sent).
    fn fail_group<'a>(&mut self, writes: impl Iterator<Item = &'a PendingWrite>, error: ErrorCode) {
        self.dedup.abort_group();
        for write in writes {
            reply(write, Err(error.clone()));
        }
    }
}

/// A read that needs only the store: `get` and `get_many` answered; any other read given
/// back.
pub(crate) fn point_read(
    store: &dyn Backend,
    op: ReadOp,
) -> Result<Result<Response, ErrorCode>, ReadOp> {
    let result = match op {
        ReadOp::Get { key } => store.get(&key).map(Response::Value),
        ReadOp::GetMany { keys } => store.get_many(&keys).map(Response::Values),
        status @ ReadOp::Status => return Err(status),
    };
    Ok(result.map_err(ErrorCode::from))
}

fn reply(write: &PendingWrite, result: Result<Response, ErrorCode>) {
    let _ = write.to.send(ServerInput::Completed {
        id: write.id,
        result,
    });
}

/// The channel that feeds [`run`].
pub(crate) type StoreQueue = Sender<StoreJob>;

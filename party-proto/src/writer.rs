//! The leader's writer: group commit with exactly-once dedup, and when to checkpoint.
//!
//! Writes are queued in arrival order; [`Writer::cut`] closes a group (the store thread
//! cuts one per round of jobs, and before any job that must see the writes before it). The
//! writer admits each write of a group against the [`DedupTable`] and asks for one
//! [`WriteBatch`] holding the group's writes *and* their dedup records: the records must
//! commit atomically with the data, or a crash between the two would let a re-sent write
//! apply twice. One group is out at a time; the caller answers it with
//! [`WriterInput::Committed`].
//!
//! A group the store fails is aborted in the dedup table (none of it was applied) and its
//! writes are retried one by one, so one bad write (a key too long for the store, say)
//! fails alone. A group the caller refuses before it reaches the store (a full or
//! read-only disk) fails whole, since every write would meet the same refusal.
//!
//! Once writes pause for [`WriterConfig::quiet_period`] after a commit, the writer asks for
//! a checkpoint, so that a leader killed while quiet leaves its successor little to replay.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use crate::error::ErrorCode;
use crate::ids::ClientId;
use crate::server::{Admission, DedupRecord, DedupTable, WriteStamp};
use crate::time::Timestamp;
use crate::wire::{Response, WriteOp};

/// One atomic, durable commit: the writes in order, and the dedup records to store with
/// them in the same commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
    pub records: Vec<(ClientId, DedupRecord)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, op: WriteOp) -> &mut Self {
        self.ops.push(op);
        self
    }
}

/// How the writer behaves.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// How long writes must pause before the store is checkpointed.
    pub quiet_period: Duration,
    /// The most operations the store commits at once (etcd: 127), counted as
    /// [`group_cost`] counts them: a group is cut before a write that would pass it, so
    /// only a write too large by itself meets the store's refusal.
    pub max_group_ops: Option<usize>,
    /// Bugs to re-create, for the simulator.
    #[cfg(feature = "bug-injection")]
    pub bugs: crate::bugs::Bugs,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            quiet_period: Duration::from_millis(100),
            max_group_ops: None,
            #[cfg(feature = "bug-injection")]
            bugs: crate::bugs::Bugs::default(),
        }
    }
}

/// How the store took a [`WriterOutput::Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// Durable: every write of the group is applied.
    Committed,
    /// The store failed the batch; nothing of it was applied.
    Failed(ErrorCode),
    /// The batch never reached the store (its disk is full or read-only); nothing was
    /// applied, and every write would meet the same refusal.
    Refused(ErrorCode),
}

/// What happened, as the caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterInput {
    /// The answer to the outstanding [`WriterOutput::Commit`].
    Committed(CommitResult),
    /// Answer to [`WriterOutput::Checkpoint`]: whether it succeeded.
    Checkpointed(bool),
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterOutput<T> {
    /// Apply this batch atomically and durably (after checking the disk has room), then
    /// answer [`WriterInput::Committed`].
    Commit(WriteBatch),
    /// The one answer to a write.
    Reply {
        to: T,
        result: Result<Response, ErrorCode>,
    },
    /// Checkpoint the store, then answer [`WriterInput::Checkpointed`].
    Checkpoint,
}

/// The store operations a write adds to a group, before its client's dedup record: one per
/// key it puts or deletes, and one for a clear (whose keys are found only when it commits).
pub fn group_cost(op: &WriteOp) -> usize {
    match op {
        WriteOp::Batch { ops } => ops.len(),
        WriteOp::Put { .. } | WriteOp::Del { .. } | WriteOp::Clear { .. } => 1,
    }
}

#[derive(Debug)]
struct QueuedWrite<T> {
    to: T,
    stamp: WriteStamp,
    op: WriteOp,
}

#[derive(Debug)]
enum Queued<T> {
    Write(QueuedWrite<T>),
    /// The end of a group.
    Cut,
}

/// The group whose batch is out.
#[derive(Debug)]
struct Group<T> {
    /// Admitted to apply, in order.
    applied: Vec<QueuedWrite<T>>,
    /// Duplicates of a write in the group: answered with it.
    in_group: Vec<QueuedWrite<T>>,
    /// The records still to commit, when the bug that commits them apart is re-created.
    #[cfg(feature = "bug-injection")]
    records_apart: Option<Vec<(ClientId, DedupRecord)>>,
}

/// The leader's writer. See the module documentation. `T` says where each write's answer
/// goes (a connection and a request id, say).
#[derive(Debug)]
pub struct Writer<T> {
    config: WriterConfig,
    dedup: DedupTable,
    queue: VecDeque<Queued<T>>,
    committing: Option<Group<T>>,
    checkpointing: bool,
    /// Written since the last checkpoint (what the store replayed when it opened counts).
    unsaved: bool,
    last_commit: Option<Timestamp>,
    outputs: VecDeque<WriterOutput<T>>,
}

impl<T> Writer<T> {
    /// A writer over a store whose dedup records are `dedup`.
    pub fn new(config: WriterConfig, dedup: DedupTable) -> Self {
        Writer {
            config,
            dedup,
            queue: VecDeque::new(),
            committing: None,
            checkpointing: false,
            unsaved: true,
            last_commit: None,
            outputs: VecDeque::new(),
        }
    }

    /// Queues a write for the next group.
    pub fn write(&mut self, to: T, stamp: WriteStamp, op: WriteOp) {
        self.queue
            .push_back(Queued::Write(QueuedWrite { to, stamp, op }));
    }

    /// Closes the group being formed: what was queued so far commits together.
    pub fn cut(&mut self) {
        if matches!(self.queue.back(), Some(Queued::Write(_))) {
            self.queue.push_back(Queued::Cut);
        }
        self.next_group();
    }

    /// True when no write is queued or out: a job after the writes can run.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.committing.is_none()
    }

    pub fn handle_input(&mut self, now: Timestamp, input: WriterInput) {
        match input {
            WriterInput::Committed(result) => self.committed(now, result),
            WriterInput::Checkpointed(done) => {
                self.checkpointing = false;
                // A failed checkpoint is tried again after the next quiet period.
                self.unsaved = !done;
                if !done {
                    self.last_commit = Some(now);
                }
            }
        }
        self.next_group();
    }

    /// Asks for a checkpoint once writes have paused long enough.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.poll_timeout().is_some_and(|at| at <= now) && self.is_idle() {
            self.checkpointing = true;
            self.outputs.push_back(WriterOutput::Checkpoint);
        }
    }

    pub fn poll_output(&mut self) -> Option<WriterOutput<T>> {
        self.outputs.pop_front()
    }

    /// When a checkpoint is due, if one is.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if !self.unsaved || self.checkpointing {
            return None;
        }
        Some(self.last_commit.unwrap_or(Timestamp::ZERO) + self.config.quiet_period)
    }

    /// Starts the next closed group if none is out.
    fn next_group(&mut self) {
        while self.committing.is_none() && !self.checkpointing {
            let Some(end) = self
                .queue
                .iter()
                .position(|queued| matches!(queued, Queued::Cut))
            else {
                return;
            };
            let mut group = Group {
                applied: Vec::new(),
                in_group: Vec::new(),
                #[cfg(feature = "bug-injection")]
                records_apart: None,
            };
            let mut batch = WriteBatch::new();
            let mut clients = HashSet::new();
            let mut cost = 0;
            for _ in 0..=end {
                let Some(Queued::Write(write)) = self.queue.front() else {
                    self.queue.pop_front();
                    break;
                };
                let more =
                    group_cost(&write.op) + usize::from(!clients.contains(&write.stamp.client));
                let over = self
                    .config
                    .max_group_ops
                    .is_some_and(|max| cost + more > max);
                if over && !group.applied.is_empty() {
                    // The rest, up to the cut, makes the next group.
                    break;
                }
                let Some(Queued::Write(write)) = self.queue.pop_front() else {
                    break;
                };
                match self.admit(write.stamp) {
                    Admission::Apply => {
                        cost += more;
                        clients.insert(write.stamp.client);
                        batch.push(write.op.clone());
                        group.applied.push(write);
                    }
                    Admission::InGroup => group.in_group.push(write),
                    Admission::AlreadyApplied => self.reply(write.to, Ok(Response::Written)),
                }
            }
            if group.applied.is_empty() {
                continue;
            }
            batch.records = self.group_records();
            #[cfg(feature = "bug-injection")]
            if self.config.bugs.records_apart {
                group.records_apart = Some(std::mem::take(&mut batch.records));
            }
            self.committing = Some(group);
            self.outputs.push_back(WriterOutput::Commit(batch));
        }
    }

    fn committed(&mut self, now: Timestamp, result: CommitResult) {
        #[cfg_attr(not(feature = "bug-injection"), allow(unused_mut))]
        let Some(mut group) = self.committing.take() else {
            return;
        };
        #[cfg(feature = "bug-injection")]
        if let (Some(records), CommitResult::Committed) = (group.records_apart.take(), &result) {
            // The re-created bug: the records go in a commit of their own, after the data.
            self.outputs.push_back(WriterOutput::Commit(WriteBatch {
                ops: Vec::new(),
                records,
            }));
            self.committing = Some(group);
            return;
        }
        match result {
            CommitResult::Committed => {
                self.dedup.commit_group();
                self.unsaved = true;
                self.last_commit = Some(now);
                for write in group.applied.into_iter().chain(group.in_group) {
                    self.reply(write.to, Ok(Response::Written));
                }
            }
            CommitResult::Failed(_) if group.applied.len() > 1 => {
                #[cfg(feature = "bug-injection")]
                let abort = !self.config.bugs.no_abort_before_retry;
                #[cfg(not(feature = "bug-injection"))]
                let abort = true;
                if abort {
                    self.dedup.abort_group();
                }
                // Each write alone, ahead of everything queued since: the good ones land,
                // the bad one fails by itself. A duplicate from the same group is admitted
                // again and answered with its original.
                let writes: Vec<_> = group.applied.into_iter().chain(group.in_group).collect();
                for write in writes.into_iter().rev() {
                    self.queue.push_front(Queued::Cut);
                    self.queue.push_front(Queued::Write(write));
                }
            }
            CommitResult::Failed(error) | CommitResult::Refused(error) => {
                self.dedup.abort_group();
                for write in group.applied.into_iter().chain(group.in_group) {
                    self.reply(write.to, Err(error.clone()));
                }
            }
        }
    }

    fn admit(&mut self, stamp: WriteStamp) -> Admission {
        #[cfg(feature = "bug-injection")]
        if self.config.bugs.no_dedup {
            return Admission::Apply;
        }
        self.dedup.admit(stamp)
    }

    fn group_records(&self) -> Vec<(ClientId, DedupRecord)> {
        #[cfg(feature = "bug-injection")]
        if self.config.bugs.no_dedup {
            return Vec::new();
        }
        self.dedup.group_records()
    }

    fn reply(&mut self, to: T, result: Result<Response, ErrorCode>) {
        self.outputs.push_back(WriterOutput::Reply { to, result });
    }
}

//! The leader's store thread: the reads, writes and iterators of every connection (the
//! leader's own handle included) run here, against one [`Backend`] (an iterator is opened
//! here, and read on the scan thread, `scans.rs`), but for the point reads and small writes
//! a connection carries out on its own task (`access.rs`, [`StoreQueue::write_here`]).
//!
//! Jobs run in arrival order, so a read sees every write that arrived before it. Writes go
//! to party-proto's [`Writer`], which decides the groups, their dedup records, what a failed
//! group becomes and when to checkpoint; this thread (or a connection's task, holding the
//! same state) only carries its commits out, after checking the disk has room (see
//! [`Headroom`]).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use party_backends::{Backend, BackendError, WriteBatch};
use party_proto::feed::{plan_pull, LogEnds, LogRead, PullPlan};
use party_proto::recording::Record;
use party_proto::wire::{LeaderStatus, ReadOp, Response, WriteOp};
use party_proto::{
    CommitResult, CommitSeq, ErrorCode, IterId, IterOptions, RequestId, ServerInput, WatchId,
    WriteStamp, Writer, WriterConfig, WriterInput, WriterOutput,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::headroom::Headroom;
use crate::scans::{ScanJob, Scans};
use crate::slow_writes::SlowWrites;
use crate::sync::{intake, Followers, Intake, IntakeEnd};

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
        max_bytes: u64,
        to: ReplyTo,
    },
    IterDrop {
        conn: ConnId,
        iter: IterId,
    },
    /// A subscription's read of the change log (see `ServerOutput::WatchPull`).
    WatchPull {
        conn: ConnId,
        watch: WatchId,
        from: Option<CommitSeq>,
        max: u32,
        to: ReplyTo,
    },
    WatchDrop {
        conn: ConnId,
        watch: WatchId,
    },
    /// A connection is gone: drop its iterators.
    Disconnected {
        conn: ConnId,
    },
    /// Sent every [`TICK`]: the writer's timer (a checkpoint once writes pause).
    Tick,
}

/// How often the writer's timer is looked at.
pub(crate) const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Most jobs taken in one round; bounds the size of a write group.
const MAX_ROUND: usize = 1024;

/// How the store thread writes.
pub(crate) struct Writing {
    pub headroom: Headroom,
    pub dedup_retention: std::time::Duration,
    pub change_feed: bool,
    pub change_retention: party_proto::ChangeRetention,
    /// The stream this leadership's commits are recorded in, if the handle records.
    pub recorder: Option<crate::recording::Recorder>,
}

/// The store's state and the queue to the thread that works on it: the store thread's
/// end is [`StoreThread::run`].
pub(crate) fn open(
    store: Arc<dyn Backend>,
    followers: Followers,
    writing: Writing,
    scans: Scans,
) -> (StoreQueue, StoreThread) {
    let config = WriterConfig {
        max_group_ops: store.max_batch_ops(),
        dedup_retention: writing.dedup_retention,
        change_feed: writing.change_feed,
        change_retention: writing.change_retention,
        bugs: crate::injection::bugs(),
        ..WriterConfig::default()
    };
    let now = crate::clock::now();
    let mut writer = Writer::new(config, now);
    writer.set_wall_clock(now, crate::clock::wall_now());
    let worker = Worker {
        store,
        writer,
        followers,
        headroom: writing.headroom,
        scans,
        waiting: HashMap::new(),
        woken_at: None,
        recorder: writing.recorder,
    };
    let (queue, thread) = intake(worker);
    let queue = StoreQueue {
        intake: queue,
        slow: SlowWrites::default(),
    };
    (queue, StoreThread(thread))
}

/// The way to the store: the store thread's queue, or for small writes, the caller's own
/// thread.
#[derive(Clone)]
pub(crate) struct StoreQueue {
    intake: Intake<StoreJob, Worker>,
    slow: SlowWrites,
}

impl StoreQueue {
    /// Queues `job` for the store thread; false once the thread is gone.
    pub fn send(&self, job: StoreJob) -> bool {
        self.intake.send(job)
    }

    /// Carries `writes` out on the caller's thread, together (one group where the writer
    /// allows), if the store thread has no job left to carry out and none under way: then
    /// every job sent before is done (the connection's order holds), and the writes skip
    /// two hand-offs between threads, each a wake-up that costs tens of microseconds on a
    /// virtual machine, many times a commit. Their answers go where the store thread's
    /// would. Otherwise gives them back, to be queued in order; so too for a while after a
    /// commit here was slow ([`SlowWrites`]).
    pub fn write_here(&self, writes: Vec<StoreJob>) -> Result<(), Vec<StoreJob>> {
        let began = crate::clock::elapsed();
        if !self.slow.allow(began) {
            return Err(writes);
        }
        let given_back = self.intake.run_here(writes, Worker::round);
        let ended = crate::clock::elapsed();
        self.slow.took(ended, ended.saturating_sub(began));
        match given_back {
            None => Ok(()),
            Some(writes) => Err(writes),
        }
    }
}

/// The store thread's end of the store: see [`StoreThread::run`].
pub(crate) struct StoreThread(IntakeEnd<StoreJob, Worker>);

impl StoreThread {
    /// Runs jobs until every sender is gone, then stops the scan thread, checkpoints the
    /// store for whoever opens it next, tells `drained` and closes the store (in the other
    /// order for a store the process may not exit while it closes: RocksDB).
    pub fn run(self, drained: tokio::sync::oneshot::Sender<()>) {
        self.0.rounds(MAX_ROUND, |worker, round| {
            worker.round(round);
            std::ops::ControlFlow::Continue(())
        });
        let Worker { scans, store, .. } = self
            .0
            .into_state()
            .expect("every queue is gone, and with it every other reference to the store");
        scans.stop();
        // Before the handle is told: a process about to exit goes once it is.
        if let Err(error) = store.checkpoint_before_close() {
            tracing::warn!("checkpoint before close failed: {error}");
        }
        if store.may_exit_while_closing() {
            let _ = drained.send(());
            crate::injection::hold_store_close();
            drop(store);
        } else {
            drop(store);
            let _ = drained.send(());
        }
    }
}

/// Where a write's answer goes.
struct WriteReply {
    id: RequestId,
    to: ReplyTo,
}

struct Worker {
    store: Arc<dyn Backend>,
    writer: Writer<WriteReply>,
    followers: Followers,
    headroom: Headroom,
    scans: Scans,
    /// Reads of the change log that reached its end, waiting for the next commit.
    waiting: HashMap<(ConnId, WatchId), WaitingPull>,
    /// The last commit the waiting reads were looked at after.
    woken_at: Option<CommitSeq>,
    recorder: Option<crate::recording::Recorder>,
}

struct WaitingPull {
    from: Option<CommitSeq>,
    max: u32,
    to: ReplyTo,
}

impl Worker {
    fn round(&mut self, jobs: Vec<StoreJob>) {
        // Point reads in a row are answered together, with one `get_many` (one round trip
        // to a network store), before any write that came after them commits.
        let mut reads = Vec::new();
        for job in jobs {
            match job {
                StoreJob::Write { id, stamp, op, to } => {
                    crate::injection::panic_at(&op);
                    self.writer.write(WriteReply { id, to }, stamp, op);
                }
                StoreJob::Read {
                    id,
                    op: op @ (ReadOp::Get { .. } | ReadOp::GetMany { .. }),
                    to,
                } => {
                    if !self.writer.is_idle() {
                        // Whatever came before this read must be visible to it.
                        self.answer_reads(&mut reads);
                        self.write_queued();
                    }
                    reads.push((id, op, to));
                }
                // Only handed to the scan thread: the iterator's snapshot is already taken,
                // so these need not wait for the writes before them.
                job @ (StoreJob::IterPull { .. }
                | StoreJob::IterDrop { .. }
                | StoreJob::Disconnected { .. }) => self.run_job(job),
                other => {
                    self.answer_reads(&mut reads);
                    self.write_queued();
                    self.run_job(other);
                }
            }
        }
        self.answer_reads(&mut reads);
        self.write_queued();
    }

    /// Answers point reads with one `get_many` for all their keys.
    fn answer_reads(&mut self, reads: &mut Vec<(RequestId, ReadOp, ReplyTo)>) {
        if reads.is_empty() {
            return;
        }
        let keys: Vec<Vec<u8>> = reads
            .iter()
            .flat_map(|(_, op, _)| match op {
                ReadOp::Get { key } => std::slice::from_ref(key),
                ReadOp::GetMany { keys } => keys.as_slice(),
                ReadOp::Status => &[],
            })
            .cloned()
            .collect();
        let mut values = self
            .store
            .get_many(&keys)
            .map(Vec::into_iter)
            .map_err(ErrorCode::from);
        for (id, op, to) in reads.drain(..) {
            let result = match &mut values {
                Err(error) => Err(error.clone()),
                Ok(values) => Ok(match op {
                    ReadOp::GetMany { keys } => {
                        Response::Values(values.by_ref().take(keys.len()).collect())
                    }
                    _ => Response::Value(values.next().flatten().map(Bytes::from)),
                }),
            };
            let _ = to.send(ServerInput::Completed { id, result });
        }
    }

    /// Commits every write queued so far.
    fn write_queued(&mut self) {
        self.writer.cut(crate::clock::now());
        self.carry_out();
    }

    /// Carries out what the writer asks until it asks nothing more.
    fn carry_out(&mut self) {
        while let Some(output) = self.writer.poll_output() {
            let input = match output {
                WriterOutput::Commit(batch) => WriterInput::Committed(self.recorded_commit(&batch)),
                WriterOutput::Reply { to, result } => {
                    let _ = to.to.send(ServerInput::Completed { id: to.id, result });
                    continue;
                }
                WriterOutput::Checkpoint => {
                    let done = self
                        .store
                        .checkpoint()
                        .inspect_err(|error| tracing::warn!("checkpoint failed: {error}"))
                        .is_ok();
                    WriterInput::Checkpointed(done)
                }
                WriterOutput::LoadRecords(clients) => WriterInput::RecordsLoaded(
                    self.store
                        .dedup_records_of(&clients)
                        .map(|records| clients.into_iter().zip(records).collect())
                        .map_err(ErrorCode::from),
                ),
                WriterOutput::ReadChecks(reads) => WriterInput::ChecksRead(
                    self.store.read_for_checks(&reads).map_err(ErrorCode::from),
                ),
                WriterOutput::LoadLogEnds => {
                    let ends = self.store.change_log_ends();
                    if let (Ok(ends), Some(recorder)) = (&ends, &mut self.recorder) {
                        recorder.record(&Record::StoreNext {
                            at: crate::clock::now(),
                            next: LogEnds::next_commit(*ends),
                        });
                        if recorder.flush_later(None).is_err() {
                            self.recorder = None;
                        }
                    }
                    WriterInput::LogEndsLoaded(ends.map_err(ErrorCode::from))
                }
                WriterOutput::TrimLog { from, to } => {
                    let trimmed: Vec<CommitSeq> = (from.0..to.0).map(CommitSeq).collect();
                    WriterInput::LogTrimmed(
                        self.store
                            .remove_changes(&trimmed)
                            .inspect_err(|error| tracing::warn!("trimming the change log: {error}"))
                            .map_err(ErrorCode::from),
                    )
                }
                WriterOutput::ExpireRecords {
                    written_before_ms,
                    after,
                    max,
                } => WriterInput::RecordsExpired(
                    self.store
                        .expire_dedup_records(written_before_ms, after, max)
                        .inspect_err(|error| tracing::warn!("expiring dedup records: {error}"))
                        .map_err(ErrorCode::from),
                ),
            };
            self.writer.handle_input(crate::clock::now(), input);
        }
        if self.writer.last_committed() != self.woken_at {
            self.wake_waiting();
        }
    }

    /// Answers the reads of the change log that were waiting, now that a commit landed.
    fn wake_waiting(&mut self) {
        self.woken_at = self.writer.last_committed();
        for ((conn, watch), pull) in std::mem::take(&mut self.waiting) {
            self.watch_pull(conn, watch, pull);
        }
    }

    /// Answers a subscription's read of the change log, or keeps it until a commit.
    fn watch_pull(&mut self, conn: ConnId, watch: WatchId, pull: WaitingPull) {
        let (last, oldest) = (self.writer.last_committed(), self.writer.oldest_kept());
        let (from, read_from, next) = match plan_pull(pull.from, last, oldest) {
            PullPlan::Wait => {
                self.waiting.insert((conn, watch), pull);
                return;
            }
            PullPlan::Answer {
                from,
                read_from,
                next,
            } => (from, read_from, next),
        };
        let entries = match read_from {
            Some(start) => self.store.change_entries(start, false, pull.max as usize),
            None => Ok(Vec::new()),
        };
        let result = entries
            .map(|entries| LogRead {
                from,
                entries,
                next,
            })
            .map_err(ErrorCode::from);
        let _ = pull.to.send(ServerInput::WatchRead { watch, result });
    }

    /// Commits `batch`, if the handle records, recorded in the file before the store is
    /// asked (a leader killed between the commit and a record after it would leave a
    /// commit no recording tells of), and its answer recorded after.
    fn recorded_commit(&mut self, batch: &WriteBatch) -> CommitResult {
        let Some(recorder) = &mut self.recorder else {
            return self.commit(batch);
        };
        recorder.record(&Record::Committing {
            issued: crate::clock::now(),
            batch: Cow::Borrowed(batch),
        });
        if recorder.flush(None).is_err() {
            self.recorder = None;
        }
        let result = self.commit(batch);
        let Some(recorder) = &mut self.recorder else {
            return result;
        };
        recorder.record(&Record::Committed {
            answered: crate::clock::now(),
            result: Cow::Borrowed(&result),
        });
        // A replay can do without it (see `Record::Committing`), so nobody waits for it.
        if recorder.flush_later(None).is_err() {
            self.recorder = None;
        }
        result
    }

    fn commit(&self, batch: &WriteBatch) -> CommitResult {
        if let Err(error) = self.headroom.check() {
            return CommitResult::Refused(error);
        }
        match self.store.write(batch) {
            Ok(()) => {
                crate::injection::die_after_commit_of(&batch.ops);
                CommitResult::Committed
            }
            Err(unsettled @ BackendError::Unsettled { .. }) => {
                CommitResult::Unsettled(unsettled.to_string())
            }
            Err(BackendError::Stale { .. }) => CommitResult::Stale,
            Err(error) => CommitResult::Failed(error.into()),
        }
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
                Ok(chunks) => match self.scans.open(conn, iter, chunks) {
                    // Every write before the iterator has committed: it reads the store as
                    // of the writer's last commit.
                    Ok(()) => {
                        if let Some(seq) = self.writer.last_committed() {
                            let _ = to.send(ServerInput::IterAt { iter, seq });
                        }
                    }
                    Err(error) => {
                        let error = ErrorCode::Backend(format!(
                            "the leader cannot start its scan thread: {error}"
                        ));
                        let _ = to.send(ServerInput::IterFailed { iter, error });
                    }
                },
                Err(error) => {
                    let error = ErrorCode::from(error);
                    let _ = to.send(ServerInput::IterFailed { iter, error });
                }
            },
            StoreJob::IterPull {
                conn,
                iter,
                max,
                max_bytes,
                to,
            } => self.scans.send(ScanJob::Pull {
                conn,
                iter,
                max,
                max_bytes,
                to,
            }),
            StoreJob::IterDrop { conn, iter } => self.scans.send(ScanJob::Drop { conn, iter }),
            StoreJob::WatchPull {
                conn,
                watch,
                from,
                max,
                to,
            } => self.watch_pull(conn, watch, WaitingPull { from, max, to }),
            StoreJob::WatchDrop { conn, watch } => {
                self.waiting.remove(&(conn, watch));
            }
            StoreJob::Disconnected { conn } => {
                self.scans.send(ScanJob::Disconnected { conn });
                self.waiting.retain(|(c, _), _| *c != conn);
            }
            StoreJob::Tick => {
                let now = crate::clock::now();
                self.writer.set_wall_clock(now, crate::clock::wall_now());
                self.writer.handle_timeout(now);
                self.carry_out();
            }
            StoreJob::Write { .. } => unreachable!("writes are grouped by round()"),
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
        ReadOp::Get { key } => store.get_shared(&key).map(Response::Value),
        ReadOp::GetMany { keys } => store.get_many(&keys).map(Response::Values),
        status @ ReadOp::Status => return Err(status),
    };
    Ok(result.map_err(ErrorCode::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use party_backends::MemoryBackend;
    use party_proto::{ClientId, WriteSeq};

    fn get(id: u64, key: &str, to: &ReplyTo) -> StoreJob {
        StoreJob::Read {
            id: RequestId(id),
            op: ReadOp::Get {
                key: key.as_bytes().to_vec(),
            },
            to: to.clone(),
        }
    }

    /// A put of `key` = `value`, the `seq`-th write of one client, sent just now.
    fn put(id: u64, seq: u64, key: &str, value: &str, to: &ReplyTo) -> StoreJob {
        let now_ms = crate::clock::wall_now().as_millis() as u64;
        StoreJob::Write {
            id: RequestId(id),
            stamp: WriteStamp {
                client: ClientId(1),
                seq: WriteSeq(seq),
                oldest_pending: WriteSeq(seq),
                first_sent_ms: now_ms,
            },
            op: WriteOp::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            },
            to: to.clone(),
        }
    }

    /// An in-memory store, its queue and its store thread's end (not running yet), the
    /// directory its headroom is checked in, and the store itself.
    fn open_on_memory() -> (StoreQueue, StoreThread, tempfile::TempDir, Arc<dyn Backend>) {
        open_on(Arc::new(MemoryBackend::new()), Duration::from_secs(60))
    }

    /// [`open_on_memory`] on the store given, keeping dedup records for `dedup_retention`.
    fn open_on(
        store: Arc<dyn Backend>,
        dedup_retention: Duration,
    ) -> (StoreQueue, StoreThread, tempfile::TempDir, Arc<dyn Backend>) {
        open_writing(store, |writing| writing.dedup_retention = dedup_retention)
    }

    /// [`open_on_memory`] on the store given, its writing set as `set` says.
    fn open_writing(
        store: Arc<dyn Backend>,
        set: impl FnOnce(&mut Writing),
    ) -> (StoreQueue, StoreThread, tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let mut writing = Writing {
            headroom: Headroom::new(dir.path().to_owned(), 0),
            dedup_retention: Duration::from_secs(60),
            change_feed: false,
            change_retention: party_proto::ChangeRetention::default(),
            recorder: None,
        };
        set(&mut writing);
        let scans = Scans::default();
        let (queue, thread) = open(store.clone(), Followers::default(), writing, scans);
        (queue, thread, dir, store)
    }

    /// Through a connection's access: a lone small write or transaction that checks keys
    /// commits at once, on the caller's thread; a write of a burst, a clear and a
    /// transaction that checks a range, even beside a key, go to the store thread (each
    /// tried on a store thread with nothing queued).
    #[test]
    fn a_connection_commits_only_its_lone_small_writes_itself() {
        // What carrying `op` out on a fresh store answers at once.
        let answer_at_once = |seq: u64, oldest_pending: u64, op: WriteOp| {
            let (accesses, thread, _dir) = accesses_on_memory();
            let mut access = accesses.open();
            let stamp = WriteStamp {
                client: ClientId(1),
                seq: WriteSeq(seq),
                oldest_pending: WriteSeq(oldest_pending),
                first_sent_ms: crate::clock::wall_now().as_millis() as u64,
            };
            let id = RequestId(1);
            let answered = access.carry_out(party_proto::ServerOutput::Write { id, stamp, op });
            drop((access, accesses));
            run_until_closed(thread);
            answered
        };
        let put = WriteOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let answered = answer_at_once(1, 1, put.clone());
        let written = Ok(Response::Written);
        assert!(
            matches!(&answered, Some(ServerInput::Completed { result, .. }) if *result == written),
            "{answered:?}"
        );
        // Behind an older write of its client: a burst's.
        assert!(answer_at_once(2, 1, put).is_none());
        let clear = WriteOp::Clear {
            range: party_proto::KeyRange::default(),
        };
        assert!(answer_at_once(1, 1, clear).is_none());
        let key_checked = party_proto::wire::ReadCheck::Key {
            key: b"k".to_vec(),
            value: None,
        };
        let transaction = |reads| WriteOp::Transaction {
            reads,
            writes: Vec::new(),
        };
        let answered = answer_at_once(1, 1, transaction(vec![key_checked.clone()]));
        assert!(
            matches!(&answered, Some(ServerInput::Completed { result, .. }) if *result == written),
            "{answered:?}"
        );
        let range_checked = party_proto::wire::ReadCheck::Range {
            range: party_proto::KeyRange::default(),
            entries: Vec::new(),
        };
        let both = transaction(vec![key_checked, range_checked]);
        assert!(answer_at_once(1, 1, both).is_none());
    }

    /// A turn's small writes in a row commit together on the connection's task while the
    /// store thread has nothing to do, answered at once; a read the session puts behind
    /// them is queued only after they committed, so it sees them.
    #[test]
    fn a_burst_of_writes_commits_on_the_connection_and_a_read_behind_it_sees_it() {
        let (at_once, later) = burst_then_read([1, 1, 1]);
        assert_eq!(at_once, [1, 2, 3]);
        assert_eq!(later.keys().copied().collect::<Vec<_>>(), [4]);
    }

    /// A big write is no part of a burst: it goes to the store thread, and the writes
    /// after it follow it there.
    #[test]
    fn a_big_write_ends_a_burst_and_goes_to_the_store_thread() {
        let (at_once, later) = burst_then_read([1, 70 * 1024, 1]);
        assert_eq!(at_once, [1]);
        assert_eq!(later.keys().copied().collect::<Vec<_>>(), [2, 3, 4]);
    }

    /// A sender that says it is full gets no more of the session's answers in that run:
    /// the rest come in the next runs, in order (the leader sends between runs, so that a
    /// turn of big answers is not all encoded before the first goes out), and the writes
    /// taken in that run still commit.
    #[test]
    fn a_full_sender_gets_the_next_answers_in_the_next_runs() {
        use crate::access::{Ran, Sent};
        use party_proto::wire::{ClientMessage, Hello, ProtocolId, ReadOp, ServerMessage};
        use party_proto::{ServerConfig, ServerSession};

        let (accesses, _thread, _dir) = accesses_on_memory();
        let mut access = accesses.open();
        let mut session = ServerSession::new(crate::clock::now(), ServerConfig::default());
        let hello = Hello {
            protocol: ProtocolId::CURRENT,
            client_id: ClientId(1),
            store: "fjall".into(),
        };
        let get = |id: u64| ClientMessage::Read {
            id: RequestId(id),
            op: ReadOp::Get { key: vec![b'k'] },
        };
        let first_sent_ms = crate::clock::wall_now().as_millis() as u64;
        let put = |id: u64| ClientMessage::Write {
            id: RequestId(id),
            seq: WriteSeq(id),
            oldest_pending: WriteSeq(3),
            first_sent_ms,
            op: WriteOp::Put {
                key: vec![b'k'],
                value: vec![b'v'],
            }
            .into(),
        };
        // The gets' answers come after the puts in the session's outputs: the first fills
        // the sender while the puts wait in a burst, which must still commit.
        let messages = [ClientMessage::Hello(hello), get(1), get(2), put(3), put(4)];
        for message in messages {
            session.handle_input(crate::clock::now(), ServerInput::Message(message));
        }
        let mut runs = Vec::new();
        loop {
            let mut answered = Vec::new();
            let ran = access.run_outputs(&mut session, |message| match message {
                ServerMessage::Reply { id, .. } => {
                    answered.push(id.0);
                    Sent::Full
                }
                _ => Sent::Taken,
            });
            runs.push(answered);
            if !ran.full {
                assert_eq!(ran, Ran::default());
                break;
            }
        }
        assert_eq!(runs, [vec![1], vec![2], vec![3], vec![4], vec![]]);
    }

    /// Runs a connection's session on a fresh in-memory store, with no store thread running
    /// at first, through a hello, puts of `a`, `b` and `c` with values of the given
    /// lengths, then a `get_many` of `a` and `c`: which requests were answered at once, in
    /// order, and which once the store thread ran (checking the get saw both puts).
    fn burst_then_read(
        lengths: [usize; 3],
    ) -> (Vec<u64>, std::collections::BTreeMap<u64, Response>) {
        use party_proto::wire::{ClientMessage, Hello, ProtocolId, ServerMessage};
        use party_proto::{ServerConfig, ServerSession};

        let (accesses, thread, _dir) = accesses_on_memory();
        let mut access = accesses.open();
        let mut session = ServerSession::new(crate::clock::now(), ServerConfig::default());
        let first_sent_ms = crate::clock::wall_now().as_millis() as u64;
        let write = |id: u64, key: &str| ClientMessage::Write {
            id: RequestId(id),
            seq: WriteSeq(id),
            oldest_pending: WriteSeq(1),
            first_sent_ms,
            op: WriteOp::Put {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; lengths[id as usize - 1]],
            }
            .into(),
        };
        let hello = Hello {
            protocol: ProtocolId::CURRENT,
            client_id: ClientId(1),
            store: "fjall".into(),
        };
        let read = ClientMessage::Read {
            id: RequestId(4),
            op: ReadOp::GetMany {
                keys: vec![b"a".to_vec(), b"c".to_vec()],
            },
        };
        for message in [
            ClientMessage::Hello(hello),
            write(1, "a"),
            write(2, "b"),
            write(3, "c"),
            read,
        ] {
            session.handle_input(crate::clock::now(), ServerInput::Message(message));
        }
        // The answers one run of the session's outputs sends.
        let run = |session: &mut ServerSession, access: &mut crate::access::StoreAccess| {
            let mut answered = Vec::new();
            access.run_outputs(session, |message| {
                if let ServerMessage::Reply { id, result } = message {
                    answered.push((id.0, result.unwrap()));
                }
                crate::access::Sent::Taken
            });
            answered
        };
        let at_once = run(&mut session, &mut access);
        let store_thread = std::thread::spawn(move || run_until_closed(thread));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut later = std::collections::BTreeMap::new();
        while !later.contains_key(&4) {
            let answer = runtime.block_on(access.next_reply()).expect("an answer");
            session.handle_input(crate::clock::now(), answer);
            later.extend(run(&mut session, &mut access));
        }
        drop((access, accesses));
        store_thread.join().unwrap();
        let values = [lengths[0], lengths[2]].map(|len| Some(vec![b'v'; len]));
        assert_eq!(
            later[&4],
            Response::Values(values.to_vec()),
            "the get saw both puts"
        );
        let writes = at_once
            .iter()
            .map(|(id, answer)| (id, answer))
            .chain(&later);
        for (id, answer) in writes.filter(|(id, _)| **id != 4) {
            assert_eq!(*answer, Response::Written, "put {id}");
        }
        (at_once.into_iter().map(|(id, _)| id).collect(), later)
    }

    /// Connections' ways to a fresh in-memory store whose store thread is not running yet
    /// (its end given), and the directory its headroom is checked in.
    fn accesses_on_memory() -> (crate::access::Accesses, StoreThread, tempfile::TempDir) {
        accesses_on(Arc::new(MemoryBackend::new()))
    }

    /// [`accesses_on_memory`] on the store given.
    fn accesses_on(
        store: Arc<dyn Backend>,
    ) -> (crate::access::Accesses, StoreThread, tempfile::TempDir) {
        let (queue, thread, dir, backend) = open_on(store, Duration::from_secs(60));
        let accesses = crate::access::Accesses {
            backend,
            queue,
            conn_ids: crate::sync::ConnIds::default(),
        };
        (accesses, thread, dir)
    }

    /// Runs the store thread's loop until every queue is gone, scan thread included.
    fn run_until_closed(thread: StoreThread) {
        let (drained, _) = tokio::sync::oneshot::channel();
        thread.run(drained);
    }

    /// Runs the store thread's loop on an in-memory store over `jobs`, sent in order.
    fn run_on_memory(jobs: impl IntoIterator<Item = StoreJob>) {
        let (queue, thread, _dir, _) = open_on_memory();
        for job in jobs {
            assert!(queue.send(job));
        }
        drop(queue);
        run_until_closed(thread);
    }

    /// A write is carried out on the caller's thread only while the store thread has no
    /// job left and none under way: never ahead of a job sent before it.
    #[test]
    fn a_lone_write_runs_on_the_callers_thread_and_never_overtakes_a_queued_job() {
        let (to, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let (queue, thread, _dir, _) = open_on_memory();
        assert!(queue.write_here(vec![put(1, 1, "k", "first", &to)]).is_ok());
        // Answered before the call returned, with no store thread running.
        let written = Ok(Response::Written);
        assert!(matches!(
            answers.try_recv(),
            Ok(ServerInput::Completed { id: RequestId(1), result }) if result == written
        ));
        // While a job sent before it waits, it is given back: the read must not see it.
        assert!(queue.send(get(3, "k", &to)));
        let given_back = queue.write_here(vec![put(4, 2, "k", "second", &to)]);
        assert!(answers.try_recv().is_err());
        let given_back = given_back.expect_err("given back");
        assert_eq!(given_back.len(), 1);
        for write in given_back {
            assert!(queue.send(write));
        }
        drop(queue);
        run_until_closed(thread);
        let mut got = std::collections::BTreeMap::new();
        while let Ok(ServerInput::Completed { id, result }) = answers.try_recv() {
            got.insert(id.0, result.unwrap());
        }
        assert_eq!(got[&3], Response::Value(Some(Bytes::from_static(b"first"))));
        assert_eq!(got[&4], Response::Written);
    }

    /// An iterator is read on the scan thread, yet from the snapshot the store thread took
    /// in order with the writes: it holds the write before it and not the one after, and
    /// every pull is answered, in order, before the store closes.
    #[test]
    fn an_iterator_read_off_the_store_thread_keeps_its_place_among_the_writes() {
        let (to, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let (conn, iter) = (1, IterId(1));
        let options = IterOptions::default();
        let pull = |max| StoreJob::IterPull {
            conn,
            iter,
            max,
            max_bytes: u64::MAX,
            to: to.clone(),
        };
        run_on_memory([
            put(1, 1, "a", "a", &to),
            put(2, 2, "b", "b", &to),
            StoreJob::IterOpen {
                conn,
                iter,
                options,
                to: to.clone(),
            },
            put(3, 3, "c", "c", &to),
            pull(1),
            put(4, 4, "d", "d", &to),
            pull(10),
            pull(10),
        ]);
        let mut chunks = Vec::new();
        while let Ok(answer) = answers.try_recv() {
            if let ServerInput::IterChunk {
                entries, exhausted, ..
            } = answer
            {
                let keys: Vec<Vec<u8>> = entries.into_iter().map(|entry| entry.key).collect();
                chunks.push((keys, exhausted));
            }
        }
        assert_eq!(
            chunks,
            [(vec![b"a".to_vec()], false), (vec![b"b".to_vec()], true),],
            "the pull after the end is not answered: the iterator is gone"
        );
    }

    /// Point reads in a row are answered together, and each sees exactly the writes that
    /// came before it: a read before a write does not see it, a read after it does.
    #[test]
    fn reads_in_a_round_see_the_writes_before_them_and_none_after() {
        let (to, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let write = |id: u64, seq: u64, value: &str| put(id, seq, "k", value, &to);
        run_on_memory([
            get(1, "k", &to),
            get(2, "other", &to),
            write(3, 1, "first"),
            write(4, 2, "second"),
            get(5, "k", &to),
            StoreJob::Read {
                id: RequestId(6),
                op: ReadOp::GetMany {
                    keys: vec![b"other".to_vec(), b"k".to_vec()],
                },
                to: to.clone(),
            },
            write(7, 3, "third"),
            get(8, "k", &to),
        ]);
        let mut got = std::collections::BTreeMap::new();
        while let Ok(ServerInput::Completed { id, result }) = answers.try_recv() {
            got.insert(id.0, result.unwrap());
        }
        let value = |v: &str| Response::Value(Some(v.as_bytes().to_vec().into()));
        assert_eq!(got[&1], Response::Value(None));
        assert_eq!(got[&2], Response::Value(None));
        assert_eq!(got[&5], value("second"));
        assert_eq!(
            got[&6],
            Response::Values(vec![None, Some(b"second".to_vec())])
        );
        assert_eq!(got[&8], value("third"));
        assert_eq!(got.len(), 8, "every job answered once");
    }

    /// A client's dedup record goes once it is older than the retention: the store thread
    /// carries out the writer's sweeps as its ticks come, or every process that ever wrote
    /// would leave its record in the store for good.
    #[test]
    fn a_dedup_record_is_swept_from_the_store_once_past_its_retention() {
        // Long enough that the write lands inside its re-send window (half the retention)
        // on a loaded machine: at 20 ms, a store thread slow to start once answered it
        // `OutcomeUnknown`.
        let retention = Duration::from_secs(2);
        let (queue, thread, _dir, store) = open_on(Arc::new(MemoryBackend::new()), retention);
        let store_thread = std::thread::spawn(move || run_until_closed(thread));
        let (to, mut answers) = tokio::sync::mpsc::unbounded_channel();
        assert!(queue.send(put(1, 1, "k", "v", &to)));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answer = runtime.block_on(answers.recv());
        assert!(
            matches!(
                &answer,
                Some(ServerInput::Completed {
                    result: Ok(Response::Written),
                    ..
                })
            ),
            "{answer:?}"
        );
        let record = || store.dedup_records_of(&[ClientId(1)]).unwrap().remove(0);
        assert!(record().is_some(), "the write left its client's record");
        let given_up = std::time::Instant::now() + retention + Duration::from_secs(10);
        while record().is_some() {
            assert!(
                std::time::Instant::now() < given_up,
                "the record outlived its retention by 10 s"
            );
            assert!(queue.send(StoreJob::Tick));
            std::thread::sleep(retention / 4);
        }
        drop(queue);
        store_thread.join().unwrap();
    }

    /// A trim of the change log deletes its oldest entries down to the retention, not one
    /// more: however the trims fall between the commits, the log never holds fewer
    /// entries than the retention keeps, and always the newest.
    #[test]
    fn the_change_log_is_trimmed_down_to_its_retention_and_no_further() {
        let groups = 8;
        let retention = party_proto::ChangeRetention {
            groups,
            bytes: u64::MAX,
        };
        let store = Arc::new(MemoryBackend::new());
        let (queue, thread, _dir, store) = open_writing(store, |writing| {
            writing.change_feed = true;
            writing.change_retention = retention;
        });
        let store_thread = std::thread::spawn(move || run_until_closed(thread));
        let (to, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for seq in 1..=30 {
            assert!(queue.send(put(seq, seq, "k", "v", &to)));
            // A tick (a trim due runs then) and a read behind it: by the read's answer,
            // the store thread has done both.
            assert!(queue.send(StoreJob::Tick));
            assert!(queue.send(get(100 + seq, "k", &to)));
            for _ in 0..2 {
                let answer = runtime.block_on(answers.recv());
                let answered =
                    matches!(&answer, Some(ServerInput::Completed { result: Ok(_), .. }));
                assert!(answered, "{answer:?}");
            }
            let numbers = logged_numbers(&*store);
            let newest = *numbers.last().unwrap();
            let kept = numbers.len() as u64;
            assert!(
                kept >= seq.min(groups) && kept <= groups + groups / 8 + 1,
                "after {seq} commits the log holds {numbers:?}"
            );
            assert_eq!(numbers, (newest + 1 - kept..=newest).collect::<Vec<_>>());
        }
        drop(queue);
        store_thread.join().unwrap();
    }

    /// The numbers of the entries in `store`'s change log, oldest first.
    fn logged_numbers(store: &dyn Backend) -> Vec<u64> {
        let log = store
            .change_entries(party_proto::CommitSeq(0), false, usize::MAX)
            .unwrap();
        log.iter().map(|(number, _)| number.0).collect()
    }

    /// A group of writes the store cannot tell landed is answered `OutcomeUnknown` whole,
    /// never failed (that would say nothing was applied, and a group of several is then
    /// committed again write by write): here it landed, and the change log keeps its entry,
    /// whose number the next commit must not take again.
    #[test]
    fn writes_the_store_cannot_settle_are_answered_outcome_unknown_and_keep_their_number() {
        let store = QuirkyStore {
            unsettled_writes: 1.into(),
            ..QuirkyStore::over_abc(Arc::new(()))
        };
        let (queue, thread, _dir, store) = open_writing(Arc::new(store), |writing| {
            writing.change_feed = true;
        });
        let (to, mut answers) = tokio::sync::mpsc::unbounded_channel();
        // Queued before the store thread runs: one group.
        assert!(queue.send(put(1, 1, "k", "first", &to)));
        assert!(queue.send(put(2, 2, "l", "first", &to)));
        let store_thread = std::thread::spawn(move || run_until_closed(thread));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut answer = || match runtime.block_on(answers.recv()) {
            Some(ServerInput::Completed { id, result }) => (id.0, result),
            other => panic!("{other:?}"),
        };
        for id in [1, 2] {
            let (answered, result) = answer();
            assert_eq!(answered, id);
            assert!(
                matches!(result, Err(ErrorCode::OutcomeUnknown(_))),
                "write {id}: {result:?}"
            );
        }
        assert!(queue.send(put(3, 3, "k", "second", &to)));
        assert_eq!(answer(), (3, Ok(Response::Written)));
        drop(queue);
        store_thread.join().unwrap();
        assert_eq!(store.get(b"l").unwrap(), Some(b"first".to_vec()));
        let numbers = logged_numbers(&*store);
        assert_eq!(numbers.len(), 2, "an entry for each commit: {numbers:?}");
        assert_eq!(numbers[1], numbers[0] + 1);
    }

    /// A connection that goes lets go of its iterators on the leader at once, not when the
    /// store closes: each holds a snapshot of the store (fjall's: its memtables, however
    /// many flushes ago), and a leader outlives the followers that come and go, killed
    /// mid-scan or not. Another connection's iterator reads on.
    #[test]
    fn a_gone_connection_lets_go_of_its_iterators_while_the_store_runs() {
        use party_proto::ServerOutput;

        let live = Arc::new(());
        let store = QuirkyStore::over_abc(live.clone());
        let (accesses, thread, _dir) = accesses_on(Arc::new(store));
        // Besides the iterators' clones: this one and the store's.
        let iterators_open = || Arc::strong_count(&live) - 2;
        let store_thread = std::thread::spawn(move || run_until_closed(thread));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let iter = IterId(1);
        // Pulls one entry of the connection's iterator, waiting for its answer.
        let pull_one = |access: &mut crate::access::StoreAccess| {
            let pull = ServerOutput::IterPull {
                iter,
                max: 1,
                max_bytes: u64::MAX,
            };
            assert!(access.carry_out(pull).is_none());
            loop {
                match runtime.block_on(access.next_reply()).expect("an answer") {
                    ServerInput::IterChunk { entries, .. } => return entries.len(),
                    ServerInput::IterAt { .. } => {}
                    other => panic!("unexpected answer {other:?}"),
                }
            }
        };
        let (mut gone, mut staying) = (accesses.open(), accesses.open());
        for access in [&mut gone, &mut staying] {
            let options = IterOptions::default();
            assert!(access
                .carry_out(ServerOutput::IterOpen { iter, options })
                .is_none());
            assert_eq!(pull_one(access), 1);
        }
        assert_eq!(iterators_open(), 2);
        drop(gone);
        // Jobs reach the scan thread in order: by this answer it took the going one's.
        assert_eq!(pull_one(&mut staying), 1);
        assert_eq!(
            iterators_open(),
            1,
            "the gone connection's iterator is let go of"
        );
        drop((staying, accesses));
        store_thread.join().unwrap();
        assert_eq!(
            Arc::strong_count(&live),
            1,
            "the store and its iterators are gone"
        );
    }

    /// A store's iterator that panics (a bug of the store) fails its own scan with the
    /// cause, and the scan thread reads on for every other iterator.
    #[test]
    fn an_iterator_that_panics_fails_its_own_scan_alone() {
        let store = QuirkyStore {
            panic_at: Some(b"b"),
            ..QuirkyStore::over_abc(Arc::new(()))
        };
        let (accesses, thread, _dir) = accesses_on(Arc::new(store));
        let store_thread = std::thread::spawn(move || run_until_closed(thread));
        let (mut panicking, mut other) = (accesses.open(), accesses.open());
        let failed = scan_once(&mut panicking, party_proto::KeyRange::all(), 10);
        let error = ErrorCode::Backend("reading the store panicked".into());
        assert_eq!(
            failed,
            ServerInput::IterFailed {
                iter: IterId(1),
                error
            }
        );
        let past_the_panic = party_proto::KeyRange::all().after(b"b");
        let ServerInput::IterChunk { entries, .. } = scan_once(&mut other, past_the_panic, 10)
        else {
            panic!("the other scan failed");
        };
        let keys: Vec<Vec<u8>> = entries.into_iter().map(|entry| entry.key).collect();
        assert_eq!(keys, [b"c".to_vec()]);
        drop((panicking, other, accesses));
        store_thread.join().unwrap();
    }

    /// The store thread closes the store (and tells the handle so) only once the scan
    /// thread has let go of every iterator: each holds a snapshot of the store, which would
    /// stay open behind the lock's release otherwise.
    #[test]
    fn the_store_closes_only_once_the_scan_thread_let_go_of_its_iterators() {
        let live = Arc::new(());
        let store = QuirkyStore {
            drop_time: Duration::from_millis(100),
            ..QuirkyStore::over_abc(live.clone())
        };
        let (accesses, thread, _dir) = accesses_on(Arc::new(store));
        let store_thread = std::thread::spawn(move || run_until_closed(thread));
        let mut access = accesses.open();
        let read = scan_once(&mut access, party_proto::KeyRange::all(), 1);
        assert!(
            matches!(
                read,
                ServerInput::IterChunk {
                    exhausted: false,
                    ..
                }
            ),
            "{read:?}"
        );
        // The scan thread holds the iterator, not read to its end; the connection goes,
        // and with the last way to the store, the store.
        drop((access, accesses));
        store_thread.join().unwrap();
        assert_eq!(
            Arc::strong_count(&live),
            1,
            "an iterator outlived the store thread"
        );
    }

    /// Opens iterator 1 of `access` over `range`, pulls up to `max` entries of it and gives
    /// the answer. Bounded: a scan thread that died would leave the pull unanswered.
    fn scan_once(
        access: &mut crate::access::StoreAccess,
        range: party_proto::KeyRange,
        max: u32,
    ) -> ServerInput {
        use party_proto::ServerOutput;

        let iter = IterId(1);
        let options = IterOptions {
            range,
            ..IterOptions::default()
        };
        assert!(access
            .carry_out(ServerOutput::IterOpen { iter, options })
            .is_none());
        let pull = ServerOutput::IterPull {
            iter,
            max,
            max_bytes: u64::MAX,
        };
        assert!(access.carry_out(pull).is_none());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        loop {
            let reply =
                async { tokio::time::timeout(Duration::from_secs(10), access.next_reply()).await };
            match runtime.block_on(reply).expect("no answer in 10 s") {
                Some(ServerInput::IterAt { .. }) => {}
                answer => return answer.expect("an answer"),
            }
        }
    }

    /// An in-memory store whose iterators each hold a clone of `live` while they live,
    /// panic on reaching the key `panic_at`, and take `drop_time` to let go of it (as a
    /// store's iterator may take a while to release its snapshot); and whose next
    /// `unsettled_writes` writes land but say the store cannot tell whether they did (as a
    /// network store's lost answer, or sled's failed flush after the commit).
    #[derive(Debug)]
    struct QuirkyStore {
        store: MemoryBackend,
        live: Arc<()>,
        panic_at: Option<&'static [u8]>,
        drop_time: Duration,
        unsettled_writes: std::sync::atomic::AtomicUsize,
    }

    impl QuirkyStore {
        /// Over a store holding `a`, `b` and `c` (each its own value), its iterators plain.
        fn over_abc(live: Arc<()>) -> Self {
            let store = MemoryBackend::new();
            for key in ["a", "b", "c"] {
                let put = WriteOp::Put {
                    key: key.into(),
                    value: key.into(),
                };
                store.write(WriteBatch::new().push(put)).unwrap();
            }
            QuirkyStore {
                store,
                live,
                panic_at: None,
                drop_time: Duration::ZERO,
                unsettled_writes: 0.into(),
            }
        }
    }

    /// An iterator's clone of `live`, let go of `drop_time` after its drop starts.
    #[derive(Debug)]
    struct Held {
        _live: Arc<()>,
        drop_time: Duration,
    }

    impl Drop for Held {
        fn drop(&mut self) {
            std::thread::sleep(self.drop_time);
        }
    }

    impl Backend for QuirkyStore {
        fn name(&self) -> &'static str {
            self.store.name()
        }

        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
            self.store.get(key)
        }

        fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
            self.store.get_many(keys)
        }

        fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
            use std::sync::atomic::Ordering;

            self.store.write(batch)?;
            let unsettled =
                self.unsettled_writes
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        left.checked_sub(1)
                    });
            match unsettled {
                Ok(_) => Err(BackendError::Unsettled {
                    backend: self.name(),
                    source: "the answer was lost".into(),
                }),
                Err(_) => Ok(()),
            }
        }

        fn change_entries(
            &self,
            from: CommitSeq,
            newest_first: bool,
            max: usize,
        ) -> Result<Vec<(CommitSeq, Vec<u8>)>, BackendError> {
            self.store.change_entries(from, newest_first, max)
        }

        fn remove_changes(&self, seqs: &[CommitSeq]) -> Result<(), BackendError> {
            self.store.remove_changes(seqs)
        }

        fn iter(
            &self,
            range: &party_proto::KeyRange,
            reverse: bool,
        ) -> Result<party_backends::EntryIter, BackendError> {
            let held = Held {
                _live: self.live.clone(),
                drop_time: self.drop_time,
            };
            let panic_at = self.panic_at;
            // The clone lives as long as the iterator, in its closure.
            let entries = self.store.iter(range, reverse)?.inspect(move |entry| {
                let _held = &held;
                let key = entry.as_ref().map(|entry| entry.key.as_slice());
                assert!(key.ok() != panic_at, "the store's iterator panics");
            });
            Ok(Box::new(entries))
        }

        fn dedup_records_of(
            &self,
            clients: &[ClientId],
        ) -> Result<Vec<Option<party_proto::DedupRecord>>, BackendError> {
            self.store.dedup_records_of(clients)
        }

        fn expire_dedup_records(
            &self,
            written_before_ms: u64,
            after: Option<ClientId>,
            max: usize,
        ) -> Result<Option<ClientId>, BackendError> {
            self.store
                .expire_dedup_records(written_before_ms, after, max)
        }

        fn writes_fast(&self) -> bool {
            self.store.writes_fast()
        }
    }
}

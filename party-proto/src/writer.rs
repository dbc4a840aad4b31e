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
//! A group that holds transactions ([`WriteOp::Transaction`]) is formed only once the
//! store has been read for their reads ([`WriterOutput::ReadChecks`]): each transaction is
//! admitted against the dedup table first (a re-send of one the last leader applied is
//! answered from its record, not checked again: its own writes changed what it read), and
//! then applied if its reads still hold, or answered [`Response::Conflict`] and counted as
//! failed. See [`crate::txn`].
//!
//! Every group is numbered ([`CommitSeq`], one more than the last group the store ever
//! committed, which the writer reads first: [`WriterOutput::LoadLogEnds`]) and its batch
//! appends the group's changes to the store's change log under that number
//! ([`crate::feed`]), so a subscriber can follow the commits across leaders. When the log
//! grows an eighth past [`WriterConfig::change_retention`], the writer trims its oldest
//! entries a page at a time, between groups ([`WriterOutput::TrimLog`]). A commit whose
//! outcome is unknown (or refused as stale) makes it read the log's end again, as another
//! writer may have taken the number.
//!
//! Once writes pause for [`WriterConfig::quiet_period`] after a write, the writer asks for
//! a checkpoint, so that a leader killed while quiet leaves its successor little to replay.
//! A new writer counts what its store replayed when it opened as written: a leader killed
//! before its checkpoint would otherwise leave every later leader that only reads to
//! replay the same writes again at each open.
//!
//! The dedup table starts empty: before admitting the writes of a group, the writer asks
//! for the stored records of the clients it does not know yet
//! ([`WriterOutput::LoadRecords`]), so a new leader serves at once however many clients
//! ever wrote. Every [`WriterConfig::dedup_retention`] / 8 (at most an hour) it sweeps the
//! stored records a page at a time, between groups, removing those whose client has not
//! written for the retention ([`WriterOutput::ExpireRecords`]).

use std::collections::VecDeque;

use rustc_hash::FxHashSet;
use std::time::Duration;

use crate::changelog::ChangeLog;
use crate::error::ErrorCode;
use crate::feed::{
    encode_entry, encode_unlogged, ChangeRetention, CommitSeq, LogAppend, LogEnds, LogSpan,
};
use crate::ids::ClientId;
use crate::server::{Admission, DedupRecord, DedupTable, WriteStamp};
use crate::time::Timestamp;
use crate::txn::{reads_to_check, CheckRead, CheckValue, GroupWrites, Snapshot};
use crate::wire::{ReadCheck, Response, WriteOp};

/// One atomic, durable commit: the writes in order, and the dedup records and the change
/// log entry to store with them in the same commit.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
    pub records: Vec<(ClientId, DedupRecord)>,
    pub log: Option<LogAppend>,
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
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct WriterConfig {
    /// How long writes must pause before the store is checkpointed.
    pub quiet_period: Duration,
    /// The most operations the store commits at once (etcd: 127), counted as
    /// [`group_cost`] counts them: a group is cut before a write that would pass it, so
    /// only a write too large by itself meets the store's refusal, or a group whose clears
    /// cost the store more than one operation (etcd cuts a cleared range around the keys
    /// the group writes); such a group fails and its writes are retried one by one.
    pub max_group_ops: Option<usize>,
    /// How long a client's dedup record is kept after its last write. Clients never
    /// re-send a write older than half of it (see `ClientConfig::resend_window`).
    pub dedup_retention: Duration,
    /// The wall clock at the driver's epoch, as a duration since the Unix epoch: the
    /// records' times are wall-clock times (the writers of one store may be different
    /// processes, on different hosts with etcd), the machine's `now` is not.
    pub wall_clock_at_epoch: Duration,
    /// Whether the change log keeps each group's writes (a change feed). Without, each
    /// group still takes its number, with an entry that says its writes were not kept: a
    /// subscriber that comes to it learns it lost them.
    pub change_feed: bool,
    /// How much of the change log the store keeps.
    pub change_retention: ChangeRetention,
    /// Bugs to re-create, for the simulator.
    pub bugs: crate::bugs::Bugs,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            quiet_period: Duration::from_millis(100),
            max_group_ops: None,
            dedup_retention: DEFAULT_DEDUP_RETENTION,
            wall_clock_at_epoch: Duration::ZERO,
            change_feed: true,
            change_retention: ChangeRetention::default(),
            bugs: crate::bugs::Bugs::default(),
        }
    }
}

/// How long dedup records are kept by default: a day.
pub const DEFAULT_DEDUP_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Records one page of a sweep looks at: a few milliseconds of the store thread's time,
/// so that writes arriving meanwhile wait little.
pub const EXPIRY_PAGE: usize = 1024;

/// How the store took a [`WriterOutput::Commit`].
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CommitResult {
    /// Durable: every write of the group is applied.
    Committed,
    /// The store failed the batch; nothing of it was applied.
    Failed(ErrorCode),
    /// The batch never reached the store (its disk is full or read-only); nothing was
    /// applied, and every write would meet the same refusal.
    Refused(ErrorCode),
    /// The store cannot tell whether the batch landed (a network store whose answer was
    /// lost): every write of the group fails with `ErrorCode::OutcomeUnknown`, and the
    /// clients' records are read again before their next writes.
    Unsettled(String),
    /// The store refused the batch because what a transaction of it read changed after
    /// the writer read it (another host's writer, on a store several hosts share): nothing
    /// was applied, and each write of the group is checked and committed again alone.
    Stale,
}

/// What happened, as the caller saw it.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WriterInput {
    /// The answer to the outstanding [`WriterOutput::Commit`].
    Committed(CommitResult),
    /// Answer to [`WriterOutput::Checkpoint`]: whether it succeeded.
    Checkpointed(bool),
    /// Answer to [`WriterOutput::LoadRecords`]: each client's stored record (`None`: it
    /// has none), or why they could not be read.
    RecordsLoaded(Result<Vec<(ClientId, Option<DedupRecord>)>, ErrorCode>),
    /// Answer to [`WriterOutput::ExpireRecords`]: the last client whose record the page
    /// looked at, `None` when no record was left after `after`; or why it failed.
    RecordsExpired(Result<Option<ClientId>, ErrorCode>),
    /// Answer to [`WriterOutput::ReadChecks`]: one value per read, in order; or why the
    /// store could not be read.
    ChecksRead(Result<Vec<CheckValue>, ErrorCode>),
    /// Answer to [`WriterOutput::LoadLogEnds`]: the oldest and newest entries of the change
    /// log, `None` when it is empty; or why it could not be read.
    LogEndsLoaded(Result<Option<LogEnds>, ErrorCode>),
    /// Answer to [`WriterOutput::TrimLog`]: done, or why it failed.
    LogTrimmed(Result<(), ErrorCode>),
}

/// What the caller must do.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
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
    /// Read these clients' stored dedup records, then answer
    /// [`WriterInput::RecordsLoaded`].
    LoadRecords(Vec<ClientId>),
    /// Look at up to `max` stored records of clients after `after` (from the first if
    /// `None`), in client order; remove those whose `last_write_ms` is before
    /// `written_before_ms` and that no other process has changed since they were read
    /// (another host's leader, on a shared store); then answer
    /// [`WriterInput::RecordsExpired`].
    ExpireRecords {
        written_before_ms: u64,
        after: Option<ClientId>,
        max: usize,
    },
    /// Read these from the store as it is now, for the transactions of the next group,
    /// then answer [`WriterInput::ChecksRead`].
    ReadChecks(Vec<CheckRead>),
    /// Read the oldest and the newest entry of the change log, then answer
    /// [`WriterInput::LogEndsLoaded`].
    LoadLogEnds,
    /// Delete the change log's entries numbered from `from` up to `to` (not included),
    /// then answer [`WriterInput::LogTrimmed`].
    TrimLog { from: CommitSeq, to: CommitSeq },
}

/// The store operations a write adds to a group, before its client's dedup record: one per
/// key it puts or deletes, one for a clear (whose keys are found only when it commits), and
/// for a transaction also one per key and one per range it read, and one per entry seen in
/// a range (a store shared by several hosts compares them at commit: etcd takes as many
/// compares as operations in one transaction).
pub fn group_cost(op: &WriteOp) -> usize {
    match op {
        WriteOp::Batch { ops } => ops.len(),
        WriteOp::Transaction { reads, writes } => {
            let compares: usize = reads
                .iter()
                .map(|read| match read {
                    ReadCheck::Key { .. } => 1,
                    ReadCheck::Range { entries, .. } => entries.len() + 1,
                })
                .sum();
            writes.len() + compares
        }
        WriteOp::Put { .. } | WriteOp::Del { .. } | WriteOp::Clear { .. } => 1,
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct QueuedWrite<T> {
    to: T,
    stamp: WriteStamp,
    op: WriteOp,
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
enum Queued<T> {
    Write(QueuedWrite<T>),
    /// The end of a group.
    Cut,
}

/// The group whose batch is out.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Group<T> {
    /// Admitted to apply, in order.
    applied: Vec<QueuedWrite<T>>,
    /// Duplicates of a write in the group: answered with it.
    in_group: Vec<QueuedWrite<T>>,
    /// When its batch was made, by the wall clock: its records' `last_write_ms`.
    written_ms: u64,
    /// Its entry in the change log.
    logged: LogSpan,
    /// The records still to commit, when the bug that commits them apart is re-created.
    #[cfg(feature = "bug-injection")]
    records_apart: Option<Vec<(ClientId, DedupRecord)>>,
}

/// The leader's writer. See the module documentation. `T` says where each write's answer
/// goes (a connection and a request id, say).
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Writer<T> {
    config: WriterConfig,
    dedup: DedupTable,
    queue: VecDeque<Queued<T>>,
    committing: Option<Group<T>>,
    checkpointing: bool,
    /// A [`WriterOutput::LoadRecords`] is out.
    loading: bool,
    /// The reads of a [`WriterOutput::ReadChecks`] that is out.
    reading: Option<Vec<CheckRead>>,
    /// What they read: the store before the next group, for its transactions.
    snapshot: Option<Result<Snapshot, ErrorCode>>,
    /// The change log as the last commit left it; `None` until its ends are read.
    log: Option<ChangeLog>,
    /// A [`WriterOutput::LoadLogEnds`] is out.
    loading_log: bool,
    /// The last read of the log's end failed: the next is tried with the next group, or
    /// between groups once this time has come.
    log_retry_at: Option<Timestamp>,
    trim: Trimming,
    expiry: Expiry,
    /// Written since the last checkpoint: commits, pages of the trimmed log, and what the
    /// store replayed when it opened. Not the sweeps of expired records: they come every
    /// retention / 8 however idle the store, most removing nothing, and on a retention under
    /// eight quiet periods, counted as writes, they would put the checkpoint off for good.
    unsaved: bool,
    /// Since when the store has had no write: its last one, a checkpoint that failed, or
    /// the takeover.
    quiet_since: Timestamp,
    outputs: VecDeque<WriterOutput<T>>,
}

/// Where the trimming of the change log stands.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
struct Trimming {
    /// A page is out: the entries before this number go.
    out: Option<CommitSeq>,
    /// A trim is under way: it goes on, a page at a time, until the log is within its
    /// retention.
    running: bool,
    /// After a failed page, no trim starts before this.
    paused_until: Option<Timestamp>,
}

/// Where the sweep of expired records stands.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Expiry {
    /// When the next page (of the sweep under way, or of a new one) is due.
    due: Timestamp,
    /// The sweep under way: its cutoff, and the last client looked at.
    sweep: Option<(u64, Option<ClientId>)>,
    /// A page is out.
    out: bool,
}

impl<T> Writer<T> {
    /// A writer over a store, taking over at `now` from whatever wrote it before.
    pub fn new(config: WriterConfig, now: Timestamp) -> Self {
        let first_sweep = now + sweep_interval(&config);
        #[cfg(feature = "bug-injection")]
        let replayed_unsaved = !config.bugs.saved_at_takeover;
        #[cfg(not(feature = "bug-injection"))]
        let replayed_unsaved = true;
        Writer {
            config,
            dedup: DedupTable::default(),
            queue: VecDeque::new(),
            committing: None,
            checkpointing: false,
            loading: false,
            reading: None,
            snapshot: None,
            log: None,
            loading_log: true,
            log_retry_at: None,
            trim: Trimming::default(),
            expiry: Expiry {
                due: first_sweep,
                sweep: None,
                out: false,
            },
            unsaved: replayed_unsaved,
            quiet_since: now,
            // The log's end is read at once, so the first group, and the first iterator's
            // snapshot, know their number.
            outputs: VecDeque::from([WriterOutput::LoadLogEnds]),
        }
    }

    /// Queues a write for the next group.
    pub fn write(&mut self, to: T, stamp: WriteStamp, op: WriteOp) {
        self.queue
            .push_back(Queued::Write(QueuedWrite { to, stamp, op }));
    }

    /// Closes the group being formed: what was queued so far commits together.
    pub fn cut(&mut self, now: Timestamp) {
        if matches!(self.queue.back(), Some(Queued::Write(_))) {
            self.queue.push_back(Queued::Cut);
        }
        self.next_group(now);
    }

    /// True when no write is queued and nothing is out: a job after the writes can run.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.between_groups()
    }

    /// True when nothing the writer asked for is out.
    fn between_groups(&self) -> bool {
        self.committing.is_none()
            && !self.loading
            && self.reading.is_none()
            && !self.checkpointing
            && !self.expiry.out
            && !self.loading_log
            && self.trim.out.is_none()
    }

    /// The number of the last group the store committed, once the writer knows it (`None`
    /// before the log's end is read, and while it is read again); `CommitSeq(0)` for a
    /// store that never committed one. An iterator opened now reads the store as of it.
    pub fn last_committed(&self) -> Option<CommitSeq> {
        match (&self.log, self.loading_log) {
            (Some(log), false) => Some(CommitSeq(log.next().0 - 1)),
            _ => None,
        }
    }

    /// The oldest entry the change log keeps, once the writer knows it (`None` before the
    /// log's ends are read, while they are read again, and for an empty log): no entry is
    /// stored before it, so a read of the log from further back can start there. The
    /// stores that keep the tombstones of trimmed entries (fjall, RocksDB) would otherwise
    /// walk all of them.
    pub fn oldest_kept(&self) -> Option<CommitSeq> {
        match (&self.log, self.loading_log) {
            (Some(log), false) => log.first(),
            _ => None,
        }
    }

    /// The wall clock reads `wall` (since the Unix epoch) at `now`: the records' times follow
    /// it from then on. A driver whose `now` stops while the machine sleeps (a monotonic
    /// clock) tells this now and then, so that records are not dated in the past.
    pub fn set_wall_clock(&mut self, now: Timestamp, wall: Duration) {
        self.config.wall_clock_at_epoch = wall.saturating_sub(now.since_epoch());
    }

    /// How many clients the dedup table holds in memory.
    pub fn known_clients(&self) -> usize {
        self.dedup.len()
    }

    pub fn handle_input(&mut self, now: Timestamp, input: WriterInput) {
        match input {
            WriterInput::Committed(result) => self.committed(now, result),
            WriterInput::Checkpointed(done) => {
                self.checkpointing = false;
                // A failed checkpoint is tried again after the next quiet period.
                self.unsaved = !done;
                if !done {
                    self.quiet_since = now;
                }
            }
            WriterInput::RecordsLoaded(loaded) => self.records_loaded(now, loaded),
            WriterInput::RecordsExpired(result) => self.records_expired(now, result),
            WriterInput::ChecksRead(values) => {
                if let Some(reads) = self.reading.take() {
                    self.snapshot = Some(values.and_then(|values| Snapshot::new(reads, values)));
                }
            }
            WriterInput::LogEndsLoaded(ends) => self.log_ends_loaded(now, ends),
            WriterInput::LogTrimmed(first) => self.log_trimmed(now, first),
        }
        self.next_group(now);
    }

    /// Asks for a checkpoint once writes have paused long enough, and for the next page of
    /// expired records when it is due; only between groups.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if !self.is_idle() {
            return;
        }
        if self.checkpoint_due().is_some_and(|at| at <= now) {
            self.checkpointing = true;
            self.outputs.push_back(WriterOutput::Checkpoint);
        } else if self.expiry.due <= now {
            self.expire_page(now);
        } else if self.log_reload_due(now) {
            self.load_log_ends();
        } else if let Some(trim) = self.trim_due(now) {
            self.trim_page(trim);
        }
    }

    fn trim_page(&mut self, (from, to): (CommitSeq, CommitSeq)) {
        self.trim.running = true;
        self.trim.out = Some(to);
        self.outputs.push_back(WriterOutput::TrimLog { from, to });
    }

    pub fn poll_output(&mut self) -> Option<WriterOutput<T>> {
        self.outputs.pop_front()
    }

    /// When [`Writer::handle_timeout`] next has work: a checkpoint, a page of expiry, or
    /// a trim of the change log.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let expiry = (!self.expiry.out).then_some(self.expiry.due);
        let trim = match self.trim.paused_until {
            Some(until) => self.trim_due(until).map(|_| until),
            None => self.trim_due(Timestamp::ZERO).map(|_| Timestamp::ZERO),
        };
        let reload = match (&self.log, self.loading_log) {
            (None, false) => Some(self.log_retry_at.unwrap_or(Timestamp::ZERO)),
            _ => None,
        };
        [self.checkpoint_due(), expiry, trim, reload]
            .into_iter()
            .flatten()
            .min()
    }

    fn checkpoint_due(&self) -> Option<Timestamp> {
        if !self.unsaved || self.checkpointing {
            return None;
        }
        Some(self.quiet_since + self.config.quiet_period)
    }

    /// The wall clock at `now`, in milliseconds since the Unix epoch.
    fn wall_ms(&self, now: Timestamp) -> u64 {
        let wall = self.config.wall_clock_at_epoch + now.since_epoch();
        u64::try_from(wall.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts a sweep if none is under way (forgetting here what it will remove from the
    /// store), and asks for its next page.
    fn expire_page(&mut self, now: Timestamp) {
        let (cutoff, after) = match self.expiry.sweep {
            Some(sweep) => sweep,
            None => {
                let retention =
                    u64::try_from(self.config.dedup_retention.as_millis()).unwrap_or(u64::MAX);
                #[cfg_attr(not(feature = "bug-injection"), allow(unused_mut))]
                let mut cutoff = self.wall_ms(now).saturating_sub(retention);
                #[cfg(feature = "bug-injection")]
                if self.config.bugs.expire_fresh {
                    cutoff = u64::MAX;
                }
                self.dedup.forget_written_before(cutoff);
                self.expiry.sweep = Some((cutoff, None));
                (cutoff, None)
            }
        };
        self.expiry.out = true;
        self.outputs.push_back(WriterOutput::ExpireRecords {
            written_before_ms: cutoff,
            after,
            max: EXPIRY_PAGE,
        });
    }

    /// The store was written: it is checkpointed once writes have paused.
    fn written(&mut self, now: Timestamp) {
        self.unsaved = true;
        self.quiet_since = now;
    }

    fn records_expired(&mut self, now: Timestamp, result: Result<Option<ClientId>, ErrorCode>) {
        self.expiry.out = false;
        match (result, &mut self.expiry.sweep) {
            (Ok(Some(last)), Some((_, after))) => {
                *after = Some(last);
                // The next page at the next look at the timer, once the writes that came
                // meanwhile have gone.
                self.expiry.due = now;
            }
            // Done, or failed: the next sweep starts over later.
            _ => {
                self.expiry.sweep = None;
                self.expiry.due = now + sweep_interval(&self.config);
            }
        }
    }

    fn log_ends_loaded(&mut self, now: Timestamp, ends: Result<Option<LogEnds>, ErrorCode>) {
        self.loading_log = false;
        self.log_retry_at = ends.is_err().then(|| now + self.config.quiet_period);
        match ends {
            Ok(ends) => self.log = Some(ChangeLog::new(ends)),
            Err(error) => {
                // Without the next number no group can commit; the closed group's writes
                // end unknown (as when records cannot be read), and the end is read again
                // for the next group.
                self.log = None;
                let error = ErrorCode::OutcomeUnknown(error.to_string());
                self.fail_closed_group(now, &error, |_, _| true);
            }
        }
    }

    fn load_log_ends(&mut self) {
        self.loading_log = true;
        self.outputs.push_back(WriterOutput::LoadLogEnds);
    }

    /// Whether the log's end, unknown, is to be read again between groups: at once after a
    /// commit that may have taken a number, a while after a read of it failed.
    fn log_reload_due(&self, now: Timestamp) -> bool {
        self.log.is_none() && !self.loading_log && self.log_retry_at.is_none_or(|at| at <= now)
    }

    /// The next page of a trim of the change log, if one is due now.
    fn trim_due(&self, now: Timestamp) -> Option<(CommitSeq, CommitSeq)> {
        if self.trim.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        self.log
            .as_ref()?
            .trim(self.config.change_retention, self.trim.running)
    }

    fn log_trimmed(&mut self, now: Timestamp, result: Result<(), ErrorCode>) {
        let Some(to) = self.trim.out.take() else {
            return;
        };
        if result.is_ok() {
            self.written(now);
        }
        match (result, &mut self.log) {
            (Ok(()), Some(log)) => log.trimmed(to),
            (Ok(()), None) => {}
            // Tried again a while later; the log only grows meanwhile.
            (Err(_), _) => {
                self.trim.running = false;
                self.trim.paused_until = Some(now + self.config.quiet_period * 10);
            }
        }
    }

    fn records_loaded(
        &mut self,
        now: Timestamp,
        loaded: Result<Vec<(ClientId, Option<DedupRecord>)>, ErrorCode>,
    ) {
        self.loading = false;
        match loaded {
            Ok(records) => {
                for (client, record) in records {
                    self.dedup.learn(client, record);
                }
            }
            Err(error) => {
                // Without its record a write cannot be admitted, nor said to have failed:
                // it may be a re-send of one the last leader applied. The writes of the
                // closed group whose clients are unknown end unknown; the others go on.
                let error = ErrorCode::OutcomeUnknown(error.to_string());
                self.fail_closed_group(now, &error, |dedup, client| !dedup.knows(client));
            }
        }
    }

    /// Answers `error` to the writes of the closed group (up to the first cut) that `fails`
    /// picks, marking them uncertain: their clients' records are read again before their
    /// next writes, and say whether these landed.
    fn fail_closed_group(
        &mut self,
        now: Timestamp,
        error: &ErrorCode,
        fails: impl Fn(&DedupTable, &ClientId) -> bool,
    ) {
        let end = self.queue.iter().position(|q| matches!(q, Queued::Cut));
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (at, queued) in std::mem::take(&mut self.queue).into_iter().enumerate() {
            match queued {
                Queued::Write(write)
                    if end.is_some_and(|end| at < end)
                        && fails(&self.dedup, &write.stamp.client) =>
                {
                    self.dedup.mark_uncertain(write.stamp, self.wall_ms(now));
                    self.reply(write.to, Err(error.clone()));
                }
                other => kept.push_back(other),
            }
        }
        self.queue = kept;
    }

    /// The clients of the writes up to the next cut (`end`) that the table does not know.
    fn unknown_clients(&self, end: usize) -> Vec<ClientId> {
        let mut unknown = Vec::new();
        let mut previous = None;
        for queued in self.queue.iter().take(end) {
            let Queued::Write(write) = queued else {
                continue;
            };
            // Runs of one client's writes are the common case: one look for the run.
            let client = write.stamp.client;
            if previous != Some(client) && !self.dedup.knows(&client) {
                unknown.push(client);
            }
            previous = Some(client);
        }
        unknown.sort_unstable();
        unknown.dedup();
        unknown
    }

    /// Starts the next closed group if none is out.
    fn next_group(&mut self, now: Timestamp) {
        while self.between_groups() {
            let Some(end) = self
                .queue
                .iter()
                .position(|queued| matches!(queued, Queued::Cut))
            else {
                // Between groups with nothing to commit: the log's end is read again after
                // a commit that may have taken a number (subscriptions wait for it), and a
                // trim under way goes on.
                if self.log_reload_due(now) {
                    self.load_log_ends();
                } else if let Some(trim) = self.trim.running.then(|| self.trim_due(now)).flatten() {
                    self.trim_page(trim);
                } else {
                    self.trim.running = false;
                }
                return;
            };
            let Some((next, bytes_through)) = self
                .log
                .as_ref()
                .map(|log| (log.next(), log.bytes_through()))
            else {
                self.load_log_ends();
                return;
            };
            let unknown = self.unknown_clients(end);
            if !unknown.is_empty() {
                self.loading = true;
                self.outputs.push_back(WriterOutput::LoadRecords(unknown));
                return;
            }
            if self.snapshot.is_none() {
                let reads = reads_to_check(self.queue.iter().take(end).filter_map(|q| match q {
                    Queued::Write(write) => Some(&write.op),
                    Queued::Cut => None,
                }));
                if !reads.is_empty() {
                    self.reading = Some(reads.clone());
                    self.outputs.push_back(WriterOutput::ReadChecks(reads));
                    return;
                }
            }
            // Good for this group only: the next one finds the store as this one leaves it.
            let snapshot = self.snapshot.take();
            let written_ms = self.wall_ms(now);
            let mut group = Group {
                applied: Vec::new(),
                in_group: Vec::new(),
                written_ms,
                logged: LogSpan {
                    seq: next,
                    bytes_before: bytes_through,
                    bytes_through,
                },
                #[cfg(feature = "bug-injection")]
                records_apart: None,
            };
            let mut batch = WriteBatch::new();
            let mut clients = FxHashSet::default();
            let mut written = GroupWrites::default();
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
                // The snapshot does not show the group's own writes: a transaction that read
                // one is checked in the next group.
                let reads_written = match &write.op {
                    WriteOp::Transaction { reads, .. } => written.overlap(reads),
                    _ => false,
                };
                if (over || reads_written) && !group.applied.is_empty() {
                    // The rest, up to the cut, makes the next group.
                    break;
                }
                let Some(Queued::Write(write)) = self.queue.pop_front() else {
                    break;
                };
                match self.admit(&write, snapshot.as_ref()) {
                    Admission::Apply => {
                        let refused = match self.outlived_resend_window(&write, written_ms) {
                            true => Err(Err(ErrorCode::OutcomeUnknown(
                                OUTLIVED_RESEND_WINDOW.into(),
                            ))),
                            false => self.check(&write.op, snapshot.as_ref()),
                        };
                        if let Err(refusal) = refused {
                            self.dedup.reject(write.stamp, written_ms);
                            self.reply(write.to, refusal);
                            continue;
                        }
                        cost += more;
                        clients.insert(write.stamp.client);
                        // Only a group with transactions (so a snapshot) asks.
                        if snapshot.is_some() {
                            written.add(&write.op);
                        }
                        batch.push(self.applied_op(&write.op));
                        group.applied.push(write);
                    }
                    Admission::InGroup => group.in_group.push(write),
                    Admission::AlreadyApplied => self.reply(write.to, Ok(Response::Written)),
                    Admission::FailedBefore => self.reply(write.to, Err(ErrorCode::FailedBefore)),
                }
            }
            if group.applied.is_empty() {
                continue;
            }
            batch.records = self.group_records(written_ms);
            let entry = if self.config.change_feed {
                encode_entry(bytes_through, &batch.ops)
            } else {
                encode_unlogged(bytes_through)
            };
            group.logged.bytes_through = bytes_through.saturating_add(entry.len() as u64);
            batch.log = Some(LogAppend { seq: next, entry });
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
                records,
                ..WriteBatch::default()
            }));
            self.committing = Some(group);
            return;
        }
        match result {
            CommitResult::Committed => {
                if let Some(log) = &mut self.log {
                    log.appended(group.logged);
                }
                self.dedup.commit_group(group.written_ms);
                self.written(now);
                for write in group.applied.into_iter().chain(group.in_group) {
                    self.reply(write.to, Ok(Response::Written));
                }
            }
            // Each write alone, ahead of everything queued since: the good ones land, the
            // bad one fails by itself; a transaction is checked against the store anew.
            CommitResult::Stale => {
                // Another host's writer may have taken the number.
                #[cfg(feature = "bug-injection")]
                let forget = !self.config.bugs.keep_count_when_stale;
                #[cfg(not(feature = "bug-injection"))]
                let forget = true;
                if forget {
                    self.log = None;
                }
                self.retry_alone(now, group)
            }
            CommitResult::Failed(_) if group.applied.len() > 1 => self.retry_alone(now, group),
            CommitResult::Unsettled(cause) => {
                // The entry may have landed, and its number with it.
                self.written(now);
                #[cfg(feature = "bug-injection")]
                let forget = !self.config.bugs.keep_count_when_unsure;
                #[cfg(not(feature = "bug-injection"))]
                let forget = true;
                if forget {
                    self.log = None;
                }
                self.dedup.forget_group(self.wall_ms(now));
                let error = ErrorCode::OutcomeUnknown(cause);
                for write in group.applied.into_iter().chain(group.in_group) {
                    self.reply(write.to, Err(error.clone()));
                }
            }
            CommitResult::Failed(error) | CommitResult::Refused(error) => {
                self.dedup.abort_group(self.wall_ms(now));
                for write in group.applied.into_iter().chain(group.in_group) {
                    self.reply(write.to, Err(error.clone()));
                }
            }
        }
    }

    /// Puts the writes of a group that did not land back at the front of the queue, each a
    /// group of its own, in the order they came. A duplicate from the same group is
    /// admitted again and answered with its original (or `FailedBefore`, if its original
    /// failed again while a later write of its client landed).
    fn retry_alone(&mut self, now: Timestamp, group: Group<T>) {
        #[cfg(feature = "bug-injection")]
        let abort = !self.config.bugs.no_abort_before_retry;
        #[cfg(not(feature = "bug-injection"))]
        let abort = true;
        if abort {
            self.dedup.abort_group(self.wall_ms(now));
        }
        let writes: Vec<_> = group.applied.into_iter().chain(group.in_group).collect();
        for write in writes.into_iter().rev() {
            self.queue.push_front(Queued::Cut);
            self.queue.push_front(Queued::Write(write));
        }
    }

    /// Whether a write reaches the writer longer ago than the clients' resend window after
    /// it was first sent (a leader stalled with it in its socket, or its queue): its dedup
    /// record may have expired meanwhile, and if it had landed before, applying it again, or
    /// refusing a transaction whose reads its own first landing changed, would answer it
    /// wrongly. It is not applied, and its outcome stays unknown. The window is half the
    /// retention, which leaves the other half for the clocks of two processes to differ.
    fn outlived_resend_window(&self, write: &QueuedWrite<T>, now_ms: u64) -> bool {
        #[cfg(feature = "bug-injection")]
        if self.config.bugs.resend_late {
            return false;
        }
        let window =
            u64::try_from((self.config.dedup_retention / 2).as_millis()).unwrap_or(u64::MAX);
        write.stamp.first_sent_ms.saturating_add(window) <= now_ms
    }

    fn admit(
        &mut self,
        write: &QueuedWrite<T>,
        snapshot: Option<&Result<Snapshot, ErrorCode>>,
    ) -> Admission {
        #[cfg(feature = "bug-injection")]
        if self.config.bugs.no_dedup {
            return Admission::Apply;
        }
        #[cfg(feature = "bug-injection")]
        if self.config.bugs.dedup_after_validation && self.check(&write.op, snapshot).is_err() {
            // The re-created bug: the check comes first and the dedup table never hears of
            // the write; its answer is the check's, and a write already applied fails it.
            return Admission::Apply;
        }
        let _ = snapshot;
        #[cfg(feature = "bug-injection")]
        let keep_order = !self.config.bugs.reapply_failed;
        #[cfg(not(feature = "bug-injection"))]
        let keep_order = true;
        self.dedup.admit_keeping_order(write.stamp, keep_order)
    }

    /// Whether a write admitted to the group applies: a transaction's reads must still
    /// hold in the snapshot of the store before the group. The error is the answer to
    /// send instead.
    fn check(
        &self,
        op: &WriteOp,
        snapshot: Option<&Result<Snapshot, ErrorCode>>,
    ) -> Result<(), Result<Response, ErrorCode>> {
        let WriteOp::Transaction { reads, .. } = op else {
            return Ok(());
        };
        #[cfg(feature = "bug-injection")]
        if self.config.bugs.skip_validation {
            return Ok(());
        }
        // A group is formed without a snapshot only when none of its transactions read
        // anything; an empty one vouches for no read, so nothing unread can pass.
        let empty = Snapshot::default();
        let snapshot = match snapshot {
            Some(Err(error)) => return Err(Err(error.clone())),
            Some(Ok(snapshot)) => snapshot,
            None => &empty,
        };
        match snapshot.conflict(reads) {
            None => Ok(()),
            Some(conflict) => Err(Ok(conflict.into())),
        }
    }

    /// The operation a write admitted to the group adds to its batch.
    fn applied_op(&self, op: &WriteOp) -> WriteOp {
        #[cfg(feature = "bug-injection")]
        if let (true, WriteOp::Transaction { reads, writes }) = (self.config.bugs.partial_apply, op)
        {
            return WriteOp::Transaction {
                reads: reads.clone(),
                writes: writes.iter().take(1).cloned().collect(),
            };
        }
        op.clone()
    }

    fn group_records(&self, now_ms: u64) -> Vec<(ClientId, DedupRecord)> {
        #[cfg(feature = "bug-injection")]
        if self.config.bugs.no_dedup {
            return Vec::new();
        }
        self.dedup.group_records(now_ms)
    }

    fn reply(&mut self, to: T, result: Result<Response, ErrorCode>) {
        self.outputs.push_back(WriterOutput::Reply { to, result });
    }
}

/// Why a write that outlived the resend window is not applied.
const OUTLIVED_RESEND_WINDOW: &str =
    "reached the leader longer than the resend window after it was first sent; not applied";

/// How often a sweep of expired records starts: an eighth of the retention (at most an
/// hour), so a record is gone at most that long after it expired.
fn sweep_interval(config: &WriterConfig) -> Duration {
    (config.dedup_retention / 8).clamp(Duration::from_millis(1), Duration::from_secs(3600))
}

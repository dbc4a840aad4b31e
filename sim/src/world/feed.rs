//! The change feed in the simulator: callers that subscribe to a range and read slowly,
//! the leader's driver side of their reads of the change log (as party-core's store thread
//! does: answer at once, or when the next commit lands), and the truth they are checked
//! against: every group the store committed, under the number it was committed with.

use party_proto::feed::{decode_entry, encode_entry, plan_pull, LogAppend, LogRead, PullPlan};
use party_proto::{Change, CommitSeq, WatchEvent, WatchId, WatchPoll};

use super::*;

/// One subscriber, as the world saw it.
#[derive(Debug, Clone)]
pub struct Watcher {
    pub process: ProcessId,
    pub incarnation: u32,
    pub range: KeyRange,
    /// The commit it was asked to start from, if one was given.
    pub asked: Option<CommitSeq>,
    /// Where the leader said it starts, once it did (from a given commit too: until then
    /// it could still be refused).
    pub start: Option<CommitSeq>,
    /// What it handed the caller, in order.
    pub events: Vec<WatchEvent>,
    /// How it ended: failed, closed by its caller, or its process gone.
    pub failed: Option<ErrorCode>,
    pub closed: bool,
    pub excuses: Excuses,
}

/// A subscription's read of the log waiting for the next commit.
#[derive(Debug, Clone, Copy)]
pub(super) struct WaitingPull {
    from: Option<CommitSeq>,
    max: u32,
}

impl World {
    /// A caller subscribes to a range from the next commit.
    pub(super) fn open_watcher(&mut self, process: ProcessId) {
        let range = KeyRange {
            start: self.bound(),
            end: self.bound(),
        };
        // Some start from a commit of the past (perhaps trimmed, or kept without its
        // writes by a leader without the feed), as a subscriber resuming from a position.
        let last = self.feed.keys().next_back().copied().unwrap_or(0);
        let mut from = self.chance(30).then(|| CommitSeq(self.rand(1, last + 2)));
        // On seeds with processes of another store, some from a position that store gave,
        // past this one's next commit (perhaps not by the time the leader reads it).
        if self.faults.other_stores && self.chance(10) {
            from = Some(CommitSeq(last + self.rand(2, 20)));
        }
        let now = self.timestamp();
        let node = &mut self.processes[process];
        let mut excuses = node.excuses;
        excuses.watch_ahead = from.is_some_and(|from| from.0 > last + 1);
        let watch = node.machine.open_watch(now, range.clone(), from);
        let index = self.watchers.len();
        self.trace.line(
            self.now,
            format_args!("p{process} w{index} watches {range:?}"),
        );
        self.watchers.push(Watcher {
            process,
            incarnation: node.incarnation,
            range,
            asked: from,
            start: None,
            events: Vec::new(),
            failed: None,
            closed: false,
            excuses,
        });
        node.watches.insert(watch, index);
        self.pump(process);
    }

    pub(super) fn schedule_watch_read(&mut self, process: ProcessId, watch: WatchId) {
        if self.processes[process].watch_reading.insert(watch) {
            let delay = self.rand(20, 3_000);
            let incarnation = self.processes[process].incarnation;
            self.schedule(
                delay,
                Event::ReadWatch {
                    process,
                    incarnation,
                    watch,
                },
            );
        }
    }

    /// A slow subscriber takes a few events at a time; now and then it has had enough.
    pub(super) fn read_watch(&mut self, process: ProcessId, watch: WatchId) {
        self.processes[process].watch_reading.remove(&watch);
        let Some(&index) = self.processes[process].watches.get(&watch) else {
            return;
        };
        let now = self.timestamp();
        let machine = &mut self.processes[process].machine;
        if self.watchers[index].start.is_none() {
            self.watchers[index].start = machine.watch_position(watch);
            if let Some(start) = self.watchers[index].start {
                self.trace.line(
                    self.now,
                    format_args!("p{process} w{index} starts at {}", start.0),
                );
            }
        }
        let max = self.rand(1, 4) as usize;
        let machine = &mut self.processes[process].machine;
        match machine.watch_take(now, watch, max) {
            WatchPoll::Events(events) => {
                for event in &events {
                    self.trace
                        .line(self.now, format_args!("p{process} w{index} <- {event:?}"));
                    self.check_lag(index, event);
                }
                self.watchers[index].events.extend(events);
                if self.chance(3) {
                    self.processes[process].machine.close_watch(now, watch);
                    self.watchers[index].closed = true;
                    self.processes[process].watches.remove(&watch);
                } else {
                    self.schedule_watch_read(process, watch);
                }
            }
            WatchPoll::Pending => {}
            WatchPoll::Failed(error) => {
                self.trace.line(
                    self.now,
                    format_args!("p{process} w{index} failed: {error}"),
                );
                self.watchers[index].failed = Some(error);
                self.processes[process].watches.remove(&watch);
            }
        }
        self.pump(process);
    }

    /// A lag is reported only for groups the store's log no longer holds, or holds without
    /// their writes (committed by a leader that kept no feed).
    fn check_lag(&mut self, index: usize, event: &WatchEvent) {
        let WatchEvent::Lagged { missed, resume } = event else {
            return;
        };
        let lost = CommitSeq(resume.0.saturating_sub(*missed));
        let held = self
            .store
            .change_entries(lost, false, *missed as usize)
            .expect("the memory store cannot fail");
        let kept = held.iter().find(|(seq, entry)| {
            *seq < *resume && decode_entry(entry).is_ok_and(|changes| changes.is_some())
        });
        if let Some((seq, _)) = kept {
            self.violations.push(format!(
                "w{index}: told it lagged {missed} commits before {}, but the log still holds {}",
                resume.0, seq.0
            ));
        }
    }

    /// The leader's driver answers a subscription's read of the log, or keeps it for the
    /// next commit.
    pub(super) fn pull_log(
        &mut self,
        process: ProcessId,
        conn: ConnId,
        watch: WatchId,
        pull: WaitingPull,
    ) {
        let Some(leading) = &mut self.processes[process].leading else {
            return;
        };
        let (last, oldest) = (
            leading.writer.last_committed(),
            leading.writer.oldest_kept(),
        );
        let (from, read_from, next) = match plan_pull(pull.from, last, oldest) {
            PullPlan::Wait => {
                leading.waiting.insert((conn, watch), pull);
                return;
            }
            PullPlan::Answer {
                from,
                read_from,
                next,
            } => (from, read_from, next),
        };
        let entries = match read_from {
            Some(start) => self
                .store
                .change_entries(start, false, pull.max as usize)
                .expect("the memory store cannot fail"),
            None => Vec::new(),
        };
        let result = match self.store_fault() {
            Some(error) => Err(error),
            None => Ok(LogRead {
                from,
                entries,
                next,
            }),
        };
        self.store_reply(process, conn, ServerInput::WatchRead { watch, result });
    }

    pub(super) fn watch_pull(
        &mut self,
        process: ProcessId,
        conn: ConnId,
        watch: WatchId,
        from: Option<CommitSeq>,
        max: u32,
    ) {
        self.pull_log(process, conn, watch, WaitingPull { from, max });
    }

    pub(super) fn watch_drop(&mut self, process: ProcessId, conn: ConnId, watch: WatchId) {
        if let Some(leading) = &mut self.processes[process].leading {
            leading.waiting.remove(&(conn, watch));
        }
    }

    /// After the writer's work: the reads that waited for a commit are answered once one
    /// has landed.
    pub(super) fn wake_waiting(&mut self, process: ProcessId) {
        let Some(leading) = &mut self.processes[process].leading else {
            return;
        };
        let last = leading.writer.last_committed();
        if last == leading.woken_at {
            return;
        }
        leading.woken_at = last;
        let waiting = std::mem::take(&mut leading.waiting);
        for ((conn, watch), pull) in waiting {
            self.pull_log(process, conn, watch, pull);
        }
    }

    /// The store took a group: its writes are the truth the subscribers are held to (also
    /// when its leader kept no feed: a subscriber must then be told it lost them), and its
    /// number must be the next one, never one taken.
    pub(super) fn record_commit(&mut self, process: ProcessId, batch: &WriteBatch) {
        let Some(append) = &batch.log else {
            return;
        };
        let expected = self.next_log_number();
        if append.seq.0 != expected {
            self.violations.push(format!(
                "p{process} committed a group as number {}, the store's next is {expected}",
                append.seq.0
            ));
        }
        let changes = decode_entry(&encode_entry(0, &batch.ops)).expect("entries decode");
        self.feed.insert(append.seq.0, changes.unwrap_or_default());
    }

    /// Another host's leader, on a store several hosts share (etcd), commits a group: it
    /// takes the log's next number, which this host's writer must read again before it
    /// numbers its next group. The group writes nothing this host's callers read.
    pub(super) fn another_host_commits(&mut self) {
        let seq = self.next_log_number();
        self.trace.line(
            self.now,
            format_args!("another host's leader commits a group as number {seq}"),
        );
        let batch = WriteBatch {
            ops: Vec::new(),
            records: Vec::new(),
            log: Some(LogAppend {
                seq: CommitSeq(seq),
                entry: encode_entry(0, &[]),
            }),
        };
        self.store
            .write(&batch)
            .expect("the memory store cannot fail");
        self.feed.insert(seq, Vec::new());
        self.timeline.logged(seq);
    }

    /// The number the store's change log gives its next entry.
    fn next_log_number(&self) -> u64 {
        self.feed.keys().next_back().map_or(1, |last| last + 1)
    }

    /// Whether `batch` appends a kept entry under a number other than the log's next: a
    /// store shared over the network compares that as the batch reaches it and refuses
    /// the batch whole (etcd), which matters to a batch that reaches it late. An entry of
    /// a leader without a feed takes its number unchecked.
    pub(super) fn log_number_taken(&self, batch: &WriteBatch) -> bool {
        batch.log.as_ref().is_some_and(|append| {
            let kept = decode_entry(&append.entry).is_ok_and(|changes| changes.is_some());
            kept && append.seq.0 != self.next_log_number()
        })
    }

    /// The subscribers of a process that ends stop where they are.
    pub(super) fn end_watchers(&mut self, process: ProcessId) {
        let node = &mut self.processes[process];
        node.watches.clear();
        node.watch_reading.clear();
    }
}

/// The groups committed in a range, as a subscriber of it must see them.
pub fn inside(changes: &[Change], range: &KeyRange) -> Vec<Change> {
    changes
        .iter()
        .filter_map(|change| change.within(range))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group numbered `seq`, its entry kept (a leader with a feed).
    fn group(seq: u64) -> WriteBatch {
        WriteBatch {
            ops: Vec::new(),
            records: Vec::new(),
            log: Some(LogAppend {
                seq: CommitSeq(seq),
                entry: encode_entry(0, &[]),
            }),
        }
    }

    /// A group must take the log's next number: one taken already, and one past it (which
    /// would leave a number no group holds), are both violations; a store shared over the
    /// network refuses both.
    #[test]
    fn a_group_numbered_other_than_the_logs_next_is_caught() {
        let mut world = World::quiet();
        assert!(!world.log_number_taken(&group(1)));
        world.record_commit(0, &group(1));
        assert_eq!(world.violations, Vec::<String>::new());
        for wrong in [1, 3] {
            assert!(world.log_number_taken(&group(wrong)), "number {wrong}");
            world.record_commit(0, &group(wrong));
            let told = world.violations.pop().expect("a violation");
            assert!(told.ends_with("the store's next is 2"), "{told}");
        }
    }
}

//! The workload: what the simulated callers do — reads of one key or several, status, writes,
//! bursts of writes, clears, slow iterator readers (of keys, values or both, some closing
//! early), callers closing their handle — and how their operations end in the history.

use super::*;

impl World {
    pub(super) fn key(&mut self) -> Vec<u8> {
        KEYS[(self.rng.next_u64() % KEYS.len() as u64) as usize].to_vec()
    }

    pub(super) fn bound(&mut self) -> Bound<Vec<u8>> {
        match self.rng.next_u64() % 3 {
            0 => Bound::Unbounded,
            1 => Bound::Included(self.key()),
            _ => Bound::Excluded(self.key()),
        }
    }

    pub(super) fn workload(&mut self, process: ProcessId) {
        if !self.processes[process].alive || self.ops_left == 0 {
            return;
        }
        self.ops_left -= 1;
        if self.ops_left == 0 {
            // The last operation: from here on everything pending must finish.
            self.faults_on = false;
        }
        let turn = self.op_turns;
        self.op_turns += 1;
        self.on_own_stream(Stream::Workload, turn, |world| {
            // Drawn first: the next turn comes when it would, this one carried out or not.
            let next = world.rand(50, 3_000);
            let goes_on = !world.kept.keeps_op(turn) || world.workload_step(process);
            if goes_on && world.ops_left > 0 {
                world.schedule(next, Event::Workload(process));
            }
        });
    }

    /// One step of `process`'s caller: an operation, a transaction, a subscription, or
    /// closing its handle (then false: its next step waits for its restart).
    fn workload_step(&mut self, process: ProcessId) -> bool {
        if !self.processes[process].closing && self.faults_on && self.chance(1) {
            self.trace
                .line(self.now, format_args!("p{process} closes its handle"));
            self.closing(process);
            let now = self.timestamp();
            self.processes[process]
                .machine
                .handle_input(now, ProcessInput::Close);
            self.pump(process);
            return false;
        }
        let value = format!("p{process}.{}", self.history.len()).into_bytes();
        let kind = match self.rng.next_u64() % 30 {
            25..=28 => {
                self.start_transaction(process);
                return true;
            }
            29 => {
                self.start_transactions_together(process);
                return true;
            }
            24 => OpKind::Status,
            22..=23 => {
                let count = self.rand(2, 4) as usize;
                let mut keys: Vec<Vec<u8>> = Vec::new();
                while keys.len() < count {
                    let key = self.key();
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                OpKind::GetMany(keys)
            }
            20..=21 => {
                // A burst of writes issued together, which the leader commits as one group.
                let count = self.rand(2, 6);
                for n in 0..count {
                    let value = format!("p{process}.{}.{n}", self.history.len()).into_bytes();
                    let key = self.key();
                    self.issue(process, OpKind::Write(vec![(key, Some(value))]), false);
                }
                self.pump(process);
                return true;
            }
            0 if self.chance(50) => {
                // Gets issued together, whose answers are on their way at once (through a
                // follower's ring, where it has one, several values unread at a time).
                for _ in 0..self.rand(2, 7) {
                    let key = self.key();
                    self.issue(process, OpKind::Get(key), false);
                }
                self.pump(process);
                return true;
            }
            0..=5 => OpKind::Get(self.key()),
            6..=10 if self.faults.short_keys && self.chance(10) => {
                OpKind::Write(vec![(LONG_KEY.to_vec(), Some(value))])
            }
            6..=10 => OpKind::Write(vec![(self.key(), Some(value))]),
            11..=12 => OpKind::Write(vec![(self.key(), None)]),
            13..=14 if self.faults.small_groups && self.chance(30) => {
                // Every key but one, or all: with its dedup record, a write that fills a
                // small group or one over the store's limit, which must fail alone.
                let count = self.rand(SMALL_GROUP as u64 - 1, SMALL_GROUP as u64 + 1) as usize;
                let first = self.rng.next_u64() as usize;
                let keys = (0..count).map(|n| KEYS[(first + n) % KEYS.len()].to_vec());
                OpKind::Write(keys.map(|key| (key, Some(value.clone()))).collect())
            }
            13..=14 => {
                let (a, b) = (self.key(), self.key());
                OpKind::Write(vec![(a, Some(value.clone())), (b, Some(value))])
            }
            15 => OpKind::Clear(KeyRange {
                start: self.bound(),
                end: self.bound(),
            }),
            16 if self.processes[process].watches.len() < 2 => {
                self.open_watcher(process);
                return true;
            }
            _ => OpKind::Iterate(IterOptions {
                range: KeyRange {
                    start: self.bound(),
                    end: self.bound(),
                },
                reverse: self.chance(50),
                limit: self.chance(30).then(|| self.rand(1, 5)),
                keys: !self.chance(10),
                values: !self.chance(10),
            }),
        };
        self.issue(process, kind, true);
        true
    }

    /// Issues one operation; `pump` false leaves it queued with the next ones.
    pub(super) fn issue(&mut self, process: ProcessId, kind: OpKind, pump: bool) {
        let index = self.history.len();
        self.trace
            .line(self.now, format_args!("p{process} op{index} {kind:?}"));
        let now = self.timestamp();
        let write = match &kind {
            OpKind::Write(writes) => Some(WriteOp::Batch {
                ops: writes.iter().map(batch_op).collect(),
            }),
            OpKind::Clear(range) => Some(WriteOp::Clear {
                range: range.clone(),
            }),
            OpKind::Transaction { reads, writes } => Some(WriteOp::Transaction {
                reads: reads.clone(),
                writes: writes.iter().map(batch_op).collect(),
            }),
            _ => None,
        };
        // A write costs the store its operations and its dedup record.
        let too_many_ops = self.faults.small_groups
            && write
                .as_ref()
                .is_some_and(|write| group_cost(write) + 1 > SMALL_GROUP);
        let key_too_large = self.faults.short_keys
            && write
                .as_ref()
                .is_some_and(|write| longest_key(write) > SHORT_KEY);
        let p = &mut self.processes[process];
        let mut iter = None;
        let request = match &kind {
            OpKind::Get(key) => Some(p.machine.read(now, ReadOp::Get { key: key.clone() })),
            OpKind::GetMany(keys) => {
                Some(p.machine.read(now, ReadOp::GetMany { keys: keys.clone() }))
            }
            OpKind::Status => Some(p.machine.read(now, ReadOp::Status)),
            OpKind::Iterate(options) => {
                let opened = p.machine.open_iter(now, options.clone());
                p.iters.insert(opened, index);
                iter = Some(opened);
                None
            }
            OpKind::Write(_) | OpKind::Clear(_) | OpKind::Transaction { .. } => {
                write.map(|write| p.machine.write(now, write))
            }
        };
        if let Some(id) = request {
            p.requests.insert(id, index);
        }
        let outcome = match iter {
            Some(_) => Outcome::iterating(),
            None => Outcome::Unknown,
        };
        let (mut excuses, incarnation) = (p.excuses, p.incarnation);
        excuses.too_many_ops = too_many_ops;
        excuses.key_too_large = key_too_large;
        self.history.push(Op {
            process,
            incarnation,
            kind,
            invoke: self.now,
            complete: None,
            outcome,
            excuses,
        });
        if pump || iter.is_some() {
            self.pump(process);
        }
        if let Some(iter) = iter {
            self.schedule_read(process, iter);
        }
    }

    pub(super) fn schedule_read(&mut self, process: ProcessId, iter: IterId) {
        if self.processes[process].reading.insert(iter) {
            let delay = self.rand(20, 1_500);
            let incarnation = self.processes[process].incarnation;
            self.schedule(
                delay,
                Event::ReadIter {
                    process,
                    incarnation,
                    iter,
                },
            );
        }
    }

    /// A slow reader takes a few entries at a time.
    pub(super) fn read_iter(&mut self, process: ProcessId, iter: IterId) {
        self.processes[process].reading.remove(&iter);
        let max = self.rand(1, 4) as usize;
        let Some(&index) = self.processes[process].iters.get(&iter) else {
            return;
        };
        let now = self.timestamp();
        let poll = self.processes[process].machine.iter_take(now, iter, max);
        match &poll {
            IterPoll::Pending => {
                self.processes[process]
                    .iter_waits
                    .entry(iter)
                    .or_insert((self.now, None));
            }
            IterPoll::Failed(ErrorCode::TimedOut) => self.check_iter_timeout(process, iter, index),
            _ => {
                self.processes[process].iter_waits.remove(&iter);
            }
        }
        match poll {
            IterPoll::Entries(taken) => {
                let follows = self.processes[process].machine.iter_at(iter);
                self.history[index].outcome.took(taken, follows);
                if self.chance(8) {
                    // The caller has what it wanted.
                    self.processes[process].machine.close_iter(now, iter);
                    if let Outcome::Iterated { closed_early, .. } = &mut self.history[index].outcome
                    {
                        *closed_early = true;
                    }
                    self.end_iter(process, iter, index, None);
                } else {
                    self.schedule_read(process, iter);
                }
            }
            IterPoll::Pending => {}
            IterPoll::Done => self.end_iter(process, iter, index, None),
            IterPoll::Failed(error) => self.end_iter(process, iter, index, Some(error)),
        }
        self.pump(process);
    }

    /// An iterator failed `TimedOut`: its caller must have waited its request timeout by
    /// the time the machine said so.
    fn check_iter_timeout(&mut self, process: ProcessId, iter: IterId, index: usize) {
        let node = &mut self.processes[process];
        let timeout = node.machine.client_config().request_timeout;
        let waited = match node.iter_waits.remove(&iter) {
            Some((since, Some(ready))) => Some(Duration::from_micros(ready - since)),
            _ => None,
        };
        let waited_enough =
            matches!((waited, timeout), (Some(waited), Some(timeout)) if waited >= timeout);
        if !waited_enough {
            self.violations.push(format!(
                "op{index}: the iterator timed out after a wait of {waited:?} (request timeout {timeout:?})"
            ));
        }
    }

    pub(super) fn end_iter(
        &mut self,
        process: ProcessId,
        iter: IterId,
        index: usize,
        error: Option<party_proto::ErrorCode>,
    ) {
        self.processes[process].iters.remove(&iter);
        self.processes[process].iter_waits.remove(&iter);
        let op = &mut self.history[index];
        op.complete = Some(self.now);
        if let Some(error) = error {
            op.outcome = Outcome::Failed(error);
        }
        self.trace.line(
            self.now,
            format_args!(
                "p{process} op{index} ends {:?}",
                self.history[index].outcome
            ),
        );
        self.transaction_step_ended(process, index);
    }
}

/// A write of the history as a step of a batch: `None` deletes.
fn batch_op((key, value): &(Vec<u8>, Option<Vec<u8>>)) -> BatchOp {
    match value {
        Some(value) => BatchOp::Put {
            key: key.clone(),
            value: value.clone(),
        },
        None => BatchOp::Del { key: key.clone() },
    }
}

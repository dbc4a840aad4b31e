//! The faults: crashes (also in the middle of a commit), cut connections, a lock taken
//! away, garbage down a connection, and the store's fault layer that fails or refuses
//! commits (or whose thread dies in the middle of one).

use super::*;

impl World {
    pub(super) fn fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let turn = self.fault_turns;
        self.fault_turns += 1;
        self.on_own_stream(Stream::Faults, turn, |world| {
            // Drawn first: the next fault comes when it would, this one carried out or not.
            let next = world.rand(1_000, 15_000);
            if world.kept.keeps_fault(turn) {
                world.inject_fault();
            }
            world.schedule(next, Event::Fault);
        });
    }

    fn inject_fault(&mut self) {
        // Not before the end of a pause still running.
        self.last_fault = self.last_fault.max(self.now);
        let alive: Vec<ProcessId> = (0..self.processes.len())
            .filter(|p| self.processes[*p].alive)
            .collect();
        let leader = alive
            .iter()
            .copied()
            .find(|p| self.processes[*p].machine.role().role == Role::Leader);
        match self.rng.next_u64() % 10 {
            0..=3 => {
                if let Some(leader) = leader {
                    self.crash(leader);
                }
            }
            4..=5 => {
                let followers: Vec<ProcessId> = alive
                    .iter()
                    .copied()
                    .filter(|p| Some(*p) != leader)
                    .collect();
                if !followers.is_empty() {
                    let victim = followers[(self.rng.next_u64() % followers.len() as u64) as usize];
                    self.crash(victim);
                }
            }
            6..=7 => {
                if let Some(conn) = self.random_open_conn() {
                    self.trace.line(self.now, format_args!("cut conn{conn}"));
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.cut_short = true;
                    }
                    self.close_conn(conn);
                }
            }
            8 => {
                // The lock is taken away, as a lease would expire: from a leader, or from a
                // process still opening its store or binding.
                let holder = self.lock.holder().filter(|p| self.processes[*p].alive);
                if let Some(holder) = holder {
                    self.trace
                        .line(self.now, format_args!("p{holder} loses the lock"));
                    self.lock.release(holder);
                    let draining = self.processes[holder]
                        .leading
                        .as_ref()
                        .is_some_and(|l| l.draining);
                    if draining {
                        // A leader draining after a close serves on only while it holds the
                        // lock, as a session told of a lost lock closes: it stops at once.
                        self.trace
                            .line(self.now, format_args!("p{holder} stops draining"));
                        for c in self.conns.values_mut() {
                            c.cut_short |= c.open && c.server == holder;
                        }
                        self.stop_serving(holder);
                    }
                    let now = self.timestamp();
                    let lost = ProcessInput::Election(ElectionInput::LockLost);
                    self.processes[holder].machine.handle_input(now, lost);
                    self.pump(holder);
                }
            }
            9 if self.faults.garbage => {
                if let Some(conn) = self.random_open_conn() {
                    let to_server = self.chance(50);
                    self.trace
                        .line(self.now, format_args!("garbage down conn{conn}"));
                    self.transmit_garbage(conn, to_server);
                }
            }
            _ => {}
        }
        if self.faults.pauses && self.chance(25) && !alive.is_empty() {
            let victim = alive[(self.rng.next_u64() % alive.len() as u64) as usize];
            self.pause(victim);
            // The leader dies while a follower is stopped: what the follower had in flight
            // is re-sent when it wakes, long after it was first sent.
            let leader = leader.filter(|l| *l != victim && self.processes[*l].alive);
            if let Some(leader) = leader.filter(|_| self.chance(50)) {
                self.crash(leader);
            }
        }
    }

    /// Stops `process` for a while: a few times the dedup retention on seeds that keep
    /// records briefly, so that its writes in flight outlive their resend window.
    fn pause(&mut self, process: ProcessId) {
        let longest = match self.faults.short_retention {
            Some(ms) => 4 * ms * 1_000,
            None => 20_000,
        };
        let pause = self.rand(1_000, longest);
        self.trace
            .line(self.now, format_args!("p{process} paused for {pause}us"));
        // A pause within a pause ends no sooner: what waits for the first one's end would
        // otherwise arrive after what comes later, out of order.
        let until = self.now + pause;
        let paused_until = &mut self.processes[process].paused_until;
        *paused_until = Some(paused_until.map_or(until, |earlier| earlier.max(until)));
        self.last_fault = self.last_fault.max(until);
    }

    pub(super) fn crash(&mut self, process: ProcessId) {
        self.kills += 1;
        self.trace
            .line(self.now, format_args!("p{process} crashes"));
        self.check_checkpointed(process);
        let p = &mut self.processes[process];
        p.alive = false;
        p.leading = None;
        p.requests.clear();
        p.iters.clear();
        self.end_watchers(process);
        self.lock.release(process);
        self.rooms_after_crash(process);
        if self.listener == Some(process) {
            self.listener = None;
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && (c.client == process || c.server == process))
            .map(|(id, _)| *id)
            .collect();
        for conn in conns {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.cut_short |= c.server == process;
            }
            self.close_conn(conn);
        }
        let delay = self.rand(100, 20_000);
        let incarnation = self.processes[process].incarnation;
        self.schedule(
            delay,
            Event::Restart {
                process,
                incarnation,
            },
        );
    }

    /// The store behind its fault layer: on some seeds a commit fails or is refused (a full
    /// disk); while faults are on, the leader may crash just before or just after a commit
    /// lands, before anyone hears of it.
    pub(super) fn commit(&mut self, process: ProcessId, batch: &WriteBatch) -> CommitResult {
        let cost: usize = batch.ops.iter().map(group_cost).sum::<usize>() + batch.records.len();
        if self.faults.small_groups && cost > SMALL_GROUP {
            if batch.ops.len() > 1 {
                self.violations.push(format!(
                    "p{process}: the writer formed a group of {cost} operations, over the \
                     store's limit of {SMALL_GROUP}"
                ));
            }
            return CommitResult::Failed(ErrorCode::BatchTooLarge {
                ops: cost as u64,
                max: SMALL_GROUP as u64,
            });
        }
        if self.faults.short_keys {
            let longest = batch.ops.iter().map(longest_key).max().unwrap_or(0);
            if longest > SHORT_KEY {
                return CommitResult::Failed(ErrorCode::KeyTooLarge {
                    len: longest as u64,
                    max: SHORT_KEY as u64,
                });
            }
        }
        let mut unsettled = false;
        let mut thread_dies = false;
        if self.faults.store && self.faults_on {
            let fault = match self.rng.next_u64() % 100 {
                0..=7 => Some(CommitResult::Failed(ErrorCode::Backend("injected".into()))),
                8..=9 => Some(CommitResult::Refused(ErrorCode::StoreFull {
                    free: 0,
                    reserve: 1,
                })),
                10 => Some(CommitResult::Refused(ErrorCode::StoreReadOnly)),
                // The store's answer is lost (a network store): the batch landed or not,
                // or is still on its way.
                11..=12 => {
                    if self.chance(50) {
                        self.send_late(process, batch, "its answer lost");
                    }
                    Some(CommitResult::Unsettled("injected, not landed".into()))
                }
                13..=14 => {
                    unsettled = true;
                    None
                }
                // The store thread dies (a panic) in the middle of the commit: the batch
                // landed or not, and no answer comes.
                18 => {
                    thread_dies = true;
                    None
                }
                // A store shared by several hosts (etcd) changed under the batch: another
                // host's leader changed what a transaction read or took the log's next
                // number, or a late copy of this store's own move of its commit marker
                // moved it.
                15..=17 => {
                    if self.chance(50) {
                        self.another_host_commits();
                    }
                    Some(CommitResult::Stale)
                }
                _ => None,
            };
            if fault.is_some() || unsettled || thread_dies {
                self.store_failed();
            }
            if let Some(result) = fault {
                return result;
            }
        }
        if thread_dies {
            self.store_thread_dies(process);
            if self.chance(50) {
                // Not landed, or on its way; the writer is never told (`write_queued`
                // stops here).
                if self.chance(50) {
                    self.send_late(process, batch, "its store thread dead");
                }
                return CommitResult::Failed(ErrorCode::Closed);
            }
        }
        if self.faults_on && self.chance(2) {
            self.trace
                .line(self.now, format_args!("p{process} crashes before a commit"));
            if self.faults.store && self.chance(50) {
                self.send_late(process, batch, "its process dead");
            }
            self.crash(process);
            return CommitResult::Failed(ErrorCode::Closed);
        }
        self.land(process, batch);
        if self.faults_on && self.chance(2) {
            self.trace
                .line(self.now, format_args!("p{process} crashes after a commit"));
            self.crash(process);
        }
        if unsettled {
            return CommitResult::Unsettled("injected, landed".into());
        }
        CommitResult::Committed
    }

    /// `batch` of `process` lands in the store.
    fn land(&mut self, process: ProcessId, batch: &WriteBatch) {
        self.check_transactions(process, batch);
        let effect = crate::check::effect_of(&self.store, &batch.ops);
        self.record_commit(process, batch);
        self.store
            .write(batch)
            .expect("the memory store cannot fail");
        self.store_written(process);
        self.timeline.commit(self.now, effect);
        if let Some(append) = &batch.log {
            self.timeline.logged(append.seq.0);
        }
        for op in &batch.ops {
            for value in crate::check::put_values(op) {
                let count = self.committed.entry(value.clone()).or_default();
                *count += 1;
                if *count == 2 {
                    self.violations.push(format!(
                        "write of {:?} applied twice (by p{process})",
                        String::from_utf8_lossy(&value)
                    ));
                }
            }
        }
    }

    /// `batch` of `process` is on its way to a store over the network, its sender gone
    /// (the process crashed, or its store thread died) or told only that the store's
    /// answer was lost: the store gets it a little later, maybe after it was fenced.
    fn send_late(&mut self, process: ProcessId, batch: &WriteBatch, why: &str) {
        self.trace.line(
            self.now,
            format_args!("p{process}'s commit is on its way to the store, {why}"),
        );
        let delay = self.rand(0, 10_000);
        let fences = self.fences;
        self.schedule(
            delay,
            Event::LateCommit {
                process,
                batch: batch.clone(),
                fences,
            },
        );
        self.last_fault = self.last_fault.max(self.now + delay);
    }

    /// A commit sent a while ago reaches the store. Once a leader's store read the log's
    /// ends or dedup records since, it must not land (etcd: that store moved the
    /// directory's commit marker first, which the commit compares): a later leader may
    /// have applied a re-sent write of it already, and later writes over it, and its own
    /// leader, told that its outcome is unknown, numbers the next entry and reads its
    /// clients' records again; the late one would apply it again, over them, or take a
    /// number or a record they tell of. Before that it may land: nothing was read that it
    /// changes. As every commit, it lands only if its transactions' reads still hold and
    /// its log entry's number is the next (etcd compares both).
    pub(super) fn late_commit(&mut self, process: ProcessId, batch: &WriteBatch, fences: u64) {
        let refused = if self.fences > fences && !self.injection.unfenced_late_commits {
            Some("a store's read fenced it")
        } else if self.reads_stale(batch) {
            Some("a transaction's read no longer holds")
        } else if self.log_number_taken(batch) {
            Some("its log number is taken")
        } else {
            None
        };
        match refused {
            Some(why) => self.trace.line(
                self.now,
                format_args!("p{process}'s late commit refused: {why}"),
            ),
            None => {
                self.trace
                    .line(self.now, format_args!("p{process}'s late commit lands"));
                self.land(process, batch);
            }
        }
    }

    /// The store thread of leader `process` dies: it takes no more jobs and answers none,
    /// and the driver learns it a little later (party-core: when it sees the thread gone).
    fn store_thread_dies(&mut self, process: ProcessId) {
        self.trace
            .line(self.now, format_args!("p{process}'s store thread dies"));
        let incarnation = self.processes[process].incarnation;
        let Some(leading) = &mut self.processes[process].leading else {
            return;
        };
        leading.store_died = true;
        let term = leading.term;
        let delay = self.rand(0, 300);
        self.schedule(
            delay,
            Event::StoreThreadDied {
                process,
                incarnation,
                term,
            },
        );
    }

    pub(super) fn store_died(&self, process: ProcessId) -> bool {
        let leading = self.processes[process].leading.as_ref();
        leading.is_some_and(|leading| leading.store_died)
    }

    /// The driver of `process` learns that its store thread died: its election fails (the
    /// machine steps down, its connections told the store failed, and fails what is
    /// pending). A leader draining after a close has stepped down already (the machine
    /// takes no notice): its connections wait for answers that never come until the
    /// drain's time is up.
    pub(super) fn store_thread_died(&mut self, process: ProcessId) {
        if let Some(leading) = &mut self.processes[process].leading {
            leading.death_heard = true;
        }
        let now = self.timestamp();
        let failed = ProcessInput::Election(ElectionInput::ServeFailed);
        self.processes[process].machine.handle_input(now, failed);
        self.pump(process);
    }

    /// The store's failure to read or sweep dedup records, now and then on seeds whose
    /// store fails.
    pub(super) fn store_fault(&mut self) -> Option<ErrorCode> {
        let fault = self.faults.store && self.faults_on && self.chance(5);
        if fault {
            self.store_failed();
        }
        fault.then(|| ErrorCode::Backend("injected".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use party_proto::feed::{encode_entry, encode_unlogged, LogAppend};
    use party_proto::wire::ReadCheck;
    use party_proto::CommitSeq;

    fn put(key: &[u8], value: &[u8]) -> WriteOp {
        WriteOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    /// A group of `ops` logged as number `seq` (kept, or taking its number only).
    fn logged(seq: u64, ops: Vec<WriteOp>, kept: bool) -> WriteBatch {
        let entry = if kept {
            encode_entry(0, &ops)
        } else {
            encode_unlogged(0)
        };
        WriteBatch {
            ops,
            records: Vec::new(),
            log: Some(LogAppend {
                seq: CommitSeq(seq),
                entry,
            }),
        }
    }

    fn stored(world: &World, key: &[u8]) -> Option<Vec<u8>> {
        world.store.get(key).unwrap()
    }

    #[test]
    fn a_late_commit_lands_until_a_store_read_fences_it() {
        let mut world = World::quiet();
        world.late_commit(0, &logged(1, vec![put(b"k", b"first")], true), 0);
        assert_eq!(stored(&world, b"k"), Some(b"first".to_vec()));
        let sent_at = world.fences;
        world.fences += 1;
        world.late_commit(0, &logged(2, vec![put(b"k", b"late")], true), sent_at);
        assert_eq!(stored(&world, b"k"), Some(b"first".to_vec()));
        assert!(world.violations.is_empty(), "{:?}", world.violations);
    }

    #[test]
    fn a_late_commit_whose_log_number_was_taken_applies_nothing() {
        let mut world = World::quiet();
        world.late_commit(0, &logged(1, vec![put(b"k", b"taken")], true), 0);
        world.late_commit(1, &logged(1, vec![put(b"k", b"late")], true), 0);
        assert_eq!(stored(&world, b"k"), Some(b"taken".to_vec()));
        assert!(world.violations.is_empty(), "{:?}", world.violations);
    }

    #[test]
    fn another_hosts_group_takes_the_logs_next_number() {
        let mut world = World::quiet();
        world.late_commit(0, &logged(1, vec![put(b"k", b"first")], true), 0);
        world.another_host_commits();
        world.late_commit(0, &logged(2, vec![put(b"k", b"taken")], true), 0);
        assert_eq!(
            stored(&world, b"k"),
            Some(b"first".to_vec()),
            "2 is the other's"
        );
        world.late_commit(0, &logged(3, vec![put(b"k", b"next")], true), 0);
        assert_eq!(stored(&world, b"k"), Some(b"next".to_vec()));
        assert!(world.violations.is_empty(), "{:?}", world.violations);
    }

    /// etcd compares no number for the entry of a leader without a feed: such a commit
    /// landing late under a number taken is the numbering's violation.
    #[test]
    fn a_late_unkept_entry_under_a_taken_number_lands_and_is_found() {
        let mut world = World::quiet();
        world.late_commit(0, &logged(1, vec![put(b"k", b"taken")], false), 0);
        world.late_commit(1, &logged(1, vec![put(b"k", b"late")], false), 0);
        assert_eq!(stored(&world, b"k"), Some(b"late".to_vec()));
        assert!(
            world.violations.iter().any(|v| v.contains("as number 1")),
            "{:?}",
            world.violations
        );
    }

    #[test]
    fn a_late_transaction_whose_read_no_longer_holds_applies_nothing() {
        let mut world = World::quiet();
        let read_empty = WriteOp::Transaction {
            reads: vec![ReadCheck::Key {
                key: b"k".to_vec(),
                value: None,
            }],
            writes: vec![BatchOp::Put {
                key: b"k".to_vec(),
                value: b"late".to_vec(),
            }],
        };
        world.late_commit(0, &logged(1, vec![put(b"k", b"since")], true), 0);
        world.late_commit(1, &logged(2, vec![read_empty], true), 0);
        assert_eq!(stored(&world, b"k"), Some(b"since".to_vec()));
        assert!(world.violations.is_empty(), "{:?}", world.violations);
    }
}

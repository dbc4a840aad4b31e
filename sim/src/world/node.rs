//! One process: carrying out what its party-proto machines ask — election actions on the
//! virtual lock, socket and store, the leader's sessions, and its writer's commits.

use super::*;

impl World {
    /// Carries out what a process's machines ask until nothing moves.
    pub(super) fn pump(&mut self, process: ProcessId) {
        loop {
            // A crash in the middle of a commit ends the process where it stands.
            if !self.processes[process].alive {
                return;
            }
            let mut moved = false;
            while let Some(output) = self.processes[process].machine.poll_output() {
                moved = true;
                self.process_output(process, output);
                if !self.processes[process].alive {
                    return;
                }
            }
            let conns: Vec<ConnId> = match &self.processes[process].leading {
                Some(leading) => leading.sessions.keys().copied().collect(),
                None => Vec::new(),
            };
            for conn in conns {
                moved |= self.carry_out_session(process, conn);
            }
            if !moved {
                break;
            }
        }
        if self.processes[process]
            .leading
            .as_ref()
            .is_none_or(|leading| leading.store_free_at <= self.now)
        {
            self.write_queued(process);
        }
        self.check_takeovers(process);
        self.check_refusal_told(process);
        self.check_room(process);
        let node = &mut self.processes[process];
        if node.closing && node.machine.is_closed() && node.leading.is_none() {
            // Closed, holding nothing: it starts again as a new process later. A lock its
            // dead store thread kept goes with the process.
            node.alive = false;
            if let Some(kept) = node.kept_lock.take() {
                self.lock.release_holding(kept);
            }
            if self.lock.holder() == Some(process) {
                let violation = format!("p{process} closed, still holding the lock");
                self.violations.push(violation);
            }
            let incarnation = node.incarnation;
            let delay = self.rand(100, 5_000);
            self.schedule(
                delay,
                Event::Restart {
                    process,
                    incarnation,
                },
            );
            return;
        }
        self.schedule_wake(process);
    }

    /// A closing leader's drain is over (`why`: its followers let go, or its time is up):
    /// it closes what is left, and releases the lock.
    pub(super) fn drained(&mut self, process: ProcessId, why: &str) {
        self.trace
            .line(self.now, format_args!("p{process} has drained: {why}"));
        self.stop_serving(process);
        self.pump(process);
    }

    /// Ends a leadership: its sessions go, its connections close, its lock is released
    /// (unless its store thread died: then at the process's exit, and the connections end
    /// with what they had not answered, as if cut).
    pub(super) fn stop_serving(&mut self, process: ProcessId) {
        let Some(leading) = self.processes[process].leading.take() else {
            return;
        };
        self.answers_lost(process);
        let served: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && c.server == process)
            .map(|(id, _)| *id)
            .collect();
        for conn in served {
            if leading.store_died {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.cut_short = true;
                }
            }
            self.close_conn(conn);
        }
        match leading.holding {
            Some(holding) if leading.store_died => {
                self.processes[process].kept_lock = Some(holding);
            }
            Some(holding) => self.lock.release_holding(holding),
            None => {}
        }
    }

    /// What `process` has in flight may have failed (a store fault, a conflict) with its
    /// answer lost, its connection to its leader (or its own leadership) ended: re-sent
    /// after a later write of its handle went ahead, it is answered `FailedBefore`.
    pub(super) fn answers_lost(&mut self, process: ProcessId) {
        let pending: Vec<usize> = self.processes[process].requests.values().copied().collect();
        for index in pending {
            self.history[index].excuses.failed_before = true;
        }
    }

    /// `process` lost the leader it had (if it had one and is not closing), for `cause`:
    /// its machine must say so once it is served again by another.
    pub(super) fn leader_lost(&mut self, process: ProcessId, cause: TakeoverCause) {
        let node = &mut self.processes[process];
        let role = node.machine.role();
        let had_leader = matches!(role.role, Role::Leader | Role::Follower);
        if had_leader && !node.closing {
            node.lost_leader.get_or_insert((cause, role.term));
        }
    }

    /// A leader tells no refusal (an earlier leader's): a caller's `Db::ready` fails while
    /// one is told. (A follower may, between a refusal its leader sent and the end of the
    /// connection that follows.)
    fn check_refusal_told(&mut self, process: ProcessId) {
        let role = self.processes[process].machine.role();
        if let (Role::Leader, Some(refusal)) = (role.role, &role.rejected) {
            let violation = format!(
                "p{process} at {}us leads and still tells of a refusal: {refusal:?}",
                self.now
            );
            self.violations.push(violation);
        }
    }

    /// The change log holds every number from its oldest entry to its newest (what finding
    /// its ends by point reads rests on: fjall, RocksDB and the memory store), and the ends
    /// found are those a walk of the whole log sees.
    fn check_log_ends(&mut self, process: ProcessId, ends: Option<party_proto::feed::LogEnds>) {
        let all = self
            .store
            .change_entries(party_proto::CommitSeq(0), false, usize::MAX);
        let numbers: Vec<u64> = all
            .expect("the memory store cannot fail")
            .iter()
            .map(|(seq, _)| seq.0)
            .collect();
        let walked = numbers.first().zip(numbers.last());
        let found = ends.map(|ends| (ends.first.seq.0, ends.last.seq.0));
        let contiguous = numbers.windows(2).all(|pair| pair[1] == pair[0] + 1);
        if !contiguous || found != walked.map(|(first, last)| (*first, *last)) {
            self.violations.push(format!(
                "p{process} at {}us found the change log's ends {found:?}; the log holds {numbers:?}",
                self.now
            ));
        }
    }

    /// A leader stepping down tells its followers why, as the world knows it: its handle
    /// is closing, its driver heard that its store thread died, or (else) it lost its lock.
    fn check_leave_cause(&mut self, process: ProcessId, cause: LeaveCause) {
        let node = &self.processes[process];
        let known = if node.closing {
            LeaveCause::Closing
        } else if node.leading.as_ref().is_some_and(|l| l.death_heard) {
            LeaveCause::StoreFailed
        } else {
            LeaveCause::LockLost
        };
        if cause != known {
            self.violations.push(format!(
                "p{process} at {}us steps down telling its followers {cause:?}; the world knows {known:?}",
                self.now
            ));
        }
    }

    /// Each failover a process's machine tells of must have the cause the world knows.
    fn check_takeovers(&mut self, process: ProcessId) {
        let node = &mut self.processes[process];
        let role = node.machine.role();
        let takeovers = role.takeovers;
        let served = matches!(role.role, Role::Leader | Role::Follower);
        if takeovers.count == node.takeovers_seen {
            match node.lost_leader {
                // Served again by the very leader it lost (only its connection broke):
                // no failover.
                Some((_, term)) if served && term == role.term => {
                    node.lost_leader = None;
                    node.cut_short = false;
                }
                Some((cause, _)) if served => {
                    let violation = format!(
                        "p{process} at {}us is served by a new leader and tells of no failover after {cause:?}",
                        self.now
                    );
                    node.lost_leader = None;
                    node.cut_short = false;
                    self.violations.push(violation);
                }
                _ => {}
            }
            return;
        }
        node.takeovers_seen = takeovers.count;
        let told = takeovers.last.map(|takeover| takeover.cause);
        let lost = node.lost_leader.take();
        node.cut_short = false;
        if lost.is_some_and(|(_, term)| term.is_some() && term == role.term) {
            self.violations.push(format!(
                "p{process} at {}us tells of a failover, served again by the leader it lost",
                self.now
            ));
        }
        let known = lost.map(|(cause, _)| cause);
        if told != known {
            self.violations.push(format!(
                "p{process} at {}us tells of a failover after {told:?}; its leader went by {known:?}",
                self.now
            ));
        }
    }

    /// Explains by `excuse` how what `process` has pending may end, and what it issues
    /// from now on.
    fn excuse_pending(&mut self, process: ProcessId, excuse: fn(&mut Excuses)) {
        let node = &mut self.processes[process];
        excuse(&mut node.excuses);
        let pending: Vec<usize> = node
            .requests
            .values()
            .chain(node.iters.values())
            .copied()
            .collect();
        let watchers: Vec<usize> = node.watches.values().copied().collect();
        for index in pending {
            excuse(&mut self.history[index].excuses);
        }
        for index in watchers {
            excuse(&mut self.watchers[index].excuses);
        }
    }

    /// The process is closing (by its caller, or as its election failed): what it has
    /// pending may fail with `Closed`.
    pub(super) fn closing(&mut self, process: ProcessId) {
        self.processes[process].closing = true;
        self.excuse_pending(process, |excuses| excuses.closed = true);
    }

    /// Carries out one output of a process's machine.
    pub(super) fn process_output(&mut self, process: ProcessId, output: ProcessOutput) {
        match output {
            ProcessOutput::Election(action) => self.election_action(process, action),
            ProcessOutput::Send(message) => {
                if let Some(conn) = self.processes[process].link {
                    self.send_to_server(conn, &message);
                }
            }
            ProcessOutput::Store(work) => {
                if let Some(local_conn) = self.processes[process]
                    .leading
                    .as_ref()
                    .map(|l| l.local_conn)
                {
                    self.server_output(process, local_conn, work);
                }
            }
            ProcessOutput::Completed { id, result } => {
                let Some(index) = self.processes[process].requests.remove(&id) else {
                    self.violations.push(format!(
                        "p{process}: request {} completed again, or was never issued",
                        id.0
                    ));
                    return;
                };
                let node = &self.processes[process];
                if result == Err(ErrorCode::ConnectionLost)
                    && !node.cut_short
                    && node
                        .lost_leader
                        .is_some_and(|(cause, _)| cause == TakeoverCause::HandOver)
                {
                    // A leader that closes answers what it was sent before it goes.
                    self.violations.push(format!(
                        "p{process}: request {} lost its connection at a hand-over",
                        id.0
                    ));
                }
                if result.is_ok() && Some(node.store) != self.store_kind {
                    self.violations.push(format!(
                        "p{process}: request {} served to a process configured for a {} store, \
                         the directory's is {:?}",
                        id.0, node.store, self.store_kind
                    ));
                }
                let op = &mut self.history[index];
                op.complete = Some(self.now);
                op.outcome = Outcome::of(result);
                self.trace.line(
                    self.now,
                    format_args!("p{process} op{index} -> {:?}", self.history[index].outcome),
                );
                self.transaction_step_ended(process, index);
            }
            ProcessOutput::IterReady { iter } => {
                if let Some((_, ready)) = self.processes[process].iter_waits.get_mut(&iter) {
                    *ready = Some(self.now);
                }
                if self.processes[process].iters.contains_key(&iter) {
                    self.schedule_read(process, iter);
                }
            }
            ProcessOutput::WatchReady { watch } => {
                if self.processes[process].watches.contains_key(&watch) {
                    self.schedule_watch_read(process, watch);
                }
            }
        }
    }

    /// Carries out an election action as the virtual OS would.
    pub(super) fn election_action(&mut self, process: ProcessId, action: ElectionOutput) {
        // Opening a store and connecting take time, during which a lock can be lost or a
        // close requested: their answers come later.
        let delay = match action {
            ElectionOutput::OpenStore => self.rand(0, 3_000),
            ElectionOutput::Connect | ElectionOutput::EnterWaitingRoom => self.rand(0, 300),
            _ => 0,
        };
        if delay == 0 {
            return self.answer(process, action);
        }
        let incarnation = self.processes[process].incarnation;
        let asked_of = self.reached_by(action);
        self.schedule(
            delay,
            Event::Answer {
                process,
                incarnation,
                action,
                asked_of,
            },
        );
    }

    /// Whom a connect (the listening leader) or a room entry (the open room's holder)
    /// reaches now.
    fn reached_by(&self, action: ElectionOutput) -> Option<ProcessId> {
        match action {
            ElectionOutput::Connect => self.listening_leader(),
            ElectionOutput::EnterWaitingRoom => self.open_room(),
            _ => None,
        }
    }

    /// The trace tells when a connect or a room entry, answered late, reaches someone
    /// else than it would have when asked: above all when the leader or the room it was
    /// asked of went meanwhile (the window in which a lock is lost or a room closes under a
    /// process on its way in), and when one came where there was none.
    pub(super) fn tell_if_moved(
        &mut self,
        process: ProcessId,
        action: ElectionOutput,
        asked_of: Option<ProcessId>,
    ) {
        let reached = self.reached_by(action);
        match (asked_of, reached) {
            (Some(gone), now) if now != Some(gone) => self.trace.line(
                self.now,
                format_args!(
                    "p{process}'s {action:?} no longer reaches p{gone}: {}",
                    now.map_or("nobody".into(), |p| format!("p{p} now"))
                ),
            ),
            (None, Some(came)) => self.trace.line(
                self.now,
                format_args!("p{process}'s {action:?} reaches p{came}, come since it was asked"),
            ),
            _ => {}
        }
    }

    /// Carries out an election action now, and answers the machine.
    pub(super) fn answer(&mut self, process: ProcessId, action: ElectionOutput) {
        let now = self.timestamp();
        if action == ElectionOutput::TryLock {
            self.look_again(process);
        }
        let input = match action {
            ElectionOutput::OpenWaitingRoom
            | ElectionOutput::CloseWaitingRoom
            | ElectionOutput::EnterWaitingRoom
            | ElectionOutput::LeaveWaitingRoom => self.room_action(process, action),
            // The lock file cannot be used (an IO error, not a holder).
            ElectionOutput::TryLock if self.faults.store && self.faults_on && self.chance(1) => {
                Some(ElectionInput::LockFailed)
            }
            ElectionOutput::TryLock => Some(if self.lock.try_lock(process) {
                ElectionInput::LockAcquired
            } else {
                ElectionInput::LockBusy
            }),
            // As party-core's store marker: the directory holds one kind, recorded by the
            // first leader to open it.
            ElectionOutput::OpenStore
                if party_proto::admit_store(self.store_kind, self.processes[process].store)
                    .is_err() =>
            {
                Some(ElectionInput::StoreOpenFailed)
            }
            ElectionOutput::OpenStore if self.faults.store && self.faults_on && self.chance(3) => {
                Some(ElectionInput::StoreOpenFailed)
            }
            // A previous leader's store still closing: tried again shortly.
            ElectionOutput::OpenStore if self.faults.store && self.chance(10) => {
                Some(ElectionInput::StoreLocked)
            }
            ElectionOutput::OpenStore => {
                self.store_kind.get_or_insert(self.processes[process].store);
                Some(ElectionInput::StoreOpened)
            }
            ElectionOutput::Bind if self.faults.store && self.faults_on && self.chance(2) => {
                Some(ElectionInput::BindFailed)
            }
            ElectionOutput::Bind => {
                // Only the lock holder binds; a listener left by another process is replaced,
                // as a stale socket file would be.
                self.listener = Some(process);
                Some(ElectionInput::SocketBound)
            }
            ElectionOutput::Serve => {
                let local_conn = self.next_conn;
                self.next_conn += 1;
                // Each leader's wall clock a little off, within an eighth of the retention:
                // records written by one and expired by another.
                let skew = if self.faults.short_retention.is_some() {
                    self.rand(0, self.dedup_retention().as_micros() as u64 / 8)
                } else {
                    0
                };
                let writer_config = WriterConfig {
                    max_group_ops: self.faults.small_groups.then_some(SMALL_GROUP),
                    dedup_retention: self.dedup_retention(),
                    change_feed: self.processes[process].change_feed,
                    // A short change log, so that slow subscribers fall behind it.
                    change_retention: party_proto::ChangeRetention {
                        groups: 12,
                        bytes: 2048,
                    },
                    wall_clock_at_epoch: Duration::from_micros(skew),
                    bugs: self.injection.bugs,
                    ..WriterConfig::default()
                };
                self.term += 1;
                let term = self.term;
                if self.processes[process].leading.is_some() {
                    self.violations.push(format!(
                        "p{process} leads again while its last leadership still serves"
                    ));
                }
                self.processes[process].leading = Some(Leading {
                    term,
                    draining: false,
                    sessions: BTreeMap::new(),
                    local_conn,
                    writer: Writer::new(writer_config, now),
                    iters: FxHashMap::default(),
                    chunks_due: FxHashMap::default(),
                    waiting: BTreeMap::new(),
                    woken_at: None,
                    holding: self.lock.holding().filter(|(holder, _)| *holder == process),
                    quiet_since: self.now,
                    store_died: false,
                    death_heard: false,
                    store_free_at: self.now,
                });
                self.trace.line(self.now, format_args!("p{process} leads"));
                self.processes[process]
                    .machine
                    .handle_input(now, ProcessInput::Served { term });
                return;
            }
            ElectionOutput::Connect => {
                let answer = self.connect(process);
                if answer == ElectionInput::Connected {
                    let foreign = self.processes[process]
                        .link
                        .and_then(|conn| self.conns.get(&conn))
                        .is_some_and(|c| c.foreign);
                    let peer_uid = Some(if foreign { 0 } else { SIM_USER });
                    self.processes[process]
                        .machine
                        .handle_input(now, ProcessInput::Connected { peer_uid });
                    return;
                }
                Some(answer)
            }
            ElectionOutput::StepDown => {
                self.trace
                    .line(self.now, format_args!("p{process} steps down"));
                // A lock an election took that has not led yet (opening the store, binding)
                // goes at once, as in party-core (the simulator kept it until the process
                // ended, so a close there held up every election meanwhile); one a
                // leadership holds goes when it stops serving.
                let leadership = self.processes[process]
                    .leading
                    .as_ref()
                    .and_then(|leading| leading.holding);
                let held = self.lock.holding();
                if held.is_some_and(|(holder, _)| holder == process) && held != leadership {
                    self.lock.release(process);
                }
                // As party-core's leader: its connections are told why, then closed.
                let cause = self.processes[process].machine.leave_cause();
                self.check_leave_cause(process, cause);
                let told = TakeoverCause::from(cause);
                let term = self.processes[process].leading.as_ref().map(|l| l.term);
                if let (Some(term), false) = (term, cause == LeaveCause::Closing) {
                    // Its machine no longer says it leads by now: the world knows it did.
                    self.processes[process]
                        .lost_leader
                        .get_or_insert((told, Some(term)));
                }
                let conns: Vec<ConnId> = self.processes[process]
                    .leading
                    .as_ref()
                    .map(|l| l.sessions.keys().copied().collect())
                    .unwrap_or_default();
                let now = self.timestamp();
                for conn in &conns {
                    // A connection already cut ends as it was cut.
                    match self.conns.get_mut(conn) {
                        Some(c) if c.open => c.ended_by = told,
                        _ => continue,
                    }
                    if let Some(session) = self.processes[process]
                        .leading
                        .as_mut()
                        .and_then(|l| l.sessions.get_mut(conn))
                    {
                        session.handle_input(now, ServerInput::Leave(cause));
                    }
                }
                if self.listener == Some(process) {
                    self.listener = None;
                }
                // Their last words go out, and each session says whether it serves on until
                // its follower lets go (a close) or is done (a lost lock).
                for conn in conns {
                    self.carry_out_session(process, conn);
                }
                // A leader that lost its lock serves nothing more, not even the sessions of
                // connections already cut, which were not told (party-core closes every
                // connection): one of those must not hold up its end.
                let serving_on = cause == LeaveCause::Closing
                    && self.processes[process]
                        .leading
                        .as_ref()
                        .is_some_and(|l| l.sessions.values().any(|s| !s.is_closed()));
                if serving_on {
                    // As party-core's leader: it answers what its followers sent before they
                    // let go, still holding the lock, for a while at most.
                    if let Some(leading) = &mut self.processes[process].leading {
                        leading.draining = true;
                    }
                    let incarnation = self.processes[process].incarnation;
                    self.schedule(
                        DRAIN_US,
                        Event::DrainEnd {
                            process,
                            incarnation,
                        },
                    );
                    return;
                }
                self.stop_serving(process);
                None
            }
            ElectionOutput::Disconnect => {
                if let Some(conn) = self.processes[process].link.take() {
                    // Letting go of a leader that said it was closing: a hand-over.
                    if let Some(c) = self.conns.get(&conn) {
                        let node = &mut self.processes[process];
                        if c.ended_by == TakeoverCause::HandOver && c.served && !node.closing {
                            node.lost_leader.get_or_insert((c.ended_by, c.term));
                        }
                    }
                    self.close_conn(conn);
                }
                None
            }
            ElectionOutput::Failed(reason) => {
                let faulty = matches!(
                    reason,
                    ElectionFailure::Lock
                        | ElectionFailure::StoreOpen
                        | ElectionFailure::Bind
                        | ElectionFailure::Serve
                );
                let other_store = reason == ElectionFailure::StoreOpen
                    && Some(self.processes[process].store) != self.store_kind;
                if (self.faults.store && faulty) || other_store {
                    // As a caller would after its handle failed to join: what was pending
                    // fails, and the process starts over later.
                    self.trace.line(
                        self.now,
                        format_args!("p{process}: the election fails ({reason:?})"),
                    );
                    // What it has pending fails with its election next.
                    self.excuse_pending(process, |excuses| excuses.election_failed = true);
                    self.closing(process);
                } else {
                    self.violations
                        .push(format!("p{process}: the election failed: {reason:?}"));
                }
                None
            }
        };
        if let Some(input) = input {
            self.processes[process]
                .machine
                .handle_input(now, ProcessInput::Election(input));
        }
    }

    /// Carries out what the session of `conn` on `process` has to say; true if it said
    /// anything.
    fn carry_out_session(&mut self, process: ProcessId, conn: ConnId) -> bool {
        let mut moved = false;
        while let Some(output) = self.processes[process]
            .leading
            .as_mut()
            .and_then(|leading| leading.sessions.get_mut(&conn))
            .and_then(ServerSession::poll_output)
        {
            moved = true;
            self.server_output(process, conn, output);
        }
        moved
    }

    pub(super) fn server_output(&mut self, process: ProcessId, conn: ConnId, output: ServerOutput) {
        let reply = match output {
            ServerOutput::Send(message) => {
                self.send_to_client(conn, &message);
                return;
            }
            ServerOutput::RingOffered { len, .. } => {
                self.ring_offered(conn, len);
                return;
            }
            ServerOutput::Close(reason) => {
                // Only garbage from the follower, a follower configured for another store,
                // or a leader going, is a reason to hang up on it.
                let expected = match reason {
                    ErrorCode::Closed => true,
                    ErrorCode::WrongStore { .. } => self.faults.other_stores,
                    _ => self.faults.garbage,
                };
                if !expected {
                    self.violations
                        .push(format!("p{process} closed conn{conn}: {reason}"));
                }
                self.close_conn(conn);
                return;
            }
            ServerOutput::Read {
                id,
                op,
                behind_writes,
            } => {
                // As party-core does: a read behind its connection's writes waits for them;
                // another runs at once, ahead of writes other connections have queued (on
                // the connection's task: still, once the store thread died).
                if behind_writes && !self.write_queued(process) {
                    return;
                }
                let result = match op {
                    ReadOp::Get { key } => self.store.get_shared(&key).map(Response::Value),
                    ReadOp::GetMany { keys } => self.store.get_many(&keys).map(Response::Values),
                    ReadOp::Status => {
                        let leading = self.processes[process].leading.as_ref();
                        let followers = leading.map_or(0, |l| l.sessions.len() as u32);
                        Ok(Response::Status(LeaderStatus { followers }))
                    }
                };
                ServerInput::Completed {
                    id,
                    result: result.map_err(Into::into),
                }
            }
            ServerOutput::Write { id, stamp, op } => {
                if let Some(leading) = &mut self.processes[process].leading {
                    leading.writer.write((conn, id), stamp, op);
                }
                return;
            }
            ServerOutput::IterOpen { iter, options } => {
                if !self.write_queued(process) {
                    return;
                }
                let chunks = self
                    .store
                    .chunks(&options)
                    .expect("the memory store cannot fail");
                let Some(leading) = &mut self.processes[process].leading else {
                    return;
                };
                leading.iters.insert((conn, iter), chunks);
                match leading.writer.last_committed() {
                    Some(seq) => ServerInput::IterAt { iter, seq },
                    None => return,
                }
            }
            ServerOutput::IterPull {
                iter,
                max,
                max_bytes,
            } => {
                // Served beside the store thread, as by party-core's scan thread: a pull
                // waits for no write, and cuts no group.
                if self.store_died(process) {
                    return;
                }
                let Some(leading) = &mut self.processes[process].leading else {
                    return;
                };
                let Some(chunks) = leading.iters.get_mut(&(conn, iter)) else {
                    return;
                };
                let (entries, exhausted) = chunks
                    .next_chunk(max as usize, max_bytes)
                    .expect("the memory store cannot fail");
                if exhausted {
                    // As party-core's scan thread: the pulls after this one go unanswered.
                    leading.iters.remove(&(conn, iter));
                }
                let chunk = ServerInput::IterChunk {
                    iter,
                    entries,
                    exhausted,
                };
                self.chunk_reply(process, conn, iter, chunk);
                return;
            }
            ServerOutput::IterDrop { iter } => {
                if let Some(leading) = &mut self.processes[process].leading {
                    leading.iters.remove(&(conn, iter));
                    leading.chunks_due.remove(&(conn, iter));
                }
                return;
            }
            ServerOutput::WatchPull { watch, from, max } => {
                // As party-core's store thread: after the writes queued before it.
                if self.write_queued(process) {
                    self.watch_pull(process, conn, watch, from, max);
                }
                return;
            }
            ServerOutput::WatchDrop { watch } => {
                self.watch_drop(process, conn, watch);
                return;
            }
        };
        self.store_reply(process, conn, reply);
    }

    /// The store's answer reaches the connection's session a little later (and never, if
    /// the process dies first).
    pub(super) fn store_reply(&mut self, process: ProcessId, conn: ConnId, input: ServerInput) {
        let incarnation = self.processes[process].incarnation;
        let delay = self.rand(1, 300);
        self.schedule(
            delay,
            Event::StoreReply {
                process,
                incarnation,
                conn,
                input,
            },
        );
    }

    /// An iterator's chunk reaches its session a little later, but never before the chunk
    /// of a pull before it: party-core's scan thread answers an iterator's pulls one after
    /// another, on the one channel of their connection.
    fn chunk_reply(&mut self, process: ProcessId, conn: ConnId, iter: IterId, chunk: ServerInput) {
        let incarnation = self.processes[process].incarnation;
        let mut at = self.now + self.rand(1, 300);
        if let Some(leading) = &mut self.processes[process].leading {
            let due = leading.chunks_due.entry((conn, iter)).or_default();
            at = at.max(*due);
            *due = at;
        }
        self.schedule_at(
            at,
            Event::StoreReply {
                process,
                incarnation,
                conn,
                input: chunk,
            },
        );
    }

    /// The store thread of `process` just committed a group: it is busy a while, and then
    /// takes what queued meanwhile.
    fn store_busy(&mut self, process: ProcessId) {
        let busy = self.rand(1, 200);
        let incarnation = self.processes[process].incarnation;
        if let Some(leading) = &mut self.processes[process].leading {
            let free_at = self.now.max(leading.store_free_at) + busy;
            leading.store_free_at = free_at;
            self.schedule_at(
                free_at,
                Event::StoreFree {
                    process,
                    incarnation,
                },
            );
        }
    }

    /// Cuts the writer's group and carries out what it asks, as party-core's store thread
    /// does before any job that must see the writes before it. Such a job comes after the
    /// group under way there; here it cuts and commits at once, busy store or not. False
    /// if the process crashed meanwhile (a crash in the middle of a commit), or its store
    /// thread died.
    pub(super) fn write_queued(&mut self, process: ProcessId) -> bool {
        let incarnation = self.processes[process].incarnation;
        let now = self.timestamp();
        let Some(leading) = &mut self.processes[process].leading else {
            return true;
        };
        if leading.store_died {
            return false;
        }
        leading.writer.cut(now);
        loop {
            let Some(leading) = &mut self.processes[process].leading else {
                return false;
            };
            let Some(output) = leading.writer.poll_output() else {
                self.wake_waiting(process);
                return true;
            };
            let input = match output {
                WriterOutput::Commit(batch) => {
                    if batch.records.len() > 1 {
                        // Writes of several clients in one commit: they queued while the
                        // store was busy with the last one.
                        self.trace.line(
                            self.now,
                            format_args!(
                                "p{process} commits writes of {} clients at once",
                                batch.records.len()
                            ),
                        );
                    }
                    let result = self.commit(process, &batch);
                    if !self.is_current(process, incarnation) || self.store_died(process) {
                        return false;
                    }
                    self.store_busy(process);
                    WriterInput::Committed(result)
                }
                WriterOutput::Reply {
                    to: (conn, id),
                    result,
                } => {
                    self.store_reply(process, conn, ServerInput::Completed { id, result });
                    continue;
                }
                WriterOutput::Checkpoint => {
                    self.store_checkpointed();
                    WriterInput::Checkpointed(true)
                }
                WriterOutput::LoadRecords(clients) => WriterInput::RecordsLoaded(
                    self.store_fault()
                        .map_or_else(
                            || {
                                self.fences += 1;
                                Ok(self.store.dedup_records_of(&clients))
                            },
                            Err,
                        )
                        .map(|records| {
                            let records = records.expect("the memory store cannot fail");
                            clients.into_iter().zip(records).collect()
                        }),
                ),
                WriterOutput::ReadChecks(reads) => {
                    WriterInput::ChecksRead(self.store_fault().map_or_else(
                        || {
                            let read = self.store.read_for_checks(&reads);
                            Ok(read.expect("the memory store cannot fail"))
                        },
                        Err,
                    ))
                }
                WriterOutput::LoadLogEnds => {
                    WriterInput::LogEndsLoaded(self.store_fault().map_or_else(
                        || {
                            self.fences += 1;
                            let ends = self.store.change_log_ends();
                            let ends = ends.expect("the memory store cannot fail");
                            self.check_log_ends(process, ends);
                            Ok(ends)
                        },
                        Err,
                    ))
                }
                WriterOutput::TrimLog { from, to } => {
                    WriterInput::LogTrimmed(self.store_fault().map_or_else(
                        || {
                            let trimmed: Vec<_> =
                                (from.0..to.0).map(party_proto::CommitSeq).collect();
                            self.store
                                .remove_changes(&trimmed)
                                .expect("the memory store cannot fail");
                            self.store_written(process);
                            Ok(())
                        },
                        Err,
                    ))
                }
                WriterOutput::ExpireRecords {
                    written_before_ms,
                    after,
                    max,
                } => WriterInput::RecordsExpired(self.store_fault().map_or_else(
                    || {
                        let swept = self
                            .store
                            .expire_dedup_records(written_before_ms, after, max);
                        Ok(swept.expect("the memory store cannot fail"))
                    },
                    Err,
                )),
            };
            let now = self.timestamp();
            if let Some(leading) = &mut self.processes[process].leading {
                leading.writer.handle_input(now, input);
            }
        }
    }

    pub(super) fn schedule_wake(&mut self, process: ProcessId) {
        let p = &self.processes[process];
        if !p.alive {
            return;
        }
        let mut next = p.machine.poll_timeout();
        if let Some(leading) = &p.leading {
            next = next
                .into_iter()
                .chain(leading.sessions.values().filter_map(|s| s.poll_timeout()))
                // The writer's timers run on the store thread: none once it died, none
                // before it is done with a group.
                .chain(
                    leading
                        .writer
                        .poll_timeout()
                        .filter(|_| !leading.store_died)
                        .map(|at| {
                            let free = Duration::from_micros(leading.store_free_at);
                            at.max(Timestamp::from_epoch(free))
                        }),
                )
                .min();
        }
        let Some(at) = next else { return };
        // The virtual clock counts whole microseconds: wake at the first one not before.
        let at = (at.since_epoch().as_nanos().div_ceil(1_000) as u64).max(self.now);
        if p.wake_at.is_some_and(|wake| wake <= at) {
            return;
        }
        let incarnation = p.incarnation;
        self.processes[process].wake_at = Some(at);
        self.schedule_at(
            at,
            Event::Wake {
                process,
                incarnation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader hangs up on a follower only for a reason the seed brings about: a store of
    /// another kind on a seed that configures some processes so, garbage on a seed that
    /// sends it. Any other hang-up (a session refusing a follower of its own store) is a
    /// violation.
    #[test]
    fn a_hang_up_is_a_violation_unless_the_seed_explains_it() {
        let wrong_store = ErrorCode::WrongStore {
            found: "memory".into(),
            wanted: "other".into(),
        };
        let malformed = ErrorCode::Malformed("garbage".into());
        for reason in [wrong_store, malformed] {
            for seed_explains in [false, true] {
                let (mut world, conn) = World::connected();
                world.faults.other_stores = false;
                world.faults.garbage = false;
                match &reason {
                    ErrorCode::WrongStore { .. } => world.faults.other_stores = seed_explains,
                    _ => world.faults.garbage = seed_explains,
                }
                world.server_output(0, conn, ServerOutput::Close(reason.clone()));
                assert_eq!(
                    world.violations.len(),
                    usize::from(!seed_explains),
                    "{reason:?}, seed explains {seed_explains}: {:?}",
                    world.violations
                );
            }
        }
    }

    /// An iterator opens on the store only once the writes queued before it are committed;
    /// a leader whose store thread died commits none, and opens none (as party-core's store
    /// thread, gone, answers nothing). Mutation run 72's K30 opened it anyway, unnoticed.
    #[test]
    fn an_iterator_opens_only_on_a_store_thread_alive() {
        for store_died in [false, true] {
            let (mut world, conn) = World::connected();
            world.answer(0, ElectionOutput::Serve);
            if let Some(leading) = &mut world.processes[0].leading {
                leading.store_died = store_died;
            }
            let (iter, options) = (IterId(1), IterOptions::default());
            world.server_output(0, conn, ServerOutput::IterOpen { iter, options });
            let opened = world.processes[0]
                .leading
                .as_ref()
                .is_some_and(|leading| leading.iters.contains_key(&(conn, iter)));
            assert_eq!(opened, !store_died, "store thread died: {store_died}");
        }
    }

    /// Letting go of a leader that said it was leaving is a hand-over lost only where that
    /// leader served the process (its welcome reached the machine); a connection whose
    /// welcome came too late for the election never served it (mutation run 72's K24, the
    /// `served` test dropped, was caught only by the kept seed 595 507, the one seed known
    /// to take this path).
    #[test]
    fn letting_go_of_a_leader_that_never_served_loses_no_leader() {
        for served in [false, true] {
            let (mut world, conn) = World::connected();
            if let Some(c) = world.conns.get_mut(&conn) {
                c.ended_by = TakeoverCause::HandOver;
                c.served = served;
            }
            world.answer(1, ElectionOutput::Disconnect);
            let lost = world.processes[1].lost_leader.map(|(cause, _)| cause);
            assert_eq!(
                lost,
                served.then_some(TakeoverCause::HandOver),
                "served {served}"
            );
        }
    }
}

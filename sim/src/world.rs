//! The simulated world: virtual processes running the real `party-proto` machines, a lock
//! oracle, byte pipes, one in-memory store that outlives crashes, a virtual clock, and one
//! seeded random generator that drives the workload and the faults.
//!
//! Each process has an election machine and a client session; the leader also runs a
//! server session per connection (its own handle's included, as in party-core) and
//! party-proto's writer, whose commits go to the store through a fault layer. Messages
//! travel as real frames, cut into random chunks, delayed, in order within a connection and
//! in any order across connections.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::ops::Bound;
use std::time::Duration;

use party_backends::{resolve, Backend, Chunks, MemoryBackend, WriteBatch};
use party_proto::jitter::SplitMix64;
use party_proto::wire::{
    encode_frame, BatchOp, ClientMessage, FrameDecoder, LeaderStatus, ReadOp, Response,
    ServerMessage, WriteOp,
};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, DedupTable, Election,
    ElectionConfig, ElectionInput, ElectionOutput, IterId, IterOptions, IterPoll, KeyRange,
    RequestId, Role, ServerConfig, ServerInput, ServerOutput, ServerSession, Timestamp,
};
use party_proto::{CommitResult, ErrorCode, Writer, WriterConfig, WriterInput, WriterOutput};

use crate::check::Timeline;
use crate::history::{Op, OpKind, Outcome};
use crate::lock_oracle::{LockOracle, ProcessId};
use crate::trace::Trace;
use crate::Injection;

/// The keys of the workload: byte edges, prefixes of one another.
pub const KEYS: [&[u8]; 6] = [b"", b"\x00", b"a", b"ab", b"b", b"\xff"];

const MAX_FRAME: u32 = 1 << 20;
/// After the last fault, everything pending must finish within this much virtual time.
const LIVENESS_BOUND_US: u64 = 5_000_000;

type ConnId = u64;

#[derive(Debug, Clone)]
enum Event {
    Workload(ProcessId),
    Deliver {
        conn: ConnId,
        to_server: bool,
        bytes: Vec<u8>,
    },
    Closed {
        conn: ConnId,
        to_server: bool,
    },
    StoreReply {
        process: ProcessId,
        incarnation: u32,
        conn: ConnId,
        input: ServerInput,
    },
    Wake {
        process: ProcessId,
        incarnation: u32,
    },
    ReadIter {
        process: ProcessId,
        incarnation: u32,
        iter: IterId,
    },
    Fault,
    Restart(ProcessId),
}

struct Conn {
    client: ProcessId,
    server: ProcessId,
    open: bool,
    /// Decoders at the server end and the client end.
    server_decoder: FrameDecoder,
    client_decoder: FrameDecoder,
    /// Last delivery time each way, so a connection stays in order.
    last_to_server: u64,
    last_to_client: u64,
}

struct Leading {
    sessions: BTreeMap<ConnId, ServerSession>,
    /// The leader's in-process connection to its own handle: a fresh number for each
    /// leadership, so that store replies for an earlier one find nothing.
    local_conn: ConnId,
    local: ServerSession,
    /// party-proto's writer, the very one party-core's store thread carries out.
    writer: Writer<(ConnId, RequestId)>,
    iters: HashMap<(ConnId, IterId), Chunks>,
}

struct Process {
    incarnation: u32,
    alive: bool,
    election: Election,
    client: ClientSession,
    link: Option<ConnId>,
    leading: Option<Leading>,
    /// History index of each pending request and open iterator.
    requests: HashMap<RequestId, usize>,
    iters: HashMap<IterId, usize>,
    reading: HashSet<IterId>,
    wake_at: Option<u64>,
}

/// How one simulated run ended.
#[derive(Debug)]
pub struct RunResult {
    pub violations: Vec<String>,
    pub trace: Trace,
    pub ops: usize,
    pub kills: usize,
}

pub struct World {
    rng: SplitMix64,
    injection: Injection,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: HashMap<usize, Event>,
    processes: Vec<Process>,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    lock: LockOracle,
    listener: Option<ProcessId>,
    store: MemoryBackend,
    timeline: Timeline,
    /// How many times each write's unique value was committed: judged by content, not by
    /// what the writer says.
    committed: HashMap<Vec<u8>, u32>,
    /// Whether this seed makes the store fail and refuse commits.
    store_faults: bool,
    history: Vec<Op>,
    ops_left: usize,
    faults_on: bool,
    last_fault: u64,
    kills: usize,
    violations: Vec<String>,
    trace: Trace,
    next_client: u128,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("now", &self.now)
            .field("processes", &self.processes.len())
            .finish_non_exhaustive()
    }
}

impl World {
    pub fn new(seed: u64, injection: Injection) -> World {
        let mut rng = SplitMix64::new(seed);
        let process_count = 3 + (rng.next_u64() % 4) as usize;
        let store_faults = rng.next_u64().is_multiple_of(3);
        let mut world = World {
            rng,
            injection,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            processes: Vec::new(),
            conns: BTreeMap::new(),
            next_conn: 0,
            lock: LockOracle::default(),
            listener: None,
            store: MemoryBackend::new(),
            timeline: Timeline::default(),
            committed: HashMap::new(),
            store_faults,
            history: Vec::new(),
            ops_left: 100,
            faults_on: true,
            last_fault: 0,
            kills: 0,
            violations: Vec::new(),
            trace: Trace::default(),
            next_client: u128::from(seed) << 32,
        };
        for process in 0..process_count {
            let fresh = world.fresh_process(0);
            world.processes.push(fresh);
            world.trace.line(0, format_args!("p{process} starts"));
            world.pump(process);
            let start = world.rand(0, 2_000);
            world.schedule(start, Event::Workload(process));
        }
        let first_fault = world.rand(500, 5_000);
        world.schedule(first_fault, Event::Fault);
        world
    }

    /// Runs until every event is spent, then checks what happened.
    pub fn run(mut self) -> RunResult {
        while let Some(Reverse((at, _, key))) = self.queue.pop() {
            let event = self
                .events
                .remove(&key)
                .expect("every queued key has an event");
            if !self.faults_on && at > self.last_fault + LIVENESS_BOUND_US {
                break;
            }
            self.now = at;
            self.handle(event);
            self.check_single_leader();
        }
        self.finish()
    }

    fn finish(mut self) -> RunResult {
        let stuck: Vec<String> = self
            .processes
            .iter()
            .enumerate()
            .filter(|(_, p)| p.alive && (!p.requests.is_empty() || !p.iters.is_empty()))
            .map(|(i, p)| {
                format!(
                    "p{i}: {} requests, {} iterators",
                    p.requests.len(),
                    p.iters.len()
                )
            })
            .collect();
        if !stuck.is_empty() {
            self.violations.push(format!(
                "liveness: still pending {}us after the last fault: {}",
                LIVENESS_BOUND_US,
                stuck.join("; ")
            ));
        }
        self.violations.extend(crate::check::outcomes(
            &self.history,
            &self.committed,
            self.store_faults,
        ));
        let keys: Vec<Vec<u8>> = KEYS.iter().map(|k| k.to_vec()).collect();
        if let Some(violation) = crate::check::linearizability(&self.history, &keys) {
            self.violations.push(violation);
        }
        if let Some(violation) = crate::check::iterators(&self.history, &self.timeline) {
            self.violations.push(violation);
        }
        RunResult {
            violations: self.violations,
            trace: self.trace,
            ops: self.history.len(),
            kills: self.kills,
        }
    }

    fn rand(&mut self, low: u64, high: u64) -> u64 {
        low + self.rng.next_u64() % (high - low).max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.next_u64() % 100 < percent
    }

    fn timestamp(&self) -> Timestamp {
        Timestamp::from_epoch(Duration::from_micros(self.now))
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.schedule_at(self.now + delay, event);
    }

    fn schedule_at(&mut self, at: u64, event: Event) {
        self.seq += 1;
        let key = self.seq as usize;
        self.events.insert(key, event);
        self.queue.push(Reverse((at, self.seq, key)));
    }

    fn fresh_process(&mut self, incarnation: u32) -> Process {
        self.next_client += 1;
        let election_config = ElectionConfig {
            bugs: self.injection.bugs,
            ..ElectionConfig::default()
        };
        let client_config = ClientConfig {
            iter_window: 1 + (self.rng.next_u64() % 4) as u32,
            bugs: self.injection.bugs,
            ..ClientConfig::default()
        };
        let seed = self.rng.next_u64();
        Process {
            incarnation,
            alive: true,
            election: Election::new(election_config, seed),
            client: ClientSession::new(ClientId(self.next_client), client_config),
            link: None,
            leading: None,
            requests: HashMap::new(),
            iters: HashMap::new(),
            reading: HashSet::new(),
            wake_at: None,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Workload(process) => self.workload(process),
            Event::Deliver {
                conn,
                to_server,
                bytes,
            } => self.deliver(conn, to_server, &bytes),
            Event::Closed { conn, to_server } => self.closed(conn, to_server),
            Event::StoreReply {
                process,
                incarnation,
                conn,
                input,
            } => {
                if !self.is_current(process, incarnation) {
                    return;
                }
                let now = self.timestamp();
                if let Some(session) = self.server_session(process, conn) {
                    session.handle_input(now, input);
                }
                self.pump(process);
            }
            Event::Wake {
                process,
                incarnation,
            } => {
                if !self.is_current(process, incarnation) {
                    return;
                }
                let now = self.timestamp();
                let p = &mut self.processes[process];
                p.wake_at = None;
                if p.election.poll_timeout().is_some_and(|at| at <= now) {
                    p.election.handle_input(now, ElectionInput::TimerFired);
                }
                p.client.handle_timeout(now);
                if let Some(leading) = &mut p.leading {
                    leading.local.handle_timeout(now);
                    for session in leading.sessions.values_mut() {
                        session.handle_timeout(now);
                    }
                    leading.writer.handle_timeout(now);
                }
                self.pump(process);
            }
            Event::ReadIter {
                process,
                incarnation,
                iter,
            } => {
                if self.is_current(process, incarnation) {
                    self.read_iter(process, iter);
                }
            }
            Event::Fault => self.fault(),
            Event::Restart(process) => {
                let incarnation = self.processes[process].incarnation + 1;
                self.processes[process] = self.fresh_process(incarnation);
                self.trace
                    .line(self.now, format_args!("p{process} restarts"));
                self.pump(process);
                self.schedule(100, Event::Workload(process));
            }
        }
    }

    fn is_current(&self, process: ProcessId, incarnation: u32) -> bool {
        let p = &self.processes[process];
        p.alive && p.incarnation == incarnation
    }

    // ---- workload -------------------------------------------------------------------

    fn key(&mut self) -> Vec<u8> {
        KEYS[(self.rng.next_u64() % KEYS.len() as u64) as usize].to_vec()
    }

    fn bound(&mut self) -> Bound<Vec<u8>> {
        match self.rng.next_u64() % 3 {
            0 => Bound::Unbounded,
            1 => Bound::Included(self.key()),
            _ => Bound::Excluded(self.key()),
        }
    }

    fn workload(&mut self, process: ProcessId) {
        if !self.processes[process].alive || self.ops_left == 0 {
            return;
        }
        self.ops_left -= 1;
        let value = format!("p{process}.{}", self.history.len()).into_bytes();
        let kind = match self.rng.next_u64() % 22 {
            20..=21 => {
                // A burst of writes issued together, which the leader commits as one group.
                let count = self.rand(2, 6);
                for n in 0..count {
                    let value = format!("p{process}.{}.{n}", self.history.len()).into_bytes();
                    let key = self.key();
                    self.issue(process, OpKind::Write(vec![(key, Some(value))]), false);
                }
                self.pump(process);
                self.schedule_next_workload(process);
                return;
            }
            0..=5 => OpKind::Get(self.key()),
            6..=10 => OpKind::Write(vec![(self.key(), Some(value))]),
            11..=12 => OpKind::Write(vec![(self.key(), None)]),
            13..=14 => {
                let (a, b) = (self.key(), self.key());
                OpKind::Write(vec![(a, Some(value.clone())), (b, Some(value))])
            }
            15 => OpKind::Clear(KeyRange {
                start: self.bound(),
                end: self.bound(),
            }),
            _ => OpKind::Iterate(IterOptions {
                range: KeyRange {
                    start: self.bound(),
                    end: self.bound(),
                },
                reverse: self.chance(50),
                limit: self.chance(30).then(|| self.rand(1, 5)),
                ..IterOptions::default()
            }),
        };
        self.issue(process, kind, true);
        self.schedule_next_workload(process);
    }

    fn schedule_next_workload(&mut self, process: ProcessId) {
        if self.ops_left > 0 {
            let next = self.rand(50, 3_000);
            self.schedule(next, Event::Workload(process));
        } else {
            self.faults_on = false;
        }
    }

    /// Issues one operation; `pump` false leaves it queued with the next ones.
    fn issue(&mut self, process: ProcessId, kind: OpKind, pump: bool) {
        let index = self.history.len();
        self.trace
            .line(self.now, format_args!("p{process} op{index} {kind:?}"));
        let now = self.timestamp();
        let p = &mut self.processes[process];
        match &kind {
            OpKind::Get(key) => {
                let id = p.client.read(now, ReadOp::Get { key: key.clone() });
                p.requests.insert(id, index);
            }
            OpKind::Write(writes) => {
                let ops = writes
                    .iter()
                    .map(|(key, value)| match value {
                        Some(value) => BatchOp::Put {
                            key: key.clone(),
                            value: value.clone(),
                        },
                        None => BatchOp::Del { key: key.clone() },
                    })
                    .collect();
                let id = p.client.write(now, WriteOp::Batch { ops });
                p.requests.insert(id, index);
            }
            OpKind::Clear(range) => {
                let id = p.client.write(
                    now,
                    WriteOp::Clear {
                        range: range.clone(),
                    },
                );
                p.requests.insert(id, index);
            }
            OpKind::Iterate(options) => {
                let iter = p.client.open_iter(options.clone());
                p.iters.insert(iter, index);
                self.history.push(Op {
                    process,
                    kind,
                    invoke: self.now,
                    complete: None,
                    outcome: Outcome::Iterated(Vec::new()),
                });
                self.pump(process);
                self.schedule_read(process, iter);
                return;
            }
        }
        self.history.push(Op {
            process,
            kind,
            invoke: self.now,
            complete: None,
            outcome: Outcome::Unknown,
        });
        if pump {
            self.pump(process);
        }
    }

    fn schedule_read(&mut self, process: ProcessId, iter: IterId) {
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
    fn read_iter(&mut self, process: ProcessId, iter: IterId) {
        self.processes[process].reading.remove(&iter);
        let max = self.rand(1, 4) as usize;
        let Some(&index) = self.processes[process].iters.get(&iter) else {
            return;
        };
        match self.processes[process].client.iter_take(iter, max) {
            IterPoll::Entries(entries) => {
                if let Outcome::Iterated(keys) = &mut self.history[index].outcome {
                    keys.extend(entries.into_iter().map(|e| e.key));
                }
                self.schedule_read(process, iter);
            }
            IterPoll::Pending => {}
            IterPoll::Done => self.end_iter(process, iter, index, None),
            IterPoll::Failed(error) => self.end_iter(process, iter, index, Some(error)),
        }
        self.pump(process);
    }

    fn end_iter(
        &mut self,
        process: ProcessId,
        iter: IterId,
        index: usize,
        error: Option<party_proto::ErrorCode>,
    ) {
        self.processes[process].iters.remove(&iter);
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
    }

    // ---- faults ---------------------------------------------------------------------

    fn fault(&mut self) {
        if !self.faults_on {
            return;
        }
        self.last_fault = self.now;
        let alive: Vec<ProcessId> = (0..self.processes.len())
            .filter(|p| self.processes[*p].alive)
            .collect();
        let leader = alive
            .iter()
            .copied()
            .find(|p| self.processes[*p].election.role() == Role::Leader);
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
                let open: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.open)
                    .map(|(id, _)| *id)
                    .collect();
                if !open.is_empty() {
                    let conn = open[(self.rng.next_u64() % open.len() as u64) as usize];
                    self.trace.line(self.now, format_args!("cut conn{conn}"));
                    self.close_conn(conn);
                }
            }
            8 => {
                if let Some(leader) = leader {
                    // The lock is taken away, as a lease would expire.
                    self.trace
                        .line(self.now, format_args!("p{leader} loses the lock"));
                    self.lock.release(leader);
                    let now = self.timestamp();
                    self.processes[leader]
                        .election
                        .handle_input(now, ElectionInput::LockLost);
                    self.pump(leader);
                }
            }
            _ => {}
        }
        let next = self.rand(1_000, 15_000);
        self.schedule(next, Event::Fault);
    }

    fn crash(&mut self, process: ProcessId) {
        self.kills += 1;
        self.trace
            .line(self.now, format_args!("p{process} crashes"));
        let p = &mut self.processes[process];
        p.alive = false;
        p.leading = None;
        p.requests.clear();
        p.iters.clear();
        self.lock.release(process);
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
            self.close_conn(conn);
        }
        let delay = self.rand(100, 20_000);
        self.schedule(delay, Event::Restart(process));
    }

    // ---- network --------------------------------------------------------------------

    fn transmit(&mut self, conn: ConnId, to_server: bool, mut bytes: Vec<u8>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        let mut last = if to_server {
            c.last_to_server
        } else {
            c.last_to_client
        };
        while !bytes.is_empty() {
            let cut = (self.rand(1, 64) as usize).min(bytes.len());
            let rest = bytes.split_off(cut);
            last = last.max(self.now) + self.rand(1, 200);
            self.schedule_at(
                last,
                Event::Deliver {
                    conn,
                    to_server,
                    bytes,
                },
            );
            bytes = rest;
        }
        let c = self.conns.get_mut(&conn).expect("checked above");
        if to_server {
            c.last_to_server = last;
        } else {
            c.last_to_client = last;
        }
    }

    /// Both ends learn the connection is gone, after what was already on its way.
    fn close_conn(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open {
            return;
        }
        c.open = false;
        let (to_server_at, to_client_at) = (
            c.last_to_server.max(self.now) + 1,
            c.last_to_client.max(self.now) + 1,
        );
        self.schedule_at(
            to_server_at,
            Event::Closed {
                conn,
                to_server: true,
            },
        );
        self.schedule_at(
            to_client_at,
            Event::Closed {
                conn,
                to_server: false,
            },
        );
    }

    fn deliver(&mut self, conn: ConnId, to_server: bool, bytes: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let process = if to_server { c.server } else { c.client };
        let decoder = if to_server {
            &mut c.server_decoder
        } else {
            &mut c.client_decoder
        };
        let mut input = bytes;
        let mut decoded = Vec::new();
        let mut failed = None;
        loop {
            if to_server {
                match decoder.decode::<ClientMessage>(&mut input) {
                    Ok(Some(message)) => decoded.push(Ok(message)),
                    Ok(None) => break,
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            } else {
                match decoder.decode::<ServerMessage>(&mut input) {
                    Ok(Some(message)) => decoded.push(Err(message)),
                    Ok(None) => break,
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
        }
        if let Some(error) = failed {
            self.violations
                .push(format!("conn{conn}: frames did not decode: {error}"));
        }
        if !self.processes[process].alive {
            return;
        }
        let now = self.timestamp();
        for message in decoded {
            match message {
                Ok(request) => {
                    if let Some(leading) = &mut self.processes[process].leading {
                        if let Some(session) = leading.sessions.get_mut(&conn) {
                            session.handle_input(now, ServerInput::Message(request));
                        }
                    }
                }
                Err(reply) => {
                    if self.processes[process].link == Some(conn) {
                        self.processes[process]
                            .client
                            .handle_input(now, ClientInput::Message(reply));
                    }
                }
            }
        }
        self.pump(process);
    }

    fn closed(&mut self, conn: ConnId, to_server: bool) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let process = if to_server { c.server } else { c.client };
        if !to_server {
            self.conns.remove(&conn);
        }
        if !self.processes[process].alive {
            return;
        }
        let now = self.timestamp();
        let p = &mut self.processes[process];
        if to_server {
            if let Some(leading) = &mut p.leading {
                leading.sessions.remove(&conn);
                leading.iters.retain(|(c, _), _| *c != conn);
            }
        } else if p.link == Some(conn) {
            p.link = None;
            p.client.handle_input(now, ClientInput::Disconnected);
            p.election.handle_input(now, ElectionInput::Disconnected);
        }
        self.pump(process);
    }

    // ---- one process's machines -----------------------------------------------------

    /// Moves outputs between a process's machines until nothing moves.
    fn pump(&mut self, process: ProcessId) {
        loop {
            // A crash in the middle of a commit ends the process where it stands.
            if !self.processes[process].alive {
                return;
            }
            let mut moved = false;
            while let Some(output) = self.processes[process].election.poll_output() {
                moved = true;
                self.election_output(process, output);
            }
            while let Some(output) = self.processes[process].client.poll_output() {
                moved = true;
                self.client_output(process, output);
            }
            let conns: Vec<ConnId> = match &self.processes[process].leading {
                Some(leading) => std::iter::once(leading.local_conn)
                    .chain(leading.sessions.keys().copied())
                    .collect(),
                None => Vec::new(),
            };
            for conn in conns {
                while let Some(output) = self
                    .server_session(process, conn)
                    .and_then(ServerSession::poll_output)
                {
                    moved = true;
                    self.server_output(process, conn, output);
                }
            }
            if !moved {
                break;
            }
        }
        self.write_queued(process);
        self.schedule_wake(process);
    }

    fn server_session(&mut self, process: ProcessId, conn: ConnId) -> Option<&mut ServerSession> {
        let leading = self.processes[process].leading.as_mut()?;
        if conn == leading.local_conn {
            Some(&mut leading.local)
        } else {
            leading.sessions.get_mut(&conn)
        }
    }

    fn schedule_wake(&mut self, process: ProcessId) {
        let p = &self.processes[process];
        if !p.alive {
            return;
        }
        let mut next = [p.election.poll_timeout(), p.client.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        if let Some(leading) = &p.leading {
            let sessions = std::iter::once(&leading.local).chain(leading.sessions.values());
            next = next
                .into_iter()
                .chain(sessions.filter_map(|s| s.poll_timeout()))
                .chain(leading.writer.poll_timeout())
                .min();
        }
        let Some(at) = next else { return };
        let at = (at.since_epoch().as_micros() as u64).max(self.now);
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

    fn election_output(&mut self, process: ProcessId, output: ElectionOutput) {
        let now = self.timestamp();
        let input = match output {
            ElectionOutput::TryLock => Some(if self.lock.try_lock(process) {
                ElectionInput::LockAcquired
            } else {
                ElectionInput::LockBusy
            }),
            ElectionOutput::OpenStore => Some(ElectionInput::StoreOpened),
            ElectionOutput::Bind => {
                // Only the lock holder binds; a listener left by another process is replaced,
                // as a stale socket file would be.
                self.listener = Some(process);
                Some(ElectionInput::SocketBound)
            }
            ElectionOutput::Serve => {
                let records = self
                    .store
                    .dedup_records()
                    .expect("the memory store cannot fail");
                let config = ServerConfig {
                    max_iter_credits: 8,
                    ..ServerConfig::default()
                };
                let local_conn = self.next_conn;
                self.next_conn += 1;
                let writer_config = WriterConfig {
                    bugs: self.injection.bugs,
                    ..WriterConfig::default()
                };
                self.processes[process].leading = Some(Leading {
                    sessions: BTreeMap::new(),
                    local_conn,
                    local: ServerSession::new(now, config),
                    writer: Writer::new(writer_config, DedupTable::from_records(records)),
                    iters: HashMap::new(),
                });
                self.trace.line(self.now, format_args!("p{process} leads"));
                self.processes[process]
                    .client
                    .handle_input(now, ClientInput::Connected);
                None
            }
            ElectionOutput::Connect => Some(self.connect(process)),
            ElectionOutput::StepDown => {
                self.trace
                    .line(self.now, format_args!("p{process} steps down"));
                let p = &mut self.processes[process];
                if p.leading.take().is_some() {
                    p.client.handle_input(now, ClientInput::Disconnected);
                }
                let served: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.open && c.server == process)
                    .map(|(id, _)| *id)
                    .collect();
                for conn in served {
                    self.close_conn(conn);
                }
                if self.listener == Some(process) {
                    self.listener = None;
                }
                self.lock.release(process);
                None
            }
            ElectionOutput::Disconnect => {
                if let Some(conn) = self.processes[process].link.take() {
                    self.close_conn(conn);
                }
                None
            }
            ElectionOutput::Failed(reason) => {
                self.violations
                    .push(format!("p{process}: the election failed: {reason:?}"));
                None
            }
        };
        if let Some(input) = input {
            self.processes[process].election.handle_input(now, input);
        }
    }

    fn connect(&mut self, process: ProcessId) -> ElectionInput {
        let Some(server) = self
            .listener
            .filter(|l| self.processes[*l].alive && self.processes[*l].leading.is_some())
        else {
            return ElectionInput::ConnectFailed;
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            conn,
            Conn {
                client: process,
                server,
                open: true,
                server_decoder: FrameDecoder::new(MAX_FRAME),
                client_decoder: FrameDecoder::new(MAX_FRAME),
                last_to_server: self.now,
                last_to_client: self.now,
            },
        );
        let now = self.timestamp();
        let config = ServerConfig {
            max_iter_credits: 8,
            ..ServerConfig::default()
        };
        if let Some(leading) = &mut self.processes[server].leading {
            leading
                .sessions
                .insert(conn, ServerSession::new(now, config));
        }
        let p = &mut self.processes[process];
        p.link = Some(conn);
        p.client.handle_input(now, ClientInput::Connected);
        ElectionInput::Connected
    }

    fn client_output(&mut self, process: ProcessId, output: ClientOutput) {
        match output {
            ClientOutput::Send(message) => {
                let now = self.timestamp();
                let p = &mut self.processes[process];
                if let Some(leading) = &mut p.leading {
                    leading
                        .local
                        .handle_input(now, ServerInput::Message(message));
                } else if let Some(conn) = p.link {
                    let mut bytes = Vec::new();
                    if encode_frame(&message, MAX_FRAME, &mut bytes).is_ok() {
                        self.transmit(conn, true, bytes);
                    }
                }
            }
            ClientOutput::Completed { id, result } => {
                let Some(index) = self.processes[process].requests.remove(&id) else {
                    self.violations.push(format!(
                        "p{process}: request {} completed again, or was never issued",
                        id.0
                    ));
                    return;
                };
                let op = &mut self.history[index];
                op.complete = Some(self.now);
                op.outcome = match result {
                    Ok(Response::Value(value)) => Outcome::Read(value),
                    Ok(Response::Written) => Outcome::Written,
                    Ok(Response::Values(_) | Response::Status(_)) => {
                        Outcome::Failed(party_proto::ErrorCode::Malformed(
                            "an answer the workload never asks for".into(),
                        ))
                    }
                    Err(error) => Outcome::Failed(error),
                };
                self.trace.line(
                    self.now,
                    format_args!("p{process} op{index} -> {:?}", self.history[index].outcome),
                );
            }
            ClientOutput::IterReady { iter } => {
                if self.processes[process].iters.contains_key(&iter) {
                    self.schedule_read(process, iter);
                }
            }
        }
    }

    fn server_output(&mut self, process: ProcessId, conn: ConnId, output: ServerOutput) {
        let reply = match output {
            ServerOutput::Send(message) => {
                let local = self.processes[process]
                    .leading
                    .as_ref()
                    .map(|l| l.local_conn);
                if local == Some(conn) {
                    let now = self.timestamp();
                    self.processes[process]
                        .client
                        .handle_input(now, ClientInput::Message(message));
                } else {
                    let mut bytes = Vec::new();
                    if encode_frame(&message, MAX_FRAME, &mut bytes).is_ok() {
                        self.transmit(conn, false, bytes);
                    }
                }
                return;
            }
            ServerOutput::Close(reason) => {
                self.violations
                    .push(format!("p{process} closed conn{conn}: {reason}"));
                self.close_conn(conn);
                return;
            }
            ServerOutput::Read { id, op } => {
                if !self.write_queued(process) {
                    return;
                }
                let result = match op {
                    ReadOp::Get { key } => self.store.get(&key).map(Response::Value),
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
                if let Some(leading) = &mut self.processes[process].leading {
                    leading.iters.insert((conn, iter), chunks);
                }
                return;
            }
            ServerOutput::IterPull { iter, max } => {
                if !self.write_queued(process) {
                    return;
                }
                let Some(leading) = &mut self.processes[process].leading else {
                    return;
                };
                let Some(chunks) = leading.iters.get_mut(&(conn, iter)) else {
                    return;
                };
                let (entries, exhausted) = chunks
                    .next_chunk(max as usize)
                    .expect("the memory store cannot fail");
                ServerInput::IterChunk {
                    iter,
                    entries,
                    exhausted,
                }
            }
            ServerOutput::IterDrop { iter } => {
                if let Some(leading) = &mut self.processes[process].leading {
                    leading.iters.remove(&(conn, iter));
                }
                return;
            }
        };
        let incarnation = self.processes[process].incarnation;
        let delay = self.rand(1, 300);
        self.schedule(
            delay,
            Event::StoreReply {
                process,
                incarnation,
                conn,
                input: reply,
            },
        );
    }

    /// Cuts the writer's group and carries out what it asks, as party-core's store thread
    /// does before any job that must see the writes before it. False if the process
    /// crashed meanwhile (a crash in the middle of a commit).
    fn write_queued(&mut self, process: ProcessId) -> bool {
        let incarnation = self.processes[process].incarnation;
        let Some(leading) = &mut self.processes[process].leading else {
            return true;
        };
        leading.writer.cut();
        loop {
            let Some(leading) = &mut self.processes[process].leading else {
                return false;
            };
            let Some(output) = leading.writer.poll_output() else {
                return true;
            };
            let input = match output {
                WriterOutput::Commit(batch) => {
                    let result = self.commit(process, &batch);
                    if !self.is_current(process, incarnation) {
                        return false;
                    }
                    WriterInput::Committed(result)
                }
                WriterOutput::Reply {
                    to: (conn, id),
                    result,
                } => {
                    let delay = self.rand(1, 300);
                    let input = ServerInput::Completed { id, result };
                    self.schedule(
                        delay,
                        Event::StoreReply {
                            process,
                            incarnation,
                            conn,
                            input,
                        },
                    );
                    continue;
                }
                WriterOutput::Checkpoint => WriterInput::Checkpointed(true),
            };
            let now = self.timestamp();
            if let Some(leading) = &mut self.processes[process].leading {
                leading.writer.handle_input(now, input);
            }
        }
    }

    /// The store behind its fault layer: on some seeds a commit fails or is refused (a full
    /// disk); while faults are on, the leader may crash just before or just after a commit
    /// lands, before anyone hears of it.
    fn commit(&mut self, process: ProcessId, batch: &WriteBatch) -> CommitResult {
        if self.store_faults && self.faults_on {
            match self.rng.next_u64() % 100 {
                0..=7 => return CommitResult::Failed(ErrorCode::Backend("injected".into())),
                8..=10 => {
                    return CommitResult::Refused(ErrorCode::StoreFull {
                        free: 0,
                        reserve: 1,
                    })
                }
                _ => {}
            }
        }
        if self.faults_on && self.chance(2) {
            self.trace
                .line(self.now, format_args!("p{process} crashes before a commit"));
            self.crash(process);
            return CommitResult::Failed(ErrorCode::Closed);
        }
        let store = &self.store;
        let effect = resolve(&batch.ops, |range| {
            store
                .iter(range, false)?
                .map(|e| e.map(|e| e.key))
                .collect()
        })
        .expect("the memory store cannot fail");
        self.store
            .write(batch)
            .expect("the memory store cannot fail");
        for (key, value) in effect {
            self.timeline.record(self.now, &key, value.is_some());
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
        if self.faults_on && self.chance(2) {
            self.trace
                .line(self.now, format_args!("p{process} crashes after a commit"));
            self.crash(process);
        }
        CommitResult::Committed
    }

    fn check_single_leader(&mut self) {
        let leaders: Vec<ProcessId> = (0..self.processes.len())
            .filter(|p| {
                self.processes[*p].alive && self.processes[*p].election.role() == Role::Leader
            })
            .collect();
        if leaders.len() > 1 && !self.violations.iter().any(|v| v.starts_with("two leaders")) {
            self.violations
                .push(format!("two leaders at {}us: {leaders:?}", self.now));
        }
    }
}

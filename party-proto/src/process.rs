//! One process of a party, whole: the election, the client session every operation of the
//! handle goes through, and — while this process leads — the server session of its own
//! handle, wired together. In the shape of str0m's `Rtc`: one `handle_input(now, input)`,
//! `poll_output()`, `poll_timeout()`, and the caller's operations as methods.
//!
//! What the driver does not see is decided here: a leader's own operations go to its
//! in-process server session without a socket; a seat in a lock holder's waiting room
//! carries the hello, and is the connection once the holder answers on it (its end before
//! that is the room closing); a connection that ends after the leader
//! refused this process (or sent bytes that do not decode) backs off instead of knocking
//! again at once; a process that cannot join the party fails everything pending; a leader
//! that steps down re-sends its own operations to whoever leads next; a peer of another
//! user, or one that never welcomes, is no leader; and the handle's failovers are counted
//! with their cause (a crash, a hand-over its leader announced, a lock lost).
//!
//! The follower connections a leader serves and its writer are separate machines
//! ([`crate::ServerSession`], [`crate::Writer`]): they run on other tasks and threads in
//! party-core, and the simulator drives them the same way.

use std::collections::VecDeque;

use crate::client::{ClientConfig, ClientInput, ClientOutput, ClientSession, IterPoll, WatchPoll};
use crate::election::{
    Election, ElectionConfig, ElectionFailure, ElectionInput, ElectionOutput, Role,
};
use crate::error::ErrorCode;
use crate::feed::CommitSeq;
use crate::ids::{ClientId, IterId, RequestId, WatchId};
use crate::range::{IterOptions, KeyRange};
use crate::server::{admit_leader, ServerConfig, ServerInput, ServerOutput, ServerSession};
use crate::takeover::{TakeoverCause, Takeovers};
use crate::time::Timestamp;
use crate::wire::{ClientMessage, LeaveCause, ReadOp, Response, ServerMessage, WriteOp};

/// How a process behaves.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
pub struct ProcessConfig {
    pub election: ElectionConfig,
    pub client: ClientConfig,
    /// How this process serves while it leads (its own handle's session included).
    pub server: ServerConfig,
    /// The user this process runs as, where the platform tells: a leader of another user
    /// is refused.
    pub user: Option<u32>,
}

/// What happened, as the driver saw it.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ProcessInput {
    /// The answer to an election action: the lock, the store, the socket, a connect; or
    /// the lock lost. (A connection's end is [`ProcessInput::LinkClosed`].)
    Election(ElectionInput),
    /// Serving started after [`ElectionOutput::Serve`]: the store is reachable for this
    /// process's own handle. `term` is this leadership's generation (the last one of the
    /// directory plus one), as the driver counted it.
    Served { term: u64 },
    /// Answer to [`ElectionOutput::Connect`]: connected, to a process running as
    /// `peer_uid` where the platform tells. (`Election(ElectionInput::Connected)` is the
    /// same with the user unknown.)
    Connected { peer_uid: Option<u32> },
    /// Answer to [`ElectionOutput::EnterWaitingRoom`]: seated in the room of a process
    /// running as `peer_uid`, where the platform tells. The seat is the connection from
    /// then on: what arrives on it is [`ProcessInput::FromLeader`] (the first message
    /// says the holder serves and took the seat), its end [`ProcessInput::LinkClosed`]
    /// (the room closed first). (`Election(ElectionInput::InWaitingRoom)` is the same with
    /// the user unknown.)
    Seated { peer_uid: Option<u32> },
    /// A message from the leader on the current connection.
    FromLeader(ServerMessage),
    /// The connection to the leader ended.
    LinkClosed,
    /// The connection to the leader is unusable: it sent bytes that do not decode, or a
    /// request could not be encoded. What is pending fails with this error.
    LinkBroken(ErrorCode),
    /// The store answered work of this process's own handle ([`ProcessOutput::Store`]).
    Store(ServerInput),
    /// The time asked for by [`Process::poll_timeout`] has come.
    TimerFired,
    /// The handle is closing.
    Close,
}

/// What the driver must do or tell the caller.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ProcessOutput {
    /// Carry out an election action; answer with [`ProcessInput::Election`] where the
    /// action asks for one (and [`ProcessInput::Served`] after `Serve`).
    Election(ElectionOutput),
    /// Send this to the leader's socket.
    Send(ClientMessage),
    /// Run this against the store for this process's own handle: a read, a write, iterator
    /// work, or the (unexpected) close of its session. Answer with [`ProcessInput::Store`].
    Store(ServerOutput),
    /// The one and only outcome of a request.
    Completed {
        id: RequestId,
        result: Result<Response, ErrorCode>,
    },
    /// The iterator has something new for [`Process::iter_take`].
    IterReady { iter: IterId },
    /// The subscription has something new: its start ([`Process::watch_position`]), or
    /// events or its failure for [`Process::watch_take`].
    WatchReady { watch: WatchId },
}

/// The role of a process as callers see it.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoleView {
    /// A process counts as a follower once the leader has welcomed it (so its protocol is
    /// known to match), not merely once connected.
    pub role: Role,
    pub leader_pid: Option<u32>,
    /// Why the last leader refused this process, until one welcomes it.
    pub rejected: Option<ErrorCode>,
    /// Why the election gave up, if it did.
    pub failure: Option<ElectionFailure>,
    /// The generation of the leader serving this process, once known.
    pub term: Option<u64>,
    /// The failovers this process has lived through.
    pub takeovers: Takeovers,
}

/// One process. See the module documentation.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Process {
    election: Election,
    client: ClientSession,
    server_config: ServerConfig,
    welcome_timeout: std::time::Duration,
    user: Option<u32>,
    /// When the peer just connected to must have welcomed this process.
    welcome_due: Option<Timestamp>,
    /// The session of this process's own handle while it leads.
    local: Option<ServerSession>,
    /// A connection to a leader is open (or a seat in a waiting room: see `seated`).
    linked: bool,
    /// The connection is a seat in a waiting room: the hello is said on it, and the room's
    /// holder does not serve yet. Waiting there has no welcome timeout: the holder's
    /// store may take long to open, and the room's patience bounds the wait.
    seated: bool,
    /// Why the last leader refused this process, until one welcomes it or it leads.
    rejected: Option<ErrorCode>,
    /// The peer of the current connection refused this process (a refusal, no welcome in
    /// time, garbage): the election backs off when it ends, rather than knock again.
    refused_here: bool,
    failure: Option<ElectionFailure>,
    /// Its store failed while it led (`ElectionInput::ServeFailed`). Known before the
    /// election's step-down is, unlike `failure`, which comes after it.
    store_failed: bool,
    /// The leader said it was leaving, and why.
    leaving: Option<TakeoverCause>,
    takeovers: Takeovers,
    closing: bool,
    outputs: VecDeque<ProcessOutput>,
}

impl Process {
    /// A process whose handle is `client_id`; `seed` jitters its waits.
    pub fn new(client_id: ClientId, config: ProcessConfig, seed: u64) -> Self {
        let welcome_timeout = config.client.welcome_timeout;
        let mut process = Process {
            election: Election::new(config.election, seed),
            client: ClientSession::new(client_id, config.client),
            server_config: config.server,
            welcome_timeout,
            user: config.user,
            welcome_due: None,
            local: None,
            linked: false,
            seated: false,
            rejected: None,
            refused_here: false,
            failure: None,
            store_failed: false,
            leaving: None,
            takeovers: Takeovers::default(),
            closing: false,
            outputs: VecDeque::new(),
        };
        process.drive(Timestamp::ZERO);
        process
    }

    /// Issues a read; its outcome comes as [`ProcessOutput::Completed`].
    pub fn read(&mut self, now: Timestamp, op: ReadOp) -> RequestId {
        let id = self.client.read(now, op);
        self.drive(now);
        id
    }

    /// Issues a write; its outcome comes as [`ProcessOutput::Completed`].
    /// The wall clock is `wall` (since the Unix epoch) at `now`: see
    /// [`crate::ClientConfig::wall_clock_at_epoch`].
    pub fn set_wall_clock(&mut self, now: Timestamp, wall: std::time::Duration) {
        self.client.set_wall_clock(now, wall);
    }

    pub fn write(&mut self, now: Timestamp, op: WriteOp) -> RequestId {
        let id = self.client.write(now, op);
        self.drive(now);
        id
    }

    pub fn open_iter(&mut self, now: Timestamp, options: IterOptions) -> IterId {
        let iter = self.client.open_iter(options);
        self.drive(now);
        iter
    }

    /// Takes up to `max` entries from an iterator.
    pub fn iter_take(&mut self, now: Timestamp, iter: IterId, max: usize) -> IterPoll {
        let poll = self.client.iter_take(now, iter, max);
        self.drive(now);
        poll
    }

    pub fn close_iter(&mut self, now: Timestamp, iter: IterId) {
        self.client.close_iter(iter);
        self.drive(now);
    }

    /// The commit an iterator's snapshot follows, once known (see
    /// [`ClientSession::iter_at`]).
    pub fn iter_at(&self, iter: IterId) -> Option<CommitSeq> {
        self.client.iter_at(iter)
    }

    /// Subscribes to the changes of `range` committed from `from` on (`None`: from the
    /// next commit).
    pub fn open_watch(
        &mut self,
        now: Timestamp,
        range: KeyRange,
        from: Option<CommitSeq>,
    ) -> WatchId {
        let watch = self.client.open_watch(range, from);
        self.drive(now);
        watch
    }

    pub fn watch_position(&self, watch: WatchId) -> Option<CommitSeq> {
        self.client.watch_position(watch)
    }

    /// Takes up to `max` events from a subscription.
    pub fn watch_take(&mut self, now: Timestamp, watch: WatchId, max: usize) -> WatchPoll {
        let poll = self.client.watch_take(watch, max);
        self.drive(now);
        poll
    }

    pub fn close_watch(&mut self, now: Timestamp, watch: WatchId) {
        self.client.close_watch(watch);
        self.drive(now);
    }

    pub fn handle_input(&mut self, now: Timestamp, input: ProcessInput) {
        match input {
            ProcessInput::Election(answer) => self.election_answer(now, answer),
            ProcessInput::Connected { peer_uid } => {
                self.election_answer(now, ElectionInput::Connected);
                if let Err(refusal) = admit_leader(peer_uid, self.user) {
                    // Nothing but the hello was queued for it, and that is never sent.
                    self.outputs
                        .push_back(ProcessOutput::Election(ElectionOutput::Disconnect));
                    self.link_ended(now, Some(refusal));
                }
            }
            ProcessInput::Seated { peer_uid } => match admit_leader(peer_uid, self.user) {
                Ok(()) => self.election_answer(now, ElectionInput::InWaitingRoom),
                // Another user's room: not sat in (the hello is not said), and not knocked
                // at again at once, as another user's leader.
                Err(refusal) => {
                    self.outputs
                        .push_back(ProcessOutput::Election(ElectionOutput::LeaveWaitingRoom));
                    self.rejected = Some(refusal);
                    self.election_answer(now, ElectionInput::Refused);
                }
            },
            ProcessInput::Served { term } => {
                self.rejected = None;
                self.server_config.term = term;
                self.local = Some(ServerSession::new(now, self.server_config.clone()));
                self.client.handle_input(now, ClientInput::Connected);
                self.takeovers.served(now, Some(term));
            }
            ProcessInput::FromLeader(_) if self.seated && !self.admitted(now) => {}
            ProcessInput::FromLeader(message) => {
                let message = message.into_received();
                if matches!(
                    message,
                    ServerMessage::Welcome(_) | ServerMessage::Rejected(_)
                ) {
                    self.welcome_due = None;
                }
                match &message {
                    ServerMessage::Welcome(welcome) => {
                        self.rejected = None;
                        if self.linked {
                            self.takeovers.served(now, Some(welcome.term));
                        }
                    }
                    ServerMessage::Rejected(reason) => {
                        self.rejected = Some(reason.clone());
                        self.refused_here = self.linked;
                    }
                    ServerMessage::Leaving(cause) if self.linked => {
                        self.leaving = Some((*cause).into());
                    }
                    _ => {}
                }
                if self.linked {
                    self.client.handle_input(now, ClientInput::Message(message));
                }
            }
            ProcessInput::LinkClosed | ProcessInput::LinkBroken(_) if self.seated => {
                self.unseat(now);
                self.election
                    .handle_input(now, ElectionInput::WaitingRoomClosed);
            }
            ProcessInput::LinkClosed => self.link_ended(now, None),
            ProcessInput::LinkBroken(error) => self.link_ended(now, Some(error)),
            ProcessInput::Store(answer) => {
                if let Some(local) = &mut self.local {
                    local.handle_input(now, answer);
                }
            }
            ProcessInput::TimerFired => {
                if self.linked && self.welcome_due.is_some_and(|due| due <= now) {
                    self.unwelcomed(now);
                }
                if self.election.poll_timeout().is_some_and(|at| at <= now) {
                    self.election.handle_input(now, ElectionInput::TimerFired);
                }
                self.client.handle_timeout(now);
                if let Some(local) = &mut self.local {
                    local.handle_timeout(now);
                }
            }
            ProcessInput::Close => {
                self.closing = true;
                self.client.handle_input(now, ClientInput::Close);
                self.election
                    .handle_input(now, ElectionInput::CloseRequested);
            }
        }
        if self.linked && self.client.drained() {
            // The closing leader answered everything: let it go; nothing fails.
            self.outputs
                .push_back(ProcessOutput::Election(ElectionOutput::Disconnect));
            self.link_ended(now, None);
        }
        self.drive(now);
    }

    pub fn poll_output(&mut self) -> Option<ProcessOutput> {
        self.outputs.pop_front()
    }

    /// When [`ProcessInput::TimerFired`] is next due.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let local = self.local.as_ref().and_then(ServerSession::poll_timeout);
        [
            self.election.poll_timeout(),
            self.client.poll_timeout(),
            local,
            self.welcome_due.filter(|_| self.linked),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The id of this process's handle.
    pub fn client_id(&self) -> ClientId {
        self.client.client_id()
    }

    /// How this process's handle behaves as a client.
    pub fn client_config(&self) -> &ClientConfig {
        self.client.config()
    }

    /// The largest frame to take from the leader (see
    /// [`ClientSession::incoming_frame_limit`]): the driver's decoder keeps to it after
    /// each read.
    pub fn incoming_frame_limit(&self) -> u32 {
        self.client.incoming_frame_limit()
    }

    /// The role as callers see it.
    pub fn role(&self) -> RoleView {
        let (role, leader_pid) = match self.election.role() {
            Role::Leader => (Role::Leader, Some(self.server_config.leader_pid)),
            Role::Follower => match self.client.leader_pid() {
                Some(pid) => (Role::Follower, Some(pid)),
                None => (Role::Electing, None),
            },
            other => (other, None),
        };
        let term = match role {
            Role::Leader => Some(self.server_config.term),
            Role::Follower => self.client.leader_term(),
            _ => None,
        };
        RoleView {
            role,
            leader_pid,
            rejected: self.rejected.clone(),
            failure: self.failure,
            term,
            takeovers: self.takeovers.clone(),
        }
    }

    /// The kind of store the leader serves (this process's own while it leads), once known.
    /// Apart from [`RoleView`], which is taken on every turn of the driver, so that this
    /// stays a borrow.
    pub fn leader_store(&self) -> Option<&str> {
        match self.election.role() {
            Role::Leader => Some(&self.server_config.store),
            Role::Follower => self.client.leader_store(),
            _ => None,
        }
    }

    /// Why this process stops leading when its election steps down: its handle is closing,
    /// its store failed, or (else) it lost its lock. Its followers are told so.
    pub fn leave_cause(&self) -> LeaveCause {
        if self.closing {
            LeaveCause::Closing
        } else if self.store_failed {
            LeaveCause::StoreFailed
        } else {
            LeaveCause::LockLost
        }
    }

    /// True once the process is closed and has nothing more to say.
    pub fn is_closed(&self) -> bool {
        self.election.is_closed() && self.outputs.is_empty()
    }

    fn election_answer(&mut self, now: Timestamp, answer: ElectionInput) {
        let seated = match answer {
            // A connection made from a seat takes its place: the session says hello again
            // on it (see `ClientSession`'s second `Connected`).
            ElectionInput::Connected => false,
            ElectionInput::InWaitingRoom => true,
            ElectionInput::ServeFailed => {
                self.store_failed |= self.election.role() == Role::Leader;
                return self.election.handle_input(now, answer);
            }
            _ => return self.election.handle_input(now, answer),
        };
        self.seated = seated;
        self.welcome_due = (!seated).then(|| now + self.welcome_timeout);
        self.linked = true;
        self.refused_here = false;
        self.client.handle_input(now, ClientInput::Connected);
        self.election.handle_input(now, answer);
    }

    /// The holder of the room this process sits in answered on its seat: it serves, and
    /// the seat is the connection now, if the election follows there. False when it left
    /// the room instead (its `LeaveWaitingRoom` closes the seat): what came is not read.
    fn admitted(&mut self, now: Timestamp) -> bool {
        self.election.handle_input(now, ElectionInput::Admitted);
        if self.election.role() == Role::Follower {
            self.seated = false;
            return true;
        }
        self.unseat(now);
        false
    }

    /// The seat's connection is gone before the process followed there: nothing was sent on
    /// it but the hello.
    fn unseat(&mut self, now: Timestamp) {
        if std::mem::take(&mut self.seated) {
            self.linked = false;
            self.client.handle_input(now, ClientInput::Disconnected);
        }
    }

    /// The peer connected to never welcomed this process: whatever it is, it is no leader.
    /// The connection is dropped and the election backs off, as after a refusal; nothing
    /// was sent on it but the hello, so nothing pending fails.
    fn unwelcomed(&mut self, now: Timestamp) {
        self.outputs
            .push_back(ProcessOutput::Election(ElectionOutput::Disconnect));
        self.rejected = Some(ErrorCode::TimedOut);
        self.refused_here = true;
        self.link_ended(now, None);
    }

    fn link_ended(&mut self, now: Timestamp, broken: Option<ErrorCode>) {
        self.welcome_due = None;
        if !std::mem::take(&mut self.linked) {
            return;
        }
        let cause = self.leaving.take().unwrap_or(TakeoverCause::Crash);
        if self.client.leader_pid().is_some() && !self.closing {
            self.takeovers
                .leader_lost(now, cause, self.client.leader_term());
        }
        match broken {
            Some(error) => {
                self.rejected = Some(error.clone());
                self.refused_here = true;
                self.client.handle_input(now, ClientInput::Broken(error));
            }
            None => self.client.handle_input(now, ClientInput::Disconnected),
        }
        // A leader that refused this process will refuse it again right away. (An earlier
        // refusal says nothing of this connection: its leader may just have died.)
        let ended = if std::mem::take(&mut self.refused_here) {
            ElectionInput::Refused
        } else {
            ElectionInput::Disconnected
        };
        self.election.handle_input(now, ended);
    }

    /// Moves messages between the machines until nothing moves; what is for the driver
    /// goes to the output queue.
    fn drive(&mut self, now: Timestamp) {
        loop {
            let mut moved = false;
            while let Some(output) = self.election.poll_output() {
                moved = true;
                self.election_output(now, output);
            }
            while let Some(output) = self.client.poll_output() {
                moved = true;
                match output {
                    ClientOutput::Send(message) => match &mut self.local {
                        Some(local) => local.handle_input(now, ServerInput::Message(message)),
                        None if self.linked => self.outputs.push_back(ProcessOutput::Send(message)),
                        // Sent on a connection already gone: the session re-sends or fails
                        // it, as it was told when the connection ended.
                        None => {}
                    },
                    ClientOutput::Completed { id, result } => self
                        .outputs
                        .push_back(ProcessOutput::Completed { id, result }),
                    ClientOutput::IterReady { iter } => {
                        self.outputs.push_back(ProcessOutput::IterReady { iter })
                    }
                    ClientOutput::WatchReady { watch } => {
                        self.outputs.push_back(ProcessOutput::WatchReady { watch })
                    }
                }
            }
            if let Some(local) = &mut self.local {
                while let Some(output) = local.poll_output() {
                    moved = true;
                    match output {
                        ServerOutput::Send(message) => {
                            self.client.handle_input(now, ClientInput::Message(message))
                        }
                        work => self.outputs.push_back(ProcessOutput::Store(work)),
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn election_output(&mut self, now: Timestamp, output: ElectionOutput) {
        match output {
            // Its own operations go to whoever leads next.
            ElectionOutput::StepDown if self.local.take().is_some() => {
                if !self.closing {
                    let term = Some(self.server_config.term);
                    let cause = self.leave_cause().into();
                    self.takeovers.leader_lost(now, cause, term);
                }
                self.client.handle_input(now, ClientInput::Disconnected);
            }
            ElectionOutput::Disconnect => self.linked = false,
            ElectionOutput::LeaveWaitingRoom => self.unseat(now),
            ElectionOutput::Failed(reason) => {
                self.failure = Some(reason);
                // The driver hears of the failure before the completions it causes.
                self.outputs.push_back(ProcessOutput::Election(output));
                let failed = ErrorCode::ElectionFailed(reason);
                self.client.handle_input(now, ClientInput::Failed(failed));
                return;
            }
            _ => {}
        }
        self.outputs.push_back(ProcessOutput::Election(output));
    }
}

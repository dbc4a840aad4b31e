//! The driver loop of one handle: it feeds party-proto's [`Process`] machine with real
//! events (lock, store, socket, commands from the [`crate::Db`]) and carries out what it
//! decides. No protocol decision is made here: which request goes where, what a refusal or
//! a broken connection means, when to fail everything — all of it is the machine's.
//!
//! As a follower the machine's messages go to the leader's socket (`link.rs`). As leader the
//! machine runs its own handle's server session in-process, and its store work goes to the
//! same store thread the followers use (`access.rs`). The election's actions (lock, store,
//! socket, connect, serve, step down) are carried out in `driver/election_io.rs`.

mod election_io;
mod machine;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use party_proto::wire::{Outgoing, ReadOp, Response, WriteOp};
use party_proto::{
    ClientConfig, ClientId, CommitSeq, ElectionConfig, ElectionInput, ErrorCode, IterId,
    IterOptions, IterPoll, KeyRange, Process, ProcessConfig, ProcessInput, ProcessOutput,
    RequestId, ServerConfig, ServerInput, ServerOutput, WatchId, WatchPoll,
};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, watch};

use crate::access::StoreAccess;
use crate::clock;
use crate::error::Error;
use crate::leader::Leader;
use crate::link::{Link, LinkEnd, Received};
use crate::lock::{ElectionLock, LockFile};
use crate::options::Options;
use crate::paths::Layout;
use crate::role::{Role, RoleState, Takeover};
use crate::sync::Frames;
use crate::waiting_room::Room;
use machine::Machine;

/// Most requests in flight for which low-latency mode still polls for the answers.
const SPIN_MAX_IN_FLIGHT: usize = 4;

/// Most commands taken in one turn of the loop: enough for any burst of operations one
/// round of outputs can serve. A turn that takes this many lets the runtime run others
/// before the next: `try_recv` spends none of tokio's cooperative budget, so a flood of
/// commands held the task (and a runtime's shutdown, which waits for it) for 128 turns.
const COMMANDS_PER_TURN: usize = 1024;

/// What a [`crate::Db`] asks of its driver.
pub(crate) enum Command {
    Read {
        op: ReadOp,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Response, Error>>,
    },
    IterOpen {
        options: IterOptions,
        reply: oneshot::Sender<IterId>,
    },
    IterTake {
        iter: IterId,
        max: usize,
        reply: oneshot::Sender<IterAnswer>,
    },
    IterClose {
        iter: IterId,
    },
    /// Answered once the subscription knows where it starts.
    WatchOpen {
        range: KeyRange,
        from: Option<CommitSeq>,
        reply: oneshot::Sender<WatchOpened>,
    },
    WatchTake {
        watch: WatchId,
        max: usize,
        reply: oneshot::Sender<Result<WatchPoll, Error>>,
    },
    WatchClose {
        watch: WatchId,
    },
    /// Answered once the handle has stopped; a close that also waits for the store's
    /// release waits on [`Driver::new`]'s `released` after it.
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// What a subscription's opener gets: the subscription and where it starts.
pub(crate) type WatchOpened = Result<(WatchId, CommitSeq), Error>;

/// What an iterator's caller gets: the session's answer and the commit its snapshot
/// follows (once known), or why the handle cannot serve it.
pub(crate) type IterAnswer = Result<(IterPoll, Option<CommitSeq>), Error>;

/// What a handle holds while it becomes or is leader.
#[derive(Default)]
struct Leadership {
    /// Where the processes that find nobody listening yet wait for this one to serve.
    /// Before the lock: dropped first, its name goes while the lock is still held (only the
    /// holder may remove it, or it could remove the next holder's).
    room: Option<Room>,
    /// Shared with the store's open while it runs: an open is not undone halfway (etcd's
    /// moves the directory's commit marker, a new directory's records its store), so a
    /// leadership that steps down meanwhile keeps the lock taken until its open ends.
    lock: Option<Arc<ElectionLock>>,
    store: Option<Arc<dyn party_backends::Backend>>,
    listener: Option<interprocess::local_socket::tokio::Listener>,
    leader: Option<Leader>,
    /// The leader's own handle's way to the store.
    access: Option<StoreAccess>,
    /// The generation this hold of the lock counts, written while its store opens rather
    /// than once it is open, where it took 0.2 ms of a failover.
    term: Option<u64>,
}

pub(crate) struct Driver {
    layout: Layout,
    options: Options,
    /// How this handle serves when it leads (followers' connections and its own).
    server: ServerConfig,
    process: Machine,
    waiters: HashMap<RequestId, oneshot::Sender<Result<Response, Error>>>,
    iter_waiters: HashMap<IterId, (usize, oneshot::Sender<IterAnswer>)>,
    /// Subscriptions whose opener waits for their start.
    watch_openers: HashMap<WatchId, oneshot::Sender<WatchOpened>>,
    watch_waiters: HashMap<WatchId, (usize, oneshot::Sender<Result<WatchPoll, Error>>)>,
    role: watch::Sender<RoleState>,
    failure: Option<Arc<Error>>,
    /// The cause of the election failure the machine is about to report.
    failure_cause: Option<Error>,
    store_open_time: Option<Duration>,
    /// The store this handle's leadership opens, while it opens.
    opening: Option<Opening>,
    /// Who waits for the handle to stop.
    closers: Vec<oneshot::Sender<()>>,
    closing: bool,
    /// Store threads of past leaderships that may still be closing their store.
    releasing: Vec<std::thread::JoinHandle<()>>,
    /// Set as the loop ends, which hands `releasing` over; a driver dropped before that
    /// hands them over as it drops.
    ended: bool,
    /// Set once the handle has stopped and every store it led is closed and its lock
    /// released: what a close that waits for release waits for, even one asked after the
    /// loop ended.
    released: watch::Sender<bool>,
    leadership: Leadership,
    /// The lock file while another handle holds the lock, for the next try.
    lock_file: Option<LockFile>,
    /// The connection to the leader, or the seat in a lock holder's waiting room (the
    /// machine tells which).
    link: Option<Link>,
    /// This turn's frames for the leader. A recording handle lends no value: it records
    /// every frame whole as it is encoded.
    out: Outgoing,
    timer: clock::Timer,
}

impl Driver {
    pub fn new(
        layout: Layout,
        options: Options,
        client_id: ClientId,
        seed: u64,
    ) -> (Driver, watch::Receiver<RoleState>, watch::Receiver<bool>) {
        let (role, role_rx) = watch::channel(RoleState::electing());
        let (released, released_rx) = watch::channel(false);
        let client = ClientConfig {
            retry: options.retry,
            request_timeout: options.request_timeout,
            iter_window: options.iter_window,
            iter_window_bytes: options.iter_window_bytes,
            watch_window: options.watch_window,
            max_frame_len: options.limits.max_frame_len,
            store: options.backend.name().into(),
            resend_window: options.dedup_retention / 2,
            wall_clock_at_epoch: clock::wall_at_epoch(),
            bugs: crate::injection::bugs(),
            ..ClientConfig::default()
        };
        let limits = &options.limits;
        let server = ServerConfig {
            leader_pid: std::process::id(),
            store: options.backend.name().into(),
            max_in_flight: limits.max_in_flight,
            max_iterators: limits.max_iterators,
            max_watches: limits.max_watches,
            change_feed: options.change_feed,
            max_frame_len: limits.max_frame_len,
            ..ServerConfig::default()
        };
        let config = ProcessConfig {
            election: ElectionConfig {
                bugs: crate::injection::bugs(),
                ..ElectionConfig::default()
            },
            client,
            server: server.clone(),
            user: this_user(),
        };
        let process = Machine::new(
            Process::new(client_id, config, seed),
            options.record.as_ref(),
        );
        let out = match options.record {
            Some(_) => Outgoing::lending_from(usize::MAX),
            None => Outgoing::default(),
        };
        let driver = Driver {
            layout,
            options,
            server,
            process,
            waiters: HashMap::new(),
            iter_waiters: HashMap::new(),
            watch_openers: HashMap::new(),
            watch_waiters: HashMap::new(),
            role,
            failure: None,
            failure_cause: None,
            store_open_time: None,
            opening: None,
            closers: Vec::new(),
            closing: false,
            releasing: Vec::new(),
            ended: false,
            released,
            leadership: Leadership::default(),
            lock_file: None,
            link: None,
            out,
            timer: clock::Timer::new(),
        };
        (driver, role_rx, released_rx)
    }

    pub async fn run(mut self, mut commands: Commands) {
        let mut flooded = false;
        loop {
            self.carry_out().await;
            if std::mem::take(&mut flooded) {
                tokio::task::yield_now().await;
            }
            self.publish_role();
            if self.closing && self.process.is_closed() {
                break;
            }
            let timeout = self.process.poll_timeout();
            // Low-latency mode polls for the answers of a few requests; with more in flight
            // the leader keeps both ends busy, and polling would take its cores.
            let in_flight = self.waiters.len() + self.iter_waiters.len();
            let answers_due = (1..=SPIN_MAX_IN_FLIGHT).contains(&in_flight);
            // What is already waiting is taken in one go (up to `COMMANDS_PER_TURN`), so that
            // one round of outputs (and one socket write) serves a whole burst of operations.
            tokio::select! {
                command = commands.0.recv(), if !self.closing => match command {
                    Some(command) => {
                        self.command(command);
                        flooded = true;
                        for _ in 1..COMMANDS_PER_TURN {
                            let Ok(command) = commands.0.try_recv() else {
                                flooded = false;
                                break;
                            };
                            self.command(command);
                        }
                    }
                    None => self.close(),
                },
                received = receive(&mut self.link, answers_due) => self.received(received),
                Some(answer) = store_answer(&mut self.leadership.access) => {
                    self.process.handle_input(clock::now(), ProcessInput::Store(answer));
                }
                _ = self.timer.until(timeout) => {
                    // What arrived as the time came is read first: a welcome on a seat as
                    // the room's patience ran out is followed, not left for a new connect.
                    if let Some(received) = received_now(&mut self.link) {
                        self.received(received);
                    }
                    self.process.handle_input(clock::now(), ProcessInput::TimerFired);
                }
                (took, opened) = store_opened(&mut self.opening) => {
                    self.opening = None;
                    let answer = self.store_opened(took, opened);
                    self.process.handle_input(clock::now(), ProcessInput::Election(answer));
                }
                () = store_failure(&mut self.leadership.leader) => self.store_failed(),
            }
        }
        self.publish_role();
        self.process.finish_recording();
        // A close asked for while closing (by another clone of the handle) is answered
        // too; anything else asked meanwhile fails as closed (see `Commands`).
        commands.0.close();
        while let Some(command) = commands.0.recv().await {
            if let Command::Close { reply } = command {
                self.closers.push(reply);
            }
        }
        for closer in self.closers.drain(..) {
            let _ = closer.send(());
        }
        self.ended = true;
        let releasing = std::mem::take(&mut self.releasing);
        release_once_joined(releasing, self.released.clone(), true);
    }

    /// Serving cannot go on without the store thread: the election fails (the machine
    /// steps down, telling the followers, and fails what is pending), with this cause.
    fn store_failed(&mut self) {
        self.failure_cause = Some(Error::Backend {
            message: "the store thread panicked; the store stays locked until this process exits"
                .into(),
            source: None,
        });
        let failed = ProcessInput::Election(ElectionInput::ServeFailed);
        self.process.handle_input(clock::now(), failed);
    }

    fn command(&mut self, command: Command) {
        let now = clock::now();
        match command {
            Command::Read { op, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => {
                    let id = self.process.read(now, op);
                    self.waiters.insert(id, reply);
                }
            },
            Command::Write { op, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => {
                    // Writes tell their leader when they were first sent, by the wall clock.
                    self.process.set_wall_clock(now, clock::wall_now());
                    let id = self.process.write(now, op);
                    self.waiters.insert(id, reply);
                }
            },
            Command::IterOpen { options, reply } => {
                let iter = self.process.open_iter(now, options);
                // An opener that stopped waiting has no `Iter` to close it: close it here.
                if reply.send(iter).is_err() {
                    self.process.close_iter(now, iter);
                }
            }
            Command::IterTake { iter, max, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => self.iter_take(iter, max, reply),
            },
            Command::IterClose { iter } => {
                self.iter_waiters.remove(&iter);
                self.process.close_iter(now, iter);
            }
            Command::WatchOpen { range, from, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => {
                    let watch = self.process.open_watch(now, range, from);
                    self.watch_openers.insert(watch, reply);
                    self.watch_started(watch);
                }
            },
            Command::WatchTake { watch, max, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => self.watch_take(watch, max, reply),
            },
            Command::WatchClose { watch } => {
                self.watch_waiters.remove(&watch);
                self.process.close_watch(now, watch);
            }
            Command::Close { reply } => {
                self.closers.push(reply);
                self.close();
            }
        }
    }

    fn iter_take(&mut self, iter: IterId, max: usize, reply: oneshot::Sender<IterAnswer>) {
        // Asked before the take, which forgets an iterator that is done.
        let at = self.process.iter_at(iter);
        match self.process.iter_take(clock::now(), iter, max) {
            IterPoll::Pending => {
                self.iter_waiters.insert(iter, (max, reply));
            }
            // With its cause, which the machine's code does not carry.
            IterPoll::Failed(code @ ErrorCode::ElectionFailed(_)) => {
                drop(reply.send(Err(self.error_of(code))));
            }
            poll => drop(reply.send(Ok((poll, at)))),
        }
    }

    fn watch_take(
        &mut self,
        watch: WatchId,
        max: usize,
        reply: oneshot::Sender<Result<WatchPoll, Error>>,
    ) {
        match self.process.watch_take(clock::now(), watch, max) {
            WatchPoll::Pending => {
                self.watch_waiters.insert(watch, (max, reply));
            }
            WatchPoll::Failed(code @ ErrorCode::ElectionFailed(_)) => {
                drop(reply.send(Err(self.error_of(code))));
            }
            // A `Watch` keeps its receiver across calls given up on: one that is gone was
            // dropped, and its close follows.
            poll => drop(reply.send(Ok(poll))),
        }
    }

    /// Answers the opener of a subscription once it has started, or failed.
    fn watch_started(&mut self, watch: WatchId) {
        let Some(opener) = self.watch_openers.remove(&watch) else {
            return;
        };
        if let Some(position) = self.process.watch_position(watch) {
            // An opener that stopped waiting has no `Watch` to close it: close it here.
            if opener.send(Ok((watch, position))).is_err() {
                self.process.close_watch(clock::now(), watch);
            }
            return;
        }
        match self.process.watch_take(clock::now(), watch, 0) {
            WatchPoll::Failed(error) => drop(opener.send(Err(self.error_of(error)))),
            _ => {
                self.watch_openers.insert(watch, opener);
            }
        }
    }

    /// Why nothing can be served, once the handle could not join the party.
    fn failed(&self) -> Option<Error> {
        self.failure
            .as_ref()
            .map(|failure| Error::ElectionFailed(failure.clone()))
    }

    fn close(&mut self) {
        if !std::mem::replace(&mut self.closing, true) {
            self.process.handle_input(clock::now(), ProcessInput::Close);
        }
    }

    fn received(&mut self, received: Received) {
        let now = clock::now();
        // An answer may free room for writes waiting to be sent: see `command`.
        self.process.set_wall_clock(now, clock::wall_now());
        let bytes = self.link.as_ref().map_or(&[][..], Link::last_read);
        self.process.receive(now, bytes, received.messages);
        if let Some(link) = &mut self.link {
            link.set_incoming_frame_limit(self.process.incoming_frame_limit());
        }
        if let Some(end) = received.end {
            self.link = None;
            let broken = |what: &str, error: &dyn std::fmt::Display| {
                tracing::warn!("the leader {what}: {error}");
                let error = ErrorCode::Malformed(format!("from the leader: {error}"));
                ProcessInput::LinkBroken(error)
            };
            let ended = match end {
                LinkEnd::Closed => ProcessInput::LinkClosed,
                LinkEnd::Garbage(error) => broken("sent bytes that do not decode", &error),
                LinkEnd::BadRing(error) => broken("broke the ring's rules", &error),
            };
            self.process.handle_input(now, ended);
        }
    }

    /// Carries out the machine's outputs until there are none, then sends what is for the
    /// leader's socket in one write.
    async fn carry_out(&mut self) {
        while let Some(output) = self.process.poll_output() {
            let answer = match output {
                ProcessOutput::Election(action) => self.election_action(action).await,
                ProcessOutput::Send(message) => {
                    let start = self.out.len();
                    let broken = self.encode(&message);
                    let sent = self.out.tail(start).unwrap_or_default();
                    let output = ProcessOutput::Send(message);
                    self.process.record_sent(&output, sent);
                    broken
                }
                ProcessOutput::Store(ServerOutput::Close(reason)) => {
                    tracing::error!("the leader's own session closed itself: {reason}");
                    None
                }
                ProcessOutput::Store(work) => {
                    if matches!(work, ServerOutput::Write { .. }) {
                        self.process.flush_recorded_writes();
                    }
                    self.leadership
                        .access
                        .as_mut()
                        .and_then(|access| access.carry_out(work))
                        .map(ProcessInput::Store)
                }
                ProcessOutput::Completed { id, result } => {
                    if let Some(waiter) = self.waiters.remove(&id) {
                        let _ = waiter.send(result.map_err(|code| self.error_of(code)));
                    }
                    None
                }
                ProcessOutput::IterReady { iter } => {
                    if let Some((max, waiter)) = self.iter_waiters.remove(&iter) {
                        self.iter_take(iter, max, waiter);
                    }
                    None
                }
                ProcessOutput::WatchReady { watch } => {
                    self.watch_started(watch);
                    if let Some((max, waiter)) = self.watch_waiters.remove(&watch) {
                        self.watch_take(watch, max, waiter);
                    }
                    None
                }
            };
            if let Some(answer) = answer {
                self.process.handle_input(clock::now(), answer);
            }
        }
        // Recorded before it is sent: a process killed in between leaves a write the
        // leader never saw, not one its recording lacks.
        self.process.flush_recording_lazily();
        match &mut self.link {
            Some(link) => link.send(&mut self.out),
            None => Frames::clear(&mut self.out),
        }
    }

    /// Frames a message for the leader's socket. The machine sizes every request against
    /// both ends' limits, so this fails only on a bug; the link is then given up as broken
    /// rather than a request counted as sent that never was.
    fn encode(&mut self, message: &party_proto::wire::ClientMessage) -> Option<ProcessInput> {
        self.link.as_ref()?;
        let max = self.options.limits.max_frame_len;
        let error = self.out.push_client(message, max).err()?;
        tracing::error!("cannot send a request: {error}");
        self.link = None;
        Frames::clear(&mut self.out);
        Some(ProcessInput::LinkBroken(ErrorCode::Malformed(format!(
            "unsendable: {error}"
        ))))
    }

    /// The handle cannot join the party, for `cause`: the machine fails what is pending
    /// next ([`ErrorCode::ElectionFailed`], which reaches its caller as this cause, or
    /// `OutcomeUnknown` for a write a leader may have taken), and every later operation
    /// fails here with it. Logged as an election's outcome, at info as the others: the
    /// caller has the error itself (the CLI prints it once, as its one line).
    fn fail(&mut self, cause: Error) {
        tracing::info!("the election failed: {cause}");
        self.failure = Some(Arc::new(cause));
    }

    /// The caller's error for the machine's `code`: an election failure with its cause.
    fn error_of(&self, code: ErrorCode) -> Error {
        match (code, self.failed()) {
            (ErrorCode::ElectionFailed(_), Some(failed)) => failed,
            // A write a leader may have taken when the election failed: the machine names
            // the failure's kind, this handle knows its cause.
            (ErrorCode::OutcomeUnknown(cause), Some(failed)) => Error::OutcomeUnknown {
                cause: format!("{cause} ({failed})"),
            },
            (code, _) => code.into(),
        }
    }

    fn publish_role(&mut self) {
        let view = self.process.role();
        let role = Role::from(view.role);
        let failure = self.failure.clone();
        let store_open_time = self.store_open_time.filter(|_| role == Role::Leader);
        let last_takeover = view.takeovers.last.map(Takeover::from);
        let failovers = view.takeovers.count;
        let store = self
            .process
            .leader_store()
            .and_then(|name| name.parse().ok());
        self.role.send_if_modified(|state| {
            let changed = state.role != role
                || state.store_open_time != store_open_time
                || state.leader_pid != view.leader_pid
                || state.failure.is_some() != failure.is_some()
                || state.rejected != view.rejected
                || state.term != view.term
                || state.store != store
                || state.failovers != failovers;
            if changed {
                log_change(state, role, &view, store_open_time);
                *state = RoleState {
                    role,
                    leader_pid: view.leader_pid,
                    failure,
                    rejected: view.rejected,
                    store_open_time,
                    term: view.term,
                    store,
                    failovers,
                    last_takeover,
                };
            }
            changed
        });
    }
}

/// The user this process runs as, where the platform tells.
fn this_user() -> Option<u32> {
    #[cfg(unix)]
    {
        Some(rustix::process::geteuid().as_raw())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Tells, at info level, what a change of role means: who leads now, in which generation,
/// and, after a failover, why and how long the handle was without a leader.
fn log_change(
    before: &RoleState,
    role: Role,
    view: &party_proto::RoleView,
    store_open_time: Option<Duration>,
) {
    if view.takeovers.count > before.failovers {
        if let Some(takeover) = view.takeovers.last.map(Takeover::from) {
            tracing::info!(
                cause = takeover.cause.name(),
                paused_ms = takeover.paused.as_secs_f64() * 1e3,
                "take-over after {}: served again after {:.1} ms",
                takeover.cause.name(),
                takeover.paused.as_secs_f64() * 1e3,
            );
        }
    }
    if role == before.role && view.term == before.term {
        return;
    }
    match role {
        Role::Leader => tracing::info!(
            term = view.term,
            store_open_ms = store_open_time.map(|t| t.as_secs_f64() * 1e3),
            "leading"
        ),
        Role::Follower => {
            tracing::info!(term = view.term, leader_pid = view.leader_pid, "following")
        }
        Role::Electing if before.role != Role::Electing => tracing::info!("electing"),
        Role::Closed => tracing::info!("closed"),
        _ => {}
    }
}

/// A store opening on a blocking thread (fjall replaying its journal, RocksDB, a connection
/// to etcd: milliseconds to seconds): the driver goes on meanwhile, so that the request
/// timeouts of what waits for a leader fire and commands are taken. The thread answers
/// how long the open took, and the store.
struct Opening {
    opened: tokio::task::JoinHandle<(Duration, Opened)>,
}

/// A store's open: the store, or why not.
type Opened = Result<Arc<dyn party_backends::Backend>, Error>;

/// Resolves once the store being opened, if one is, is open or failed to open: how long it
/// took, and the store. Cancel-safe: the opening goes on until polled again.
async fn store_opened(opening: &mut Option<Opening>) -> (Duration, Opened) {
    let Some(opening) = opening else {
        return std::future::pending().await;
    };
    (&mut opening.opened).await.unwrap_or_else(|failed| {
        let message = if failed.is_panic() {
            "opening the store panicked"
        } else {
            "the runtime shut down while the store opened"
        };
        let source: Option<Box<dyn std::error::Error + Send + Sync>> = Some(Box::new(failed));
        (
            Duration::ZERO,
            Err(Error::Backend {
                message: message.into(),
                source,
            }),
        )
    })
}

/// Resolves once the store thread of this process's leadership, if it leads, panicked.
async fn store_failure(leader: &mut Option<Leader>) {
    match leader {
        Some(leader) => leader.store_failed().await,
        None => std::future::pending().await,
    }
}

async fn receive(link: &mut Option<Link>, answers_due: bool) -> Received {
    match link {
        Some(link) => link.receive(answers_due).await,
        None => std::future::pending().await,
    }
}

/// What the link has for the driver already, without waiting (`receive` is cancel-safe).
fn received_now(link: &mut Option<Link>) -> Option<Received> {
    let receiving = std::pin::pin!(receive(link, false));
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::future::Future::poll(receiving, &mut context) {
        std::task::Poll::Ready(received) => Some(received),
        std::task::Poll::Pending => None,
    }
}

/// The store thread's next answer for the leader's own handle, with any already waiting
/// behind it left for the next turn of the loop.
async fn store_answer(access: &mut Option<StoreAccess>) -> Option<ServerInput> {
    match access {
        Some(access) => access.next_reply().await,
        None => std::future::pending().await,
    }
}

/// A handle's way to its driver: the sender for the [`crate::Db`], the queue for
/// [`Driver::run`]. The queue is wrapped at once, so that a driver dropped even before it
/// first ran empties it as below.
pub(crate) fn command_queue() -> (UnboundedSender<Command>, Commands) {
    let (sender, queue) = unbounded_channel();
    (sender, Commands(queue))
}

/// A driver's queue of commands. Let go, it is closed, then emptied to its end, which waits
/// for the sends under way: a command sent as the queue was let go could otherwise stay in
/// it, never answered, for as long as the handle lived (tokio's receiver, dropped, empties
/// the queue only once). A loop that ends does so itself, answering closes; a driver dropped
/// by its runtime's shutdown leaves it to this. It relies on `try_recv` telling a send under
/// way (`Empty`) from a queue closed and empty (`Disconnected`), as tokio does since 1.52.3
/// (the least version party-core asks for): before, it said `Empty` after a close for as
/// long as senders lived (before 1.49), or `Disconnected` while a send was under way.
pub(crate) struct Commands(UnboundedReceiver<Command>);

impl Drop for Commands {
    fn drop(&mut self) {
        self.0.close();
        loop {
            match self.0.try_recv() {
                Ok(command) => drop(command),
                // A send is under way: it takes a moment, which this thread cannot await.
                Err(TryRecvError::Empty) => std::thread::yield_now(),
                Err(TryRecvError::Disconnected) => break,
            }
        }
    }
}

/// Tells `released` once `threads`, store threads closing their stores, have ended. Closes
/// that wait for the stores' release (now, or asked later) learn it so. The wait is a thread
/// of its own: not a blocking task, which the runtime's shutdown waits for, since a process
/// that exits after close_before_exit must not wait for its store to close (fjall's threads
/// take up to 250 ms to stop; the exit releases the lock at once). If no thread can be
/// started, the caller waits when it `may_wait`; else `released` goes untold, and those
/// closes return without waiting.
fn release_once_joined(
    threads: Vec<std::thread::JoinHandle<()>>,
    released: watch::Sender<bool>,
    may_wait: bool,
) {
    if threads.is_empty() {
        released.send_replace(true);
        return;
    }
    // Handed over once the thread runs, so that they are still here if it cannot start.
    let (hand, take) = std::sync::mpsc::channel::<(_, watch::Sender<bool>)>();
    let waiter = std::thread::Builder::new()
        .name("party-release".into())
        .spawn(move || {
            if let Ok((threads, released)) = take.recv() {
                join_all(threads);
                released.send_replace(true);
            }
        });
    match waiter {
        Ok(_) => {
            let _ = hand.send((threads, released));
        }
        Err(error) => {
            tracing::warn!("cannot start a thread to wait for the store's close: {error}");
            // No thread to spare (nor, likely, in the runtime's blocking pool).
            if may_wait {
                join_all(threads);
                released.send_replace(true);
            }
        }
    }
}

/// A driver dropped before its loop ended, because its runtime shut down under it: its
/// store threads go on closing their stores (the active one once the handle's and the
/// connections' ways to it are gone), and closes that wait for the release (from another
/// runtime) still wait for them rather than return at once. It cannot wait itself: the
/// connections go with the runtime's other tasks, after it.
impl Drop for Driver {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut leadership = std::mem::take(&mut self.leadership);
        let mut threads = std::mem::take(&mut self.releasing);
        threads.extend(leadership.leader.take().map(Leader::abandon));
        drop(leadership);
        release_once_joined(threads, self.released.clone(), false);
    }
}

/// Waits for the store threads of past leaderships to close their stores.
fn join_all(threads: Vec<std::thread::JoinHandle<()>>) {
    for thread in threads {
        let _ = thread.join();
    }
}

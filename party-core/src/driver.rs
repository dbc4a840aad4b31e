//! The driver loop of one handle: it feeds the election machine and the client session of
//! `party-proto` with real events (lock, store, socket, commands from the [`crate::Db`]) and
//! carries out what they decide.
//!
//! Every operation goes through the client session, whatever the role. As a follower the
//! session's messages go to the leader's socket. As leader they go to an in-process
//! [`ServerSession`] (no encoding, no socket) and from there to the same store thread the
//! followers use — so a handle that becomes leader with writes in flight still has them
//! applied exactly once, and its iterators resume, exactly as over a socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use party_backends::Backend;
use party_proto::wire::{encode_frame, ReadOp, Response, ServerMessage, WriteOp};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, DedupTable, Election,
    ElectionConfig, ElectionInput, ElectionOutput, ErrorCode, IterId, IterOptions, IterPoll,
    RequestId, Role, ServerConfig, ServerInput, ServerSession,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::{oneshot, watch};

use crate::access::StoreAccess;
use crate::clock;
use crate::error::Error;
use crate::headroom::Headroom;
use crate::leader::{self, ConnectionConfig, Leader, Serving};
use crate::link::{Link, LinkEnd, Received};
use crate::lock::ElectionLock;
use crate::options::Options;
use crate::paths::Layout;

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
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// What an iterator's caller gets: the session's answer, or why the handle cannot serve it.
pub(crate) type IterAnswer = Result<IterPoll, Error>;

/// What a handle publishes about its role. A handle counts as a follower once the leader
/// has welcomed it (so its protocol is known to match), not merely once connected.
#[derive(Debug, Clone)]
pub struct RoleState {
    pub role: Role,
    /// The leader's process id, once known.
    pub leader_pid: Option<u32>,
    /// Why the handle could not join the party, if it could not.
    pub failure: Option<Arc<Error>>,
    /// Why the last leader refused this handle (a protocol mismatch), until one welcomes it.
    pub rejected: Option<ErrorCode>,
    /// While this handle leads: how long it took to open the store (the bulk of a takeover,
    /// as the store replays what the previous leader left unflushed).
    pub store_open_time: Option<Duration>,
}

/// The leader's own handle, connected to its server in-process.
struct LocalLink {
    server: ServerSession,
    access: StoreAccess,
}

/// What a handle holds while it becomes or is leader.
#[derive(Default)]
struct Leadership {
    lock: Option<ElectionLock>,
    store: Option<(Arc<dyn Backend>, DedupTable)>,
    listener: Option<Listener>,
    leader: Option<Leader>,
}

pub(crate) struct Driver {
    layout: Layout,
    options: Options,
    election: Election,
    session: ClientSession,
    waiters: HashMap<RequestId, oneshot::Sender<Result<Response, Error>>>,
    iter_waiters: HashMap<IterId, (usize, oneshot::Sender<IterAnswer>)>,
    role: watch::Sender<RoleState>,
    failure: Option<Arc<Error>>,
    rejected: Option<ErrorCode>,
    /// The cause of the election failure the machine is about to report.
    failure_cause: Option<Error>,
    store_open_time: Option<Duration>,
    closers: Vec<oneshot::Sender<()>>,
    closing: bool,
    leadership: Leadership,
    local: Option<LocalLink>,
    link: Option<Link>,
    out: Vec<u8>,
}

impl Driver {
    pub fn new(
        layout: Layout,
        options: Options,
        client_id: ClientId,
        seed: u64,
    ) -> (Driver, watch::Receiver<RoleState>) {
        let (role, role_rx) = watch::channel(RoleState {
            role: Role::Electing,
            leader_pid: None,
            failure: None,
            rejected: None,
            store_open_time: None,
        });
        // The update fills the simulator-only fields that exist when a build of the whole
        // workspace turns on party-proto's `bug-injection` feature.
        #[allow(clippy::needless_update)]
        let config = ClientConfig {
            retry: options.retry,
            request_timeout: options.request_timeout,
            iter_window: options.iter_window,
            max_frame_len: options.limits.max_frame_len,
            ..ClientConfig::default()
        };
        let driver = Driver {
            layout,
            election: Election::new(ElectionConfig::default(), seed),
            session: ClientSession::new(client_id, config),
            options,
            waiters: HashMap::new(),
            iter_waiters: HashMap::new(),
            role,
            failure: None,
            rejected: None,
            failure_cause: None,
            store_open_time: None,
            closers: Vec::new(),
            closing: false,
            leadership: Leadership::default(),
            local: None,
            link: None,
            out: Vec::new(),
        };
        (driver, role_rx)
    }

    pub async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        loop {
            self.run_election().await;
            self.pump();
            self.publish_role();
            if self.closing && self.election.is_closed() {
                break;
            }
            let timeout = [
                self.election.poll_timeout(),
                self.session.poll_timeout(),
                self.local.as_ref().and_then(|l| l.server.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min();
            // Everything already waiting is taken in one go, so that one pump (and one
            // socket write) serves a whole burst of operations or replies.
            tokio::select! {
                command = commands.recv(), if !self.closing => match command {
                    Some(command) => {
                        self.command(command);
                        while let Ok(command) = commands.try_recv() {
                            self.command(command);
                        }
                    }
                    None => self.close(),
                },
                received = receive(&mut self.link) => self.received(received),
                Some(input) = recv_local(&mut self.local) => {
                    if let Some(local) = &mut self.local {
                        local.server.handle_input(clock::now(), input);
                    }
                }
                _ = leader::sleep_until(timeout) => {
                    let now = clock::now();
                    if self.election.poll_timeout().is_some_and(|at| at <= now) {
                        self.election.handle_input(now, ElectionInput::TimerFired);
                    }
                    self.session.handle_timeout(now);
                    if let Some(local) = &mut self.local {
                        local.server.handle_timeout(now);
                    }
                }
            }
        }
        self.publish_role();
        for closer in self.closers.drain(..) {
            let _ = closer.send(());
        }
    }

    fn command(&mut self, command: Command) {
        let now = clock::now();
        match command {
            Command::Read { op, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => {
                    let id = self.session.read(now, op);
                    self.waiters.insert(id, reply);
                }
            },
            Command::Write { op, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => {
                    let id = self.session.write(now, op);
                    self.waiters.insert(id, reply);
                }
            },
            Command::IterOpen { options, reply } => {
                let _ = reply.send(self.session.open_iter(options));
            }
            Command::IterTake { iter, max, reply } => match self.failed() {
                Some(error) => drop(reply.send(Err(error))),
                None => match self.session.iter_take(iter, max) {
                    IterPoll::Pending => {
                        self.iter_waiters.insert(iter, (max, reply));
                    }
                    poll => drop(reply.send(Ok(poll))),
                },
            },
            Command::IterClose { iter } => {
                self.iter_waiters.remove(&iter);
                self.session.close_iter(iter);
            }
            Command::Close { reply } => {
                self.closers.push(reply);
                self.close();
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
        if self.closing {
            return;
        }
        self.closing = true;
        let now = clock::now();
        self.session.handle_input(now, ClientInput::Close);
        self.election
            .handle_input(now, ElectionInput::CloseRequested);
    }

    fn received(&mut self, received: Received) {
        let now = clock::now();
        for message in received.messages {
            match &message {
                ServerMessage::Welcome(_) => self.rejected = None,
                ServerMessage::Rejected(reason) => self.rejected = Some(reason.clone()),
                _ => {}
            }
            self.session
                .handle_input(now, ClientInput::Message(message));
        }
        if let Some(end) = received.end {
            self.link = None;
            match end {
                LinkEnd::Closed => self.session.handle_input(now, ClientInput::Disconnected),
                LinkEnd::Garbage(error) => {
                    tracing::warn!("the leader sent bytes that do not decode: {error}");
                    let error = ErrorCode::Malformed(format!("from the leader: {error}"));
                    self.rejected = Some(error.clone());
                    self.session.handle_input(now, ClientInput::Broken(error));
                }
            }
            // A leader that refused this handle will refuse it again right away.
            let ended = if self.rejected.is_some() {
                ElectionInput::Refused
            } else {
                ElectionInput::Disconnected
            };
            self.election.handle_input(now, ended);
        }
    }

    /// Carries out election outputs until there are none.
    async fn run_election(&mut self) {
        while let Some(output) = self.election.poll_output() {
            let input = match output {
                ElectionOutput::TryLock => Some(self.try_lock()),
                ElectionOutput::OpenStore => Some(self.open_store().await),
                ElectionOutput::Bind => Some(self.bind()),
                ElectionOutput::Serve => self.serve(),
                ElectionOutput::Connect => Some(self.connect().await),
                ElectionOutput::StepDown => {
                    self.step_down().await;
                    None
                }
                ElectionOutput::Disconnect => {
                    self.link = None;
                    None
                }
                ElectionOutput::Failed(reason) => {
                    let cause = self
                        .failure_cause
                        .take()
                        .unwrap_or(Error::Protocol(format!("the election failed ({reason:?})")));
                    self.fail(cause);
                    None
                }
            };
            if let Some(input) = input {
                self.election.handle_input(clock::now(), input);
            }
        }
    }

    fn try_lock(&mut self) -> ElectionInput {
        match ElectionLock::try_acquire(&self.layout.dir) {
            Ok(Some(lock)) => {
                self.leadership.lock = Some(lock);
                ElectionInput::LockAcquired
            }
            Ok(None) => ElectionInput::LockBusy,
            Err(error) => {
                self.failure_cause = Some(Error::Io {
                    context: "cannot use the lock file in",
                    path: self.layout.dir.clone(),
                    source: error.source,
                });
                ElectionInput::LockFailed
            }
        }
    }

    async fn open_store(&mut self) -> ElectionInput {
        let kind = self.options.backend;
        let path = self.layout.store.clone();
        let started = Instant::now();
        let opened = tokio::task::spawn_blocking(move || -> Result<_, Error> {
            crate::paths::create_private_dir(&path).map_err(|source| Error::Io {
                context: "cannot create the store directory",
                path: path.clone(),
                source,
            })?;
            let store = open_when_released(kind, &path).map_err(Error::Open)?;
            let records = store.dedup_records()?;
            Ok((store, DedupTable::from_records(records)))
        })
        .await
        .unwrap_or_else(|_| Err(Error::Backend("opening the store panicked".into())));
        match opened {
            Ok(opened) => {
                self.store_open_time = Some(started.elapsed());
                self.leadership.store = Some(opened);
                ElectionInput::StoreOpened
            }
            Err(error) => {
                self.failure_cause = Some(error);
                ElectionInput::StoreOpenFailed
            }
        }
    }

    fn bind(&mut self) -> ElectionInput {
        let socket = self.layout.socket.as_path();
        // Only the lock holder gets here, so a socket file left behind is stale.
        let _ = std::fs::remove_file(socket);
        let bound = socket
            .to_fs_name::<GenericFilePath>()
            .and_then(|name| ListenerOptions::new().name(name).create_tokio())
            .and_then(|listener| owner_only(socket).map(|()| listener));
        match bound {
            Ok(listener) => {
                self.leadership.listener = Some(listener);
                ElectionInput::SocketBound
            }
            Err(source) => {
                self.failure_cause = Some(Error::Io {
                    context: "cannot bind the leader's socket",
                    path: socket.to_owned(),
                    source,
                });
                ElectionInput::BindFailed
            }
        }
    }

    /// Starts serving; answers only if that failed.
    fn serve(&mut self) -> Option<ElectionInput> {
        let (Some((store, dedup)), Some(listener)) = (
            self.leadership.store.take(),
            self.leadership.listener.take(),
        ) else {
            self.failure_cause = Some(Error::Protocol(
                "told to serve without a store and a socket".into(),
            ));
            return Some(ElectionInput::ServeFailed);
        };
        let limits = &self.options.limits;
        let config = ServerConfig {
            leader_pid: std::process::id(),
            max_in_flight: limits.max_in_flight,
            max_iterators: limits.max_iterators,
            max_frame_len: limits.max_frame_len,
            ..ServerConfig::default()
        };
        let serving = Serving {
            connection: ConnectionConfig {
                session: config.clone(),
                max_frame_len: limits.max_frame_len,
                max_connections: limits.max_connections,
                owner: owner_of(&self.layout.socket),
            },
            headroom: Headroom {
                path: self.layout.store.clone(),
                reserve: limits.min_free_space,
            },
        };
        let leader = match Leader::start(store, dedup, listener, serving) {
            Ok(leader) => leader,
            Err(source) => {
                self.failure_cause = Some(Error::Io {
                    context: "cannot start serving the store in",
                    path: self.layout.store.clone(),
                    source,
                });
                return Some(ElectionInput::ServeFailed);
            }
        };
        self.local = Some(LocalLink {
            server: ServerSession::new(clock::now(), config),
            access: leader.access(),
        });
        self.leadership.leader = Some(leader);
        self.session
            .handle_input(clock::now(), ClientInput::Connected);
        None
    }

    async fn connect(&mut self) -> ElectionInput {
        match Link::connect(&self.layout.socket, self.options.limits.max_frame_len).await {
            Ok(link) => {
                self.link = Some(link);
                self.session
                    .handle_input(clock::now(), ClientInput::Connected);
                ElectionInput::Connected
            }
            Err(error) => {
                tracing::debug!("no leader at {}: {error}", self.layout.socket.display());
                ElectionInput::ConnectFailed
            }
        }
    }

    /// Gives up leadership in the safe order: stop serving (which unbinds the socket),
    /// close the store, release the lock.
    async fn step_down(&mut self) {
        if self.local.take().is_some() {
            self.session
                .handle_input(clock::now(), ClientInput::Disconnected);
        }
        if let Some(leader) = self.leadership.leader.take() {
            leader.stop().await;
        }
        self.leadership.listener = None;
        self.leadership.store = None;
        self.leadership.lock = None;
    }

    /// The handle cannot join the party: every pending and later operation fails.
    fn fail(&mut self, cause: Error) {
        tracing::error!("{cause}");
        let failure = Arc::new(cause);
        for (_, waiter) in self.waiters.drain() {
            let _ = waiter.send(Err(Error::ElectionFailed(failure.clone())));
        }
        for (_, (_, waiter)) in self.iter_waiters.drain() {
            let _ = waiter.send(Err(Error::ElectionFailed(failure.clone())));
        }
        self.session.handle_input(clock::now(), ClientInput::Close);
        self.failure = Some(failure);
    }

    /// Moves messages between the client session, the local server and the store until
    /// nothing moves, then sends what is for the leader's socket in one write.
    fn pump(&mut self) {
        let now = clock::now();
        loop {
            let mut moved = false;
            while let Some(output) = self.session.poll_output() {
                moved = true;
                match output {
                    ClientOutput::Send(message) => {
                        if let Some(local) = &mut self.local {
                            local
                                .server
                                .handle_input(now, ServerInput::Message(message));
                        } else if self.link.is_some() {
                            // The session sizes every request against both ends' limits,
                            // so this fails only on a bug; what is pending then fails too
                            // rather than wait for a message that was never sent.
                            if let Err(error) = encode_frame(
                                &message,
                                self.options.limits.max_frame_len,
                                &mut self.out,
                            ) {
                                tracing::error!("cannot send a request: {error}");
                                self.link = None;
                                let error = ErrorCode::Malformed(format!("unsendable: {error}"));
                                self.session.handle_input(now, ClientInput::Broken(error));
                                self.election.handle_input(now, ElectionInput::Refused);
                            }
                        }
                    }
                    ClientOutput::Completed { id, result } => {
                        if let Some(waiter) = self.waiters.remove(&id) {
                            let _ = waiter.send(result.map_err(Error::from));
                        }
                    }
                    ClientOutput::IterReady { iter } => {
                        if let Some((max, waiter)) = self.iter_waiters.remove(&iter) {
                            match self.session.iter_take(iter, max) {
                                IterPoll::Pending => {
                                    self.iter_waiters.insert(iter, (max, waiter));
                                }
                                poll => drop(waiter.send(Ok(poll))),
                            }
                        }
                    }
                }
            }
            if let Some(local) = &mut self.local {
                let mut replies = Vec::new();
                let closing = local.access.run_outputs(&mut local.server, |message| {
                    replies.push(message);
                    true
                });
                if closing {
                    tracing::error!("the leader's own session closed itself");
                }
                for message in replies {
                    moved = true;
                    self.session
                        .handle_input(now, ClientInput::Message(message));
                }
            }
            if !moved {
                break;
            }
        }
        if let Some(link) = &self.link {
            link.send(&mut self.out);
        }
        self.out.clear();
    }

    fn publish_role(&mut self) {
        let (role, leader_pid) = match self.election.role() {
            Role::Leader => (Role::Leader, Some(std::process::id())),
            Role::Follower => match self.session.leader_pid() {
                Some(pid) => (Role::Follower, Some(pid)),
                None => (Role::Electing, None),
            },
            other => (other, None),
        };
        let failure = self.failure.clone();
        let rejected = self.rejected.clone();
        let store_open_time = self.store_open_time.filter(|_| role == Role::Leader);
        self.role.send_if_modified(|state| {
            let changed = state.role != role
                || state.store_open_time != store_open_time
                || state.leader_pid != leader_pid
                || state.failure.is_some() != failure.is_some()
                || state.rejected != rejected;
            if changed {
                *state = RoleState {
                    role,
                    leader_pid,
                    failure,
                    rejected,
                    store_open_time,
                };
            }
            changed
        });
    }
}

async fn receive(link: &mut Option<Link>) -> Received {
    match link {
        Some(link) => link.receive().await,
        None => std::future::pending().await,
    }
}

async fn recv_local(local: &mut Option<LocalLink>) -> Option<ServerInput> {
    match local {
        Some(local) => local.access.next_reply().await,
        None => std::future::pending().await,
    }
}

/// Opens the store, waiting a little while it is still locked: with the election lock
/// held, that is a previous leader whose store is still shutting down (sled can let go of
/// its file lock a moment after its last handle drops; CI met it once in a fast handover).
/// A lock held longer than that is a foreign process, and the open fails.
fn open_when_released(
    kind: party_backends::BackendKind,
    path: &std::path::Path,
) -> Result<Arc<dyn Backend>, party_backends::OpenError> {
    const PATIENCE: Duration = Duration::from_secs(2);
    let started = Instant::now();
    loop {
        match kind.open(path) {
            Err(party_backends::OpenError::Locked { .. }) if started.elapsed() < PATIENCE => {
                std::thread::sleep(Duration::from_millis(5));
            }
            opened => return opened,
        }
    }
}

/// The user owning `path` (for the socket: the user this process runs as).
fn owner_of(path: &std::path::Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|metadata| metadata.uid())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Restricts the socket to its owner.
fn owner_only(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

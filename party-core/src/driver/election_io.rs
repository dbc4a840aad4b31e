//! The election's actions carried out: the lock file, the store, the socket, the
//! connection to a leader, serving and stepping down. Each answers the machine with what
//! happened (the store's open once it is done, from the driver's loop), and keeps the
//! cause of a failure for the caller.

use std::time::{Duration, Instant};

use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use party_proto::{ElectionInput, ElectionOutput, ProcessInput};

use super::Driver;
use crate::error::Error;
use crate::headroom::Headroom;
use crate::leader::{ConnectionConfig, Leader, Serving};
use crate::link::Link;
use crate::lock::LockFile;
use crate::recording::Recorder;
use crate::sync::Frames;
use crate::waiting_room::{self, Room};

impl Driver {
    /// Carries out one election action; the machine's answer, where it expects one.
    pub(super) async fn election_action(&mut self, action: ElectionOutput) -> Option<ProcessInput> {
        tracing::debug!(?action, "election");
        let answer = match action {
            ElectionOutput::TryLock => self.try_lock(),
            ElectionOutput::OpenStore => {
                self.open_store();
                return None;
            }
            ElectionOutput::Bind => self.bind(),
            ElectionOutput::Serve => return Some(self.serve()),
            ElectionOutput::Connect => return Some(self.connect().await),
            ElectionOutput::OpenWaitingRoom => {
                // Nothing held before: a room dropped after the new one opened would take
                // its name.
                self.leadership.room = None;
                self.leadership.room = Room::open(&self.layout.socket);
                return None;
            }
            ElectionOutput::CloseWaitingRoom => {
                self.leadership.room = None;
                return None;
            }
            ElectionOutput::EnterWaitingRoom => return Some(self.enter_room().await),
            ElectionOutput::LeaveWaitingRoom => {
                self.link = None;
                Frames::clear(&mut self.out);
                return None;
            }
            ElectionOutput::StepDown => {
                self.step_down().await;
                return None;
            }
            ElectionOutput::Disconnect => {
                self.link = None;
                Frames::clear(&mut self.out);
                return None;
            }
            ElectionOutput::Failed(reason) => {
                let cause = self
                    .failure_cause
                    .take()
                    .unwrap_or(Error::Protocol(format!("the election failed ({reason:?})")));
                self.fail(cause);
                return None;
            }
        };
        Some(ProcessInput::Election(answer))
    }

    fn try_lock(&mut self) -> ElectionInput {
        let file = match self.lock_file.take() {
            Some(file) => Ok(file),
            None if self.options.backend.lets_its_lock_go_first() => {
                LockFile::open_on_top(&self.layout.dir)
            }
            None => LockFile::open(&self.layout.dir),
        };
        match file.and_then(LockFile::try_lock) {
            Ok(Ok(lock)) => {
                self.leadership.lock = Some(std::sync::Arc::new(lock));
                ElectionInput::LockAcquired
            }
            Ok(Err(file)) => {
                self.lock_file = Some(file);
                ElectionInput::LockBusy
            }
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

    /// Starts opening the store on a blocking thread; the driver's loop answers the machine
    /// when it is done ([`Driver::store_opened`]).
    fn open_store(&mut self) {
        let kind = self.options.backend;
        let etcd = self.options.etcd.clone();
        let dir = self.layout.dir.clone();
        let lock = self.leadership.lock.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            crate::injection::hold_store_open();
            let opened = crate::store_dir::open(&dir, kind, etcd.as_ref());
            drop(lock);
            (started.elapsed(), opened)
        });
        self.opening = Some(super::Opening { opened });
        self.term();
    }

    /// This lock hold's generation: counted once, by its first store open.
    fn term(&mut self) -> u64 {
        let dir = &self.layout.dir;
        *self
            .leadership
            .term
            .get_or_insert_with(|| crate::term::next(dir))
    }

    /// The machine's answer to its `OpenStore`, once the store is open (in `took`) or not.
    pub(super) fn store_opened(&mut self, took: Duration, opened: super::Opened) -> ElectionInput {
        match opened {
            Ok(opened) => {
                self.store_open_time = Some(took);
                self.leadership.store = Some(opened);
                ElectionInput::StoreOpened
            }
            Err(error) => {
                let locked = matches!(error, Error::Locked { .. });
                self.failure_cause = Some(error);
                if locked {
                    ElectionInput::StoreLocked
                } else {
                    ElectionInput::StoreOpenFailed
                }
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
            .and_then(|listener| crate::paths::owner_only(socket).map(|()| listener));
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

    /// Starts serving: the store thread, the accept loop, and the own handle's access.
    fn serve(&mut self) -> ProcessInput {
        let (Some(store), Some(listener)) = (
            self.leadership.store.take(),
            self.leadership.listener.take(),
        ) else {
            self.failure_cause = Some(Error::Protocol(
                "told to serve without a store and a socket".into(),
            ));
            return ProcessInput::Election(ElectionInput::ServeFailed);
        };
        let term = self.term();
        self.server.term = term;
        let limits = &self.options.limits;
        let serving = Serving {
            connection: ConnectionConfig {
                session: self.server.clone(),
                max_frame_len: limits.max_frame_len,
                max_connections: limits.max_connections,
                owner: owner_of(&self.layout.socket),
                spin: self.options.spin,
            },
            headroom: Headroom::new(self.layout.store.clone(), limits.min_free_space),
            dedup_retention: self.options.dedup_retention,
            change_feed: self.options.change_feed,
            change_retention: self.options.change_retention.into(),
            recorder: self.options.record.as_ref().and_then(|recording| {
                let header = Recorder::commits_header(self.process.client_id(), term);
                Recorder::start(recording, header, None)
            }),
        };
        // Those waiting in the room are followers now, answered without connecting again.
        let seats = self.leadership.room.as_ref().map(Room::take_seats);
        let listener = (listener, seats.unwrap_or_default());
        match Leader::start(store, &mut self.leadership.lock, listener, serving) {
            Ok(leader) => {
                self.leadership.access = Some(leader.access());
                self.leadership.leader = Some(leader);
                ProcessInput::Served { term }
            }
            Err(source) => {
                self.failure_cause = Some(Error::Io {
                    context: "cannot start serving the store in",
                    path: self.layout.store.clone(),
                    source,
                });
                ProcessInput::Election(ElectionInput::ServeFailed)
            }
        }
    }

    /// Connects, and tells the machine who answered (whether to trust it is its call).
    async fn connect(&mut self) -> ProcessInput {
        let (max_frame_len, spin) = (self.options.limits.max_frame_len, self.options.spin);
        let recording = self.options.record.is_some();
        match Link::connect(&self.layout.socket, max_frame_len, spin, recording).await {
            Ok(link) => {
                let peer_uid = link.peer_uid();
                self.link = Some(link);
                ProcessInput::Connected { peer_uid }
            }
            Err(error) => {
                tracing::debug!("no leader at {}: {error}", self.layout.socket.display());
                ProcessInput::Election(ElectionInput::ConnectFailed)
            }
        }
    }

    /// Sits down in the lock holder's waiting room; the seat is the link from now on.
    async fn enter_room(&mut self) -> ProcessInput {
        let (max_frame_len, spin) = (self.options.limits.max_frame_len, self.options.spin);
        let recording = self.options.record.is_some();
        match waiting_room::enter(&self.layout.socket, max_frame_len, spin, recording).await {
            Some(seat) => {
                let peer_uid = seat.peer_uid();
                self.link = Some(seat);
                ProcessInput::Seated { peer_uid }
            }
            None => ProcessInput::Election(ElectionInput::NoWaitingRoom),
        }
    }

    /// Gives up leadership in the safe order: stop serving (which unbinds the socket),
    /// close the store, release the lock. A serving leader's store thread does the last
    /// two; it is kept, so that closing the handle can wait for them.
    async fn step_down(&mut self) {
        self.leadership.access = None;
        if let Some(leader) = self.leadership.leader.take() {
            let cause = self.process.leave_cause();
            let (store_thread, stopped) = leader.stop(cause);
            self.releasing.retain(|thread| !thread.is_finished());
            // Kept before the wait: a driver dropped during it still waits for the thread.
            self.releasing.push(store_thread);
            stopped.await;
        }
        self.leadership.listener = None;
        self.leadership.store = None;
        // Only the lock holder may remove the room's name: it goes now; those waiting are
        // told when the room itself closes, next, and find the lock free.
        if let Some(room) = &mut self.leadership.room {
            room.unlink();
        }
        self.leadership.lock = None;
        self.leadership.term = None;
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

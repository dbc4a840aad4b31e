//! The handle users hold: [`open`] a data directory, then read and write whatever role the
//! process ends up playing.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use party_backends::BackendKind;
use party_proto::wire::{self, ReadOp, Response, WriteOp};
use party_proto::{ClientId, IterId, IterPoll};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::{oneshot, watch};

use crate::codec::{Codec, Typed};
use crate::data::{BatchOp, Entry, IterOptions, KeyRange};
use crate::driver::{command_queue, Command, Driver, IterAnswer};
use crate::error::Error;
use crate::opening::Opening;
use crate::options::Options;
use crate::paths::Layout;
use crate::role::{Role, RoleState, RoleWatch, Takeover};
use crate::sublevel::KeySpace;
use crate::watch::CommitSeq;

/// Opens the data directory `dir` (creating it if needed) and joins its party.
///
/// Returns at once: the handle becomes leader or follower in the background, and operations
/// issued before then are queued. [`Db::ready`] waits for the role and reports an open that
/// failed. Must be called within a tokio runtime; [`crate::BlockingDb`] brings its own.
/// Fails at once with [`Error::InvalidOption`] for a setting no handle could work with.
pub async fn open(dir: impl AsRef<Path>, options: Options) -> Result<Db, Error> {
    options.check()?;
    let layout = Layout::new(dir.as_ref(), &options)?;
    let (commands, queue) = command_queue();
    let backend = options.backend;
    let transaction_attempts = options.transaction_attempts.max(1);
    let client_id = ClientId(u128::from(random_u64()) << 64 | u128::from(random_u64()));
    let (driver, role, released) = Driver::new(layout.clone(), options, client_id, random_u64());
    // Every event of this handle names its directory: a program may open several.
    let span = tracing::info_span!("party", dir = %layout.dir.display());
    tokio::spawn(tracing::Instrument::instrument(driver.run(queue), span));
    Ok(Db {
        inner: Arc::new(Inner {
            commands,
            backend,
            role,
            released,
            dir: layout.dir,
            socket: layout.socket,
            transaction_attempts,
        }),
        space: KeySpace::default(),
    })
}

/// Process-seeded randomness, for client ids and election jitter: std's `RandomState` keys
/// come from the OS, and each call mixes in a fresh per-thread key.
pub(crate) fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish()
}

struct Inner {
    commands: UnboundedSender<Command>,
    backend: BackendKind,
    role: watch::Receiver<RoleState>,
    /// True once the handle has stopped and released every store it led (see the driver).
    released: watch::Receiver<bool>,
    dir: PathBuf,
    socket: PathBuf,
    /// How many times [`Db::transaction`] runs its body at most.
    transaction_attempts: u32,
}

/// A handle on a party's store. Clones share one handle; it closes when [`Db::close`] is
/// called or the last clone is dropped, failing what is still pending with
/// [`Error::Closed`].
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
    /// Where this handle's keys live: the root, or a sublevel's prefix.
    space: KeySpace,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dir", &self.inner.dir)
            .field("role", &self.role())
            .finish()
    }
}

impl Db {
    /// Waits until this handle leads or follows (welcomed by the leader), and answers
    /// [`Role::Leader`] or [`Role::Follower`]; fails if it cannot join the party or the
    /// leader refuses it (that error stays its answer once the handle closed after it), and
    /// with [`Error::Closed`] once the handle is closed (it will never lead or follow again).
    pub async fn ready(&self) -> Result<Role, Error> {
        let state = self
            .watch_role()
            .wait_for(|state| {
                state.role != Role::Electing || state.failure.is_some() || state.rejected.is_some()
            })
            .await?;
        if let Some(failure) = &state.failure {
            return Err(Error::ElectionFailed(failure.clone()));
        }
        if let Some(reason) = state.rejected() {
            return Err(reason);
        }
        if state.role == Role::Closed {
            return Err(Error::Closed);
        }
        Ok(state.role)
    }

    /// The role right now.
    pub fn role(&self) -> Role {
        self.inner.role.borrow().role
    }

    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    /// The leader's process id, once known.
    pub fn leader_pid(&self) -> Option<u32> {
        self.inner.role.borrow().leader_pid
    }

    /// Every change of role (the level-party `leader` event and more).
    pub fn watch_role(&self) -> RoleWatch {
        RoleWatch::new(self.inner.role.clone())
    }

    /// The data directory, resolved.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The leader's socket for this directory.
    pub fn socket_path(&self) -> &Path {
        &self.inner.socket
    }

    // The operations below are issued when called, not when first polled: calls made one
    // after another reach the leader in that order, even if their futures are awaited
    // together or in another order. The futures own what they need ('static).

    pub fn get(
        &self,
        key: impl AsRef<[u8]>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send + 'static {
        let answer = self.read(ReadOp::Get {
            key: self.space.key(key.as_ref()),
        });
        async move {
            match answer?.await.map_err(|_| Error::Closed)?? {
                // A decoded value (a follower's) owns its buffer and is taken as it is; one
                // the store lends (the leader's own) is copied here, once.
                Response::Value(value) => Ok(value.map(Vec::from)),
                other => Err(unexpected(other)),
            }
        }
    }

    /// One answer per key, in the order asked.
    pub fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>, Error>> + Send + 'static {
        let keys = keys
            .iter()
            .map(|key| self.space.key(key.as_ref()))
            .collect();
        let answer = self.read(ReadOp::GetMany { keys });
        async move {
            match answer?.await.map_err(|_| Error::Closed)?? {
                Response::Values(values) => Ok(values),
                other => Err(unexpected(other)),
            }
        }
    }

    pub fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.write(WriteOp::Put {
            key: self.space.key(key.as_ref()),
            value: value.as_ref().to_vec(),
        })
    }

    pub fn del(
        &self,
        key: impl AsRef<[u8]>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.write(WriteOp::Del {
            key: self.space.key(key.as_ref()),
        })
    }

    /// Applies all the operations atomically, in order.
    pub fn batch(
        &self,
        ops: Vec<BatchOp>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                BatchOp::Put { key, value } => wire::BatchOp::Put {
                    key: self.space.key(&key),
                    value,
                },
                BatchOp::Del { key } => wire::BatchOp::Del {
                    key: self.space.key(&key),
                },
            })
            .collect();
        self.write(WriteOp::Batch { ops })
    }

    /// Deletes every key in `range`.
    pub fn clear(
        &self,
        range: KeyRange,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.write(WriteOp::Clear {
            range: self.space.range(range).into(),
        })
    }

    /// The handle's role, the leader, and how many followers it serves (asked of the
    /// leader, so this waits for one).
    pub async fn status(&self) -> Result<Status, Error> {
        let answer = self.read(ReadOp::Status)?;
        let followers = match answer.await.map_err(|_| Error::Closed)?? {
            Response::Status(status) => status.followers,
            other => return Err(unexpected(other)),
        };
        let state = self.watch_role().current();
        Ok(Status {
            role: state.role,
            leader_pid: state.leader_pid,
            followers,
            // The handle is served, so the leader's store is known, unless a failover
            // happened since; every leader of the directory serves the same kind.
            backend: state.store.unwrap_or(self.inner.backend),
            socket: self.inner.socket.clone(),
            term: state.term,
            failovers: state.failovers,
            last_takeover: state.last_takeover,
        })
    }

    /// This handle with values encoded by `codec` (keys stay bytes).
    pub fn with_codec<C: Codec>(&self, codec: C) -> Typed<C> {
        Typed::new(self.clone(), codec)
    }

    /// Iterates over the entries `options` select: those of the store as it is once the
    /// operations issued before this call are applied, and none of those issued after it.
    pub fn iter(
        &self,
        options: IterOptions,
    ) -> impl Future<Output = Result<Iter, Error>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        // Keys come back under this handle's prefix, unless they are left out.
        let strip = options.keys && !self.space.is_root();
        let options = IterOptions {
            range: self.space.range(options.range.clone()),
            ..options
        };
        let sent = self.send(Command::IterOpen {
            options: options.into(),
            reply,
        });
        let db = self.clone();
        let mut opening = Opening::new(answer, db.clone());
        async move {
            sent?;
            let iter = opening.answer().await?;
            Ok(Iter {
                db,
                iter,
                buffered: VecDeque::new(),
                done: false,
                at: None,
                strip,
                asked: None,
            })
        }
    }

    pub(crate) fn space(&self) -> &KeySpace {
        &self.space
    }

    /// This handle with its keys in `space`.
    pub(crate) fn with_space(&self, space: KeySpace) -> Db {
        Db {
            inner: self.inner.clone(),
            space,
        }
    }

    /// Closes the handle (for every clone): pending operations fail with
    /// [`Error::Closed`]; a leader hands over to a follower. Returns once the store is
    /// closed and its lock released, so that anything may use the directory next; also
    /// when the runtime it was opened on has shut down under it while it led or followed
    /// (not while its store was still opening). A handle
    /// whose store is still opening as it takes over closes once the open is done (an
    /// open cannot be interrupted; the store must be closed after it).
    pub async fn close(&self) -> Result<(), Error> {
        self.close_and_wait(true).await
    }

    /// Closes the handle as [`Db::close`] does, but returns as soon as the handle has
    /// stopped: a leader's last writes are committed and its followers are taking over,
    /// while the store closes in the background (fjall takes up to 250 ms) and keeps its
    /// lock until then. For a process about to exit, which then releases the lock at
    /// once and loses nothing: every commit is already with the operating system.
    /// On RocksDB it waits for the store to close as well: a process that exits while
    /// RocksDB closes can abort in its C++ static destructors.
    pub async fn close_before_exit(&self) -> Result<(), Error> {
        self.close_and_wait(false).await
    }

    async fn close_and_wait(&self, released: bool) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        if self.send(Command::Close { reply }).is_ok() {
            let _ = answer.await;
        }
        if released {
            // Whether the driver stopped for this close or before it (after a
            // close_before_exit, or for a clone just after the last drain).
            let mut stores = self.inner.released.clone();
            let _ = stores.wait_for(|released| *released).await;
        }
        Ok(())
    }

    fn read(&self, op: ReadOp) -> Result<Answer, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Read { op, reply })?;
        Ok(answer)
    }

    fn write(&self, op: WriteOp) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let answer = self.write_answered(op);
        async move {
            match answer.await? {
                Response::Written => Ok(()),
                other => Err(unexpected(other)),
            }
        }
    }

    /// Issues a write now; its answer, whatever it is, when it comes.
    pub(crate) fn write_answered(
        &self,
        op: WriteOp,
    ) -> impl Future<Output = Result<Response, Error>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(Command::Write { op, reply });
        async move {
            sent?;
            answer.await.map_err(|_| Error::Closed)?
        }
    }

    pub(crate) fn transaction_attempts(&self) -> u32 {
        self.inner.transaction_attempts
    }

    pub(crate) fn send(&self, command: Command) -> Result<(), Error> {
        self.inner.commands.send(command).map_err(|_| Error::Closed)
    }
}

/// What [`Db::status`] reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Status {
    pub role: Role,
    pub leader_pid: Option<u32>,
    /// Followers connected to the leader (not counting the leader's own handle).
    pub followers: u32,
    /// The store the leader serves (the directory's one kind: a handle configured for
    /// another is refused).
    pub backend: BackendKind,
    pub socket: PathBuf,
    /// The generation of the leader serving this handle: one more with every new leader
    /// of the directory.
    pub term: Option<u64>,
    /// Failovers this handle has lived through.
    pub failovers: u64,
    /// The last of them: why, and how long the handle was without a leader.
    pub last_takeover: Option<Takeover>,
}

/// Where the answer to an issued operation arrives.
type Answer = oneshot::Receiver<Result<Response, Error>>;

pub(crate) fn unexpected(response: Response) -> Error {
    Error::Protocol(format!("unexpected answer {response:?}"))
}

/// Entries of an iteration, in order. Survives failovers with no entry repeated or missed
/// (with `retry`; with a request timeout too, unless its caller waits that long for the
/// next entries, as through a long failover: then it fails with [`Error::TimedOut`]);
/// dropping it tells the leader to stop.
pub struct Iter {
    db: Db,
    iter: IterId,
    buffered: VecDeque<Entry>,
    done: bool,
    /// The commit the store snapshot follows, once the leader said.
    at: Option<CommitSeq>,
    /// Remove the handle's prefix from the keys.
    strip: bool,
    /// The answer to a take the caller gave up waiting for (a `select!` that took another
    /// branch): kept for the next call, so that what the driver hands over is not lost.
    asked: Option<oneshot::Receiver<IterAnswer>>,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("iter", &self.iter)
            .finish_non_exhaustive()
    }
}

impl Iter {
    /// The commit the iteration's store snapshot was taken after, known once its first
    /// entries (or its end) have come: follow the range from the next one
    /// ([`Db::watch_from`] with `seq.next()`) and nothing written after the snapshot is
    /// missed. After a failover the rest of the iteration reads a later snapshot, and this
    /// stays the first one's: the subscription may then show again a change the rest of
    /// the iteration already had. `None` from a store whose log could not be read.
    pub fn seq(&self) -> Option<CommitSeq> {
        self.at
    }

    /// The next entry, `None` after the last. Cancel-safe: a call given up on (a `select!`
    /// that took another branch, a timeout) loses no entry. With a request timeout
    /// ([`crate::Options::request_timeout`]), waiting that long for entries fails with
    /// [`Error::TimedOut`], after which the iterator is done.
    pub async fn next(&mut self) -> Option<Result<Entry, Error>> {
        if self.buffered.is_empty() {
            match self.next_chunk(usize::MAX).await {
                Ok(Some(entries)) => self.buffered.extend(entries),
                Ok(None) => return None,
                Err(error) => return Some(Err(error)),
            }
        }
        self.buffered.pop_front().map(Ok)
    }

    /// Up to `max` next entries (at least one, whatever `max` says), `None` after the last.
    ///
    /// Cancel-safe, as [`Iter::next`] is: a call given up on (a `select!` that took another
    /// branch, a timeout) loses no entry; what it was to get comes at the next call. Fails
    /// with [`Error::TimedOut`] as [`Iter::next`] does.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Option<Vec<Entry>>, Error> {
        // Asked for none, the cursor would wait for entries it may never be sent, or end
        // past those it holds.
        let max = max.max(1);
        if let Some(first) = self.buffered.pop_front() {
            let mut entries = vec![first];
            let more = max.saturating_sub(1).min(self.buffered.len());
            entries.extend(self.buffered.drain(..more));
            return Ok(Some(entries));
        }
        if self.done {
            return Ok(None);
        }
        let answer = match &mut self.asked {
            Some(answer) => answer,
            None => {
                let (reply, answer) = oneshot::channel();
                let iter = self.iter;
                self.db.send(Command::IterTake { iter, max, reply })?;
                self.asked.insert(answer)
            }
        };
        let answered = answer.await;
        self.asked = None;
        let (poll, at) = answered.map_err(|_| Error::Closed)??;
        self.at = self.at.or(at.map(CommitSeq::from));
        match poll {
            IterPoll::Entries(entries) => {
                let mut entries: Vec<Entry> = if self.strip {
                    entries
                        .into_iter()
                        .map(|entry| Entry {
                            key: self.db.space.strip(entry.key),
                            value: entry.value,
                        })
                        .collect()
                } else {
                    // Reuses the wire's allocation: the two entry types have the same layout.
                    entries.into_iter().map(Entry::from).collect()
                };
                // Taken for an earlier call that asked for more.
                if entries.len() > max {
                    self.buffered.extend(entries.drain(max..));
                }
                Ok(Some(entries))
            }
            IterPoll::Done => {
                self.done = true;
                Ok(None)
            }
            IterPoll::Failed(error) => {
                self.done = true;
                Err(error.into())
            }
            IterPoll::Pending => Err(Error::Protocol(
                "iterator answered while still pending".into(),
            )),
        }
    }

    /// Reads the rest of the iteration (failing with [`Error::TimedOut`] if a request
    /// timeout passes while it waits for entries).
    pub async fn collect(mut self) -> Result<Vec<Entry>, Error> {
        let mut all = Vec::new();
        while let Some(entries) = self.next_chunk(usize::MAX).await? {
            all.extend(entries);
        }
        Ok(all)
    }
}

impl Drop for Iter {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.db.send(Command::IterClose { iter: self.iter });
        }
    }
}

//! Storage backends for party: the leader serves every operation from one of these.
//!
//! Pick the store by cargo feature: `fjall` (default), `sled`, `rocksdb`, `etcd` (a store
//! in an etcd v3 cluster, shared by several hosts). The in-memory store is always there, for
//! the simulator and tests.
//!
//! # Why the trait is blocking
//!
//! [`Backend`] is a plain blocking trait, called from party-core's store threads: that is
//! the blocking/async split. The embedded stores are blocking libraries, and the leader's
//! speed comes from serving a whole queue of requests per trip to a store thread (one group
//! commit for all queued writes) rather than one async hop per operation. The one exception
//! is a point read of a store whose reads are fast ([`Backend::reads_fast`]): it runs on the
//! connection's async task, as it costs less than the hand-off would. A network-backed store
//! (etcd, TiKV) fits the same trait by blocking on its own client inside the store threads,
//! where blocking costs no async worker, and says its reads are not fast. So the trait stays
//! blocking (no async form), and the embedded stores pay nothing for the network ones.

mod batch;
pub mod changes;
mod error;
mod iter;
pub mod lock_order;
mod memory;
pub mod records;

mod etcd;
#[cfg(feature = "fjall")]
mod fjall;
#[cfg(feature = "rocksdb")]
mod rocksdb;
#[cfg(feature = "sled")]
mod sled;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use party_proto::feed::LogEnds;
use party_proto::txn::{CheckRead, CheckValue};
use party_proto::{ClientId, CommitSeq, DedupRecord, IterOptions, KeyRange};

pub use batch::{resolve, WriteBatch};
pub use error::{BackendError, OpenError, StoreError};
pub use iter::{Chunks, EntryIter};
pub use memory::MemoryBackend;

#[cfg(feature = "etcd")]
pub use crate::etcd::{EtcdBackend, LocalCluster};
pub use crate::etcd::{EtcdConfig, Succession};
#[cfg(feature = "fjall")]
pub use crate::fjall::{FjallBackend, MAX_KEY_LEN as FJALL_MAX_KEY_LEN};
#[cfg(feature = "rocksdb")]
pub use crate::rocksdb::RocksBackend;
#[cfg(feature = "sled")]
pub use crate::sled::SledBackend;

/// A store the leader serves from. See the crate documentation for why it blocks.
///
/// Writes happen only through [`Backend::write`]: one call is one atomic commit, durable
/// against the death of the process (not necessarily against power loss) when it returns,
/// and seen by no read before it is so durable (a read that saw it sooner could answer with
/// a write that the leader's `kill -9` then loses: a value read, then gone).
///
/// A store opened by a new leader holds, once it has answered the leader's first
/// [`Backend::change_log_ends`], [`Backend::dedup_records_of`] or [`Backend::write`], every
/// commit an earlier leader will ever make: none lands later. The embedded stores have it
/// from their lock (a dead process writes nothing more); a store over the network must
/// fence what a dead leader left on its way (etcd moves the directory's commit marker
/// first). Otherwise a leader that applied a re-sent write could see the first try land
/// after it, over what was written since.
pub trait Backend: Send + Sync + std::fmt::Debug + 'static {
    /// The store's name, for errors and status displays.
    fn name(&self) -> &'static str;

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError>;

    /// [`Backend::get`], the value shared with the store where the store lends it (fjall,
    /// sled): a leader sends a big value to a follower from there, without copying it.
    fn get_shared(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.get(key)?.map(Bytes::from))
    }

    /// One answer per key, in the order asked, all from the store as one commit left it:
    /// a commit landing meanwhile is seen whole or not at all (party-core runs a
    /// follower's `get_many` beside the commits of other threads).
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError>;

    /// Applies the writes and stores the dedup records and the change log entry, all or
    /// nothing, in one commit.
    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError>;

    /// Up to `max` entries of the change log, as stored: from `from` on, oldest first; or
    /// with `newest_first`, from `from` back.
    fn change_entries(
        &self,
        from: CommitSeq,
        newest_first: bool,
        max: usize,
    ) -> Result<Vec<(CommitSeq, Vec<u8>)>, BackendError>;

    /// Removes these entries of the change log.
    fn remove_changes(&self, seqs: &[CommitSeq]) -> Result<(), BackendError>;

    /// The oldest and the newest entry of the change log; `None` when it is empty. The log
    /// holds every number from its oldest entry to its newest (commits append the next
    /// number; trims delete the oldest entries, a page at a time, each page in one batch
    /// or oldest first), which lets a store find its oldest entry by point reads
    /// ([`changes::ends_by_point_reads`]). Read after a commit whose outcome the store could
    /// not tell, they are final: that commit has landed by then or never will (etcd moves
    /// its commit marker first), so the writer never numbers a commit with a number taken.
    fn change_log_ends(&self) -> Result<Option<LogEnds>, BackendError> {
        let first = self.change_entries(CommitSeq(0), false, 1)?;
        let last = self.change_entries(CommitSeq(u64::MAX), true, 1)?;
        match (first.first(), last.first()) {
            (Some((first, oldest)), Some((last, newest))) => Ok(Some(LogEnds {
                first: changes::span(*first, oldest)?,
                last: changes::span(*last, newest)?,
            })),
            _ => Ok(None),
        }
    }

    /// The entries in `range`, in key order or reversed. Where the store has snapshots the
    /// iterator reads one, taken now.
    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError>;

    /// The stored dedup records of `clients` (`None` for a client without one), one
    /// answer per client in the order asked: a leader reads a client's record when the
    /// client's first write reaches it, so taking over costs nothing per past client.
    fn dedup_records_of(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<DedupRecord>>, BackendError>;

    /// One page of a sweep of expired records: looks at up to `max` stored records of
    /// clients after `after` (from the first if `None`), in client order, and removes those
    /// whose client last wrote before `written_before_ms` and that nothing rewrote since
    /// they were read. Returns the last client looked at when the page was full (more may
    /// follow), `None` when the records ran out.
    fn expire_dedup_records(
        &self,
        written_before_ms: u64,
        after: Option<ClientId>,
        max: usize,
    ) -> Result<Option<ClientId>, BackendError>;

    /// What `reads` read now, one answer per read in order: the leader's writer checks its
    /// transactions' reads against these. The point reads go in one `get_many`.
    fn read_for_checks(&self, reads: &[CheckRead]) -> Result<Vec<CheckValue>, BackendError> {
        let keys: Vec<Vec<u8>> = reads
            .iter()
            .filter_map(|read| match read {
                CheckRead::Key(key) => Some(key.clone()),
                CheckRead::Range { .. } => None,
            })
            .collect();
        let mut values = self.get_many(&keys)?.into_iter();
        reads
            .iter()
            .map(|read| match read {
                CheckRead::Key(_) => Ok(CheckValue::Value(values.next().flatten())),
                CheckRead::Range { range, limit } => self
                    .iter(range, false)?
                    .take(*limit)
                    .collect::<Result<_, _>>()
                    .map(CheckValue::Entries),
            })
            .collect()
    }

    /// Whether a point read answers in about the time of a hand-off between threads, as
    /// the embedded stores' do: party-core then runs such reads right on the connection's
    /// async task. A store that answers over the network says false, and every call of it
    /// stays on the store threads, where blocking costs no async worker.
    fn reads_fast(&self) -> bool {
        true
    }

    /// Whether a commit of a few keys returns in about the time of a hand-off between
    /// threads, as fjall's and RocksDB's (written to the OS, not synced) and the memory
    /// store's do: party-core then commits small writes right on the connection's async
    /// task. False by default: a store that syncs each commit to disk
    /// or answers over the network keeps every write on the store thread.
    fn writes_fast(&self) -> bool {
        false
    }

    /// The most keys one [`Backend::write`] may touch (the group's net puts and deletes,
    /// and its dedup records), where the store has such a limit (etcd: 128 operations per
    /// transaction by default). A bigger batch fails whole with
    /// [`BackendError::BatchTooLarge`], nothing of it applied.
    fn max_batch_ops(&self) -> Option<usize> {
        None
    }

    /// Called by the leader when writes pause. Persists what a reopen after a crash would
    /// otherwise have to replay from the store's log, so that the next leader takes over
    /// quickly. Stores without such a log keep the default, which does nothing.
    fn checkpoint(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Called by the leader as it closes, after its last commit: persists what the next
    /// open would otherwise replay from the store's log, and returns once it has (or has
    /// waited long enough: fjall and RocksDB wait at most 2 s), so that whoever opens the
    /// store next starts at once. A process that closes after a burst of writes would
    /// otherwise leave every later open to replay them (fjall: each one-shot `get` after a
    /// one-shot `load` of 100 000 entries took 30-39 ms, replaying the memtable the load
    /// left, and 15-18 ms once the load flushed it as it closed). Stores without such a log
    /// keep the default, which does nothing.
    fn checkpoint_before_close(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Whether a process may exit while this store is still closing in another thread.
    /// RocksDB's may not: its background threads then meet the C++ static destructors
    /// that run at exit and abort the process ("pthread lock: Invalid argument", about
    /// one exit in six), so a leader closes it before its handle's close returns, even
    /// for a process about to exit. The others keep the default.
    fn may_exit_while_closing(&self) -> bool {
        true
    }

    /// An iterator for `options`, read in chunks up to its limit.
    fn chunks(&self, options: &IterOptions) -> Result<Chunks, BackendError> {
        let entries = self.iter(&options.range, options.reverse)?;
        Ok(Chunks::new(entries, options.limit).with_values(options.values))
    }
}

/// The stores, by name: those that live in the data directory, and etcd, which lives in
/// a cluster ([`EtcdConfig`] says where).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Fjall,
    Sled,
    Rocksdb,
    Etcd,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Fjall => "fjall",
            BackendKind::Sled => "sled",
            BackendKind::Rocksdb => "rocksdb",
            BackendKind::Etcd => "etcd",
        }
    }

    /// Whether the store lives in the data directory (all but etcd).
    pub fn is_local(self) -> bool {
        self != BackendKind::Etcd
    }

    /// Whether a killed leader lets this store's lock go before a directory lock moved to
    /// the top of its descriptors ([`lock_order`]): fjall's lock is moved above it,
    /// RocksDB's (`fcntl`) goes as its descriptor closes, before any `flock` is let go, and
    /// etcd has none here. sled's, on a low descriptor, goes last: with the directory's
    /// lock on top, the next leader would find sled's still held and wait a retry.
    pub fn lets_its_lock_go_first(self) -> bool {
        self != BackendKind::Sled
    }

    /// Whether this build has the store (its cargo feature is on).
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Fjall => cfg!(feature = "fjall"),
            BackendKind::Sled => cfg!(feature = "sled"),
            BackendKind::Rocksdb => cfg!(feature = "rocksdb"),
            BackendKind::Etcd => cfg!(feature = "etcd"),
        }
    }

    /// Opens (creating if needed) this kind of store at `path`; etcd, which lives
    /// elsewhere, is opened with [`BackendKind::connect`].
    pub fn open(self, path: &Path) -> Result<Arc<dyn Backend>, OpenError> {
        let not_compiled = OpenError::NotCompiled {
            backend: self.name(),
        };
        match self {
            #[cfg(feature = "fjall")]
            BackendKind::Fjall => Ok(Arc::new(FjallBackend::open(path)?)),
            #[cfg(feature = "sled")]
            BackendKind::Sled => Ok(Arc::new(SledBackend::open(path)?)),
            #[cfg(feature = "rocksdb")]
            BackendKind::Rocksdb => Ok(Arc::new(RocksBackend::open(path)?)),
            BackendKind::Etcd => Err(OpenError::NotConfigured { backend: "etcd" }),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = path;
                Err(not_compiled)
            }
        }
    }

    /// Connects to the etcd store `config` names: as the next leader of `succession`
    /// (fencing its predecessors' commits), or as a writer of its own.
    pub fn connect(
        config: &EtcdConfig,
        succession: Option<Succession>,
    ) -> Result<Arc<dyn Backend>, OpenError> {
        #[cfg(feature = "etcd")]
        {
            Ok(Arc::new(match succession {
                Some(succession) => EtcdBackend::connect_as_leader(config, succession)?,
                None => EtcdBackend::connect(config)?,
            }))
        }
        #[cfg(not(feature = "etcd"))]
        {
            let _ = (config, succession);
            Err(OpenError::NotCompiled { backend: "etcd" })
        }
    }
}

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "fjall" => Ok(BackendKind::Fjall),
            "sled" => Ok(BackendKind::Sled),
            "rocksdb" => Ok(BackendKind::Rocksdb),
            "etcd" => Ok(BackendKind::Etcd),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

/// A backend name that is not fjall, sled, rocksdb or etcd.
#[derive(Debug, thiserror::Error)]
#[error("unknown backend {0:?}: expected fjall, sled, rocksdb or etcd")]
pub struct UnknownBackend(pub String);

/// Turns a store's error into a [`BackendError`] naming the store.
#[cfg(any(feature = "fjall", feature = "sled", feature = "rocksdb"))]
pub(crate) fn store_error<E>(backend: &'static str) -> impl Fn(E) -> BackendError
where
    E: Into<StoreError>,
{
    move |error| BackendError::store(backend, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_compiled` says what opening a store finds: only a store this build lacks is
    /// `NotCompiled`.
    #[test]
    fn a_store_is_compiled_in_exactly_when_it_opens() {
        for kind in [BackendKind::Fjall, BackendKind::Sled, BackendKind::Rocksdb] {
            let dir = tempfile::tempdir().unwrap();
            let opened = kind.open(dir.path());
            let not_compiled = matches!(opened, Err(OpenError::NotCompiled { .. }));
            assert_eq!(kind.is_compiled(), !not_compiled, "{}", kind.name());
        }
        // A build with etcd connects (its suites show it); one without says so at once.
        if !BackendKind::Etcd.is_compiled() {
            let config = EtcdConfig {
                endpoints: vec!["http://127.0.0.1:9".into()],
                prefix: b"t/".to_vec(),
            };
            let connected = BackendKind::connect(&config, None);
            assert!(matches!(connected, Err(OpenError::NotCompiled { .. })));
        }
    }
}

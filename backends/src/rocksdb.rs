//! RocksDB.
//!
//! Data lives in the default column family, dedup records in `party_dedup`, the change
//! log in `party_changes`; one `WriteBatch` covers the three, so they commit atomically. RocksDB writes each batch to its
//! write-ahead log before returning (without fsync), which survives `kill -9`; one batch per
//! group of writes keeps it to one WAL write per group. Iterators read the implicit snapshot
//! RocksDB takes when an iterator is created.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use party_proto::feed::LogEnds;
use party_proto::wire::Entry;
use party_proto::{ClientId, CommitSeq, DedupRecord, KeyRange};
use rocksdb::{DBIteratorWithThreadMode, IteratorMode, Options, ReadOptions, DB};

use crate::batch::{resolve_in, WriteBatch};
use crate::error::{BackendError, OpenError};
use crate::iter::EntryIter;
use crate::{changes, records, store_error, Backend};

const NAME: &str = "rocksdb";

/// Memtable size of each column family: bounds what a reopen after a kill replays of the
/// write-ahead log. RocksDB's own 64 MiB let a kill after a few seconds of writes leave
/// hundreds of MB to replay.
const WRITE_BUFFER_BYTES: usize = 8 << 20;

/// The write-ahead log RocksDB keeps before it flushes the column families that hold its
/// oldest file back. A file goes only once every column family has flushed what it holds
/// of it, and the dedup records fill their memtable so slowly that, at RocksDB's own
/// bound (four times the most all memtables may hold), 1 000 000 writes a leader commits
/// left 236 MB of the log, which a new leader replayed before serving (4.7 s, debug build).
const MAX_WAL_BYTES: u64 = 4 * WRITE_BUFFER_BYTES as u64;

/// Memtables smaller than this in all are not worth flushing at a checkpoint.
const CHECKPOINT_MIN_BYTES: u64 = 64 * 1024;

/// How long a checkpoint before close waits for RocksDB's flush; a store that cannot flush
/// is closed anyway, its log kept for the next open to replay.
const CLOSE_FLUSH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

type DbIter<'db> = DBIteratorWithThreadMode<'db, DB>;

self_cell::self_cell!(
    /// A RocksDB iterator together with the database it reads, so it can outlive the call
    /// that opened it.
    struct OwnedIter {
        owner: Arc<DB>,
        #[not_covariant]
        dependent: DbIter,
    }
);

impl Iterator for OwnedIter {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.with_dependent_mut(|_, iter| iter.next()).map(|item| {
            let (key, value) = item.map_err(store_error(NAME))?;
            Ok(Entry {
                key: key.into_vec(),
                value: value.into_vec(),
            })
        })
    }
}

/// A RocksDB database opened for party.
pub struct RocksBackend {
    db: Arc<DB>,
    path: PathBuf,
}

impl std::fmt::Debug for RocksBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksBackend {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_write_buffer_size(WRITE_BUFFER_BYTES);
        options.set_max_total_wal_size(MAX_WAL_BYTES);
        let families = [
            rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            records::NAMESPACE,
            changes::NAMESPACE,
        ]
        .map(|name| (name, options.clone()));
        let db = DB::open_cf_with_opts(&options, path, families).map_err(|error| {
            // RocksDB reports a held LOCK file only in its message.
            let message = error.to_string();
            let locked = message.contains("While lock file")
                || message.contains("lock hold by current process");
            OpenError::from_store(NAME, path, locked, error)
        })?;
        Ok(RocksBackend {
            db: Arc::new(db),
            path: path.to_owned(),
        })
    }

    fn records_family(&self) -> Result<&rocksdb::ColumnFamily, BackendError> {
        self.family(records::NAMESPACE)
    }

    fn changes_family(&self) -> Result<&rocksdb::ColumnFamily, BackendError> {
        self.family(changes::NAMESPACE)
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily, BackendError> {
        self.db.cf_handle(name).ok_or_else(|| {
            BackendError::store(NAME, format!("the column family {name} is missing"))
        })
    }

    fn families(&self) -> Result<[&rocksdb::ColumnFamily; 3], BackendError> {
        Ok([
            self.family(rocksdb::DEFAULT_COLUMN_FAMILY_NAME)?,
            self.records_family()?,
            self.changes_family()?,
        ])
    }

    /// What the memtables hold, the active ones and those waiting for their flush.
    fn unflushed(&self) -> Result<u64, BackendError> {
        let mut unflushed = 0;
        for family in self.families()? {
            unflushed += self
                .db
                .property_int_value_cf(family, "rocksdb.cur-size-all-mem-tables")
                .map_err(store_error(NAME))?
                .unwrap_or(0);
        }
        Ok(unflushed)
    }

    /// Starts a flush of every column family's memtable, if they hold enough in all to be
    /// worth a table each; answers whether it did.
    fn flush(&self) -> Result<bool, BackendError> {
        if self.unflushed()? < CHECKPOINT_MIN_BYTES {
            return Ok(false);
        }
        let mut options = rocksdb::FlushOptions::default();
        options.set_wait(false);
        self.db
            .flush_cfs_opt(&self.families()?, &options)
            .map_err(store_error(NAME))?;
        Ok(true)
    }
}

impl Backend for RocksBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn writes_fast(&self) -> bool {
        true
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        self.db.get(key).map_err(store_error(NAME))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        self.db
            .multi_get(keys)
            .into_iter()
            .map(|value| value.map_err(store_error(NAME)))
            .collect()
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        let effect = resolve_in(self, &batch.ops)?;
        let mut commit = rocksdb::WriteBatch::default();
        for (key, value) in effect {
            match value {
                Some(value) => commit.put(key, value),
                None => commit.delete(key),
            }
        }
        let family = self.records_family()?;
        for (client, record) in &batch.records {
            commit.put_cf(family, records::key(*client), records::value(record));
        }
        if let Some(append) = &batch.log {
            commit.put_cf(self.changes_family()?, append.seq.key(), &append.entry);
        }
        self.db.write(commit).map_err(store_error(NAME))
    }

    /// Flushes the memtables, which a reopen after a crash would otherwise replay from the
    /// write-ahead log.
    fn checkpoint(&self) -> Result<(), BackendError> {
        self.flush().map(drop)
    }

    fn may_exit_while_closing(&self) -> bool {
        false
    }

    /// Flushes the memtables and waits, at most `CLOSE_FLUSH_PATIENCE` (2 s), until RocksDB has.
    fn checkpoint_before_close(&self) -> Result<(), BackendError> {
        let deadline = std::time::Instant::now() + CLOSE_FLUSH_PATIENCE;
        if self.flush()? {
            while self.unflushed()? >= CHECKPOINT_MIN_BYTES && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(())
    }

    fn change_entries(
        &self,
        from: CommitSeq,
        newest_first: bool,
        max: usize,
    ) -> Result<Vec<(CommitSeq, Vec<u8>)>, BackendError> {
        let key = from.key();
        let direction = if newest_first {
            rocksdb::Direction::Reverse
        } else {
            rocksdb::Direction::Forward
        };
        let stored = self
            .db
            .iterator_cf(self.changes_family()?, IteratorMode::From(&key, direction));
        stored
            .take(max)
            .map(|item| {
                let (key, value) = item.map_err(store_error(NAME))?;
                changes::stored(&key, value.into_vec())
            })
            .collect()
    }

    fn change_log_ends(&self) -> Result<Option<LogEnds>, BackendError> {
        let family = self.changes_family()?;
        changes::ends_by_point_reads(self, |seq| {
            let entry = self.db.get_pinned_cf(family, seq.key());
            entry
                .map(|entry| entry.is_some())
                .map_err(store_error(NAME))
        })
    }

    fn remove_changes(&self, seqs: &[CommitSeq]) -> Result<(), BackendError> {
        let family = self.changes_family()?;
        let mut removal = rocksdb::WriteBatch::default();
        for seq in seqs {
            removal.delete_cf(family, seq.key());
        }
        self.db.write(removal).map_err(store_error(NAME))
    }

    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let (lower, upper) = range.half_open();
        let mut read = ReadOptions::default();
        if let Some(lower) = lower {
            read.set_iterate_lower_bound(lower);
        }
        if let Some(upper) = upper {
            read.set_iterate_upper_bound(upper);
        }
        let mode = if reverse {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        let iter = OwnedIter::new(self.db.clone(), |db| db.iterator_opt(mode, read));
        Ok(Box::new(iter))
    }

    fn dedup_records_of(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<DedupRecord>>, BackendError> {
        let family = self.records_family()?;
        records::read_each(clients, |key| {
            self.db.get_cf(family, key).map_err(store_error(NAME))
        })
    }

    fn expire_dedup_records(
        &self,
        written_before_ms: u64,
        after: Option<ClientId>,
        max: usize,
    ) -> Result<Option<ClientId>, BackendError> {
        let family = self.records_family()?;
        records::expire_page(
            written_before_ms,
            after,
            max,
            |first| {
                let from = IteratorMode::From(first, rocksdb::Direction::Forward);
                let stored = self.db.iterator_cf(family, from);
                Ok(stored.map(|item| item.map_err(store_error(NAME))))
            },
            |expired| {
                let mut removal = rocksdb::WriteBatch::default();
                for key in expired {
                    removal.delete_cf(family, key);
                }
                self.db.write(removal).map_err(store_error(NAME))
            },
        )
    }
}

//! sled 0.34.
//!
//! Data lives in the tree `data`, dedup records in `party_dedup`; each write is one
//! transaction over both trees. sled keeps writes in its own buffers and hands them to the
//! OS only when it flushes (every 500 ms by default), so every commit ends with a flush —
//! one per group of writes, not per write — to make an acknowledged write survive `kill -9`.
//! sled shows a transaction to readers as soon as it applies, before that flush: a read in
//! between would answer with a write a `kill -9` then loses (seen by `party chaos`: a
//! register read going back after a failover). So a write holds `settling`
//! from its transaction to the end of its flush, and every read (each step of an iterator)
//! waits for it: readers see only what a `kill -9` keeps.
//!
//! sled iterators are **not snapshots**: they visit keys in order, each at most once, and
//! see writes made while they run where those writes land ahead of them.
//!
//! sled 0.34 writes each snapshot of its page table to `snap.<lsn>.generating` and renames
//! it once whole, but at the next open it reads the newest file starting with `snap.`,
//! unfinished ones included: a process killed while writing one (sled does when it opens,
//! so a kill in the first milliseconds of a start can) leaves a store that never opens
//! again ("Read corrupted data at file offset None", upstream sled#1533). Such a file never
//! held a whole snapshot, so it is removed before the store is opened: sled then recovers
//! from the snapshot before it and its log, as it would had the kill come a moment earlier.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use party_proto::wire::Entry;
use party_proto::{ClientId, CommitSeq, DedupRecord, KeyRange};
use sled::transaction::{ConflictableTransactionResult, TransactionError};
use sled::{Batch, Db, IVec, Transactional, Tree};

use crate::batch::{resolve_in, WriteBatch};
use crate::error::{BackendError, OpenError};
use crate::iter::EntryIter;
use crate::{changes, records, store_error, Backend};

const NAME: &str = "sled";

/// A sled database opened for party.
#[derive(Debug)]
pub struct SledBackend {
    db: Db,
    data: Tree,
    records: Tree,
    changes: Tree,
    path: PathBuf,
    /// Written by a write from its transaction to the end of its flush, read by every
    /// read: none sees a write before it is in the OS's hands.
    settling: Arc<RwLock<()>>,
}

impl SledBackend {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let open_error = |error: sled::Error| {
            // sled reports a held lock only as an `Other` IO error with this text.
            let locked = matches!(&error, sled::Error::Io(io)
                if io.to_string().contains("could not acquire lock"));
            OpenError::from_store(NAME, path, locked, error)
        };
        remove_unfinished_snapshots(path)
            .map_err(|error| OpenError::from_store(NAME, path, false, error))?;
        let db = sled::Config::new().path(path).open().map_err(open_error)?;
        let data = db.open_tree("data").map_err(open_error)?;
        let records = db.open_tree(records::NAMESPACE).map_err(open_error)?;
        let changes = db.open_tree(changes::NAMESPACE).map_err(open_error)?;
        Ok(SledBackend {
            db,
            data,
            records,
            changes,
            path: path.to_owned(),
            settling: Arc::default(),
        })
    }

    /// Held while reading: no write is between its transaction and its flush.
    fn settled(&self) -> RwLockReadGuard<'_, ()> {
        settled(&self.settling)
    }

    /// Held from a write's transaction to the end of its flush.
    fn settling(&self) -> RwLockWriteGuard<'_, ()> {
        // A panic while it was held leaves nothing half-done that the lock guards.
        self.settling
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn settled_get(&self, key: &[u8]) -> Result<Option<IVec>, BackendError> {
        let _settled = self.settled();
        self.data.get(key).map_err(store_error(NAME))
    }
}

/// Removes the snapshots sled did not finish writing (see the module documentation). Only
/// the process about to open the store may: the leader, which holds the directory's lock.
fn remove_unfinished_snapshots(path: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn settled(settling: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    settling.read().unwrap_or_else(PoisonError::into_inner)
}

/// A sled iterator each of whose steps reads only settled writes.
struct Settled<I> {
    entries: I,
    settling: Arc<RwLock<()>>,
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Iterator for Settled<I> {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        let _settled = settled(&self.settling);
        self.entries.next().map(entry)
    }
}

fn entry(item: sled::Result<(IVec, IVec)>) -> Result<Entry, BackendError> {
    let (key, value) = item.map_err(store_error(NAME))?;
    Ok(Entry {
        key: key.to_vec(),
        value: value.to_vec(),
    })
}

impl Backend for SledBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        let value = self.settled_get(key)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn get_shared(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        let value = self.settled_get(key)?;
        Ok(value.map(Bytes::from_owner))
    }

    /// Under one hold of `settling`: no commit lands between two of the keys.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let _settled = self.settled();
        keys.iter()
            .map(|key| {
                let value = self.data.get(key).map_err(store_error(NAME))?;
                Ok(value.map(|value| value.to_vec()))
            })
            .collect()
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        let effect = resolve_in(self, &batch.ops)?;
        let mut data = Batch::default();
        for (key, value) in effect {
            match value {
                Some(value) => data.insert(&*key, value),
                None => data.remove(&*key),
            }
        }
        let mut dedup = Batch::default();
        for (client, record) in &batch.records {
            dedup.insert(&records::key(*client), records::value(record));
        }
        let mut log = Batch::default();
        if let Some(append) = &batch.log {
            log.insert(&append.seq.key(), append.entry.as_slice());
        }
        let _settling = self.settling();
        (&self.data, &self.records, &self.changes)
            .transaction(
                |(data_tx, records_tx, changes_tx)| -> ConflictableTransactionResult<()> {
                    data_tx.apply_batch(&data)?;
                    records_tx.apply_batch(&dedup)?;
                    changes_tx.apply_batch(&log)?;
                    Ok(())
                },
            )
            .map_err(|error: TransactionError<()>| match error {
                TransactionError::Storage(error) => BackendError::store(NAME, error),
                TransactionError::Abort(()) => BackendError::store(NAME, "transaction aborted"),
            })?;
        landed(self.db.flush())
    }

    fn change_entries(
        &self,
        from: CommitSeq,
        newest_first: bool,
        max: usize,
    ) -> Result<Vec<(CommitSeq, Vec<u8>)>, BackendError> {
        let entry = |item: sled::Result<(IVec, IVec)>| {
            let (key, value) = item.map_err(store_error(NAME))?;
            changes::stored(&key, value.to_vec())
        };
        let _settled = self.settled();
        if newest_first {
            self.changes
                .range(..=from.key())
                .rev()
                .take(max)
                .map(entry)
                .collect()
        } else {
            self.changes
                .range(from.key()..)
                .take(max)
                .map(entry)
                .collect()
        }
    }

    fn remove_changes(&self, seqs: &[CommitSeq]) -> Result<(), BackendError> {
        let mut removal = Batch::default();
        for seq in seqs {
            removal.remove(&seq.key());
        }
        let _settling = self.settling();
        self.changes
            .apply_batch(removal)
            .map_err(store_error(NAME))?;
        // Durable when it returns, as every store's removals are.
        self.db.flush().map(drop).map_err(store_error(NAME))
    }

    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let entries = self.data.range((range.start.clone(), range.end.clone()));
        let settling = Arc::clone(&self.settling);
        Ok(if reverse {
            Box::new(Settled {
                entries: entries.rev(),
                settling,
            })
        } else {
            Box::new(Settled { entries, settling })
        })
    }

    fn dedup_records_of(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<DedupRecord>>, BackendError> {
        records::read_each(clients, |key| {
            self.records.get(key).map_err(store_error(NAME))
        })
    }

    fn expire_dedup_records(
        &self,
        written_before_ms: u64,
        after: Option<ClientId>,
        max: usize,
    ) -> Result<Option<ClientId>, BackendError> {
        records::expire_page(
            written_before_ms,
            after,
            max,
            |first| {
                let stored = self.records.range(*first..);
                Ok(stored.map(|item| item.map_err(store_error(NAME))))
            },
            |expired| {
                let mut removal = Batch::default();
                for key in expired {
                    removal.remove(key);
                }
                self.records
                    .apply_batch(removal)
                    .map_err(store_error(NAME))?;
                self.db.flush().map(drop).map_err(store_error(NAME))
            },
        )
    }
}

/// What the flush after a committed write says of it. The transaction has applied by then
/// (readers see it, and sled may yet write it out), so a failed flush leaves the write
/// neither landed nor not: unsettled, for the leader to read its dedup records again,
/// never "nothing applied" (the writer would give the change log entry's number to the
/// next group as well, and report a transaction retried alone as a conflict with itself).
fn landed(flushed: sled::Result<usize>) -> Result<(), BackendError> {
    flushed.map(drop).map_err(|error| BackendError::Unsettled {
        backend: NAME,
        source: Box::new(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_that_fails_after_the_commit_leaves_the_write_unsettled() {
        assert!(landed(Ok(0)).is_ok());
        let failed = sled::Error::Io(std::io::Error::other("no space left"));
        assert!(
            matches!(landed(Err(failed)), Err(BackendError::Unsettled { .. })),
            "a failed flush is not a failed write"
        );
    }

    /// A read of `key` (or of any entry) that tells whether it saw the write.
    type SawIt = fn(&SledBackend, &KeyRange) -> bool;

    /// A write between its transaction and its flush, as `write` holds one: every kind of
    /// read waits until the flush is over (a leader killed before it would lose the write).
    #[test]
    fn no_read_sees_a_write_before_its_flush() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(SledBackend::open(dir.path()).unwrap());
        let settling = backend.settling();
        backend.data.insert(b"key", b"value".to_vec()).unwrap();
        backend
            .changes
            .insert(CommitSeq(1).key(), b"entry".to_vec())
            .unwrap();
        let (reads, read) = std::sync::mpsc::channel();
        let everything = KeyRange::all();
        let kinds: [(&str, SawIt); 5] = [
            ("get", |b, _| b.get(b"key").unwrap().is_some()),
            ("get_shared", |b, _| b.get_shared(b"key").unwrap().is_some()),
            ("iter", |b, r| b.iter(r, false).unwrap().next().is_some()),
            ("reverse iter", |b, r| {
                b.iter(r, true).unwrap().next().is_some()
            }),
            ("change_entries", |b, _| {
                !b.change_entries(CommitSeq(0), false, 1).unwrap().is_empty()
            }),
        ];
        for (name, saw_it) in kinds {
            let (backend, reads, range) = (backend.clone(), reads.clone(), everything.clone());
            std::thread::spawn(move || reads.send((name, saw_it(&backend, &range))));
        }
        // Each read answers at once unless it waits, and none may answer before the flush.
        let early = read.recv_timeout(std::time::Duration::from_millis(300));
        assert!(early.is_err(), "{early:?} answered before the flush");
        drop(settling);
        let mut answers: Vec<_> = (0..kinds.len()).map(|_| read.recv().unwrap()).collect();
        answers.sort();
        assert!(answers.iter().all(|(_, saw_it)| *saw_it), "{answers:?}");
    }
}

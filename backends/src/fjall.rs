//! fjall: the default store.
//!
//! Data lives in the keyspace `data`, dedup records in `party_dedup`; a batch spans both and
//! commits atomically through fjall's single journal. fjall refuses the empty key, so every
//! data key is stored behind a one-byte prefix (which keeps the order), and keys longer than
//! [`MAX_KEY_LEN`] are refused with a typed error. Each commit hands the journal to the
//! OS (`PersistMode::Buffer`, fjall's default for batches), which is what survives `kill -9`;
//! one commit per group of writes keeps that to one flush per group. Iterators are fjall
//! snapshots.
//!
//! Reopening replays the journal that was not yet flushed into tables, so a small memtable
//! keeps a new leader's open fast after a crash (see the reopen benchmark).

use std::ops::Bound;
use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use party_proto::wire::Entry;
use party_proto::{ClientId, DedupRecord, KeyRange};

use crate::batch::{resolve, WriteBatch};
use crate::error::{BackendError, OpenError};
use crate::iter::EntryIter;
use crate::{records, store_error, Backend};

const NAME: &str = "fjall";

/// Memtable size of the data keyspace: bounds the journal a reopen has to replay.
const MAX_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// fjall's smallest allowed journal budget.
const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// The longest key party can store in fjall: fjall's 65535 bytes less the prefix.
pub const MAX_KEY_LEN: usize = u16::MAX as usize - 1;

/// Put before every data key, because fjall has no empty key.
const KEY_PREFIX: u8 = b'k';

fn stored_key(key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1);
    stored.push(KEY_PREFIX);
    stored.extend_from_slice(key);
    stored
}

fn stored_bound(bound: &Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    bound.as_ref().map(|key| stored_key(key))
}

fn checked_key(key: &[u8]) -> Result<Vec<u8>, BackendError> {
    if key.len() > MAX_KEY_LEN {
        return Err(BackendError::KeyTooLarge {
            backend: NAME,
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(stored_key(key))
}

/// A fjall database opened for party.
pub struct FjallBackend {
    db: Database,
    data: Keyspace,
    records: Keyspace,
    path: PathBuf,
}

impl std::fmt::Debug for FjallBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FjallBackend {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let open_error = |error: fjall::Error| match error {
            fjall::Error::Locked => OpenError::Locked {
                backend: NAME,
                path: path.to_owned(),
            },
            other => OpenError::Store {
                backend: NAME,
                path: path.to_owned(),
                source: other.into(),
            },
        };
        let db = Database::builder(path)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(open_error)?;
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MAX_MEMTABLE_BYTES);
        let data = db.keyspace("data", options).map_err(open_error)?;
        let records = db
            .keyspace(records::NAMESPACE, KeyspaceCreateOptions::default)
            .map_err(open_error)?;
        Ok(FjallBackend {
            db,
            data,
            records,
            path: path.to_owned(),
        })
    }
}

fn data_entry(guard: fjall::Guard) -> Result<Entry, BackendError> {
    let (key, value) = guard.into_inner().map_err(store_error(NAME))?;
    Ok(Entry {
        key: key.get(1..).unwrap_or_default().to_vec(),
        value: value.to_vec(),
    })
}

impl Backend for FjallBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        if key.len() > MAX_KEY_LEN {
            return Ok(None);
        }
        let value = self.data.get(stored_key(key)).map_err(store_error(NAME))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        let effect = resolve(&batch.ops, |range| {
            self.iter(range, false)?
                .map(|entry| entry.map(|e| e.key))
                .collect()
        })?;
        let mut commit = self.db.batch();
        for (key, value) in effect {
            let key = checked_key(&key)?;
            match value {
                Some(value) => commit.insert(&self.data, key, value),
                None => commit.remove(&self.data, key),
            }
        }
        for (client, record) in &batch.records {
            commit.insert(&self.records, records::key(*client), records::value(record));
        }
        commit.commit().map_err(store_error(NAME))
    }

    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let bounds = (stored_bound(&range.start), stored_bound(&range.end));
        let entries = self.db.snapshot().range(&self.data, bounds);
        Ok(if reverse {
            Box::new(entries.rev().map(data_entry))
        } else {
            Box::new(entries.map(data_entry))
        })
    }

    fn dedup_records(&self) -> Result<Vec<(ClientId, DedupRecord)>, BackendError> {
        self.records
            .iter()
            .map(|guard| {
                let (key, value) = guard.into_inner().map_err(store_error(NAME))?;
                records::decode(&key, &value)
            })
            .collect()
    }
}

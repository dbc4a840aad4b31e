//! sled 0.34.
//!
//! Data lives in the tree `data`, dedup records in `party_dedup`; each write is one
//! transaction over both trees. sled keeps writes in its own buffers and hands them to the
//! OS only when it flushes (every 500 ms by default), so every commit ends with a flush —
//! one per group of writes, not per write — to make an acknowledged write survive `kill -9`.
//!
//! sled iterators are **not snapshots**: they visit keys in order, each at most once, and
//! see writes made while they run where those writes land ahead of them.

use std::path::{Path, PathBuf};

use party_proto::wire::Entry;
use party_proto::{ClientId, DedupRecord, KeyRange};
use sled::transaction::{ConflictableTransactionResult, TransactionError};
use sled::{Batch, Db, IVec, Transactional, Tree};

use crate::batch::{resolve_in, WriteBatch};
use crate::error::{BackendError, OpenError};
use crate::iter::EntryIter;
use crate::{records, store_error, Backend};

const NAME: &str = "sled";

/// A sled database opened for party.
#[derive(Debug)]
pub struct SledBackend {
    db: Db,
    data: Tree,
    records: Tree,
    path: PathBuf,
}

impl SledBackend {
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let open_error = |error: sled::Error| {
            // sled reports a held lock only as an `Other` IO error with this text.
            let locked = matches!(&error, sled::Error::Io(io)
                if io.to_string().contains("could not acquire lock"));
            OpenError::from_store(NAME, path, locked, error)
        };
        let db = sled::Config::new().path(path).open().map_err(open_error)?;
        let data = db.open_tree("data").map_err(open_error)?;
        let records = db.open_tree(records::NAMESPACE).map_err(open_error)?;
        Ok(SledBackend {
            db,
            data,
            records,
            path: path.to_owned(),
        })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
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
        let value = self.data.get(key).map_err(store_error(NAME))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        let effect = resolve_in(self, &batch.ops)?;
        let mut data = Batch::default();
        for (key, value) in effect {
            match value {
                Some(value) => data.insert(key, value),
                None => data.remove(key),
            }
        }
        let mut dedup = Batch::default();
        for (client, record) in &batch.records {
            dedup.insert(&records::key(*client), records::value(record));
        }
        (&self.data, &self.records)
            .transaction(
                |(data_tx, records_tx)| -> ConflictableTransactionResult<()> {
                    data_tx.apply_batch(&data)?;
                    records_tx.apply_batch(&dedup)?;
                    Ok(())
                },
            )
            .map_err(|error: TransactionError<()>| match error {
                TransactionError::Storage(error) => BackendError::store(NAME, error),
                TransactionError::Abort(()) => BackendError::store(NAME, "transaction aborted"),
            })?;
        self.db.flush().map_err(store_error(NAME))?;
        Ok(())
    }

    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError> {
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        let entries = self.data.range((range.start.clone(), range.end.clone()));
        Ok(if reverse {
            Box::new(entries.rev().map(entry))
        } else {
            Box::new(entries.map(entry))
        })
    }

    fn dedup_records(&self) -> Result<Vec<(ClientId, DedupRecord)>, BackendError> {
        self.records
            .iter()
            .map(|item| {
                let entry = entry(item)?;
                records::decode(&entry.key, &entry.value)
            })
            .collect()
    }
}

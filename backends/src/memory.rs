//! The in-memory store: the simulator's and the tests' backend. Its iterators copy their
//! range when opened, which makes them snapshots.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use party_proto::feed::LogEnds;
use party_proto::wire::Entry;
use party_proto::{ClientId, CommitSeq, DedupRecord, KeyRange};

use crate::batch::{resolve, WriteBatch};
use crate::error::BackendError;
use crate::iter::EntryIter;
use crate::{changes, records, Backend};

#[derive(Debug, Default)]
struct State {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    records: BTreeMap<ClientId, DedupRecord>,
    changes: BTreeMap<CommitSeq, Vec<u8>>,
}

/// An ordered map from byte keys to byte values, kept in memory.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated: every write
        // below is computed first and applied with infallible inserts.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn range(&self, range: &KeyRange) -> impl DoubleEndedIterator<Item = (&Vec<u8>, &Vec<u8>)> {
        let bounds = (!range.is_empty()).then(|| (range.start.clone(), range.end.clone()));
        bounds
            .into_iter()
            .flat_map(|bounds| self.data.range(bounds))
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn writes_fast(&self) -> bool {
        true
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.state().data.get(key).cloned())
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let state = self.state();
        Ok(keys
            .iter()
            .map(|key| state.data.get(key).cloned())
            .collect())
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        let mut state = self.state();
        let effect = resolve(&batch.ops, |range| {
            Ok(state.range(range).map(|(k, _)| k.clone()).collect())
        })?;
        for (key, value) in effect {
            match value {
                Some(value) => state.data.insert(key.into_owned(), value.to_vec()),
                None => state.data.remove(&*key),
            };
        }
        state.records.extend(batch.records.iter().cloned());
        if let Some(append) = &batch.log {
            state.changes.insert(append.seq, append.entry.clone());
        }
        Ok(())
    }

    fn change_entries(
        &self,
        from: CommitSeq,
        newest_first: bool,
        max: usize,
    ) -> Result<Vec<(CommitSeq, Vec<u8>)>, BackendError> {
        let state = self.state();
        let entry = |(seq, entry): (&CommitSeq, &Vec<u8>)| (*seq, entry.clone());
        Ok(if newest_first {
            state
                .changes
                .range(..=from)
                .rev()
                .take(max)
                .map(entry)
                .collect()
        } else {
            state.changes.range(from..).take(max).map(entry).collect()
        })
    }

    /// As fjall and RocksDB find them, so that the simulator runs that search.
    fn change_log_ends(&self) -> Result<Option<LogEnds>, BackendError> {
        changes::ends_by_point_reads(self, |seq| Ok(self.state().changes.contains_key(&seq)))
    }

    fn remove_changes(&self, seqs: &[CommitSeq]) -> Result<(), BackendError> {
        let mut state = self.state();
        for seq in seqs {
            state.changes.remove(seq);
        }
        Ok(())
    }

    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError> {
        let state = self.state();
        let entry = |(key, value): (&Vec<u8>, &Vec<u8>)| {
            Ok(Entry {
                key: key.clone(),
                value: value.clone(),
            })
        };
        let entries: Vec<_> = if reverse {
            state.range(range).rev().map(entry).collect()
        } else {
            state.range(range).map(entry).collect()
        };
        Ok(Box::new(entries.into_iter()))
    }

    fn dedup_records_of(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<DedupRecord>>, BackendError> {
        let state = self.state();
        Ok(clients
            .iter()
            .map(|client| state.records.get(client).cloned())
            .collect())
    }

    fn expire_dedup_records(
        &self,
        written_before_ms: u64,
        after: Option<ClientId>,
        max: usize,
    ) -> Result<Option<ClientId>, BackendError> {
        let Some(first) = records::first_key_after(after) else {
            return Ok(None);
        };
        let mut state = self.state();
        let stored = state
            .records
            .range(ClientId(u128::from_be_bytes(first))..)
            .map(|(client, record)| Ok((records::key(*client), records::value(record))));
        let page = records::sweep_page(stored, written_before_ms, max)?;
        for key in page.expired {
            state.records.remove(&ClientId(u128::from_be_bytes(key)));
        }
        Ok(page.last)
    }
}

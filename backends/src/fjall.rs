//! fjall: the default store.
//!
//! Pinned to fjall 2.11 because it rotates its journal with every memtable, so a small
//! memtable bounds what a new leader has to replay after a crash. fjall 3.1 rotates the
//! journal only past a fixed 64 MB, which makes a reopen after `kill -9` take up to ~0.7 s
//! (measured by `benches/reopen.rs`).
//!
//! Layout of the store directory: `store.lock`, held with an OS lock while open (fjall 2
//! takes no lock of its own, and this is the second guard behind party's election lock),
//! and the fjall keyspace in `fjall/`, with data in the partition `data` and dedup records
//! in `party_dedup`. The change log lives in `data` too, after every key (behind a prefix
//! of its own): a third partition in every batch halved the rate of small puts (measured
//! with one marker entry per group, 430k → 215k puts/s in-process). A batch spans both
//! partitions and commits atomically through fjall's
//! journal; each commit hands the journal to the OS (`PersistMode::Buffer`), which survives
//! `kill -9`, and one commit per group of writes keeps that to one flush per group.
//! Iterators are fjall snapshots. fjall's lsm-tree is patched (vendor/lsm-tree/PATCHED.md):
//! as published, a flush dropped the versions an open snapshot reads of keys written again
//! since, and a compaction into the last level brought deleted values back.
//!
//! fjall refuses the empty key, so every data key is stored behind a one-byte prefix (which
//! keeps the order, and keeps them apart from the change log's); keys longer than
//! [`MAX_KEY_LEN`] get a typed error.

use std::fs::{File, TryLockError};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use fjall::{AbstractTree, Config, Keyspace, PartitionCreateOptions, PartitionHandle, Snapshot};
use party_proto::feed::LogEnds;
use party_proto::wire::Entry;
use party_proto::{ClientId, CommitSeq, DedupRecord, KeyRange};

use crate::batch::{resolve_in, WriteBatch};
use crate::error::{BackendError, OpenError, StoreError};
use crate::iter::EntryIter;
use crate::{changes, records, store_error, Backend};

const NAME: &str = "fjall";

/// Memtable size of the data partition: bounds the journal a reopen has to replay (~6 ms a
/// MiB of small writes here), and sets how often fjall flushes. At 2 MiB, values of 1 to
/// 64 KiB flushed so often that level 0 filled faster than compaction emptied it and fjall
/// stalled the writes: 48-63 MB/s of puts in-process; 4 MiB doubles that (97-110 MB/s), 8
/// MiB gives 119-209 MB/s but a worst-case replay near 50 ms after a kill mid-burst (all
/// measured while fjall also stalled on its journal count, [`JOURNAL_BUDGET_BYTES`]; once
/// it no longer did, 2 MiB still ran 64 KiB puts at 0.72x and 1 MiB puts at 0.86x of 4
/// MiB in-process, four runs each). fjall keeps a partition's options from its creation:
/// stores made before keep 2 MiB.
const MAX_MEMTABLE_BYTES: u32 = 4 * 1024 * 1024;

/// The length fjall gives a journal file when it starts one (its `PRE_ALLOCATED_BYTES`,
/// private): what it counts a sealed journal at, unless more was written to it.
const FJALL_JOURNAL_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// What fjall may count of sealed journals. When a write overfills a memtable and fjall
/// seals it, it checks them: past 90 % of the budget it sleeps half a second, past all of
/// it it waits in steps of 100 ms for flushes (seals made here, at checkpoints and of the
/// records, check nothing). Each data seal of a burst makes two journals (the records'
/// seal follows), 4 MiB of data counted 64 MiB, so at fjall's default of 512 MiB its
/// 8th seal with seven memtables waiting for a flush slept and the 9th waited (the
/// README's Choosing a store has the figures). At 128 journals, the bound on writes
/// whose flushes lag is [`WRITE_BUFFER_BYTES`] instead.
const JOURNAL_BUDGET_BYTES: u64 = 128 * FJALL_JOURNAL_FILE_BYTES;

/// Bytes of memtables, sealed or not, past which fjall holds back writes until its
/// flushes catch up: a write that takes them past it waits in steps of 10 ms until they
/// are back under it (then 100 ms more while above 90 %); a batch may pass it once. About
/// what the journal check let wait before (eight 4 MiB memtables), so that a leader killed
/// in a burst whose flushes lag leaves about as much journal to replay as then; stores
/// with 2 MiB memtables (made before) now let sixteen wait, against eight.
const WRITE_BUFFER_BYTES: u64 = 32 * 1024 * 1024;

/// Memtables smaller than this are not worth sealing at a checkpoint.
const CHECKPOINT_MIN_BYTES: usize = 64 * 1024;

/// How long a checkpoint before close waits for fjall to flush the memtables it sealed (a
/// 4 MiB one takes tens of milliseconds); a store that cannot flush is closed anyway, its
/// journals kept for the next open to replay.
const CLOSE_FLUSH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes written to the data memtable between two moves of fjall's version horizon (see
/// [`FjallBackend::release_old_versions`]): a table fjall flushes as the memtable fills
/// keeps at most about this much of versions written over (an eighth of a memtable; a
/// quarter in stores made with 2 MiB ones). Moving it every 64 commits cost 2 % of
/// in-process puts.
const BYTES_PER_HORIZON: u32 = MAX_MEMTABLE_BYTES / 8;

/// How many snapshots fjall closes between two computations of its version horizon (its
/// snapshot tracker's `safety_gap`).
const CLOSES_PER_HORIZON: usize = 50;

/// The longest key party can store in fjall: fjall's 65535 bytes less the prefix.
pub const MAX_KEY_LEN: usize = u16::MAX as usize - 1;

/// Put before every data key, because fjall has no empty key.
const KEY_PREFIX: u8 = b'k';

/// The value under `key`, read by `read` under its stored key (a key too long to store
/// has none).
fn stored_value<E: Into<StoreError>>(
    key: &[u8],
    read: impl FnOnce(Vec<u8>) -> Result<Option<fjall::Slice>, E>,
) -> Result<Option<fjall::Slice>, BackendError> {
    if key.len() > MAX_KEY_LEN {
        return Ok(None);
    }
    read(stored_key(key)).map_err(store_error(NAME))
}

fn stored_key(key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(key.len() + 1);
    stored.push(KEY_PREFIX);
    stored.extend_from_slice(key);
    stored
}

/// Put before every change log key, in the data partition: after every data key.
const LOG_PREFIX: u8 = KEY_PREFIX + 1;

fn log_key(seq: CommitSeq) -> [u8; 9] {
    let mut key = [LOG_PREFIX; 9];
    key[1..].copy_from_slice(&seq.key());
    key
}

/// `range` with no bound longer than a key fjall stores (its range asserts that and would
/// panic the store thread): a longer bound stands for its longest prefix a key can be,
/// which selects the same keys (a key past that prefix would be too long to store).
fn within_key_len(range: &KeyRange) -> KeyRange {
    let start = match &range.start {
        Bound::Included(key) | Bound::Excluded(key) if key.len() > MAX_KEY_LEN => {
            Bound::Excluded(key[..MAX_KEY_LEN].to_vec())
        }
        bound => bound.clone(),
    };
    let end = match &range.end {
        Bound::Included(key) | Bound::Excluded(key) if key.len() > MAX_KEY_LEN => {
            Bound::Included(key[..MAX_KEY_LEN].to_vec())
        }
        bound => bound.clone(),
    };
    KeyRange { start, end }
}

/// A range of data keys as stored: an unbounded side stops at the data keys' edge.
fn stored_bounds(range: &KeyRange) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match &range.start {
        Bound::Unbounded => Bound::Included(vec![KEY_PREFIX]),
        bound => bound.as_ref().map(|key| stored_key(key)),
    };
    let end = match &range.end {
        Bound::Unbounded => Bound::Excluded(vec![LOG_PREFIX]),
        bound => bound.as_ref().map(|key| stored_key(key)),
    };
    (start, end)
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

/// A fjall keyspace opened for party.
pub struct FjallBackend {
    keyspace: Keyspace,
    data: PartitionHandle,
    records: PartitionHandle,
    /// The data memtable's size when the version horizon last moved.
    horizon_at: AtomicU32,
    /// Set once a memtable could not be sealed: see [`FjallBackend::sealed_or_poisoned`].
    poisoned: AtomicBool,
    /// Held while a snapshot opens, and while the version horizon moves (see
    /// [`FjallBackend::release_old_versions`]).
    opening: Mutex<()>,
    path: PathBuf,
    // Declared last: released only after fjall has shut down.
    _lock: File,
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
        Self::open_configured(path, |config| config)
    }

    /// [`FjallBackend::open`] with fjall's configuration changed by `configure` (tests
    /// that keep fjall from flushing).
    fn open_configured(
        path: &Path,
        configure: impl FnOnce(Config) -> Config,
    ) -> Result<Self, OpenError> {
        let failed = |source: StoreError| OpenError::Store {
            backend: NAME,
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(path).map_err(|e| failed(e.into()))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("store.lock"))
            .map_err(|e| failed(e.into()))?;
        let lock = crate::lock_order::to_the_top(lock, crate::lock_order::LockRank::Store);
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    backend: NAME,
                    path: path.to_owned(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(failed(e.into())),
        }
        // fjall's configuration resolves a default directory against the current one as it
        // is made, and panics in a process whose current directory was removed.
        std::env::current_dir().map_err(|error| {
            failed(
                format!(
                    "fjall needs the process's current directory, which cannot be read: {error}"
                )
                .into(),
            )
        })?;
        let config = Config::new(path.join("fjall"))
            .max_journaling_size(JOURNAL_BUDGET_BYTES)
            .max_write_buffer_size(WRITE_BUFFER_BYTES);
        let keyspace = configure(config).open().map_err(|e| failed(e.into()))?;
        let data_options = PartitionCreateOptions::default().max_memtable_size(MAX_MEMTABLE_BYTES);
        let data = keyspace
            .open_partition("data", data_options)
            .map_err(|e| failed(e.into()))?;
        let records = keyspace
            .open_partition(records::NAMESPACE, PartitionCreateOptions::default())
            .map_err(|e| failed(e.into()))?;
        Ok(FjallBackend {
            keyspace,
            data,
            records,
            horizon_at: AtomicU32::new(0),
            poisoned: AtomicBool::new(false),
            opening: Mutex::new(()),
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// Lets fjall drop the versions of overwritten keys that no snapshot reads. fjall
    /// moves the horizon below which its flushes and compactions drop them at every 50th
    /// snapshot close, and otherwise only while no snapshot has been opened since the last
    /// such move (to 100 instants back, every 250 ms). party opens snapshots for iterators
    /// alone, so once a store had been scanned a few times its horizon stayed there, and
    /// it kept every version written since in its memtables and tables until 50 scans had
    /// ended (measured with fjall alone: one scan, then 2 s of overwrites of 16 keys: 558
    /// 400 versions kept after a flush, against 1 600 without the scan); a scan over such
    /// keys walked them all. Closing 50 snapshots of the present instant moves the horizon
    /// to just before it, or to just before the oldest snapshot still open or closed
    /// within the last 50 instants.
    ///
    /// `opening` is held, as by [`Backend::iter`] when it opens its snapshot: fjall reads
    /// the instant of a snapshot before it registers it, and a horizon moved to the
    /// present in between would pass it.
    fn release_old_versions(&self) {
        let _opening = self.opening();
        for _ in 0..CLOSES_PER_HORIZON {
            drop(self.data.snapshot());
        }
    }

    /// Seals the memtables for fjall to flush. Small ones are left alone, as they replay
    /// fast and each seal makes a table, unless older journals wait on them: fjall retires
    /// a journal only once every partition has flushed what it holds of it.
    fn seal_memtables(&self) -> Result<(), BackendError> {
        let partitions = [&self.data, &self.records];
        let unflushed: usize = partitions
            .iter()
            .map(|partition| partition.tree.active_memtable_size() as usize)
            .sum();
        let pinning = unflushed > 0 && self.keyspace.journal_count() > 1;
        if unflushed < CHECKPOINT_MIN_BYTES && !pinning {
            return Ok(());
        }
        // So that these flushes keep one version of each key written over.
        self.release_old_versions();
        for partition in partitions {
            self.sealed_or_poisoned(partition)?;
        }
        Ok(())
    }

    /// Seals the dedup records' memtable, as fjall has just sealed the data's. fjall
    /// retires a journal only once every partition has flushed what it holds of it, and
    /// the records, a few bytes a commit, fill their memtable so slowly that they kept
    /// every journal of a burst of writes until the burst paused: 11-58 MB of them after a
    /// few seconds of puts here, 65-360 ms for a new leader to replay after a kill, where
    /// one 4 MiB memtable takes ~25 ms. Sealed with each data memtable, the records let
    /// its journal go once both are flushed.
    ///
    /// The commit before has been made, so a seal that fails is not that write's failure:
    /// it fails the writes after it instead (see [`FjallBackend::sealed_or_poisoned`]).
    fn seal_records(&self) {
        if self.records.tree.active_memtable_size() > 0 {
            let _ = self.sealed_or_poisoned(&self.records);
        }
    }

    /// Seals `partition`'s memtable. fjall sets a memtable aside before it starts the next
    /// journal, and gives it to a flush only once that succeeded: if starting the journal
    /// fails (a full disk), the memtable is read but never flushed, and once a later one
    /// of the partition is, its journal goes with what it alone held. fjall stops every
    /// write when its own seal fails; so does this store: a write after a failed seal is
    /// refused until the store is opened again, which replays the journal.
    fn sealed_or_poisoned(&self, partition: &PartitionHandle) -> Result<(), BackendError> {
        partition.rotate_memtable().map(drop).map_err(|error| {
            self.poisoned.store(true, Ordering::Relaxed);
            store_error(NAME)(error)
        })
    }

    /// The value under `key` as the store holds it now (a key too long to store has none).
    ///
    /// Read at the keyspace's instant, as snapshots are ([`FjallBackend::snapshot`]): a
    /// read of the latest would see a commit under way, which a snapshot opened after it
    /// may not yet, and the second read would go back.
    fn stored_value(&self, key: &[u8]) -> Result<Option<fjall::Slice>, BackendError> {
        let instant = self.keyspace.instant();
        stored_value(key, |stored| self.data.tree.get(stored, Some(instant)))
    }

    fn refuse_if_poisoned(&self) -> Result<(), BackendError> {
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(BackendError::store(
                NAME,
                "a memtable could not be sealed, so its writes might never reach a table: \
                 the store must be opened again",
            ));
        }
        Ok(())
    }

    /// The data as the last whole commit left it. fjall's `snapshot()` reads at the next
    /// instant fjall hands out, which a commit under way already holds: such a snapshot
    /// shows the part of that commit inserted so far, and the rest as it comes; the
    /// keyspace's instant moves past a commit only once all of it is in.
    fn snapshot(&self) -> fjall::Snapshot {
        let _opening = self.opening();
        self.data.snapshot_at(self.keyspace.instant())
    }

    /// Holds off snapshots opening and horizon moves elsewhere (a panic while holding it
    /// left nothing half done: the guard protects no data).
    fn opening(&self) -> std::sync::MutexGuard<'_, ()> {
        self.opening
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Entries read from one fjall snapshot, a buffer at a time.
///
/// fjall 2's range iterators are not `Send`, so instead of holding one this keeps the
/// snapshot (which is) and the part of the range still to read, and refills its buffer
/// from a short-lived range iterator that resumes after the last key read.
struct SnapshotIter {
    snapshot: Snapshot,
    rest: Option<KeyRange>,
    reverse: bool,
    buffer: std::vec::IntoIter<Entry>,
}

/// Most entries read from the snapshot per refill.
const REFILL: usize = 1024;

/// Most bytes of keys and values read from the snapshot per refill, the entry that passes
/// them included: a buffer of [`REFILL`] values of 1 MiB would hold a GiB while a scan
/// pulls a chunk of 1 MiB at a time.
const REFILL_BYTES: u64 = 1 << 20;

impl SnapshotIter {
    fn refill(&mut self) -> Result<(), BackendError> {
        let Some(rest) = self.rest.take() else {
            return Ok(());
        };
        let bounds = stored_bounds(&rest);
        let range = self.snapshot.range(bounds);
        let (entries, full) = if self.reverse {
            read_buffer(range.rev())?
        } else {
            read_buffer(range)?
        };
        if let (true, Some(last)) = (full, entries.last()) {
            self.rest = Some(if self.reverse {
                rest.before(&last.key)
            } else {
                rest.after(&last.key)
            });
        }
        self.buffer = entries.into_iter();
        Ok(())
    }
}

/// The next entries of a range, up to [`REFILL`] of them and [`REFILL_BYTES`] of their keys
/// and values, and whether it stopped at either (the range may go on) rather than at the
/// range's end. The range is read first and copied out after, so that it is held briefly.
fn read_buffer<E: Into<StoreError>>(
    items: impl Iterator<Item = Result<fjall::KvPair, E>>,
) -> Result<(Vec<Entry>, bool), BackendError> {
    let mut read = Vec::new();
    let mut bytes = 0;
    let mut full = false;
    for item in items {
        let (key, value) = item.map_err(store_error(NAME))?;
        bytes += (key.len() + value.len()) as u64;
        read.push((key, value));
        if read.len() == REFILL || bytes >= REFILL_BYTES {
            full = true;
            break;
        }
    }
    let entries = read
        .into_iter()
        .map(|(key, value)| Entry {
            key: key.get(1..).unwrap_or_default().to_vec(),
            value: value.to_vec(),
        })
        .collect();
    Ok((entries, full))
}

impl Iterator for SnapshotIter {
    type Item = Result<Entry, BackendError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.len() == 0 {
            if let Err(error) = self.refill() {
                return Some(Err(error));
            }
        }
        self.buffer.next().map(Ok)
    }
}

impl Backend for FjallBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn writes_fast(&self) -> bool {
        true
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.stored_value(key)?.map(|value| value.to_vec()))
    }

    fn get_shared(&self, key: &[u8]) -> Result<Option<Bytes>, BackendError> {
        Ok(self.stored_value(key)?.map(Bytes::from_owner))
    }

    /// From one snapshot: two keys of one commit are never read one before it and one after.
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if let [key] = keys {
            // One key needs no snapshot (the store thread's rounds often read just one).
            return Ok(vec![self.get(key)?]);
        }
        let snapshot = self.snapshot();
        keys.iter()
            .map(|key| {
                let value = stored_value(key, |stored| snapshot.get(stored))?;
                Ok(value.map(|value| value.to_vec()))
            })
            .collect()
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), BackendError> {
        self.refuse_if_poisoned()?;
        let effect = resolve_in(self, &batch.ops)?;
        let writes_data = !effect.is_empty() || batch.log.is_some();
        let before = self.data.tree.active_memtable_size();
        let mut commit = self.keyspace.batch();
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
        if let Some(append) = &batch.log {
            commit.insert(&self.data, log_key(append.seq), append.entry.as_slice());
        }
        commit.commit().map_err(store_error(NAME))?;
        let size = self.data.tree.active_memtable_size();
        // fjall seals a memtable after the commit's writes: the next one starts empty.
        let sealed = size < before || (writes_data && size == 0);
        if sealed {
            self.seal_records();
        }
        let at = self.horizon_at.load(Ordering::Relaxed);
        if sealed || size < at || size - at >= BYTES_PER_HORIZON {
            self.horizon_at.store(size, Ordering::Relaxed);
            self.release_old_versions();
        }
        Ok(())
    }

    fn change_entries(
        &self,
        from: CommitSeq,
        newest_first: bool,
        max: usize,
    ) -> Result<Vec<(CommitSeq, Vec<u8>)>, BackendError> {
        let entry = |item: fjall::Result<(fjall::Slice, fjall::Slice)>| {
            let (key, value) = item.map_err(store_error(NAME))?;
            changes::stored(key.get(1..).unwrap_or_default(), value.to_vec())
        };
        if newest_first {
            let log = log_key(CommitSeq(0))..=log_key(from);
            self.data.range(log).rev().take(max).map(entry).collect()
        } else {
            let log = log_key(from)..=log_key(CommitSeq(u64::MAX));
            self.data.range(log).take(max).map(entry).collect()
        }
    }

    fn change_log_ends(&self) -> Result<Option<LogEnds>, BackendError> {
        changes::ends_by_point_reads(self, |seq| {
            self.data
                .contains_key(log_key(seq))
                .map_err(store_error(NAME))
        })
    }

    fn remove_changes(&self, seqs: &[CommitSeq]) -> Result<(), BackendError> {
        let mut removal = self.keyspace.batch();
        for seq in seqs {
            removal.remove(&self.data, log_key(*seq));
        }
        removal.commit().map_err(store_error(NAME))
    }

    /// Seals the memtables: fjall flushes them in the background and then retires their
    /// journals, which an open after a crash would otherwise replay (about 6 ms per MiB
    /// here; how: `seal_memtables`).
    fn checkpoint(&self) -> Result<(), BackendError> {
        self.refuse_if_poisoned()?;
        self.seal_memtables()
    }

    /// Seals the memtables and waits, at most `CLOSE_FLUSH_PATIENCE` (2 s), until fjall has
    /// flushed every sealed one (sealed here or before) and retired its journals.
    fn checkpoint_before_close(&self) -> Result<(), BackendError> {
        self.checkpoint()?;
        let deadline = std::time::Instant::now() + CLOSE_FLUSH_PATIENCE;
        while self.keyspace.journal_count() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    }

    fn iter(&self, range: &KeyRange, reverse: bool) -> Result<EntryIter, BackendError> {
        let range = within_key_len(range);
        if range.is_empty() {
            return Ok(Box::new(std::iter::empty()));
        }
        Ok(Box::new(SnapshotIter {
            snapshot: self.snapshot(),
            rest: Some(range),
            reverse,
            buffer: Vec::new().into_iter(),
        }))
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
                let mut removal = self.keyspace.batch();
                for key in expired {
                    removal.remove(&self.records, key);
                }
                removal.commit().map_err(store_error(NAME))
            },
        )
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod range_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use party_proto::wire::WriteOp;
    use party_proto::WriteSeq;

    /// `commits` commits of `puts` puts of `value_len` bytes, each with one client's dedup
    /// record, as a leader's group commits make them: a small memtable of records beside
    /// the data's.
    fn burst_with_records(store: &FjallBackend, commits: u64, puts: u64, value_len: usize) {
        for n in 0..commits {
            let ops = (0..puts)
                .map(|i| WriteOp::Put {
                    key: (n * puts + i).to_be_bytes().to_vec(),
                    value: vec![b'v'; value_len],
                })
                .collect();
            let record = DedupRecord {
                applied_through: WriteSeq(n + 1),
                failed: Vec::new(),
                last_write_ms: n,
            };
            let batch = WriteBatch {
                ops,
                records: vec![(ClientId(1), record)],
                log: None,
            };
            store.write(&batch).unwrap();
        }
    }

    /// Waits until fjall keeps at most `most` journals, which a new leader would replay.
    fn wait_for_journals(store: &FjallBackend, most: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.keyspace.journal_count() > most {
            assert!(
                std::time::Instant::now() < deadline,
                "{} journals kept once fjall had flushed, not at most {most}",
                store.keyspace.journal_count()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A burst of puts that never pauses, 30 MiB of them (seven memtables), leaves a new
    /// leader the journals of about one memtable to replay, not every journal of the
    /// burst: the records' memtable is sealed with the data's.
    #[test]
    fn journals_go_as_the_data_flushes_while_a_burst_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        burst_with_records(&store, 600, 50, 1024);
        // The active journal, the last sealed one, and the records' seal beside it.
        wait_for_journals(&store, 3);
    }

    /// Ten memtables of a MiB, each sealed (as checkpoints seal them), then a full one,
    /// commit while their flushes lag (here: no flush at all). fjall checks its journals
    /// when the full one is sealed: 21 then, two a seal, each counted at
    /// [`FJALL_JOURNAL_FILE_BYTES`]; at its own budget of 512 MiB it waited for flushes
    /// (here: for ever). The test catches that wait, not the half-second sleep before it.
    #[test]
    fn journals_waiting_for_flushes_do_not_halt_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            FjallBackend::open_configured(dir.path(), |config| config.flush_workers(0)).unwrap();
        let (send_done, done) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            // 15 MiB, well under the write buffer's bound.
            for _ in 0..10 {
                burst_with_records(&store, 32, 32, 1024);
                store.seal_memtables().unwrap();
            }
            burst_with_records(&store, 5 * 32, 32, 1024);
            let _ = send_done.send(store.keyspace.journal_count());
        });
        let journals = done
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the writes halted with their journals waiting for flushes");
        // The store closes before its directory goes.
        writer.join().unwrap();
        assert!(journals > 20, "only {journals} journals waited for a flush");
    }

    /// A seal that fails (its next journal cannot be created: a directory stands where it
    /// goes here, a full disk in life) refuses every write after it, whose memtable might
    /// never be flushed, until the store is opened again; the opening replays the journal,
    /// so nothing committed before is lost.
    #[test]
    fn a_failed_seal_refuses_the_writes_after_it_until_the_store_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        burst_with_records(&store, 2, 50, 1024);
        let journals = dir.path().join("fjall").join("journals");
        let newest = std::fs::read_dir(&journals)
            .unwrap()
            .filter_map(|entry| entry.unwrap().file_name().to_str()?.parse::<u64>().ok())
            .max()
            .expect("a journal");
        let next = journals.join((newest + 1).to_string());
        std::fs::create_dir(&next).unwrap();
        assert!(store.checkpoint().is_err(), "the seal fails");
        let refused = |store: &FjallBackend| {
            store
                .write(&WriteBatch {
                    ops: vec![WriteOp::Put {
                        key: b"after".to_vec(),
                        value: b"1".to_vec(),
                    }],
                    records: Vec::new(),
                    log: None,
                })
                .is_err()
        };
        assert!(refused(&store), "a write after the failed seal");
        assert!(store.checkpoint().is_err(), "and a checkpoint");
        drop(store);
        std::fs::remove_dir(&next).unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        assert!(!refused(&store), "opened again, it writes");
        assert_eq!(
            store.get(&99u64.to_be_bytes()).unwrap(),
            Some(vec![b'v'; 1024])
        );
    }

    /// A store closed after a checkpoint before close leaves the next open nothing to
    /// replay of the writes it had not flushed, unless they were too small to flush.
    #[test]
    fn a_checkpoint_before_close_leaves_the_next_open_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let replayed = |commits| {
            let store = FjallBackend::open(dir.path()).unwrap();
            burst_with_records(&store, commits, 50, 1024);
            store.checkpoint_before_close().unwrap();
            drop(store);
            let store = FjallBackend::open(dir.path()).unwrap();
            let replayed = store.data.tree.active_memtable_size();
            assert_eq!(
                store.get(&49u64.to_be_bytes()).unwrap(),
                Some(vec![b'v'; 1024])
            );
            replayed
        };
        assert_eq!(
            replayed(40),
            0,
            "40 commits of 50 KiB each flushed at close"
        );
        assert!(replayed(1) > 0, "one small commit left to the journal");
    }

    /// Commits each bigger than a memtable, so that every one seals the data's memtable
    /// alone, leave no more journals than small ones.
    #[test]
    fn journals_go_as_the_data_flushes_when_each_commit_fills_a_memtable() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        burst_with_records(&store, 8, 5, 1 << 20);
        wait_for_journals(&store, 3);
    }

    /// Commits whose only data is a change log entry bigger than a memtable (a group whose
    /// writes left no key, with its dedup record) seal the records' memtable too: each
    /// seals the data's memtable alone, from empty to empty.
    #[test]
    fn journals_go_as_the_data_flushes_when_log_entries_alone_fill_memtables() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        for n in 0..8 {
            let record = DedupRecord {
                applied_through: WriteSeq(n + 1),
                failed: Vec::new(),
                last_write_ms: n,
            };
            let batch = WriteBatch {
                ops: Vec::new(),
                records: vec![(ClientId(1), record)],
                log: Some(party_proto::LogAppend {
                    seq: CommitSeq(n),
                    entry: vec![b'e'; MAX_MEMTABLE_BYTES as usize + 1],
                }),
            };
            store.write(&batch).unwrap();
        }
        wait_for_journals(&store, 3);
    }

    /// After a burst of puts that filled several memtables, a checkpoint leaves a new
    /// leader one journal to replay.
    #[test]
    fn a_checkpoint_after_a_burst_retires_every_journal_but_the_current() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        burst_with_records(&store, 300, 50, 1024);
        // As a burst often ends: the data memtable just sealed, the records' small.
        store.data.rotate_memtable().unwrap();
        assert!(store.keyspace.journal_count() > 1, "a journal was sealed");
        store.checkpoint().unwrap();
        wait_for_journals(&store, 1);
    }

    /// Keys overwritten thousands of times since the last flush, every version still in
    /// the memtable: a scan gives each key once, with its value as of the iterator's
    /// snapshot, in order, from anywhere in the range, and reverse scans agree.
    #[test]
    fn a_scan_of_keys_overwritten_thousands_of_times_gives_each_once_as_of_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        let key = |k: u64| format!("hot/{k:02}").into_bytes();
        let put_round = |round: u64| {
            let ops = (0..16)
                .map(|k| WriteOp::Put {
                    key: key(k),
                    value: round.to_be_bytes().to_vec(),
                })
                .collect();
            let batch = WriteBatch {
                ops,
                records: Vec::new(),
                log: None,
            };
            store.write(&batch).unwrap();
        };
        for round in 0..4000 {
            put_round(round);
        }
        let range = |start| KeyRange {
            start,
            end: Bound::Excluded(b"hot0".to_vec()),
        };
        let whole = range(Bound::Included(b"hot/".to_vec()));
        let scan = store.iter(&whole, false).unwrap();
        let from_middle = store.iter(&range(Bound::Excluded(key(7))), false).unwrap();
        let reverse = store.iter(&whole, true).unwrap();
        // Written after the iterators opened: none of them sees it.
        put_round(4000);
        let newest = 3999u64.to_be_bytes().to_vec();
        let entries: Vec<Entry> = scan.map(Result::unwrap).collect();
        let want: Vec<Entry> = (0..16)
            .map(|k| Entry {
                key: key(k),
                value: newest.clone(),
            })
            .collect();
        assert_eq!(entries, want);
        let entries: Vec<Entry> = from_middle.map(Result::unwrap).collect();
        assert_eq!(entries, want[8..]);
        let mut entries: Vec<Entry> = reverse.map(Result::unwrap).collect();
        entries.reverse();
        assert_eq!(entries, want);
        assert_eq!(
            store.data.segment_count(),
            0,
            "every version still in memtables"
        );
    }

    fn puts(keys: std::ops::Range<u64>, value: &[u8]) -> WriteBatch {
        let ops = keys
            .map(|n| WriteOp::Put {
                key: format!("key/{n:05}").into_bytes(),
                value: value.to_vec(),
            })
            .collect();
        WriteBatch {
            ops,
            records: Vec::new(),
            log: None,
        }
    }

    /// Seals the memtables and waits until fjall has flushed them into tables.
    pub(super) fn flush(store: &FjallBackend) {
        store.data.rotate_memtable().unwrap();
        store.records.rotate_memtable().unwrap();
        wait_for_flushes(store);
    }

    /// Waits until fjall has flushed every sealed memtable (it tells no event of it).
    fn wait_for_flushes(store: &FjallBackend) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while store.data.tree.sealed_memtable_count() + store.records.tree.sealed_memtable_count()
            > 0
        {
            assert!(std::time::Instant::now() < deadline, "fjall did not flush");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// A scan of big values buffers about a MiB of them, not [`REFILL`] entries (a GiB of
    /// 1 MiB values), and still reads each once, in order, forward and backward.
    #[test]
    fn a_scan_of_big_values_buffers_about_a_mebibyte_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        let value = vec![b'v'; 64 << 10];
        for n in 0..48 {
            store.write(&puts(n..n + 1, &value)).unwrap();
        }
        for reverse in [false, true] {
            let mut scan = SnapshotIter {
                snapshot: store.data.snapshot(),
                rest: Some(KeyRange::all()),
                reverse,
                buffer: Vec::new().into_iter(),
            };
            let first = scan.next().unwrap().unwrap();
            let buffered = scan.buffer.len() + 1;
            assert_eq!(buffered, 16, "64 KiB values buffered at once");
            let mut keys = vec![first.key];
            keys.extend(scan.map(|entry| entry.unwrap().key));
            let mut want: Vec<Vec<u8>> = (0..48)
                .map(|n| format!("key/{n:05}").into_bytes())
                .collect();
            if reverse {
                want.reverse();
            }
            assert_eq!(keys, want);
        }
    }

    /// fjall drops the versions no snapshot can see when it flushes or compacts, below a
    /// horizon just before the oldest open snapshot's instant. lsm-tree 2.10.4 dropped one too many: the newest
    /// version before that instant, when the key had been written again since, which is
    /// the very version the snapshot reads (fjall-rs/lsm-tree#321). An iterator that read
    /// on across such a flush lost every key overwritten meanwhile.
    #[test]
    fn an_iterator_reads_its_snapshot_on_across_flushes_of_keys_overwritten_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        let keys = 3 * REFILL as u64;
        store.write(&puts(0..keys, b"old")).unwrap();
        for n in keys..keys + 10 {
            store.write(&puts(n..n + 1, b"other")).unwrap();
        }
        let mut scan = store.iter(&KeyRange::all(), false).unwrap();
        let first = scan.next().unwrap().unwrap();
        // Every key the iterator has not buffered yet is overwritten, and other scans come
        // and go (fjall moves its horizon up to the open snapshot as they close).
        store.write(&puts(REFILL as u64..keys, b"new")).unwrap();
        for _ in 0..100 {
            drop(store.iter(&KeyRange::all(), false).unwrap());
        }
        flush(&store);
        let rest: Vec<Entry> = scan.map(Result::unwrap).collect();
        assert_eq!(rest.len() as u64, keys + 9, "keys lost by the iterator");
        assert_eq!(first.value, b"old");
        assert!(rest[..keys as usize - 1]
            .iter()
            .all(|entry| entry.value == b"old"));
        assert_eq!(store.get(b"key/00000").unwrap().unwrap(), b"old");
        assert_eq!(store.get(b"key/03000").unwrap().unwrap(), b"new");
    }

    /// lsm-tree 2.10.4 dropped every tombstone that reached the last level, also when an
    /// older value of its key was kept (for a snapshot, or because no snapshot had closed
    /// yet): the deleted value came back.
    #[test]
    fn a_deleted_key_stays_deleted_when_compaction_reaches_the_last_level() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        store.write(&puts(0..10, b"value")).unwrap();
        flush(&store);
        let delete = WriteBatch {
            ops: vec![WriteOp::Del {
                key: b"key/00003".to_vec(),
            }],
            records: Vec::new(),
            log: None,
        };
        store.write(&delete).unwrap();
        flush(&store);
        store.data.major_compact().unwrap();
        assert_eq!(store.get(b"key/00003").unwrap(), None);
        let keys: Vec<Vec<u8>> = store
            .iter(&KeyRange::all(), false)
            .unwrap()
            .map(|entry| entry.unwrap().key)
            .collect();
        assert_eq!(keys.len(), 9);
        assert!(!keys.contains(&b"key/00003".to_vec()));
    }

    /// Keys overwritten thousands of times after one scan (whose snapshot alone would
    /// hold fjall's horizon where it was): once a checkpoint's flush has run, the store
    /// holds the versions of at most the last 50 commits and one of each key before them,
    /// not every one written.
    #[test]
    fn a_checkpoint_flush_keeps_one_version_of_a_key_written_over_thousands_of_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        assert_eq!(store.iter(&KeyRange::all(), false).unwrap().count(), 0);
        for round in 0..2000u64 {
            store.write(&puts(0..16, &round.to_be_bytes())).unwrap();
        }
        assert!(
            store.data.approximate_len() >= 32_000,
            "all in the memtable"
        );
        store.checkpoint().unwrap();
        flush(&store);
        let versions = store.data.approximate_len();
        assert!(versions <= 16 * 64, "{versions} versions of 16 keys kept");
        assert_eq!(
            store.get(b"key/00007").unwrap().unwrap(),
            1999u64.to_be_bytes()
        );
    }

    /// The same without checkpoints: the tables fjall flushes as memtables fill keep about
    /// the versions written into their last eighth, not every one written.
    #[test]
    fn the_tables_a_long_burst_of_overwrites_fills_keep_few_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallBackend::open(dir.path()).unwrap();
        assert_eq!(store.iter(&KeyRange::all(), false).unwrap().count(), 0);
        let value = [7u8; 1024];
        let rounds = 2000;
        for _ in 0..rounds {
            store.write(&puts(0..16, &value)).unwrap();
        }
        wait_for_flushes(&store);
        assert!(store.data.segment_count() > 0, "fjall flushed");
        let versions = store.data.approximate_len();
        assert!(
            versions < 16 * rounds / 2,
            "{versions} versions of 16 keys kept"
        );
    }
}

//! The fjall backend against a model (a sorted map, copied for each iterator's snapshot)
//! through random writes, deletes, clears, iterators read a piece at a time, and the events
//! that make fjall drop old versions: snapshots closing, checkpoints, flushes and major
//! compactions. Guards the patched lsm-tree (vendor/lsm-tree/PATCHED.md): its garbage
//! collection must never drop what a reader can still see, nor bring back what was deleted.

use std::collections::BTreeMap;
use std::ops::Bound;

use party_proto::wire::{Entry, WriteOp};
use party_proto::KeyRange;
use proptest::prelude::*;

use super::tests::flush;
use super::{FjallBackend, REFILL};
use crate::batch::WriteBatch;
use crate::iter::EntryIter;
use crate::Backend;

/// Keys spread over three refills of an iterator, so that reads cross refills.
const KEYS: usize = 3 * REFILL;

fn key(n: usize) -> Vec<u8> {
    format!("key/{n:05}").into_bytes()
}

/// A key near the edges of the refills, or anywhere.
fn any_key() -> impl Strategy<Value = usize> {
    prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            REFILL - 1,
            REFILL,
            REFILL + 1,
            2 * REFILL,
            KEYS - 1
        ]),
        0..KEYS,
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Put(usize),
    /// The same key written this many times, one commit each.
    Overwrite(usize, usize),
    Delete(usize),
    Clear(usize, usize),
    Open {
        reverse: bool,
    },
    /// Reads on from one of the open iterators.
    Read {
        iter: usize,
        entries: usize,
    },
    Close(usize),
    /// Iterators opened and closed: fjall moves its horizon as snapshots close.
    Churn,
    Checkpoint,
    Flush,
    MajorCompaction,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => any_key().prop_map(Step::Put),
        3 => (any_key(), 1..200usize).prop_map(|(key, times)| Step::Overwrite(key, times)),
        2 => any_key().prop_map(Step::Delete),
        1 => (any_key(), 1..64usize).prop_map(|(start, len)| Step::Clear(start, len)),
        2 => any::<bool>().prop_map(|reverse| Step::Open { reverse }),
        4 => (0..4usize, 1..2 * REFILL).prop_map(|(iter, entries)| Step::Read { iter, entries }),
        1 => (0..4usize).prop_map(Step::Close),
        2 => Just(Step::Churn),
        1 => Just(Step::Checkpoint),
        2 => Just(Step::Flush),
        1 => Just(Step::MajorCompaction),
    ]
}

/// An open iterator, and what it has still to give (the model as it was when it opened).
struct Reader {
    iter: EntryIter,
    rest: std::vec::IntoIter<Entry>,
}

struct Run {
    store: FjallBackend,
    model: BTreeMap<Vec<u8>, Vec<u8>>,
    readers: Vec<Reader>,
    /// Every value written is new: a reader given an older or newer version notices.
    version: u64,
}

impl Run {
    fn write(&mut self, ops: Vec<WriteOp>) {
        for op in &ops {
            match op {
                WriteOp::Put { key, value } => {
                    self.model.insert(key.clone(), value.clone());
                }
                WriteOp::Del { key } => {
                    self.model.remove(key);
                }
                WriteOp::Clear { range } => self.model.retain(|key, _| !range.contains(key)),
                _ => unreachable!("not generated"),
            }
        }
        let batch = WriteBatch {
            ops,
            records: Vec::new(),
            log: None,
        };
        self.store.write(&batch).unwrap();
    }

    fn put(&mut self, n: usize) {
        self.version += 1;
        let value = self.version.to_be_bytes().to_vec();
        self.write(vec![WriteOp::Put { key: key(n), value }]);
    }

    fn open(&mut self, reverse: bool) {
        let mut rest = entries(&self.model);
        if reverse {
            rest.reverse();
        }
        let iter = self.store.iter(&KeyRange::all(), reverse).unwrap();
        self.readers.push(Reader {
            iter,
            rest: rest.into_iter(),
        });
    }

    fn apply(&mut self, step: Step) -> Result<(), TestCaseError> {
        match step {
            Step::Put(n) => self.put(n),
            Step::Overwrite(n, times) => {
                for _ in 0..times {
                    self.put(n);
                }
            }
            Step::Delete(n) => self.write(vec![WriteOp::Del { key: key(n) }]),
            Step::Clear(start, len) => {
                let range = KeyRange {
                    start: Bound::Included(key(start)),
                    end: Bound::Excluded(key(start + len)),
                };
                self.write(vec![WriteOp::Clear { range }]);
            }
            Step::Open { reverse } => {
                if self.readers.len() < 4 {
                    self.open(reverse);
                }
            }
            Step::Read { iter, entries } => {
                if let Some(reader) = self.readers.get_mut(iter) {
                    for _ in 0..entries {
                        let read = reader.iter.next().map(Result::unwrap);
                        let want = reader.rest.next();
                        prop_assert!(
                            read == want,
                            "an iterator read {:?} for {:?}",
                            read.as_ref().map(show),
                            want.as_ref().map(show)
                        );
                    }
                }
            }
            Step::Close(iter) => {
                if iter < self.readers.len() {
                    self.readers.remove(iter);
                }
            }
            Step::Churn => {
                for _ in 0..60 {
                    drop(self.store.iter(&KeyRange::all(), false).unwrap());
                }
            }
            Step::Checkpoint => self.store.checkpoint().unwrap(),
            Step::Flush => flush(&self.store),
            Step::MajorCompaction => self.store.data.major_compact().unwrap(),
        }
        Ok(())
    }

    /// Every reader read to its end, gets of every key, and a whole scan each way.
    fn check_all(&mut self) -> Result<(), TestCaseError> {
        for reader in &mut self.readers {
            let read: Vec<Entry> = reader.iter.by_ref().map(Result::unwrap).collect();
            let want: Vec<Entry> = reader.rest.by_ref().collect();
            agree(&read, &want, "an iterator's rest")?;
        }
        for n in 0..KEYS {
            prop_assert_eq!(
                self.store.get(&key(n)).unwrap(),
                self.model.get(&key(n)).cloned()
            );
        }
        for reverse in [false, true] {
            let scan: Vec<Entry> = self
                .store
                .iter(&KeyRange::all(), reverse)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut want: Vec<Entry> = entries(&self.model);
            if reverse {
                want.reverse();
            }
            agree(&scan, &want, "a scan")?;
        }
        Ok(())
    }
}

fn entries(model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Entry> {
    model
        .iter()
        .map(|(key, value)| Entry {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Fails at the first entry that differs (the whole lists are thousands long).
fn agree(read: &[Entry], want: &[Entry], what: &str) -> Result<(), TestCaseError> {
    let at = read.iter().zip(want).position(|(read, want)| read != want);
    let at = at.unwrap_or(read.len().min(want.len()));
    prop_assert!(
        read.len() == want.len() && at == read.len(),
        "{what}: {} entries for {}; from entry {at}: {:?} for {:?}",
        read.len(),
        want.len(),
        read.get(at).map(show),
        want.get(at).map(show),
    );
    Ok(())
}

fn show(entry: &Entry) -> String {
    format!(
        "{} = {:?}",
        String::from_utf8_lossy(&entry.key),
        entry.value
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_model_through_flushes_and_compactions(
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Run {
            store: FjallBackend::open(dir.path()).unwrap(),
            model: BTreeMap::new(),
            readers: Vec::new(),
            version: 0,
        };
        let fill = (0..KEYS)
            .map(|n| WriteOp::Put { key: key(n), value: b"first".to_vec() })
            .collect();
        run.write(fill);
        for step in steps {
            run.apply(step)?;
        }
        run.check_all()?;
    }
}

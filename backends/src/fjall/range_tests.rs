//! Range reads over keys written many times, against models. Guards the patched lsm-tree's
//! memtable range read (vendor/lsm-tree/PATCHED.md, change 3), which yields each key once at
//! its newest visible version and seeks past the others: first the read itself, exactly
//! (the MVCC stream above it would hide a key given twice or an older version given as
//! well), then fjall's reads through it, with iterators kept open across writes and flushes.

use std::collections::BTreeMap;
use std::ops::Bound;

use fjall::{Config, PartitionCreateOptions, PartitionHandle};
use lsm_tree::{InternalValue, Memtable, SeqNo, ValueType};
use proptest::prelude::*;

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

const KEYS: usize = 12;

fn key(n: usize) -> Vec<u8> {
    format!("k{n:02}").into_bytes()
}

/// A bound on a key, or between two keys, or none.
fn any_bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    let at = prop_oneof![
        (0..KEYS).prop_map(key),
        (0..KEYS).prop_map(|n| [key(n), b"+".to_vec()].concat()),
    ];
    prop_oneof![
        at.clone().prop_map(Bound::Included),
        at.prop_map(Bound::Excluded),
        Just(Bound::Unbounded),
    ]
}

/// How many versions to write at once: around the read's 8 steps before a seek, or many.
fn any_times() -> impl Strategy<Value = usize> {
    prop_oneof![prop::sample::select(vec![1, 2, 7, 8, 9, 10]), 1..40usize]
}

/// Bounds a `BTreeMap` range refuses (it panics): start after end, or one key excluded at
/// both ends.
fn refused(bounds: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> bool {
    match bounds {
        (Bound::Excluded(start), Bound::Excluded(end)) => start >= end,
        (
            Bound::Included(start) | Bound::Excluded(start),
            Bound::Included(end) | Bound::Excluded(end),
        ) => start > end,
        _ => false,
    }
}

/// Reads `range` from the ends `ends` names (`true`: the back), with `between` called after
/// each read, then from the front to the end; in key order.
fn from_both_ends<T>(
    range: &mut impl DoubleEndedIterator<Item = T>,
    ends: &[bool],
    between: impl FnMut(),
) -> Vec<T> {
    let (mut front, mut back) = (Vec::new(), Vec::new());
    take_from_ends(range, ends, &mut front, &mut back, between);
    front.extend(range);
    front.extend(back.into_iter().rev());
    front
}

/// Reads `range` from the ends `ends` names onto `front` and `back`, with `between` called
/// after each read, until the ends are done or the range is.
fn take_from_ends<T>(
    range: &mut impl DoubleEndedIterator<Item = T>,
    ends: &[bool],
    front: &mut Vec<T>,
    back: &mut Vec<T>,
    mut between: impl FnMut(),
) {
    for &from_back in ends {
        let read = if from_back {
            range.next_back().map(|item| back.push(item))
        } else {
            range.next().map(|item| front.push(item))
        };
        between();
        if read.is_none() {
            break;
        }
    }
}

mod memtable {
    //! The memtable's read alone, exactly: every key in range once, at its newest version
    //! below the read's sequence number, tombstones included.

    use super::*;

    /// A version as the read gives it: key, sequence number, tombstone or not, value.
    type Version = (Vec<u8>, SeqNo, bool, Vec<u8>);

    fn version(item: &InternalValue) -> Version {
        (
            item.key.user_key.to_vec(),
            item.key.seqno,
            item.key.is_tombstone(),
            item.value.to_vec(),
        )
    }

    fn insert(memtable: &Memtable, written: &mut Vec<Version>, n: usize, delete: bool) {
        let seqno = written.len() as SeqNo;
        let (value_type, value) = if delete {
            (ValueType::Tombstone, Vec::new())
        } else {
            (ValueType::Value, seqno.to_be_bytes().to_vec())
        };
        memtable.insert(InternalValue::from_components(
            key(n),
            value.clone(),
            seqno,
            value_type,
        ));
        written.push((key(n), seqno, delete, value));
    }

    /// The newest version of each key in `bounds` below `seqno` (the newest, without one).
    fn model(
        written: &[Version],
        bounds: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
        seqno: Option<SeqNo>,
    ) -> Vec<Version> {
        let mut newest = BTreeMap::new();
        for version in written {
            if seqno.is_none_or(|seqno| version.1 < seqno) {
                newest.insert(version.0.clone(), version.clone());
            }
        }
        newest
            .range(bounds.clone())
            .map(|(_, v)| v.clone())
            .collect()
    }

    #[derive(Debug, Clone)]
    struct Read {
        /// The read's sequence number, as a share of those written; none: no snapshot.
        at: Option<f64>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        ends: Vec<bool>,
        /// Newer versions written while the read is under way, after each read.
        meanwhile: Vec<usize>,
    }

    fn read() -> impl Strategy<Value = Read> {
        (
            prop::option::of(0.0..=1.0f64),
            any_bound(),
            any_bound(),
            prop::collection::vec(any::<bool>(), 0..2 * KEYS),
            prop::collection::vec(0..KEYS + 2, 0..8),
        )
            .prop_map(|(at, start, end, ends, meanwhile)| Read {
                at,
                start,
                end,
                ends,
                meanwhile,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn a_memtable_range_read_gives_each_key_once_at_its_newest_visible_version(
            writes in prop::collection::vec((0..KEYS, any_times(), prop::bool::weighted(0.2)), 0..16),
            reads in prop::collection::vec(read(), 1..6),
        ) {
            let memtable = Memtable::default();
            let mut written = Vec::new();
            for (n, times, delete) in writes {
                for _ in 0..times {
                    insert(&memtable, &mut written, n, delete);
                }
            }
            for read in reads {
                let bounds = (read.start.clone(), read.end.clone());
                let seqno = read.at.map(|share| (share * written.len() as f64) as SeqNo);
                // Bounds a BTreeMap refuses hold nothing; the read gives nothing for them.
                let want = if refused(&bounds) {
                    Vec::new()
                } else {
                    model(&written, &bounds, seqno)
                };
                let slices = (
                    bounds.0.clone().map(Into::into),
                    bounds.1.clone().map(Into::into),
                );
                let mut range = memtable.visible_range(slices, seqno);
                // Versions written meanwhile are newer than the read (fjall gives a snapshot
                // an instant and writes after it): none may show. Without a sequence number
                // the read sees whatever it meets, so nothing is written meanwhile then.
                let mut meanwhile = read.meanwhile.iter().filter(|_| seqno.is_some());
                let mut later = written.clone();
                let got: Vec<Version> = from_both_ends(&mut range, &read.ends, || {
                    if let Some(&n) = meanwhile.next() {
                        insert(&memtable, &mut later, n % KEYS, n >= KEYS);
                    }
                })
                .iter()
                .map(version)
                .collect();
                prop_assert_eq!(got, want, "read {:?} at {:?}", read, seqno);
                written = later;
            }
        }
    }
}

mod store {
    //! fjall's reads (memtables, sealed memtables and tables merged) of the present and of
    //! snapshots, with snapshot iterators kept open while keys are written and flushed.

    use super::*;

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    #[derive(Debug, Clone)]
    enum Step {
        /// The key written this many times, one commit each.
        Overwrite(usize, usize),
        Delete(usize),
        /// A snapshot of the present kept for later reads (at most four).
        Snapshot,
        /// The memtable sealed: sealed memtables are read as well until fjall flushes them.
        Seal,
        /// The memtable sealed and flushed into a table.
        Flush,
        Read {
            /// The present, or one of the kept snapshots.
            snapshot: Option<usize>,
            start: Bound<Vec<u8>>,
            end: Bound<Vec<u8>>,
            ends: Vec<bool>,
        },
        /// An iterator of a kept snapshot opened and read from the ends `ends` names; it
        /// stays open, and later steps read on from it.
        Open {
            snapshot: usize,
            ends: Vec<bool>,
        },
        /// Reads on from an open iterator, from these ends.
        ReadOn {
            iter: usize,
            ends: Vec<bool>,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let ends = || prop::collection::vec(any::<bool>(), 0..KEYS);
        prop_oneof![
            4 => (0..KEYS, any_times()).prop_map(|(key, times)| Step::Overwrite(key, times)),
            1 => (0..KEYS).prop_map(Step::Delete),
            1 => Just(Step::Snapshot),
            1 => Just(Step::Seal),
            1 => Just(Step::Flush),
            2 => (prop::option::of(0..4usize), any_bound(), any_bound(), ends())
                .prop_map(|(snapshot, start, end, ends)| Step::Read { snapshot, start, end, ends }),
            1 => (0..4usize, ends()).prop_map(|(snapshot, ends)| Step::Open { snapshot, ends }),
            2 => (0..4usize, ends()).prop_map(|(iter, ends)| Step::ReadOn { iter, ends }),
        ]
    }

    type Entries =
        Box<dyn DoubleEndedIterator<Item = Result<(fjall::Slice, fjall::Slice), lsm_tree::Error>>>;

    /// An open iterator: what it read from each end, and what its snapshot holds.
    struct Open {
        iter: Entries,
        front: Pairs,
        back: Pairs,
        model: Model,
    }

    struct Run {
        data: PartitionHandle,
        model: Model,
        snapshots: Vec<(fjall::Snapshot, Model)>,
        open: Vec<Open>,
        version: u64,
    }

    fn pair(
        item: Result<(fjall::Slice, fjall::Slice), impl std::fmt::Debug>,
    ) -> (Vec<u8>, Vec<u8>) {
        let (key, value) = item.unwrap();
        (key.to_vec(), value.to_vec())
    }

    fn pairs(model: &Model, bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> Pairs {
        model
            .range(bounds)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    }

    impl Run {
        fn apply(&mut self, step: Step) -> Result<(), TestCaseError> {
            match step {
                Step::Overwrite(n, times) => {
                    for _ in 0..times {
                        self.version += 1;
                        let value = self.version.to_be_bytes().to_vec();
                        self.data.insert(key(n), value.clone()).unwrap();
                        self.model.insert(key(n), value);
                    }
                }
                Step::Delete(n) => {
                    self.data.remove(key(n)).unwrap();
                    self.model.remove(&key(n));
                }
                Step::Snapshot => {
                    if self.snapshots.len() < 4 {
                        self.snapshots
                            .push((self.data.snapshot(), self.model.clone()));
                    }
                }
                Step::Seal => {
                    self.data.rotate_memtable().unwrap();
                }
                Step::Flush => self.data.rotate_memtable_and_wait().unwrap(),
                Step::Read {
                    snapshot,
                    start,
                    end,
                    ends,
                } => {
                    let bounds = (start, end);
                    if refused(&bounds) {
                        return Ok(());
                    }
                    let (read, model) = match snapshot.and_then(|at| self.snapshots.get(at)) {
                        Some((snapshot, model)) => {
                            let mut range = snapshot.range(bounds.clone()).map(pair);
                            (from_both_ends(&mut range, &ends, || ()), model)
                        }
                        None => {
                            let mut range = self.data.range(bounds.clone()).map(pair);
                            (from_both_ends(&mut range, &ends, || ()), &self.model)
                        }
                    };
                    prop_assert_eq!(
                        read,
                        pairs(model, bounds.clone()),
                        "a read of {:?} taking from {:?}",
                        bounds,
                        ends
                    );
                }
                Step::Open { snapshot, ends } => {
                    if let Some((snapshot, model)) = self.snapshots.get(snapshot) {
                        if self.open.len() < 4 {
                            let iter: Entries = Box::new(snapshot.iter());
                            let model = model.clone();
                            self.open.push(Open {
                                iter,
                                front: Vec::new(),
                                back: Vec::new(),
                                model,
                            });
                            let at = self.open.len() - 1;
                            self.read_on(at, &ends);
                        }
                    }
                }
                Step::ReadOn { iter, ends } => {
                    if iter < self.open.len() {
                        self.read_on(iter, &ends);
                    }
                }
            }
            Ok(())
        }

        fn read_on(&mut self, at: usize, ends: &[bool]) {
            let open = &mut self.open[at];
            let mut entries = (&mut open.iter).map(pair);
            take_from_ends(&mut entries, ends, &mut open.front, &mut open.back, || ());
        }

        /// Every open iterator read to its end agrees with its snapshot.
        fn finish(self) -> Result<(), TestCaseError> {
            for open in self.open {
                let Open {
                    iter,
                    mut front,
                    back,
                    model,
                } = open;
                front.extend(iter.map(pair));
                front.extend(back.into_iter().rev());
                prop_assert_eq!(front, pairs(&model, (Bound::Unbounded, Bound::Unbounded)));
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn range_reads_of_keys_written_many_times_agree_with_a_model(
            steps in prop::collection::vec(step(), 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let keyspace = Config::new(dir.path()).open().unwrap();
            let data = keyspace
                .open_partition("data", PartitionCreateOptions::default())
                .unwrap();
            let mut run = Run {
                data,
                model: Model::new(),
                snapshots: Vec::new(),
                open: Vec::new(),
                version: 0,
            };
            for step in steps {
                run.apply(step)?;
            }
            run.finish()?;
        }
    }
}

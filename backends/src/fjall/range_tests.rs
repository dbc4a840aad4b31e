//! fjall's range reads against a model, over keys written many times each: reads of the
//! present and of older snapshots, with any bounds, taken from both ends at once. Guards the
//! patched lsm-tree's memtable range read (vendor/lsm-tree/PATCHED.md, change 3), which
//! yields each key once at its newest visible version and seeks past the others.

use std::collections::BTreeMap;
use std::ops::Bound;

use fjall::{Config, PartitionCreateOptions, PartitionHandle, Snapshot};
use proptest::prelude::*;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

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

#[derive(Debug, Clone)]
enum Step {
    /// The key written this many times, one commit each: more versions than the read
    /// steps over before it seeks.
    Overwrite(usize, usize),
    Delete(usize),
    /// A snapshot of the present kept for later reads (at most four).
    Snapshot,
    /// The memtable sealed: sealed memtables are read as well until fjall flushes them.
    Seal,
    Read {
        /// The present, or one of the kept snapshots.
        snapshot: Option<usize>,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        /// Which end each read takes from (`true`: the back), then the front to the end.
        ends: Vec<bool>,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..KEYS, 1..40usize).prop_map(|(key, times)| Step::Overwrite(key, times)),
        1 => (0..KEYS).prop_map(Step::Delete),
        1 => Just(Step::Snapshot),
        1 => Just(Step::Seal),
        3 => (
            prop::option::of(0..4usize),
            any_bound(),
            any_bound(),
            prop::collection::vec(any::<bool>(), 0..2 * KEYS),
        )
            .prop_map(|(snapshot, start, end, ends)| Step::Read { snapshot, start, end, ends }),
    ]
}

struct Run {
    data: PartitionHandle,
    model: Model,
    snapshots: Vec<(Snapshot, Model)>,
    version: u64,
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
            Step::Read {
                snapshot,
                start,
                end,
                ends,
            } => {
                if start_after_end(&start, &end) {
                    // fjall's skiplist refuses such a range (a panic, as BTreeMap's does).
                    return Ok(());
                }
                let bounds = (start, end);
                let (read, model) = match snapshot.and_then(|at| self.snapshots.get(at)) {
                    Some((snapshot, model)) => {
                        (from_both_ends(snapshot.range(bounds.clone()), &ends), model)
                    }
                    None => (
                        from_both_ends(self.data.range(bounds.clone()), &ends),
                        &self.model,
                    ),
                };
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .range(bounds.clone())
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                prop_assert_eq!(read, want, "a read of {:?} taking from {:?}", bounds, ends);
            }
        }
        Ok(())
    }
}

fn start_after_end(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (
            Bound::Included(start) | Bound::Excluded(start),
            Bound::Included(end) | Bound::Excluded(end),
        ) => start >= end,
        _ => false,
    }
}

/// The entries read from the ends `ends` names, then from the front to the end, put back in
/// key order.
fn from_both_ends<E: std::fmt::Debug>(
    mut range: impl DoubleEndedIterator<Item = Result<(fjall::Slice, fjall::Slice), E>>,
    ends: &[bool],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let pair = |item: Result<(fjall::Slice, fjall::Slice), E>| {
        let (key, value) = item.unwrap();
        (key.to_vec(), value.to_vec())
    };
    let (mut front, mut back) = (Vec::new(), Vec::new());
    for &from_back in ends {
        let read = if from_back {
            range.next_back().map(|item| back.push(pair(item)))
        } else {
            range.next().map(|item| front.push(pair(item)))
        };
        if read.is_none() {
            break;
        }
    }
    front.extend(range.map(pair));
    front.extend(back.into_iter().rev());
    front
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn range_reads_of_keys_written_many_times_agree_with_a_model(
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let keyspace = Config::new(dir.path()).open().unwrap();
        let data = keyspace
            .open_partition("data", PartitionCreateOptions::default())
            .unwrap();
        let mut run = Run { data, model: Model::new(), snapshots: Vec::new(), version: 0 };
        for step in steps {
            run.apply(step)?;
        }
    }
}

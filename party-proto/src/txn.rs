//! Transactions at commit: the reads the writer makes to check them, and the check.
//!
//! A [`WriteOp::Transaction`] carries what its caller read ([`ReadCheck`]s: keys with their
//! values, ranges with their entries) and what it writes. The leader's writer applies it
//! only if every read would read the same at the transaction's place in the commit order,
//! and answers [`Response::Conflict`] otherwise. Before forming a group that holds
//! transactions, the writer asks for what their reads cover ([`CheckRead`]), as the store
//! holds it then: a [`Snapshot`] of the store before the group.
//!
//! Reads are compared by value. A transaction whose reads all read the same at its commit
//! could have run whole at that instant, so the committed transactions are serializable in
//! commit order; a value changed and changed back meanwhile does not matter. A range read
//! compares its whole entry list, so a key that appeared in the range since (a phantom)
//! fails it too.
//!
//! The snapshot shows the store before the group, not after the group's earlier writes: a
//! transaction that read a key an earlier write of the group writes ([`GroupWrites`]) is
//! left for the next group, checked against a snapshot taken after this one commits.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;
use std::ops::Bound;

use crate::error::ErrorCode;
use crate::range::KeyRange;
use crate::wire::{BatchOp, Entry, ReadCheck, Response, WriteOp};

/// What the writer asks the store for, to check transactions' reads.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CheckRead {
    /// A key's value.
    Key(Vec<u8>),
    /// The first `limit` entries of a range, in ascending key order: one more than any
    /// transaction saw there, which is enough to tell whether the range still holds
    /// exactly what it saw.
    Range { range: KeyRange, limit: usize },
}

/// The store's answer to one [`CheckRead`].
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CheckValue {
    Value(Option<Vec<u8>>),
    Entries(Vec<Entry>),
}

/// The reads to make for the transactions among `ops`, each key and range once.
pub fn reads_to_check<'a>(ops: impl IntoIterator<Item = &'a WriteOp>) -> Vec<CheckRead> {
    let mut keys = BTreeSet::new();
    let mut ranges: Vec<(KeyRange, usize)> = Vec::new();
    for op in ops {
        let WriteOp::Transaction { reads, .. } = op else {
            continue;
        };
        for read in reads {
            match read {
                ReadCheck::Key { key, .. } => {
                    keys.insert(key.clone());
                }
                ReadCheck::Range { range, entries } => {
                    let limit = entries.len() + 1;
                    match ranges.iter_mut().find(|(known, _)| known == range) {
                        Some((_, known_limit)) => *known_limit = (*known_limit).max(limit),
                        None => ranges.push((range.clone(), limit)),
                    }
                }
            }
        }
    }
    keys.into_iter()
        .map(CheckRead::Key)
        .chain(
            ranges
                .into_iter()
                .map(|(range, limit)| CheckRead::Range { range, limit }),
        )
        .collect()
}

/// A read of a transaction that no longer holds: `key` holds `current` now.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub key: Vec<u8>,
    pub current: Option<Vec<u8>>,
}

impl From<Conflict> for Response {
    fn from(conflict: Conflict) -> Self {
        Response::Conflict {
            key: conflict.key,
            current: conflict.current,
        }
    }
}

/// What the store held before the group being formed, for the reads of its transactions.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct Snapshot {
    keys: FxHashMap<Vec<u8>, Option<Vec<u8>>>,
    ranges: Vec<(KeyRange, Vec<Entry>)>,
}

impl Snapshot {
    /// The answers to `reads`, one per read in order.
    pub fn new(reads: Vec<CheckRead>, values: Vec<CheckValue>) -> Result<Self, ErrorCode> {
        if reads.len() != values.len() {
            return Err(ErrorCode::Malformed(format!(
                "{} answers to {} reads for transaction checks",
                values.len(),
                reads.len()
            )));
        }
        let mut snapshot = Snapshot::default();
        for (read, value) in reads.into_iter().zip(values) {
            match (read, value) {
                (CheckRead::Key(key), CheckValue::Value(value)) => {
                    snapshot.keys.insert(key, value);
                }
                (CheckRead::Range { range, .. }, CheckValue::Entries(entries)) => {
                    snapshot.ranges.push((range, entries));
                }
                (read, _) => {
                    return Err(ErrorCode::Malformed(format!(
                        "an answer of the wrong kind to {read:?}"
                    )))
                }
            }
        }
        Ok(snapshot)
    }

    /// The first of `reads` that does not read the same in this snapshot, if any. A read
    /// the snapshot has no answer for counts as not holding (a key that was not asked for
    /// cannot be vouched for).
    pub fn conflict(&self, reads: &[ReadCheck]) -> Option<Conflict> {
        reads.iter().find_map(|read| match read {
            ReadCheck::Key { key, value } => {
                let current = self.keys.get(key);
                (current != Some(value)).then(|| Conflict {
                    key: key.clone(),
                    current: current.cloned().flatten(),
                })
            }
            ReadCheck::Range { range, entries } => {
                match self.ranges.iter().find(|(known, _)| known == range) {
                    Some((_, now)) => first_difference(entries, now),
                    None => Some(Conflict {
                        key: Vec::new(),
                        current: None,
                    }),
                }
            }
        })
    }
}

/// Where the entries a range read saw and those it holds now first differ. `now` holds at
/// least one entry more than `seen` when the range has more.
fn first_difference(seen: &[Entry], now: &[Entry]) -> Option<Conflict> {
    let now = &now[..now.len().min(seen.len() + 1)];
    for at in 0..seen.len().max(now.len()) {
        let conflict = match (seen.get(at), now.get(at)) {
            (Some(seen), Some(now)) if seen == now => continue,
            // The smaller key is where they part: a key gone, or one that appeared.
            (Some(seen), Some(now)) if seen.key < now.key => Conflict {
                key: seen.key.clone(),
                current: None,
            },
            (_, Some(now)) => Conflict {
                key: now.key.clone(),
                current: Some(now.value.clone()),
            },
            (Some(seen), None) => Conflict {
                key: seen.key.clone(),
                current: None,
            },
            (None, None) => break,
        };
        return Some(conflict);
    }
    None
}

/// The keys the writes admitted to a group so far write, to tell whether a transaction
/// read any of them.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct GroupWrites {
    keys: BTreeSet<Vec<u8>>,
    cleared: Vec<KeyRange>,
}

impl GroupWrites {
    pub fn add(&mut self, op: &WriteOp) {
        let steps = match op {
            WriteOp::Put { key, .. } | WriteOp::Del { key } => {
                self.keys.insert(key.clone());
                return;
            }
            WriteOp::Clear { range } => {
                self.cleared.push(range.clone());
                return;
            }
            WriteOp::Batch { ops } => ops,
            WriteOp::Transaction { writes, .. } => writes,
        };
        self.keys
            .extend(steps.iter().map(BatchOp::key).map(<[u8]>::to_vec));
    }

    /// Whether any of `reads` covers a key written so far.
    pub fn overlap(&self, reads: &[ReadCheck]) -> bool {
        reads.iter().any(|read| match read {
            ReadCheck::Key { key, .. } => {
                self.keys.contains(key) || self.cleared.iter().any(|range| range.contains(key))
            }
            ReadCheck::Range { range, .. } => {
                self.cleared.iter().any(|cleared| intersect(cleared, range))
                    || (!range.is_empty()
                        && self
                            .keys
                            .range::<[u8], _>((as_slice(&range.start), as_slice(&range.end)))
                            .next()
                            .is_some())
            }
        })
    }
}

fn as_slice(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key),
        Bound::Excluded(key) => Bound::Excluded(key),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether some key lies in both ranges.
fn intersect(a: &KeyRange, b: &KeyRange) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let ((a_low, a_high), (b_low, b_high)) = (a.half_open(), b.half_open());
    let below = |low: &Option<Vec<u8>>, high: &Option<Vec<u8>>| match (low, high) {
        (_, None) => true,
        (None, Some(high)) => !high.is_empty(),
        (Some(low), Some(high)) => low < high,
    };
    below(&b_low, &a_high) && below(&a_low, &b_high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
        }
    }

    fn range(start: &str, end: &str) -> KeyRange {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    #[test]
    fn a_range_read_fails_on_a_changed_value_a_gone_key_and_a_phantom() {
        let seen = [entry("a", "1"), entry("c", "3")];
        assert_eq!(first_difference(&seen, &seen), None);
        let changed = first_difference(&seen, &[entry("a", "1"), entry("c", "4")]);
        assert_eq!(
            changed.map(|c| (c.key, c.current)),
            Some((b"c".to_vec(), Some(b"4".to_vec())))
        );
        let gone = first_difference(&seen, &[entry("c", "3")]);
        assert_eq!(
            gone.map(|c| (c.key, c.current)),
            Some((b"a".to_vec(), None))
        );
        let phantom = first_difference(&seen, &[entry("a", "1"), entry("b", "2"), entry("c", "3")]);
        assert_eq!(
            phantom.map(|c| (c.key, c.current)),
            Some((b"b".to_vec(), Some(b"2".to_vec())))
        );
        let appended = first_difference(&seen, &[entry("a", "1"), entry("c", "3"), entry("d", "")]);
        assert_eq!(appended.map(|c| c.key), Some(b"d".to_vec()));
        let shorter = first_difference(&seen, &[entry("a", "1")]);
        assert_eq!(
            shorter.map(|c| (c.key, c.current)),
            Some((b"c".to_vec(), None))
        );
    }

    #[test]
    fn answers_that_do_not_match_the_reads_are_malformed() {
        let reads = || vec![CheckRead::Key(b"k".to_vec()), CheckRead::Key(b"j".to_vec())];
        let one_answer = vec![CheckValue::Value(None)];
        assert!(matches!(
            Snapshot::new(reads(), one_answer),
            Err(ErrorCode::Malformed(_))
        ));
        let wrong_kind = vec![CheckValue::Value(None), CheckValue::Entries(Vec::new())];
        assert!(matches!(
            Snapshot::new(reads(), wrong_kind),
            Err(ErrorCode::Malformed(_))
        ));
    }

    #[test]
    fn a_key_read_holds_only_with_the_same_value_or_the_same_absence() {
        let reads = vec![
            CheckRead::Key(b"k".to_vec()),
            CheckRead::Key(b"gone".to_vec()),
        ];
        let values = vec![
            CheckValue::Value(Some(b"v".to_vec())),
            CheckValue::Value(None),
        ];
        let snapshot = Snapshot::new(reads, values).unwrap();
        let read = |key: &str, value: Option<&str>| ReadCheck::Key {
            key: key.into(),
            value: value.map(Into::into),
        };
        assert_eq!(
            snapshot.conflict(&[read("k", Some("v")), read("gone", None)]),
            None
        );
        assert_eq!(
            snapshot.conflict(&[read("gone", None), read("k", None)]),
            Some(Conflict {
                key: b"k".to_vec(),
                current: Some(b"v".to_vec())
            })
        );
        assert!(
            snapshot.conflict(&[read("never asked", None)]).is_some(),
            "a read the snapshot cannot answer does not hold"
        );
        let range_never_asked = ReadCheck::Range {
            range: range("a", "z"),
            entries: Vec::new(),
        };
        assert!(
            snapshot.conflict(&[range_never_asked]).is_some(),
            "nor a range read it cannot answer"
        );
    }

    #[test]
    fn group_writes_overlap_the_reads_of_the_keys_and_ranges_they_touch() {
        let mut written = GroupWrites::default();
        written.add(&WriteOp::Put {
            key: b"m".to_vec(),
            value: Vec::new(),
        });
        written.add(&WriteOp::Clear {
            range: range("x", "z"),
        });
        let key = |key: &str| ReadCheck::Key {
            key: key.into(),
            value: None,
        };
        let scan = |start: &str, end: &str| ReadCheck::Range {
            range: range(start, end),
            entries: Vec::new(),
        };
        assert!(written.overlap(&[key("m")]));
        assert!(written.overlap(&[key("y")]), "inside the cleared range");
        assert!(!written.overlap(&[key("n"), key("z")]));
        assert!(written.overlap(&[scan("a", "n")]));
        assert!(!written.overlap(&[scan("a", "m")]), "m is the excluded end");
        assert!(
            written.overlap(&[scan("y", "zz")]),
            "meets the cleared range"
        );
        assert!(!written.overlap(&[scan("n", "x")]));
        assert!(
            !written.overlap(&[scan("q", "q")]),
            "an empty range reads nothing"
        );
        assert!(
            !written.overlap(&[scan("z", "a")]),
            "nor a reversed one (a follower's to send), which a set cannot be asked for"
        );
    }

    /// Ranges meet only where a key lies in both: never when one is empty, and nothing
    /// lies below the empty key.
    #[test]
    fn ranges_that_hold_no_key_in_common_do_not_meet() {
        let below_everything = KeyRange {
            start: Bound::Unbounded,
            end: Bound::Excluded(Vec::new()),
        };
        assert!(!intersect(&below_everything, &KeyRange::all()));
        assert!(!intersect(&KeyRange::all(), &below_everything));
        assert!(!intersect(&range("q", "q"), &range("a", "z")));
        assert!(!intersect(&range("a", "z"), &range("q", "q")));
        assert!(intersect(&range("a", "m"), &KeyRange::all()));
        assert!(!intersect(&range("a", "m"), &range("m", "z")));
    }

    #[test]
    fn each_key_and_range_is_read_once_with_room_for_one_more_entry() {
        let txn = |reads: Vec<ReadCheck>| WriteOp::Transaction {
            reads,
            writes: Vec::new(),
        };
        let ops = [
            txn(vec![
                ReadCheck::Key {
                    key: b"k".to_vec(),
                    value: None,
                },
                ReadCheck::Range {
                    range: range("a", "c"),
                    entries: vec![entry("a", "")],
                },
            ]),
            WriteOp::Del { key: b"k".to_vec() },
            txn(vec![
                ReadCheck::Key {
                    key: b"k".to_vec(),
                    value: None,
                },
                ReadCheck::Range {
                    range: range("a", "c"),
                    entries: vec![entry("a", ""), entry("b", "")],
                },
            ]),
        ];
        let expected = vec![
            CheckRead::Key(b"k".to_vec()),
            CheckRead::Range {
                range: range("a", "c"),
                limit: 3,
            },
        ];
        assert_eq!(reads_to_check(&ops), expected);
        // The largest, not the last: the transaction that saw two entries must see a third
        // appear, whichever comes first in the group.
        let reversed: Vec<_> = ops.into_iter().rev().collect();
        assert_eq!(reads_to_check(&reversed), expected);
    }
}

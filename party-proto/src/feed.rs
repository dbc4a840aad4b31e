//! The change feed's log: every group the writer commits gets the next commit sequence
//! number, and its changes are stored under that number in the store's change log, in the
//! same atomic commit as the data. A subscriber that knows the last number it saw resumes
//! from the log on any leader, so a crash of the leader loses nothing and repeats nothing.
//!
//! An entry holds the group's writes as applied, in order: puts, deletes, and clears as
//! their range (the keys a clear removed are known only to the store when it commits;
//! level's `clear` event is one event with its range too). It starts with the log's size
//! before it (`bytes_before`, the sum of the lengths of every entry ever appended before),
//! so that a new leader knows how large the log it takes over is.
//!
//! The writer builds entries ([`encode_entry`]); stores keep them as opaque bytes under the
//! 8-byte big-endian sequence number, in a reserved namespace, and delete the oldest when
//! the writer says (`crate::changelog`). Retention is by count and by bytes ([`ChangeRetention`]); the newest entry is never
//! trimmed, as a new leader learns the next number from it.

use serde::{Deserialize, Serialize};

use crate::range::KeyRange;
use crate::wire::{BatchOp, WriteOp};

/// The number of one committed group: 1 for the first group a store ever committed, then
/// one more for each, with no gap.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct CommitSeq(pub u64);

impl CommitSeq {
    /// The number of the first commit a store logs.
    pub const FIRST: CommitSeq = CommitSeq(1);

    pub fn next(self) -> CommitSeq {
        CommitSeq(self.0.saturating_add(1))
    }

    /// The key an entry is stored under: big-endian, so the store's order is the log's.
    pub fn key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_key(key: &[u8]) -> Option<CommitSeq> {
        Some(CommitSeq(u64::from_be_bytes(key.try_into().ok()?)))
    }
}

/// One write of a committed group, as a subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Del {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Every key in the range was deleted.
    Clear { range: KeyRange },
}

impl Change {
    /// What of this change a subscriber of `range` sees: a put or delete of a key in it,
    /// or the part of a clear that overlaps it.
    pub fn within(&self, range: &KeyRange) -> Option<Change> {
        match self {
            Change::Put { key, .. } | Change::Del { key } => {
                range.contains(key).then(|| self.clone())
            }
            Change::Clear { range: cleared } => {
                let overlap = cleared.intersection(range);
                (!overlap.is_empty()).then_some(Change::Clear { range: overlap })
            }
        }
    }

    /// At least the bytes this change adds to a frame: its tag and its byte strings with
    /// their lengths. With a `WatchData` frame's own bytes it stays under what the write's
    /// request took, so a change of any write that was sent fits in a frame.
    pub fn len_bound(&self) -> u64 {
        1 + match self {
            Change::Put { key, value } => key.len() as u64 + value.len() as u64 + 20,
            Change::Del { key } => key.len() as u64 + 10,
            Change::Clear { range } => range.len_bound(),
        }
    }
}

/// The same layout as [`Change`], borrowing from the group's writes.
#[derive(Serialize)]
enum ChangeRef<'a> {
    Put {
        #[serde(with = "serde_bytes")]
        key: &'a [u8],
        #[serde(with = "serde_bytes")]
        value: &'a [u8],
    },
    Del {
        #[serde(with = "serde_bytes")]
        key: &'a [u8],
    },
    Clear {
        range: &'a KeyRange,
    },
}

impl<'a> ChangeRef<'a> {
    fn of(op: &'a BatchOp) -> Self {
        match op {
            BatchOp::Put { key, value } => ChangeRef::Put { key, value },
            BatchOp::Del { key } => ChangeRef::Del { key },
        }
    }
}

/// An entry: its place, and the group's writes, unless the leader that committed it kept
/// no feed (`None`: only the number was taken).
#[derive(Serialize)]
struct EntryRef<'a> {
    bytes_before: u64,
    changes: Option<Vec<ChangeRef<'a>>>,
}

#[derive(Deserialize)]
struct Entry {
    #[allow(dead_code)]
    bytes_before: u64,
    changes: Option<Vec<Change>>,
}

/// The log entry of a group whose writes are `ops`, appended after `bytes_before` bytes of
/// log.
pub fn encode_entry(bytes_before: u64, ops: &[WriteOp]) -> Vec<u8> {
    let mut changes = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            WriteOp::Put { key, value } => changes.push(ChangeRef::Put { key, value }),
            WriteOp::Del { key } => changes.push(ChangeRef::Del { key }),
            WriteOp::Clear { range } => changes.push(ChangeRef::Clear { range }),
            WriteOp::Batch { ops } | WriteOp::Transaction { writes: ops, .. } => {
                changes.extend(ops.iter().map(ChangeRef::of))
            }
        }
    }
    encode(&EntryRef {
        bytes_before,
        changes: Some(changes),
    })
}

/// The entry of a group committed by a leader that keeps no change feed: it takes its
/// number, so that the numbering has no gap, and says its changes were not kept.
pub fn encode_unlogged(bytes_before: u64) -> Vec<u8> {
    encode(&EntryRef {
        bytes_before,
        changes: None,
    })
}

fn encode(entry: &EntryRef<'_>) -> Vec<u8> {
    // Byte strings, integers and bounds always encode.
    postcard::to_stdvec(entry).unwrap_or_default()
}

/// The changes of a stored entry (`None`: not kept), or why it does not decode.
pub fn decode_entry(entry: &[u8]) -> Result<Option<Vec<Change>>, String> {
    postcard::from_bytes::<Entry>(entry)
        .map(|entry| entry.changes)
        .map_err(|error| error.to_string())
}

/// The entry a group's commit appends to the log, in the same atomic commit.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    pub seq: CommitSeq,
    /// What [`encode_entry`] made of the group's writes.
    pub entry: Vec<u8>,
}

/// What a leader's driver read of the change log for a subscription (the answer to
/// `ServerOutput::WatchPull`).
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Where the read started: the number asked for, or the next commit's when none was.
    pub from: CommitSeq,
    /// The stored entries from `from` on, in order, as the store keeps them.
    pub entries: Vec<(CommitSeq, Vec<u8>)>,
    /// The number the store's next commit takes, as of the read.
    pub next: CommitSeq,
}

/// How a leader's driver answers a subscription's read of the log
/// (`ServerOutput::WatchPull`), given the last commit its writer knows of.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPlan {
    /// Nothing to say yet: answer once a commit lands (or the log's end is known).
    Wait,
    /// Answer now with a [`LogRead`] from `from`, holding the stored entries from
    /// `read_from` on if it is given, none otherwise.
    Answer {
        from: CommitSeq,
        read_from: Option<CommitSeq>,
        next: CommitSeq,
    },
}

/// Plans the answer to a subscription's read from `from` (`None`: from the next commit),
/// given the last commit the writer knows of and the oldest entry the log keeps. A read
/// from before that entry starts at it: nothing is stored before it, and the stores that
/// keep the tombstones of trimmed entries (fjall, RocksDB) would walk all of them on the
/// way.
pub fn plan_pull(
    from: Option<CommitSeq>,
    last: Option<CommitSeq>,
    oldest_kept: Option<CommitSeq>,
) -> PullPlan {
    let Some(last) = last else {
        return PullPlan::Wait;
    };
    let next = last.next();
    match from {
        None => PullPlan::Answer {
            from: next,
            read_from: None,
            next,
        },
        Some(from) if from == next => PullPlan::Wait,
        Some(from) => PullPlan::Answer {
            from,
            read_from: (from < next).then(|| oldest_kept.map_or(from, |oldest| from.max(oldest))),
            next,
        },
    }
}

#[cfg(test)]
mod pull_tests {
    use super::*;

    #[test]
    fn a_read_from_before_the_oldest_entry_kept_starts_at_it() {
        let seq = |n| Some(CommitSeq(n));
        let read_from = |from, oldest| match plan_pull(seq(from), seq(20), oldest) {
            PullPlan::Answer { read_from, .. } => read_from,
            PullPlan::Wait => panic!("a read from {from} waits"),
        };
        assert_eq!(read_from(3, seq(10)), seq(10));
        assert_eq!(read_from(15, seq(10)), seq(15));
        assert_eq!(read_from(3, None), seq(3), "the log's start unknown");
        assert_eq!(plan_pull(seq(21), seq(20), seq(10)), PullPlan::Wait);
        assert_eq!(
            plan_pull(None, seq(20), seq(10)),
            PullPlan::Answer {
                from: CommitSeq(21),
                read_from: None,
                next: CommitSeq(21)
            }
        );
    }
}

/// Where one stored entry lies in the log.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSpan {
    pub seq: CommitSeq,
    /// The log's size before this entry.
    pub bytes_before: u64,
    /// The log's size with it.
    pub bytes_through: u64,
}

impl LogSpan {
    /// The span of the entry stored under `seq`; `None` if it does not start with its size
    /// before.
    pub fn of(seq: CommitSeq, entry: &[u8]) -> Option<LogSpan> {
        let (bytes_before, _) = postcard::take_from_bytes::<u64>(entry).ok()?;
        Some(LogSpan {
            seq,
            bytes_before,
            bytes_through: bytes_before.saturating_add(entry.len() as u64),
        })
    }
}

/// The oldest and the newest entry of a non-empty log.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEnds {
    pub first: LogSpan,
    pub last: LogSpan,
}

impl LogEnds {
    /// The number the next commit of a store whose log has these ends takes (`None`: an
    /// empty log).
    pub fn next_commit(ends: Option<LogEnds>) -> CommitSeq {
        ends.map_or(CommitSeq::FIRST, |ends| ends.last.seq.next())
    }
}

/// How much of the change log a store keeps. The writer trims it a page at a time once it
/// is an eighth over either budget; the newest entry always stays.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRetention {
    /// The most groups kept (at least 1).
    pub groups: u64,
    /// The most bytes of entries kept (at least 1).
    pub bytes: u64,
}

impl Default for ChangeRetention {
    fn default() -> Self {
        ChangeRetention {
            groups: 100_000,
            bytes: 64 * 1024 * 1024,
        }
    }
}

/// Entries one page of a trim deletes at most.
pub const TRIM_PAGE: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    fn range(start: &str, end: &str) -> KeyRange {
        KeyRange {
            start: Bound::Included(start.into()),
            end: Bound::Excluded(end.into()),
        }
    }

    #[test]
    fn an_entry_holds_the_groups_writes_in_order_and_its_place_in_the_log() {
        let ops = vec![
            WriteOp::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            },
            WriteOp::Batch {
                ops: vec![
                    BatchOp::Del { key: b"b".to_vec() },
                    BatchOp::Put {
                        key: b"c".to_vec(),
                        value: b"3".to_vec(),
                    },
                ],
            },
            WriteOp::Clear {
                range: range("x", "z"),
            },
            WriteOp::Transaction {
                reads: Vec::new(),
                writes: vec![BatchOp::Del { key: b"d".to_vec() }],
            },
        ];
        let entry = encode_entry(700, &ops);
        assert_eq!(
            decode_entry(&entry).unwrap().unwrap(),
            vec![
                Change::Put {
                    key: b"a".to_vec(),
                    value: b"1".to_vec()
                },
                Change::Del { key: b"b".to_vec() },
                Change::Put {
                    key: b"c".to_vec(),
                    value: b"3".to_vec()
                },
                Change::Clear {
                    range: range("x", "z")
                },
                Change::Del { key: b"d".to_vec() },
            ]
        );
        let span = LogSpan::of(CommitSeq(9), &entry).unwrap();
        assert_eq!(span.bytes_before, 700);
        assert_eq!(span.bytes_through, 700 + entry.len() as u64);
        assert!(decode_entry(b"\xff").is_err());
        let unlogged = encode_unlogged(9);
        assert_eq!(decode_entry(&unlogged).unwrap(), None);
        assert_eq!(
            LogSpan::of(CommitSeq(1), &unlogged).unwrap().bytes_before,
            9
        );
        assert_eq!(
            CommitSeq::from_key(&CommitSeq(258).key()),
            Some(CommitSeq(258))
        );
    }

    #[test]
    fn a_subscriber_sees_the_changes_of_its_range_and_the_part_of_a_clear_inside_it() {
        let watched = range("b", "d");
        let put = |k: &str| Change::Put {
            key: k.into(),
            value: b"v".to_vec(),
        };
        assert_eq!(put("b").within(&watched), Some(put("b")));
        assert_eq!(put("d").within(&watched), None);
        let clear = Change::Clear {
            range: range("a", "c"),
        };
        assert_eq!(
            clear.within(&watched),
            Some(Change::Clear {
                range: range("b", "c")
            })
        );
        let outside = Change::Clear {
            range: range("d", "e"),
        };
        assert_eq!(outside.within(&watched), None);
    }

    /// Short keys over three bytes, narrower than the integration tests' `edge_key` on
    /// purpose: bounds and keys meet often (a bound excluded on one side and included on
    /// the other at the same key, prefixes of each other).
    fn key() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(0xff)], 0..3)
    }

    fn bound() -> impl proptest::strategy::Strategy<Value = Bound<Vec<u8>>> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Bound::Unbounded),
            key().prop_map(Bound::Included),
            key().prop_map(Bound::Excluded),
        ]
    }

    proptest::proptest! {
        /// Of a clear, a subscriber is told exactly the keys both ranges hold: none the
        /// clear left alone, none outside the subscription, none it is owed left out.
        #[test]
        fn a_subscriber_is_told_a_clear_on_exactly_the_keys_both_ranges_hold(
            cleared in (bound(), bound()),
            watched in (bound(), bound()),
            keys in proptest::collection::vec(key(), 1..12),
        ) {
            let cleared = KeyRange { start: cleared.0, end: cleared.1 };
            let watched = KeyRange { start: watched.0, end: watched.1 };
            let told = Change::Clear { range: cleared.clone() }.within(&watched);
            for key in keys {
                let owed = cleared.contains(&key) && watched.contains(&key);
                let said = matches!(&told, Some(Change::Clear { range }) if range.contains(&key));
                proptest::prop_assert_eq!(said, owed, "key {:?}, told {:?}", key, told);
            }
        }
    }
}

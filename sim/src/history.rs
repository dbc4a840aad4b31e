//! What the simulated callers did and saw: one record per operation, with its virtual
//! invoke and completion times. The checks read this after the run.

use party_proto::wire::{BatchOp, Entry, ReadCheck, ReadOp, Response, WriteOp};
use party_proto::{CommitSeq, ErrorCode, IterOptions, KeyRange};

/// A caller's operation.
#[derive(Debug, Clone)]
pub enum OpKind {
    Get(Vec<u8>),
    /// Reads these keys at one instant.
    GetMany(Vec<Vec<u8>>),
    /// Asks the leader how it is doing.
    Status,
    /// Writes these keys atomically (put, del and batch all become this).
    Write(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Clear(KeyRange),
    Iterate(IterOptions),
    /// Commits these writes if these reads still hold.
    Transaction {
        reads: Vec<ReadCheck>,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
}

impl OpKind {
    /// The operation a read sent to the machine is.
    pub fn of_read(op: &ReadOp) -> OpKind {
        match op {
            ReadOp::Get { key } => OpKind::Get(key.clone()),
            ReadOp::GetMany { keys } => OpKind::GetMany(keys.clone()),
            ReadOp::Status => OpKind::Status,
        }
    }

    /// The operation a write sent to the machine is.
    pub fn of_write(op: &WriteOp) -> OpKind {
        let pairs = |ops: &[BatchOp]| ops.iter().map(pair).collect();
        match op {
            WriteOp::Put { key, value } => OpKind::Write(vec![(key.clone(), Some(value.clone()))]),
            WriteOp::Del { key } => OpKind::Write(vec![(key.clone(), None)]),
            WriteOp::Batch { ops } => OpKind::Write(pairs(ops)),
            WriteOp::Clear { range } => OpKind::Clear(range.clone()),
            WriteOp::Transaction { reads, writes } => OpKind::Transaction {
                reads: reads.clone(),
                writes: pairs(writes),
            },
        }
    }
}

fn pair(op: &BatchOp) -> (Vec<u8>, Option<Vec<u8>>) {
    match op {
        BatchOp::Put { key, value } => (key.clone(), Some(value.clone())),
        BatchOp::Del { key } => (key.clone(), None),
    }
}

/// How an operation ended, as far as its caller knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No answer: still pending, or its process crashed first.
    Unknown,
    Read(Option<Vec<u8>>),
    ReadMany(Vec<Option<Vec<u8>>>),
    /// The leader's follower count.
    Status(u32),
    Written,
    /// A transaction refused: `key` holds `current` now.
    Conflict {
        key: Vec<u8>,
        current: Option<Vec<u8>>,
    },
    /// Every entry the iterator delivered, in order (a half the options left out is
    /// empty); `closed_early` when the caller closed it before its end; `follows`, the
    /// commit its caller was last told the store snapshot follows (`Iter::seq`).
    Iterated {
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        closed_early: bool,
        follows: Option<u64>,
    },
    Failed(ErrorCode),
}

impl Outcome {
    /// An iterator that has delivered nothing yet.
    pub fn iterating() -> Outcome {
        Outcome::Iterated {
            entries: Vec::new(),
            closed_early: false,
            follows: None,
        }
    }

    /// An iterator's take gave `taken`; its caller is told now that the snapshot follows
    /// commit `follows_now` (if the leader said).
    pub fn took(&mut self, taken: Vec<Entry>, follows_now: Option<CommitSeq>) {
        if let Outcome::Iterated {
            entries, follows, ..
        } = self
        {
            entries.extend(taken.into_iter().map(|e| (e.key, e.value)));
            *follows = follows_now.map(|seq| seq.0).or(*follows);
        }
    }

    /// How a request the leader answered ended.
    pub fn of(result: Result<Response, ErrorCode>) -> Outcome {
        match result {
            Ok(Response::Value(value)) => Outcome::Read(value.map(Vec::from)),
            Ok(Response::Values(values)) => Outcome::ReadMany(values),
            Ok(Response::Written) => Outcome::Written,
            Ok(Response::Status(status)) => Outcome::Status(status.followers),
            Ok(Response::Conflict { key, current }) => Outcome::Conflict { key, current },
            Err(error) => Outcome::Failed(error),
        }
    }
}

/// The failures a fault or the caller's own settings explain for an operation; any other
/// failure is a violation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Excuses {
    /// The client does not retry: a lost connection fails what was in flight.
    pub connection_lost: bool,
    /// The client has a request timeout.
    pub timed_out: bool,
    /// The process was closed before the operation ended.
    pub closed: bool,
    /// The process's election failed (a fault of its store, or a store of another kind)
    /// before the operation ended.
    pub election_failed: bool,
    /// The store fails or refuses commits on this seed.
    pub store: bool,
    /// Writes may end with an unknown outcome on this seed: the store's answer lost, a
    /// write in flight longer than the resend window, or a connection that ended in garbage
    /// or a refusal after a write was sent.
    pub outcome_unknown: bool,
    /// The leader refuses connections on this seed.
    pub refused: bool,
    /// Garbage frames are injected on this seed.
    pub malformed: bool,
    /// Frames are limited to 128 bytes on this seed (in a replay: the operation's request
    /// or answer was over a real limit): bigger requests and answers fail alone.
    pub too_large: bool,
    /// The write costs the store more operations than it commits at once on this seed (a
    /// small-group seed's limit; in a replay, a real store's): it fails alone, nothing of
    /// it applied.
    pub too_many_ops: bool,
    /// The write puts or deletes a key longer than this seed's store takes (in a replay, a
    /// real store's): it fails alone, nothing of it applied.
    pub key_too_large: bool,
    /// Connections may reach a process of another user on this seed.
    pub foreign: bool,
    /// Processes may be configured for another store than the directory's on this seed.
    pub other_store: bool,
    /// Some processes keep no change feed on this seed: a subscription may be refused.
    pub feed_off: bool,
    /// Some leaders serve one iterator and one subscription a connection on this seed.
    pub few_streams: bool,
    /// The subscription asked to start past the store's next commit (a position another
    /// store gave).
    pub watch_ahead: bool,
    /// The write was in flight when a connection of its ended: it may have failed (a fault
    /// of the store, a transaction's conflict) with its answer lost, and be re-sent after a
    /// later write of its handle went ahead.
    pub failed_before: bool,
}

impl Excuses {
    /// Whether `error` is explained.
    pub fn allow(&self, error: &ErrorCode) -> bool {
        match error {
            ErrorCode::ConnectionLost => self.connection_lost,
            ErrorCode::TimedOut => self.timed_out,
            ErrorCode::Closed => self.closed,
            ErrorCode::ElectionFailed(_) => self.election_failed,
            ErrorCode::Backend(_) | ErrorCode::StoreFull { .. } | ErrorCode::StoreReadOnly => {
                self.store
            }
            ErrorCode::OutcomeUnknown(_) => self.outcome_unknown,
            ErrorCode::TooManyConnections { .. } => self.refused,
            ErrorCode::LeaderOfOtherUser { .. } => self.foreign,
            ErrorCode::WrongStore { .. } => self.other_store,
            ErrorCode::Malformed(_) => self.malformed,
            ErrorCode::FrameTooLarge { .. } => self.malformed || self.too_large,
            ErrorCode::ReplyTooLarge { .. } => self.too_large,
            ErrorCode::BatchTooLarge { .. } => self.too_many_ops,
            ErrorCode::KeyTooLarge { .. } => self.key_too_large,
            ErrorCode::FeedOff => self.feed_off,
            ErrorCode::TooManyIterators { .. } | ErrorCode::TooManyWatches { .. } => {
                self.few_streams
            }
            ErrorCode::WatchAhead { .. } => self.watch_ahead,
            ErrorCode::FailedBefore => self.failed_before,
            _ => false,
        }
    }
}

#[cfg(test)]
impl Excuses {
    /// Every excuse at once. Each field named: a new excuse must be added here, and to the
    /// table of `each_excuse_explains_its_own_errors_and_no_other`.
    pub fn all() -> Excuses {
        Excuses {
            connection_lost: true,
            timed_out: true,
            closed: true,
            election_failed: true,
            store: true,
            outcome_unknown: true,
            refused: true,
            foreign: true,
            other_store: true,
            malformed: true,
            too_large: true,
            too_many_ops: true,
            key_too_large: true,
            feed_off: true,
            few_streams: true,
            watch_ahead: true,
            failed_before: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Op {
    pub process: usize,
    /// Which of the process's handles issued it: one more each time the process starts
    /// again.
    pub incarnation: u32,
    pub kind: OpKind,
    /// Virtual microseconds.
    pub invoke: u64,
    pub complete: Option<u64>,
    pub outcome: Outcome,
    pub excuses: Excuses,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> Entry {
        Entry {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }
    }

    /// An iterator's record keeps every entry taken, in order, and the commit its caller
    /// was told last that the snapshot follows (a resumed iterator is told a later one):
    /// the check judges its entries against the states from there on.
    #[test]
    fn an_iterator_keeps_what_it_took_and_the_last_commit_it_was_told() {
        let mut outcome = Outcome::iterating();
        outcome.took(vec![entry("a")], Some(CommitSeq(3)));
        outcome.took(vec![entry("b"), entry("c")], None);
        outcome.took(vec![], Some(CommitSeq(5)));
        outcome.took(vec![entry("d")], None);
        let Outcome::Iterated {
            entries, follows, ..
        } = outcome
        else {
            panic!("not an iterator's: {outcome:?}");
        };
        let keys: Vec<&[u8]> = entries.iter().map(|(key, _)| key.as_slice()).collect();
        assert_eq!(keys, [b"a", b"b", b"c", b"d"]);
        assert_eq!(follows, Some(5));
    }

    /// Each excuse explains its own errors and no other; errors no fault of the simulator
    /// causes are never explained.
    #[test]
    fn each_excuse_explains_its_own_errors_and_no_other() {
        use party_proto::election::ElectionFailure;
        use party_proto::wire::ProtocolId;
        let errors = [
            ("ConnectionLost", ErrorCode::ConnectionLost),
            ("TimedOut", ErrorCode::TimedOut),
            ("Closed", ErrorCode::Closed),
            (
                "ElectionFailed",
                ErrorCode::ElectionFailed(ElectionFailure::Lock),
            ),
            ("Backend", ErrorCode::Backend("disk".into())),
            (
                "StoreFull",
                ErrorCode::StoreFull {
                    free: 0,
                    reserve: 1,
                },
            ),
            ("StoreReadOnly", ErrorCode::StoreReadOnly),
            ("OutcomeUnknown", ErrorCode::OutcomeUnknown("lost".into())),
            (
                "TooManyConnections",
                ErrorCode::TooManyConnections { limit: 2 },
            ),
            ("LeaderOfOtherUser", ErrorCode::LeaderOfOtherUser { uid: 7 }),
            (
                "WrongStore",
                ErrorCode::WrongStore {
                    found: "sled".into(),
                    wanted: "fjall".into(),
                },
            ),
            ("Malformed", ErrorCode::Malformed("garbage".into())),
            ("FrameTooLarge", ErrorCode::FrameTooLarge { len: 9, max: 8 }),
            ("ReplyTooLarge", ErrorCode::ReplyTooLarge { len: 9, max: 8 }),
            ("FeedOff", ErrorCode::FeedOff),
            ("FailedBefore", ErrorCode::FailedBefore),
            ("NotFound", ErrorCode::NotFound),
            ("Locked", ErrorCode::Locked),
            ("TooManyRequests", ErrorCode::TooManyRequests { limit: 2 }),
            ("TooManyIterators", ErrorCode::TooManyIterators { limit: 2 }),
            ("OtherUser", ErrorCode::OtherUser { uid: 7 }),
            ("KeyTooLarge", ErrorCode::KeyTooLarge { len: 9, max: 8 }),
            ("BatchTooLarge", ErrorCode::BatchTooLarge { ops: 9, max: 8 }),
            ("WatchAhead", ErrorCode::WatchAhead { from: 9, next: 8 }),
            ("TooManyWatches", ErrorCode::TooManyWatches { limit: 2 }),
            (
                "ProtocolMismatch",
                ErrorCode::ProtocolMismatch {
                    expected: ProtocolId::CURRENT,
                    got: ProtocolId {
                        magic: *b"nope",
                        version: 1,
                    },
                },
            ),
        ];
        let explained = |excuses: Excuses| -> Vec<&str> {
            errors
                .iter()
                .filter(|(_, error)| excuses.allow(error))
                .map(|(name, _)| *name)
                .collect()
        };
        let none = Excuses::default();
        let only = |set: fn(&mut Excuses)| {
            let mut excuses = none;
            set(&mut excuses);
            excuses
        };
        let cases: [(Excuses, &[&str]); 17] = [
            (only(|e| e.connection_lost = true), &["ConnectionLost"]),
            (only(|e| e.timed_out = true), &["TimedOut"]),
            (only(|e| e.closed = true), &["Closed"]),
            (only(|e| e.election_failed = true), &["ElectionFailed"]),
            (
                only(|e| e.store = true),
                &["Backend", "StoreFull", "StoreReadOnly"],
            ),
            (only(|e| e.outcome_unknown = true), &["OutcomeUnknown"]),
            (only(|e| e.refused = true), &["TooManyConnections"]),
            (only(|e| e.foreign = true), &["LeaderOfOtherUser"]),
            (only(|e| e.other_store = true), &["WrongStore"]),
            (
                only(|e| e.malformed = true),
                &["Malformed", "FrameTooLarge"],
            ),
            (
                only(|e| e.too_large = true),
                &["FrameTooLarge", "ReplyTooLarge"],
            ),
            (only(|e| e.too_many_ops = true), &["BatchTooLarge"]),
            (only(|e| e.key_too_large = true), &["KeyTooLarge"]),
            (only(|e| e.feed_off = true), &["FeedOff"]),
            (
                only(|e| e.few_streams = true),
                &["TooManyIterators", "TooManyWatches"],
            ),
            (only(|e| e.watch_ahead = true), &["WatchAhead"]),
            (only(|e| e.failed_before = true), &["FailedBefore"]),
        ];
        assert!(explained(none).is_empty());
        for (excuses, expected) in cases {
            assert_eq!(explained(excuses), expected, "{excuses:?}");
        }
        let every = Excuses::all();
        assert_eq!(explained(every).len(), 21, "{:?}", explained(every));
    }
}

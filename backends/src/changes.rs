//! How the change log is laid out: each entry under its commit sequence number as 8
//! big-endian bytes (so the store's order is the log's), in a reserved namespace (sled,
//! rocksdb) or behind a prefix of its own (fjall, etcd), its value the bytes the writer made
//! ([`party_proto::feed`]).

use party_proto::feed::{LogEnds, LogSpan};
use party_proto::CommitSeq;

use crate::error::BackendError;
use crate::Backend;

/// Name of the reserved namespace (sled tree, rocksdb column family).
pub const NAMESPACE: &str = "party_changes";

/// The span of a stored entry, or why it is not one.
pub fn span(seq: CommitSeq, entry: &[u8]) -> Result<LogSpan, BackendError> {
    LogSpan::of(seq, entry).ok_or_else(|| BackendError::CorruptRecord {
        key: seq.key().to_vec(),
        reason: "a change log entry that does not start with its place in the log".into(),
    })
}

/// The entry stored under `key`, as read from the namespace.
pub fn stored(key: &[u8], entry: Vec<u8>) -> Result<(CommitSeq, Vec<u8>), BackendError> {
    let seq = CommitSeq::from_key(key).ok_or_else(|| BackendError::CorruptRecord {
        key: key.to_vec(),
        reason: format!("a change log key of {} bytes, expected 8", key.len()),
    })?;
    Ok((seq, entry))
}

/// [`Backend::change_log_ends`] for a store that keeps the tombstones of deleted keys until
/// a compaction drops them (fjall, RocksDB): the newest entry by a reverse read, the
/// oldest by the point reads of `stored` (see [`oldest_entry`]), rather than by a forward
/// read from the log's start, which would walk the tombstone of every trimmed entry.
pub fn ends_by_point_reads(
    store: &dyn Backend,
    stored: impl FnMut(CommitSeq) -> Result<bool, BackendError>,
) -> Result<Option<LogEnds>, BackendError> {
    let Some((last, newest)) = store.change_entries(CommitSeq(u64::MAX), true, 1)?.pop() else {
        return Ok(None);
    };
    let first = oldest_entry(last, stored)?;
    // Read from an entry that is there: no tombstone on the way.
    let Some((first, oldest)) = store.change_entries(first, false, 1)?.pop() else {
        // Never while one thread reads and writes the log; said rather than taken for an
        // empty log, whose numbers would start again.
        return Err(BackendError::CorruptRecord {
            key: first.key().to_vec(),
            reason: "the change log's oldest entry could not be read back".into(),
        });
    };
    Ok(Some(LogEnds {
        first: span(first, &oldest)?,
        last: span(last, &newest)?,
    }))
}

/// The oldest entry of a change log whose newest is `last`: the first number if the log
/// was never trimmed, else found by bisection. `stored` tells whether the entry under a
/// number is there, by a point read. A store that keeps the tombstones of deleted keys
/// until a compaction drops them (fjall, RocksDB) walks every entry a trim deleted when it
/// reads the log forward from its start: 0.16-0.5 s after 44 000 trimmed entries,
/// measured, at each takeover. This takes at most ~log2(last) point reads however many
/// were trimmed.
///
/// Right because the log holds every number from its oldest entry to its newest: each
/// commit appends the next number (the writer reads the log's end again when it cannot
/// tell whether a commit landed), and a trim deletes the oldest entries up to a number, a
/// page of at most [`party_proto::feed::TRIM_PAGE`] at a time, each page in one batch.
/// The in-memory store finds its ends this way too, so that the simulator's checks of the
/// feed (no commit number skipped or taken twice) run through it.
pub fn oldest_entry(
    last: CommitSeq,
    mut stored: impl FnMut(CommitSeq) -> Result<bool, BackendError>,
) -> Result<CommitSeq, BackendError> {
    if last <= CommitSeq::FIRST || stored(CommitSeq::FIRST)? {
        return Ok(CommitSeq::FIRST.min(last));
    }
    // `stored(high)` holds throughout; no number below `low` is stored.
    let (mut low, mut high) = (CommitSeq::FIRST.next().0, last.0);
    while low < high {
        let middle = low + (high - low) / 2;
        if stored(CommitSeq(middle))? {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(CommitSeq(high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_of_any_contiguous_log_is_found_in_few_reads() {
        let logs = [
            (1, 1),
            (1, 2),
            (2, 2),
            (2, 3),
            (3, 3),
            (5, 9),
            (1, 1000),
            (999, 1000),
        ];
        for (first, last) in logs
            .into_iter()
            .chain([(7, u64::MAX), (u64::MAX, u64::MAX)])
        {
            let mut reads = 0;
            let oldest = oldest_entry(CommitSeq(last), |seq| {
                reads += 1;
                Ok((first..=last).contains(&seq.0))
            })
            .unwrap();
            assert_eq!(oldest, CommitSeq(first), "log {first}..={last}");
            assert!(reads <= 65, "{reads} reads for the log {first}..={last}");
            if first == 1 {
                assert!(reads <= 1, "an untrimmed log takes one read, not {reads}");
            }
        }
        let failing = oldest_entry(CommitSeq(10), |_| Err(BackendError::Stale { backend: "t" }));
        assert!(failing.is_err(), "a failed read is the answer");
    }
    use party_proto::feed::encode_entry;

    #[test]
    fn an_entry_is_read_back_with_its_place_and_a_bad_one_is_a_typed_error() {
        let entry = encode_entry(300, &[]);
        let (seq, stored_entry) = stored(&CommitSeq(7).key(), entry.clone()).unwrap();
        assert_eq!(seq, CommitSeq(7));
        let place = span(seq, &stored_entry).unwrap();
        assert_eq!(
            (place.bytes_before, place.bytes_through),
            (300, 300 + entry.len() as u64)
        );
        assert!(span(CommitSeq(1), &[0xff; 12]).is_err());
        assert!(stored(b"short", Vec::new()).is_err());
    }
}

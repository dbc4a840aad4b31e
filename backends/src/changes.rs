//! How the change log is laid out in a store's reserved namespace: each entry under its
//! commit sequence number as 8 big-endian bytes (so the store's order is the log's), its
//! value the bytes the writer made ([`party_proto::feed`]); and the page of a trim, which
//! every store takes the same way.

use party_proto::feed::{LogSpan, Trim};
use party_proto::CommitSeq;

use crate::error::BackendError;

/// Name of the reserved namespace (fjall partition, sled tree, rocksdb column family).
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

/// What one page of a trim removes from `oldest` (the log's oldest entries, in order, one
/// more than the page may remove), and the oldest entry left after it.
pub fn trim_page(
    oldest: &[(CommitSeq, Vec<u8>)],
    trim: &Trim,
    max: usize,
) -> Result<(Vec<CommitSeq>, Option<LogSpan>), BackendError> {
    let mut removed = Vec::new();
    for (seq, entry) in oldest {
        let span = span(*seq, entry)?;
        if removed.len() == max || !trim.removes(&span) {
            return Ok((removed, Some(span)));
        }
        removed.push(*seq);
    }
    Ok((removed, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use party_proto::feed::encode_entry;

    #[test]
    fn a_page_removes_the_oldest_entries_up_to_the_first_kept_or_its_size() {
        let log: Vec<_> = (1..=5)
            .map(|seq| (CommitSeq(seq), encode_entry(seq * 100, &[])))
            .collect();
        let trim = Trim {
            keep_from: CommitSeq(4),
            keep_bytes_from: 0,
        };
        let (removed, first) = trim_page(&log, &trim, 10).unwrap();
        assert_eq!(removed, [CommitSeq(1), CommitSeq(2), CommitSeq(3)]);
        assert_eq!(first.map(|span| span.seq), Some(CommitSeq(4)));
        let (removed, first) = trim_page(&log, &trim, 2).unwrap();
        assert_eq!(removed, [CommitSeq(1), CommitSeq(2)]);
        assert_eq!(first.map(|span| span.seq), Some(CommitSeq(3)));
        let by_bytes = Trim {
            keep_from: CommitSeq(0),
            keep_bytes_from: 250,
        };
        assert_eq!(
            trim_page(&log, &by_bytes, 10).unwrap().0,
            [CommitSeq(1), CommitSeq(2)]
        );
        assert!(trim_page(&[(CommitSeq(1), vec![0xff; 12])], &trim, 10).is_err());
        assert!(stored(b"short", Vec::new()).is_err());
    }
}

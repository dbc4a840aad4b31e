//! How the change log is laid out: each entry under its commit sequence number as 8
//! big-endian bytes (so the store's order is the log's), in a reserved namespace (sled,
//! rocksdb) or behind a prefix of its own (fjall, etcd), its value the bytes the writer made
//! ([`party_proto::feed`]).

use party_proto::feed::LogSpan;
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

#[cfg(test)]
mod tests {
    use super::*;
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

//! How dedup records are laid out in a store's reserved namespace: the client id as 16
//! big-endian bytes for the key, the postcard-encoded record for the value.

use party_proto::{ClientId, DedupRecord};

use crate::error::BackendError;

/// Name of the reserved namespace (fjall keyspace, sled tree, rocksdb column family).
pub const NAMESPACE: &str = "party_dedup";

pub fn key(client: ClientId) -> [u8; 16] {
    client.0.to_be_bytes()
}

pub fn value(record: &DedupRecord) -> Vec<u8> {
    // A struct of integers always encodes.
    postcard::to_stdvec(record).unwrap_or_default()
}

pub fn decode(key: &[u8], value: &[u8]) -> Result<(ClientId, DedupRecord), BackendError> {
    let corrupt = |reason: String| BackendError::CorruptRecord {
        key: key.to_vec(),
        reason,
    };
    let id: [u8; 16] = key
        .try_into()
        .map_err(|_| corrupt(format!("key of {} bytes, expected 16", key.len())))?;
    let record = postcard::from_bytes(value).map_err(|e| corrupt(e.to_string()))?;
    Ok((ClientId(u128::from_be_bytes(id)), record))
}

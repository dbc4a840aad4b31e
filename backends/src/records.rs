//! How dedup records are laid out in a store's reserved namespace: the client id as 16
//! big-endian bytes for the key (so the records are in client order), the
//! postcard-encoded record for the value; and the page of a sweep of expired records,
//! which every store takes the same way.

use party_proto::{ClientId, DedupRecord, WriteSeq};
use serde::Deserialize;

use crate::error::BackendError;

/// Name of the reserved namespace (fjall keyspace, sled tree, rocksdb column family).
pub const NAMESPACE: &str = "party_dedup";

pub fn key(client: ClientId) -> [u8; 16] {
    client.0.to_be_bytes()
}

/// The first key a sweep's page reads: the one after `after`'s, or the first of all;
/// `None` when nothing can follow.
pub fn first_key_after(after: Option<ClientId>) -> Option<[u8; 16]> {
    match after {
        None => Some(key(ClientId(0))),
        Some(client) => client.0.checked_add(1).map(|next| key(ClientId(next))),
    }
}

pub fn value(record: &DedupRecord) -> Vec<u8> {
    // A struct of integers always encodes.
    postcard::to_stdvec(record).unwrap_or_default()
}

/// A record as written before records said when their client last wrote: it expires at
/// the first sweep.
#[derive(Deserialize)]
struct UndatedRecord {
    applied_through: WriteSeq,
    failed: Vec<WriteSeq>,
}

pub fn decode(key: &[u8], value: &[u8]) -> Result<(ClientId, DedupRecord), BackendError> {
    let corrupt = |reason: String| BackendError::CorruptRecord {
        key: key.to_vec(),
        reason,
    };
    let id: [u8; 16] = key
        .try_into()
        .map_err(|_| corrupt(format!("key of {} bytes, expected 16", key.len())))?;
    let record = match postcard::from_bytes::<DedupRecord>(value) {
        Ok(record) => record,
        Err(error) => match postcard::from_bytes::<UndatedRecord>(value) {
            Ok(undated) => DedupRecord {
                applied_through: undated.applied_through,
                failed: undated.failed,
                last_write_ms: 0,
            },
            Err(_) => return Err(corrupt(error.to_string())),
        },
    };
    Ok((ClientId(u128::from_be_bytes(id)), record))
}

/// The stored records of `clients`, each read with `get` (the value under a record key).
pub fn read_each<V: AsRef<[u8]>>(
    clients: &[ClientId],
    mut get: impl FnMut(&[u8]) -> Result<Option<V>, BackendError>,
) -> Result<Vec<Option<DedupRecord>>, BackendError> {
    clients
        .iter()
        .map(|client| {
            let key = key(*client);
            get(&key)?
                .map(|value| decode(&key, value.as_ref()).map(|(_, record)| record))
                .transpose()
        })
        .collect()
}

/// One page of a sweep (see `Backend::expire_dedup_records`) for a store that lists its
/// records in key order from a key (`from`) and removes some of them at once (`remove`).
pub fn expire_page<K, V, I>(
    written_before_ms: u64,
    after: Option<ClientId>,
    max: usize,
    from: impl FnOnce(&[u8; 16]) -> Result<I, BackendError>,
    remove: impl FnOnce(Vec<K>) -> Result<(), BackendError>,
) -> Result<Option<ClientId>, BackendError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    I: Iterator<Item = Result<(K, V), BackendError>>,
{
    let Some(first) = first_key_after(after) else {
        return Ok(None);
    };
    let page = sweep_page(from(&first)?, written_before_ms, max)?;
    if !page.expired.is_empty() {
        remove(page.expired)?;
    }
    Ok(page.last)
}

/// What one page of a sweep found.
#[derive(Debug)]
pub struct SweptPage<K> {
    /// The keys of the records to remove.
    pub expired: Vec<K>,
    /// The last client looked at, if the page was full (more may follow).
    pub last: Option<ClientId>,
}

/// Reads up to `max` stored records, in key order, and picks those whose client last wrote
/// before `written_before_ms`. A record that does not decode is left alone (and reported
/// when its client writes), so that it cannot stop every later record from expiring.
pub fn sweep_page<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    stored: impl Iterator<Item = Result<(K, V), BackendError>>,
    written_before_ms: u64,
    max: usize,
) -> Result<SweptPage<K>, BackendError> {
    let mut page = SweptPage {
        expired: Vec::new(),
        last: None,
    };
    let mut looked = 0;
    for item in stored.take(max) {
        let (key, value) = item?;
        looked += 1;
        if looked == max {
            let id = key
                .as_ref()
                .try_into()
                .map(u128::from_be_bytes)
                .unwrap_or(u128::MAX);
            page.last = Some(ClientId(id));
        }
        let expired = decode(key.as_ref(), value.as_ref())
            .is_ok_and(|(_, record)| record.last_write_ms < written_before_ms);
        if expired {
            page.expired.push(key);
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_written_before_records_were_dated_still_decodes_and_expires_first() {
        #[derive(serde::Serialize)]
        struct Undated {
            applied_through: WriteSeq,
            failed: Vec<WriteSeq>,
        }
        let old = postcard::to_stdvec(&Undated {
            applied_through: WriteSeq(7),
            failed: vec![WriteSeq(3)],
        })
        .unwrap();
        let (client, record) = decode(&key(ClientId(5)), &old).unwrap();
        assert_eq!(client, ClientId(5));
        assert_eq!(
            record,
            DedupRecord {
                applied_through: WriteSeq(7),
                failed: vec![WriteSeq(3)],
                last_write_ms: 0,
            }
        );
        let dated = DedupRecord {
            last_write_ms: 42,
            ..record
        };
        assert_eq!(decode(&key(client), &value(&dated)).unwrap().1, dated);
        assert!(decode(&key(client), b"\xff\xff\xff").is_err());
    }

    #[test]
    fn a_page_picks_the_expired_records_and_says_where_it_stopped_when_full() {
        let record = |ms| DedupRecord {
            applied_through: WriteSeq(1),
            failed: Vec::new(),
            last_write_ms: ms,
        };
        let stored = || {
            [(1, 10), (2, 30), (3, 5)]
                .into_iter()
                .map(|(c, ms)| Ok((key(ClientId(c)), value(&record(ms)))))
        };
        let page = sweep_page(stored(), 20, 3).unwrap();
        assert_eq!(page.expired, [key(ClientId(1)), key(ClientId(3))]);
        assert_eq!(page.last, Some(ClientId(3)), "full: more may follow");
        let page = sweep_page(stored(), 20, 4).unwrap();
        assert_eq!(page.last, None, "the records ran out first");
        let page = sweep_page(stored(), 20, 2).unwrap();
        assert_eq!(page.expired, [key(ClientId(1))]);
        assert_eq!(page.last, Some(ClientId(2)));
        assert_eq!(first_key_after(None), Some(key(ClientId(0))));
        assert_eq!(first_key_after(Some(ClientId(2))), Some(key(ClientId(3))));
        assert_eq!(first_key_after(Some(ClientId(u128::MAX))), None);
    }

    /// A client that last wrote at the cutoff itself did not write before it: kept.
    #[test]
    fn a_record_written_at_the_cutoff_is_kept() {
        let dated = |ms| DedupRecord {
            applied_through: WriteSeq(1),
            failed: Vec::new(),
            last_write_ms: ms,
        };
        let one = |ms| std::iter::once(Ok((key(ClientId(9)), value(&dated(ms)))));
        assert!(sweep_page(one(20), 20, 10).unwrap().expired.is_empty());
        assert_eq!(
            sweep_page(one(19), 20, 10).unwrap().expired,
            [key(ClientId(9))]
        );
    }
}

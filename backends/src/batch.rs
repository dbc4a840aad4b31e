//! What the leader's writer hands a store: the writes of one group, applied all or nothing
//! together with the dedup records that make them exactly-once.

use std::collections::BTreeMap;

use party_proto::wire::{BatchOp, WriteOp};
use party_proto::KeyRange;

use crate::error::BackendError;

pub use party_proto::WriteBatch;

/// The net effect of `ops` applied in order: for each touched key, its final value or `None`
/// for deleted. `scan` lists the keys the store holds in a range, for `Clear`.
///
/// Every store applies this as one native atomic batch, so clear, batch and group commit
/// behave the same on all of them.
pub fn resolve(
    ops: &[WriteOp],
    mut scan: impl FnMut(&KeyRange) -> Result<Vec<Vec<u8>>, BackendError>,
) -> Result<BTreeMap<Vec<u8>, Option<Vec<u8>>>, BackendError> {
    let mut effect: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for op in ops {
        match op {
            WriteOp::Put { key, value } => {
                effect.insert(key.clone(), Some(value.clone()));
            }
            WriteOp::Del { key } => {
                effect.insert(key.clone(), None);
            }
            // A transaction's reads were checked by the leader's writer: what is left is
            // its writes.
            WriteOp::Batch { ops } | WriteOp::Transaction { writes: ops, .. } => {
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => {
                            effect.insert(key.clone(), Some(value.clone()))
                        }
                        BatchOp::Del { key } => effect.insert(key.clone(), None),
                    };
                }
            }
            WriteOp::Clear { range } => {
                for (key, value) in effect.iter_mut() {
                    if range.contains(key) {
                        *value = None;
                    }
                }
                for key in scan(range)? {
                    effect.insert(key, None);
                }
            }
        }
    }
    Ok(effect)
}

/// [`resolve`] for a store that lists a `Clear` range with its own iterator.
#[cfg(any(feature = "fjall", feature = "sled", feature = "rocksdb"))]
pub(crate) fn resolve_in(
    store: &dyn crate::Backend,
    ops: &[WriteOp],
) -> Result<BTreeMap<Vec<u8>, Option<Vec<u8>>>, BackendError> {
    resolve(ops, |range| {
        store
            .iter(range, false)?
            .map(|entry| entry.map(|e| e.key))
            .collect()
    })
}

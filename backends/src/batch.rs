//! What the leader's writer hands a store: the writes of one group, applied all or nothing
//! together with the dedup records that make them exactly-once.

use std::borrow::Cow;
use std::collections::BTreeMap;

use party_proto::wire::{BatchOp, WriteOp};
use party_proto::KeyRange;

use crate::error::BackendError;

pub use party_proto::WriteBatch;

/// What a group leaves each key it touches with: its final value, or `None` for deleted.
/// Keys and values are borrowed from the group's writes (a store copies each once, into
/// its own batch); only the keys a `Clear` found in the store are owned.
pub type Effect<'a> = BTreeMap<Cow<'a, [u8]>, Option<&'a [u8]>>;

/// The net effect of `ops` applied in order. `scan` lists the keys the store holds in a
/// range, for `Clear`.
///
/// Every store applies this as one native atomic batch, so clear, batch and group commit
/// behave the same on all of them.
pub fn resolve<'a>(
    ops: &'a [WriteOp],
    mut scan: impl FnMut(&KeyRange) -> Result<Vec<Vec<u8>>, BackendError>,
) -> Result<Effect<'a>, BackendError> {
    let mut effect = Effect::new();
    for op in ops {
        let mut put = |key: &'a [u8], value: Option<&'a [u8]>| {
            effect.insert(Cow::Borrowed(key), value);
        };
        match op {
            WriteOp::Put { key, value } => put(key, Some(value)),
            WriteOp::Del { key } => put(key, None),
            // A transaction's reads were checked by the leader's writer: what is left is
            // its writes.
            WriteOp::Batch { ops } | WriteOp::Transaction { writes: ops, .. } => {
                for op in ops {
                    match op {
                        BatchOp::Put { key, value } => put(key, Some(value)),
                        BatchOp::Del { key } => put(key, None),
                    }
                }
            }
            WriteOp::Clear { range } => {
                for (key, value) in effect.iter_mut() {
                    if range.contains(key) {
                        *value = None;
                    }
                }
                for key in scan(range)? {
                    effect.insert(Cow::Owned(key), None);
                }
            }
        }
    }
    Ok(effect)
}

/// [`resolve`] for a store that lists a `Clear` range with its own iterator.
#[cfg(any(feature = "fjall", feature = "sled", feature = "rocksdb"))]
pub(crate) fn resolve_in<'a>(
    store: &dyn crate::Backend,
    ops: &'a [WriteOp],
) -> Result<Effect<'a>, BackendError> {
    resolve(ops, |range| {
        store
            .iter(range, false)?
            .map(|entry| entry.map(|e| e.key))
            .collect()
    })
}

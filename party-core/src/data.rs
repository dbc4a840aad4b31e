//! What callers write and read: batch steps, entries, key ranges and iterator options.
//!
//! These are party-core's own types, not the wire's, so that the protocol can change
//! without breaking callers and the API can grow without changing the protocol. The
//! conversions move the keys and values across; nothing is copied.

use std::ops::Bound;

use party_proto::wire;

/// One step of an atomic [`crate::Db::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Del { key: Vec<u8> },
}

impl From<BatchOp> for wire::BatchOp {
    fn from(op: BatchOp) -> Self {
        match op {
            BatchOp::Put { key, value } => wire::BatchOp::Put { key, value },
            BatchOp::Del { key } => wire::BatchOp::Del { key },
        }
    }
}

/// One key-value pair of an iteration. With `keys(false)` or `values(false)` in the
/// [`IterOptions`], the unwanted half is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl From<wire::Entry> for Entry {
    fn from(entry: wire::Entry) -> Self {
        Entry {
            key: entry.key,
            value: entry.value,
        }
    }
}

/// A range of keys in byte order: every key `k` with `start ≤/< k ≤/< end`. Unbounded on
/// both sides by default. Two bounds describe every range, so the fields stay open to
/// struct literals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl Default for KeyRange {
    fn default() -> Self {
        KeyRange::all()
    }
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        KeyRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Keys greater than `key`.
    pub fn gt(self, key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Excluded(key.into()),
            ..self
        }
    }

    /// Keys greater than or equal to `key`.
    pub fn gte(self, key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: Bound::Included(key.into()),
            ..self
        }
    }

    /// Keys less than `key`.
    pub fn lt(self, key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            end: Bound::Excluded(key.into()),
            ..self
        }
    }

    /// Keys less than or equal to `key`.
    pub fn lte(self, key: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            end: Bound::Included(key.into()),
            ..self
        }
    }
}

impl From<KeyRange> for party_proto::KeyRange {
    fn from(range: KeyRange) -> Self {
        party_proto::KeyRange {
            start: range.start,
            end: range.end,
        }
    }
}

/// What [`crate::Db::iter`] reads: every entry, in key order, keys and values, by default.
/// The setters chain: `IterOptions::default().range(KeyRange::all().gte("a")).reverse(true)`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IterOptions {
    pub range: KeyRange,
    pub reverse: bool,
    /// At most this many entries in total; `None` for no limit.
    pub limit: Option<u64>,
    /// The caller wants keys.
    pub keys: bool,
    /// The caller wants values; without them the leader sends less.
    pub values: bool,
}

impl Default for IterOptions {
    fn default() -> Self {
        IterOptions {
            range: KeyRange::all(),
            reverse: false,
            limit: None,
            keys: true,
            values: true,
        }
    }
}

impl IterOptions {
    /// Only the keys in `range`.
    pub fn range(mut self, range: KeyRange) -> Self {
        self.range = range;
        self
    }

    /// From the last key to the first (true), or the first to the last (false, the default).
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    /// At most this many entries; `None` (the default) for all.
    pub fn limit(mut self, limit: Option<u64>) -> Self {
        self.limit = limit;
        self
    }

    /// Whether entries carry their keys (default true).
    pub fn keys(mut self, keys: bool) -> Self {
        self.keys = keys;
        self
    }

    /// Whether entries carry their values (default true).
    pub fn values(mut self, values: bool) -> Self {
        self.values = values;
        self
    }
}

impl From<IterOptions> for party_proto::IterOptions {
    fn from(options: IterOptions) -> Self {
        party_proto::IterOptions {
            range: options.range.into(),
            reverse: options.reverse,
            limit: options.limit,
            keys: options.keys,
            values: options.values,
        }
    }
}

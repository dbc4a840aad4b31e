//! Key ranges and iterator options, with level's gt/gte/lt/lte vocabulary expressed as
//! [`Bound`]s, and the exclusive-bound resume that gives iterators no duplicate and no skip
//! across a failover.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// A key range: every key `k` with `start ≤/< k ≤/< end`. Unbounded on both sides by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    pub fn contains(&self, key: &[u8]) -> bool {
        let above_start = match &self.start {
            Bound::Unbounded => true,
            Bound::Included(start) => key >= start.as_slice(),
            Bound::Excluded(start) => key > start.as_slice(),
        };
        let below_end = match &self.end {
            Bound::Unbounded => true,
            Bound::Included(end) => key <= end.as_slice(),
            Bound::Excluded(end) => key < end.as_slice(),
        };
        above_start && below_end
    }

    /// True when no key can lie in the range (its start is after its end, they meet at an
    /// excluded key, or nothing lies between two excluded ones: the first key after `k` is
    /// `k` and a zero byte).
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Included(start), Bound::Included(end)) => start > end,
            (Bound::Excluded(start), Bound::Excluded(end)) => {
                let successor = end.len() == start.len() + 1
                    && end.starts_with(start)
                    && end.last() == Some(&0);
                start >= end || successor
            }
            (Bound::Included(start), Bound::Excluded(end))
            | (Bound::Excluded(start), Bound::Included(end)) => start >= end,
            _ => false,
        }
    }

    /// The same range as `[lower, upper)`: an inclusive lower key and an exclusive upper
    /// key, `None` for unbounded. Uses that the key right after `k` in byte order is
    /// `k ++ [0x00]`, so it is exact for every range.
    pub fn half_open(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let successor = |key: &Vec<u8>| [key.as_slice(), &[0]].concat();
        let lower = match &self.start {
            Bound::Unbounded => None,
            Bound::Included(key) => Some(key.clone()),
            Bound::Excluded(key) => Some(successor(key)),
        };
        let upper = match &self.end {
            Bound::Unbounded => None,
            Bound::Included(key) => Some(successor(key)),
            Bound::Excluded(key) => Some(key.clone()),
        };
        (lower, upper)
    }

    /// The keys in both ranges.
    pub fn intersection(&self, other: &KeyRange) -> KeyRange {
        KeyRange {
            start: tighter(&self.start, &other.start, std::cmp::Ordering::Greater),
            end: tighter(&self.end, &other.end, std::cmp::Ordering::Less),
        }
    }

    /// At least the bytes this range takes encoded.
    pub fn len_bound(&self) -> u64 {
        let bound = |bound: &Bound<Vec<u8>>| match bound {
            Bound::Included(key) | Bound::Excluded(key) => 11 + key.len() as u64,
            Bound::Unbounded => 1,
        };
        bound(&self.start) + bound(&self.end)
    }

    /// The part of this range that a forward iterator still has to read after delivering
    /// `key`: everything strictly greater. A bound that is already tighter is kept.
    pub fn after(&self, key: &[u8]) -> KeyRange {
        let start = match &self.start {
            Bound::Excluded(start) if start.as_slice() >= key => self.start.clone(),
            Bound::Included(start) if start.as_slice() > key => self.start.clone(),
            _ => Bound::Excluded(key.to_vec()),
        };
        KeyRange {
            start,
            end: self.end.clone(),
        }
    }

    /// The part of this range that a reverse iterator still has to read after delivering
    /// `key`: everything strictly smaller.
    pub fn before(&self, key: &[u8]) -> KeyRange {
        let end = match &self.end {
            Bound::Excluded(end) if end.as_slice() <= key => self.end.clone(),
            Bound::Included(end) if end.as_slice() < key => self.end.clone(),
            _ => Bound::Excluded(key.to_vec()),
        };
        KeyRange {
            start: self.start.clone(),
            end,
        }
    }
}

/// Of two bounds on the same side, the one that lets fewer keys in: the key further
/// inside (`inside` is how it compares to the other: `Greater` for lower bounds), and at
/// the same key the excluded one.
fn tighter(a: &Bound<Vec<u8>>, b: &Bound<Vec<u8>>, inside: std::cmp::Ordering) -> Bound<Vec<u8>> {
    match (a, b) {
        (Bound::Unbounded, bound) | (bound, Bound::Unbounded) => bound.clone(),
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => {
            let order = x.cmp(y);
            if order == inside || (order.is_eq() && matches!(a, Bound::Excluded(_))) {
                a.clone()
            } else {
                b.clone()
            }
        }
    }
}

/// What an iterator reads: a range, a direction, an optional limit, and which halves of each
/// entry the caller wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IterOptions {
    pub range: KeyRange,
    pub reverse: bool,
    /// At most this many entries in total; `None` for no limit.
    pub limit: Option<u64>,
    /// The caller wants keys. Keys travel on the wire regardless, because resuming after a
    /// failover needs the last key delivered.
    pub keys: bool,
    /// The caller wants values; when false the leader sends empty values.
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
    /// The options that continue this iteration on a new leader after the caller has been
    /// given `delivered` entries, the last of which had key `last_key`.
    pub fn resume_after(&self, last_key: &[u8], delivered: u64) -> IterOptions {
        let range = if self.reverse {
            self.range.before(last_key)
        } else {
            self.range.after(last_key)
        };
        IterOptions {
            range,
            limit: self.limit.map(|limit| limit.saturating_sub(delivered)),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> KeyRange {
        KeyRange {
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn resume_is_exclusive_even_for_prefix_keys() {
        let all = KeyRange::all();
        let forward = all.after(b"a");
        assert!(!forward.contains(b"a"));
        assert!(
            forward.contains(b"a\x00"),
            "a longer key with the prefix follows"
        );
        let reverse = all.before(b"ab");
        assert!(!reverse.contains(b"ab"));
        assert!(
            reverse.contains(b"a"),
            "a prefix of the last key is still to come"
        );
        assert!(reverse.contains(b"aa\xff"));
    }

    #[test]
    fn empty_ranges_and_their_half_open_form() {
        let key = |k: &[u8]| k.to_vec();
        assert!(range(Bound::Included(b"b"), Bound::Included(b"a")).is_empty());
        assert!(range(Bound::Excluded(b"a"), Bound::Excluded(b"a")).is_empty());
        assert!(range(Bound::Excluded(b"a"), Bound::Included(b"a")).is_empty());
        assert!(!range(Bound::Included(b"a"), Bound::Included(b"a")).is_empty());
        // Nothing lies between a key and the one right after it.
        assert!(range(Bound::Excluded(b"a"), Bound::Excluded(b"a\x00")).is_empty());
        assert!(!range(Bound::Excluded(b"a"), Bound::Excluded(b"a\x00\x00")).is_empty());
        assert!(!range(Bound::Excluded(b"a"), Bound::Excluded(b"a\x01")).is_empty());
        assert!(!range(Bound::Excluded(b"a"), Bound::Included(b"a\x00")).is_empty());
        assert!(!range(Bound::Included(b"a"), Bound::Excluded(b"a\x00")).is_empty());
        assert!(!KeyRange::all().is_empty());
        let r = range(Bound::Excluded(b"a"), Bound::Included(b"b"));
        assert_eq!(r.half_open(), (Some(key(b"a\x00")), Some(key(b"b\x00"))));
        for probe in [&b"a"[..], b"a\x00", b"ab", b"b", b"b\x00"] {
            let (lower, upper) = r.half_open();
            let in_half_open = lower.is_none_or(|l| probe >= l.as_slice())
                && upper.is_none_or(|u| probe < u.as_slice());
            assert_eq!(in_half_open, r.contains(probe), "{probe:?}");
        }
    }

    #[test]
    fn resume_keeps_a_tighter_existing_bound() {
        let r = range(Bound::Excluded(b"m"), Bound::Included(b"q"));
        assert_eq!(r.after(b"c").start, Bound::Excluded(b"m".to_vec()));
        assert_eq!(r.before(b"z").end, Bound::Included(b"q".to_vec()));
        assert_eq!(r.after(b"n").start, Bound::Excluded(b"n".to_vec()));
    }

    #[test]
    fn resume_reduces_the_limit_by_what_was_delivered() {
        let options = IterOptions {
            limit: Some(5),
            reverse: true,
            ..IterOptions::default()
        };
        let resumed = options.resume_after(b"k", 3);
        assert_eq!(resumed.limit, Some(2));
        assert_eq!(resumed.range.end, Bound::Excluded(b"k".to_vec()));
        assert!(resumed.reverse);
    }
}

//! An in-memory ordered store: the simulator's and the tests' backend.

use std::collections::BTreeMap;
use std::ops::Bound;

/// An ordered map from byte keys to byte values, kept in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.entries.insert(key, value);
    }

    pub fn del(&mut self, key: &[u8]) {
        self.entries.remove(key);
    }

    /// Entries with keys between `start` and `end`, in key order. A range whose start lies
    /// after its end is empty (std's `BTreeMap::range` would panic on it).
    pub fn range<'a>(
        &'a self,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let bounds = (!is_empty_range(start, end)).then_some((start, end));
        bounds
            .into_iter()
            .flat_map(|bounds| self.entries.range::<[u8], _>(bounds))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn is_empty_range(start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_del_and_ordered_ranges() {
        let mut store = MemoryStore::new();
        for key in [&b"b"[..], b"", b"a\xff", b"a", b"\x00"] {
            store.put(key.to_vec(), [key, b"!"].concat());
        }
        assert_eq!(store.get(b"a"), Some(&b"a!"[..]));
        assert_eq!(store.get(b"zz"), None);
        store.del(b"b");
        assert_eq!(store.get(b"b"), None);
        assert_eq!(store.len(), 4);

        let keys: Vec<&[u8]> = store
            .range(Bound::Excluded(b""), Bound::Unbounded)
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![&b"\x00"[..], b"a", b"a\xff"]);

        let reverse: Vec<&[u8]> = store
            .range(Bound::Unbounded, Bound::Excluded(b"a\xff"))
            .rev()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(reverse, vec![&b"a"[..], b"\x00", b""]);
    }

    #[test]
    fn inverted_and_empty_ranges_yield_nothing_instead_of_panicking() {
        let mut store = MemoryStore::new();
        store.put(b"a".to_vec(), b"1".to_vec());
        store.put(b"b".to_vec(), b"2".to_vec());
        let count = |start, end| store.range(start, end).count();
        assert_eq!(
            count(Bound::Included(&b"b"[..]), Bound::Included(&b"a"[..])),
            0
        );
        assert_eq!(
            count(Bound::Excluded(&b"a"[..]), Bound::Excluded(&b"a"[..])),
            0
        );
        assert_eq!(
            count(Bound::Excluded(&b"a"[..]), Bound::Included(&b"a"[..])),
            0
        );
        assert_eq!(
            count(Bound::Included(&b"a"[..]), Bound::Included(&b"a"[..])),
            1
        );
        assert_eq!(
            count(Bound::Included(&b"a"[..]), Bound::Excluded(&b"b"[..])),
            1
        );
    }
}

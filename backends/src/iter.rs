//! Reading a store iterator in bounded chunks, up to the options' limit. Every store hands
//! out a plain iterator of entries; this is the one place that paces it.

use party_proto::wire::Entry;

use crate::error::BackendError;

/// Entries of a store in the order asked for, read lazily from the store.
pub type EntryIter = Box<dyn Iterator<Item = Result<Entry, BackendError>> + Send>;

/// A store iterator that is read a chunk at a time and stops at a limit.
pub struct Chunks {
    inner: EntryIter,
    remaining: Option<u64>,
    exhausted: bool,
    /// Keep the values (or drop them as they are read, for an iteration of keys alone).
    values: bool,
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("remaining", &self.remaining)
            .field("exhausted", &self.exhausted)
            .finish_non_exhaustive()
    }
}

impl Chunks {
    pub fn new(inner: EntryIter, limit: Option<u64>) -> Self {
        Chunks {
            inner,
            exhausted: limit == Some(0),
            remaining: limit,
            values: true,
        }
    }

    /// Reads the values too (the default), or drops them as it reads: an iteration of keys
    /// alone then counts only the keys against a chunk's bytes.
    pub fn with_values(mut self, values: bool) -> Self {
        self.values = values;
        self
    }

    /// Up to `max` next entries, none after the one that brings their bytes
    /// ([`Entry::len_bound`]) to `max_bytes`, and whether the iterator has nothing after
    /// them.
    pub fn next_chunk(
        &mut self,
        max: usize,
        max_bytes: u64,
    ) -> Result<(Vec<Entry>, bool), BackendError> {
        let allowed = self
            .remaining
            .map_or(max, |r| max.min(usize::try_from(r).unwrap_or(usize::MAX)));
        let mut entries = Vec::with_capacity(allowed.min(1024));
        let mut bytes = 0u64;
        while !self.exhausted && entries.len() < allowed && bytes < max_bytes {
            match self.inner.next() {
                Some(entry) => {
                    let mut entry = entry?;
                    if !self.values {
                        entry.value = Vec::new();
                    }
                    bytes = bytes.saturating_add(entry.len_bound());
                    entries.push(entry);
                }
                None => self.exhausted = true,
            }
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining -= entries.len() as u64;
            if *remaining == 0 {
                self.exhausted = true;
            }
        }
        Ok((entries, self.exhausted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(value_lens: &[usize]) -> Chunks {
        let entries: Vec<Entry> = value_lens
            .iter()
            .enumerate()
            .map(|(n, len)| Entry {
                key: vec![n as u8],
                value: vec![b'v'; *len],
            })
            .collect();
        Chunks::new(Box::new(entries.into_iter().map(Ok)), None)
    }

    fn lens(chunk: &[Entry]) -> Vec<usize> {
        chunk.iter().map(|entry| entry.value.len()).collect()
    }

    /// A chunk stops after the entry that brings its bytes to the bound, so that one
    /// entry bigger than the bound still comes, alone.
    #[test]
    fn a_chunk_ends_with_the_entry_that_reaches_its_bytes() {
        // An entry of a 6-byte value counts 27 bytes (Entry::len_bound).
        let mut chunks = entries(&[6, 6, 6, 100, 6]);
        let (chunk, exhausted) = chunks.next_chunk(10, 40).unwrap();
        assert_eq!((lens(&chunk), exhausted), (vec![6, 6], false));
        let (chunk, exhausted) = chunks.next_chunk(10, 1).unwrap();
        assert_eq!((lens(&chunk), exhausted), (vec![6], false));
        let (chunk, exhausted) = chunks.next_chunk(10, 20).unwrap();
        assert_eq!((lens(&chunk), exhausted), (vec![100], false));
        let (chunk, exhausted) = chunks.next_chunk(10, u64::MAX).unwrap();
        assert_eq!((lens(&chunk), exhausted), (vec![6], true));
    }

    /// Keys alone: the values, dropped as they are read, count for nothing; and the
    /// limit ends the iteration whatever the bytes.
    #[test]
    fn keys_alone_count_only_their_bytes_and_the_limit_still_ends_it() {
        // Keys alone count 21 bytes (Entry::len_bound).
        let mut chunks = entries(&[100, 100, 100, 100]).with_values(false);
        let (chunk, exhausted) = chunks.next_chunk(10, 42).unwrap();
        assert_eq!((lens(&chunk), exhausted), (vec![0, 0], false));
        let mut chunks = Chunks::new(entries(&[6, 6, 6]).inner, Some(2));
        let (chunk, exhausted) = chunks.next_chunk(10, 1).unwrap();
        assert_eq!((lens(&chunk), exhausted), (vec![6], false));
        let (chunk, exhausted) = chunks.next_chunk(10, u64::MAX).unwrap();
        assert_eq!((lens(&chunk), exhausted), (vec![6], true), "the limit of 2");
    }
}

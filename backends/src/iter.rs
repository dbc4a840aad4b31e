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
        }
    }

    /// Up to `max` next entries, and whether the iterator has nothing after them.
    pub fn next_chunk(&mut self, max: usize) -> Result<(Vec<Entry>, bool), BackendError> {
        let allowed = self
            .remaining
            .map_or(max, |r| max.min(usize::try_from(r).unwrap_or(usize::MAX)));
        let mut entries = Vec::with_capacity(allowed.min(1024));
        while !self.exhausted && entries.len() < allowed {
            match self.inner.next() {
                Some(entry) => entries.push(entry?),
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

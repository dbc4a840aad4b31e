//! Namespaces (level's sublevels): a [`Db`] whose keys live under a prefix of its
//! parent's key space.
//!
//! A sublevel named `users` keeps its key `alice` as `!users!alice` in its parent; one named
//! `2024` inside it keeps `x` as `!users!!2024!x`. A name is any non-empty string without
//! `!`, so the prefix of one sublevel is never the start of another's (the `!` that closes
//! a name cannot appear inside one), and their key spaces are disjoint. Every key of a
//! sublevel starts with its prefix, so their order inside the sublevel is their order in
//! the store: ranges, iterators and `clear` work unchanged on the prefixed keys, and a
//! sublevel's whole key space is the one range `[!name!, !name")` (`"` is the byte after
//! `!`).
//!
//! As in level, the parent sees its sublevels' keys (a scan of the root lists
//! `!users!alice`), and a key of the parent that starts with `!name!` is a key of sublevel
//! `name`.

use std::ops::Bound;
use std::sync::Arc;

use crate::data::{IterOptions, KeyRange};
use crate::db::Db;
use crate::error::Error;

/// The byte that opens and closes each name in a prefix.
const SEPARATOR: u8 = b'!';

/// The prefix a handle's keys live under: empty for the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeySpace(Arc<[u8]>);

impl KeySpace {
    /// The key space of the sublevel `name` inside this one.
    fn inner(&self, name: &str) -> Result<KeySpace, Error> {
        if name.is_empty() || name.as_bytes().contains(&SEPARATOR) {
            return Err(Error::InvalidSublevelName {
                name: name.to_owned(),
            });
        }
        let prefix = [&self.0[..], &[SEPARATOR], name.as_bytes(), &[SEPARATOR]].concat();
        Ok(KeySpace(prefix.into()))
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// A key of this space as the store holds it.
    pub(crate) fn key(&self, key: &[u8]) -> Vec<u8> {
        if self.is_root() {
            key.to_vec()
        } else {
            [&self.0[..], key].concat()
        }
    }

    /// A key as the store holds it, as this space names it (its prefix removed).
    pub(crate) fn strip(&self, mut key: Vec<u8>) -> Vec<u8> {
        key.drain(..self.0.len().min(key.len()));
        key
    }

    /// A range of this space as a range of the store: inside the prefix's range whatever
    /// its bounds.
    pub(crate) fn range(&self, range: KeyRange) -> KeyRange {
        if self.is_root() {
            return range;
        }
        let bound = |bound: Bound<Vec<u8>>| match bound {
            Bound::Included(key) => Bound::Included(self.key(&key)),
            Bound::Excluded(key) => Bound::Excluded(self.key(&key)),
            Bound::Unbounded => Bound::Unbounded,
        };
        KeyRange {
            start: match bound(range.start) {
                Bound::Unbounded => Bound::Included(self.0.to_vec()),
                start => start,
            },
            end: match bound(range.end) {
                Bound::Unbounded => Bound::Excluded(self.end()),
                end => end,
            },
        }
    }

    /// The first key after every key of this space: the prefix with its closing `!`
    /// raised by one.
    fn end(&self) -> Vec<u8> {
        let mut end = self.0.to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        end
    }
}

impl Db {
    /// The sublevel `name` of this handle: a handle on the same party whose keys live under
    /// the prefix `!name!` of this one's, with everything a handle has (iterators, `clear`,
    /// transactions, codecs) confined to them. Nest them by calling this on a sublevel. It
    /// shares this handle: closing either closes both. `name` must be non-empty and hold no
    /// `!`.
    pub fn sublevel(&self, name: &str) -> Result<Db, Error> {
        Ok(self.with_space(self.space().inner(name)?))
    }

    /// The bytes this handle's keys are stored under (empty for the root).
    pub fn prefix(&self) -> &[u8] {
        self.space().prefix()
    }

    /// The names of the sublevels directly inside this handle that hold at least one key,
    /// in byte order. Reads one key per sublevel.
    pub async fn sublevels(&self) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        let mut from = Bound::Included(vec![SEPARATOR]);
        loop {
            let next = IterOptions::default()
                .range(KeyRange {
                    start: from,
                    end: Bound::Excluded(vec![SEPARATOR + 1]),
                })
                .limit(Some(1))
                .values(false);
            let Some(first) = self.iter(next).await?.next().await.transpose()? else {
                return Ok(names);
            };
            let Some(length) = first.key[1..].iter().position(|byte| *byte == SEPARATOR) else {
                // A key `!…` without a closing `!` belongs to no sublevel: go past it.
                from = Bound::Excluded(first.key);
                continue;
            };
            let name = &first.key[1..1 + length];
            // Only names `sublevel` takes: keys under `!!` or a name that is not UTF-8
            // belong to no sublevel a handle could be given.
            match std::str::from_utf8(name) {
                Ok(name) if !name.is_empty() => names.push(name.to_owned()),
                _ => {}
            }
            // Past every key of that sublevel: `!name"`.
            from = Bound::Included([&[SEPARATOR], name, &[SEPARATOR + 1]].concat());
        }
    }

    /// Deletes every key of the sublevel `name` of this handle (its nested sublevels
    /// included), in one atomic clear.
    pub async fn drop_sublevel(&self, name: &str) -> Result<(), Error> {
        self.sublevel(name)?.clear(KeyRange::all()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(names: &[&str]) -> KeySpace {
        names
            .iter()
            .try_fold(KeySpace::default(), |space, name| space.inner(name))
            .unwrap()
    }

    #[test]
    fn names_nest_into_prefixes_whose_ranges_hold_exactly_their_keys() {
        let users = space(&["users"]);
        assert_eq!(users.prefix(), b"!users!");
        assert_eq!(space(&["users", "2024"]).prefix(), b"!users!!2024!");
        assert_eq!(users.key(b"alice"), b"!users!alice");
        assert_eq!(users.strip(b"!users!alice".to_vec()), b"alice");
        let all = users.range(KeyRange::all());
        for inside in [&b"!users!"[..], b"!users!\xff\xff", b"!users!!2024!x"] {
            assert!(party_proto::KeyRange::from(all.clone()).contains(inside));
        }
        for outside in [
            &b"!users"[..],
            b"!users\"",
            b"!usersx!a",
            b"!user!a",
            b"users",
        ] {
            assert!(
                !party_proto::KeyRange::from(all.clone()).contains(outside),
                "{outside:?}"
            );
        }
        let some = users.range(KeyRange::all().gte("b").lt("c"));
        assert_eq!(some.start, Bound::Included(b"!users!b".to_vec()));
        assert_eq!(some.end, Bound::Excluded(b"!users!c".to_vec()));
    }

    #[test]
    fn a_name_that_is_empty_or_holds_the_separator_is_refused() {
        for bad in ["", "a!b", "!"] {
            assert!(matches!(
                KeySpace::default().inner(bad),
                Err(Error::InvalidSublevelName { .. })
            ));
        }
        assert!(KeySpace::default().inner("with space/and ümlaut").is_ok());
    }
}

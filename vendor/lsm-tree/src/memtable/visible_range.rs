// PATCHED (party): this file is new; see PATCHED.md, change 3.
//
// A range read of a memtable that yields each key once, at its newest version visible to the
// read, and seeks past the key's other versions instead of walking them. The published read
// handed every version in the range to the MVCC stream, which kept the first of each key: a
// scan of keys overwritten ten thousand times since the last flush walked all those versions.
// The MVCC stream keeps the newest version of a key across all sources, and a memtable's
// newest visible version is newer than any version it holds further down, so leaving those out
// changes nothing it yields.

use crate::key::InternalKey;
use crate::value::{InternalValue, SeqNo, UserKey, UserValue, ValueType};
use crossbeam_skiplist::map::Entry;
use crossbeam_skiplist::SkipMap;
use std::ops::Bound;

type Version<'a> = Entry<'a, InternalKey, UserValue>;

/// How many entries the front steps over one at a time before it seeks. A key written once
/// costs one step, as in a plain walk; a key written many times costs a few steps and a seek
/// (RocksDB's `max_sequential_skip_in_iterations` makes the same trade, at 8).
const STEPS_BEFORE_SEEK: usize = 8;

enum Cursor<'a> {
    /// Not placed yet: placed at the range's end on the first call from that end.
    Unplaced,
    /// At the next entry to look at from this end.
    At(Version<'a>),
    Done,
}

pub struct VisibleRange<'a> {
    items: &'a SkipMap<InternalKey, UserValue>,
    /// Versions with a lower sequence number are visible; without one, all are.
    seqno: Option<SeqNo>,
    bounds: (Bound<UserKey>, Bound<UserKey>),
    front: Cursor<'a>,
    back: Cursor<'a>,
    /// The last keys yielded from the front and from the back: neither end passes the other's.
    front_key: Option<UserKey>,
    back_key: Option<UserKey>,
}

/// Where `user_key`'s version `seqno` sorts: a key's versions sort newest first.
fn version_at(user_key: &UserKey, seqno: SeqNo) -> InternalKey {
    InternalKey::new(user_key.clone(), seqno, ValueType::Value)
}

impl<'a> VisibleRange<'a> {
    /// The keys of `items` within `bounds`, each at its newest version older than `seqno`
    /// (at its newest, without one).
    pub fn new(
        items: &'a SkipMap<InternalKey, UserValue>,
        bounds: (Bound<UserKey>, Bound<UserKey>),
        seqno: Option<SeqNo>,
    ) -> Self {
        // Nothing is older than sequence number 0.
        let cursor = || {
            if seqno == Some(0) {
                Cursor::Done
            } else {
                Cursor::Unplaced
            }
        };
        Self {
            items,
            seqno,
            bounds,
            front: cursor(),
            back: cursor(),
            front_key: None,
            back_key: None,
        }
    }

    fn visible(&self, entry: &Version<'a>) -> bool {
        self.seqno.map_or(true, |seqno| entry.key().seqno < seqno)
    }

    /// Where `user_key`'s newest visible version sorts.
    fn newest_visible_of(&self, user_key: &UserKey) -> InternalKey {
        // `new` made sure that a sequence number here is not 0.
        version_at(user_key, self.seqno.map_or(SeqNo::MAX, |seqno| seqno - 1))
    }

    fn below_end(&self, user_key: &UserKey) -> bool {
        let within = match &self.bounds.1 {
            Bound::Included(end) => user_key <= end,
            Bound::Excluded(end) => user_key < end,
            Bound::Unbounded => true,
        };
        within && self.back_key.as_ref().map_or(true, |back| user_key < back)
    }

    fn above_start(&self, user_key: &UserKey) -> bool {
        let within = match &self.bounds.0 {
            Bound::Included(start) => user_key >= start,
            Bound::Excluded(start) => user_key > start,
            Bound::Unbounded => true,
        };
        within && self.front_key.as_ref().map_or(true, |front| user_key > front)
    }

    /// The first entry of the range: the newest version of its first key.
    fn first_in_range(&self) -> Option<Version<'a>> {
        match &self.bounds.0 {
            Bound::Included(start) => self
                .items
                .lower_bound(Bound::Included(&version_at(start, SeqNo::MAX))),
            Bound::Excluded(start) => self
                .items
                .lower_bound(Bound::Excluded(&version_at(start, 0))),
            Bound::Unbounded => self.items.front(),
        }
    }

    /// The last entry of the range: the oldest version of its last key.
    fn last_in_range(&self) -> Option<Version<'a>> {
        match &self.bounds.1 {
            Bound::Included(end) => self
                .items
                .upper_bound(Bound::Included(&version_at(end, 0))),
            Bound::Excluded(end) => self
                .items
                .upper_bound(Bound::Excluded(&version_at(end, SeqNo::MAX))),
            Bound::Unbounded => self.items.back(),
        }
    }

    /// The first entry of the key after `user_key`, `entry` being one of `user_key`'s.
    fn after_key(&self, mut entry: Version<'a>, user_key: &UserKey) -> Option<Version<'a>> {
        for _ in 0..STEPS_BEFORE_SEEK {
            entry = entry.next()?;
            if entry.key().user_key != *user_key {
                return Some(entry);
            }
        }
        self.items
            .lower_bound(Bound::Excluded(&version_at(user_key, 0)))
    }

    /// The last entry of the key before `user_key`. (crossbeam's skiplist has no back
    /// links: every step back is a search from the top, so a seek costs no more.)
    fn before_key(&self, user_key: &UserKey) -> Option<Version<'a>> {
        self.items
            .upper_bound(Bound::Excluded(&version_at(user_key, SeqNo::MAX)))
    }

    /// From `entry`, one of `user_key`'s versions, forward to the key's newest visible
    /// version; or, when it has none, the first entry of the next key.
    fn newest_visible_onward(
        &self,
        mut entry: Version<'a>,
        user_key: &UserKey,
    ) -> Result<Version<'a>, Option<Version<'a>>> {
        for _ in 0..STEPS_BEFORE_SEEK {
            if entry.key().user_key != *user_key {
                return Err(Some(entry));
            }
            if self.visible(&entry) {
                return Ok(entry);
            }
            entry = entry.next().ok_or(None)?;
        }
        let found = self
            .items
            .lower_bound(Bound::Included(&self.newest_visible_of(user_key)))
            .ok_or(None)?;
        if found.key().user_key == *user_key {
            Ok(found)
        } else {
            Err(Some(found))
        }
    }

    /// From `oldest`, the oldest version of its key and a visible one: the key's newest
    /// visible version, and the last entry of the key before.
    fn newest_visible_backward(
        &self,
        oldest: Version<'a>,
        user_key: &UserKey,
    ) -> (Version<'a>, Option<Version<'a>>) {
        match oldest.prev() {
            // Most keys have one version: one step, as the published read took.
            Some(before) if before.key().user_key != *user_key => (oldest, Some(before)),
            None => (oldest, None),
            Some(newer) => {
                let newest = if self.visible(&newer) {
                    self.items
                        .lower_bound(Bound::Included(&self.newest_visible_of(user_key)))
                        .unwrap_or(newer)
                } else {
                    oldest
                };
                (newest, self.before_key(user_key))
            }
        }
    }
}

fn to_value(entry: &Version<'_>) -> InternalValue {
    InternalValue {
        key: entry.key().clone(),
        value: entry.value().clone(),
    }
}

impl Iterator for VisibleRange<'_> {
    type Item = InternalValue;

    fn next(&mut self) -> Option<InternalValue> {
        let mut entry = match std::mem::replace(&mut self.front, Cursor::Done) {
            Cursor::Unplaced => self.first_in_range()?,
            Cursor::At(entry) => entry,
            Cursor::Done => return None,
        };
        loop {
            let user_key = entry.key().user_key.clone();
            if !self.below_end(&user_key) {
                return None;
            }
            match self.newest_visible_onward(entry, &user_key) {
                Ok(visible) => {
                    let value = to_value(&visible);
                    if let Some(next) = self.after_key(visible, &user_key) {
                        self.front = Cursor::At(next);
                    }
                    self.front_key = Some(user_key);
                    return Some(value);
                }
                Err(next_key) => entry = next_key?,
            }
        }
    }
}

impl DoubleEndedIterator for VisibleRange<'_> {
    fn next_back(&mut self) -> Option<InternalValue> {
        // From the back, a key is reached at its oldest version.
        let mut entry = match std::mem::replace(&mut self.back, Cursor::Done) {
            Cursor::Unplaced => self.last_in_range()?,
            Cursor::At(entry) => entry,
            Cursor::Done => return None,
        };
        loop {
            let user_key = entry.key().user_key.clone();
            if !self.above_start(&user_key) {
                return None;
            }
            if self.visible(&entry) {
                let (visible, before) = self.newest_visible_backward(entry, &user_key);
                let value = to_value(&visible);
                if let Some(before) = before {
                    self.back = Cursor::At(before);
                }
                self.back_key = Some(user_key);
                return Some(value);
            }
            // Its oldest version is too new: so are all the others.
            entry = self.before_key(&user_key)?;
        }
    }
}

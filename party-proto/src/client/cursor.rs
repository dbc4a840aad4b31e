//! The follower's side of one iterator: what has reached the caller, what is buffered, how
//! many more entries the leader may send, and how to resume on a new leader.
//!
//! The cursor remembers the last key *delivered to the caller*, not the last key received.
//! After a failover it drops what it had buffered and re-opens from an exclusive bound on
//! that key, so the caller sees no entry twice and misses none — also when keys are
//! prefixes of each other, and in reverse.

use std::collections::VecDeque;

use crate::error::ErrorCode;
use crate::ids::IterId;
use crate::range::IterOptions;
use crate::wire::{ClientMessage, Entry};

/// What the caller gets when it asks an iterator for entries.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum IterPoll {
    /// The next entries, in order. With `keys: false` or `values: false` in the options the
    /// unwanted half of each entry is empty.
    Entries(Vec<Entry>),
    /// Nothing yet; [`super::ClientOutput::IterReady`] says when to ask again.
    Pending,
    /// Every entry has been delivered; the iterator is gone.
    Done,
    /// The iterator failed; it is gone.
    Failed(ErrorCode),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
enum Status {
    /// Must be (re-)opened on the next connection.
    Unopened,
    /// Open on the current connection.
    Open,
    /// The leader sent its end; the buffer holds what is left.
    Ended,
    Failed(ErrorCode),
}

/// The credits to grant the leader of a stream with `window` (entries of an iterator,
/// groups of a subscription) once what the caller has not taken (`held`) and what the
/// leader may still send (`credits`) have fallen to half of it: as many as fill it again.
pub(crate) fn refill(window: u32, credits: &mut u32, held: usize) -> Option<u32> {
    let in_hand = *credits as usize + held;
    let window = window as usize;
    if in_hand > window / 2 {
        return None;
    }
    let grant = u32::try_from(window - in_hand).unwrap_or(u32::MAX);
    *credits += grant;
    Some(grant)
}

/// The most entries an iterator grants before any has come and told their size: as many
/// as a window held before windows were sized in bytes too.
pub const UNSIZED_WINDOW: u32 = 1024;

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct Cursor {
    options: IterOptions,
    /// The window the caller asked for.
    wanted_window: u32,
    /// How many entries the leader may send without asking on the current opening: the
    /// wanted window, cut to what the leader allows. The buffer never holds more.
    window: u32,
    /// About how many bytes of entries may be buffered or on their way: see
    /// [`Cursor::sized_window`].
    window_bytes: u64,
    /// The entries' recent mean size ([`Entry::len_bound`]), once some have come: each
    /// message's mean counts for half, so the window follows entries that grow or shrink.
    entry_bytes: Option<u64>,
    delivered: u64,
    last_key: Option<Vec<u8>>,
    buffer: VecDeque<Entry>,
    /// Entries the leader may still send on the current opening.
    credits: u32,
    /// The commit the first opening's snapshot was taken after.
    at: Option<crate::feed::CommitSeq>,
    status: Status,
    bugs: crate::bugs::Bugs,
}

impl Cursor {
    pub(crate) fn new(options: IterOptions, window: u32, window_bytes: u64) -> Self {
        let status = if options.limit == Some(0) {
            Status::Ended
        } else {
            Status::Unopened
        };
        Cursor {
            options,
            wanted_window: window.max(1),
            window: window.max(1),
            window_bytes,
            entry_bytes: None,
            delivered: 0,
            last_key: None,
            buffer: VecDeque::new(),
            credits: 0,
            at: None,
            status,
            bugs: crate::bugs::Bugs::default(),
        }
    }

    #[cfg(feature = "bug-injection")]
    pub(crate) fn inject(&mut self, bugs: crate::bugs::Bugs) {
        self.bugs = bugs;
    }

    /// The message that opens the rest of this iteration on a new connection, if it needs
    /// one, granting at most `credit_cap` entries at a time (the leader's limit).
    pub(crate) fn open(&mut self, iter: IterId, credit_cap: u32) -> Option<ClientMessage> {
        if self.status != Status::Unopened {
            return None;
        }
        let options = match &self.last_key {
            Some(key) => self.options.resume_after(key, self.delivered),
            None => self.options.clone(),
        };
        #[cfg(feature = "bug-injection")]
        let options = match &self.last_key {
            Some(key) if self.bugs.inclusive_resume => {
                let mut inclusive = options;
                let bound = std::ops::Bound::Included(key.clone());
                if self.options.reverse {
                    inclusive.range.end = bound;
                } else {
                    inclusive.range.start = bound;
                }
                inclusive.limit = self
                    .options
                    .limit
                    .map(|l| l.saturating_sub(self.delivered) + 1);
                inclusive
            }
            _ => options,
        };
        self.status = Status::Open;
        self.window = self.wanted_window.min(credit_cap).max(1);
        self.credits = self.sized_window();
        Some(ClientMessage::IterOpen {
            iter,
            options,
            credits: self.credits,
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.status == Status::Open
    }

    /// The leader said which commit the opening's snapshot follows; only the first
    /// opening's counts, and only if it comes before any entry was taken (a later snapshot
    /// would say the iteration missed nothing it may have missed).
    pub(crate) fn opened_at(&mut self, seq: crate::feed::CommitSeq) {
        if self.delivered == 0 && self.buffer.is_empty() {
            self.at.get_or_insert(seq);
        }
    }

    pub(crate) fn at(&self) -> Option<crate::feed::CommitSeq> {
        self.at
    }

    /// The connection dropped. With `retry`, undelivered entries are dropped and the cursor
    /// waits to re-open; without, an iterator that was reading from the lost leader fails,
    /// since it cannot continue on the same snapshot.
    pub(crate) fn connection_lost(&mut self, retry: bool) {
        if !self.is_open() {
            return;
        }
        if retry {
            self.buffer.clear();
            self.credits = 0;
            self.status = Status::Unopened;
        } else {
            self.fail(ErrorCode::ConnectionLost);
        }
    }

    pub(crate) fn receive(&mut self, entries: Vec<Entry>) {
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        self.credits = self.credits.saturating_sub(count);
        if !entries.is_empty() {
            let bytes: u64 = entries.iter().map(Entry::len_bound).sum();
            let mean = bytes.div_ceil(entries.len() as u64);
            self.entry_bytes = Some(self.entry_bytes.map_or(mean, |before| (before + mean) / 2));
        }
        self.buffer.extend(entries);
    }

    /// The window in entries that the byte window holds at the entries' recent mean size:
    /// big values get few credits, small ones the whole window. Before any entry has come,
    /// at most [`UNSIZED_WINDOW`].
    fn sized_window(&self) -> u32 {
        let Some(mean) = self.entry_bytes else {
            return self.window.min(UNSIZED_WINDOW);
        };
        let fits = u32::try_from(self.window_bytes / mean.max(1)).unwrap_or(u32::MAX);
        self.window.min(fits).max(1)
    }

    pub(crate) fn end(&mut self) {
        if self.is_open() {
            self.status = Status::Ended;
        }
    }

    pub(crate) fn fail(&mut self, error: ErrorCode) {
        self.buffer.clear();
        self.status = Status::Failed(error);
    }

    /// Hands up to `max` entries to the caller, and the credits to grant the leader, if the
    /// buffer and the outstanding credits have fallen to half the window.
    pub(crate) fn take(&mut self, max: usize) -> (IterPoll, Option<u32>) {
        if let Status::Failed(error) = &self.status {
            return (IterPoll::Failed(error.clone()), None);
        }
        let remaining = self.options.limit.map_or(usize::MAX, |limit| {
            usize::try_from(limit.saturating_sub(self.delivered)).unwrap_or(usize::MAX)
        });
        let count = max.min(self.buffer.len()).min(remaining);
        if count == 0 {
            let poll = if remaining == 0 || self.status == Status::Ended {
                IterPoll::Done
            } else {
                IterPoll::Pending
            };
            return (poll, None);
        }
        let mut entries: Vec<Entry> = self.buffer.drain(..count).collect();
        self.delivered += count as u64;
        self.last_key = entries.last().map(|entry| entry.key.clone());
        if !self.options.keys || !self.options.values {
            for entry in &mut entries {
                if !self.options.keys {
                    entry.key = Vec::new();
                }
                if !self.options.values {
                    entry.value = Vec::new();
                }
            }
        }
        (IterPoll::Entries(entries), self.credits_to_grant())
    }

    fn credits_to_grant(&mut self) -> Option<u32> {
        if !self.is_open() {
            return None;
        }
        refill(self.sized_window(), &mut self.credits, self.buffer.len())
    }

    /// Still to be opened, or open: neither ended nor failed.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.status, Status::Unopened | Status::Open)
    }

    /// Whether the caller has everything: the limit is reached, or the leader ended and the
    /// buffer is empty.
    pub(crate) fn is_finished(&self) -> bool {
        let limit_reached = self.options.limit.is_some_and(|l| self.delivered >= l);
        limit_reached || (self.status == Status::Ended && self.buffer.is_empty())
    }
}

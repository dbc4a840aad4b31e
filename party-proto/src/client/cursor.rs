//! The follower's side of one iterator: what has reached the caller, what is buffered, how
//! many more entries the leader may send, and how to resume on a new leader.
//!
//! The cursor remembers the last key *delivered to the caller*, not the last key received.
//! After a failover it drops what it had buffered and re-opens from an exclusive bound on
//! that key, so the caller sees no entry twice and misses none — also when keys are
//! prefixes of each other, and in reverse.

use std::collections::VecDeque;

use crate::error::ErrorCode;
use crate::ids::{IterId, RequestId};
use crate::range::IterOptions;
use crate::time::Timestamp;
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

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct Cursor {
    options: IterOptions,
    /// The window the caller asked for.
    wanted_window: u32,
    /// How many entries the leader may send without asking on the current opening: the
    /// wanted window, cut to what the leader allows. The buffer never holds more.
    window: u32,
    /// How many bytes of entries ([`Entry::len_bound`]) may be buffered or on their way
    /// at once, but for the one entry each pull out may pass its bytes by.
    window_bytes: u64,
    delivered: u64,
    last_key: Option<Vec<u8>>,
    buffer: VecDeque<Entry>,
    /// The bytes of the entries in the buffer.
    buffered_bytes: u64,
    /// Entries the leader may still send on the current opening.
    credits: u32,
    /// Bytes of entries the leader may still send on the current opening: below zero when
    /// a pull passed them by its last entry, as the leader counts them.
    credit_bytes: i128,
    /// What the caller has taken since the last grant, entries and bytes: the next grant
    /// comes once it is half a window of either.
    taken: u32,
    taken_bytes: u64,
    /// The commit the first opening's snapshot was taken after.
    at: Option<crate::feed::CommitSeq>,
    /// The first request issued after this iterator: each opening goes out once every
    /// request before it is sent, and before it, so that the leader's snapshot holds the
    /// operations issued before the iterator and none issued after.
    opens_before: RequestId,
    /// When the caller, waiting for entries, gives up ([`super::ClientConfig::request_timeout`]):
    /// set by a take that finds nothing, cleared by one that finds entries.
    pub(super) deadline: Option<Timestamp>,
    status: Status,
    bugs: crate::bugs::Bugs,
}

impl Cursor {
    pub(crate) fn new(
        options: IterOptions,
        window: u32,
        window_bytes: u64,
        opens_before: RequestId,
    ) -> Self {
        let window_bytes = window_bytes.max(1);
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
            delivered: 0,
            last_key: None,
            buffer: VecDeque::new(),
            buffered_bytes: 0,
            credits: 0,
            credit_bytes: 0,
            taken: 0,
            taken_bytes: 0,
            at: None,
            opens_before,
            deadline: None,
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
        self.credits = self.window;
        self.credit_bytes = i128::from(self.window_bytes);
        (self.taken, self.taken_bytes) = (0, 0);
        Some(ClientMessage::IterOpen {
            iter,
            options,
            credits: self.credits,
            bytes: self.window_bytes,
        })
    }

    /// Whether it waits for an opening on the current connection, and if so the first
    /// request that must not go out before it.
    pub(crate) fn awaits_opening(&self) -> Option<RequestId> {
        #[cfg(feature = "bug-injection")]
        if self.bugs.iter_opens_early {
            return (self.status == Status::Unopened).then_some(RequestId(0));
        }
        (self.status == Status::Unopened).then_some(self.opens_before)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.status == Status::Open
    }

    /// The leader said which commit the opening's snapshot follows; only the first
    /// opening's counts, and only if it comes before any entry was taken (a later snapshot
    /// would say the iteration missed nothing it may have missed).
    pub(crate) fn opened_at(&mut self, seq: crate::feed::CommitSeq) {
        #[cfg(feature = "bug-injection")]
        if self.bugs.iter_at_resumed {
            self.at = Some(seq);
            return;
        }
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
            self.buffered_bytes = 0;
            self.credits = 0;
            self.credit_bytes = 0;
            self.status = Status::Unopened;
        } else {
            self.fail(ErrorCode::ConnectionLost);
        }
    }

    /// Takes entries the leader sent. More than the credits it was given is the leader's
    /// mistake, and refused: the buffer could otherwise grow as long as it sent.
    pub(crate) fn receive(&mut self, entries: Vec<Entry>) -> Result<(), ErrorCode> {
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        if count > self.credits {
            return Err(ErrorCode::Malformed(format!(
                "the leader sent {count} entries of an iterator it had {} credits for",
                self.credits
            )));
        }
        let bytes: u64 = entries.iter().map(Entry::len_bound).sum();
        self.credits = self.credits.saturating_sub(count);
        self.credit_bytes -= i128::from(bytes);
        self.buffered_bytes = self.buffered_bytes.saturating_add(bytes);
        self.buffer.extend(entries);
        Ok(())
    }

    pub(crate) fn end(&mut self) {
        if self.is_open() {
            self.status = Status::Ended;
        }
    }

    pub(crate) fn fail(&mut self, error: ErrorCode) {
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.status = Status::Failed(error);
    }

    /// Hands up to `max` entries to the caller, and the credits (entries, bytes) to grant
    /// the leader once the caller has taken half a window of either since the last grant.
    pub(crate) fn take(&mut self, max: usize) -> (IterPoll, Option<(u32, u64)>) {
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
        let bytes: u64 = entries.iter().map(Entry::len_bound).sum();
        self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes);
        self.taken = self.taken.saturating_add(count as u32);
        self.taken_bytes = self.taken_bytes.saturating_add(bytes);
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

    /// As many entries and bytes as fill the window again, once the caller has taken half
    /// of it in entries or in bytes since the last grant: the leader, which runs out of
    /// either, never waits for less than half a window, and is never left with neither.
    fn credits_to_grant(&mut self) -> Option<(u32, u64)> {
        if !self.is_open() {
            return None;
        }
        let half_taken = u64::from(self.taken) * 2 >= u64::from(self.window)
            || self.taken_bytes.saturating_mul(2) >= self.window_bytes;
        if !half_taken {
            return None;
        }
        (self.taken, self.taken_bytes) = (0, 0);
        let held = self.credits as usize + self.buffer.len();
        let grant = u32::try_from((self.window as usize).saturating_sub(held)).unwrap_or(0);
        let held_bytes = self.credit_bytes + i128::from(self.buffered_bytes);
        let grant_bytes = (i128::from(self.window_bytes) - held_bytes).max(0) as u64;
        self.credits += grant;
        self.credit_bytes += i128::from(grant_bytes);
        (grant > 0 || grant_bytes > 0).then_some((grant, grant_bytes))
    }

    /// Whether a take now would find nothing for the caller and wait (asked only of an
    /// iterator a take found waiting, so short of its limit).
    pub(crate) fn would_wait(&self) -> bool {
        self.is_live() && self.buffer.is_empty()
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

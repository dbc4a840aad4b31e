//! A handle's view of failovers: how many it has lived through, why the last one happened
//! and how long the handle was without a leader. Pure bookkeeping for status displays and
//! logs; no decision depends on it.

use std::time::Duration;

use crate::time::Timestamp;
use crate::wire::LeaveCause;

/// Why a handle's leader went away.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeoverCause {
    /// The connection ended without a word: the leader crashed or was killed.
    Crash,
    /// The leader said it was closing: a hand-over.
    HandOver,
    /// The leader lost its lock (this handle's own, or the one it followed said so).
    LockLost,
    /// The leader's store failed (this handle's own, or the one it followed said so).
    StoreFailed,
}

impl From<LeaveCause> for TakeoverCause {
    fn from(cause: LeaveCause) -> Self {
        match cause {
            LeaveCause::Closing => TakeoverCause::HandOver,
            LeaveCause::LockLost => TakeoverCause::LockLost,
            LeaveCause::StoreFailed => TakeoverCause::StoreFailed,
        }
    }
}

/// One failover as the handle saw it.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Takeover {
    pub cause: TakeoverCause,
    /// From losing the leader to being served again (by a new leader or as the leader).
    pub paused: Duration,
}

/// The failovers of one handle.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Takeovers {
    /// Failovers completed: the handle lost its leader and was served again.
    pub count: u64,
    pub last: Option<Takeover>,
    /// The leader of this term is gone since then, for this cause; not served again yet.
    lost: Option<(Timestamp, TakeoverCause, Option<u64>)>,
}

impl Takeovers {
    /// The handle lost the leader it had, of generation `term`. A second loss before it is
    /// served again (the next leader died in turn) counts from the first.
    pub fn leader_lost(&mut self, now: Timestamp, cause: TakeoverCause, term: Option<u64>) {
        self.lost.get_or_insert((now, cause, term));
    }

    /// The handle is served again, by the leader of generation `term`; gives the failover
    /// this completes, if it does. Served again by the leader it lost (its connection
    /// broke, the leader lives on), it lived through no failover.
    pub fn served(&mut self, now: Timestamp, term: Option<u64>) -> Option<Takeover> {
        let (since, cause, lost_term) = self.lost.take()?;
        if lost_term.is_some() && lost_term == term {
            return None;
        }
        let takeover = Takeover {
            cause,
            paused: now.saturating_since(since),
        };
        self.count += 1;
        self.last = Some(takeover);
        Some(takeover)
    }
}

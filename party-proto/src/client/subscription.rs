//! The follower's side of one change feed subscription: the next commit it has not seen,
//! the complete groups waiting for the caller, how many more the leader may send, and how
//! to resume on a new leader.
//!
//! The position is the number of the next group not yet handed to the caller, and moves
//! only when a whole group is (or when the leader says the groups before a number held
//! nothing in the range, or were trimmed). A group that arrives in several frames is kept
//! aside until its last: after a failover the subscription re-opens from the position on
//! the new leader, which reads the same groups from the store's change log, so the caller
//! sees each group once, whole, in commit order.

use std::collections::VecDeque;

use crate::error::ErrorCode;
use crate::feed::{Change, CommitSeq};
use crate::ids::WatchId;
use crate::range::KeyRange;
use crate::wire::ClientMessage;

/// What a subscription hands the caller, in order.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The changes one committed group made in the range, in the order it made them.
    Changes {
        seq: CommitSeq,
        changes: Vec<Change>,
    },
    /// `missed` groups (of any range) left the store's change log before this subscription
    /// read them: their changes are lost to it. It goes on from `resume`.
    Lagged { missed: u64, resume: CommitSeq },
}

/// What the caller gets when it asks a subscription for events.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum WatchPoll {
    Events(Vec<WatchEvent>),
    /// Nothing yet; [`super::ClientOutput::WatchReady`] says when to ask again.
    Pending,
    /// The subscription failed; it is gone.
    Failed(ErrorCode),
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
enum Status {
    /// Must be (re-)opened on the next connection.
    Unopened,
    /// Open on the current connection.
    Open,
    Failed(ErrorCode),
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct Subscription {
    range: KeyRange,
    /// The next group not received whole: from the asked commit, or (`None` until then)
    /// where the leader says the subscription starts.
    next: Option<CommitSeq>,
    /// Complete groups and lag reports the caller has not taken, at most `window` groups.
    ready: VecDeque<WatchEvent>,
    /// The frames so far of a group that came in several.
    partial: Option<(CommitSeq, Vec<Change>)>,
    wanted_window: u32,
    window: u32,
    /// Groups the leader may still send on the current opening.
    credits: u32,
    /// A leader said where the subscription starts: it can be served.
    started: bool,
    status: Status,
    bugs: crate::bugs::Bugs,
}

impl Subscription {
    pub(crate) fn new(range: KeyRange, from: Option<CommitSeq>, window: u32) -> Self {
        Subscription {
            range,
            // Commit 1 is a store's first: from 0 is from there, as the leader reads it.
            next: from.map(|from| from.max(CommitSeq::FIRST)),
            ready: VecDeque::new(),
            partial: None,
            wanted_window: window.max(1),
            window: window.max(1),
            credits: 0,
            started: false,
            status: Status::Unopened,
            bugs: crate::bugs::Bugs::default(),
        }
    }

    #[cfg(feature = "bug-injection")]
    pub(crate) fn inject(&mut self, bugs: crate::bugs::Bugs) {
        self.bugs = bugs;
    }

    /// The first group not handed to the caller yet; `None` until a leader said where it
    /// starts, even from a given commit: until then it may still be refused.
    pub(crate) fn position(&self) -> Option<CommitSeq> {
        if !self.started {
            return None;
        }
        match self.ready.front() {
            Some(WatchEvent::Changes { seq, .. }) => Some(*seq),
            Some(WatchEvent::Lagged { missed, resume }) => {
                Some(CommitSeq(resume.0.saturating_sub(*missed)))
            }
            None => self.next,
        }
    }

    /// The message that opens the subscription on a new connection, from where it stands,
    /// granting at most `credit_cap` groups (the leader's limit) less what is waiting.
    pub(crate) fn open(&mut self, watch: WatchId, credit_cap: u32) -> Option<ClientMessage> {
        if self.status != Status::Unopened {
            return None;
        }
        self.status = Status::Open;
        self.window = self.wanted_window.min(credit_cap).max(1);
        let waiting = u32::try_from(self.ready.len()).unwrap_or(u32::MAX);
        self.credits = self.window.saturating_sub(waiting);
        #[cfg_attr(not(feature = "bug-injection"), allow(unused_mut))]
        let mut from = self.next;
        #[cfg(feature = "bug-injection")]
        if self.bugs.resume_past {
            from = from.map(CommitSeq::next);
        }
        Some(ClientMessage::WatchOpen {
            watch,
            range: self.range.clone(),
            from,
            credits: self.credits,
        })
    }

    pub(crate) fn is_open(&self) -> bool {
        self.status == Status::Open
    }

    pub(crate) fn is_failed(&self) -> bool {
        matches!(self.status, Status::Failed(_))
    }

    /// The connection dropped. With `retry` the subscription re-opens from its position on
    /// the next leader; without, it fails.
    pub(crate) fn connection_lost(&mut self, retry: bool) {
        if !self.is_open() {
            return;
        }
        self.partial = None;
        if retry {
            self.credits = 0;
            self.status = Status::Unopened;
        } else {
            self.fail(ErrorCode::ConnectionLost);
        }
    }

    pub(crate) fn started(&mut self, from: CommitSeq) {
        self.started = true;
        self.next.get_or_insert(from);
    }

    /// Takes in a frame of a group. A leader that sends a group past the credits it was
    /// given, or starts another group before it has ended one, is refused: the groups
    /// waiting, or the unfinished groups kept aside, would grow for as long as it sent.
    /// (One group's frames are not bounded: a group is as large as the writes committed
    /// together.)
    pub(crate) fn data(
        &mut self,
        seq: CommitSeq,
        changes: Vec<Change>,
        complete: bool,
    ) -> Result<(), ErrorCode> {
        if self.next.is_some_and(|next| seq < next) {
            // Already handed over: a leader never sends this, the check keeps it once.
            return Ok(());
        }
        if self.credits == 0 {
            return Err(ErrorCode::Malformed(format!(
                "the leader sent group {} of a subscription it had no credits for",
                seq.0
            )));
        }
        let mut group = match self.partial.take() {
            Some((partial_seq, mut partial)) if partial_seq == seq => {
                partial.extend(changes);
                partial
            }
            Some((partial_seq, _)) => {
                return Err(ErrorCode::Malformed(format!(
                    "the leader sent group {} of a subscription before it ended group {}",
                    seq.0, partial_seq.0
                )));
            }
            None => changes,
        };
        if !complete {
            self.partial = Some((seq, std::mem::take(&mut group)));
            return Ok(());
        }
        self.credits = self.credits.saturating_sub(1);
        self.next = Some(seq.next());
        self.ready.push_back(WatchEvent::Changes {
            seq,
            changes: group,
        });
        Ok(())
    }

    pub(crate) fn progress(&mut self, through: CommitSeq) {
        if self.next.is_none_or(|next| next < through) {
            self.next = Some(through);
        }
    }

    pub(crate) fn lagged(&mut self, missed: u64, resume: CommitSeq) {
        self.next = Some(resume);
        #[cfg(feature = "bug-injection")]
        if self.bugs.hide_lag {
            return;
        }
        self.ready.push_back(WatchEvent::Lagged { missed, resume });
    }

    pub(crate) fn fail(&mut self, error: ErrorCode) {
        self.ready.clear();
        self.partial = None;
        self.status = Status::Failed(error);
    }

    /// Hands the caller up to `max` events, and the credits to grant the leader once what
    /// is waiting and what may still come has fallen to half the window.
    pub(crate) fn take(&mut self, max: usize) -> (WatchPoll, Option<u32>) {
        if let Status::Failed(error) = &self.status {
            return (WatchPoll::Failed(error.clone()), None);
        }
        let count = max.min(self.ready.len());
        if count == 0 {
            return (WatchPoll::Pending, None);
        }
        let events = self.ready.drain(..count).collect();
        (WatchPoll::Events(events), self.credits_to_grant())
    }

    fn credits_to_grant(&mut self) -> Option<u32> {
        if !self.is_open() {
            return None;
        }
        refill(self.window, &mut self.credits, self.ready.len())
    }
}

/// The credits to grant the leader of a subscription with `window` groups once what the
/// caller has not taken (`held`) and what the leader may still send (`credits`) have
/// fallen to half of it: as many as fill it again.
fn refill(window: u32, credits: &mut u32, held: usize) -> Option<u32> {
    let in_hand = *credits as usize + held;
    let window = window as usize;
    if in_hand > window / 2 {
        return None;
    }
    let grant = u32::try_from(window - in_hand).unwrap_or(u32::MAX);
    *credits += grant;
    Some(grant)
}

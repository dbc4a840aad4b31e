//! The change feed: [`Db::watch`] follows the writes any process commits to a range, in
//! commit order, across failovers, and [`Iter::seq`](crate::Iter::seq) says where an
//! iteration read, so that a range can be loaded and then followed with no gap and no
//! repeat.
//!
//! Every decision is party-proto's: the leader numbers each committed group and stores its
//! writes in the change log in the same commit (`party_proto::feed`), a subscription
//! reads that log from its position on whichever process leads (its server session), and
//! the follower re-opens it from there after a failover (its client session). This is
//! the handle's side: the commands, and the changes as the caller gets them, keys
//! confined to the handle's sublevel.

use std::collections::VecDeque;
use std::ops::Bound;

use party_proto::{WatchEvent, WatchId, WatchPoll};
use tokio::sync::oneshot;

use crate::data::KeyRange;
use crate::db::Db;
use crate::driver::Command;
use crate::error::Error;
use crate::opening::Opening;
use crate::sublevel::KeySpace;

/// The number of a commit: 1 for the first group of writes a store ever committed, then
/// one more for each, with no gap, whichever process led. Every write of one group shares
/// its number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommitSeq(pub u64);

impl CommitSeq {
    /// The commit after this one.
    pub fn next(self) -> CommitSeq {
        CommitSeq(self.0.saturating_add(1))
    }
}

impl From<party_proto::CommitSeq> for CommitSeq {
    fn from(seq: party_proto::CommitSeq) -> Self {
        CommitSeq(seq.0)
    }
}

impl From<CommitSeq> for party_proto::CommitSeq {
    fn from(seq: CommitSeq) -> Self {
        party_proto::CommitSeq(seq.0)
    }
}

/// How much of the change log the leader keeps for subscribers that fall behind (see
/// [`crate::Options::change_retention`]): the newest `groups` commits, at most `bytes` of
/// them, and always the newest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeRetention {
    pub groups: u64,
    pub bytes: u64,
}

impl Default for ChangeRetention {
    fn default() -> Self {
        let proto = party_proto::ChangeRetention::default();
        ChangeRetention {
            groups: proto.groups,
            bytes: proto.bytes,
        }
    }
}

impl From<ChangeRetention> for party_proto::ChangeRetention {
    fn from(retention: ChangeRetention) -> Self {
        party_proto::ChangeRetention {
            groups: retention.groups,
            bytes: retention.bytes,
        }
    }
}

/// One committed write, as a subscriber gets it. `seq` numbers the commit (a group of
/// writes committed together shares one); changes come in commit order, and within a
/// commit in the order its writes were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put {
        seq: CommitSeq,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Del {
        seq: CommitSeq,
        key: Vec<u8>,
    },
    /// Every key of `range` was deleted: the part of a [`Db::clear`] inside the watched
    /// range.
    Clear {
        seq: CommitSeq,
        range: KeyRange,
    },
}

impl Change {
    /// The commit that made this change.
    pub fn seq(&self) -> CommitSeq {
        match self {
            Change::Put { seq, .. } | Change::Del { seq, .. } | Change::Clear { seq, .. } => *seq,
        }
    }
}

impl Db {
    /// Follows the writes committed to `range` from now on, by any process of the party:
    /// every write issued after this returns reaches the [`Watch`] exactly once, in commit
    /// order, through failovers (with `retry`, the default). Returns once the leader
    /// has said where the subscription starts.
    pub async fn watch(&self, range: KeyRange) -> Result<Watch, Error> {
        self.open_watch(range, None).await
    }

    /// Follows the writes committed to `range` from commit `from` on: after an iteration,
    /// from the commit after its [`Iter::seq`](crate::Iter::seq), so that the two together
    /// miss nothing; or from a [`Watch::position`] kept from before. Commits the leader no
    /// longer keeps come as [`Error::Lagged`] first. Returns once the leader has accepted
    /// it (from the next commit too, without waiting for one): a position past the store's
    /// next commit fails here with [`Error::WatchAhead`], a leader without the feed with
    /// [`Error::FeedOff`].
    pub async fn watch_from(&self, range: KeyRange, from: CommitSeq) -> Result<Watch, Error> {
        self.open_watch(range, Some(from)).await
    }

    async fn open_watch(&self, range: KeyRange, from: Option<CommitSeq>) -> Result<Watch, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::WatchOpen {
            range: self.space().range(range).into(),
            from: from.map(Into::into),
            reply,
        })?;
        let (watch, position) = Opening::new(answer, self.clone()).answer().await??;
        Ok(Watch {
            db: self.clone(),
            watch,
            position: position.into(),
            buffered: VecDeque::new(),
            done: false,
            asked: None,
        })
    }
}

/// A subscription to the writes committed to a range (see [`Db::watch`]). Dropping it
/// tells the leader to stop.
pub struct Watch {
    db: Db,
    watch: WatchId,
    /// The next commit whose changes have not been buffered.
    position: CommitSeq,
    /// What the caller has not taken yet, each with the position before it.
    buffered: VecDeque<(CommitSeq, Result<Change, Lag>)>,
    done: bool,
    /// The answer to a take the caller gave up waiting for (a `select!` that took another
    /// branch): kept for the next call, so that what the driver hands over is not lost.
    asked: Option<oneshot::Receiver<Result<WatchPoll, Error>>>,
}

/// Commits lost to a subscription that fell behind (see [`Error::Lagged`]).
#[derive(Debug)]
struct Lag {
    missed: u64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watch", &self.watch)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// The next change, waiting for one to commit. [`Error::Lagged`] says that the
    /// subscription fell behind what the leader keeps and lost some commits; the next call
    /// goes on after them. Any other error ends the subscription: the call after it
    /// returns `None`. Cancel-safe: a call given up on (a `select!` that took another
    /// branch, a timeout) loses no change. The handle's request timeout does not apply: a
    /// quiet range may have no change for a long time.
    pub async fn next(&mut self) -> Option<Result<Change, Error>> {
        loop {
            if let Some((_, item)) = self.buffered.pop_front() {
                return Some(item.map_err(|lag| Error::Lagged { missed: lag.missed }));
            }
            if self.done {
                return None;
            }
            if let Err(error) = self.fill().await {
                return Some(Err(error));
            }
        }
    }

    /// The first commit whose changes this subscription has not all handed over yet, or an
    /// earlier one from which every commit up to it held nothing in the range: a
    /// subscription opened later from here ([`Db::watch_from`]) goes on where this one
    /// stops, repeating only the changes already taken of a commit taken in part.
    pub fn position(&self) -> CommitSeq {
        self.buffered
            .front()
            .map_or(self.position, |(position, _)| *position)
    }

    /// Waits for the next events and buffers their changes.
    async fn fill(&mut self) -> Result<(), Error> {
        let answer = match &mut self.asked {
            Some(answer) => answer,
            None => {
                let (reply, answer) = oneshot::channel();
                let watch = self.watch;
                let max = usize::MAX;
                if let Err(error) = self.db.send(Command::WatchTake { watch, max, reply }) {
                    self.done = true;
                    return Err(error);
                }
                self.asked.insert(answer)
            }
        };
        let answered = answer.await;
        self.asked = None;
        let poll = answered.map_err(|_| Error::Closed).and_then(|poll| poll);
        let events = match poll {
            Ok(WatchPoll::Events(events)) => events,
            Ok(WatchPoll::Failed(error)) => {
                self.done = true;
                return Err(error.into());
            }
            Ok(WatchPoll::Pending) => {
                return Err(Error::Protocol(
                    "subscription answered while still pending".into(),
                ))
            }
            Err(error) => {
                self.done = true;
                return Err(error);
            }
        };
        let space = self.db.space().clone();
        for event in events {
            match event {
                WatchEvent::Changes { seq, changes } => {
                    let seq = CommitSeq::from(seq);
                    self.buffered.extend(
                        changes
                            .into_iter()
                            .map(|change| (seq, Ok(as_seen(&space, seq, change)))),
                    );
                    self.position = seq.next();
                }
                WatchEvent::Lagged { missed, resume } => {
                    self.buffered
                        .push_back((self.position, Err(Lag { missed })));
                    self.position = resume.into();
                }
            }
        }
        Ok(())
    }
}

/// A change as the handle's sublevel names it.
fn as_seen(space: &KeySpace, seq: CommitSeq, change: party_proto::Change) -> Change {
    match change {
        party_proto::Change::Put { key, value } => Change::Put {
            seq,
            key: space.strip(key),
            value,
        },
        party_proto::Change::Del { key } => Change::Del {
            seq,
            key: space.strip(key),
        },
        party_proto::Change::Clear { range } => Change::Clear {
            seq,
            range: space.unrange(range),
        },
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.db.send(Command::WatchClose { watch: self.watch });
        }
    }
}

impl KeySpace {
    /// A range of the store inside this space, as this space names it: bounds lose the
    /// prefix, and one outside the space (its end) becomes unbounded.
    pub(crate) fn unrange(&self, range: party_proto::KeyRange) -> KeyRange {
        let bound = |bound: Bound<Vec<u8>>| match bound {
            Bound::Included(key) if key.starts_with(self.prefix()) => {
                Bound::Included(self.strip(key))
            }
            Bound::Excluded(key) if key.starts_with(self.prefix()) => {
                Bound::Excluded(self.strip(key))
            }
            _ => Bound::Unbounded,
        };
        KeyRange {
            start: bound(range.start),
            end: bound(range.end),
        }
    }
}

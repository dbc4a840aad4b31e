//! What a handle publishes about its role, and how callers follow it.
//!
//! The driver publishes every change; callers get copies, never a borrow of the published
//! state, so no caller can hold up the driver (a borrow of a `tokio::sync::watch` value
//! held across an await would block the driver's next publication, and with it the handle).

use std::sync::Arc;
use std::time::Duration;

use party_proto::ErrorCode;
use tokio::sync::watch;

use crate::error::Error;

/// The role a handle plays right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Looking for a leader or trying to become one.
    Electing,
    Leader,
    Follower,
    Closed,
}

impl Role {
    /// The role in lower case, as status displays print it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Electing => "electing",
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Closed => "closed",
        }
    }
}

impl From<party_proto::Role> for Role {
    fn from(role: party_proto::Role) -> Self {
        match role {
            party_proto::Role::Electing => Role::Electing,
            party_proto::Role::Leader => Role::Leader,
            party_proto::Role::Follower => Role::Follower,
            party_proto::Role::Closed => Role::Closed,
        }
    }
}

/// What a handle publishes about its role. A handle counts as a follower once the leader
/// has welcomed it (so its protocol is known to match), not merely once connected.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RoleState {
    pub role: Role,
    /// The leader's process id, once known.
    pub leader_pid: Option<u32>,
    /// Why the handle could not join the party, if it could not.
    pub failure: Option<Arc<Error>>,
    /// Kept as the wire's code, which is `Clone` where [`Error`] is not, so that every
    /// [`RoleState::rejected`] call can hand out an owned error.
    pub(crate) rejected: Option<ErrorCode>,
    /// While this handle leads: how long it took to open the store (the bulk of a takeover,
    /// as the store replays what the previous leader left unflushed).
    pub store_open_time: Option<Duration>,
    /// The generation of the leader serving this handle (one more with every new leader
    /// of the directory), once known.
    pub term: Option<u64>,
    /// The kind of store the leader serves (this handle's own while it leads), once known.
    pub store: Option<party_backends::BackendKind>,
    /// Failovers this handle has lived through: it lost its leader and was served again.
    pub failovers: u64,
    /// The last of those failovers.
    pub last_takeover: Option<Takeover>,
}

/// One failover, as a handle lived through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Takeover {
    pub cause: TakeoverCause,
    /// From losing the leader to being served again, by the next leader or as it.
    pub paused: Duration,
}

/// Why a handle's leader went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TakeoverCause {
    /// The connection ended without a word: the leader crashed or was killed.
    Crash,
    /// The leader was closed and said so: a hand-over.
    HandOver,
    /// The leader lost its lock file.
    LockLost,
    /// The leader's store failed (its store thread died: a bug of the store or of party).
    /// Its process keeps the store locked until it exits, so the next leader comes then.
    StoreFailed,
}

impl TakeoverCause {
    /// The cause in snake case, as status displays and JSON answers give it.
    pub fn name(self) -> &'static str {
        match self {
            TakeoverCause::Crash => "crash",
            TakeoverCause::HandOver => "hand_over",
            TakeoverCause::LockLost => "lock_lost",
            TakeoverCause::StoreFailed => "store_failed",
        }
    }
}

impl From<party_proto::Takeover> for Takeover {
    fn from(takeover: party_proto::Takeover) -> Self {
        let cause = match takeover.cause {
            party_proto::TakeoverCause::Crash => TakeoverCause::Crash,
            party_proto::TakeoverCause::HandOver => TakeoverCause::HandOver,
            party_proto::TakeoverCause::LockLost => TakeoverCause::LockLost,
            party_proto::TakeoverCause::StoreFailed => TakeoverCause::StoreFailed,
        };
        Takeover {
            cause,
            paused: takeover.paused,
        }
    }
}

impl RoleState {
    pub(crate) fn electing() -> RoleState {
        RoleState {
            role: Role::Electing,
            leader_pid: None,
            failure: None,
            rejected: None,
            store_open_time: None,
            term: None,
            store: None,
            failovers: 0,
            last_takeover: None,
        }
    }

    /// Why the last leader refused this handle (a protocol mismatch, too many connections,
    /// another user), until one welcomes it.
    pub fn rejected(&self) -> Option<Error> {
        self.rejected.clone().map(Error::from)
    }
}

/// Every change of a handle's role (the level-party `leader` event and more), from
/// [`crate::Db::watch_role`]. It hands out copies of the state, so holding one across an
/// await is harmless.
#[derive(Debug, Clone)]
pub struct RoleWatch(watch::Receiver<RoleState>);

impl RoleWatch {
    pub(crate) fn new(receiver: watch::Receiver<RoleState>) -> RoleWatch {
        RoleWatch(receiver)
    }

    /// The state now; a later [`RoleWatch::changed`] waits for a change after this one.
    pub fn current(&mut self) -> RoleState {
        self.0.borrow_and_update().clone()
    }

    /// Whether the state changed since it was last seen here.
    pub fn has_changed(&self) -> bool {
        self.0.has_changed().unwrap_or(false)
    }

    /// Waits for the next change and returns the new state; [`Error::Closed`] once the
    /// handle is gone.
    pub async fn changed(&mut self) -> Result<RoleState, Error> {
        self.0.changed().await.map_err(|_| Error::Closed)?;
        Ok(self.current())
    }

    /// Waits until `done` holds for the state, and returns that state; [`Error::Closed`]
    /// once the handle is gone.
    pub async fn wait_for(
        &mut self,
        done: impl FnMut(&RoleState) -> bool,
    ) -> Result<RoleState, Error> {
        match self.0.wait_for(done).await {
            Ok(state) => Ok(state.clone()),
            Err(_) => Err(Error::Closed),
        }
    }
}

//! The handshake: the first frame each way. The client says who it is and which protocol it
//! speaks; the leader answers `Welcome` or `Rejected` and closes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::ClientId;

/// Marks a party connection, so that a stray program talking to the socket is refused
/// with a clear error instead of being misread.
pub const MAGIC: [u8; 4] = *b"PRTY";

/// Bumped whenever a change would make an old peer misread a message, or wait for one it
/// is never sent (14: a leader whose store failed says so as it leaves).
pub const PROTOCOL_VERSION: u16 = 14;

/// Which protocol a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProtocolId {
    pub magic: [u8; 4],
    pub version: u16,
}

impl ProtocolId {
    /// The protocol this build speaks.
    pub const CURRENT: ProtocolId = ProtocolId {
        magic: MAGIC,
        version: PROTOCOL_VERSION,
    };
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.magic.escape_ascii(), self.version)
    }
}

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: ProtocolId,
    pub client_id: ClientId,
    /// The kind of store this process is configured for (`fjall`, `sled`, …): a leader
    /// serving another refuses it.
    pub store: String,
}

/// The leader's answer to an accepted [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: ProtocolId,
    /// The leader's operating-system process id, for status displays.
    pub leader_pid: u32,
    /// The leader's generation: one more than the leader before it, in this directory.
    pub term: u64,
    /// The kind of store the leader serves.
    pub store: String,
    /// What the leader accepts, so the client never sends what would be refused.
    pub limits: LeaderLimits,
}

/// The leader's bounds on one connection, told in the welcome: the client keeps a request
/// too large for `max_frame_len` to itself (failing it with a typed error), holds requests
/// beyond `max_in_flight` until earlier ones are answered, and never grants an iterator more
/// than `max_iter_credits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLimits {
    /// The largest frame body the leader reads, and sends.
    pub max_frame_len: u32,
    /// Requests the connection may have in flight at once.
    pub max_in_flight: u32,
    /// Entries one iterator may have granted and not yet received.
    pub max_iter_credits: u32,
}

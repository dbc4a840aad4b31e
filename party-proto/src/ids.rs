//! Identifiers that travel on the wire. All are chosen by the caller or by a session's own
//! counters, never by randomness inside this crate.

use serde::{Deserialize, Serialize};

/// Identifies one client handle for its lifetime, across reconnects and leader changes.
/// Together with [`WriteSeq`] it names a write exactly once, which is what lets a new leader
/// recognise a re-sent write that the old leader already applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u128);

/// Numbers one request on one client session; replies carry it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// Numbers one iterator on one client session. It stays the same when the iterator is
/// re-opened on a new connection after a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IterId(pub u64);

/// Numbers one change feed subscription on one client session. It stays the same when the
/// subscription is re-opened on a new leader after a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WatchId(pub u64);

/// The per-client sequence number of a write: 1 for the first write of a client, then
/// increasing by one for each write, in the order the caller issued them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriteSeq(pub u64);

//! The messages of the protocol. Only append variants to these enums: postcard numbers them
//! by position, so reordering would make old and new peers misread each other.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::handshake::{Hello, Welcome};
use crate::error::ErrorCode;
use crate::feed::{Change, CommitSeq};
use crate::ids::{IterId, RequestId, WatchId, WriteSeq};
use crate::range::{IterOptions, KeyRange};

/// Everything a follower sends to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// The first frame of every connection.
    Hello(Hello),
    /// A read; answered by one [`ServerMessage::Reply`].
    Read { id: RequestId, op: ReadOp },
    /// A write, stamped with the client's sequence number so that a re-send after a failover
    /// is applied at most once; answered by one [`ServerMessage::Reply`].
    Write {
        id: RequestId,
        seq: WriteSeq,
        /// The lowest sequence number of this client's writes still waiting for an answer
        /// when this was sent: the client never re-sends anything below it, so the leader
        /// may forget what it kept about those.
        oldest_pending: WriteSeq,
        /// When the client first sent this write, on any connection: milliseconds since
        /// the Unix epoch by its wall clock. A leader does not apply a write first sent
        /// longer ago than half its dedup retention (the clients' resend window): its
        /// record may have expired, so the leader could not tell a re-send from a new one.
        first_sent_ms: u64,
        /// Shared with the client's copy kept for a re-send (encoded as the operation
        /// itself): a message is not a copy of its values.
        op: Arc<WriteOp>,
    },
    /// Opens an iterator and grants it `credits` entries and `bytes` bytes of entries
    /// ([`Entry::len_bound`]; a pull may pass them by one entry, so that an entry bigger
    /// than the window still comes).
    IterOpen {
        iter: IterId,
        options: IterOptions,
        credits: u32,
        bytes: u64,
    },
    /// Lets the leader send `credits` more entries and `bytes` more bytes of entries of
    /// an open iterator.
    IterNext {
        iter: IterId,
        credits: u32,
        bytes: u64,
    },
    /// The caller is done with an iterator; the leader drops it without answering.
    IterClose { iter: IterId },
    /// Subscribes to the changes of `range` in the groups committed from `from` on (`None`:
    /// from the next commit) and grants it `credits` groups: answered by
    /// [`ServerMessage::WatchStarted`], then its changes as they commit.
    WatchOpen {
        watch: WatchId,
        range: KeyRange,
        from: Option<CommitSeq>,
        credits: u32,
    },
    /// Lets the leader send `credits` more groups of a subscription.
    WatchNext { watch: WatchId, credits: u32 },
    /// The caller is done with a subscription; the leader drops it without answering.
    WatchClose { watch: WatchId },
    /// The follower shares memory for big answers: a file of `len` bytes of values, its
    /// descriptor `fd` in the follower's process, which holds `token` right after the
    /// follower's position, so that a leader that opens another file by mistake (through a
    /// process id that names another process where it runs) can tell (see
    /// [`ServerMessage::ReplyInRing`]).
    OfferRing { fd: u32, len: u64, token: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadOp {
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    GetMany {
        #[serde(with = "super::bytes::seq")]
        keys: Vec<Vec<u8>>,
    },
    /// How the leader is doing; answered with [`Response::Status`].
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Del {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Applied atomically: all of it or none of it.
    Batch { ops: Vec<BatchOp> },
    /// Deletes every key in the range.
    Clear { range: KeyRange },
    /// Applies `writes` atomically if every read of `reads` still holds, else nothing:
    /// answered [`Response::Written`] or [`Response::Conflict`]. Compare-and-swap is one
    /// of these, with one read and at most one write.
    Transaction {
        reads: Vec<ReadCheck>,
        writes: Vec<BatchOp>,
    },
}

/// What a transaction read, for the leader to check at commit: the transaction commits
/// only if each of its reads would read the same now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadCheck {
    /// `key` held `value` (`None`: the key was absent).
    Key {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
    },
    /// The keys in `range` were exactly `entries`, in ascending key order: a key that has
    /// appeared in the range since (a phantom) fails the check as a changed value does.
    Range {
        range: KeyRange,
        entries: Vec<Entry>,
    },
}

/// Most bytes a request adds around its operation: the frame header, the message's tag,
/// id, sequence numbers and the operation's tag.
const REQUEST_OVERHEAD: u64 = 64;

/// Most bytes a byte string takes: a length varint and the bytes.
fn bytes_len(bytes: &[u8]) -> u64 {
    bytes.len() as u64 + 10
}

impl ReadOp {
    /// At least the size of the frame that carries this operation, to check it against a
    /// frame limit before sending.
    pub fn request_len_bound(&self) -> u64 {
        REQUEST_OVERHEAD
            + match self {
                ReadOp::Get { key } => bytes_len(key),
                ReadOp::GetMany { keys } => 10 + keys.iter().map(|k| bytes_len(k)).sum::<u64>(),
                ReadOp::Status => 0,
            }
    }
}

impl WriteOp {
    /// At least the size of the frame that carries this operation, to check it against a
    /// frame limit before sending.
    pub fn request_len_bound(&self) -> u64 {
        REQUEST_OVERHEAD
            + match self {
                WriteOp::Put { key, value } => bytes_len(key) + bytes_len(value),
                WriteOp::Del { key } => bytes_len(key),
                WriteOp::Batch { ops } => 10 + ops.iter().map(BatchOp::len_bound).sum::<u64>(),
                WriteOp::Clear { range } => range.len_bound(),
                WriteOp::Transaction { reads, writes } => {
                    20 + reads.iter().map(ReadCheck::len_bound).sum::<u64>()
                        + writes.iter().map(BatchOp::len_bound).sum::<u64>()
                }
            }
    }
}

impl ReadCheck {
    fn len_bound(&self) -> u64 {
        5 + match self {
            ReadCheck::Key { key, value } => {
                bytes_len(key) + 1 + value.as_deref().map_or(0, bytes_len)
            }
            ReadCheck::Range { range, entries } => {
                range.len_bound() + 10 + entries.iter().map(Entry::len_bound).sum::<u64>()
            }
        }
    }
}

impl BatchOp {
    fn len_bound(&self) -> u64 {
        5 + match self {
            BatchOp::Put { key, value } => bytes_len(key) + bytes_len(value),
            BatchOp::Del { key } => bytes_len(key),
        }
    }

    /// The key this step writes.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Del { key } => key,
        }
    }
}

impl Response {
    /// At least the size of the frame that carries this answer in a
    /// [`ServerMessage::Reply`], to check it against the frame limit before sending.
    pub fn reply_len_bound(&self) -> u64 {
        REQUEST_OVERHEAD
            + match self {
                Response::Value(value) => 1 + value.as_deref().map_or(0, bytes_len),
                Response::Values(values) => {
                    10 + values
                        .iter()
                        .map(|value| 1 + value.as_deref().map_or(0, bytes_len))
                        .sum::<u64>()
                }
                Response::Written => 0,
                Response::Status(_) => 16,
                Response::Conflict { key, current } => {
                    bytes_len(key) + 1 + current.as_deref().map_or(0, bytes_len)
                }
            }
    }
}

impl Entry {
    /// At least the bytes this entry adds to a [`ServerMessage::IterData`] frame.
    pub fn len_bound(&self) -> u64 {
        bytes_len(&self.key) + bytes_len(&self.value)
    }

    /// At least the size of an [`ServerMessage::IterData`] frame before its entries.
    pub const DATA_OVERHEAD: u64 = REQUEST_OVERHEAD;
}

/// One step of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    Put {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Del {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
}

/// Everything the leader sends to a follower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The handshake was accepted.
    Welcome(Welcome),
    /// The handshake was refused; the leader closes the connection after this.
    Rejected(ErrorCode),
    /// The one answer to a read or a write.
    Reply {
        id: RequestId,
        result: Result<Response, ErrorCode>,
    },
    /// Entries of an iterator, never more than it has credits for.
    IterData { iter: IterId, entries: Vec<Entry> },
    /// The iterator has delivered its last entry; the leader has dropped it.
    IterEnd { iter: IterId },
    /// The iterator failed; the leader has dropped it.
    IterFailed { iter: IterId, error: ErrorCode },
    /// The leader is about to close this connection and stop leading, for this cause; a
    /// connection that ends without it ends in a crash.
    Leaving(LeaveCause),
    /// The iterator reads the store as it was right after commit `seq`.
    IterAt { iter: IterId, seq: CommitSeq },
    /// The subscription delivers the groups committed from `from` on.
    WatchStarted { watch: WatchId, from: CommitSeq },
    /// The changes of one committed group in the subscription's range, in commit order. A
    /// group too large for one frame comes in several; its last says `complete`. Each
    /// complete group uses one credit.
    WatchData {
        watch: WatchId,
        seq: CommitSeq,
        changes: Vec<Change>,
        complete: bool,
    },
    /// The subscription has seen every group before `through`: those since its last data
    /// held nothing in its range.
    WatchProgress { watch: WatchId, through: CommitSeq },
    /// The `missed` groups before `resume` left the store's change log before the
    /// subscription read them; it goes on from `resume`.
    WatchLagged {
        watch: WatchId,
        missed: u64,
        resume: CommitSeq,
    },
    /// The subscription failed; the leader has dropped it.
    WatchFailed { watch: WatchId, error: ErrorCode },
    /// A `Reply` whose value the leader wrote to the memory the follower shared
    /// ([`ClientMessage::OfferRing`]): `len` bytes ending at position `end` of the ring.
    ReplyInRing { id: RequestId, end: u64, len: u32 },
}

/// Why a leader stops leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveCause {
    /// Its handle is closing.
    Closing,
    /// It lost its lock.
    LockLost,
    /// Its store failed (its store thread died, in party-core): it can answer nothing
    /// more. Its process keeps the store locked until it exits.
    StoreFailed,
}

impl ServerMessage {
    /// The message with each error in it as taken from a leader
    /// ([`ErrorCode::into_received`]).
    pub fn into_received(self) -> ServerMessage {
        match self {
            ServerMessage::Rejected(error) => ServerMessage::Rejected(error.into_received()),
            ServerMessage::Reply { id, result } => ServerMessage::Reply {
                id,
                result: result.map_err(ErrorCode::into_received),
            },
            ServerMessage::IterFailed { iter, error } => ServerMessage::IterFailed {
                iter,
                error: error.into_received(),
            },
            ServerMessage::WatchFailed { watch, error } => ServerMessage::WatchFailed {
                watch,
                error: error.into_received(),
            },
            // Named one by one, so that a message added with an error in it is looked at.
            other @ (ServerMessage::Welcome(_)
            | ServerMessage::IterData { .. }
            | ServerMessage::IterEnd { .. }
            | ServerMessage::Leaving(_)
            | ServerMessage::IterAt { .. }
            | ServerMessage::WatchStarted { .. }
            | ServerMessage::WatchData { .. }
            | ServerMessage::WatchProgress { .. }
            | ServerMessage::WatchLagged { .. }
            | ServerMessage::ReplyInRing { .. }) => other,
        }
    }
}

/// The successful result of a read or write.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Get`: the value, or `None` when the key is missing. Shared rather than
    /// owned, so that a leader can send a big value from where its store holds it.
    Value(Option<Bytes>),
    /// Answer to `GetMany`, one slot per key in the order asked.
    Values(#[serde(with = "super::bytes::optional_seq")] Vec<Option<Vec<u8>>>),
    /// Answer to every write.
    Written,
    /// Answer to [`ReadOp::Status`].
    Status(LeaderStatus),
    /// Answer to a [`WriteOp::Transaction`] that was not applied: a read of it no longer
    /// holds. `key` is the first key read that differs, and `current` what it holds now
    /// (`None`: absent; for a range, a key seen there that has gone since).
    Conflict {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        current: Option<Vec<u8>>,
    },
}

/// What the leader reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaderStatus {
    /// Follower connections open right now.
    pub followers: u32,
}

/// One key-value pair of an iterator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value is one length-prefixed byte string on the wire, as when it was a `Vec`
    /// written with `serde_bytes`: peers of either kind read each other.
    #[test]
    fn a_value_is_written_as_a_byte_string() {
        let value = Response::Value(Some(Bytes::from_static(b"abc")));
        let encoded = postcard::to_stdvec(&value).unwrap();
        assert_eq!(encoded, [0, 1, 3, b'a', b'b', b'c']);
        assert_eq!(postcard::from_bytes::<Response>(&encoded).unwrap(), value);
        assert_eq!(postcard::to_stdvec(&Response::Value(None)).unwrap(), [0, 0]);
    }

    /// Every message that carries an error takes it as received: one no leader sends
    /// becomes `Malformed`, whichever message it came in.
    #[test]
    fn each_error_a_message_carries_is_taken_as_received() {
        let never_sent = ErrorCode::Locked;
        let received = never_sent.clone().into_received();
        assert!(matches!(received, ErrorCode::Malformed(_)), "{received:?}");
        let carrying = |error: ErrorCode| {
            [
                ServerMessage::Rejected(error.clone()),
                ServerMessage::Reply {
                    id: RequestId(1),
                    result: Err(error.clone()),
                },
                ServerMessage::IterFailed {
                    iter: IterId(2),
                    error: error.clone(),
                },
                ServerMessage::WatchFailed {
                    watch: WatchId(3),
                    error,
                },
            ]
        };
        for (message, expected) in carrying(never_sent).into_iter().zip(carrying(received)) {
            assert_eq!(message.into_received(), expected);
        }
    }
}

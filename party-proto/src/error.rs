//! The typed error codes an operation can end with. They travel on the wire from leader to
//! follower, and the client session also produces some of them itself (connection lost,
//! closed, timed out), so a caller sees one vocabulary whichever process served it.

use serde::{Deserialize, Serialize};

use crate::wire::ProtocolId;

/// Why an operation failed. Only append variants: the numbering is part of the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The thing the request names does not exist (for example an iterator the leader has
    /// already dropped). A missing key is not an error: `get` answers `None`.
    #[error("not found")]
    NotFound,
    /// The store is locked by a process that is not part of this party. No leader sends it:
    /// a store locked that way fails the election of the process that tried to lead, which
    /// reports it itself. Kept for the numbering of the variants after it.
    #[error("the store is locked by another process")]
    Locked,
    /// The handle was closed before the operation completed.
    #[error("the handle is closed")]
    Closed,
    /// The connection to the leader was lost while the operation was in flight and the
    /// handle does not retry (`retry = false`).
    #[error("the connection to the leader was lost")]
    ConnectionLost,
    /// The two ends speak different protocols or versions.
    #[error("protocol mismatch: expected {expected}, got {got}")]
    ProtocolMismatch {
        expected: ProtocolId,
        got: ProtocolId,
    },
    /// A message was larger than the frame-size cap.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: u64 },
    /// The store itself failed; the message is the store's own.
    #[error("backend error: {0}")]
    Backend(String),
    /// The operation did not complete within the handle's request timeout.
    #[error("the operation timed out")]
    TimedOut,
    /// The peer sent something that is not a valid message at this point.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The connection already has as many requests in flight as the leader allows.
    #[error("too many requests in flight on this connection (limit {limit})")]
    TooManyRequests { limit: u32 },
    /// The connection already has as many open iterators as the leader allows.
    #[error("too many open iterators on this connection (limit {limit})")]
    TooManyIterators { limit: u32 },
    /// The leader already serves as many connections as it allows.
    #[error("the leader serves too many connections (limit {limit})")]
    TooManyConnections { limit: u32 },
    /// The store's disk has less free space than the leader keeps in reserve; the write was
    /// not applied.
    #[error("the store's disk is full: {free} bytes free, {reserve} kept in reserve")]
    StoreFull { free: u64, reserve: u64 },
    /// The leader serves only processes of its own user, and this one runs as another.
    #[error("the leader serves only its own user; this process runs as uid {uid}")]
    OtherUser { uid: u32 },
    /// The store's file system is mounted read-only; the write was not applied.
    #[error("the store's file system is read-only")]
    StoreReadOnly,
    /// The answer to a read, or the next entry of an iterator, does not fit in one frame of
    /// the leader's limit. Only that request or iterator fails; the connection stays up.
    #[error("the answer needs {len} bytes, more than the {max}-byte frame limit")]
    ReplyTooLarge { len: u64, max: u64 },
    /// The key is longer than the leader's store allows; the write was not applied. A
    /// variant of its own (not [`ErrorCode::Backend`]) so that a follower can tell it apart
    /// exactly as the leader's own handle does.
    #[error("key of {len} bytes is longer than the store allows ({max} bytes)")]
    KeyTooLarge { len: u64, max: u64 },
    /// What serves the directory's socket runs as another user (uid): this process refuses
    /// it as its leader and tells it nothing. Decided by the follower, never sent.
    #[error("the process serving the socket runs as uid {uid}, another user")]
    LeaderOfOtherUser { uid: u32 },
    /// The directory holds a store of another kind (`found`) than this process is
    /// configured for (`wanted`): the leader refuses to serve it, and it may not lead.
    #[error("the data directory's store is {found}; this process is configured for {wanted}")]
    WrongStore { found: String, wanted: String },
    /// One write touches more keys than the leader's store commits at once (etcd: 127
    /// operations); it was not applied. Groups of several writes are cut to fit, so only a
    /// write too large by itself meets this.
    #[error("a write of {ops} operations is more than the store commits at once ({max})")]
    BatchTooLarge { ops: u64, max: u64 },
    /// The write may or may not have been applied: the store could not tell (its commit's
    /// answer was lost, or the record that says whether an earlier try landed could not be
    /// read). The cause is the store's own message. Read the keys to find out; it is not
    /// re-sent.
    #[error("the write's outcome is unknown: {0}")]
    OutcomeUnknown(String),
    /// A subscription asked for the changes from commit `from` on, but the store's next
    /// commit is `next`, before it: the position came from another store (or one that was
    /// replaced), and following this one from it would skip commits unseen.
    #[error("the subscription starts at commit {from}, past this store's next commit {next}")]
    WatchAhead { from: u64, next: u64 },
    /// The connection already has as many subscriptions open as the leader allows.
    #[error("too many subscriptions open on this connection (limit {limit})")]
    TooManyWatches { limit: u32 },
    /// The leader keeps no change feed (it was not opened with one): it cannot serve a
    /// subscription.
    #[error("the leader keeps no change feed")]
    FeedOff,
    /// This handle's election gave up (its lock file, its store or its socket could not be
    /// used): it can neither lead nor follow. Decided by the process, never sent; the
    /// driver knows the cause.
    #[error("the election failed ({0:?})")]
    ElectionFailed(crate::election::ElectionFailure),
    /// The write failed at an earlier try whose answer was lost (its leader died before
    /// sending it, or its connection was cut), and a later write of the same handle went
    /// ahead of it (landed, or is committing): applied now, it would land after that write,
    /// out of the order they were issued in. It was not applied; issue it again if it is
    /// still wanted.
    #[error("the write failed at an earlier try, and a later write of this handle went ahead")]
    FailedBefore,
}

impl ErrorCode {
    /// Whether a leader ever sends this code. Those a process decides about itself (its
    /// own election's failure, a leader it refuses, a store locked outside the party) are
    /// never sent.
    pub fn is_sent_by_leaders(&self) -> bool {
        !matches!(
            self,
            ErrorCode::Locked | ErrorCode::LeaderOfOtherUser { .. } | ErrorCode::ElectionFailed(_)
        )
    }

    /// The code as taken from a leader: one no leader sends is the leader's mistake, and
    /// becomes [`ErrorCode::Malformed`], so that a confused leader cannot make this process
    /// report a state of its own that it is not in (a failed election, say, which a caller
    /// would take for the end of its handle).
    pub fn into_received(self) -> ErrorCode {
        if self.is_sent_by_leaders() {
            return self;
        }
        ErrorCode::Malformed(format!("the leader sent an error no leader sends: {self}"))
    }
}

/// Bytes of text one error carries on the wire at most. A store's own message (a path, an
/// etcd status with its metadata) or a name a follower sent can be of any length, but an
/// error must fit in any frame a leader may be limited to (party-core's `MIN_FRAME_LEN`,
/// 1024 bytes), or the leader could not say it and would hang up instead.
pub const MAX_ERROR_TEXT: usize = 256;

impl ErrorCode {
    /// The same error with each text cut to [`MAX_ERROR_TEXT`] bytes (at a character
    /// boundary, ending in `…`).
    pub fn shortened(self) -> ErrorCode {
        match self {
            ErrorCode::Backend(text) => ErrorCode::Backend(shorten(text)),
            ErrorCode::Malformed(text) => ErrorCode::Malformed(shorten(text)),
            ErrorCode::OutcomeUnknown(text) => ErrorCode::OutcomeUnknown(shorten(text)),
            ErrorCode::WrongStore { found, wanted } => ErrorCode::WrongStore {
                found: shorten(found),
                wanted: shorten(wanted),
            },
            other => other,
        }
    }
}

fn shorten(mut text: String) -> String {
    const ELLIPSIS: &str = "…";
    if text.len() <= MAX_ERROR_TEXT {
        return text;
    }
    let mut end = MAX_ERROR_TEXT - ELLIPSIS.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(ELLIPSIS);
    text
}

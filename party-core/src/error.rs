//! The one error type of party-core: a variant per cause a caller can act on.

use std::path::PathBuf;
use std::sync::Arc;

use party_backends::{BackendError, OpenError};
use party_proto::wire::ProtocolId;
use party_proto::ErrorCode;

/// Why an operation or an open failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The handle was closed (or dropped) before the operation completed.
    #[error("the handle is closed")]
    Closed,
    /// The leader went away while the operation was in flight, and the handle was opened
    /// with `retry = false`.
    #[error("the connection to the leader was lost")]
    ConnectionLost,
    /// The leader speaks another protocol or version of party.
    #[error("protocol mismatch: this build speaks {expected}, the leader {got}")]
    ProtocolMismatch {
        expected: ProtocolId,
        got: ProtocolId,
    },
    /// The operation did not complete within the handle's request timeout.
    #[error("the operation timed out")]
    TimedOut,
    /// The request does not fit in one message ([`crate::Limits::max_frame_len`]); it was
    /// not sent.
    #[error("the request needs up to {len} bytes, more than the {max}-byte message limit")]
    TooLarge { len: u64, max: u64 },
    /// The answer (a read's values, or the next entry of an iterator) does not fit in one
    /// message of the leader's limit ([`crate::Limits::max_frame_len`]): ask for less at a
    /// time. Only this operation failed.
    #[error("the answer needs up to {len} bytes, more than the {max}-byte message limit")]
    ReplyTooLarge { len: u64, max: u64 },
    /// The leader serves only processes of its own user, and this one runs as another.
    #[error("the leader serves only its own user; this process runs as uid {uid}")]
    OtherUser { uid: u32 },
    /// The leader refused the request because a limit was reached.
    #[error("the leader refused the request: {0}")]
    LimitReached(ErrorCode),
    /// The store failed; the message is the store's own.
    #[error("store error: {0}")]
    Backend(String),
    /// The store's disk has less free space than the leader keeps in reserve
    /// ([`crate::Limits::min_free_space`]); the write was not applied. Free some space.
    #[error("the store's disk is full: {free} bytes free, {reserve} kept in reserve")]
    StoreFull { free: u64, reserve: u64 },
    /// The store's file system is read-only; the write was not applied.
    #[error("the store's file system is read-only")]
    StoreReadOnly,
    /// The store could not be opened.
    #[error(transparent)]
    Open(OpenError),
    /// A value could not be encoded or decoded with the handle's codec.
    #[error("codec error: {0}")]
    Codec(String),
    /// This handle could not become leader or follower (its store or socket could not be
    /// set up while it held the lock); every operation of the handle fails with this.
    #[error("the handle could not join the party: {0}")]
    ElectionFailed(Arc<Error>),
    /// A [`crate::BlockingDb`] was used from inside an async runtime, where blocking would
    /// stall it: use [`crate::Db`] there.
    #[error("a BlockingDb was used inside an async runtime; use Db there")]
    BlockingInRuntime,
    /// The leader or the follower broke the protocol; the connection was closed.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The data directory or the socket could not be used.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Closed => Error::Closed,
            ErrorCode::ConnectionLost => Error::ConnectionLost,
            ErrorCode::ProtocolMismatch { expected, got } => {
                Error::ProtocolMismatch { expected, got }
            }
            ErrorCode::TimedOut => Error::TimedOut,
            ErrorCode::Backend(message) => Error::Backend(message),
            ErrorCode::Locked => Error::Backend("the store is locked".into()),
            limit @ (ErrorCode::TooManyRequests { .. }
            | ErrorCode::TooManyIterators { .. }
            | ErrorCode::TooManyConnections { .. }) => Error::LimitReached(limit),
            ErrorCode::StoreFull { free, reserve } => Error::StoreFull { free, reserve },
            ErrorCode::StoreReadOnly => Error::StoreReadOnly,
            ErrorCode::OtherUser { uid } => Error::OtherUser { uid },
            ErrorCode::FrameTooLarge { len, max } => Error::TooLarge { len, max },
            ErrorCode::ReplyTooLarge { len, max } => Error::ReplyTooLarge { len, max },
            other @ (ErrorCode::NotFound | ErrorCode::Malformed(_)) => {
                Error::Protocol(other.to_string())
            }
        }
    }
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Self {
        Error::Backend(error.to_string())
    }
}

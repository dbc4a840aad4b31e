//! The one error type of party-core: a variant per cause a caller can act on.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use party_backends::{BackendError, OpenError};
use party_proto::ErrorCode;

/// Why an operation or an open failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The handle was closed (or dropped) before the operation completed.
    #[error("the handle is closed")]
    Closed,
    /// The leader went away while the operation was in flight, and the handle was opened
    /// with `retry(false)`.
    #[error("the connection to the leader was lost")]
    ConnectionLost,
    /// The leader speaks another version of the party protocol: every process of one data
    /// directory needs the same party version.
    #[error("protocol mismatch: this build speaks version {ours}, the leader version {leader}")]
    ProtocolMismatch { ours: u16, leader: u16 },
    /// The operation did not complete within the handle's request timeout, or an
    /// iterator's caller waited as long for its next entries (which ends the iterator).
    #[error("the operation timed out")]
    TimedOut,
    /// The request does not fit in one message ([`crate::Limits::max_frame_len`]), or is
    /// a write bigger than the store takes in one request (etcd: 1.5 MiB); it was not
    /// applied.
    #[error("the request needs up to {len} bytes, more than the {max}-byte message limit")]
    TooLarge { len: u64, max: u64 },
    /// The answer (a read's values, or the next entry of an iterator) does not fit in one
    /// message of the leader's limit ([`crate::Limits::max_frame_len`]): ask for less at a
    /// time. Only this operation failed.
    #[error("the answer needs up to {len} bytes, more than the {max}-byte message limit")]
    ReplyTooLarge { len: u64, max: u64 },
    /// A key is longer than the store allows (fjall: 65 534 bytes); the write was not
    /// applied.
    #[error("a key of {len} bytes is longer than the store allows ({max} bytes)")]
    KeyTooLarge { len: u64, max: u64 },
    /// One write (a batch, say) touches more keys than the store commits at once (etcd: 127
    /// operations, its dedup record included); it was not applied. Split it.
    #[error("a write of {ops} operations is more than the store commits at once ({max})")]
    BatchTooLarge { ops: u64, max: u64 },
    /// The leader serves only processes of its own user, and this one runs as another.
    #[error("the leader serves only its own user; this process runs as uid {uid}")]
    OtherUser { uid: u32 },
    /// The data directory holds a store of another kind than this handle is configured for
    /// (see [`crate::Options::backend`]): the leader refuses to serve it, and it cannot lead,
    /// lest it serve an empty store of its own. Open it with the directory's kind.
    #[error("the data directory's store is {}; this handle is configured for {}", found.name(), wanted.name())]
    WrongBackend {
        found: party_backends::BackendKind,
        wanted: party_backends::BackendKind,
    },
    /// The data directory's store is in etcd under another key prefix (`found`) than this
    /// handle is configured for (`wanted`, see [`crate::Options::etcd`]): it may not lead
    /// from that prefix's store, where the data would seem lost. Open it with the
    /// directory's prefix.
    #[error("the data directory's store is in etcd under prefix {:?}; this handle is configured for {:?}", String::from_utf8_lossy(found), String::from_utf8_lossy(wanted))]
    WrongEtcdPrefix { found: Vec<u8>, wanted: Vec<u8> },
    /// What serves the directory's socket runs as another user (uid): this handle refused
    /// it as its leader and sent it nothing. Every pending operation fails with this (but a
    /// write an earlier leader may have taken: [`Error::OutcomeUnknown`]); the handle tries
    /// again later.
    #[error("the process serving the socket runs as uid {uid}, another user: refused as leader")]
    LeaderOfOtherUser { uid: u32 },
    /// The write may or may not have been applied: the store could not tell (a network
    /// store's answer was lost, or the record that says whether an earlier try landed
    /// could not be read), it was in flight longer than the resend window
    /// ([`crate::Options::dedup_retention`] / 2) when its connection was lost, or a leader
    /// may have taken it before another cause failed it (a refusal, garbage on the
    /// connection, a next leader's smaller message limit, a failed election). Read the
    /// keys to find out.
    #[error("the write's outcome is unknown: {cause}")]
    OutcomeUnknown { cause: String },
    /// The write failed at an earlier try whose answer was lost (with its leader, or its
    /// connection): the store refused or failed it, or a transaction met a conflict; and a
    /// later write of this handle went ahead of it: applied now, it would land after that
    /// write, out of the order they were issued in. It was not applied; issue it again if
    /// it is still wanted. [`crate::Db::transaction`] runs its body again instead.
    #[error("the write failed at an earlier try, and a later write of this handle went ahead")]
    FailedBefore,
    /// The leader refused the request, iterator or connection because one of its
    /// [`crate::Limits`] was reached. Only this one failed; it may succeed later.
    #[error("the leader's limit of {max} {limit} was reached")]
    LimitReached { limit: Limit, max: u32 },
    /// The leader no longer knows this iterator, so it cannot go on: open a new one after
    /// the last key received.
    #[error("the leader no longer knows this iterator")]
    IteratorGone,
    /// Another program (not a party handle) has the store open, so this handle cannot
    /// lead. It fails the election, so it arrives inside [`Error::ElectionFailed`].
    #[error("the store at {} is locked by another program", path.display())]
    Locked { path: PathBuf },
    /// The store failed. `source` is the store's own error when it failed in this process
    /// outside a request; from a request, only its message crosses the session.
    #[error("store error: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store's disk has less free space than the leader keeps in reserve
    /// ([`crate::Limits::min_free_space`]); the write was not applied. Free some space.
    #[error("the store's disk is full: {free} bytes free, {reserve} kept in reserve")]
    StoreFull { free: u64, reserve: u64 },
    /// The store's file system is read-only; the write was not applied.
    #[error("the store's file system is read-only")]
    StoreReadOnly,
    /// The store could not be opened (it is not compiled in, or failed to open).
    #[error(transparent)]
    Open(OpenError),
    /// A value could not be encoded or decoded with the handle's codec.
    #[error("codec error: {0}")]
    Codec(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// This handle could not become leader or follower (its store or socket could not be
    /// set up while it held the lock); every operation of the handle fails with this (but a
    /// write a leader may have taken: [`Error::OutcomeUnknown`]).
    #[error("the handle could not join the party: {0}")]
    ElectionFailed(#[source] Arc<Error>),
    /// A [`crate::BlockingDb`] was used from inside an async runtime, where blocking would
    /// stall it: use [`crate::Db`] there.
    #[error("a BlockingDb was used inside an async runtime; use Db there")]
    BlockingInRuntime,
    /// A subscription ([`crate::Watch`]) fell behind the leader's change log: `missed`
    /// commits left it before the subscription read them, and their changes are lost to
    /// it (how many of them touched its range is unknown). The subscription goes on after
    /// them; reload the range (an iterator) to catch up, then follow it from the
    /// iterator's [`crate::Iter::seq`].
    #[error("the subscription fell behind: {missed} commits left the change log unread")]
    Lagged { missed: u64 },
    /// The leader keeps no change feed ([`crate::Options::change_feed`] is off in the
    /// process that leads): a subscription cannot be served.
    #[error("the leader keeps no change feed: open its handle with Options::change_feed(true)")]
    FeedOff,
    /// A subscription was asked to start at commit `from`, but this store's next commit is
    /// `next`, before it: the position came from another store (or one since replaced).
    #[error("the subscription starts at commit {from}, past the store's next commit {next}")]
    WatchAhead { from: u64, next: u64 },
    /// A sublevel's name is empty or holds `!`, which closes a name in the prefix.
    #[error("invalid sublevel name {name:?}: it must be non-empty and hold no '!'")]
    InvalidSublevelName { name: String },
    /// [`crate::open`] was given an option a handle cannot work with (`option` names it,
    /// `reason` says what it must be): nothing was opened.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: &'static str,
    },
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

/// Which of the leader's [`crate::Limits`] refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// [`crate::Limits::max_connections`]: this handle was not let in.
    Connections,
    /// [`crate::Limits::max_in_flight`]: only a peer that ignores the leader's cap meets it.
    InFlight,
    /// [`crate::Limits::max_iterators`]: this iterator was not opened.
    Iterators,
    /// [`crate::Limits::max_watches`]: this subscription was not opened.
    Watches,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Connections => "connections",
            Limit::InFlight => "requests in flight per connection",
            Limit::Iterators => "open iterators per connection",
            Limit::Watches => "open subscriptions per connection",
        })
    }
}

impl Error {
    /// An error that says the same: the sources that cannot be copied (an IO error, a
    /// store's or a codec's own) keep their kind and message. A transaction keeps one of
    /// its failed reads this way while its caller gets the other.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Closed => Error::Closed,
            Error::ConnectionLost => Error::ConnectionLost,
            Error::ProtocolMismatch { ours, leader } => Error::ProtocolMismatch {
                ours: *ours,
                leader: *leader,
            },
            Error::TimedOut => Error::TimedOut,
            Error::TooLarge { len, max } => Error::TooLarge {
                len: *len,
                max: *max,
            },
            Error::ReplyTooLarge { len, max } => Error::ReplyTooLarge {
                len: *len,
                max: *max,
            },
            Error::KeyTooLarge { len, max } => Error::KeyTooLarge {
                len: *len,
                max: *max,
            },
            Error::BatchTooLarge { ops, max } => Error::BatchTooLarge {
                ops: *ops,
                max: *max,
            },
            Error::OtherUser { uid } => Error::OtherUser { uid: *uid },
            Error::WrongBackend { found, wanted } => Error::WrongBackend {
                found: *found,
                wanted: *wanted,
            },
            Error::WrongEtcdPrefix { found, wanted } => Error::WrongEtcdPrefix {
                found: found.clone(),
                wanted: wanted.clone(),
            },
            Error::LeaderOfOtherUser { uid } => Error::LeaderOfOtherUser { uid: *uid },
            Error::OutcomeUnknown { cause } => Error::OutcomeUnknown {
                cause: cause.clone(),
            },
            Error::FailedBefore => Error::FailedBefore,
            Error::LimitReached { limit, max } => Error::LimitReached {
                limit: *limit,
                max: *max,
            },
            Error::IteratorGone => Error::IteratorGone,
            Error::Locked { path } => Error::Locked { path: path.clone() },
            Error::StoreFull { free, reserve } => Error::StoreFull {
                free: *free,
                reserve: *reserve,
            },
            Error::StoreReadOnly => Error::StoreReadOnly,
            Error::ElectionFailed(cause) => Error::ElectionFailed(cause.clone()),
            Error::BlockingInRuntime => Error::BlockingInRuntime,
            Error::Protocol(message) => Error::Protocol(message.clone()),
            Error::Lagged { missed } => Error::Lagged { missed: *missed },
            Error::FeedOff => Error::FeedOff,
            Error::WatchAhead { from, next } => Error::WatchAhead {
                from: *from,
                next: *next,
            },
            Error::InvalidSublevelName { name } => {
                Error::InvalidSublevelName { name: name.clone() }
            }
            Error::InvalidOption { option, reason } => Error::InvalidOption { option, reason },
            Error::Io {
                context,
                path,
                source,
            } => Error::Io {
                context,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Codec(source) => Error::Codec(source.to_string().into()),
            Error::Backend { .. } | Error::Open(_) => Error::Backend {
                message: match self {
                    Error::Backend { message, .. } => message.clone(),
                    other => other.to_string(),
                },
                source: None,
            },
        }
    }
}

impl From<ErrorCode> for Error {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::Closed => Error::Closed,
            ErrorCode::ConnectionLost => Error::ConnectionLost,
            // Only a leader refuses a hello, so `expected` is the leader's and `got` ours.
            ErrorCode::ProtocolMismatch { expected, got } => Error::ProtocolMismatch {
                ours: got.version,
                leader: expected.version,
            },
            ErrorCode::TimedOut => Error::TimedOut,
            ErrorCode::Backend(message) => Error::Backend {
                message,
                source: None,
            },
            ErrorCode::KeyTooLarge { len, max } => Error::KeyTooLarge { len, max },
            ErrorCode::OutcomeUnknown(cause) => Error::OutcomeUnknown { cause },
            ErrorCode::FailedBefore => Error::FailedBefore,
            ErrorCode::BatchTooLarge { ops, max } => Error::BatchTooLarge { ops, max },
            ErrorCode::TooManyRequests { limit } => Error::LimitReached {
                limit: Limit::InFlight,
                max: limit,
            },
            ErrorCode::TooManyIterators { limit } => Error::LimitReached {
                limit: Limit::Iterators,
                max: limit,
            },
            ErrorCode::TooManyWatches { limit } => Error::LimitReached {
                limit: Limit::Watches,
                max: limit,
            },
            ErrorCode::WatchAhead { from, next } => Error::WatchAhead { from, next },
            ErrorCode::FeedOff => Error::FeedOff,
            ErrorCode::TooManyConnections { limit } => Error::LimitReached {
                limit: Limit::Connections,
                max: limit,
            },
            ErrorCode::StoreFull { free, reserve } => Error::StoreFull { free, reserve },
            ErrorCode::StoreReadOnly => Error::StoreReadOnly,
            ErrorCode::OtherUser { uid } => Error::OtherUser { uid },
            ErrorCode::LeaderOfOtherUser { uid } => Error::LeaderOfOtherUser { uid },
            ErrorCode::FrameTooLarge { len, max } => Error::TooLarge { len, max },
            ErrorCode::ReplyTooLarge { len, max } => Error::ReplyTooLarge { len, max },
            ErrorCode::NotFound => Error::IteratorGone,
            ErrorCode::WrongStore { found, wanted } => match (found.parse(), wanted.parse()) {
                (Ok(found), Ok(wanted)) => Error::WrongBackend { found, wanted },
                // A store this build does not know of: only a leader built with more could
                // name one.
                _ => Error::Protocol(ErrorCode::WrongStore { found, wanted }.to_string()),
            },
            other @ (ErrorCode::Locked | ErrorCode::Malformed(_)) => {
                Error::Protocol(other.to_string())
            }
            // The driver gives the cause it kept instead; this is the machine's word alone.
            failed @ ErrorCode::ElectionFailed(_) => {
                Error::ElectionFailed(Arc::new(Error::Protocol(failed.to_string())))
            }
        }
    }
}

impl From<BackendError> for Error {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::KeyTooLarge { len, max, .. } => Error::KeyTooLarge {
                len: len as u64,
                max: max as u64,
            },
            BackendError::BatchTooLarge { ops, max, .. } => Error::BatchTooLarge {
                ops: ops as u64,
                max: max as u64,
            },
            other => Error::Backend {
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}

impl From<OpenError> for Error {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::Locked { path, .. } => Error::Locked { path },
            other => Error::Open(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_store_error_raised_here_keeps_the_stores_error_as_source() {
        let corrupt = BackendError::CorruptRecord {
            key: vec![1],
            reason: "truncated".into(),
        };
        let error = Error::from(corrupt);
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
        let source = error.source().expect("the store's error is the source");
        assert!(
            matches!(
                source.downcast_ref::<BackendError>(),
                Some(BackendError::CorruptRecord { .. })
            ),
            "{source:?}"
        );
    }

    /// What a transaction's body is given in place of its failed read's error (the
    /// caller gets the error itself): the same variant and fields, and where a source
    /// cannot be copied, the same kind and text.
    #[test]
    fn a_duplicate_says_what_the_error_says() {
        use party_backends::BackendKind;
        let copied_whole = [
            Error::Closed,
            Error::ConnectionLost,
            Error::ProtocolMismatch { ours: 1, leader: 2 },
            Error::TimedOut,
            Error::TooLarge { len: 3, max: 4 },
            Error::ReplyTooLarge { len: 5, max: 6 },
            Error::KeyTooLarge { len: 7, max: 8 },
            Error::BatchTooLarge { ops: 9, max: 10 },
            Error::OtherUser { uid: 11 },
            Error::WrongBackend {
                found: BackendKind::Fjall,
                wanted: BackendKind::Sled,
            },
            Error::WrongEtcdPrefix {
                found: b"a/".to_vec(),
                wanted: b"b/".to_vec(),
            },
            Error::LeaderOfOtherUser { uid: 12 },
            Error::OutcomeUnknown {
                cause: "the leader went".into(),
            },
            Error::FailedBefore,
            Error::LimitReached {
                limit: Limit::Watches,
                max: 13,
            },
            Error::IteratorGone,
            Error::Locked {
                path: "/data/store.lock".into(),
            },
            Error::StoreFull {
                free: 14,
                reserve: 15,
            },
            Error::StoreReadOnly,
            Error::ElectionFailed(Arc::new(Error::TimedOut)),
            Error::BlockingInRuntime,
            Error::Protocol("an unknown message".into()),
            Error::Lagged { missed: 16 },
            Error::FeedOff,
            Error::WatchAhead { from: 17, next: 18 },
            Error::InvalidSublevelName { name: "a!b".into() },
            Error::InvalidOption {
                option: "max_in_flight",
                reason: "at least 1",
            },
        ];
        for error in copied_whole {
            assert_eq!(format!("{:?}", error.duplicate()), format!("{error:?}"));
        }
        let io = Error::Io {
            context: "cannot open",
            path: "/data".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        let Error::Io {
            context,
            path,
            source,
        } = io.duplicate()
        else {
            panic!("{:?}", io.duplicate());
        };
        assert_eq!((context, path), ("cannot open", "/data".into()));
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(io.duplicate().to_string(), io.to_string());
        let codec = Error::Codec("not JSON".into());
        assert!(matches!(codec.duplicate(), Error::Codec(_)));
        assert_eq!(codec.duplicate().to_string(), codec.to_string());
        let backend = Error::from(BackendError::CorruptRecord {
            key: vec![1],
            reason: "truncated".into(),
        });
        assert!(matches!(backend.duplicate(), Error::Backend { .. }));
        assert_eq!(backend.duplicate().to_string(), backend.to_string());
        let open = Error::Open(OpenError::Locked {
            backend: "fjall",
            path: "/data/store".into(),
        });
        // A store's error, as it says: "store error: " and the open's own text.
        assert!(matches!(open.duplicate(), Error::Backend { .. }));
        assert!(open.duplicate().to_string().ends_with(&open.to_string()));
    }
}

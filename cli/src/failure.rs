//! Why a command failed: a kind that scripts match on, a message for people, an exit code.

use party_core::Error;

/// The kinds of failure, by the names scripts match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command line or a line of input is not what the command takes.
    Usage,
    /// Stdout's reader went away (`| head`): the command ends, quietly.
    StdoutClosed,
    /// SIGHUP stopped the command.
    HungUp,
    /// SIGINT stopped the command.
    Interrupted,
    /// SIGTERM stopped the command.
    Terminated,
    /// The demo, the bench or chaos failed; the message says how.
    Failed,
    /// [`party_core::Error`]'s cause of that name.
    Closed,
    /// [`party_core::Error`]'s cause of that name.
    ConnectionLost,
    /// [`party_core::Error`]'s cause of that name.
    ProtocolMismatch,
    /// [`party_core::Error`]'s cause of that name.
    TimedOut,
    /// [`party_core::Error`]'s cause of that name.
    OutcomeUnknown,
    /// [`party_core::Error`]'s cause of that name.
    FailedBefore,
    /// [`party_core::Error`]'s cause of that name.
    LimitReached,
    /// [`party_core::Error`]'s cause of that name.
    TooLarge,
    /// [`party_core::Error`]'s cause of that name.
    ReplyTooLarge,
    /// [`party_core::Error`]'s cause of that name.
    StoreFull,
    /// [`party_core::Error`]'s cause of that name.
    StoreReadOnly,
    /// [`party_core::Error`]'s cause of that name.
    PermissionDenied,
    /// [`party_core::Error`]'s cause of that name.
    KeyTooLarge,
    /// [`party_core::Error`]'s cause of that name.
    BatchTooLarge,
    /// [`party_core::Error`]'s cause of that name.
    LeaderOfOtherUser,
    /// [`party_core::Error`]'s cause of that name.
    WrongBackend,
    /// [`party_core::Error`]'s cause of that name.
    IteratorGone,
    /// [`party_core::Error`]'s cause of that name.
    Backend,
    /// [`party_core::Error`]'s cause of that name.
    Locked,
    /// [`party_core::Error`]'s cause of that name.
    Open,
    /// [`party_core::Error`]'s cause of that name.
    Codec,
    /// [`party_core::Error`]'s cause of that name.
    ElectionFailed,
    /// [`party_core::Error`]'s cause of that name.
    Io,
    /// [`party_core::Error`]'s cause of that name.
    Protocol,
    /// [`party_core::Error`]'s cause of that name.
    Lagged,
    /// [`party_core::Error`]'s cause of that name.
    FeedOff,
    /// [`party_core::Error`]'s cause of that name.
    WatchAhead,
    /// `incr` found a value that is not a decimal integer, or a sum that overflows.
    NotANumber,
    /// A transaction met a conflict on each of its attempts.
    Conflict,
    /// A cause this build of the command does not know by name.
    Other,
}

impl Kind {
    /// The name scripts match on (in `error (KIND)` lines and JSON answers).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Usage => "usage",
            Kind::StdoutClosed => "stdout_closed",
            Kind::HungUp => "hung_up",
            Kind::Interrupted => "interrupted",
            Kind::Terminated => "terminated",
            Kind::Failed => "failed",
            Kind::Closed => "closed",
            Kind::ConnectionLost => "connection_lost",
            Kind::ProtocolMismatch => "protocol_mismatch",
            Kind::TimedOut => "timed_out",
            Kind::OutcomeUnknown => "outcome_unknown",
            Kind::FailedBefore => "failed_before",
            Kind::LimitReached => "limit_reached",
            Kind::TooLarge => "too_large",
            Kind::ReplyTooLarge => "reply_too_large",
            Kind::StoreFull => "store_full",
            Kind::StoreReadOnly => "store_read_only",
            Kind::PermissionDenied => "permission_denied",
            Kind::KeyTooLarge => "key_too_large",
            Kind::BatchTooLarge => "batch_too_large",
            Kind::LeaderOfOtherUser => "leader_of_other_user",
            Kind::WrongBackend => "wrong_backend",
            Kind::IteratorGone => "iterator_gone",
            Kind::Backend => "backend",
            Kind::Locked => "locked",
            Kind::Open => "open",
            Kind::Codec => "codec",
            Kind::ElectionFailed => "election_failed",
            Kind::Io => "io",
            Kind::Protocol => "protocol",
            Kind::Lagged => "lagged",
            Kind::FeedOff => "feed_off",
            Kind::WatchAhead => "watch_ahead",
            Kind::NotANumber => "not_a_number",
            Kind::Conflict => "conflict",
            Kind::Other => "other",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A failure, with the kind scripts match on and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            kind: Kind::Usage,
            message: message.into(),
        }
    }

    pub fn not_a_number(message: impl Into<String>) -> Failure {
        Failure {
            kind: Kind::NotANumber,
            message: message.into(),
        }
    }

    /// Stdout could not be written (a full disk, say): `io`, as the store's own I/O errors.
    pub fn stdout_unwritable(error: &std::io::Error) -> Failure {
        Failure {
            kind: Kind::Io,
            message: format!("cannot write to stdout: {error}"),
        }
    }

    /// Stdout's reader went away: the command ends, quietly.
    pub fn stdout_closed() -> Failure {
        Failure {
            kind: Kind::StdoutClosed,
            message: "stdout is closed".into(),
        }
    }

    /// The process got `signal` (SIGINT, SIGTERM or SIGHUP) and stopped.
    pub fn interrupted(signal: &str) -> Failure {
        let kind = match signal {
            "SIGINT" => Kind::Interrupted,
            "SIGTERM" => Kind::Terminated,
            _ => Kind::HungUp,
        };
        Failure {
            kind,
            message: format!("stopped by {signal}"),
        }
    }

    pub fn is_stdout_closed(&self) -> bool {
        self.kind == Kind::StdoutClosed
    }

    /// 2 for usage, 0 when stdout went away (the reader wanted no more), 128 + the
    /// signal's number after a signal (as a shell reports it), 3 for everything else (1 is
    /// a missing key, which is no failure).
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Usage => 2,
            Kind::StdoutClosed => 0,
            Kind::HungUp => 129,
            Kind::Interrupted => 130,
            Kind::Terminated => 143,
            _ => 3,
        }
    }
}

/// A transaction whose body fails with a [`Failure`] ends with it.
impl From<party_core::TransactionError<Failure>> for Failure {
    fn from(error: party_core::TransactionError<Failure>) -> Failure {
        match error {
            party_core::TransactionError::Db(error) => Failure::from(error),
            party_core::TransactionError::Conflict { attempts, key } => Failure {
                kind: Kind::Conflict,
                message: format!(
                    "the transaction met a conflict on each of its {attempts} attempts (last at \
                     key {:?})",
                    String::from_utf8_lossy(&key)
                ),
            },
            party_core::TransactionError::Aborted(failure) => failure,
        }
    }
}

/// A failure of the demo, the bench or chaos, as its message says.
impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            kind: Kind::Failed,
            message,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_owned())
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        let kind = match &error {
            Error::Closed => Kind::Closed,
            Error::ConnectionLost => Kind::ConnectionLost,
            Error::ProtocolMismatch { .. } => Kind::ProtocolMismatch,
            Error::TimedOut => Kind::TimedOut,
            Error::OutcomeUnknown { .. } => Kind::OutcomeUnknown,
            Error::FailedBefore => Kind::FailedBefore,
            Error::LimitReached { .. } => Kind::LimitReached,
            Error::TooLarge { .. } => Kind::TooLarge,
            Error::ReplyTooLarge { .. } => Kind::ReplyTooLarge,
            Error::StoreFull { .. } => Kind::StoreFull,
            Error::StoreReadOnly => Kind::StoreReadOnly,
            Error::OtherUser { .. } => Kind::PermissionDenied,
            Error::LeaderOfOtherUser { .. } => Kind::LeaderOfOtherUser,
            Error::KeyTooLarge { .. } => Kind::KeyTooLarge,
            Error::BatchTooLarge { .. } => Kind::BatchTooLarge,
            Error::IteratorGone => Kind::IteratorGone,
            Error::Backend { .. } => Kind::Backend,
            Error::Locked { .. } => Kind::Locked,
            Error::Open(_) => Kind::Open,
            Error::Codec(_) => Kind::Codec,
            Error::WrongBackend { .. } | Error::WrongEtcdPrefix { .. } => Kind::WrongBackend,
            Error::ElectionFailed(cause) => match cause.as_ref() {
                Error::Locked { .. } => Kind::Locked,
                Error::WrongBackend { .. } | Error::WrongEtcdPrefix { .. } => Kind::WrongBackend,
                Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    Kind::PermissionDenied
                }
                _ => Kind::ElectionFailed,
            },
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                Kind::PermissionDenied
            }
            Error::Io { .. } => Kind::Io,
            Error::InvalidSublevelName { .. } | Error::InvalidOption { .. } => Kind::Usage,
            Error::BlockingInRuntime | Error::Protocol(_) => Kind::Protocol,
            Error::Lagged { .. } => Kind::Lagged,
            Error::FeedOff => Kind::FeedOff,
            Error::WatchAhead { .. } => Kind::WatchAhead,
            _ => Kind::Other,
        };
        Failure {
            kind,
            message: error.to_string(),
        }
    }
}

//! Why a command failed: a kind that scripts match on, a message for people, an exit code.

use party_core::Error;

/// A failure, with the kind scripts match on and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub kind: &'static str,
    pub message: String,
}

/// The kind of a failure to write to stdout because its reader went away (`| head`).
const STDOUT_CLOSED: &str = "stdout_closed";

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            kind: "usage",
            message: message.into(),
        }
    }

    /// Stdout's reader went away: the command ends, quietly.
    pub fn stdout_closed() -> Failure {
        Failure {
            kind: STDOUT_CLOSED,
            message: "stdout is closed".into(),
        }
    }

    /// The process got `signal` (SIGINT, SIGTERM or SIGHUP) and stopped.
    pub fn interrupted(signal: &str) -> Failure {
        let kind = match signal {
            "SIGINT" => "interrupted",
            "SIGTERM" => "terminated",
            _ => "hung_up",
        };
        Failure {
            kind,
            message: format!("stopped by {signal}"),
        }
    }

    pub fn is_stdout_closed(&self) -> bool {
        self.kind == STDOUT_CLOSED
    }

    /// 2 for usage, 0 when stdout went away (the reader wanted no more), 128 + the
    /// signal's number after a signal (as a shell reports it), 3 for everything else (1 is
    /// a missing key, which is no failure).
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            "usage" => 2,
            STDOUT_CLOSED => 0,
            "hung_up" => 129,
            "interrupted" => 130,
            "terminated" => 143,
            _ => 3,
        }
    }
}

/// A failure of the demo, the bench or chaos, as its message says.
impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            kind: "failed",
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
            Error::Closed => "closed",
            Error::ConnectionLost => "connection_lost",
            Error::ProtocolMismatch { .. } => "protocol_mismatch",
            Error::TimedOut => "timed_out",
            Error::LimitReached { .. } => "limit_reached",
            Error::TooLarge { .. } => "too_large",
            Error::ReplyTooLarge { .. } => "reply_too_large",
            Error::StoreFull { .. } => "store_full",
            Error::StoreReadOnly => "store_read_only",
            Error::OtherUser { .. } => "permission_denied",
            Error::KeyTooLarge { .. } => "key_too_large",
            Error::IteratorGone => "iterator_gone",
            Error::Backend { .. } => "backend",
            Error::Locked { .. } => "locked",
            Error::Open(_) => "open",
            Error::Codec(_) => "codec",
            Error::ElectionFailed(cause) => match cause.as_ref() {
                Error::Locked { .. } => "locked",
                Error::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    "permission_denied"
                }
                _ => "election_failed",
            },
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
                "permission_denied"
            }
            Error::Io { .. } => "io",
            Error::BlockingInRuntime | Error::Protocol(_) => "protocol",
            _ => "other",
        };
        Failure {
            kind,
            message: error.to_string(),
        }
    }
}

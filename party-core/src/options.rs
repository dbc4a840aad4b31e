//! How a handle is opened.

use std::path::PathBuf;
use std::time::Duration;

use party_backends::BackendKind;

/// Options for [`crate::open`]. `Options::default()` is what most programs want.
#[derive(Debug, Clone)]
pub struct Options {
    /// The store the leader serves from (must be compiled in by its cargo feature). All
    /// processes of one data directory must use the same.
    pub backend: BackendKind,
    /// Re-send in-flight operations and resume iterators on the new leader after a
    /// failover (true, the default), or fail them with [`crate::Error::ConnectionLost`].
    pub retry: bool,
    /// Fail an operation with [`crate::Error::TimedOut`] once it has waited this long.
    pub request_timeout: Option<Duration>,
    /// Where the leader's socket lives, instead of `<dir>/party.sock` (or the short
    /// fallback used when that path is too long for a Unix socket).
    pub socket_path: Option<PathBuf>,
    /// How many entries an iterator may have buffered or on their way at once.
    pub iter_window: u32,
    /// What this handle allows while it leads, and the largest message it sends. All
    /// processes of one data directory should use the same.
    pub limits: Limits,
}

/// Bounds on what a leader accepts, each with a default that suits most programs. Going
/// past one fails that request, iterator or connection with a typed error
/// ([`crate::Error::LimitReached`], [`crate::Error::TooLarge`], [`crate::Error::StoreFull`])
/// and the leader goes on serving everything else.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest message (one request, reply or iterator chunk), in bytes. Default 64 MiB.
    pub max_frame_len: u32,
    /// Follower connections served at once; one more is refused. Default 1024.
    pub max_connections: u32,
    /// Requests one connection may have running at once. Default 4096.
    pub max_in_flight: u32,
    /// Iterators one connection may have open at once. Default 256.
    pub max_iterators: u32,
    /// Free space kept on the store's disk: below it, writes fail with
    /// [`crate::Error::StoreFull`] instead of reaching the store. Default 64 MiB.
    pub min_free_space: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let server = party_proto::ServerConfig::default();
        Limits {
            max_frame_len: party_proto::wire::DEFAULT_MAX_FRAME_LEN,
            max_connections: 1024,
            max_in_flight: server.max_in_flight,
            max_iterators: server.max_iterators,
            min_free_space: 64 * 1024 * 1024,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: default_backend(),
            retry: true,
            request_timeout: None,
            socket_path: None,
            iter_window: 1024,
            limits: Limits::default(),
        }
    }
}

fn default_backend() -> BackendKind {
    if cfg!(feature = "fjall") {
        BackendKind::Fjall
    } else if cfg!(feature = "rocksdb") {
        BackendKind::Rocksdb
    } else {
        BackendKind::Sled
    }
}

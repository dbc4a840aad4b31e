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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: default_backend(),
            retry: true,
            request_timeout: None,
            socket_path: None,
            iter_window: 1024,
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

//! Typed errors of the stores. Callers match on variants, never on messages.

use std::path::PathBuf;

/// The store's own error, kept whole for its message and source chain.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the store open.
    #[error("the {backend} store at {} is locked by another process", path.display())]
    Locked {
        backend: &'static str,
        path: PathBuf,
    },
    /// The store is not compiled into this build (enable its cargo feature).
    #[error("the {backend} backend is not compiled in; enable the `{backend}` cargo feature")]
    NotCompiled { backend: &'static str },
    /// The store needs settings this handle was not given (etcd: its endpoints and prefix).
    #[error("the {backend} store needs its settings (for etcd: endpoints and a prefix)")]
    NotConfigured { backend: &'static str },
    /// The store failed to open for a reason of its own.
    #[error("cannot open the {backend} store at {}: {source}", path.display())]
    Store {
        backend: &'static str,
        path: PathBuf,
        #[source]
        source: StoreError,
    },
}

#[cfg(any(feature = "sled", feature = "rocksdb"))]
impl OpenError {
    /// The error for a failed open, `Locked` when the store said another process holds it.
    pub(crate) fn from_store(
        backend: &'static str,
        path: &std::path::Path,
        locked: bool,
        source: impl Into<StoreError>,
    ) -> Self {
        if locked {
            OpenError::Locked {
                backend,
                path: path.to_owned(),
            }
        } else {
            OpenError::Store {
                backend,
                path: path.to_owned(),
                source: source.into(),
            }
        }
    }
}

/// Why an operation on an open store failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The store failed (IO error, disk full, poisoned after an earlier fatal error, …).
    #[error("{backend} store error: {source}")]
    Store {
        backend: &'static str,
        #[source]
        source: StoreError,
    },
    /// The key is longer than this store can hold.
    #[error("key of {len} bytes is longer than the {backend} store allows ({max} bytes)")]
    KeyTooLarge {
        backend: &'static str,
        len: usize,
        max: usize,
    },
    /// The batch touches more keys than the store commits at once
    /// ([`crate::Backend::max_batch_ops`]); nothing of it was applied.
    #[error(
        "a batch of {ops} operations is more than the {backend} store commits at once ({max})"
    )]
    BatchTooLarge {
        backend: &'static str,
        ops: usize,
        max: usize,
    },
    /// The store cannot tell whether a write landed (its answer was lost and the store
    /// could not be asked again): it may have been applied or not.
    #[error("{backend} cannot tell whether the write landed: {source}")]
    Unsettled {
        backend: &'static str,
        #[source]
        source: StoreError,
    },
    /// The batch is larger, in bytes, than the store takes in one request (etcd: 1.5 MiB
    /// by default); nothing of it was applied.
    #[error(
        "a batch of about {bytes} bytes is more than the {backend} store takes at once ({max})"
    )]
    RequestTooLarge {
        backend: &'static str,
        bytes: usize,
        max: usize,
    },
    /// What the batch was formed on changed in the store before it could commit, on a
    /// store several hosts share: another host's leader wrote what a transaction of it
    /// read, or took the change log's next number, or a late copy of this store's own
    /// move of its commit marker (etcd) moved it; nothing of the batch was applied. The
    /// leader's writer reads the log's ends again and commits each write again alone,
    /// checking transactions anew.
    #[error(
        "the {backend} store changed under the batch before its commit (a transaction's \
         read, the change log's next number, or the commit marker)"
    )]
    Stale { backend: &'static str },
    /// A dedup record in the reserved namespace does not decode: the store was written by
    /// something else, or is damaged.
    #[error("corrupt dedup record for key {key:02x?}: {reason}")]
    CorruptRecord { key: Vec<u8>, reason: String },
}

#[cfg(any(feature = "fjall", feature = "sled", feature = "rocksdb"))]
impl BackendError {
    pub(crate) fn store(backend: &'static str, source: impl Into<StoreError>) -> Self {
        BackendError::Store {
            backend,
            source: source.into(),
        }
    }
}

impl From<BackendError> for party_proto::ErrorCode {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::BatchTooLarge { ops, max, .. } => party_proto::ErrorCode::BatchTooLarge {
                ops: ops as u64,
                max: max as u64,
            },
            BackendError::KeyTooLarge { len, max, .. } => party_proto::ErrorCode::KeyTooLarge {
                len: len as u64,
                max: max as u64,
            },
            BackendError::RequestTooLarge { bytes, max, .. } => {
                party_proto::ErrorCode::FrameTooLarge {
                    len: bytes as u64,
                    max: max as u64,
                }
            }
            unsettled @ BackendError::Unsettled { .. } => {
                party_proto::ErrorCode::OutcomeUnknown(unsettled.to_string())
            }
            other => party_proto::ErrorCode::Backend(other.to_string()),
        }
    }
}

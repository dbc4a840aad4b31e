//! party-core: open one key-value store from many processes at once.
//!
//! The first process to take the data directory's lock becomes the leader: it opens the
//! store and serves the others over a local socket in the directory. The others follow and
//! send every operation there. When the leader dies, a follower takes over, and in-flight
//! operations complete on the new leader — writes exactly once, iterators with no entry
//! repeated or missed. Callers see one API whatever their role.
//!
//! All decisions are made by the sans-IO machines of [`party_proto`]; this crate does the IO:
//! a file lock, tokio, interprocess local sockets, and a [`party_backends`] store.
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), party_core::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! use party_core::{open, IterOptions, Json, Options};
//!
//! let db = open(dir.path(), Options::default()).await?;
//! db.put("greeting", "hello").await?;
//! assert_eq!(db.get("greeting").await?, Some(b"hello".to_vec()));
//!
//! // Values through a codec, like level's valueEncoding.
//! let scores = db.with_codec(Json::<Vec<u32>>::default());
//! scores.put("alice", &vec![3, 5]).await?;
//! assert_eq!(scores.get("alice").await?, Some(vec![3, 5]));
//!
//! let all = db.iter(IterOptions::default()).await?.collect().await?;
//! assert_eq!(all.len(), 2);
//! db.close().await
//! # }
//! ```
//!
//! Programs without an async runtime use [`BlockingDb`]:
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! let db = party_core::BlockingDb::open(dir.path(), party_core::Options::default())?;
//! db.put("k", "v")?;
//! assert_eq!(db.get("k")?, Some(b"v".to_vec()));
//! # Ok::<(), party_core::Error>(())
//! ```

// Under `--cfg loom` only the shared-memory pieces build (tokio leaves out the sockets
// then); `tests/loom.rs` models them. See `sync.rs`, and `value_ring.rs` for the memory a
// follower shares with its leader's process.
#[cfg(loom)]
pub mod sync;
#[cfg(not(loom))]
mod sync;

#[cfg(not(loom))]
mod access;
#[cfg(not(loom))]
mod alarm;
#[cfg(not(loom))]
mod blocking;
#[cfg(not(loom))]
mod clock;
#[cfg(not(loom))]
mod codec;
#[cfg(not(loom))]
mod data;
#[cfg(not(loom))]
mod db;
#[cfg(not(loom))]
mod driver;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod headroom;
#[cfg(not(loom))]
mod injection;
#[cfg(not(loom))]
mod leader;
#[cfg(not(loom))]
mod link;
#[cfg(not(loom))]
pub mod lock;
#[cfg(not(loom))]
mod opening;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod paths;
#[cfg(not(loom))]
mod recording;
#[cfg(not(loom))]
mod role;
#[cfg(not(loom))]
mod scans;
#[cfg(not(loom))]
mod send_buffer;
#[cfg(not(loom))]
mod shared_memory;
// The loom models see the ring's memory as cells loom tracks, shared by two threads.
#[cfg(loom)]
#[path = "shared_memory_model.rs"]
mod shared_memory;
#[cfg(not(loom))]
mod slow_writes;
#[cfg(not(loom))]
mod socket_now;
#[cfg(not(loom))]
mod spin;
#[cfg(not(loom))]
mod store;
#[cfg(not(loom))]
mod store_dir;
#[cfg(not(loom))]
mod sublevel;
#[cfg(not(loom))]
mod term;
#[cfg(not(loom))]
mod transaction;
#[cfg(not(loom))]
mod value_ring;
#[cfg(loom)]
pub mod value_ring;
#[cfg(not(loom))]
mod waiting_room;
#[cfg(not(loom))]
mod watch;

#[cfg(not(loom))]
pub use {
    blocking::{BlockingDb, BlockingIter, BlockingTransaction},
    codec::{Codec, Json, Raw, Typed, Utf8},
    data::{BatchOp, Entry, IterOptions, KeyRange},
    db::{open, Db, Iter, Status},
    error::{Error, Limit},
    options::{Limits, Options, MIN_FRAME_LEN},
    party_backends::{BackendKind, EtcdConfig, OpenError, UnknownBackend},
    recording::{Recording, RECORD_ENV, RECORD_MAX_BYTES_ENV},
    role::{Role, RoleState, RoleWatch, Takeover, TakeoverCause},
    transaction::{CasConflict, Transaction, TransactionError},
    watch::{Change, ChangeRetention, CommitSeq, Watch},
};

/// A throwaway etcd cluster on this machine, for tests, demos and benchmarks.
#[cfg(all(not(loom), feature = "etcd"))]
pub use party_backends::LocalCluster;

/// The README's Rust examples, compiled by `cargo test` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

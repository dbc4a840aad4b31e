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

mod blocking;
mod clock;
mod codec;
mod db;
mod driver;
mod error;
mod leader;
mod link;
pub mod lock;
mod options;
mod paths;
mod store;

pub use blocking::{BlockingDb, BlockingIter};
pub use codec::{Codec, Json, Raw, Typed, Utf8};
pub use db::{open, Db, Iter};
pub use driver::RoleState;
pub use error::Error;
pub use options::Options;
pub use party_backends::BackendKind;
pub use party_proto::wire::{BatchOp, Entry};
pub use party_proto::{IterOptions, KeyRange, Role};

//! The leader's side: one [`ServerSession`] per follower connection, and one [`DedupTable`]
//! for the whole leader, consulted by its single writer.

mod answer_order;
pub mod dedup;
pub mod peers;
pub mod session;
pub mod subscriptions;

pub use dedup::{Admission, DedupRecord, DedupTable, WriteStamp};
pub use peers::{admit_leader, admit_peer, PeerFacts};
pub use session::{ServerConfig, ServerInput, ServerOutput, ServerSession};

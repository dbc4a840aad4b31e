//! party-proto: every decision of party, and no IO.
//!
//! In the style of quinn-proto and str0m: inputs go in through `handle_input(now, input)`,
//! actions come out of `poll_output()`, and `poll_timeout()` says when the machine next
//! wants to be woken. Time, ids and randomness are parameters, so the same inputs always
//! give the same outputs — which is what lets the simulator replay a failover from a seed.

pub mod bugs;
mod changelog;
pub mod client;
pub mod election;
pub mod error;
pub mod feed;
pub mod ids;
pub mod jitter;
pub mod process;
pub mod range;
pub mod recording;
pub mod server;
pub mod store_kind;
pub mod takeover;
pub mod time;
pub mod txn;
pub mod wire;
pub mod writer;

pub use client::{
    ClientConfig, ClientInput, ClientOutput, ClientSession, IterPoll, WatchEvent, WatchPoll,
};
pub use election::{Election, ElectionConfig, ElectionInput, ElectionOutput, Role};
pub use error::ErrorCode;
pub use feed::{Change, ChangeRetention, CommitSeq, LogAppend, LogEnds, LogSpan};
pub use ids::{ClientId, IterId, RequestId, WatchId, WriteSeq};
pub use process::{Process, ProcessConfig, ProcessInput, ProcessOutput, RoleView};
pub use range::{IterOptions, KeyRange};
pub use server::{
    admit_leader, admit_peer, Admission, DedupRecord, DedupTable, PeerFacts, ServerConfig,
    ServerInput, ServerOutput, ServerSession, WriteStamp,
};
pub use store_kind::admit_store;
pub use takeover::{Takeover, TakeoverCause, Takeovers};
pub use time::Timestamp;
pub use writer::{
    group_cost, CommitResult, WriteBatch, Writer, WriterConfig, WriterInput, WriterOutput,
    DEFAULT_DEDUP_RETENTION, EXPIRY_PAGE,
};

//! Storage backends for party.
//!
//! The leader serves every operation from one of these stores. Today the crate holds the
//! in-memory store that the simulator and tests use; the `Backend` trait and the fjall,
//! sled and rocksdb stores build on it.

pub mod memory;

pub use memory::MemoryStore;

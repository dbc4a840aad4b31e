//! party-core: the crate users embed.
//!
//! It drives the sans-IO machines of [`party_proto`] with real IO: a file lock decides who
//! leads, the leader serves a [`party_backends`] store over a local socket in the data
//! directory, and everyone else follows over that socket.

pub mod lock;

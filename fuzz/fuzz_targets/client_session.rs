//! The fuzz target of `bodies/client_session.rs`, which the workspace's tests also run
//! (party-proto/tests/fuzz_bodies.rs), so that it keeps compiling with the code it fuzzes.
#![no_main]

#[path = "../bodies/client_session.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));

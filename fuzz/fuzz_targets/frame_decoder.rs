//! The fuzz target of `bodies/frame_decoder.rs`, which the workspace's tests also run
//! (party-proto/tests/fuzz_bodies.rs), so that it keeps compiling with the code it fuzzes.
#![no_main]

#[path = "../bodies/frame_decoder.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));

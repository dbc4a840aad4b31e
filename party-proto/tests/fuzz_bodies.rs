//! The fuzz targets' bodies (`fuzz/bodies`), run on their corpus and on generated input.
//! The fuzz crate needs nightly and libFuzzer and lives outside the workspace; its target
//! once stopped compiling unseen for weeks. Here the bodies compile with the code they
//! fuzz, and their checks (no panic, no entry past an iterator's credits, a sticky decode
//! error) hold on every run of the test suite.

mod support;

#[path = "../../fuzz/bodies/frame_decoder.rs"]
mod frame_decoder;
#[path = "../../fuzz/bodies/server_session.rs"]
mod server_session;

use std::path::Path;

use party_proto::wire::{encode_frame, ClientMessage, ServerMessage};
use proptest::collection::vec;
use proptest::prelude::*;
use support::*;

/// Every input file of one target's corpus.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} cannot be read: {e}", dir.display()));
    entries
        .map(|entry| std::fs::read(entry.expect("a corpus entry").path()).expect("a corpus file"))
        .collect()
}

#[test]
fn the_corpus_replays() {
    let decoder_inputs = corpus("frame_decoder");
    let session_inputs = corpus("server_session");
    assert!(!decoder_inputs.is_empty() && !session_inputs.is_empty());
    for input in &decoder_inputs {
        frame_decoder::run(input);
    }
    for input in &session_inputs {
        server_session::run(input);
    }
}

/// `first`, then the frames of `messages`, then `garbage`: input a fuzzer would take long
/// to find by flipping bytes.
fn framed<M: serde::Serialize>(first: u8, messages: &[M], garbage: &[u8]) -> Vec<u8> {
    let mut data = vec![first];
    for message in messages {
        encode_frame(message, 1 << 20, &mut data).expect("a generated message encodes");
    }
    data.extend_from_slice(garbage);
    data
}

proptest! {
    #[test]
    fn the_session_body_holds_on_client_frames(
        first in any::<u8>(),
        messages in vec(client_message(), 0..24),
        garbage in vec(any::<u8>(), 0..8),
    ) {
        server_session::run(&framed(first, &messages, &garbage));
    }

    #[test]
    fn the_decoder_body_holds_on_frames_and_garbage(
        cut in any::<u8>(),
        clients in vec(client_message(), 0..8),
        servers in vec(server_message(), 0..8),
        garbage in vec(any::<u8>(), 0..64),
    ) {
        frame_decoder::run(&framed::<ClientMessage>(cut, &clients, &garbage));
        frame_decoder::run(&framed::<ServerMessage>(cut, &servers, &garbage));
        frame_decoder::run(&garbage);
    }
}

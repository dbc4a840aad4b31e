//! The fuzz targets' bodies (`fuzz/bodies`), run on their corpus and on generated input.
//! The fuzz crate needs nightly and libFuzzer and lives outside the workspace; its target
//! once stopped compiling unseen for weeks. Here the bodies compile with the code they
//! fuzz, and their checks hold on every run of the test suite: the decoders never panic,
//! buffer at most one frame and keep their first error; a leader's session never panics
//! and never sends an iterator more entries than it was granted, through runs of small,
//! mostly valid messages that open, stream and close iterators; a follower's session never
//! panics and answers each request once, whatever its leader sends.
//!
//! The corpus seeds are the streams [`seeds`] makes, checked against the files so that a
//! change of the wire format cannot leave a fuzzer starting from streams the leader now
//! refuses at their first frame; `PARTY_FUZZ_SEEDS=write` rewrites them.

mod support;

#[path = "../../fuzz/bodies/client_session.rs"]
mod client_session;
#[path = "../../fuzz/bodies/frame_decoder.rs"]
mod frame_decoder;
#[path = "../../fuzz/bodies/server_session.rs"]
mod server_session;

use std::path::{Path, PathBuf};

use party_proto::wire::{
    encode_frame, ClientMessage, Entry, Hello, ProtocolId, ReadOp, Response, ServerMessage, WriteOp,
};
use party_proto::{
    Change, ClientId, CommitSeq, ErrorCode, IterId, IterOptions, RequestId, WatchId, WriteSeq,
};
use proptest::collection::vec;
use proptest::prelude::*;
use support::*;

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

fn hello() -> ClientMessage {
    ClientMessage::Hello(Hello {
        protocol: ProtocolId::CURRENT,
        client_id: ClientId(1),
        store: "fjall".into(),
    })
}

/// Each target's seeds, by file name: valid streams of this protocol version, a first
/// byte before them (the decoder's chunk size; for the leader's session, whether the body
/// sends a hello of its own, here not, as the streams start with one where they should;
/// for the follower's, whether it retries, has a timeout, and how much time passes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let get = ClientMessage::Read {
        id: RequestId(1),
        op: ReadOp::Get { key: b"k".to_vec() },
    };
    let put = ClientMessage::Write {
        id: RequestId(2),
        seq: WriteSeq(1),
        oldest_pending: WriteSeq(1),
        first_sent_ms: 0,
        op: WriteOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }
        .into(),
    };
    let iterate = [
        hello(),
        ClientMessage::IterOpen {
            iter: IterId(1),
            options: IterOptions::default(),
            credits: 5,
            bytes: 1000,
        },
        ClientMessage::IterNext {
            iter: IterId(1),
            credits: 8,
            bytes: 1000,
        },
        ClientMessage::IterClose { iter: IterId(1) },
    ];
    let reply = ServerMessage::Reply {
        id: RequestId(1),
        result: Ok(Response::Value(Some(bytes::Bytes::from_static(b"v")))),
    };
    let hello_get_put = [hello(), get.clone(), put];
    let mut all = Vec::new();
    for (target, first) in [("frame_decoder", 7), ("server_session", 0)] {
        all.push((
            target,
            "seed-hello-get-put",
            framed(first, &hello_get_put, &[]),
        ));
        all.push((target, "seed-iterate", framed(first, &iterate, &[])));
        all.push((
            target,
            "seed-no-hello",
            framed(first, std::slice::from_ref(&get), &[]),
        ));
    }
    all.push(("frame_decoder", "seed-reply", framed(3, &[reply], &[])));
    all.extend(client_seeds());
    all
}

/// A leader's answers to what the client session body asks first (its read 0 and write 1,
/// its iterator and subscription 0), and a refusal; their first byte retries and lets 1 ms
/// pass after each message.
fn client_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let (iter, watch) = (IterId(0), WatchId(0));
    let answers = [
        welcome(),
        ServerMessage::Reply {
            id: RequestId(0),
            result: Ok(Response::Value(Some(bytes::Bytes::from_static(b"v")))),
        },
        ServerMessage::Reply {
            id: RequestId(1),
            result: Ok(Response::Written),
        },
        ServerMessage::IterAt {
            iter,
            seq: CommitSeq(3),
        },
        ServerMessage::IterData {
            iter,
            entries: vec![Entry {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            }],
        },
        ServerMessage::IterEnd { iter },
        ServerMessage::WatchStarted {
            watch,
            from: CommitSeq(4),
        },
        ServerMessage::WatchData {
            watch,
            seq: CommitSeq(4),
            changes: vec![Change::Del { key: b"k".to_vec() }],
            complete: true,
        },
    ];
    let refused = [ServerMessage::Rejected(ErrorCode::Closed)];
    vec![
        ("client_session", "seed-answers", framed(5, &answers, &[])),
        ("client_session", "seed-refused", framed(5, &refused, &[])),
    ]
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn the_corpus_seeds_are_valid_streams_of_this_protocol() {
    let write = std::env::var("PARTY_FUZZ_SEEDS").is_ok_and(|v| v == "write");
    for (target, name, bytes) in seeds() {
        let path = corpus_dir(target).join(name);
        if write {
            std::fs::write(&path, &bytes).expect("a seed is written");
        }
        let stored = std::fs::read(&path).unwrap_or_default();
        assert!(
            stored == bytes,
            "{} is not what this protocol makes of it: PARTY_FUZZ_SEEDS=write cargo test -p \
             party-proto --test fuzz_bodies rewrites the seeds",
            path.display()
        );
    }
}

#[test]
fn the_corpus_replays() {
    let seeds = seeds();
    for target in ["client_session", "frame_decoder", "server_session"] {
        let seeded = seeds.iter().filter(|(of, _, _)| *of == target).count();
        let entries = std::fs::read_dir(corpus_dir(target)).expect("the corpus is there");
        let mut count = 0;
        for entry in entries {
            let input = std::fs::read(entry.expect("a corpus entry").path()).expect("a file");
            match target {
                "client_session" => client_session::run(&input),
                "frame_decoder" => frame_decoder::run(&input),
                _ => server_session::run(&input),
            }
            count += 1;
        }
        assert!(
            count >= seeded,
            "{target}'s corpus has {count} inputs, {seeded} seeds"
        );
    }
}

/// What the session body's first byte says, mostly: its own hello first, and chunks no
/// longer than their pulls (bit 7 asks for one entry more, which fails the iterator).
fn session_first() -> impl Strategy<Value = u8> {
    prop_oneof![4 => (0u8..128).prop_map(|first| first | 1), 1 => any::<u8>()]
}

proptest! {
    #[test]
    fn the_session_body_holds_on_client_frames(
        first in session_first(),
        messages in vec(
            small_message().prop_filter("the body sends the hello", |message| {
                !matches!(message, ClientMessage::Hello(_))
            }),
            0..24,
        ),
        garbage in vec(any::<u8>(), 0..8),
    ) {
        server_session::run(&framed(first, &messages, &garbage));
    }

    #[test]
    fn the_client_session_body_holds_on_leader_frames(
        first in any::<u8>(),
        welcomed in any::<bool>(),
        messages in vec(server_message().prop_map(among_known_ids), 0..24),
        garbage in vec(any::<u8>(), 0..8),
    ) {
        let messages: Vec<_> = welcomed.then(welcome).into_iter().chain(messages).collect();
        client_session::run(&framed(first, &messages, &garbage));
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

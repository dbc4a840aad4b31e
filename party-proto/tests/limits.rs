//! The leader's limits travel in its welcome, and both ends keep to them: the client never
//! sends what would be refused, and the leader never sends a frame over its limit. Every
//! request ends in an answer or a typed error; nothing is re-sent in a loop.

use std::time::Duration;

use party_proto::election::ElectionFailure;
use party_proto::wire::{
    encode_frame, ClientMessage, Entry, LeaderLimits, ProtocolId, ReadOp, Response, ServerMessage,
    Welcome,
};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, Election, ElectionConfig,
    ElectionInput, ElectionOutput, ErrorCode, IterOptions, RequestId, Role, ServerConfig,
    ServerInput, ServerOutput, ServerSession, Timestamp,
};

const NOW: Timestamp = Timestamp::ZERO;

fn welcomed(config: ClientConfig, limits: LeaderLimits) -> ClientSession {
    let mut session = ClientSession::new(ClientId(7), config);
    session.handle_input(NOW, ClientInput::Connected);
    let welcome = Welcome {
        protocol: ProtocolId::CURRENT,
        leader_pid: 1,
        term: 1,
        store: "fjall".into(),
        limits,
    };
    session.handle_input(NOW, ClientInput::Message(ServerMessage::Welcome(welcome)));
    drain(&mut session);
    session
}

fn drain(session: &mut ClientSession) -> Vec<ClientOutput> {
    std::iter::from_fn(|| session.poll_output()).collect()
}

fn sent_ids(outputs: &[ClientOutput]) -> Vec<RequestId> {
    outputs
        .iter()
        .filter_map(|output| match output {
            ClientOutput::Send(ClientMessage::Read { id, .. }) => Some(*id),
            _ => None,
        })
        .collect()
}

fn get(key: &str) -> ReadOp {
    ReadOp::Get {
        key: key.as_bytes().to_vec(),
    }
}

fn limits(max_frame_len: u32, max_in_flight: u32, max_iter_credits: u32) -> LeaderLimits {
    LeaderLimits {
        max_frame_len,
        max_in_flight,
        max_iter_credits,
    }
}

fn answer(id: RequestId) -> ClientInput {
    ClientInput::Message(ServerMessage::Reply {
        id,
        result: Ok(Response::Value(None)),
    })
}

#[test]
fn requests_beyond_the_leaders_in_flight_cap_wait_and_go_out_in_order() {
    let mut session = welcomed(ClientConfig::default(), limits(1 << 20, 2, 16));
    let ids: Vec<_> = (0..5)
        .map(|i| session.read(NOW, get(&i.to_string())))
        .collect();
    assert_eq!(sent_ids(&drain(&mut session)), ids[..2], "two in flight");
    session.handle_input(NOW, answer(ids[1]));
    assert_eq!(
        sent_ids(&drain(&mut session)),
        [ids[2]],
        "one answered, one more"
    );
    session.handle_input(NOW, answer(ids[0]));
    session.handle_input(NOW, answer(ids[2]));
    assert_eq!(sent_ids(&drain(&mut session)), ids[3..]);
    assert_eq!(session.pending_requests(), 2);
}

#[test]
fn a_timed_out_request_counts_in_flight_until_the_leader_answers_it() {
    let config = ClientConfig {
        request_timeout: Some(Duration::from_millis(10)),
        ..ClientConfig::default()
    };
    let mut session = welcomed(config, limits(1 << 20, 1, 16));
    let first = session.read(NOW, get("a"));
    let later = NOW + Duration::from_millis(5);
    let second = session.read(later, get("b"));
    assert_eq!(sent_ids(&drain(&mut session)), [first]);
    session.handle_timeout(NOW + Duration::from_millis(10));
    let outputs = drain(&mut session);
    assert_eq!(
        outputs,
        [ClientOutput::Completed {
            id: first,
            result: Err(ErrorCode::TimedOut)
        }],
        "the leader still runs the first: the second must not overrun its cap"
    );
    session.handle_input(later, answer(first));
    let outputs = drain(&mut session);
    assert_eq!(sent_ids(&outputs), [second], "{outputs:?}");
    assert!(
        !outputs
            .iter()
            .any(|output| matches!(output, ClientOutput::Completed { .. })),
        "a late answer completes nothing twice: {outputs:?}"
    );
}

#[test]
fn a_request_over_a_frame_limit_fails_at_once_and_is_never_sent() {
    let huge = ReadOp::GetMany {
        keys: vec![vec![0; 600]; 2],
    };
    // Over the leader's limit: known at the welcome.
    let mut session = welcomed(ClientConfig::default(), limits(1000, 16, 16));
    let small = session.read(NOW, get("k"));
    let big = session.read(NOW, huge.clone());
    let outputs = drain(&mut session);
    assert_eq!(sent_ids(&outputs), [small]);
    assert!(
        outputs.iter().any(|output| matches!(output,
            ClientOutput::Completed { id, result: Err(ErrorCode::FrameTooLarge { max: 1000, .. }) }
                if *id == big)),
        "{outputs:?}"
    );

    // Over its own limit: known before any leader.
    let config = ClientConfig {
        max_frame_len: 1000,
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(ClientId(8), config);
    let big = session.read(NOW, huge);
    assert!(matches!(
        drain(&mut session)[..],
        [ClientOutput::Completed { id, result: Err(ErrorCode::FrameTooLarge { max: 1000, .. }) }]
            if id == big
    ));
    assert_eq!(session.pending_requests(), 0);
}

#[test]
fn an_iterator_window_over_the_leaders_credit_cap_is_cut_to_it() {
    let config = ClientConfig {
        iter_window: 10_000,
        ..ClientConfig::default()
    };
    // Under the 1024 an iterator asks for before it knows its entries' size.
    let mut session = welcomed(config, limits(1 << 20, 16, 512));
    let _iter = session.open_iter(IterOptions::default());
    let outputs = drain(&mut session);
    assert!(
        matches!(
            outputs[..],
            [ClientOutput::Send(ClientMessage::IterOpen {
                credits: 512,
                ..
            })]
        ),
        "{outputs:?}"
    );
}

fn ready_server(config: ServerConfig) -> ServerSession {
    let mut server = ServerSession::new(NOW, config.clone());
    let hello = party_proto::wire::Hello {
        protocol: ProtocolId::CURRENT,
        client_id: ClientId(3),
        store: "fjall".into(),
    };
    server.handle_input(NOW, ServerInput::Message(ClientMessage::Hello(hello)));
    let welcome: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
    assert!(
        matches!(&welcome[..], [ServerOutput::Send(ServerMessage::Welcome(w))] if w.limits == config.limits()),
        "the welcome carries the limits: {welcome:?}"
    );
    server
}

fn small_frames() -> ServerConfig {
    ServerConfig {
        max_frame_len: 1000,
        ..ServerConfig::default()
    }
}

/// Every message goes through the real encoder at the limit: none may be refused.
fn frames_fit(outputs: &[ServerOutput], max: u32) {
    for output in outputs {
        if let ServerOutput::Send(message) = output {
            let mut out = Vec::new();
            encode_frame(message, max, &mut out)
                .unwrap_or_else(|error| panic!("{message:?} does not fit: {error}"));
        }
    }
}

#[test]
fn an_answer_over_the_frame_limit_fails_that_request_alone() {
    let mut server = ready_server(small_frames());
    for id in [RequestId(1), RequestId(2)] {
        let op = ReadOp::GetMany {
            keys: vec![b"a".to_vec(), b"b".to_vec()],
        };
        server.handle_input(NOW, ServerInput::Message(ClientMessage::Read { id, op }));
    }
    let values = vec![Some(vec![1; 700]), Some(vec![2; 700])];
    server.handle_input(
        NOW,
        ServerInput::Completed {
            id: RequestId(1),
            result: Ok(Response::Values(values)),
        },
    );
    server.handle_input(
        NOW,
        ServerInput::Completed {
            id: RequestId(2),
            result: Ok(Response::Values(vec![Some(vec![3; 100]), None])),
        },
    );
    let outputs: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
    frames_fit(&outputs, 1000);
    assert!(!server.is_closed());
    assert!(
        matches!(
            &outputs[..],
            [
                ServerOutput::Read { .. },
                ServerOutput::Read { .. },
                ServerOutput::Send(ServerMessage::Reply {
                    id: RequestId(1),
                    result: Err(ErrorCode::ReplyTooLarge { max: 1000, .. })
                }),
                ServerOutput::Send(ServerMessage::Reply {
                    id: RequestId(2),
                    result: Ok(_)
                }),
            ]
        ),
        "{outputs:?}"
    );
}

/// A follower's opening of iterator `iter` over everything, with credits to spare.
fn open_iter(iter: party_proto::IterId) -> ServerInput {
    ServerInput::Message(ClientMessage::IterOpen {
        iter,
        options: IterOptions::default(),
        credits: 100,
        bytes: u64::MAX,
    })
}

#[test]
fn iterator_entries_are_cut_into_frames_that_fit_and_an_entry_too_big_fails_the_iterator() {
    let mut server = ready_server(small_frames());
    let iter = party_proto::IterId(0);
    server.handle_input(NOW, open_iter(iter));
    let entry = |byte: u8, len: usize| Entry {
        key: vec![byte],
        value: vec![byte; len],
    };
    let mut entries: Vec<_> = (0..10).map(|i| entry(i, 300)).collect();
    entries.push(entry(10, 2000));
    entries.push(entry(11, 1));
    server.handle_input(
        NOW,
        ServerInput::IterChunk {
            iter,
            entries,
            exhausted: true,
        },
    );
    let outputs: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
    frames_fit(&outputs, 1000);
    let delivered: Vec<u8> = outputs
        .iter()
        .filter_map(|output| match output {
            ServerOutput::Send(ServerMessage::IterData { entries, .. }) => Some(entries),
            _ => None,
        })
        .flatten()
        .map(|entry| entry.key[0])
        .collect();
    assert_eq!(
        delivered,
        (0..10).collect::<Vec<u8>>(),
        "every entry before the big one"
    );
    let frames = outputs
        .iter()
        .filter(|output| matches!(output, ServerOutput::Send(ServerMessage::IterData { .. })))
        .count();
    assert!(frames >= 4, "3000 bytes in frames of 1000: {frames}");
    assert!(
        outputs.iter().any(|output| matches!(
            output,
            ServerOutput::Send(ServerMessage::IterFailed {
                error: ErrorCode::ReplyTooLarge { .. },
                ..
            })
        )),
        "{outputs:?}"
    );
    assert!(outputs.contains(&ServerOutput::IterDrop { iter }));
    assert!(!server.is_closed(), "the connection stays up");
}

/// A store's error message of any length (a long path, an etcd status) is cut so that its
/// answer fits in a small frame: the request, the iterator and the hello fail alone with it,
/// instead of the leader hanging up on a frame it cannot encode (and the follower sending
/// the request again, forever).
#[test]
fn errors_with_long_texts_fit_in_a_small_frame() {
    let long = "é".repeat(4000);
    let mut server = ready_server(small_frames());
    let id = RequestId(1);
    let op = get("k");
    server.handle_input(NOW, ServerInput::Message(ClientMessage::Read { id, op }));
    let iter = party_proto::IterId(0);
    server.handle_input(NOW, open_iter(iter));
    server.handle_input(
        NOW,
        ServerInput::Completed {
            id,
            result: Err(ErrorCode::Backend(long.clone())),
        },
    );
    server.handle_input(
        NOW,
        ServerInput::IterFailed {
            iter,
            error: ErrorCode::OutcomeUnknown(long.clone()),
        },
    );
    let outputs: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
    frames_fit(&outputs, 1000);
    let texts: Vec<&String> = outputs
        .iter()
        .filter_map(|output| match output {
            ServerOutput::Send(ServerMessage::Reply {
                result: Err(ErrorCode::Backend(text)),
                ..
            })
            | ServerOutput::Send(ServerMessage::IterFailed {
                error: ErrorCode::OutcomeUnknown(text),
                ..
            }) => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 2, "{outputs:?}");
    for text in texts {
        assert!(text.len() <= party_proto::error::MAX_ERROR_TEXT);
        assert!(text.ends_with('…') && long.starts_with(text.trim_end_matches('…')));
    }
    assert!(!server.is_closed(), "the connection stays up");

    // A hello naming a store of any length is refused in a frame that fits.
    let mut server = ServerSession::new(NOW, small_frames());
    let hello = party_proto::wire::Hello {
        protocol: ProtocolId::CURRENT,
        client_id: ClientId(3),
        store: long,
    };
    server.handle_input(NOW, ServerInput::Message(ClientMessage::Hello(hello)));
    let outputs: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
    frames_fit(&outputs, 1000);
    assert!(
        matches!(
            &outputs[..],
            [
                ServerOutput::Send(ServerMessage::Rejected(ErrorCode::WrongStore { .. })),
                ..
            ]
        ),
        "{outputs:?}"
    );
}

#[test]
fn a_lock_file_that_cannot_be_used_fails_the_election() {
    let mut election = Election::new(ElectionConfig::default(), 1);
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(NOW, ElectionInput::LockFailed);
    assert_eq!(
        election.poll_output(),
        Some(ElectionOutput::Failed(ElectionFailure::Lock))
    );
    assert_eq!(election.role(), Role::Closed);
}

#[test]
fn a_leader_that_cannot_start_serving_steps_down_and_fails() {
    let mut election = Election::new(ElectionConfig::default(), 1);
    for answer in [
        ElectionInput::LockAcquired,
        ElectionInput::StoreOpened,
        ElectionInput::SocketBound,
    ] {
        while election.poll_output().is_some() {}
        election.handle_input(NOW, answer);
    }
    assert_eq!(election.poll_output(), Some(ElectionOutput::Serve));
    assert_eq!(
        election.poll_output(),
        Some(ElectionOutput::CloseWaitingRoom)
    );
    assert_eq!(election.role(), Role::Leader);
    election.handle_input(NOW, ElectionInput::ServeFailed);
    let outputs: Vec<_> = std::iter::from_fn(|| election.poll_output()).collect();
    assert_eq!(
        outputs,
        [
            ElectionOutput::StepDown,
            ElectionOutput::Failed(ElectionFailure::Serve)
        ]
    );
    assert_eq!(election.role(), Role::Closed);
}

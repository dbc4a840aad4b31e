//! Tests written for mutants that `cargo mutants` found surviving (see the README's
//! "Mutation testing"): each one pins a decision that the property tests and the simulator
//! did not observe.

use std::time::Duration;

mod support;

use party_proto::wire::{
    ClientMessage, Entry, Hello, LeaderLimits, ProtocolId, ReadOp, Response, ServerMessage,
    Welcome, WriteOp,
};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, Election, ElectionConfig,
    ElectionInput, ElectionOutput, ErrorCode, IterId, IterOptions, IterPoll, RequestId,
    ServerConfig, ServerInput, ServerOutput, ServerSession, Timestamp,
};
use party_proto::{
    CommitResult, WriteSeq, WriteStamp, Writer, WriterConfig, WriterInput, WriterOutput,
};

const NOW: Timestamp = Timestamp::ZERO;

fn limits(max_frame_len: u32, max_in_flight: u32, max_iter_credits: u32) -> LeaderLimits {
    LeaderLimits {
        max_frame_len,
        max_in_flight,
        max_iter_credits,
    }
}

fn welcome(leader_pid: u32, limits: LeaderLimits) -> ClientInput {
    ClientInput::Message(ServerMessage::Welcome(Welcome {
        protocol: ProtocolId::CURRENT,
        leader_pid,
        term: 1,
        store: "fjall".into(),
        limits,
    }))
}

fn drain(session: &mut ClientSession) -> Vec<ClientOutput> {
    std::iter::from_fn(|| session.poll_output()).collect()
}

/// A session connected to a leader that has welcomed it, with its outputs drained.
fn welcomed(config: ClientConfig, limits: LeaderLimits) -> ClientSession {
    let mut session = ClientSession::new(ClientId(1), config);
    session.handle_input(NOW, ClientInput::Connected);
    session.handle_input(NOW, welcome(1, limits));
    drain(&mut session);
    session
}

fn get(key: &[u8]) -> ReadOp {
    ReadOp::Get { key: key.to_vec() }
}

/// The messages among `outputs`.
fn sent(outputs: &[ClientOutput]) -> Vec<ClientMessage> {
    outputs
        .iter()
        .filter_map(|output| match output {
            ClientOutput::Send(message) => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_leader_pid_is_the_welcomes_and_is_forgotten_with_the_connection() {
    let mut session = ClientSession::new(ClientId(1), ClientConfig::default());
    assert_eq!(session.leader_pid(), None);
    session.handle_input(NOW, ClientInput::Connected);
    assert_eq!(session.leader_pid(), None, "no welcome yet");
    session.handle_input(NOW, welcome(4242, limits(1 << 20, 8, 8)));
    assert_eq!(session.leader_pid(), Some(4242));
    session.handle_input(NOW, ClientInput::Disconnected);
    assert_eq!(session.leader_pid(), None);
    drain(&mut session);
}

#[test]
fn closing_an_open_iterator_tells_the_leader_and_one_never_opened_does_not() {
    let mut session = welcomed(ClientConfig::default(), limits(1 << 20, 8, 8));
    let iter = session.open_iter(IterOptions::default());
    assert!(matches!(
        &sent(&drain(&mut session))[..],
        [ClientMessage::IterOpen { .. }]
    ));
    session.close_iter(iter);
    assert_eq!(
        sent(&drain(&mut session)),
        [ClientMessage::IterClose { iter }]
    );
    assert_eq!(
        session.iter_take(NOW, iter, 1),
        IterPoll::Failed(ErrorCode::NotFound),
        "a closed iterator is forgotten"
    );
    // Ended before it was opened (a limit of 0): the leader never heard of it.
    let iter = session.open_iter(IterOptions {
        limit: Some(0),
        ..IterOptions::default()
    });
    session.close_iter(iter);
    assert_eq!(sent(&drain(&mut session)), []);

    // Opened before any leader: the leader never heard of it, so nothing is sent.
    let mut session = ClientSession::new(ClientId(1), ClientConfig::default());
    let iter = session.open_iter(IterOptions::default());
    session.close_iter(iter);
    assert_eq!(sent(&drain(&mut session)), []);
    // Nor on a connection that has not been welcomed yet.
    session.handle_input(NOW, ClientInput::Connected);
    let iter = session.open_iter(IterOptions::default());
    session.close_iter(iter);
    assert!(matches!(
        &sent(&drain(&mut session))[..],
        [ClientMessage::Hello(_)]
    ));
    session.handle_input(NOW, welcome(1, limits(1 << 20, 8, 8)));
    assert_eq!(
        sent(&drain(&mut session)),
        [],
        "a closed iterator is not opened once welcomed"
    );
}

#[test]
fn pending_requests_counts_what_has_no_answer_yet() {
    let mut session = welcomed(ClientConfig::default(), limits(1 << 20, 8, 8));
    assert_eq!(session.pending_requests(), 0);
    let first = session.read(NOW, get(b"a"));
    let _second = session.read(NOW, get(b"b"));
    assert_eq!(session.pending_requests(), 2);
    session.handle_input(
        NOW,
        ClientInput::Message(ServerMessage::Reply {
            id: first,
            result: Ok(Response::Value(None)),
        }),
    );
    assert_eq!(session.pending_requests(), 1);
}

#[test]
fn the_session_asks_to_be_woken_at_the_first_deadline() {
    let timeout = Duration::from_millis(50);
    let config = ClientConfig {
        request_timeout: Some(timeout),
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(ClientId(1), config);
    assert_eq!(session.poll_timeout(), None, "nothing to time out");
    let t1 = NOW + Duration::from_millis(10);
    let first = session.read(t1, get(b"a"));
    session.read(t1 + Duration::from_millis(5), get(b"b"));
    assert_eq!(session.poll_timeout(), Some(t1 + timeout));
    session.handle_timeout(t1 + timeout);
    assert_eq!(
        drain(&mut session),
        [ClientOutput::Completed {
            id: first,
            result: Err(ErrorCode::TimedOut)
        }]
    );
    assert_eq!(
        session.poll_timeout(),
        Some(t1 + Duration::from_millis(5) + timeout)
    );
}

#[test]
fn a_request_exactly_at_a_frame_limit_is_sent() {
    let op = get(b"key");
    let len = u32::try_from(op.request_len_bound()).unwrap();
    // At the handle's own limit.
    let config = ClientConfig {
        max_frame_len: len,
        ..ClientConfig::default()
    };
    let mut session = welcomed(config, limits(1 << 20, 8, 8));
    let id = session.read(NOW, op.clone());
    assert_eq!(
        sent(&drain(&mut session)),
        [ClientMessage::Read { id, op: op.clone() }]
    );
    // At the leader's.
    let mut session = welcomed(ClientConfig::default(), limits(len, 8, 8));
    let id = session.read(NOW, op.clone());
    assert_eq!(
        sent(&drain(&mut session)),
        [ClientMessage::Read { id, op: op.clone() }]
    );
    // One byte over either fails at once.
    let mut session = welcomed(ClientConfig::default(), limits(len - 1, 8, 8));
    let id = session.read(NOW, op);
    let too_large = ErrorCode::FrameTooLarge {
        len: u64::from(len),
        max: u64::from(len - 1),
    };
    assert_eq!(
        drain(&mut session),
        [ClientOutput::Completed {
            id,
            result: Err(too_large)
        }]
    );
}

/// An iterator with a window of 8 asks for more only once the caller has taken half the
/// window since it last asked, and then for what tops it up (entries of 22 bytes, far from
/// half the default 4 MiB).
#[test]
fn an_iterator_grants_credits_at_half_its_window_and_closes_only_at_its_limit() {
    let config = ClientConfig {
        iter_window: 8,
        ..ClientConfig::default()
    };
    let entry = |i: u8| Entry {
        key: vec![i],
        value: vec![i],
    };
    let data = |iter, range: std::ops::Range<u8>| {
        ClientInput::Message(ServerMessage::IterData {
            iter,
            entries: range.map(entry).collect(),
        })
    };
    let mut session = welcomed(config.clone(), limits(1 << 20, 8, 16));
    let iter = session.open_iter(IterOptions::default());
    assert!(matches!(
        &sent(&drain(&mut session))[..],
        [ClientMessage::IterOpen { credits: 8, .. }]
    ));
    session.handle_input(NOW, data(iter, 0..8));
    drain(&mut session);
    let taken = |session: &mut ClientSession, iter, max| match session.iter_take(NOW, iter, max) {
        IterPoll::Entries(entries) => entries.len(),
        other => panic!("{other:?}"),
    };
    // 3 taken of a window of 8: less than half, nothing asked.
    assert_eq!(taken(&mut session, iter, 3), 3);
    assert_eq!(sent(&drain(&mut session)), []);
    // 4 taken: half, so 4 more are asked for (4 entries are still buffered).
    assert_eq!(taken(&mut session, iter, 1), 1);
    assert_eq!(
        sent(&drain(&mut session)),
        [ClientMessage::IterNext {
            iter,
            credits: 4,
            bytes: 88
        }]
    );
    // 1 taken since.
    assert_eq!(taken(&mut session, iter, 1), 1);
    assert_eq!(sent(&drain(&mut session)), []);
    // 4 taken since: the buffer emptied, the 4 granted still on their way.
    assert_eq!(taken(&mut session, iter, 10), 3);
    assert_eq!(
        sent(&drain(&mut session)),
        [ClientMessage::IterNext {
            iter,
            credits: 4,
            bytes: 88
        }],
        "an empty buffer is not the end"
    );
    assert_eq!(session.iter_take(NOW, iter, 1), IterPoll::Pending);

    // With a limit of 2, reached before the leader's end: the iterator closes itself.
    let iter = session.open_iter(IterOptions {
        limit: Some(2),
        ..IterOptions::default()
    });
    drain(&mut session);
    session.handle_input(NOW, data(iter, 0..2));
    drain(&mut session);
    assert_eq!(taken(&mut session, iter, 1), 1);
    assert_eq!(sent(&drain(&mut session)), [], "one short of the limit");
    assert_eq!(taken(&mut session, iter, 5), 1);
    assert_eq!(
        sent(&drain(&mut session)),
        [ClientMessage::IterClose { iter }]
    );
    assert_eq!(session.iter_take(NOW, iter, 1), IterPoll::Done);
}

#[test]
fn election_is_closed_only_once_closed_and_drained() {
    let mut election = Election::new(ElectionConfig::default(), 1);
    assert!(!election.is_closed());
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    assert!(
        !election.is_closed(),
        "electing, with nothing to do for now"
    );
    election.handle_input(NOW, ElectionInput::LockBusy);
    election.handle_input(NOW, ElectionInput::Connected);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));
    election.handle_input(NOW, ElectionInput::CloseRequested);
    assert!(!election.is_closed(), "the Disconnect is still to be taken");
    assert_eq!(election.poll_output(), Some(ElectionOutput::Disconnect));
    assert!(election.is_closed());
}

const SERVER: ServerConfig = ServerConfig {
    leader_pid: 9,
    term: 1,
    store: std::borrow::Cow::Borrowed("fjall"),
    handshake_timeout: Duration::from_millis(100),
    max_in_flight: 8,
    max_iterators: 4,
    max_iter_credits: 16,
    // One pull of every credit: these tests follow the credits and the limit.
    max_pull_entries: 16,
    max_pull_bytes: u64::MAX,
    max_pulls_out: 1,
    max_frame_len: 1000,
    max_watches: 2,
    change_feed: true,
};

fn hello(client: u128) -> ServerInput {
    ServerInput::Message(ClientMessage::Hello(Hello {
        protocol: ProtocolId::CURRENT,
        client_id: ClientId(client),
        store: "fjall".into(),
    }))
}

fn outputs(server: &mut ServerSession) -> Vec<ServerOutput> {
    std::iter::from_fn(|| server.poll_output()).collect()
}

fn ready_server() -> ServerSession {
    let mut server = ServerSession::new(NOW, SERVER);
    server.handle_input(NOW, hello(3));
    outputs(&mut server);
    server
}

#[test]
fn a_session_knows_its_client_after_hello_and_closes_at_the_hello_deadline() {
    let deadline = NOW + SERVER.handshake_timeout;
    let mut server = ServerSession::new(NOW, SERVER);
    assert_eq!(server.client_id(), None);
    assert_eq!(server.poll_timeout(), Some(deadline));
    server.handle_timeout(NOW + (SERVER.handshake_timeout - Duration::from_millis(1)));
    assert!(!server.is_closed());
    assert_eq!(outputs(&mut server), []);
    server.handle_timeout(deadline);
    assert!(server.is_closed());
    assert_eq!(
        outputs(&mut server),
        [ServerOutput::Close(ErrorCode::TimedOut)]
    );
    assert_eq!(server.poll_timeout(), None);

    let mut server = ServerSession::new(NOW, SERVER);
    server.handle_input(NOW, hello(77));
    assert_eq!(server.client_id(), Some(ClientId(77)));
    assert_eq!(
        server.poll_timeout(),
        None,
        "no deadline once it said hello"
    );
    server.handle_timeout(deadline);
    assert!(!server.is_closed());
}

/// A value whose `Reply` has a size bound of exactly `len`.
fn value_reply_of(len: u64) -> Response {
    let value = Response::Value(Some(bytes::Bytes::new()));
    let extra = usize::try_from(len - value.reply_len_bound()).unwrap();
    let response = Response::Value(Some(vec![7; extra].into()));
    assert_eq!(response.reply_len_bound(), len);
    response
}

#[test]
fn an_answer_exactly_at_the_frame_limit_is_sent() {
    let mut server = ready_server();
    let max = u64::from(SERVER.max_frame_len);
    for (id, len) in [(1, max), (2, max + 1)] {
        let id = RequestId(id);
        let read = ClientMessage::Read { id, op: get(b"k") };
        server.handle_input(NOW, ServerInput::Message(read));
        outputs(&mut server);
        let response = value_reply_of(len);
        server.handle_input(
            NOW,
            ServerInput::Completed {
                id,
                result: Ok(response.clone()),
            },
        );
        let expected = if len <= max {
            Ok(response)
        } else {
            Err(ErrorCode::ReplyTooLarge { len, max })
        };
        assert_eq!(
            outputs(&mut server),
            [ServerOutput::Send(ServerMessage::Reply {
                id,
                result: expected
            })]
        );
    }
}

/// An entry with a size bound of exactly `len` (at least 20).
fn entry_of(len: u64) -> Entry {
    let entry = Entry {
        key: Vec::new(),
        value: vec![1; usize::try_from(len - 20).unwrap()],
    };
    assert_eq!(entry.len_bound(), len);
    entry
}

/// Opens iterator 0 with `credits`, answers its pull with `entries` and the store's end,
/// and returns what the session did.
fn serve_chunk(credits: u32, entries: Vec<Entry>) -> Vec<ServerOutput> {
    let mut server = ready_server();
    let iter = IterId(0);
    let open = ClientMessage::IterOpen {
        iter,
        options: IterOptions::default(),
        credits,
        bytes: u64::MAX,
    };
    server.handle_input(NOW, ServerInput::Message(open));
    assert_eq!(
        outputs(&mut server),
        [
            ServerOutput::IterOpen {
                iter,
                options: IterOptions::default()
            },
            ServerOutput::IterPull {
                iter,
                max: credits,
                max_bytes: u64::MAX
            }
        ]
    );
    server.handle_input(
        NOW,
        ServerInput::IterChunk {
            iter,
            entries,
            exhausted: true,
        },
    );
    outputs(&mut server)
}

fn data(entries: &[&Entry]) -> ServerOutput {
    ServerOutput::Send(ServerMessage::IterData {
        iter: IterId(0),
        entries: entries.iter().map(|e| (*e).clone()).collect(),
    })
}

const END: [ServerOutput; 2] = [
    ServerOutput::Send(ServerMessage::IterEnd { iter: IterId(0) }),
    ServerOutput::IterDrop { iter: IterId(0) },
];

/// Frames of 1000 bytes hold 74 bytes of overhead (`Entry::DATA_OVERHEAD` and the entry
/// count) and entries up to the rest, exactly.
#[test]
fn iterator_frames_are_filled_exactly_to_the_limit() {
    let overhead = Entry::DATA_OVERHEAD + 10;
    let room = u64::from(SERVER.max_frame_len) - overhead;

    // Two entries that fill a frame exactly, then one more: two frames.
    let (a, b, c) = (entry_of(room / 2), entry_of(room - room / 2), entry_of(20));
    let sent = serve_chunk(10, vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(sent, [&[data(&[&a, &b]), data(&[&c])][..], &END].concat());

    // An entry that fills a frame alone, then a small one.
    let (a, b) = (entry_of(room), entry_of(20));
    let sent = serve_chunk(10, vec![a.clone(), b.clone()]);
    assert_eq!(sent, [&[data(&[&a]), data(&[&b])][..], &END].concat());

    // An entry one byte too big for any frame fails the iterator after those before it.
    let (a, b) = (entry_of(20), entry_of(room + 1));
    let sent = serve_chunk(10, vec![a.clone(), b]);
    let too_large = ErrorCode::ReplyTooLarge {
        len: u64::from(SERVER.max_frame_len) + 1,
        max: u64::from(SERVER.max_frame_len),
    };
    assert_eq!(
        sent,
        [
            data(&[&a]),
            ServerOutput::Send(ServerMessage::IterFailed {
                iter: IterId(0),
                error: too_large
            }),
            ServerOutput::IterDrop { iter: IterId(0) },
        ]
    );
}

#[test]
fn a_chunk_that_uses_every_credit_and_exhausts_the_store_ends_the_iterator() {
    let entries: Vec<Entry> = (0..3).map(|_| entry_of(20)).collect();
    let refs: Vec<&Entry> = entries.iter().collect();
    let sent = serve_chunk(3, entries.clone());
    assert_eq!(sent, [&[data(&refs)][..], &END].concat());

    // Fewer than the credits, from a store not yet exhausted: pull the rest, up to the
    // iterator's limit.
    for (limit, credits, next_pull) in [(None, 5, 3), (Some(5), 10, 3), (Some(9), 5, 3)] {
        let mut server = ready_server();
        let iter = IterId(0);
        let options = IterOptions {
            limit,
            ..IterOptions::default()
        };
        let open = ClientMessage::IterOpen {
            iter,
            options,
            credits,
            bytes: u64::MAX,
        };
        server.handle_input(NOW, ServerInput::Message(open));
        outputs(&mut server);
        server.handle_input(
            NOW,
            ServerInput::IterChunk {
                iter,
                entries: entries[..2].to_vec(),
                exhausted: false,
            },
        );
        assert_eq!(
            outputs(&mut server),
            [
                data(&refs[..2]),
                ServerOutput::IterPull {
                    iter,
                    max: next_pull,
                    // Less the two entries' 20 bytes each.
                    max_bytes: u64::MAX - 40
                }
            ],
            "limit {limit:?}, credits {credits}"
        );
    }
}

#[test]
fn a_refusal_fails_live_iterators_and_tells_the_caller() {
    let mut session = welcomed(ClientConfig::default(), limits(1 << 20, 8, 8));
    let open = session.open_iter(IterOptions::default());
    let ended = session.open_iter(IterOptions::default());
    session.handle_input(
        NOW,
        ClientInput::Message(ServerMessage::IterEnd { iter: ended }),
    );
    let queued = session.read(NOW, get(b"k"));
    drain(&mut session);
    let error = ErrorCode::TooManyConnections { limit: 1 };
    session.handle_input(
        NOW,
        ClientInput::Message(ServerMessage::Rejected(error.clone())),
    );
    assert_eq!(
        drain(&mut session),
        [
            ClientOutput::Completed {
                id: queued,
                result: Err(error.clone())
            },
            ClientOutput::IterReady { iter: open },
        ],
        "the ended iterator is not failed"
    );
    assert_eq!(session.iter_take(NOW, open, 1), IterPoll::Failed(error));
    assert_eq!(session.iter_take(NOW, ended, 1), IterPoll::Done);
}

#[test]
fn a_lost_connection_wakes_the_caller_of_an_iterator_only_when_it_fails() {
    for retry in [false, true] {
        let config = ClientConfig {
            retry,
            ..ClientConfig::default()
        };
        let mut session = welcomed(config, limits(1 << 20, 8, 8));
        let open = session.open_iter(IterOptions::default());
        drain(&mut session);
        session.handle_input(NOW, ClientInput::Disconnected);
        let expected = if retry {
            vec![]
        } else {
            vec![ClientOutput::IterReady { iter: open }]
        };
        assert_eq!(drain(&mut session), expected, "retry {retry}");
        let poll = session.iter_take(NOW, open, 1);
        if retry {
            assert_eq!(poll, IterPoll::Pending, "it resumes on the next leader");
        } else {
            assert_eq!(poll, IterPoll::Failed(ErrorCode::ConnectionLost));
        }
    }
}

fn put_stamped(writer: &mut Writer<u64>, seq: u64) {
    let stamp = WriteStamp {
        client: ClientId(1),
        seq: WriteSeq(seq),
        oldest_pending: WriteSeq(1),
        first_sent_ms: 0,
    };
    let op = WriteOp::Put {
        key: b"k".to_vec(),
        value: seq.to_be_bytes().to_vec(),
    };
    writer.write(seq, stamp, op);
}

fn writer_outputs(writer: &mut Writer<u64>) -> Vec<WriterOutput<u64>> {
    std::iter::from_fn(|| writer.poll_output()).collect()
}

/// The writer is idle only with nothing queued and nothing out, and it checkpoints only
/// while idle, once, and again a quiet period after a checkpoint that failed.
#[test]
fn the_writer_checkpoints_only_when_idle_and_retries_a_failed_checkpoint() {
    let quiet = WriterConfig::default().quiet_period;
    let mut writer: Writer<u64> = support::new_writer(WriterConfig::default(), NOW);
    let later = |ms| NOW + Duration::from_millis(ms);
    // Only the first sweep of expired records is due, an hour in.
    let sweep = Some(NOW + Duration::from_secs(3600));
    assert!(writer.is_idle());
    put_stamped(&mut writer, 1);
    assert!(!writer.is_idle(), "a write queued, not yet cut");
    writer.cut(NOW);
    assert_eq!(
        writer_outputs(&mut writer),
        [WriterOutput::LoadRecords(vec![ClientId(1)])]
    );
    assert!(!writer.is_idle(), "its client's record is being read");
    writer.handle_input(
        NOW,
        WriterInput::RecordsLoaded(Ok(vec![(ClientId(1), None)])),
    );
    assert!(matches!(
        &writer_outputs(&mut writer)[..],
        [WriterOutput::Commit(_)]
    ));
    assert!(!writer.is_idle(), "a commit is out");
    // Due, but a commit is out: no checkpoint under it.
    writer.handle_timeout(later(1000));
    assert_eq!(writer_outputs(&mut writer), []);
    writer.handle_input(later(1000), WriterInput::Committed(CommitResult::Committed));
    assert!(matches!(
        &writer_outputs(&mut writer)[..],
        [WriterOutput::Reply { to: 1, .. }]
    ));
    assert!(writer.is_idle());
    writer.handle_timeout(later(1000) + quiet);
    assert_eq!(writer_outputs(&mut writer), [WriterOutput::Checkpoint]);
    assert_eq!(writer.poll_timeout(), sweep, "one checkpoint at a time");
    writer.handle_timeout(later(5000));
    assert_eq!(writer_outputs(&mut writer), []);

    // A write cut while the checkpoint runs waits for it.
    put_stamped(&mut writer, 2);
    writer.cut(NOW);
    assert_eq!(writer_outputs(&mut writer), []);
    let failed_at = later(6000);
    writer.handle_input(failed_at, WriterInput::Checkpointed(false));
    assert!(matches!(
        &writer_outputs(&mut writer)[..],
        [WriterOutput::Commit(_)]
    ));
    writer.handle_input(failed_at, WriterInput::Committed(CommitResult::Committed));
    writer_outputs(&mut writer);
    assert_eq!(writer.poll_timeout(), Some(failed_at + quiet));

    // A failed checkpoint with nothing written since is tried again a quiet period later.
    writer.handle_timeout(failed_at + quiet);
    assert_eq!(writer_outputs(&mut writer), [WriterOutput::Checkpoint]);
    let failed_again = failed_at + quiet + Duration::from_millis(1);
    writer.handle_input(failed_again, WriterInput::Checkpointed(false));
    assert_eq!(writer.poll_timeout(), Some(failed_again + quiet));
    writer.handle_timeout(failed_again + quiet);
    assert_eq!(writer_outputs(&mut writer), [WriterOutput::Checkpoint]);
    writer.handle_input(failed_again + quiet, WriterInput::Checkpointed(true));
    assert_eq!(writer.poll_timeout(), sweep);
}

#[test]
fn an_iterator_blanks_only_the_halves_the_caller_does_not_want() {
    let entry = Entry {
        key: b"key".to_vec(),
        value: b"value".to_vec(),
    };
    for (keys, values) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut session = welcomed(ClientConfig::default(), limits(1 << 20, 8, 8));
        let iter = session.open_iter(IterOptions {
            keys,
            values,
            ..IterOptions::default()
        });
        session.handle_input(
            NOW,
            ClientInput::Message(ServerMessage::IterData {
                iter,
                entries: vec![entry.clone()],
            }),
        );
        let expected = Entry {
            key: if keys { entry.key.clone() } else { Vec::new() },
            value: if values {
                entry.value.clone()
            } else {
                Vec::new()
            },
        };
        assert_eq!(
            session.iter_take(NOW, iter, 1),
            IterPoll::Entries(vec![expected]),
            "keys {keys}, values {values}"
        );
    }
}

/// A leader that closes tells its follower and serves on; one that lost its lock or its
/// store tells it and hangs up at once.
#[test]
fn a_leaving_session_serves_on_only_when_its_leader_closes() {
    use party_proto::wire::LeaveCause;
    let mut server = ready_server();
    server.handle_input(NOW, ServerInput::Leave(LeaveCause::Closing));
    assert_eq!(
        outputs(&mut server),
        [ServerOutput::Send(ServerMessage::Leaving(
            LeaveCause::Closing
        ))]
    );
    assert!(!server.is_closed(), "it answers what its follower sent");
    for cause in [LeaveCause::LockLost, LeaveCause::StoreFailed] {
        let mut server = ready_server();
        server.handle_input(NOW, ServerInput::Leave(cause));
        assert_eq!(
            outputs(&mut server),
            [
                ServerOutput::Send(ServerMessage::Leaving(cause)),
                ServerOutput::Close(ErrorCode::Closed)
            ]
        );
        assert!(server.is_closed(), "{cause:?}");
    }
}

/// A write first sent longer ago than the resend window is not sent again after a lost
/// connection (the leader's record of it may have expired): it fails with OutcomeUnknown.
/// A younger write, and a read of any age, are sent again.
#[test]
fn a_write_older_than_the_resend_window_fails_instead_of_being_sent_again() {
    let config = ClientConfig {
        resend_window: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let mut session = welcomed(config, limits(1 << 20, 8, 8));
    let at = |secs| NOW + Duration::from_secs(secs);
    let old = session.write(NOW, WriteOp::Del { key: b"a".to_vec() });
    let read = session.read(NOW, get(b"a"));
    let young = session.write(at(5), WriteOp::Del { key: b"b".to_vec() });
    drain(&mut session);
    session.handle_input(at(6), ClientInput::Disconnected);
    session.handle_input(at(9), ClientInput::Connected);
    session.handle_input(at(10), welcome(2, limits(1 << 20, 8, 8)));
    let outputs = drain(&mut session);
    let unknown = |id| move |output: &ClientOutput| matches!(output, ClientOutput::Completed { id: done, result: Err(ErrorCode::OutcomeUnknown(_)) } if *done == id);
    assert!(outputs.iter().any(unknown(old)));
    let resent: Vec<RequestId> = sent(&outputs)
        .iter()
        .filter_map(|message| match message {
            ClientMessage::Read { id, .. } | ClientMessage::Write { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(resent, [read, young]);
    // Sent again at 10 s, the young write keeps its first sending time (5 s).
    session.handle_input(at(14), ClientInput::Disconnected);
    session.handle_input(at(15), ClientInput::Connected);
    session.handle_input(at(15), welcome(3, limits(1 << 20, 8, 8)));
    assert!(drain(&mut session).iter().any(unknown(young)));
}

//! proptest strategies, and a leader's welcome, shared by party-proto's property tests.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::ops::Bound;

use party_proto::wire::{
    BatchOp, ClientMessage, Entry, Hello, LeaderLimits, LeaderStatus, LeaveCause, ProtocolId,
    ReadCheck, ReadOp, Response, ServerMessage, Welcome, WriteOp,
};
use party_proto::{
    Change, ClientId, CommitSeq, ErrorCode, IterId, IterOptions, KeyRange, RequestId, WatchId,
    WriteSeq, WriteStamp,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Keys at the byte edges: the empty key, 0x00, 0xff, and keys that are prefixes of others.
pub fn edge_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0x00]),
        Just(vec![0xff]),
        Just(vec![0x00, 0x00]),
        Just(vec![0xff, 0xff]),
        Just(b"a".to_vec()),
        Just(b"ab".to_vec()),
        Just(b"ab\x00".to_vec()),
        Just(b"ab\xff".to_vec()),
        vec(
            prop_oneof![Just(0u8), Just(0xff), Just(b'a'), Just(b'b'), any::<u8>()],
            0..5
        ),
    ]
}

pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..40)
}

/// The byte strings of the messages below: keys at the byte edges and short values, as
/// most tests want ([`Strings::EDGE`]), or long ones that outgrow the fixed allowances of
/// a frame's size bound ([`Strings::LONG`]).
#[derive(Clone, Copy)]
pub struct Strings {
    keys: fn() -> BoxedStrategy<Vec<u8>>,
    values: fn() -> BoxedStrategy<Vec<u8>>,
}

impl Strings {
    pub const EDGE: Strings = Strings {
        keys: || edge_key().boxed(),
        values: || bytes().boxed(),
    };
    pub const LONG: Strings = Strings {
        keys: long_bytes,
        values: long_bytes,
    };
}

fn long_bytes() -> BoxedStrategy<Vec<u8>> {
    vec(any::<u8>(), 0..400).boxed()
}

pub fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    bound_of(Strings::EDGE)
}

pub fn bound_of(strings: Strings) -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        Just(Bound::Unbounded),
        (strings.keys)().prop_map(Bound::Included),
        (strings.keys)().prop_map(Bound::Excluded),
    ]
}

pub fn key_range() -> impl Strategy<Value = KeyRange> {
    key_range_of(Strings::EDGE)
}

pub fn key_range_of(strings: Strings) -> impl Strategy<Value = KeyRange> {
    (bound_of(strings), bound_of(strings)).prop_map(|(start, end)| KeyRange { start, end })
}

pub fn iter_options() -> impl Strategy<Value = IterOptions> {
    (
        key_range(),
        any::<bool>(),
        prop::option::of(0u64..30),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(range, reverse, limit, keys, values)| IterOptions {
            range,
            reverse,
            limit,
            keys,
            values,
        })
}

pub fn protocol() -> impl Strategy<Value = ProtocolId> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(magic, version)| ProtocolId { magic, version })
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop_oneof![
        Just(ErrorCode::NotFound),
        Just(ErrorCode::Locked),
        Just(ErrorCode::Closed),
        Just(ErrorCode::ConnectionLost),
        (protocol(), protocol())
            .prop_map(|(expected, got)| ErrorCode::ProtocolMismatch { expected, got }),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| ErrorCode::FrameTooLarge { len, max }),
        ".*".prop_map(ErrorCode::Backend),
        Just(ErrorCode::TimedOut),
        ".*".prop_map(ErrorCode::Malformed),
        any::<u32>().prop_map(|limit| ErrorCode::TooManyRequests { limit }),
        any::<u32>().prop_map(|limit| ErrorCode::TooManyIterators { limit }),
        any::<u32>().prop_map(|limit| ErrorCode::TooManyConnections { limit }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(free, reserve)| ErrorCode::StoreFull { free, reserve }),
        Just(ErrorCode::StoreReadOnly),
        any::<u32>().prop_map(|uid| ErrorCode::OtherUser { uid }),
        (any::<u64>(), any::<u64>()).prop_map(|(len, max)| ErrorCode::KeyTooLarge { len, max }),
        any::<u32>().prop_map(|uid| ErrorCode::LeaderOfOtherUser { uid }),
        (".*", ".*").prop_map(|(found, wanted)| ErrorCode::WrongStore { found, wanted }),
        (any::<u64>(), any::<u64>()).prop_map(|(ops, max)| ErrorCode::BatchTooLarge { ops, max }),
        ".*".prop_map(ErrorCode::OutcomeUnknown),
        (any::<u64>(), any::<u64>()).prop_map(|(from, next)| ErrorCode::WatchAhead { from, next }),
        any::<u32>().prop_map(|limit| ErrorCode::TooManyWatches { limit }),
        Just(ErrorCode::FeedOff),
        Just(ErrorCode::FailedBefore),
    ]
}

pub fn read_op() -> impl Strategy<Value = ReadOp> {
    read_op_of(Strings::EDGE)
}

pub fn read_op_of(strings: Strings) -> impl Strategy<Value = ReadOp> {
    prop_oneof![
        (strings.keys)().prop_map(|key| ReadOp::Get { key }),
        vec((strings.keys)(), 0..5).prop_map(|keys| ReadOp::GetMany { keys }),
        Just(ReadOp::Status),
    ]
}

pub fn batch_op() -> impl Strategy<Value = BatchOp> {
    batch_op_of(Strings::EDGE)
}

pub fn batch_op_of(strings: Strings) -> impl Strategy<Value = BatchOp> {
    prop_oneof![
        ((strings.keys)(), (strings.values)()).prop_map(|(key, value)| BatchOp::Put { key, value }),
        (strings.keys)().prop_map(|key| BatchOp::Del { key }),
    ]
}

pub fn write_op() -> impl Strategy<Value = WriteOp> {
    write_op_of(Strings::EDGE)
}

pub fn write_op_of(strings: Strings) -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        ((strings.keys)(), (strings.values)()).prop_map(|(key, value)| WriteOp::Put { key, value }),
        (strings.keys)().prop_map(|key| WriteOp::Del { key }),
        vec(batch_op_of(strings), 0..5).prop_map(|ops| WriteOp::Batch { ops }),
        key_range_of(strings).prop_map(|range| WriteOp::Clear { range }),
        (
            vec(read_check_of(strings), 0..3),
            vec(batch_op_of(strings), 0..3)
        )
            .prop_map(|(reads, writes)| WriteOp::Transaction { reads, writes }),
    ]
}

pub fn read_check() -> impl Strategy<Value = ReadCheck> {
    read_check_of(Strings::EDGE)
}

pub fn read_check_of(strings: Strings) -> impl Strategy<Value = ReadCheck> {
    prop_oneof![
        ((strings.keys)(), prop::option::of((strings.values)()))
            .prop_map(|(key, value)| ReadCheck::Key { key, value }),
        (key_range_of(strings), vec(entry_of(strings), 0..3))
            .prop_map(|(range, entries)| ReadCheck::Range { range, entries }),
    ]
}

pub fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (protocol(), any::<u128>(), ".{0,8}").prop_map(|(protocol, id, store)| {
            ClientMessage::Hello(Hello {
                protocol,
                client_id: ClientId(id),
                store,
            })
        }),
        (any::<u64>(), read_op()).prop_map(|(id, op)| ClientMessage::Read {
            id: RequestId(id),
            op
        }),
        (any::<u64>(), any::<u64>(), any::<u64>(), write_op()).prop_map(|(id, seq, oldest, op)| {
            ClientMessage::Write {
                id: RequestId(id),
                seq: WriteSeq(seq),
                oldest_pending: WriteSeq(oldest),
                first_sent_ms: 0,
                op: op.into(),
            }
        }),
        (any::<u64>(), iter_options(), any::<u32>(), any::<u64>()).prop_map(
            |(iter, options, credits, bytes)| ClientMessage::IterOpen {
                iter: IterId(iter),
                options,
                credits,
                bytes,
            }
        ),
        (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(iter, credits, bytes)| {
            ClientMessage::IterNext {
                iter: IterId(iter),
                credits,
                bytes,
            }
        }),
        any::<u64>().prop_map(|iter| ClientMessage::IterClose { iter: IterId(iter) }),
        (
            any::<u64>(),
            key_range(),
            prop::option::of(any::<u64>()),
            any::<u32>()
        )
            .prop_map(|(watch, range, from, credits)| ClientMessage::WatchOpen {
                watch: WatchId(watch),
                range,
                from: from.map(CommitSeq),
                credits,
            }),
        (any::<u64>(), any::<u32>()).prop_map(|(watch, credits)| ClientMessage::WatchNext {
            watch: WatchId(watch),
            credits
        }),
        any::<u64>().prop_map(|watch| ClientMessage::WatchClose {
            watch: WatchId(watch)
        }),
        (any::<u32>(), any::<u64>(), any::<u64>())
            .prop_map(|(fd, len, token)| ClientMessage::OfferRing { fd, len, token }),
    ]
}

pub fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (edge_key(), bytes()).prop_map(|(key, value)| Change::Put { key, value }),
        edge_key().prop_map(|key| Change::Del { key }),
        key_range().prop_map(|range| Change::Clear { range }),
    ]
}

pub fn response() -> impl Strategy<Value = Response> {
    response_of(Strings::EDGE)
}

pub fn response_of(strings: Strings) -> impl Strategy<Value = Response> {
    prop_oneof![
        prop::option::of((strings.values)())
            .prop_map(|value| Response::Value(value.map(Into::into))),
        vec(prop::option::of((strings.values)()), 0..5).prop_map(Response::Values),
        Just(Response::Written),
        any::<u32>().prop_map(|followers| Response::Status(LeaderStatus { followers })),
        ((strings.keys)(), prop::option::of((strings.values)()))
            .prop_map(|(key, current)| Response::Conflict { key, current }),
    ]
}

pub fn entry() -> impl Strategy<Value = Entry> {
    entry_of(Strings::EDGE)
}

pub fn entry_of(strings: Strings) -> impl Strategy<Value = Entry> {
    ((strings.keys)(), (strings.values)()).prop_map(|(key, value)| Entry { key, value })
}

/// What a leader's reply to a request carries: an answer or an error.
pub fn reply_result() -> impl Strategy<Value = Result<Response, ErrorCode>> {
    prop_oneof![response().prop_map(Ok), error_code().prop_map(Err)]
}

pub fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (
            protocol(),
            any::<u32>(),
            any::<u64>(),
            ".{0,8}",
            any::<[u32; 3]>()
        )
            .prop_map(
                |(
                    protocol,
                    leader_pid,
                    term,
                    store,
                    [max_frame_len, max_in_flight, max_iter_credits],
                )| {
                    ServerMessage::Welcome(Welcome {
                        protocol,
                        leader_pid,
                        term,
                        store,
                        limits: LeaderLimits {
                            max_frame_len,
                            max_in_flight,
                            max_iter_credits,
                        },
                    })
                }
            ),
        error_code().prop_map(ServerMessage::Rejected),
        (any::<u64>(), reply_result()).prop_map(|(id, result)| ServerMessage::Reply {
            id: RequestId(id),
            result
        }),
        (any::<u64>(), vec(entry(), 0..5)).prop_map(|(iter, entries)| ServerMessage::IterData {
            iter: IterId(iter),
            entries
        }),
        any::<u64>().prop_map(|iter| ServerMessage::IterEnd { iter: IterId(iter) }),
        (any::<u64>(), error_code()).prop_map(|(iter, error)| ServerMessage::IterFailed {
            iter: IterId(iter),
            error
        }),
        prop_oneof![
            Just(LeaveCause::Closing),
            Just(LeaveCause::LockLost),
            Just(LeaveCause::StoreFailed)
        ]
        .prop_map(ServerMessage::Leaving),
        (any::<u64>(), any::<u64>()).prop_map(|(iter, seq)| ServerMessage::IterAt {
            iter: IterId(iter),
            seq: CommitSeq(seq)
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(watch, from)| ServerMessage::WatchStarted {
            watch: WatchId(watch),
            from: CommitSeq(from)
        }),
        (
            any::<u64>(),
            any::<u64>(),
            vec(change(), 0..4),
            any::<bool>()
        )
            .prop_map(|(watch, seq, changes, complete)| ServerMessage::WatchData {
                watch: WatchId(watch),
                seq: CommitSeq(seq),
                changes,
                complete,
            }),
        (any::<u64>(), any::<u64>()).prop_map(|(watch, through)| ServerMessage::WatchProgress {
            watch: WatchId(watch),
            through: CommitSeq(through)
        }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(watch, missed, resume)| {
            ServerMessage::WatchLagged {
                watch: WatchId(watch),
                missed,
                resume: CommitSeq(resume),
            }
        }),
        (any::<u64>(), error_code()).prop_map(|(watch, error)| ServerMessage::WatchFailed {
            watch: WatchId(watch),
            error
        }),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(id, end, len)| {
            ServerMessage::ReplyInRing {
                id: RequestId(id),
                end,
                len,
            }
        }),
    ]
}

/// How many ids [`among_known_ids`] names.
pub const IDS: u64 = 8;

/// `message` naming requests, iterators and subscriptions among the first [`IDS`], so
/// that a leader breaking the protocol meets a follower's own as well as unknown ones.
pub fn among_known_ids(message: ServerMessage) -> ServerMessage {
    let request = |id: RequestId| RequestId(id.0 % IDS);
    let iter = |iter: IterId| IterId(iter.0 % IDS);
    let watch = |watch: WatchId| WatchId(watch.0 % IDS);
    match message {
        ServerMessage::Reply { id, result } => ServerMessage::Reply {
            id: request(id),
            result,
        },
        ServerMessage::ReplyInRing { id, end, len } => ServerMessage::ReplyInRing {
            id: request(id),
            end,
            len,
        },
        ServerMessage::IterData { iter: i, entries } => ServerMessage::IterData {
            iter: iter(i),
            entries,
        },
        ServerMessage::IterEnd { iter: i } => ServerMessage::IterEnd { iter: iter(i) },
        ServerMessage::IterFailed { iter: i, error } => ServerMessage::IterFailed {
            iter: iter(i),
            error,
        },
        ServerMessage::IterAt { iter: i, seq } => ServerMessage::IterAt { iter: iter(i), seq },
        ServerMessage::WatchStarted { watch: w, from } => ServerMessage::WatchStarted {
            watch: watch(w),
            from,
        },
        ServerMessage::WatchData {
            watch: w,
            seq,
            changes,
            complete,
        } => ServerMessage::WatchData {
            watch: watch(w),
            seq,
            changes,
            complete,
        },
        ServerMessage::WatchProgress { watch: w, through } => ServerMessage::WatchProgress {
            watch: watch(w),
            through,
        },
        ServerMessage::WatchLagged {
            watch: w,
            missed,
            resume,
        } => ServerMessage::WatchLagged {
            watch: watch(w),
            missed,
            resume,
        },
        ServerMessage::WatchFailed { watch: w, error } => ServerMessage::WatchFailed {
            watch: watch(w),
            error,
        },
        other => other,
    }
}

/// Cut points that split a byte string into chunks, some of them empty.
pub fn chunking() -> impl Strategy<Value = Vec<usize>> {
    vec(0usize..64, 0..40)
}

/// Splits `bytes` at the sizes in `sizes` (cycled), then the rest in one piece.
pub fn split<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    for &size in sizes {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks.push(rest);
    chunks
}

/// The stamp of write `seq` of `client`, which re-sends nothing below its first write, and
/// sent just now by any writer's wall clock (never past the resend window).
pub fn stamp(client: u128, seq: u64) -> WriteStamp {
    WriteStamp {
        client: ClientId(client),
        seq: WriteSeq(seq),
        oldest_pending: WriteSeq(1),
        first_sent_ms: u64::MAX,
    }
}

/// A writer over a store whose change log is empty, past reading the log's end.
pub fn new_writer<T>(
    config: party_proto::WriterConfig,
    now: party_proto::Timestamp,
) -> party_proto::Writer<T> {
    let mut writer = party_proto::Writer::new(config, now);
    assert!(matches!(
        writer.poll_output(),
        Some(party_proto::WriterOutput::LoadLogEnds)
    ));
    writer.handle_input(now, party_proto::WriterInput::LogEndsLoaded(Ok(None)));
    writer
}

/// Client messages of few kinds, with ids that collide and credits a session caps: mostly
/// valid hellos, reads and deletes, iterators opened, granted and closed.
pub fn small_message() -> impl Strategy<Value = ClientMessage> {
    let protocol = prop_oneof![
        4 => Just(ProtocolId::CURRENT),
        1 => Just(ProtocolId { version: ProtocolId::CURRENT.version + 1, ..ProtocolId::CURRENT }),
        1 => Just(ProtocolId { magic: *b"HTTP", ..ProtocolId::CURRENT }),
    ];
    let store = prop_oneof![4 => Just("fjall"), 1 => Just("sled")];
    let hello = (protocol, store).prop_map(|(protocol, store)| {
        ClientMessage::Hello(Hello {
            protocol,
            client_id: ClientId(5),
            store: store.into(),
        })
    });
    prop_oneof![
        1 => hello,
        3 => (0u64..6, edge_key()).prop_map(|(id, key)| ClientMessage::Read {
            id: RequestId(id),
            op: ReadOp::Get { key },
        }),
        3 => (0u64..6, 1u64..9, edge_key()).prop_map(|(id, seq, key)| ClientMessage::Write {
            id: RequestId(id),
            seq: WriteSeq(seq),
            oldest_pending: WriteSeq(seq),
            first_sent_ms: 0,
            op: WriteOp::Del { key }.into(),
        }),
        2 => (0u64..4, iter_options(), 0u32..10, byte_credits()).prop_map(|(iter, options, credits, bytes)| {
            ClientMessage::IterOpen { iter: IterId(iter), options, credits, bytes }
        }),
        2 => (0u64..4, 0u32..10, byte_credits()).prop_map(|(iter, credits, bytes)| {
            ClientMessage::IterNext { iter: IterId(iter), credits, bytes }
        }),
        1 => (0u64..4).prop_map(|iter| ClientMessage::IterClose { iter: IterId(iter) }),
    ]
}

/// Byte credits: mostly a few entries' worth, sometimes anything.
pub fn byte_credits() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..200, 1 => any::<u64>()]
}

/// What a leader with the default configuration says once it has taken a connection's
/// hello.
pub fn welcome() -> ServerMessage {
    welcome_with(|_| {})
}

/// The same welcome, with the default limits as `change` leaves them.
pub fn welcome_with(change: impl FnOnce(&mut LeaderLimits)) -> ServerMessage {
    let mut limits = party_proto::ServerConfig::default().limits();
    change(&mut limits);
    ServerMessage::Welcome(Welcome {
        protocol: ProtocolId::CURRENT,
        leader_pid: 1,
        term: 1,
        store: "fjall".into(),
        limits,
    })
}

//! The leader's session under any input: valid and invalid messages, completions, store
//! chunks, bad frames and timeouts. It never panics, serves nothing before a valid hello or
//! after closing, answers each request once, never sends or pulls past the credits, and
//! answers a read or an iterator only after the writes issued before it.

mod support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use party_proto::feed::{encode_entry, encode_unlogged, LogRead};
use party_proto::wire::{
    encode_frame, ClientMessage, Entry, FrameError, Hello, ProtocolId, Response, ServerMessage,
    WriteOp,
};
use party_proto::{
    Change, ClientId, CommitSeq, ErrorCode, IterId, IterOptions, KeyRange, RequestId, ServerConfig,
    ServerInput, ServerOutput, ServerSession, Timestamp, WatchId,
};
use proptest::prelude::*;
use support::{error_code, small_message};

const CONFIG: ServerConfig = ServerConfig {
    leader_pid: 42,
    term: 1,
    store: std::borrow::Cow::Borrowed("fjall"),
    handshake_timeout: Duration::from_millis(100),
    max_in_flight: 3,
    max_iterators: 2,
    max_iter_credits: 6,
    max_pull_entries: 4,
    // Two or three of the model store's entries (22 bytes each).
    max_pull_bytes: 50,
    max_pulls_out: 2,
    max_frame_len: party_proto::wire::DEFAULT_MAX_FRAME_LEN,
    max_watches: 2,
    change_feed: true,
};

#[derive(Debug, Clone)]
enum Action {
    Message(ClientMessage),
    Complete(u64, bool),
    /// The store answers an outstanding pull with at most this many entries, within its
    /// bytes (possibly more entries than asked: the session fails the iterator rather
    /// than lose them).
    Chunk(u64, usize, bool),
    StoreFails(u64),
    BadFrame,
    Time(u64),
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => small_message().prop_map(Action::Message),
        3 => (0u64..6, any::<bool>()).prop_map(|(id, ok)| Action::Complete(id, ok)),
        4 => (0u64..4, 0usize..9, any::<bool>()).prop_map(|(i, n, end)| Action::Chunk(i, n, end)),
        1 => (0u64..4).prop_map(Action::StoreFails),
        1 => Just(Action::BadFrame),
        1 => (0u64..80).prop_map(Action::Time),
    ]
}

/// What the test has seen the session do, to judge each new output against.
/// One open store iterator as the session must see it.
struct Served {
    /// Entries granted by the client (capped at 6) less those the store gave.
    credits: u32,
    /// Bytes granted less those the store gave: below zero when a pull passed them by one
    /// entry.
    bytes: i128,
    options: IterOptions,
    /// Entries the store gave.
    given: u64,
    /// Entries the store gave that the session has not sent yet (held behind writes).
    unsent: u64,
    /// The session has ended it (its store iterator exhausted or failed, or its limit
    /// reached), its end perhaps held behind writes.
    ended: bool,
    /// The pulls out, oldest first: entries and bytes.
    pulls: VecDeque<(u32, u64)>,
}

#[derive(Default)]
struct Observed {
    /// The first hello: the one the session answers.
    hello: Option<Hello>,
    welcomed: bool,
    closed: bool,
    /// Requests handed to the store and not yet completed.
    running: HashSet<RequestId>,
    /// Answers the store gave, to match against the replies.
    completed: HashMap<RequestId, Result<Response, ErrorCode>>,
    /// The open store iterators.
    open: HashMap<IterId, Served>,
    /// What the client granted an iterator it opened: entries (capped at the leader's
    /// `max_iter_credits`, 6) and bytes.
    granted: HashMap<IterId, (u32, u64)>,
    /// Subscriptions with a read of the log out.
    watch_reads: HashSet<party_proto::WatchId>,
    /// Writes handed to the store whose reply has not been sent.
    writes_unanswered: HashSet<RequestId>,
    /// Of each read and iterator handed to the store, the writes handed over before it
    /// whose replies have not been sent: its answers must wait for them.
    read_waits: HashMap<RequestId, HashSet<RequestId>>,
    iter_waits: HashMap<IterId, HashSet<RequestId>>,
}

impl Observed {
    fn write_answered(&mut self, id: RequestId) {
        if self.writes_unanswered.remove(&id) {
            let waits = self
                .read_waits
                .values_mut()
                .chain(self.iter_waits.values_mut());
            for waiting in waits {
                waiting.remove(&id);
            }
        }
    }

    fn iter_answer_waits(&self, iter: IterId) -> Result<(), TestCaseError> {
        let waits = self.iter_waits.get(&iter);
        prop_assert!(
            waits.is_none_or(HashSet::is_empty),
            "{iter:?} answered before the writes {waits:?} issued before it"
        );
        Ok(())
    }
}

fn check(session: &mut ServerSession, seen: &mut Observed) -> Result<(), TestCaseError> {
    while let Some(output) = session.poll_output() {
        prop_assert!(!seen.closed, "{output:?} after Close");
        let serving = matches!(
            output,
            ServerOutput::Read { .. }
                | ServerOutput::Write { .. }
                | ServerOutput::IterOpen { .. }
                | ServerOutput::IterPull { .. }
                | ServerOutput::WatchPull { .. }
                | ServerOutput::RingOffered { .. }
        );
        prop_assert!(!serving || seen.welcomed, "{output:?} before a valid hello");
        match output {
            ServerOutput::Send(ServerMessage::Welcome(welcome)) => {
                prop_assert_eq!(welcome.leader_pid, 42);
                prop_assert_eq!(&welcome.store, "fjall");
                let hello = seen.hello.as_ref();
                prop_assert!(
                    hello.is_some_and(|h| h.protocol == ProtocolId::CURRENT && h.store == "fjall"),
                    "welcomed {hello:?}"
                );
                seen.welcomed = true;
            }
            ServerOutput::Send(ServerMessage::Rejected(ErrorCode::WrongStore {
                found,
                wanted,
            })) => {
                let hello = seen.hello.as_ref();
                prop_assert!(hello.is_some_and(|h| h.store == wanted), "{hello:?}");
                prop_assert_eq!((found.as_str(), wanted.as_str()), ("fjall", "sled"));
            }
            ServerOutput::Send(ServerMessage::Reply { id, result }) => {
                match seen.completed.remove(&id) {
                    Some(expected) => {
                        prop_assert_eq!(result, expected);
                        let waits = seen.read_waits.remove(&id);
                        prop_assert!(
                            waits.as_ref().is_none_or(HashSet::is_empty),
                            "{id:?} answered before the writes {waits:?} issued before it"
                        );
                        seen.write_answered(id);
                    }
                    None => prop_assert_eq!(result, Err(ErrorCode::TooManyRequests { limit: 3 })),
                }
            }
            // Not `NotFound`: the answer to credits for an iterator that is gone (or was
            // never opened) carries nothing read, and may concern an earlier iterator of
            // that id.
            ServerOutput::Send(
                ServerMessage::IterEnd { iter }
                | ServerMessage::IterAt { iter, .. }
                | ServerMessage::IterFailed { iter, .. },
            ) if !matches!(
                output,
                ServerOutput::Send(ServerMessage::IterFailed {
                    error: ErrorCode::NotFound,
                    ..
                })
            ) =>
            {
                seen.iter_answer_waits(iter)?
            }
            ServerOutput::Send(ServerMessage::IterData { iter, entries }) => {
                seen.iter_answer_waits(iter)?;
                let open = seen.open.get_mut(&iter);
                prop_assert!(open.is_some(), "data for an iterator that is not open");
                let served = open.unwrap();
                prop_assert!(
                    entries.len() as u64 <= served.unsent,
                    "sent entries the store did not give"
                );
                served.unsent -= entries.len() as u64;
                let options = &served.options;
                if !options.values {
                    prop_assert!(entries.iter().all(|e| e.value.is_empty()));
                }
            }
            ServerOutput::Send(_) | ServerOutput::RingOffered { .. } => {}
            ServerOutput::Read { id, .. } | ServerOutput::Write { id, .. } => {
                prop_assert!(seen.running.insert(id), "{id:?} run twice at once");
                prop_assert!(seen.running.len() <= 3, "more in flight than allowed");
                if matches!(output, ServerOutput::Write { .. }) {
                    seen.writes_unanswered.insert(id);
                } else {
                    seen.read_waits.insert(id, seen.writes_unanswered.clone());
                }
            }
            ServerOutput::IterOpen { iter, options } => {
                seen.iter_waits.insert(iter, seen.writes_unanswered.clone());
                prop_assert!(seen.open.len() < 2, "more iterators than allowed");
                let (credits, bytes) = seen.granted.remove(&iter).unwrap_or((0, 0));
                let served = Served {
                    credits,
                    bytes: i128::from(bytes),
                    options,
                    given: 0,
                    unsent: 0,
                    ended: false,
                    pulls: VecDeque::new(),
                };
                seen.open.insert(iter, served);
            }
            ServerOutput::IterPull {
                iter,
                max,
                max_bytes,
            } => {
                let open = seen.open.get_mut(&iter);
                prop_assert!(open.is_some(), "pull from an iterator that is not open");
                let served = open.unwrap();
                prop_assert!(
                    served.pulls.len() < 2,
                    "more pulls out at once than allowed"
                );
                prop_assert!(
                    max > 0 && max <= 4,
                    "a pull of {max}, past max_pull_entries"
                );
                prop_assert!(
                    max_bytes > 0 && max_bytes <= 50,
                    "a pull of {max_bytes} bytes, past max_pull_bytes"
                );
                let asked: u32 = served.pulls.iter().map(|(max, _)| max).sum();
                let asked_bytes: i128 = served.pulls.iter().map(|(_, b)| i128::from(*b)).sum();
                prop_assert!(asked + max <= served.credits, "pull past the credits");
                prop_assert!(
                    asked_bytes + i128::from(max_bytes) <= served.bytes,
                    "pull past the byte credits"
                );
                let left = served.options.limit.map(|limit| limit - served.given);
                prop_assert!(
                    left.is_none_or(|left| u64::from(asked + max) <= left),
                    "pull past the limit"
                );
                served.pulls.push_back((max, max_bytes));
            }
            ServerOutput::IterDrop { iter } => {
                prop_assert!(
                    seen.open.remove(&iter).is_some(),
                    "drop of an unopened iterator"
                );
            }
            // Reads of the log are never answered here: each stays out until its drop.
            ServerOutput::WatchPull { watch, .. } => {
                prop_assert!(
                    seen.watch_reads.insert(watch),
                    "two reads of one subscription out at once"
                );
                prop_assert!(
                    seen.watch_reads.len() <= 2,
                    "more subscriptions than allowed"
                );
            }
            ServerOutput::WatchDrop { watch } => {
                prop_assert!(
                    seen.watch_reads.remove(&watch),
                    "drop of an unopened subscription"
                );
            }
            ServerOutput::Close(_) => seen.closed = true,
        }
    }
    // Progress: an iterator of a live session has as many pulls out as allowed, or has
    // asked for all its credits, bytes and limit allow; or has ended, its end and drop held
    // behind writes.
    for (iter, served) in seen.open.iter().filter(|(_, s)| !seen.closed && !s.ended) {
        let asked: u32 = served.pulls.iter().map(|(max, _)| max).sum();
        let asked_bytes: i128 = served.pulls.iter().map(|(_, b)| i128::from(*b)).sum();
        let left = served
            .options
            .limit
            .map_or(u64::MAX, |limit| limit - served.given);
        prop_assert!(
            served.pulls.len() == 2
                || asked >= served.credits
                || asked_bytes >= served.bytes
                || u64::from(asked) >= left,
            "{iter:?} waits with {} credits, {} bytes and {left} entries of its limit left, \
             {asked} entries and {asked_bytes} bytes asked for",
            served.credits,
            served.bytes
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn serves_safely_whatever_arrives(actions in prop::collection::vec(action(), 0..60)) {
        let mut now = Timestamp::ZERO;
        let mut session = ServerSession::new(now, CONFIG);
        let mut seen = Observed::default();
        for action in actions {
            let input = match action {
                Action::Message(message) => {
                    // Credits the client grants, to bound what may be sent.
                    match &message {
                        ClientMessage::Hello(hello) => {
                            seen.hello.get_or_insert_with(|| hello.clone());
                        }
                        ClientMessage::IterOpen { iter, credits, bytes, .. } if !seen.open.contains_key(iter) => {
                            seen.granted.insert(*iter, ((*credits).min(6), *bytes));
                            // A refusal reads nothing: it waits for no write.
                            seen.iter_waits.remove(iter);
                        }
                        ClientMessage::IterNext { iter, credits, bytes } => {
                            if let Some(served) = seen.open.get_mut(iter) {
                                // Entries held behind writes are out, as far as the cap goes.
                                let cap = 6 - served.unsent as u32;
                                served.credits = (served.credits + credits).min(cap);
                                served.bytes += i128::from(*bytes);
                            }
                        }
                        _ => {}
                    }
                    Some(ServerInput::Message(message))
                }
                Action::Complete(id, ok) => {
                    let id = RequestId(id);
                    seen.running.remove(&id).then(|| {
                        let result = if ok { Ok(Response::Written) } else { Err(ErrorCode::Backend("disk".into())) };
                        seen.completed.insert(id, result.clone());
                        ServerInput::Completed { id, result }
                    })
                }
                Action::Chunk(iter, n, exhausted) => {
                    let iter = IterId(iter);
                    seen.open.get_mut(&iter).and_then(|served| {
                        let (max, max_bytes) = served.pulls.pop_front()?;
                        // As the store reads: none after the entry that reaches the bytes.
                        let mut entries = Vec::new();
                        let mut bytes = 0;
                        for i in 0..n {
                            if bytes >= max_bytes {
                                break;
                            }
                            let entry = Entry { key: vec![i as u8], value: vec![1] };
                            bytes += entry.len_bound();
                            entries.push(entry);
                        }
                        // Taken by the session (more than asked fails the iterator): counted
                        // as the follower will count them, values dropped if not wanted.
                        let limit_reached = served
                            .options
                            .limit
                            .is_some_and(|limit| served.given + entries.len() as u64 >= limit);
                        served.ended |= exhausted || limit_reached || entries.len() > max as usize;
                        if entries.len() <= max as usize {
                            let count = entries.len() as u64;
                            served.credits -= count as u32;
                            served.given += count;
                            served.unsent += count;
                            let value_len = if served.options.values { 1 } else { 0 };
                            let counted: u64 = entries
                                .iter()
                                .map(|e| Entry { key: e.key.clone(), value: vec![0; value_len] }.len_bound())
                                .sum();
                            served.bytes -= i128::from(counted);
                        }
                        Some(ServerInput::IterChunk { iter, entries, exhausted })
                    })
                }
                Action::StoreFails(iter) => {
                    if let Some(served) = seen.open.get_mut(&IterId(iter)) {
                        served.ended = true;
                    }
                    Some(ServerInput::IterFailed {
                        iter: IterId(iter),
                        error: ErrorCode::Backend("io".into()),
                    })
                }
                Action::BadFrame => Some(ServerInput::BadFrame(FrameError::TooLarge { len: 1 << 30, max: 1 << 26 })),
                Action::Time(millis) => {
                    now = now + Duration::from_millis(millis);
                    session.handle_timeout(now);
                    None
                }
            };
            if let Some(input) = input {
                session.handle_input(now, input);
            }
            check(&mut session, &mut seen)?;
        }
        if !seen.welcomed && !seen.closed {
            prop_assert!(session.poll_timeout().is_some(), "a silent peer must time out");
        }
        // Once the store has answered everything, nothing is held: every request is
        // answered, and every iterator that ended is dropped.
        let running: Vec<RequestId> = seen.running.drain().collect();
        for id in running {
            let result = Ok(Response::Written);
            seen.completed.insert(id, result.clone());
            session.handle_input(now, ServerInput::Completed { id, result });
            check(&mut session, &mut seen)?;
        }
        if !seen.closed {
            prop_assert!(seen.completed.is_empty(), "never answered: {:?}", seen.completed);
            let ended: Vec<_> = seen.open.iter().filter(|(_, s)| s.ended).map(|(i, _)| i).collect();
            prop_assert!(ended.is_empty(), "ended and never dropped: {ended:?}");
        }
    }

    #[test]
    fn arbitrary_messages_never_panic(
        messages in prop::collection::vec(support::client_message(), 0..30),
        errors in prop::collection::vec(error_code(), 0..3),
    ) {
        let mut session = ServerSession::new(Timestamp::ZERO, ServerConfig::default());
        for message in messages {
            session.handle_input(Timestamp::ZERO, ServerInput::Message(message));
            while session.poll_output().is_some() {}
        }
        for (i, error) in errors.into_iter().enumerate() {
            session.handle_input(Timestamp::ZERO, ServerInput::IterFailed { iter: IterId(i as u64), error });
        }
    }
}

/// A session past its hello, with `CONFIG`.
fn greeted() -> ServerSession {
    greeted_with(CONFIG)
}

/// A session with `config` that took a follower's hello.
fn greeted_with(config: ServerConfig) -> ServerSession {
    let mut session = ServerSession::new(Timestamp::ZERO, config);
    let hello = Hello {
        protocol: ProtocolId::CURRENT,
        client_id: ClientId(1),
        store: "fjall".into(),
    };
    session.handle_input(
        Timestamp::ZERO,
        ServerInput::Message(ClientMessage::Hello(hello)),
    );
    session
}

#[test]
fn a_stalled_reader_costs_the_leader_only_its_credits() {
    stalled_reader(false);
}

/// Entries held behind a write count as entries out: a follower that grants credits again
/// and again while they wait makes the leader read no more than its cap.
#[test]
fn entries_held_behind_a_write_count_against_the_credits() {
    stalled_reader(true);
}

fn stalled_reader(behind_a_write: bool) {
    let mut session = greeted();
    let now = Timestamp::ZERO;
    let iter = IterId(0);
    if behind_a_write {
        let put = ClientMessage::Write {
            id: RequestId(1),
            seq: party_proto::WriteSeq(1),
            oldest_pending: party_proto::WriteSeq(1),
            first_sent_ms: 0,
            op: party_proto::wire::WriteOp::Del { key: vec![] }.into(),
        };
        session.handle_input(now, ServerInput::Message(put));
    }
    session.handle_input(
        now,
        ServerInput::Message(ClientMessage::IterOpen {
            iter,
            options: IterOptions::default(),
            credits: 1000,
            bytes: 1 << 20,
        }),
    );
    let mut pulled = 0u32;
    let mut sent = 0usize;
    for _ in 0..50 {
        let outputs: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        let mut pulls = Vec::new();
        for output in outputs {
            match output {
                ServerOutput::IterPull { max, .. } => pulls.push(max),
                ServerOutput::Send(ServerMessage::IterData { entries, .. }) => {
                    sent += entries.len()
                }
                _ => {}
            }
        }
        if pulls.is_empty() {
            break;
        }
        for max in pulls {
            pulled += max;
            let entries = (0..max)
                .map(|i| Entry {
                    key: vec![i as u8],
                    value: vec![],
                })
                .collect();
            session.handle_input(
                now,
                ServerInput::IterChunk {
                    iter,
                    entries,
                    exhausted: false,
                },
            );
        }
        if behind_a_write {
            session.handle_input(now, grant(iter, 1000, 1 << 20));
        }
    }
    if behind_a_write {
        assert_eq!(sent, 0, "held behind the write");
        let written = ServerInput::Completed {
            id: RequestId(1),
            result: Ok(Response::Written),
        };
        session.handle_input(now, written);
    }
    let trailing: usize = std::iter::from_fn(|| session.poll_output())
        .map(|o| match o {
            ServerOutput::Send(ServerMessage::IterData { entries, .. }) => entries.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(
        pulled, 6,
        "the 1000 credits asked for are capped at max_iter_credits"
    );
    assert_eq!(
        sent + trailing,
        6,
        "and nothing more is read until the follower grants more"
    );
}

/// A read may run at once only when none of its connection's writes is still running: then
/// it sees every write the connection sent before it, whatever order the store takes them in.
#[test]
fn a_read_behind_its_connections_write_is_marked_to_wait_for_it() {
    use party_proto::wire::{ClientMessage, Hello, ProtocolId, ReadOp, Response, WriteOp};
    use party_proto::{ClientId, RequestId, ServerInput, ServerOutput, WriteSeq};
    let mut server = ServerSession::new(Timestamp::ZERO, ServerConfig::default());
    let now = Timestamp::ZERO;
    let hello = Hello {
        protocol: ProtocolId::CURRENT,
        client_id: ClientId(1),
        store: "fjall".into(),
    };
    server.handle_input(now, ServerInput::Message(ClientMessage::Hello(hello)));
    let get = |id| {
        ServerInput::Message(ClientMessage::Read {
            id: RequestId(id),
            op: ReadOp::Get { key: b"k".to_vec() },
        })
    };
    let behind = |server: &mut ServerSession| {
        std::iter::from_fn(|| server.poll_output())
            .find_map(|output| match output {
                ServerOutput::Read { behind_writes, .. } => Some(behind_writes),
                _ => None,
            })
            .expect("a read")
    };
    server.handle_input(now, get(1));
    assert!(!behind(&mut server), "nothing written yet");
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
    server.handle_input(now, ServerInput::Message(put));
    server.handle_input(now, get(3));
    assert!(behind(&mut server), "the put is still running");
    let written = ServerInput::Completed {
        id: RequestId(2),
        result: Ok(Response::Written),
    };
    server.handle_input(now, written);
    server.handle_input(now, get(4));
    assert!(!behind(&mut server), "the put is done");
}

/// The store may answer a read or an iterator before the write issued ahead of it (another
/// thread reads it): the session sends those answers after the write's, so that a follower
/// that has them has the write's too, whenever its leader dies (a write refused by the store
/// and sent again to the next leader would otherwise land after a read answered without it).
#[test]
fn answers_to_reads_and_iterators_go_after_the_writes_issued_before_them() {
    // What the session sends, and the store iterators it drops.
    let sent = |session: &mut ServerSession| -> Vec<ServerOutput> {
        std::iter::from_fn(|| session.poll_output())
            .filter(|output| {
                matches!(
                    output,
                    ServerOutput::Send(_) | ServerOutput::IterDrop { .. }
                )
            })
            .collect()
    };
    let send = ServerOutput::Send;
    let get = |id| {
        ServerInput::Message(ClientMessage::Read {
            id: RequestId(id),
            op: party_proto::wire::ReadOp::Get { key: b"k".to_vec() },
        })
    };
    let mut session = greeted();
    let now = Timestamp::ZERO;
    let welcome = sent(&mut session);
    assert!(matches!(
        welcome[..],
        [ServerOutput::Send(ServerMessage::Welcome(_))]
    ));
    let put = ClientMessage::Write {
        id: RequestId(1),
        seq: party_proto::WriteSeq(1),
        oldest_pending: party_proto::WriteSeq(1),
        first_sent_ms: 0,
        op: party_proto::wire::WriteOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }
        .into(),
    };
    session.handle_input(now, ServerInput::Message(put));
    session.handle_input(now, get(2));
    session.handle_input(now, open(IterId(3), 4, 1000));
    assert_eq!(sent(&mut session), vec![]);
    let full = ErrorCode::StoreFull {
        free: 0,
        reserve: 1,
    };
    let answers = [
        ServerInput::Completed {
            id: RequestId(2),
            result: Ok(Response::Value(None)),
        },
        ServerInput::IterAt {
            iter: IterId(3),
            seq: party_proto::CommitSeq(7),
        },
        ServerInput::IterChunk {
            iter: IterId(3),
            entries: vec![],
            exhausted: true,
        },
    ];
    for answer in answers {
        session.handle_input(now, answer);
        assert_eq!(sent(&mut session), vec![], "held behind the put");
    }
    // A second answer from the store to the held read is no second reply.
    let again = ServerInput::Completed {
        id: RequestId(2),
        result: Ok(Response::Value(Some(bytes::Bytes::from_static(b"x")))),
    };
    session.handle_input(now, again);
    // Credits crossing the held end: the iterator is gone, and the answer saying so must
    // not overtake its end.
    session.handle_input(now, grant(IterId(3), 4, 1000));
    session.handle_input(now, grant(IterId(3), 4, 1000));
    assert_eq!(sent(&mut session), vec![]);
    // A read whose reply is held is still in flight (three at most here).
    session.handle_input(now, get(6));
    session.handle_input(now, get(7));
    assert_eq!(
        sent(&mut session),
        vec![send(ServerMessage::Reply {
            id: RequestId(7),
            result: Err(ErrorCode::TooManyRequests { limit: 3 }),
        })]
    );
    // Until its end is sent, an iterator counts toward the connection's iterators (two
    // here).
    session.handle_input(now, open(IterId(4), 4, 1000));
    session.handle_input(now, open(IterId(5), 4, 1000));
    assert_eq!(
        sent(&mut session),
        vec![send(ServerMessage::IterFailed {
            iter: IterId(5),
            error: ErrorCode::TooManyIterators { limit: 2 },
        })]
    );
    let refused = ServerInput::Completed {
        id: RequestId(1),
        result: Err(full.clone()),
    };
    session.handle_input(now, refused);
    assert_eq!(
        sent(&mut session),
        vec![
            send(ServerMessage::Reply {
                id: RequestId(1),
                result: Err(full),
            }),
            send(ServerMessage::Reply {
                id: RequestId(2),
                result: Ok(Response::Value(None)),
            }),
            send(ServerMessage::IterAt {
                iter: IterId(3),
                seq: party_proto::CommitSeq(7),
            }),
            send(ServerMessage::IterEnd { iter: IterId(3) }),
            ServerOutput::IterDrop { iter: IterId(3) },
            // Once, however many grants crossed the end.
            send(ServerMessage::IterFailed {
                iter: IterId(3),
                error: ErrorCode::NotFound,
            }),
        ]
    );
    // With no write running, a read is answered as soon as the store answers it.
    session.handle_input(now, get(8));
    let value = ServerInput::Completed {
        id: RequestId(8),
        result: Ok(Response::Value(None)),
    };
    session.handle_input(now, value);
    assert_eq!(sent(&mut session).len(), 1);
}

/// A follower's opening of iterator `iter` over everything, with its first credits.
fn open(iter: IterId, credits: u32, bytes: u64) -> ServerInput {
    ServerInput::Message(ClientMessage::IterOpen {
        iter,
        options: IterOptions::default(),
        credits,
        bytes,
    })
}

/// A follower's grant of more entries and bytes to iterator `iter`.
fn grant(iter: IterId, credits: u32, bytes: u64) -> ServerInput {
    ServerInput::Message(ClientMessage::IterNext {
        iter,
        credits,
        bytes,
    })
}

/// The store reads an iterator's next entries while the ones before are on their way: up
/// to `max_pulls_out` pulls of at most `max_pull_entries` (and `max_pull_bytes`) are out at
/// once, the next asked for as each chunk comes back, all within the credits; a chunk longer
/// than its pull fails the iterator rather than lose what the store read past it.
#[test]
fn pulls_overlap_within_the_credits() {
    let mut session = greeted();
    let now = Timestamp::ZERO;
    let iter = IterId(0);
    let outputs = |session: &mut ServerSession| -> (Vec<(u32, u64)>, Vec<usize>, bool) {
        let (mut pulls, mut sent, mut failed) = (Vec::new(), Vec::new(), false);
        while let Some(output) = session.poll_output() {
            match output {
                ServerOutput::IterPull { max, max_bytes, .. } => pulls.push((max, max_bytes)),
                ServerOutput::Send(ServerMessage::IterData { entries, .. }) => {
                    sent.push(entries.len())
                }
                ServerOutput::Send(ServerMessage::IterFailed { .. }) => failed = true,
                _ => {}
            }
        }
        (pulls, sent, failed)
    };
    // Entries of 21 bytes (Entry::len_bound).
    let chunk = |len: usize| ServerInput::IterChunk {
        iter,
        entries: (0..len)
            .map(|i| Entry {
                key: vec![i as u8],
                value: vec![],
            })
            .collect(),
        exhausted: false,
    };
    outputs(&mut session);
    session.handle_input(now, open(iter, 6, 1000));
    assert_eq!(
        outputs(&mut session),
        (vec![(4, 50), (2, 50)], vec![], false),
        "two pulls out at once, of max_pull_entries and max_pull_bytes, then of the rest"
    );
    session.handle_input(now, chunk(3));
    assert_eq!(
        outputs(&mut session),
        (vec![(1, 50)], vec![3], false),
        "a chunk short of its pull (its bytes reached): the credit it left is asked for"
    );
    session.handle_input(now, grant(iter, 5, 0));
    assert_eq!(
        outputs(&mut session),
        (vec![], vec![], false),
        "two pulls out"
    );
    session.handle_input(now, chunk(2));
    assert_eq!(
        outputs(&mut session),
        (vec![(3, 50)], vec![2], false),
        "6 credits (8, capped), 2 sent since and 1 asked for: 3 more"
    );
    session.handle_input(now, chunk(2));
    assert_eq!(
        outputs(&mut session),
        (vec![], vec![], true),
        "a pull of 1 answered with 2 entries: the iterator fails"
    );
}

/// Bytes bound an iterator as its entries do: a follower that granted few bytes gets no
/// more than them, and the one entry that crosses them.
#[test]
fn pulls_stay_within_the_byte_credits() {
    let mut session = greeted();
    let now = Timestamp::ZERO;
    let iter = IterId(0);
    let pulls = |session: &mut ServerSession| -> Vec<(u32, u64)> {
        std::iter::from_fn(|| session.poll_output())
            .filter_map(|output| match output {
                ServerOutput::IterPull { max, max_bytes, .. } => Some((max, max_bytes)),
                _ => None,
            })
            .collect()
    };
    pulls(&mut session);
    session.handle_input(now, open(iter, 6, 70));
    assert_eq!(pulls(&mut session), [(4, 50), (2, 20)]);
    // 60 bytes for the first pull (of 50), 21 for the second (of 20): 70 granted, 81 sent, 11 owed.
    let entry = |len: usize| Entry {
        key: vec![1],
        value: vec![0; len],
    };
    let first = ServerInput::IterChunk {
        iter,
        entries: vec![entry(9), entry(9)],
        exhausted: false,
    };
    session.handle_input(now, first);
    assert_eq!(pulls(&mut session), [], "no bytes left to ask for");
    let second = ServerInput::IterChunk {
        iter,
        entries: vec![entry(0)],
        exhausted: false,
    };
    session.handle_input(now, second);
    assert_eq!(
        pulls(&mut session),
        [],
        "the bytes are used up, and then some"
    );
    session.handle_input(now, grant(iter, 0, 30));
    assert_eq!(
        pulls(&mut session),
        [(3, 19)],
        "what a pull sent past the bytes is owed back from the next grant"
    );
}

/// Every subscription is told where it starts before any of its groups, from a given
/// commit too, so that its opener knows it is served: its first read only asks where the
/// log ends (which a driver answers at once, where a read from the next commit waits for
/// one). One that starts past the log's end is refused, never told it started.
#[test]
fn a_subscription_from_a_commit_is_told_its_start_before_its_groups_or_refused() {
    let mut session = greeted();
    while session.poll_output().is_some() {}
    let (served, ahead) = (WatchId(1), WatchId(2));
    for (watch, from) in [(served, 2), (ahead, 9)] {
        let open = ClientMessage::WatchOpen {
            watch,
            range: KeyRange::all(),
            from: Some(CommitSeq(from)),
            credits: 4,
        };
        session.handle_input(Timestamp::ZERO, ServerInput::Message(open));
    }
    let pulls = |session: &mut ServerSession| -> Vec<(WatchId, Option<CommitSeq>)> {
        std::iter::from_fn(|| session.poll_output())
            .filter_map(|output| match output {
                ServerOutput::WatchPull { watch, from, .. } => Some((watch, from)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(pulls(&mut session), [(served, None), (ahead, None)]);
    // The log holds commits 1 and 2; the next one will be 3.
    let put = WriteOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    let read = |from: Option<u64>| LogRead {
        from: CommitSeq(from.unwrap_or(3)),
        entries: from
            .into_iter()
            .flat_map(|from| from..3)
            .map(|seq| (CommitSeq(seq), encode_entry(0, std::slice::from_ref(&put))))
            .collect(),
        next: CommitSeq(3),
    };
    let mut sent = Vec::new();
    let mut answer = |session: &mut ServerSession, watch, from| {
        let result = Ok(read(from));
        session.handle_input(Timestamp::ZERO, ServerInput::WatchRead { watch, result });
        let mut pulls = Vec::new();
        while let Some(output) = session.poll_output() {
            match output {
                ServerOutput::Send(message) => sent.push(message),
                ServerOutput::WatchPull { watch, from, .. } => pulls.push((watch, from)),
                _ => {}
            }
        }
        pulls
    };
    assert_eq!(
        answer(&mut session, served, None),
        [(served, Some(CommitSeq(2)))]
    );
    answer(&mut session, ahead, None);
    answer(&mut session, served, Some(2));
    let started = sent.iter().position(|message| {
        *message
            == ServerMessage::WatchStarted {
                watch: served,
                from: CommitSeq(2),
            }
    });
    let group = sent.iter().position(|message| {
        matches!(message, ServerMessage::WatchData { watch, seq: CommitSeq(2), .. } if *watch == served)
    });
    assert!(started.is_some() && started < group, "{sent:?}");
    assert!(
        sent.contains(&ServerMessage::WatchFailed {
            watch: ahead,
            error: ErrorCode::WatchAhead { from: 9, next: 3 },
        }),
        "{sent:?}"
    );
    assert!(
        !sent.iter().any(
            |message| matches!(message, ServerMessage::WatchStarted { watch, .. } if *watch == ahead)
        ),
        "{sent:?}"
    );
}

/// Groups that hold nothing of a subscription's range still move it on: the leader says
/// how far it read (`WatchProgress`), so that the follower's position (`Watch::position`)
/// passes them. Without it a quiet subscription's position would stay at its start, and
/// after a failover it would read those groups again, or be told it lagged if they were
/// trimmed meanwhile.
#[test]
fn a_subscription_is_told_how_far_it_read_when_no_group_touched_its_range() {
    let watch = WatchId(1);
    // Commits 1 and 2 put `z`, outside the range; the next one will be 3.
    let put = WriteOp::Put {
        key: b"z".to_vec(),
        value: b"v".to_vec(),
    };
    let read = LogRead {
        from: CommitSeq(1),
        entries: (1..3)
            .map(|seq| (CommitSeq(seq), encode_entry(0, std::slice::from_ref(&put))))
            .collect(),
        next: CommitSeq(3),
    };
    let range = KeyRange {
        start: std::ops::Bound::Included(b"a".to_vec()),
        end: std::ops::Bound::Excluded(b"b".to_vec()),
    };
    let sent = sent_to_subscription(CONFIG, range, 3, [read]);
    assert!(
        !sent
            .iter()
            .any(|message| matches!(message, ServerMessage::WatchData { .. })),
        "{sent:?}"
    );
    assert!(
        sent.contains(&ServerMessage::WatchProgress {
            watch,
            through: CommitSeq(3),
        }),
        "{sent:?}"
    );
}

/// A run of groups lost to a subscription (a leader without the feed committed them) that
/// spans several reads of the log is said once, when the read that ends it comes: one
/// `WatchLagged` for the whole run, not one a read (10 000 such commits would be 157).
#[test]
fn a_lost_run_over_several_reads_is_said_once() {
    let watch = WatchId(1);
    // The log holds commits 1 to 4, none with its changes; the next one will be 5. Each
    // read gives two of them.
    let lost = |from: u64| LogRead {
        from: CommitSeq(from),
        entries: (from..from + 2)
            .map(|seq| (CommitSeq(seq), encode_unlogged(0)))
            .collect(),
        next: CommitSeq(5),
    };
    let lagged: Vec<ServerMessage> =
        sent_to_subscription(CONFIG, KeyRange::all(), 5, [lost(1), lost(3)])
            .into_iter()
            .filter(|message| matches!(message, ServerMessage::WatchLagged { .. }))
            .collect();
    assert_eq!(
        lagged,
        [ServerMessage::WatchLagged {
            watch,
            missed: 4,
            resume: CommitSeq(5),
        }]
    );
}

proptest! {
    /// A group's changes go out in frames the follower takes (within the leader's frame
    /// limit), however many and whatever they are (a clear counts its range's bounds).
    #[test]
    fn a_groups_frames_keep_to_the_frame_limit(
        changes in prop::collection::vec(support::change(), 0..20),
        clears in prop::collection::vec(support::key_range(), 1..80),
        max_frame_len in 128u32..1024,
    ) {
        // Many clears: what a frame holds of them is only their bounds.
        let clears = clears.into_iter().map(|range| Change::Clear { range });
        let ops: Vec<WriteOp> = changes
            .into_iter()
            .chain(clears)
            .map(|change| match change {
                Change::Put { key, value } => WriteOp::Put { key, value },
                Change::Del { key } => WriteOp::Del { key },
                Change::Clear { range } => WriteOp::Clear { range },
            })
            .collect();
        let read = LogRead {
            from: CommitSeq(1),
            entries: vec![(CommitSeq(1), encode_entry(0, &ops))],
            next: CommitSeq(2),
        };
        let config = ServerConfig { max_frame_len, ..CONFIG };
        let sent = sent_to_subscription(config, KeyRange::all(), 2, [read]);
        // The group is sent whole, or said to hold nothing in the range (every clear empty).
        let through = |m: &ServerMessage| {
            matches!(
                m,
                ServerMessage::WatchData { complete: true, .. } | ServerMessage::WatchProgress { .. }
            )
        };
        prop_assert!(sent.iter().any(through), "{:?}", sent);
        for message in sent {
            let mut frame = Vec::new();
            let encoded = encode_frame(&message, max_frame_len, &mut frame);
            prop_assert!(encoded.is_ok(), "{:?}: {:?}", encoded, message);
        }
    }
}

/// What a session with `config` sends to subscription 1 on `range`, opened from commit 1,
/// as its reads of the log are answered: the first only with where the log ends (`next`,
/// as a driver answers it), then with `reads` in turn.
fn sent_to_subscription<const N: usize>(
    config: ServerConfig,
    range: KeyRange,
    next: u64,
    reads: [LogRead; N],
) -> Vec<ServerMessage> {
    let mut session = greeted_with(config);
    while session.poll_output().is_some() {}
    let watch = WatchId(1);
    let open = ClientMessage::WatchOpen {
        watch,
        range,
        from: Some(CommitSeq(1)),
        credits: 4,
    };
    session.handle_input(Timestamp::ZERO, ServerInput::Message(open));
    let log_end = LogRead {
        from: CommitSeq(next),
        entries: Vec::new(),
        next: CommitSeq(next),
    };
    let mut sent = Vec::new();
    for read in std::iter::once(log_end).chain(reads) {
        let result = Ok(read);
        session.handle_input(Timestamp::ZERO, ServerInput::WatchRead { watch, result });
        while let Some(output) = session.poll_output() {
            if let ServerOutput::Send(message) = output {
                sent.push(message);
            }
        }
    }
    sent
}

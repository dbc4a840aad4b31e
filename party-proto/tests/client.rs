//! The follower's session under any interleaving of requests, replies, disconnects,
//! reconnects, timeouts and close.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use party_proto::wire::{
    ClientMessage, ProtocolId, ReadOp, Response, ServerMessage, Welcome, WriteOp,
};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, ErrorCode, RequestId,
    Timestamp, WriteSeq,
};
use proptest::prelude::*;
use support::edge_key;

#[derive(Debug, Clone)]
enum Action {
    Read(Vec<u8>),
    Write(Vec<u8>),
    /// The driver connects; while connected, it says so again without a disconnect first.
    Connect,
    /// The leader welcomes the connection (until then the client sends only its hello).
    Welcome,
    Disconnect,
    /// The leader answers one of the requests it has, chosen by index, with success or not.
    Reply(prop::sample::Index, bool),
    /// A buggy or confused leader answers an id twice or one it never got.
    StrayReply(u64),
    Time(u64),
    Close,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => edge_key().prop_map(Action::Read),
        4 => edge_key().prop_map(Action::Write),
        2 => Just(Action::Connect),
        3 => Just(Action::Welcome),
        2 => Just(Action::Disconnect),
        6 => (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(i, ok)| Action::Reply(i, ok)),
        1 => (0u64..40).prop_map(Action::StrayReply),
        1 => (0u64..30).prop_map(Action::Time),
        1 => Just(Action::Close),
    ]
}

/// What the test knows about each request it issued.
#[derive(Debug)]
struct Issued {
    at: Timestamp,
    write: Option<Vec<u8>>,
    completions: Vec<Result<Response, ErrorCode>>,
}

/// The leader's side, as the test plays it.
#[derive(Debug)]
struct Leader {
    connected: bool,
    welcomed: bool,
    /// Requests received on the current connection and not yet answered, in arrival order.
    unanswered: Vec<RequestId>,
    /// What the leader answered, per request, on the connection it answered on.
    answers: HashMap<RequestId, Result<Response, ErrorCode>>,
    /// Requests that were sent on a connection that then dropped before an answer.
    lost_in_flight: BTreeSet<RequestId>,
    /// Every sequence number each write was sent with.
    seqs: HashMap<RequestId, BTreeSet<WriteSeq>>,
    /// Messages on the current connection, to check their order.
    log: Vec<ClientMessage>,
    /// The highest `oldest_pending` the client has announced: it promised never to send a
    /// write below it again.
    floor: WriteSeq,
    /// The most requests it takes in flight on a connection (its welcome says so); those
    /// the client gave up on (timed out) count until it answers them.
    max_in_flight: u32,
}

struct Harness {
    session: ClientSession,
    leader: Leader,
    issued: BTreeMap<RequestId, Issued>,
    now: Timestamp,
    closed_at: Option<Timestamp>,
    retry: bool,
    timeout: Option<Duration>,
}

impl Harness {
    fn new(retry: bool, timeout: Option<Duration>, max_in_flight: u32) -> Self {
        let config = ClientConfig {
            retry,
            request_timeout: timeout,
            ..ClientConfig::default()
        };
        Harness {
            session: ClientSession::new(ClientId(7), config),
            leader: Leader {
                connected: false,
                welcomed: false,
                unanswered: Vec::new(),
                answers: HashMap::new(),
                lost_in_flight: BTreeSet::new(),
                seqs: HashMap::new(),
                log: Vec::new(),
                floor: WriteSeq(0),
                max_in_flight,
            },
            issued: BTreeMap::new(),
            now: Timestamp::ZERO,
            closed_at: None,
            retry,
            timeout,
        }
    }

    fn input(&mut self, input: ClientInput) -> Result<(), TestCaseError> {
        self.session.handle_input(self.now, input);
        self.drain()
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(output) = self.session.poll_output() {
            match output {
                ClientOutput::Send(message) => self.leader_receives(message)?,
                ClientOutput::Completed { id, result } => self.completed(id, result)?,
                ClientOutput::IterReady { .. } | ClientOutput::WatchReady { .. } => {
                    prop_assert!(false, "no iterators or subscriptions here")
                }
            }
        }
        Ok(())
    }

    fn leader_receives(&mut self, message: ClientMessage) -> Result<(), TestCaseError> {
        prop_assert!(self.leader.connected, "sent {message:?} with no connection");
        prop_assert!(
            self.leader.log.is_empty() == matches!(message, ClientMessage::Hello(_)),
            "Hello must open every connection and come once: {message:?}"
        );
        prop_assert!(
            self.leader.welcomed || matches!(message, ClientMessage::Hello(_)),
            "{message:?} sent before the welcome"
        );
        if matches!(
            message,
            ClientMessage::Read { .. } | ClientMessage::Write { .. }
        ) {
            prop_assert!(
                self.leader.unanswered.len() < self.leader.max_in_flight as usize,
                "{message:?} sent with {:?} in flight, past the leader's limit of {}",
                self.leader.unanswered,
                self.leader.max_in_flight
            );
        }
        match &message {
            ClientMessage::Read { id, .. } => self.leader.unanswered.push(*id),
            ClientMessage::Write {
                id,
                seq,
                oldest_pending,
                ..
            } => {
                prop_assert!(oldest_pending <= seq, "oldest pending above its own write");
                prop_assert!(
                    *seq >= self.leader.floor,
                    "{seq:?} sent after the client announced nothing below {:?} is pending",
                    self.leader.floor
                );
                self.leader.floor = self.leader.floor.max(*oldest_pending);
                self.leader.unanswered.push(*id);
                self.leader.seqs.entry(*id).or_default().insert(*seq);
            }
            ClientMessage::Hello(hello) => prop_assert_eq!(hello.client_id, ClientId(7)),
            other => prop_assert!(false, "unexpected {other:?}"),
        }
        self.leader.log.push(message);
        Ok(())
    }

    fn completed(
        &mut self,
        id: RequestId,
        result: Result<Response, ErrorCode>,
    ) -> Result<(), TestCaseError> {
        let issued = self.issued.get_mut(&id);
        prop_assert!(issued.is_some(), "completion for unknown {id:?}");
        let issued = issued.unwrap();
        prop_assert!(issued.completions.is_empty(), "{id:?} completed twice");
        match &result {
            Err(ErrorCode::ConnectionLost) => {
                prop_assert!(!self.retry, "ConnectionLost with retry on");
                prop_assert!(
                    self.leader.lost_in_flight.contains(&id),
                    "ConnectionLost for {id:?}, which was not in flight on a lost connection"
                );
            }
            Err(ErrorCode::Closed) => prop_assert!(self.closed_at.is_some()),
            Err(ErrorCode::TimedOut) => {
                let timeout = self.timeout.expect("timed out without a timeout");
                prop_assert!(self.now.saturating_since(issued.at) >= timeout);
            }
            answer => prop_assert_eq!(Some(answer), self.leader.answers.get(&id)),
        }
        issued.completions.push(result);
        Ok(())
    }

    fn run(&mut self, action: Action) -> Result<(), TestCaseError> {
        match action {
            Action::Read(key) => {
                let id = self.session.read(self.now, ReadOp::Get { key });
                self.issue(id, None);
            }
            Action::Write(key) => {
                let id = self
                    .session
                    .write(self.now, WriteOp::Del { key: key.clone() });
                self.issue(id, Some(key));
            }
            Action::Connect => {
                if self.leader.connected {
                    // A driver that says Connected again without Disconnected: the session
                    // takes its first connection as lost.
                    self.leader_loses_connection()?;
                }
                self.leader.connected = true;
                self.leader.welcomed = false;
                self.leader.log.clear();
                self.input(ClientInput::Connected)?;
            }
            Action::Welcome if self.leader.connected && !self.leader.welcomed => {
                self.leader.welcomed = true;
                let welcome = Welcome {
                    protocol: ProtocolId::CURRENT,
                    leader_pid: 1,
                    term: 1,
                    store: "fjall".into(),
                    limits: party_proto::wire::LeaderLimits {
                        max_in_flight: self.leader.max_in_flight,
                        ..party_proto::ServerConfig::default().limits()
                    },
                };
                self.input(ClientInput::Message(ServerMessage::Welcome(welcome)))?;
            }
            Action::Disconnect if self.leader.connected => {
                self.leader_loses_connection()?;
                self.input(ClientInput::Disconnected)?;
            }
            Action::Reply(index, ok) if !self.leader.unanswered.is_empty() => {
                self.reply(index.index(self.leader.unanswered.len()), ok)?;
            }
            Action::StrayReply(n) if self.leader.connected => {
                let id = RequestId(n);
                let answered_here = self.leader.answers.contains_key(&id);
                let pending = self.leader.unanswered.contains(&id);
                if !pending && (answered_here || !self.issued.contains_key(&id)) {
                    let result = Ok(Response::Written);
                    self.input(ClientInput::Message(ServerMessage::Reply { id, result }))?;
                }
            }
            Action::Time(millis) => {
                self.now = self.now + Duration::from_millis(millis);
                if self.session.poll_timeout().is_some_and(|at| at <= self.now) {
                    self.session.handle_timeout(self.now);
                    self.drain()?;
                }
            }
            Action::Close if self.closed_at.is_none() => {
                self.closed_at = Some(self.now);
                self.leader.connected = false;
                self.leader.welcomed = false;
                self.input(ClientInput::Close)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The connection ends on the leader's side: what it had not answered is lost with it.
    fn leader_loses_connection(&mut self) -> Result<(), TestCaseError> {
        self.leader.connected = false;
        self.leader.welcomed = false;
        let lost = std::mem::take(&mut self.leader.unanswered);
        self.leader.lost_in_flight.extend(lost);
        self.check_write_order()
    }

    /// The leader answers the `i`-th request it has not answered yet.
    fn reply(&mut self, i: usize, ok: bool) -> Result<(), TestCaseError> {
        let id = self.leader.unanswered.remove(i);
        let result = if ok {
            Ok(Response::Value(Some(id.0.to_le_bytes().to_vec().into())))
        } else {
            Err(ErrorCode::Backend(format!("failed {}", id.0)))
        };
        self.leader.answers.insert(id, result.clone());
        self.input(ClientInput::Message(ServerMessage::Reply { id, result }))
    }

    fn issue(&mut self, id: RequestId, write: Option<Vec<u8>>) {
        let issued = Issued {
            at: self.now,
            write,
            completions: Vec::new(),
        };
        assert!(
            self.issued.insert(id, issued).is_none(),
            "request ids are unique"
        );
    }

    /// On one connection, writes travel in sequence order.
    fn check_write_order(&self) -> Result<(), TestCaseError> {
        let seqs: Vec<u64> = self
            .leader
            .log
            .iter()
            .filter_map(|m| match m {
                ClientMessage::Write { seq, .. } => Some(seq.0),
                _ => None,
            })
            .collect();
        prop_assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "writes out of order: {seqs:?}"
        );
        Ok(())
    }
}

fn run_case(
    retry: bool,
    timeout: Option<Duration>,
    max_in_flight: u32,
    actions: Vec<Action>,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(retry, timeout, max_in_flight);
    for action in actions {
        h.run(action)?;
        h.drain()?;
    }
    h.check_write_order()?;

    // Every write kept one sequence number through all its re-sends, and numbers follow
    // issue order.
    let mut write_seqs = Vec::new();
    for (id, issued) in &h.issued {
        if issued.write.is_some() {
            if let Some(seqs) = h.leader.seqs.get(id) {
                prop_assert_eq!(
                    seqs.len(),
                    1,
                    "{:?} re-sent with another seq: {:?}",
                    id,
                    seqs
                );
                write_seqs.push(*seqs.first().unwrap());
            }
        }
    }
    prop_assert!(write_seqs.windows(2).all(|w| w[0] < w[1]));

    // Settle: if open, connect (again, if connected) and answer everything; then close.
    // Every request ends once.
    if h.closed_at.is_none() {
        h.run(Action::Connect)?;
        h.run(Action::Welcome)?;
        h.drain()?;
        while !h.leader.unanswered.is_empty() {
            h.reply(0, true)?;
        }
        prop_assert_eq!(h.session.pending_requests(), 0, "answered all, yet pending");
        h.run(Action::Close)?;
    }
    for (id, issued) in &h.issued {
        prop_assert_eq!(
            issued.completions.len(),
            1,
            "{:?} completed {:?}",
            id,
            issued.completions
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn with_retry_every_request_completes_exactly_once(
        actions in prop::collection::vec(action(), 0..80),
        timeout in prop::option::of(5u64..50),
        max_in_flight in 1u32..12,
    ) {
        run_case(true, timeout.map(Duration::from_millis), max_in_flight, actions)?;
    }

    #[test]
    fn without_retry_in_flight_requests_fail_with_connection_lost(
        actions in prop::collection::vec(action(), 0..80),
        timeout in prop::option::of(5u64..50),
        max_in_flight in 1u32..12,
    ) {
        run_case(false, timeout.map(Duration::from_millis), max_in_flight, actions)?;
    }
}

/// A leader's welcome, with the default limits.
fn welcome() -> ClientInput {
    welcome_with(|_| {})
}

/// A leader's welcome, with the default limits as `change` leaves them.
fn welcome_with(change: impl FnOnce(&mut party_proto::wire::LeaderLimits)) -> ClientInput {
    ClientInput::Message(support::welcome_with(change))
}

#[test]
fn requests_issued_before_any_leader_wait_also_without_retry() {
    for retry in [true, false] {
        let config = ClientConfig {
            retry,
            ..ClientConfig::default()
        };
        let mut session = ClientSession::new(ClientId(1), config);
        let now = Timestamp::ZERO;
        let id = session.write(
            now,
            WriteOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        );
        // A connection that ends before the leader welcomes it loses nothing.
        session.handle_input(now, ClientInput::Connected);
        let sent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        assert_eq!(sent.len(), 1, "only the hello before the welcome: {sent:?}");
        session.handle_input(now, ClientInput::Disconnected);
        assert_eq!(session.poll_output(), None, "nothing was in flight");
        session.handle_input(now, ClientInput::Connected);
        session.handle_input(now, welcome());
        let sent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        assert_eq!(sent.len(), 2, "hello, then the queued write: {sent:?}");
        session.handle_input(now, ClientInput::Disconnected);
        let after_loss: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        if retry {
            assert!(after_loss.is_empty());
        } else {
            assert_eq!(
                after_loss,
                [ClientOutput::Completed {
                    id,
                    result: Err(ErrorCode::ConnectionLost)
                }]
            );
            continue;
        }
        session.handle_input(now, ClientInput::Connected);
        session.handle_input(now, welcome());
        let resent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        assert!(
            matches!(&resent[1], ClientOutput::Send(ClientMessage::Write { id: i, seq: WriteSeq(1), .. }) if *i == id),
            "re-sent with the same sequence number: {resent:?}"
        );
    }
}

/// A write tells its leader when it was first sent by the wall clock, and a re-send tells
/// the same time, even when the wall clock moved on meanwhile more than the monotonic one
/// (the machine slept); a write first sent after that tells the new time.
#[test]
fn a_write_tells_when_it_was_first_sent_and_a_re_send_tells_the_same() {
    let mut session = ClientSession::new(ClientId(1), ClientConfig::default());
    let at = |ms| Timestamp::from_epoch(std::time::Duration::from_millis(ms));
    let day = std::time::Duration::from_secs(86_400);
    session.set_wall_clock(at(0), day);
    let put = || WriteOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    let first_sent = |outputs: Vec<ClientOutput>| -> Vec<u64> {
        outputs
            .into_iter()
            .filter_map(|output| match output {
                ClientOutput::Send(ClientMessage::Write { first_sent_ms, .. }) => {
                    Some(first_sent_ms)
                }
                _ => None,
            })
            .collect()
    };
    session.handle_input(at(5), ClientInput::Connected);
    session.handle_input(at(5), welcome());
    session.write(at(10), put());
    let sent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
    assert_eq!(first_sent(sent), [86_400_010]);
    // A sleep of an hour: the monotonic clock moved 20 ms, the wall clock an hour more.
    session.handle_input(at(20), ClientInput::Disconnected);
    session.set_wall_clock(at(30), day + std::time::Duration::from_secs(3_600));
    session.handle_input(at(30), ClientInput::Connected);
    session.handle_input(at(30), welcome());
    session.write(at(30), put());
    let sent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
    assert_eq!(first_sent(sent), [86_400_010, 90_000_000]);
}

/// A leader that breaks the protocol fails what is pending (queued or sent) with the
/// error, instead of the client waiting on, or re-sending to, the same leader.
#[test]
fn a_broken_connection_fails_what_is_pending_with_its_error() {
    for retry in [true, false] {
        let config = ClientConfig {
            retry,
            ..ClientConfig::default()
        };
        let mut session = ClientSession::new(ClientId(2), config);
        let now = Timestamp::ZERO;
        let id = session.read(now, ReadOp::Get { key: b"k".to_vec() });
        session.handle_input(now, ClientInput::Connected);
        let _hello: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        let error = ErrorCode::Malformed("garbage".into());
        session.handle_input(now, ClientInput::Broken(error.clone()));
        let outputs: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        assert_eq!(
            outputs,
            [ClientOutput::Completed {
                id,
                result: Err(error)
            }]
        );
        assert_eq!(session.pending_requests(), 0);
        session.handle_input(now, ClientInput::Connected);
        let sent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        assert_eq!(
            sent.len(),
            1,
            "only a hello on the next connection: {sent:?}"
        );
    }
}

/// A write a leader may have taken, on this connection or an earlier one, may have been
/// applied: a connection that then ends in garbage or a refusal, or the handle's failed
/// election, fails it as of unknown outcome, not with the connection's error (which says
/// it was not applied). Reads, and writes never sent, fail with that error.
#[test]
fn a_write_sent_before_a_broken_or_refused_connection_has_an_unknown_outcome() {
    let put = |value: &[u8]| WriteOp::Put {
        key: b"k".to_vec(),
        value: value.to_vec(),
    };
    let now = Timestamp::ZERO;
    let refusal = ErrorCode::TooManyConnections { limit: 1 };
    let garbage = ErrorCode::Malformed("garbage".into());
    let failed = ErrorCode::ElectionFailed(party_proto::election::ElectionFailure::StoreOpen);
    for (end, error) in [
        (ClientInput::Broken(garbage.clone()), garbage),
        (ClientInput::Failed(failed.clone()), failed),
        (
            ClientInput::Message(ServerMessage::Rejected(refusal.clone())),
            refusal,
        ),
    ] {
        let mut session = ClientSession::new(ClientId(3), ClientConfig::default());
        session.handle_input(now, ClientInput::Connected);
        session.handle_input(now, welcome());
        let sent_first = session.write(now, put(b"1"));
        let read = session.read(now, ReadOp::Get { key: b"k".to_vec() });
        session.handle_input(now, ClientInput::Disconnected);
        let queued_then_sent = session.write(now, put(b"2"));
        session.handle_input(now, ClientInput::Connected);
        let sent_second = session.write(now, put(b"3"));
        let _sent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        session.handle_input(now, welcome());
        let _resent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
        session.handle_input(now, ClientInput::Disconnected);
        session.handle_input(now, ClientInput::Connected);
        let never_sent = session.write(now, put(b"4"));
        session.handle_input(now, end);
        let mut results: Vec<_> = std::iter::from_fn(|| session.poll_output())
            .filter_map(|output| match output {
                ClientOutput::Completed { id, result } => Some((id, result)),
                _ => None,
            })
            .collect();
        results.sort_by_key(|(id, _)| *id);
        let unknown = |result: &Result<_, ErrorCode>| matches!(result, Err(ErrorCode::OutcomeUnknown(cause)) if cause.contains(&error.to_string()));
        assert_eq!(results.len(), 5, "{results:?}");
        for (id, result) in &results {
            if [sent_first, queued_then_sent, sent_second].contains(id) {
                assert!(unknown(result), "{id:?} was sent: {result:?}");
            } else {
                assert!([read, never_sent].contains(id));
                assert_eq!(result, &Err(error.clone()), "{id:?}");
            }
        }
    }
}

/// What the session sends, as "w" (a write), "r" (a read), "i" (an iterator's opening).
fn sent_kinds(session: &mut ClientSession) -> String {
    std::iter::from_fn(|| session.poll_output())
        .filter_map(|output| match output {
            ClientOutput::Send(ClientMessage::Write { .. }) => Some('w'),
            ClientOutput::Send(ClientMessage::Read { .. }) => Some('r'),
            ClientOutput::Send(ClientMessage::IterOpen { .. }) => Some('i'),
            _ => None,
        })
        .collect()
}

/// An iterator opens in its place among the requests, whatever holds them back: after
/// those issued before it, before those issued after (its snapshot holds the former and
/// none of the latter): before the welcome, and past the leader's in-flight cap.
#[test]
fn an_iterator_opens_in_its_place_among_the_requests() {
    let now = Timestamp::ZERO;
    let put = || WriteOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    let get = || ReadOp::Get { key: b"k".to_vec() };
    let all = party_proto::IterOptions::default;

    // Issued before any leader welcomed the session.
    let mut session = ClientSession::new(ClientId(4), ClientConfig::default());
    session.write(now, put());
    session.open_iter(all());
    session.read(now, get());
    session.write(now, put());
    session.handle_input(now, ClientInput::Connected);
    session.handle_input(now, welcome());
    assert_eq!(sent_kinds(&mut session), "wirw");

    // Past the leader's cap of two requests in flight.
    let mut session = ClientSession::new(ClientId(5), ClientConfig::default());
    session.handle_input(now, ClientInput::Connected);
    let capped = welcome_with(|limits| limits.max_in_flight = 2);
    session.handle_input(now, capped);
    let first = session.write(now, put());
    session.write(now, put());
    session.write(now, put());
    session.open_iter(all());
    session.write(now, put());
    assert_eq!(sent_kinds(&mut session), "ww", "the cap holds the rest");
    let answered = ClientInput::Message(ServerMessage::Reply {
        id: first,
        result: Ok(Response::Written),
    });
    session.handle_input(now, answered);
    assert_eq!(
        sent_kinds(&mut session),
        "wi",
        "the third write, then the iterator, not the write after it"
    );
}

/// A write sent to a leader, then too large for the next leader's limit, may have been
/// applied by the first: its outcome is unknown. One never sent is just too large.
#[test]
fn a_write_too_large_for_the_next_leader_has_an_unknown_outcome_if_it_was_sent() {
    let now = Timestamp::ZERO;
    let big = || WriteOp::Put {
        key: b"k".to_vec(),
        value: vec![7; 2000],
    };
    let mut session = ClientSession::new(ClientId(6), ClientConfig::default());
    session.handle_input(now, ClientInput::Connected);
    session.handle_input(now, welcome());
    let sent = session.write(now, big());
    assert_eq!(sent_kinds(&mut session), "w");
    session.handle_input(now, ClientInput::Disconnected);
    let never_sent = session.write(now, big());
    session.handle_input(now, ClientInput::Connected);
    let smaller = welcome_with(|limits| limits.max_frame_len = 1024);
    session.handle_input(now, smaller);
    let results: BTreeMap<_, _> = std::iter::from_fn(|| session.poll_output())
        .filter_map(|output| match output {
            ClientOutput::Completed { id, result } => Some((id, result)),
            _ => None,
        })
        .collect();
    assert!(
        matches!(&results[&sent], Err(ErrorCode::OutcomeUnknown(cause)) if cause.contains("too large")),
        "{results:?}"
    );
    assert!(
        matches!(
            &results[&never_sent],
            Err(ErrorCode::FrameTooLarge { max: 1024, .. })
        ),
        "{results:?}"
    );
}

/// The session takes frames as large as its leader sends (the leader sizes its answers by
/// its own limit), and never fewer than its own limit.
#[test]
fn the_incoming_frame_limit_is_the_larger_of_both_ends_once_welcomed() {
    let now = Timestamp::ZERO;
    let config = ClientConfig {
        max_frame_len: 4096,
        ..ClientConfig::default()
    };
    for (leader_limit, taken) in [(1 << 20, 1 << 20), (1024, 4096)] {
        let mut session = ClientSession::new(ClientId(7), config.clone());
        session.handle_input(now, ClientInput::Connected);
        assert_eq!(session.incoming_frame_limit(), 4096, "before the welcome");
        let welcomed = welcome_with(|limits| limits.max_frame_len = leader_limit);
        session.handle_input(now, welcomed);
        assert_eq!(session.incoming_frame_limit(), taken);
        session.handle_input(now, ClientInput::Disconnected);
        assert_eq!(session.incoming_frame_limit(), 4096, "its leader gone");
    }
}

/// Which pending requests are writes a leader may have taken: a write sent on this
/// connection or an earlier one; not a read, nor a write never sent.
#[test]
fn a_write_counts_as_sent_from_its_first_sending_on() {
    let now = Timestamp::ZERO;
    let put = || WriteOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    let mut session = ClientSession::new(ClientId(8), ClientConfig::default());
    let queued = session.write(now, put());
    assert!(!session.write_sent(queued), "waiting for a leader");
    session.handle_input(now, ClientInput::Connected);
    session.handle_input(now, welcome());
    let read = session.read(now, ReadOp::Get { key: b"k".to_vec() });
    assert!(session.write_sent(queued));
    assert!(!session.write_sent(read), "a read");
    session.handle_input(now, ClientInput::Disconnected);
    let later = session.write(now, put());
    assert!(session.write_sent(queued), "sent on an earlier connection");
    assert!(!session.write_sent(later), "never sent");
}

/// What a follower's caller does, and what a leader that breaks the protocol sends it:
/// answers to ids it never got or already answered, entries for iterators it never opened,
/// welcomes of other versions, values in a ring never offered.
#[derive(Debug, Clone)]
enum Hostile {
    Read,
    Write,
    OpenIter(party_proto::IterOptions),
    /// A take from, or the close of, one of the iterators opened.
    IterTake(prop::sample::Index),
    IterClose(prop::sample::Index),
    OpenWatch(Option<u64>),
    WatchTake(prop::sample::Index),
    WatchClose(prop::sample::Index),
    Connect,
    Disconnect,
    Broken,
    Message(ServerMessage),
    /// An answer to one of the requests issued, pending or not.
    ReplyTo(prop::sample::Index, Result<Response, ErrorCode>),
    Time(u64),
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        3 => Just(Hostile::Read),
        3 => Just(Hostile::Write),
        1 => support::iter_options().prop_map(Hostile::OpenIter),
        2 => index().prop_map(Hostile::IterTake),
        1 => index().prop_map(Hostile::IterClose),
        1 => prop::option::of(0u64..20).prop_map(Hostile::OpenWatch),
        2 => index().prop_map(Hostile::WatchTake),
        1 => index().prop_map(Hostile::WatchClose),
        1 => Just(Hostile::Connect),
        1 => Just(Hostile::Message(support::welcome())),
        1 => Just(Hostile::Disconnect),
        1 => Just(Hostile::Broken),
        8 => support::server_message().prop_map(|m| Hostile::Message(support::among_known_ids(m))),
        4 => (index(), support::reply_result()).prop_map(|(i, result)| Hostile::ReplyTo(i, result)),
        1 => (0u64..30).prop_map(Hostile::Time),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever its leader sends, a follower's session does not panic, answers each request
    /// once at most, and once closed has answered every one. It starts connected and
    /// welcomed, so that what the leader sends meets requests in flight.
    #[test]
    fn a_leader_that_breaks_the_protocol_never_panics_its_follower(
        steps in prop::collection::vec(hostile(), 0..60),
        retry in any::<bool>(),
        timeout in prop::option::of(5u64..50),
    ) {
        let config = ClientConfig {
            retry,
            request_timeout: timeout.map(Duration::from_millis),
            ..ClientConfig::default()
        };
        let mut session = ClientSession::new(ClientId(7), config);
        let mut now = Timestamp::ZERO;
        session.handle_input(now, ClientInput::Connected);
        session.handle_input(now, welcome());
        let (mut issued, mut iters, mut watches) = (Vec::new(), Vec::new(), Vec::new());
        let mut completed = BTreeSet::new();
        for step in steps {
            match step {
                Hostile::Read => issued.push(session.read(now, ReadOp::Get { key: b"k".to_vec() })),
                Hostile::Write => {
                    let put = WriteOp::Put { key: b"k".to_vec(), value: b"v".to_vec() };
                    issued.push(session.write(now, put));
                }
                Hostile::OpenIter(options) => iters.push(session.open_iter(options)),
                Hostile::IterTake(i) if !iters.is_empty() => {
                    drop(session.iter_take(now, *i.get(&iters), 3));
                }
                Hostile::IterClose(i) if !iters.is_empty() => session.close_iter(*i.get(&iters)),
                Hostile::OpenWatch(from) => {
                    let from = from.map(party_proto::CommitSeq);
                    watches.push(session.open_watch(party_proto::KeyRange::all(), from));
                }
                Hostile::WatchTake(i) if !watches.is_empty() => {
                    drop(session.watch_take(*i.get(&watches), 3));
                }
                Hostile::WatchClose(i) if !watches.is_empty() => session.close_watch(*i.get(&watches)),
                Hostile::Connect => session.handle_input(now, ClientInput::Connected),
                Hostile::Disconnect => session.handle_input(now, ClientInput::Disconnected),
                Hostile::Broken => {
                    session.handle_input(now, ClientInput::Broken(ErrorCode::Malformed("garbage".into())))
                }
                Hostile::Message(message) => session.handle_input(now, ClientInput::Message(message)),
                Hostile::ReplyTo(i, result) if !issued.is_empty() => {
                    let reply = ServerMessage::Reply { id: *i.get(&issued), result };
                    session.handle_input(now, ClientInput::Message(reply));
                }
                Hostile::Time(millis) => {
                    now = now + Duration::from_millis(millis);
                    session.handle_timeout(now);
                }
                Hostile::IterTake(_)
                | Hostile::IterClose(_)
                | Hostile::WatchTake(_)
                | Hostile::WatchClose(_)
                | Hostile::ReplyTo(..) => {}
            }
            answered(&mut session, &mut completed)?;
        }
        session.handle_input(now, ClientInput::Close);
        answered(&mut session, &mut completed)?;
        prop_assert_eq!(completed, issued.into_iter().collect(), "answered, against issued");
        prop_assert_eq!(session.pending_requests(), 0);
    }
}

/// Takes the session's outputs, failing if a request completes a second time.
fn answered(
    session: &mut ClientSession,
    completed: &mut BTreeSet<RequestId>,
) -> Result<(), TestCaseError> {
    while let Some(output) = session.poll_output() {
        if let ClientOutput::Completed { id, .. } = output {
            prop_assert!(completed.insert(id), "{id:?} completed twice");
        }
    }
    Ok(())
}

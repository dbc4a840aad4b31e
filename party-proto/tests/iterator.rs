//! Iterators across failovers: whatever the keys, the range, the direction, the limit,
//! where the connection drops and how grants and entries cross on it, the caller receives
//! exactly the expected entries in order, and the session never grants past its windows.

mod support;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use party_proto::wire::{ClientMessage, Entry, ServerMessage};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, IterId, IterOptions,
    IterPoll, Timestamp,
};
use proptest::prelude::*;
use support::{edge_key, iter_options, welcome};

/// The range semantics written out independently of `KeyRange`.
fn expected(keys: &BTreeSet<Vec<u8>>, options: &IterOptions) -> Vec<Vec<u8>> {
    let after_start = |k: &Vec<u8>| match &options.range.start {
        Bound::Unbounded => true,
        Bound::Included(s) => k >= s,
        Bound::Excluded(s) => k > s,
    };
    let before_end = |k: &Vec<u8>| match &options.range.end {
        Bound::Unbounded => true,
        Bound::Included(e) => k <= e,
        Bound::Excluded(e) => k < e,
    };
    let mut selected: Vec<Vec<u8>> = keys
        .iter()
        .filter(|k| after_start(k) && before_end(k))
        .cloned()
        .collect();
    if options.reverse {
        selected.reverse();
    }
    if let Some(limit) = options.limit {
        selected.truncate(limit as usize);
    }
    selected
}

fn value_of(key: &[u8]) -> Vec<u8> {
    [b"v:", key].concat()
}

#[derive(Debug, Clone)]
enum Action {
    /// The leader sends up to this many entries of its open iterator.
    Send(usize),
    /// The leader reads what the client sent it.
    Deliver,
    /// The client reads up to this many of the leader's messages.
    Receive(usize),
    /// The caller takes up to this many entries.
    Take(usize),
    /// The leader dies; a new one is connected at once or later.
    Disconnect,
    Connect,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1usize..6).prop_map(Action::Send),
        3 => Just(Action::Deliver),
        3 => (1usize..4).prop_map(Action::Receive),
        4 => (1usize..6).prop_map(Action::Take),
        1 => Just(Action::Disconnect),
        1 => Just(Action::Connect),
    ]
}

/// The leader's side of the one iterator: what is left to send and the credits, entries
/// and bytes, as far as the grants it has read say.
#[derive(Debug)]
struct LeaderIter {
    left: VecDeque<Vec<u8>>,
    credits: u64,
    /// Below zero when the entries sent passed the bytes by the last one.
    bytes: i128,
}

/// A client session and a leader whose messages cross on the connection: grants reach the
/// leader while entries it sent before them are on their way.
struct Harness {
    keys: BTreeSet<Vec<u8>>,
    session: ClientSession,
    iter: IterId,
    window: u32,
    window_bytes: u64,
    connected: bool,
    to_leader: VecDeque<ClientMessage>,
    to_client: VecDeque<ServerMessage>,
    /// Entries and bytes the client granted on this connection and has not received: the
    /// leader may hold them as credits yet, or have them on their way.
    outstanding: i128,
    outstanding_bytes: i128,
    /// The sizes of the entries the session has received and the caller not taken.
    held: VecDeque<u64>,
    /// The session has received the iteration's end.
    ended: bool,

    leader: HashMap<IterId, LeaderIter>,
    delivered: Vec<Entry>,
    done: bool,
}

impl Harness {
    /// Checks what the session sends against the windows, and puts it on its way.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(output) = self.session.poll_output() {
            let ClientOutput::Send(message) = output else {
                continue;
            };
            prop_assert!(self.connected, "sent with no connection");
            match &message {
                ClientMessage::IterOpen { credits, bytes, .. } => {
                    prop_assert!(*credits <= self.window);
                    prop_assert!(
                        *bytes <= self.window_bytes.max(1),
                        "opened past the byte window"
                    );
                    self.outstanding = i128::from(*credits);
                    self.outstanding_bytes = i128::from(*bytes);
                }
                ClientMessage::IterNext { credits, bytes, .. } => {
                    self.outstanding += i128::from(*credits);
                    self.outstanding_bytes += i128::from(*bytes);
                    let held = self.held.len() as i128;
                    let held_bytes: u64 = self.held.iter().sum();
                    // Whatever the leader still holds as credits, or has on its way, the
                    // session may come to hold on top of what it holds: at every grant,
                    // of either, both fit their windows.
                    prop_assert!(
                        self.outstanding + held <= i128::from(self.window),
                        "granted {credits}: {} outstanding and {held} held, past the window",
                        self.outstanding
                    );
                    prop_assert!(
                        self.outstanding_bytes + i128::from(held_bytes)
                            <= i128::from(self.window_bytes.max(1)),
                        "granted {bytes} bytes: {} outstanding and {held_bytes} held, past \
                         the byte window",
                        self.outstanding_bytes
                    );
                }
                ClientMessage::Hello(_) | ClientMessage::IterClose { .. } => {}
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            self.to_leader.push_back(message);
        }
        Ok(())
    }

    /// The leader reads everything the client sent.
    fn deliver(&mut self) -> Result<(), TestCaseError> {
        while let Some(message) = self.to_leader.pop_front() {
            match message {
                ClientMessage::IterOpen {
                    iter,
                    options,
                    credits,
                    bytes,
                } => {
                    let left = expected(&self.keys, &options).into();
                    let opened = LeaderIter {
                        left,
                        credits: u64::from(credits),
                        bytes: i128::from(bytes),
                    };
                    prop_assert!(self.leader.insert(iter, opened).is_none(), "opened twice");
                }
                ClientMessage::IterNext {
                    iter,
                    credits,
                    bytes,
                } => {
                    // An iteration the leader has ended already needs no more.
                    if let Some(open) = self.leader.get_mut(&iter) {
                        open.credits += u64::from(credits);
                        open.bytes += i128::from(bytes);
                    }
                }
                ClientMessage::IterClose { iter } => {
                    self.leader.remove(&iter);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The client reads up to `n` of the leader's messages.
    fn receive(&mut self, n: usize) -> Result<(), TestCaseError> {
        for _ in 0..n {
            let Some(message) = self.to_client.pop_front() else {
                break;
            };
            match &message {
                ServerMessage::IterData { entries, .. } => {
                    for entry in entries {
                        self.outstanding -= 1;
                        self.outstanding_bytes -= i128::from(entry.len_bound());
                        self.held.push_back(entry.len_bound());
                    }
                }
                ServerMessage::IterEnd { .. } => self.ended = true,
                _ => {}
            }
            self.session
                .handle_input(Timestamp::ZERO, ClientInput::Message(message));
            self.drain()?;
        }
        Ok(())
    }

    fn run(&mut self, action: Action) -> Result<(), TestCaseError> {
        match action {
            Action::Send(n) if self.connected => {
                let Some(open) = self.leader.get_mut(&self.iter) else {
                    return Ok(());
                };
                // As the leader's pulls: none after the entry that uses the bytes up.
                let mut entries = Vec::new();
                let mut sent_bytes = 0;
                while entries.len() < n.min(open.credits as usize)
                    && i128::from(sent_bytes) < open.bytes
                {
                    let Some(key) = open.left.pop_front() else {
                        break;
                    };
                    let entry = Entry {
                        value: value_of(&key),
                        key,
                    };
                    sent_bytes += entry.len_bound();
                    entries.push(entry);
                }
                open.credits -= entries.len() as u64;
                open.bytes -= i128::from(sent_bytes);
                let ended = open.left.is_empty();
                let iter = self.iter;
                if !entries.is_empty() {
                    self.to_client
                        .push_back(ServerMessage::IterData { iter, entries });
                }
                if ended {
                    self.leader.remove(&iter);
                    self.to_client.push_back(ServerMessage::IterEnd { iter });
                }
            }
            Action::Deliver if self.connected => self.deliver()?,
            Action::Receive(n) if self.connected => self.receive(n)?,
            Action::Take(n) if !self.done => {
                match self.session.iter_take(Timestamp::ZERO, self.iter, n) {
                    IterPoll::Entries(entries) => {
                        prop_assert!(!entries.is_empty() && entries.len() <= n);
                        self.held.drain(..entries.len());
                        self.delivered.extend(entries);
                        self.drain()?;
                    }
                    IterPoll::Pending => {}
                    IterPoll::Done => self.done = true,
                    IterPoll::Failed(error) => prop_assert!(false, "failed: {error}"),
                }
            }
            Action::Disconnect if self.connected => {
                self.connected = false;
                self.leader.clear();
                self.to_leader.clear();
                self.to_client.clear();
                if !self.ended {
                    // Dropped, to be read again from the next leader (once the session
                    // has the iteration's end, it keeps what it holds).
                    self.held.clear();
                }
                self.session
                    .handle_input(Timestamp::ZERO, ClientInput::Disconnected);
                self.drain()?;
            }
            Action::Connect if !self.connected => {
                self.connected = true;
                self.session
                    .handle_input(Timestamp::ZERO, ClientInput::Connected);
                self.drain()?;
                self.session
                    .handle_input(Timestamp::ZERO, ClientInput::Message(welcome()));
                self.drain()?;
            }
            _ => {}
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_entry_in_range_once_in_order_across_failovers(
        keys in prop::collection::btree_set(edge_key(), 0..24),
        options in iter_options(),
        window in 1u32..8,
        window_bytes in prop_oneof![Just(u64::MAX), 1u64..48],
        connect_first in any::<bool>(),
        actions in prop::collection::vec(action(), 0..120),
    ) {
        let config = ClientConfig {
            iter_window: window,
            iter_window_bytes: window_bytes,
            ..ClientConfig::default()
        };
        let mut session = ClientSession::new(ClientId(3), config);
        let iter = session.open_iter(options.clone());
        let mut h = Harness {
            keys,
            session,
            iter,
            window,
            window_bytes,
            connected: false,
            to_leader: VecDeque::new(),
            to_client: VecDeque::new(),
            outstanding: 0,
            outstanding_bytes: 0,
            held: VecDeque::new(),
            ended: false,

            leader: HashMap::new(),
            delivered: Vec::new(),
            done: false,
        };
        if connect_first {
            h.run(Action::Connect)?;
        }
        for action in actions {
            h.run(action)?;
        }
        // Settle on a last leader that stays.
        h.run(Action::Connect)?;
        let mut rounds = 0;
        while !h.done {
            h.run(Action::Deliver)?;
            h.run(Action::Send(5))?;
            h.run(Action::Receive(usize::MAX))?;
            h.run(Action::Take(5))?;
            rounds += 1;
            prop_assert!(rounds < 1000, "iterator never finished");
        }

        let want = expected(&h.keys, &options);
        prop_assert_eq!(h.delivered.len(), want.len(), "count differs: {:?}", h.delivered);
        for (entry, key) in h.delivered.iter().zip(&want) {
            let want_key = if options.keys { key.clone() } else { Vec::new() };
            let want_value = if options.values { value_of(key) } else { Vec::new() };
            prop_assert_eq!(&entry.key, &want_key);
            prop_assert_eq!(&entry.value, &want_value);
        }
    }
}

/// A client session with `config`, connected and welcomed, and an iterator over
/// everything opened on it.
fn iterating(config: ClientConfig) -> (ClientSession, IterId) {
    let mut session = ClientSession::new(ClientId(4), config);
    let iter = session.open_iter(IterOptions::default());
    session.handle_input(Timestamp::ZERO, ClientInput::Connected);
    session.handle_input(Timestamp::ZERO, ClientInput::Message(welcome()));
    (session, iter)
}

#[test]
fn without_retry_a_lost_connection_fails_the_iterator() {
    let config = ClientConfig {
        retry: false,
        ..ClientConfig::default()
    };
    let (mut session, iter) = iterating(config);
    let now = Timestamp::ZERO;
    let entries = vec![Entry {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
    }];
    session.handle_input(
        now,
        ClientInput::Message(ServerMessage::IterData { iter, entries }),
    );
    session.handle_input(now, ClientInput::Disconnected);
    assert_eq!(
        session.iter_take(now, iter, 10),
        IterPoll::Failed(party_proto::ErrorCode::ConnectionLost),
        "buffered entries from another snapshot are not handed out"
    );
}

/// A leader that sends more entries than the iterator's credits (a buggy one: the buffer
/// would grow as long as it sent) fails the iterator `Malformed`, and is told to drop its
/// side; what the credits allowed is taken in as ever.
#[test]
fn entries_past_the_credits_fail_the_iterator() {
    let config = ClientConfig {
        iter_window: 4,
        ..ClientConfig::default()
    };
    let (mut session, iter) = iterating(config);
    std::iter::from_fn(|| session.poll_output()).for_each(drop);
    let now = Timestamp::ZERO;
    let entries = |count: usize| -> Vec<Entry> {
        (0..count)
            .map(|n| Entry {
                key: vec![n as u8],
                value: Vec::new(),
            })
            .collect()
    };
    let sent = |session: &mut ClientSession, count: usize| {
        let data = ServerMessage::IterData {
            iter,
            entries: entries(count),
        };
        session.handle_input(now, ClientInput::Message(data));
        std::iter::from_fn(|| session.poll_output()).collect::<Vec<_>>()
    };
    let outputs = sent(&mut session, 3);
    assert!(
        !outputs.iter().any(|o| matches!(o, ClientOutput::Send(_))),
        "{outputs:?}"
    );
    let outputs = sent(&mut session, 2);
    assert!(
        outputs.contains(&ClientOutput::Send(ClientMessage::IterClose { iter })),
        "{outputs:?}"
    );
    assert!(matches!(
        session.iter_take(now, iter, 10),
        IterPoll::Failed(party_proto::ErrorCode::Malformed(text)) if text.contains("credits")
    ));
}

/// An iterator's window counts bytes as well as entries: big values use up the bytes, small
/// ones the entries, and each grant, once the caller has taken half a window of either,
/// fills both again.
#[test]
fn the_window_counts_bytes_and_entries() {
    let config = ClientConfig {
        iter_window: 4096,
        iter_window_bytes: 128 << 10,
        ..ClientConfig::default()
    };
    let (mut session, iter) = iterating(config);
    let now = Timestamp::ZERO;
    let grants = |session: &mut ClientSession| -> Vec<(u32, u64)> {
        std::iter::from_fn(|| session.poll_output())
            .filter_map(|output| match output {
                ClientOutput::Send(ClientMessage::IterOpen { credits, bytes, .. })
                | ClientOutput::Send(ClientMessage::IterNext { credits, bytes, .. }) => {
                    Some((credits, bytes))
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(grants(&mut session), [(4096, 128 << 10)]);
    let send_and_take = |session: &mut ClientSession, count: usize, value_len: usize| -> u64 {
        let entries: Vec<Entry> = (0..count)
            .map(|n| Entry {
                key: format!("{n:08}").into_bytes(),
                value: vec![b'v'; value_len],
            })
            .collect();
        let bytes = entries.iter().map(Entry::len_bound).sum();
        let message = ServerMessage::IterData { iter, entries };
        session.handle_input(now, ClientInput::Message(message));
        assert!(matches!(
            session.iter_take(now, iter, usize::MAX),
            IterPoll::Entries(taken) if taken.len() == count
        ));
        bytes
    };
    // 4 KiB values: the 32nd passes the 128 KiB (a pull may pass them by one entry).
    // Taken, they are half the bytes and more: a grant of 32 entries and of the bytes
    // they took, what they passed the window by included (the leader owes it).
    let big = send_and_take(&mut session, 32, 4096);
    assert!(big > 128 << 10 && big - 4124 < 128 << 10, "{big} bytes");
    assert_eq!(grants(&mut session), [(32, big)]);
    // Small entries: not half a window of either yet, no grant.
    let small = send_and_take(&mut session, 10, 0);
    assert_eq!(grants(&mut session), []);
    // Half the entries: 2048 more, and the bytes they and the 10 before used.
    let more = send_and_take(&mut session, 2038, 0);
    assert!(
        small + more < 64 << 10,
        "entries, not bytes, come to half first"
    );
    assert_eq!(grants(&mut session), [(2048, small + more)]);
}

/// With a request timeout, a caller that waits that long for an iterator's next entries
/// gets `TimedOut`, and the leader is told to drop its side; the wait starts at the take
/// that found nothing, not at the opening, and entries that came in time are handed over
/// even when the deadline passes before the caller takes them.
#[test]
fn a_caller_waiting_its_request_timeout_for_entries_times_out() {
    let (mut session, iter) = iterating_with_a_timeout();
    std::iter::from_fn(|| session.poll_output()).for_each(drop);
    let at = |ms: u64| Timestamp::ZERO + Duration::from_millis(ms);
    let entry = |key: &str| Entry {
        key: key.as_bytes().to_vec(),
        value: Vec::new(),
    };
    assert_eq!(session.poll_timeout(), None, "nobody waits yet");

    // Waiting from 50 ms; entries at 120 ms, not taken before the deadline at 150.
    assert_eq!(session.iter_take(at(50), iter, 1), IterPoll::Pending);
    assert_eq!(session.poll_timeout(), Some(at(150)));
    let data = ServerMessage::IterData {
        iter,
        entries: vec![entry("a"), entry("b")],
    };
    session.handle_input(at(120), ClientInput::Message(data));
    session.handle_timeout(at(150));
    assert_eq!(
        session.iter_take(at(160), iter, 1),
        IterPoll::Entries(vec![entry("a")])
    );
    assert_eq!(session.poll_timeout(), None, "the wait ended with entries");
    assert_eq!(
        session.iter_take(at(170), iter, 1),
        IterPoll::Entries(vec![entry("b")])
    );
    std::iter::from_fn(|| session.poll_output()).for_each(drop);

    // A new wait from 200 ms: not over at 299, over at 300.
    assert_eq!(session.iter_take(at(200), iter, 1), IterPoll::Pending);
    assert_eq!(session.iter_take(at(250), iter, 1), IterPoll::Pending);
    assert_eq!(
        session.poll_timeout(),
        Some(at(300)),
        "a wait, however many takes"
    );
    session.handle_timeout(at(299));
    assert_eq!(session.poll_output(), None);
    session.handle_timeout(at(300));
    let outputs: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
    assert_eq!(
        outputs,
        [
            ClientOutput::Send(ClientMessage::IterClose { iter }),
            ClientOutput::IterReady { iter },
        ]
    );
    assert_eq!(
        session.iter_take(at(301), iter, 1),
        IterPoll::Failed(party_proto::ErrorCode::TimedOut)
    );
    assert_eq!(session.poll_timeout(), None);
}

/// Without a request timeout a caller waits for an iterator's entries for ever.
#[test]
fn without_a_request_timeout_an_iterator_waits() {
    let (mut session, iter) = iterating(ClientConfig::default());
    assert_eq!(
        session.iter_take(Timestamp::ZERO, iter, 1),
        IterPoll::Pending
    );
    assert_eq!(session.poll_timeout(), None);
}

/// An iterator cut off by a failover times out like any other wait: with no leader to
/// tell, nothing is sent, and it is not opened again on the next leader.
#[test]
fn an_iterator_waiting_through_a_failover_times_out_and_is_not_reopened() {
    let (mut session, iter) = iterating_with_a_timeout();
    let at = |ms: u64| Timestamp::ZERO + Duration::from_millis(ms);
    assert_eq!(session.iter_take(at(0), iter, 1), IterPoll::Pending);
    session.handle_input(at(10), ClientInput::Disconnected);
    std::iter::from_fn(|| session.poll_output()).for_each(drop);
    session.handle_timeout(at(100));
    assert_eq!(
        std::iter::from_fn(|| session.poll_output()).collect::<Vec<_>>(),
        [ClientOutput::IterReady { iter }]
    );
    session.handle_input(at(110), ClientInput::Connected);
    session.handle_input(at(110), ClientInput::Message(welcome()));
    let sent: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
    assert!(
        !sent
            .iter()
            .any(|output| matches!(output, ClientOutput::Send(ClientMessage::IterOpen { .. }))),
        "{sent:?}"
    );
    assert_eq!(
        session.iter_take(at(120), iter, 1),
        IterPoll::Failed(party_proto::ErrorCode::TimedOut)
    );
}

/// A caller that closes the iterator it waited on is not waited for any more.
#[test]
fn closing_an_iterator_ends_its_wait() {
    let (mut session, iter) = iterating_with_a_timeout();
    assert_eq!(
        session.iter_take(Timestamp::ZERO, iter, 1),
        IterPoll::Pending
    );
    assert!(session.poll_timeout().is_some());
    session.close_iter(iter);
    assert_eq!(session.poll_timeout(), None);
}

/// [`iterating`], with a request timeout of 100 ms.
fn iterating_with_a_timeout() -> (ClientSession, IterId) {
    iterating(ClientConfig {
        request_timeout: Some(Duration::from_millis(100)),
        ..ClientConfig::default()
    })
}

/// The commit an iteration's snapshot follows is the first opening's: the rest of an
/// iteration resumed after a failover reads a later snapshot, and taking that one's
/// commit would tell a subscriber following on from it that nothing between the two was
/// missed. Without a first commit (the log could not be read), none is taken later once
/// entries were handed out.
#[test]
fn an_iterations_commit_is_its_first_openings() {
    use party_proto::CommitSeq;
    for first in [Some(CommitSeq(5)), None] {
        let (mut session, iter) = iterating(ClientConfig::default());
        let now = Timestamp::ZERO;
        let leader_says = |session: &mut ClientSession, message: ServerMessage| {
            session.handle_input(now, ClientInput::Message(message));
        };
        let entry = |key: &[u8]| Entry {
            key: key.to_vec(),
            value: b"1".to_vec(),
        };
        if let Some(seq) = first {
            leader_says(&mut session, ServerMessage::IterAt { iter, seq });
        }
        let entries = vec![entry(b"a")];
        leader_says(&mut session, ServerMessage::IterData { iter, entries });
        assert!(matches!(
            session.iter_take(now, iter, 1),
            IterPoll::Entries(_)
        ));
        assert_eq!(session.iter_at(iter), first);

        session.handle_input(now, ClientInput::Disconnected);
        session.handle_input(now, ClientInput::Connected);
        session.handle_input(now, ClientInput::Message(welcome()));
        let reopened = std::iter::from_fn(|| session.poll_output()).any(|output| {
            matches!(output, ClientOutput::Send(ClientMessage::IterOpen { iter: i, .. }) if i == iter)
        });
        assert!(reopened, "the iteration goes on on the next leader");
        let later = CommitSeq(9);
        leader_says(&mut session, ServerMessage::IterAt { iter, seq: later });
        let entries = vec![entry(b"b")];
        leader_says(&mut session, ServerMessage::IterData { iter, entries });
        assert!(matches!(
            session.iter_take(now, iter, 1),
            IterPoll::Entries(_)
        ));
        assert_eq!(session.iter_at(iter), first, "not the resumed snapshot's");
    }
}

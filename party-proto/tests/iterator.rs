//! Iterators across failovers: whatever the keys, the range, the direction, the limit and
//! where the connection drops, the caller receives exactly the expected entries in order.

mod support;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Bound;

use party_proto::wire::{ClientMessage, Entry, ProtocolId, ServerMessage, Welcome};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, IterId, IterOptions,
    IterPoll, Timestamp,
};
use proptest::prelude::*;
use support::{edge_key, iter_options};

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
    /// The caller takes up to this many entries.
    Take(usize),
    /// The leader dies; a new one is connected at once or later.
    Disconnect,
    Connect,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (1usize..6).prop_map(Action::Send),
        4 => (1usize..6).prop_map(Action::Take),
        1 => Just(Action::Disconnect),
        1 => Just(Action::Connect),
    ]
}

/// The leader's side of the one iterator: what is left to send and the credits.
#[derive(Debug)]
struct LeaderIter {
    left: VecDeque<Vec<u8>>,
    credits: u64,
}

struct Harness {
    keys: BTreeSet<Vec<u8>>,
    session: ClientSession,
    iter: IterId,
    window: u32,
    window_bytes: u64,
    connected: bool,
    /// Entries the session has received and the caller not taken.
    held: u64,
    /// The leader has sent the iteration's end.
    ended: bool,
    /// The entries' mean size, each message's mean counting for half.
    entry_bytes: Option<u64>,
    leader: HashMap<IterId, LeaderIter>,
    delivered: Vec<Entry>,
    done: bool,
}

impl Harness {
    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(output) = self.session.poll_output() {
            let ClientOutput::Send(message) = output else {
                continue;
            };
            prop_assert!(self.connected, "sent with no connection");
            match message {
                ClientMessage::Hello(_) => {}
                ClientMessage::IterOpen {
                    iter,
                    options,
                    credits,
                } => {
                    prop_assert!(credits <= self.window);
                    prop_assert!(
                        u64::from(credits) <= self.sized_window(),
                        "opened with {credits} credits, past the window in bytes"
                    );
                    let left = expected(&self.keys, &options).into();
                    let opened = LeaderIter {
                        left,
                        credits: u64::from(credits),
                    };
                    prop_assert!(self.leader.insert(iter, opened).is_none(), "opened twice");
                }
                ClientMessage::IterNext { iter, credits } => {
                    let sized_window = self.sized_window();
                    if let Some(open) = self.leader.get_mut(&iter) {
                        open.credits += u64::from(credits);
                        prop_assert!(
                            open.credits <= u64::from(self.window),
                            "granted past the window"
                        );
                        prop_assert!(
                            open.credits + self.held <= sized_window,
                            "granted {credits}: {} on their way and {} held, past the window in \
                             bytes (entries of {:?} bytes)",
                            open.credits,
                            self.held,
                            self.entry_bytes
                        );
                    }
                }
                ClientMessage::IterClose { iter } => {
                    self.leader.remove(&iter);
                }
                other => prop_assert!(false, "unexpected {other:?}"),
            }
        }
        Ok(())
    }

    /// The entries that fit the window in bytes at the entries' mean size (before any has
    /// come, at most `UNSIZED_WINDOW`), written out apart from the cursor's.
    fn sized_window(&self) -> u64 {
        let window = u64::from(self.window);
        match self.entry_bytes {
            None => window.min(u64::from(party_proto::client::UNSIZED_WINDOW)),
            Some(mean) => window.min(self.window_bytes / mean).max(1),
        }
    }

    fn input(&mut self, input: ClientInput) -> Result<(), TestCaseError> {
        self.session.handle_input(Timestamp::ZERO, input);
        self.drain()
    }

    fn run(&mut self, action: Action) -> Result<(), TestCaseError> {
        match action {
            Action::Send(n) if self.connected => {
                let Some(open) = self.leader.get_mut(&self.iter) else {
                    return Ok(());
                };
                let count = n.min(open.left.len()).min(open.credits as usize);
                let entries: Vec<Entry> = open
                    .left
                    .drain(..count)
                    .map(|key| Entry {
                        value: value_of(&key),
                        key,
                    })
                    .collect();
                open.credits -= count as u64;
                self.held += count as u64;
                if count > 0 {
                    let bytes: u64 = entries.iter().map(Entry::len_bound).sum();
                    let mean = bytes.div_ceil(count as u64);
                    self.entry_bytes = Some(match self.entry_bytes {
                        Some(before) => (before + mean) / 2,
                        None => mean,
                    });
                }
                let ended = open.left.is_empty();
                if count > 0 {
                    let iter = self.iter;
                    self.input(ClientInput::Message(ServerMessage::IterData {
                        iter,
                        entries,
                    }))?;
                }
                if ended {
                    self.ended = true;
                    self.leader.remove(&self.iter);
                    let iter = self.iter;
                    self.input(ClientInput::Message(ServerMessage::IterEnd { iter }))?;
                }
            }
            Action::Take(n) if !self.done => match self.session.iter_take(self.iter, n) {
                IterPoll::Entries(entries) => {
                    prop_assert!(!entries.is_empty() && entries.len() <= n);
                    self.held -= entries.len() as u64;
                    self.delivered.extend(entries);
                    self.drain()?;
                }
                IterPoll::Pending => {}
                IterPoll::Done => self.done = true,
                IterPoll::Failed(error) => prop_assert!(false, "failed: {error}"),
            },
            Action::Disconnect if self.connected => {
                self.connected = false;
                self.leader.clear();
                if !self.ended {
                    // Dropped, to be read again from the next leader (once the leader
                    // has ended the iteration, the session keeps what it holds).
                    self.held = 0;
                }
                self.input(ClientInput::Disconnected)?;
            }
            Action::Connect if !self.connected => {
                self.connected = true;
                self.input(ClientInput::Connected)?;
                self.input(ClientInput::Message(welcome()))?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a leader says once it has taken a connection's hello.
fn welcome() -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        protocol: ProtocolId::CURRENT,
        leader_pid: 1,
        term: 1,
        store: "fjall".into(),
        limits: party_proto::ServerConfig::default().limits(),
    })
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
            held: 0,
            ended: false,
            entry_bytes: None,
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
            h.run(Action::Send(5))?;
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

#[test]
fn without_retry_a_lost_connection_fails_the_iterator() {
    let config = ClientConfig {
        retry: false,
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(ClientId(4), config);
    let now = Timestamp::ZERO;
    let iter = session.open_iter(IterOptions::default());
    session.handle_input(now, ClientInput::Connected);
    session.handle_input(now, ClientInput::Message(welcome()));
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
        session.iter_take(iter, 10),
        IterPoll::Failed(party_proto::ErrorCode::ConnectionLost),
        "buffered entries from another snapshot are not handed out"
    );
}

/// Big values get few credits, small ones the whole window: before any entry has come an
/// iterator grants at most `UNSIZED_WINDOW`; after, as many entries as its window in bytes
/// holds at their mean size.
#[test]
fn the_window_is_sized_by_the_entries_bytes() {
    let config = ClientConfig {
        iter_window: 4096,
        iter_window_bytes: 64 << 10,
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(ClientId(5), config);
    let now = Timestamp::ZERO;
    let iter = session.open_iter(IterOptions::default());
    session.handle_input(now, ClientInput::Connected);
    session.handle_input(now, ClientInput::Message(welcome()));
    let grants = |session: &mut ClientSession| -> Vec<u32> {
        std::iter::from_fn(|| session.poll_output())
            .filter_map(|output| match output {
                ClientOutput::Send(ClientMessage::IterOpen { credits, .. })
                | ClientOutput::Send(ClientMessage::IterNext { credits, .. }) => Some(credits),
                _ => None,
            })
            .collect()
    };
    assert_eq!(grants(&mut session), [party_proto::client::UNSIZED_WINDOW]);
    let send_and_take = |session: &mut ClientSession, count: usize, value_len: usize| {
        let entries: Vec<Entry> = (0..count)
            .map(|n| Entry {
                key: format!("{n:08}").into_bytes(),
                value: vec![b'v'; value_len],
            })
            .collect();
        let message = ServerMessage::IterData { iter, entries };
        session.handle_input(now, ClientInput::Message(message));
        assert!(matches!(
            session.iter_take(iter, usize::MAX),
            IterPoll::Entries(taken) if taken.len() == count
        ));
    };
    // 4 KiB values: 64 KiB hold 15 of them (each a little over 4 KiB on the wire).
    send_and_take(&mut session, 1024, 4096);
    assert_eq!(grants(&mut session), [15]);
    send_and_take(&mut session, 15, 4096);
    assert_eq!(grants(&mut session), [15]);
    // Entries without values bring the mean down, and the window up to what 64 KiB hold
    // of them.
    let tiny = Entry {
        key: b"00000000".to_vec(),
        value: Vec::new(),
    };
    let mut window = 15;
    for _ in 0..40 {
        send_and_take(&mut session, window as usize, 0);
        window = grants(&mut session).first().copied().unwrap_or(0);
    }
    assert_eq!(u64::from(window), (64 << 10) / tiny.len_bound());
}

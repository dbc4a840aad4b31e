//! The follower's side of a change feed subscription across failovers: whatever the groups'
//! sizes, how they are cut into frames, which groups the log lost or hold nothing in the
//! range, where the connection drops and how grants and groups cross on it, the caller
//! receives every group once, whole, in commit order, each run of lost groups as one lag
//! (in a log that every leader finds the same: trimming does not move between leaders
//! here), and the session never grants past its window. A leader that breaks the credits or the
//! framing fails the subscription instead of growing what the follower holds.

mod support;

use std::collections::VecDeque;

use party_proto::wire::{ClientMessage, ServerMessage};
use party_proto::{
    Change, ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, CommitSeq, ErrorCode,
    KeyRange, Timestamp, WatchEvent, WatchId, WatchPoll,
};
use proptest::prelude::*;
use support::{welcome, welcome_with};

#[derive(Debug, Clone)]
enum Action {
    /// The leader sends its next group, if it has credits.
    Send,
    /// The leader reads what the client sent it.
    Deliver,
    /// The client reads up to this many of the leader's messages.
    Receive(usize),
    /// The caller takes up to this many events.
    Take(usize),
    /// The leader dies; a new one is connected at once or later.
    Disconnect,
    Connect,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Send),
        3 => Just(Action::Deliver),
        3 => (1usize..4).prop_map(Action::Receive),
        4 => (1usize..4).prop_map(Action::Take),
        1 => Just(Action::Disconnect),
        1 => Just(Action::Connect),
    ]
}

/// A committed group: its changes, and how many changes each of its frames carries.
#[derive(Debug, Clone)]
struct Group {
    kind: Kind,
    changes: Vec<Change>,
    frames: Vec<usize>,
}

/// What the leader finds of a group in its change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Changes in the subscription's range.
    InRange,
    /// None in the range: passed over, said as progress.
    Quiet,
    /// Trimmed before the subscription read it: said as a lag.
    Lost,
}

fn group() -> impl Strategy<Value = Group> {
    let kind = prop_oneof![
        6 => Just(Kind::InRange),
        2 => Just(Kind::Quiet),
        2 => Just(Kind::Lost),
    ];
    (kind, prop::collection::vec(1usize..3, 1..4)).prop_map(|(kind, frames)| {
        let count = frames.iter().sum::<usize>();
        let changes = (0..count)
            .map(|n| Change::Del { key: vec![n as u8] })
            .collect();
        Group {
            kind,
            changes,
            frames,
        }
    })
}

/// What the caller must receive of `log`: each group with changes in the range, and each
/// run of lost groups as one lag.
fn expected(log: &[Group]) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    let mut lost = 0;
    for (index, group) in log.iter().enumerate() {
        let seq = index as u64 + 1;
        if group.kind == Kind::Lost {
            lost += 1;
            continue;
        }
        if lost > 0 {
            events.push(WatchEvent::Lagged {
                missed: lost,
                resume: CommitSeq(seq),
            });
            lost = 0;
        }
        if group.kind == Kind::InRange {
            events.push(WatchEvent::Changes {
                seq: CommitSeq(seq),
                changes: group.changes.clone(),
            });
        }
    }
    if lost > 0 {
        events.push(WatchEvent::Lagged {
            missed: lost,
            resume: CommitSeq(log.len() as u64 + 1),
        });
    }
    events
}

/// The leader's side of the subscription on the current connection.
#[derive(Debug)]
struct LeaderWatch {
    next: u64,
    credits: u32,
}

struct Harness {
    /// Group `n` (from 1) is `log[n - 1]`.
    log: Vec<Group>,
    session: ClientSession,
    watch: WatchId,
    window: u32,
    connected: bool,
    to_leader: VecDeque<ClientMessage>,
    to_client: VecDeque<ServerMessage>,
    /// Groups the client granted on this connection and has not received whole.
    outstanding: i64,
    /// Complete groups the session holds and the caller has not taken (lags aside: they
    /// take no credit).
    held: i64,
    leader: Option<LeaderWatch>,
    /// What the caller took.
    delivered: Vec<WatchEvent>,
    /// A leader has said where the subscription starts.
    started: bool,
}

impl Harness {
    /// Checks what the session sends against the window, and puts it on its way.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        while let Some(output) = self.session.poll_output() {
            let ClientOutput::Send(message) = output else {
                continue;
            };
            prop_assert!(self.connected, "sent with no connection");
            match &message {
                ClientMessage::WatchOpen { credits, .. } => {
                    self.outstanding = i64::from(*credits);
                }
                ClientMessage::WatchNext { credits, .. } => {
                    self.outstanding += i64::from(*credits);
                }
                ClientMessage::Hello(_) => {}
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            prop_assert!(
                self.outstanding + self.held <= i64::from(self.window),
                "{message:?}: {} outstanding and {} held, past the window",
                self.outstanding,
                self.held
            );
            self.to_leader.push_back(message);
        }
        Ok(())
    }

    /// The leader reads everything the client sent.
    fn deliver(&mut self) -> Result<(), TestCaseError> {
        while let Some(message) = self.to_leader.pop_front() {
            match message {
                ClientMessage::WatchOpen { from, credits, .. } => {
                    prop_assert!(self.leader.is_none(), "opened twice");
                    // Every opening is answered with where it starts, from a given
                    // commit too (the log here is never behind it).
                    let from = from.map_or(CommitSeq(1), |from| from.max(CommitSeq(1)));
                    self.to_client.push_back(ServerMessage::WatchStarted {
                        watch: self.watch,
                        from,
                    });
                    self.leader = Some(LeaderWatch {
                        next: from.0,
                        credits,
                    });
                }
                ClientMessage::WatchNext { credits, .. } => {
                    if let Some(leader) = &mut self.leader {
                        leader.credits += credits;
                    }
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
            if let ServerMessage::WatchData { complete: true, .. } = &message {
                self.outstanding -= 1;
                self.held += 1;
            }
            let starts = matches!(message, ServerMessage::WatchStarted { .. });
            self.session
                .handle_input(Timestamp::ZERO, ClientInput::Message(message));
            if starts {
                self.started = true;
            }
            // Its opener is answered once a leader said where it starts, not before.
            prop_assert_eq!(
                self.session.watch_position(self.watch).is_some(),
                self.started
            );
            self.drain()?;
        }
        Ok(())
    }

    fn run(&mut self, action: Action) -> Result<(), TestCaseError> {
        match action {
            Action::Send if self.connected => {
                let Some(leader) = &mut self.leader else {
                    return Ok(());
                };
                let Some(group) = self.log.get(leader.next as usize - 1) else {
                    return Ok(());
                };
                // As the leader's reads of the log: only while the follower has credits,
                // though only groups in the range use them.
                if leader.credits == 0 {
                    return Ok(());
                }
                let kind = group.kind;
                if kind != Kind::InRange {
                    let run = self.log[leader.next as usize - 1..]
                        .iter()
                        .take_while(|group| group.kind == kind)
                        .count() as u64;
                    let resume = CommitSeq(leader.next + run);
                    leader.next += run;
                    self.to_client.push_back(match kind {
                        Kind::Lost => ServerMessage::WatchLagged {
                            watch: self.watch,
                            missed: run,
                            resume,
                        },
                        _ => ServerMessage::WatchProgress {
                            watch: self.watch,
                            through: resume,
                        },
                    });
                    return Ok(());
                }
                let seq = CommitSeq(leader.next);
                let mut changes = group.changes.iter().cloned();
                for (index, &count) in group.frames.iter().enumerate() {
                    self.to_client.push_back(ServerMessage::WatchData {
                        watch: self.watch,
                        seq,
                        changes: changes.by_ref().take(count).collect(),
                        complete: index + 1 == group.frames.len(),
                    });
                }
                leader.credits -= 1;
                leader.next += 1;
            }
            Action::Deliver if self.connected => self.deliver()?,
            Action::Receive(n) if self.connected => self.receive(n)?,
            Action::Take(n) => match self.session.watch_take(self.watch, n) {
                WatchPoll::Events(events) => {
                    prop_assert!(!events.is_empty() && events.len() <= n);
                    for event in events {
                        if let WatchEvent::Changes { .. } = event {
                            self.held -= 1;
                        }
                        self.delivered.push(event);
                    }
                    self.drain()?;
                }
                WatchPoll::Pending => {}
                WatchPoll::Failed(error) => prop_assert!(false, "failed: {error}"),
            },
            Action::Disconnect if self.connected => {
                self.connected = false;
                self.leader = None;
                self.to_leader.clear();
                self.to_client.clear();
                self.outstanding = 0;
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
    fn every_group_once_whole_in_order_across_failovers(
        log in prop::collection::vec(group(), 0..12),
        window in 1u32..6,
        from_start in any::<bool>(),
        connect_first in any::<bool>(),
        actions in prop::collection::vec(action(), 0..150),
    ) {
        let config = ClientConfig {
            watch_window: window,
            ..ClientConfig::default()
        };
        let mut session = ClientSession::new(ClientId(5), config);
        let from = from_start.then_some(CommitSeq(1));
        let watch = session.open_watch(KeyRange::all(), from);
        let mut h = Harness {
            log,
            session,
            watch,
            window,
            connected: false,
            to_leader: VecDeque::new(),
            to_client: VecDeque::new(),
            outstanding: 0,
            held: 0,
            leader: None,
            delivered: Vec::new(),
            started: false,
        };
        if connect_first {
            h.run(Action::Connect)?;
        }
        for action in actions {
            h.run(action)?;
        }
        // Settle on a last leader that stays.
        h.run(Action::Connect)?;
        let want = expected(&h.log);
        let mut rounds = 0;
        while h.delivered.len() < want.len() {
            h.run(Action::Deliver)?;
            h.run(Action::Send)?;
            h.run(Action::Receive(usize::MAX))?;
            h.run(Action::Take(3))?;
            rounds += 1;
            prop_assert!(rounds < 1000, "subscription stalled at {:?}", h.delivered.len());
        }
        prop_assert_eq!(h.delivered, want);
    }
}

/// A session connected and welcomed, with a subscription of `window` groups opened on it
/// from commit 1; what it sent is dropped.
fn subscribed(window: u32) -> (ClientSession, WatchId) {
    let config = ClientConfig {
        watch_window: window,
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(ClientId(6), config);
    let watch = session.open_watch(KeyRange::all(), Some(CommitSeq(1)));
    session.handle_input(Timestamp::ZERO, ClientInput::Connected);
    session.handle_input(Timestamp::ZERO, ClientInput::Message(welcome()));
    std::iter::from_fn(|| session.poll_output()).for_each(drop);
    (session, watch)
}

/// The outputs of the session's taking in a frame of group `seq` from its leader.
fn frame(
    session: &mut ClientSession,
    watch: WatchId,
    seq: u64,
    complete: bool,
) -> Vec<ClientOutput> {
    let data = ServerMessage::WatchData {
        watch,
        seq: CommitSeq(seq),
        changes: vec![Change::Del { key: vec![1] }],
        complete,
    };
    session.handle_input(Timestamp::ZERO, ClientInput::Message(data));
    std::iter::from_fn(|| session.poll_output()).collect()
}

fn closed(outputs: &[ClientOutput], watch: WatchId) -> bool {
    outputs.contains(&ClientOutput::Send(ClientMessage::WatchClose { watch }))
}

/// A leader that sends more groups than the subscription's credits (a buggy one: the
/// groups waiting would grow as long as it sent) fails the subscription `Malformed`, and
/// is told to drop its side; what the credits allowed is taken in as ever.
#[test]
fn groups_past_the_credits_fail_the_subscription() {
    let (mut session, watch) = subscribed(2);
    for seq in 1..=2 {
        let outputs = frame(&mut session, watch, seq, true);
        assert!(!closed(&outputs, watch), "{outputs:?}");
    }
    // A frame that does not end its group is past the credits as well.
    let outputs = frame(&mut session, watch, 3, false);
    assert!(closed(&outputs, watch), "{outputs:?}");
    assert!(matches!(
        session.watch_take(watch, 10),
        WatchPoll::Failed(ErrorCode::Malformed(text)) if text.contains("credits")
    ));
}

/// A leader that starts a group before it has ended the one it was sending fails the
/// subscription `Malformed` rather than have the follower drop the frames so far, or hold
/// the frames of any number of groups.
#[test]
fn a_group_begun_before_the_last_one_ended_fails_the_subscription() {
    let (mut session, watch) = subscribed(4);
    let outputs = frame(&mut session, watch, 1, false);
    assert!(!closed(&outputs, watch), "{outputs:?}");
    let outputs = frame(&mut session, watch, 2, false);
    assert!(closed(&outputs, watch), "{outputs:?}");
    assert!(matches!(
        session.watch_take(watch, 10),
        WatchPoll::Failed(ErrorCode::Malformed(text)) if text.contains("before it ended")
    ));
}

/// A follower gives its leader credits back in batches of half the window, not one a
/// group: a subscriber that takes its events one at a time would otherwise answer every
/// group it is sent with a message of its own.
#[test]
fn credits_go_back_in_batches_of_half_the_window() {
    let (mut session, watch) = subscribed(8);
    for seq in 1..=8 {
        frame(&mut session, watch, seq, true);
    }
    let mut grants = Vec::new();
    for _ in 1..=8 {
        assert!(
            matches!(session.watch_take(watch, 1), WatchPoll::Events(events) if events.len() == 1)
        );
        for output in std::iter::from_fn(|| session.poll_output()) {
            if let ClientOutput::Send(ClientMessage::WatchNext { credits, .. }) = output {
                grants.push(credits);
            }
        }
    }
    assert_eq!(
        grants,
        [4, 4],
        "granted once half the window was taken, each time"
    );
}

/// Closing a subscription tells its leader to drop its side: it would otherwise go on
/// reading the log for it, and count it against the connection's `max_watches`, for as
/// long as the connection lasts. What the leader sent before it heard is dropped.
#[test]
fn a_closed_subscription_is_dropped_on_the_leader_too() {
    let (mut session, watch) = subscribed(4);
    session.close_watch(watch);
    let outputs: Vec<_> = std::iter::from_fn(|| session.poll_output()).collect();
    assert!(closed(&outputs, watch), "{outputs:?}");
    let outputs = frame(&mut session, watch, 1, true);
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(
        session.watch_take(watch, 10),
        WatchPoll::Failed(ErrorCode::NotFound)
    );
}

/// A subscription asks its leader for no more groups at once than the leader takes
/// (`max_iter_credits`), opened before the welcome or after: the leader cuts the credits
/// to that, and a follower that counted the rest as granted would wait for groups that
/// never come before it granted more.
#[test]
fn a_subscription_asks_no_more_credits_than_its_leader_takes() {
    let config = ClientConfig {
        watch_window: 64,
        ..ClientConfig::default()
    };
    let mut session = ClientSession::new(ClientId(9), config);
    let before = session.open_watch(KeyRange::all(), None);
    session.handle_input(Timestamp::ZERO, ClientInput::Connected);
    let capped = welcome_with(|limits| limits.max_iter_credits = 8);
    let welcomed = ClientInput::Message(capped);
    session.handle_input(Timestamp::ZERO, welcomed);
    let after = session.open_watch(KeyRange::all(), None);
    let asked: Vec<_> = std::iter::from_fn(|| session.poll_output())
        .filter_map(|output| match output {
            ClientOutput::Send(ClientMessage::WatchOpen { watch, credits, .. }) => {
                Some((watch, credits))
            }
            _ => None,
        })
        .collect();
    assert_eq!(asked, [(before, 8), (after, 8)]);
}

/// A group's frames are one event, handed over once its last frame came.
#[test]
fn a_group_in_several_frames_is_one_event() {
    let (mut session, watch) = subscribed(4);
    frame(&mut session, watch, 1, false);
    assert_eq!(session.watch_take(watch, 10), WatchPoll::Pending);
    frame(&mut session, watch, 1, true);
    let change = Change::Del { key: vec![1] };
    assert_eq!(
        session.watch_take(watch, 10),
        WatchPoll::Events(vec![WatchEvent::Changes {
            seq: CommitSeq(1),
            changes: vec![change.clone(), change],
        }])
    );
}

/// Commit 1 is a store's first: a subscription from 0 stands at 1, and asks its leader
/// for that (as the leader would read it), so that its position is one a later
/// subscription can go on from.
#[test]
fn a_subscription_from_zero_starts_at_the_first_commit() {
    let mut session = ClientSession::new(ClientId(7), ClientConfig::default());
    let watch = session.open_watch(KeyRange::all(), Some(CommitSeq(0)));
    session.handle_input(Timestamp::ZERO, ClientInput::Connected);
    session.handle_input(Timestamp::ZERO, ClientInput::Message(welcome()));
    let opened = std::iter::from_fn(|| session.poll_output()).any(|output| {
        matches!(
            output,
            ClientOutput::Send(ClientMessage::WatchOpen {
                from: Some(CommitSeq(1)),
                ..
            })
        )
    });
    assert!(opened);
    // Not started until the leader says so: it might refuse it.
    assert_eq!(session.watch_position(watch), None);
    let started = ServerMessage::WatchStarted {
        watch,
        from: CommitSeq(1),
    };
    session.handle_input(Timestamp::ZERO, ClientInput::Message(started));
    assert!(std::iter::from_fn(|| session.poll_output())
        .any(|output| output == ClientOutput::WatchReady { watch }));
    assert_eq!(session.watch_position(watch), Some(CommitSeq(1)));
}

/// A subscription from a given commit that its leader refuses (here: ahead of the log)
/// never has a position: its opener gets the refusal, not a subscription.
#[test]
fn a_subscription_refused_at_its_opening_never_starts() {
    let mut session = ClientSession::new(ClientId(8), ClientConfig::default());
    let watch = session.open_watch(KeyRange::all(), Some(CommitSeq(50)));
    session.handle_input(Timestamp::ZERO, ClientInput::Connected);
    session.handle_input(Timestamp::ZERO, ClientInput::Message(welcome()));
    std::iter::from_fn(|| session.poll_output()).for_each(drop);
    let error = ErrorCode::WatchAhead { from: 50, next: 3 };
    let refused = ServerMessage::WatchFailed {
        watch,
        error: error.clone(),
    };
    session.handle_input(Timestamp::ZERO, ClientInput::Message(refused));
    assert_eq!(session.watch_position(watch), None);
    assert_eq!(session.watch_take(watch, 1), WatchPoll::Failed(error));
}

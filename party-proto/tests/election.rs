//! The election machine against a model of what the driver holds. Whatever the order of
//! answers, disconnects, lost locks, timers, closes and stray answers, the machine never
//! asks for an action that is illegal in the state the driver is in.

use std::time::Duration;

use party_proto::election::{Election, ElectionConfig, ElectionInput, ElectionOutput, Role};
use party_proto::Timestamp;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// The outstanding action completes, successfully or not.
    Answer(bool),
    /// The leader's connection drops.
    Disconnect,
    /// The leader refuses the follower and hangs up.
    Refuse,
    /// The (virtual) lock is taken away from the leader.
    LoseLock,
    /// Time passes; the timer fires if due, or early if `early`.
    Time {
        millis: u64,
        early: bool,
    },
    Close,
    /// The lock file cannot be used (answers an outstanding TryLock).
    LockError,
    /// The store is still locked by a previous leader (answers an outstanding OpenStore).
    StoreBusy,
    /// Serving cannot start (while serving).
    ServeFails,
    /// The waiting room this process waits in closes.
    RoomCloses,
    /// The holder of the room this process waits in answers on its seat.
    Admit,
    /// The room is another user's (answers an outstanding EnterWaitingRoom).
    ForeignRoom,
    /// An answer to an action that is not outstanding.
    Stray(ElectionInput),
}

fn step() -> impl Strategy<Value = Step> {
    use ElectionInput::*;
    prop_oneof![
        6 => any::<bool>().prop_map(Step::Answer),
        1 => Just(Step::Disconnect),
        1 => Just(Step::Refuse),
        1 => Just(Step::LoseLock),
        2 => (0u64..100, any::<bool>()).prop_map(|(millis, early)| Step::Time { millis, early }),
        1 => Just(Step::Close),
        1 => Just(Step::LockError),
        1 => Just(Step::StoreBusy),
        1 => Just(Step::ServeFails),
        2 => Just(Step::RoomCloses),
        2 => Just(Step::Admit),
        1 => Just(Step::ForeignRoom),
        1 => prop::sample::select(vec![
            LockAcquired, LockBusy, LockFailed, StoreOpened, StoreOpenFailed, StoreLocked,
            SocketBound, BindFailed, Connected, ConnectFailed, ServeFailed, InWaitingRoom,
            NoWaitingRoom, WaitingRoomClosed, Admitted,
        ]).prop_map(Step::Stray),
    ]
}

/// What the driver holds, and the action whose answer is due.
#[derive(Debug, Default)]
struct World {
    lock: bool,
    store: bool,
    bound: bool,
    serving: bool,
    connected: bool,
    /// Its own waiting room is open.
    room: bool,
    /// It waits in another's waiting room.
    seat: bool,
    outstanding: Option<ElectionOutput>,
    failed: bool,
}

impl World {
    fn holds_leadership(&self) -> bool {
        self.lock || self.store || self.bound || self.serving
    }

    /// Carries out every output, failing on one that is illegal now.
    fn run(&mut self, election: &mut Election) -> Result<(), TestCaseError> {
        use ElectionOutput::*;
        while let Some(output) = election.poll_output() {
            prop_assert!(!self.failed, "{output:?} after Failed");
            let asks_answer = matches!(
                output,
                TryLock | OpenStore | Bind | Connect | EnterWaitingRoom
            );
            prop_assert!(
                !asks_answer || self.outstanding.is_none(),
                "{output:?} while {:?} is outstanding",
                self.outstanding
            );
            match output {
                TryLock => prop_assert!(!self.lock && !self.connected, "TryLock in {self:?}"),
                OpenStore => prop_assert!(self.lock && !self.store, "OpenStore in {self:?}"),
                Bind => prop_assert!(self.lock && self.store && !self.bound, "Bind in {self:?}"),
                Serve => {
                    prop_assert!(
                        self.lock && self.store && self.bound && !self.serving,
                        "Serve in {self:?}"
                    );
                    self.serving = true;
                }
                Connect => prop_assert!(
                    !self.holds_leadership() && !self.connected,
                    "Connect in {self:?}"
                ),
                OpenWaitingRoom => {
                    prop_assert!(
                        self.lock && !self.room && !self.seat,
                        "OpenWaitingRoom in {self:?}"
                    );
                    self.room = true;
                }
                CloseWaitingRoom => {
                    prop_assert!(self.room, "CloseWaitingRoom with no room open");
                    self.room = false;
                }
                EnterWaitingRoom => prop_assert!(
                    !self.holds_leadership() && !self.room && !self.connected && !self.seat,
                    "EnterWaitingRoom in {self:?}"
                ),
                LeaveWaitingRoom => {
                    prop_assert!(self.seat, "LeaveWaitingRoom outside a room");
                    self.seat = false;
                }
                StepDown => {
                    prop_assert!(self.holds_leadership(), "StepDown holding nothing");
                    self.lock = false;
                    self.store = false;
                    self.bound = false;
                    self.serving = false;
                }
                Disconnect => {
                    prop_assert!(self.connected, "Disconnect while not connected");
                    self.connected = false;
                }
                Failed(_) => {
                    prop_assert_eq!(election.role(), Role::Closed);
                    self.failed = true;
                }
            }
            if asks_answer {
                self.outstanding = Some(output);
            }
        }
        Ok(())
    }

    /// The answer to the outstanding action, applied to the world.
    fn answer(&mut self, success: bool) -> Option<ElectionInput> {
        use ElectionInput::*;
        let input = match (self.outstanding.take()?, success) {
            (ElectionOutput::TryLock, true) => {
                self.lock = true;
                LockAcquired
            }
            (ElectionOutput::TryLock, false) => LockBusy,
            (ElectionOutput::OpenStore, true) => {
                self.store = true;
                StoreOpened
            }
            (ElectionOutput::OpenStore, false) => StoreOpenFailed,
            (ElectionOutput::Bind, true) => {
                self.bound = true;
                SocketBound
            }
            (ElectionOutput::Bind, false) => BindFailed,
            (ElectionOutput::Connect, true) => {
                // Made from a seat, the connection takes its place.
                self.seat = false;
                self.connected = true;
                Connected
            }
            (ElectionOutput::Connect, false) => ConnectFailed,
            (ElectionOutput::EnterWaitingRoom, true) => {
                self.seat = true;
                InWaitingRoom
            }
            (ElectionOutput::EnterWaitingRoom, false) => NoWaitingRoom,
            (other, _) => unreachable!("{other:?} expects no answer"),
        };
        Some(input)
    }

    fn answers_outstanding(&self, input: ElectionInput) -> bool {
        use ElectionInput::*;
        matches!(
            (self.outstanding, input),
            (
                Some(ElectionOutput::TryLock),
                LockAcquired | LockBusy | LockFailed
            ) | (
                Some(ElectionOutput::OpenStore),
                StoreOpened | StoreOpenFailed | StoreLocked
            ) | (Some(ElectionOutput::Bind), SocketBound | BindFailed)
                | (Some(ElectionOutput::Connect), Connected | ConnectFailed)
                | (
                    Some(ElectionOutput::EnterWaitingRoom),
                    InWaitingRoom | NoWaitingRoom | Refused
                )
        )
    }
}

fn check_role(election: &Election, world: &World) -> Result<(), TestCaseError> {
    match election.role() {
        Role::Leader => {
            prop_assert!(world.serving && world.lock, "Leader without serving");
            prop_assert!(
                !world.room,
                "a leader serving while its waiting room is still open"
            );
        }
        Role::Follower => prop_assert!(world.connected, "Follower without a connection"),
        Role::Electing => prop_assert!(
            world.outstanding.is_some() || election.poll_timeout().is_some(),
            "electing with nothing to wait for: stuck"
        ),
        Role::Closed => {}
    }
    prop_assert!(!(world.holds_leadership() && world.connected));
    prop_assert!(!(world.seat && (world.room || world.lock || world.connected)));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_illegal_output_for_any_event_sequence(
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 0..60),
    ) {
        let mut election = Election::new(ElectionConfig::default(), seed);
        let mut world = World::default();
        let mut now = Timestamp::ZERO;
        world.run(&mut election)?;
        for step in steps {
            let input = match step {
                Step::Answer(success) => world.answer(success),
                Step::Disconnect if world.connected => {
                    world.connected = false;
                    Some(ElectionInput::Disconnected)
                }
                Step::Refuse if world.connected => {
                    world.connected = false;
                    Some(ElectionInput::Refused)
                }
                Step::LoseLock if world.lock => {
                    world.lock = false;
                    Some(ElectionInput::LockLost)
                }
                Step::Time { millis, early } => {
                    now = now + Duration::from_millis(millis);
                    let due = election.poll_timeout().is_some_and(|at| at <= now);
                    (due || early).then_some(ElectionInput::TimerFired)
                }
                Step::Close => Some(ElectionInput::CloseRequested),
                Step::LockError if world.outstanding == Some(ElectionOutput::TryLock) => {
                    world.outstanding = None;
                    Some(ElectionInput::LockFailed)
                }
                Step::ServeFails if world.serving => Some(ElectionInput::ServeFailed),
                Step::StoreBusy if world.outstanding == Some(ElectionOutput::OpenStore) => {
                    world.outstanding = None;
                    Some(ElectionInput::StoreLocked)
                }
                Step::RoomCloses if world.seat => {
                    world.seat = false;
                    Some(ElectionInput::WaitingRoomClosed)
                }
                Step::ForeignRoom
                    if world.outstanding == Some(ElectionOutput::EnterWaitingRoom) =>
                {
                    world.outstanding = None;
                    Some(ElectionInput::Refused)
                }
                Step::Admit if world.seat => {
                    election.handle_input(now, ElectionInput::Admitted);
                    // The seat is the connection now, unless the machine left the room
                    // instead (its LeaveWaitingRoom, below, then drops it).
                    if election.role() == Role::Follower {
                        world.seat = false;
                        world.connected = true;
                    }
                    None
                }
                // A close or an answer the driver saw on its seat is no stray.
                Step::Stray(ElectionInput::WaitingRoomClosed | ElectionInput::Admitted)
                    if world.seat =>
                {
                    None
                }
                Step::Stray(input) if !world.answers_outstanding(input) => Some(input),
                _ => None,
            };
            if let Some(input) = input {
                election.handle_input(now, input);
            }
            world.run(&mut election)?;
            check_role(&election, &world)?;
        }

        // However it got here, a close ends with nothing held.
        election.handle_input(now, ElectionInput::CloseRequested);
        world.run(&mut election)?;
        while let Some(input) = world.answer(true) {
            election.handle_input(now, input);
            world.run(&mut election)?;
        }
        prop_assert!(election.is_closed());
        prop_assert!(
            !world.holds_leadership() && !world.connected && !world.room && !world.seat,
            "close left {world:?}"
        );
    }
}

#[test]
fn a_refused_follower_waits_before_it_tries_again() {
    let config = ElectionConfig::default();
    let mut election = Election::new(config.clone(), 1);
    let now = Timestamp::ZERO;
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(now, ElectionInput::LockBusy);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));
    election.handle_input(now, ElectionInput::Connected);
    election.handle_input(now, ElectionInput::Refused);
    assert_eq!(election.role(), Role::Electing);
    assert_eq!(election.poll_output(), None, "no knocking again at once");
    assert_eq!(election.poll_timeout(), Some(now + config.refused_backoff));
    election.handle_input(now + config.refused_backoff, ElectionInput::TimerFired);
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
}

#[test]
fn losing_the_leader_goes_straight_to_the_lock_without_waiting() {
    let mut election = Election::new(ElectionConfig::default(), 1);
    let now = Timestamp::ZERO;
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(now, ElectionInput::LockBusy);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));
    election.handle_input(now, ElectionInput::Connected);
    assert_eq!(election.role(), Role::Follower);
    election.handle_input(now, ElectionInput::Disconnected);
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    assert_eq!(election.poll_timeout(), None);
    election.handle_input(now, ElectionInput::LockAcquired);
    election.handle_input(now, ElectionInput::StoreOpened);
    election.handle_input(now, ElectionInput::SocketBound);
    let outputs: Vec<_> = std::iter::from_fn(|| election.poll_output()).collect();
    assert_eq!(
        outputs,
        [
            ElectionOutput::OpenWaitingRoom,
            ElectionOutput::OpenStore,
            ElectionOutput::Bind,
            ElectionOutput::Serve,
            ElectionOutput::CloseWaitingRoom,
        ]
    );
    assert_eq!(election.role(), Role::Leader);
}

/// A machine that lost the race for the lock, found nobody listening, and sits in the
/// holder's waiting room since `now`.
fn seated(config: &ElectionConfig, now: Timestamp) -> Election {
    let mut election = Election::new(config.clone(), 3);
    let outputs = [
        ElectionOutput::TryLock,
        ElectionOutput::Connect,
        ElectionOutput::EnterWaitingRoom,
    ];
    let answers = [
        ElectionInput::LockBusy,
        ElectionInput::ConnectFailed,
        ElectionInput::InWaitingRoom,
    ];
    for (output, answer) in outputs.into_iter().zip(answers) {
        assert_eq!(election.poll_output(), Some(output));
        election.handle_input(now, answer);
    }
    election
}

#[test]
fn a_process_that_finds_nobody_listening_waits_in_the_holders_room_until_it_closes() {
    let config = ElectionConfig::default();
    let now = Timestamp::ZERO;
    let mut election = seated(&config, now);
    assert_eq!(election.poll_output(), None, "nothing to do but wait");
    assert_eq!(election.role(), Role::Electing);
    assert_eq!(
        election.poll_timeout(),
        Some(now + config.room_patience),
        "a bounded wait, far longer than a backoff"
    );
    assert!(config.room_patience > config.max_backoff);
    // Told long before its patience runs out: straight to the lock, and no leaving to do.
    let closed = now + Duration::from_micros(300);
    election.handle_input(closed, ElectionInput::WaitingRoomClosed);
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    assert_eq!(election.poll_output(), None);
    election.handle_input(closed, ElectionInput::LockBusy);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));
    election.handle_input(closed, ElectionInput::Connected);
    assert_eq!(election.role(), Role::Follower);

    // A room that stays closed past its patience: it looks again by itself from its seat
    // (leaving it would leave a dead connection in the room's queue), and sits on.
    let mut election = seated(&config, now);
    let due = election.poll_timeout().unwrap();
    election.handle_input(due, ElectionInput::TimerFired);
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(due, ElectionInput::LockBusy);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));
    election.handle_input(due, ElectionInput::ConnectFailed);
    assert_eq!(election.poll_output(), None, "back on the same seat");
    assert_eq!(election.poll_timeout(), Some(due + config.room_patience));
    // A connection made from the seat takes its place: nothing to leave.
    let again = due + config.room_patience;
    election.handle_input(again, ElectionInput::TimerFired);
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(again, ElectionInput::LockBusy);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));
    election.handle_input(again, ElectionInput::Connected);
    assert_eq!(election.poll_output(), None);
    assert_eq!(election.role(), Role::Follower);
    election.handle_input(again, ElectionInput::Disconnected);
    assert_eq!(
        election.poll_output(),
        Some(ElectionOutput::TryLock),
        "no seat left to leave"
    );
    // Or once it leads: before it opens a room of its own.
    let mut election = seated(&config, now);
    let due = election.poll_timeout().unwrap();
    election.handle_input(due, ElectionInput::TimerFired);
    let _ = election.poll_output();
    election.handle_input(due, ElectionInput::LockAcquired);
    let outputs: Vec<_> = std::iter::from_fn(|| election.poll_output()).collect();
    assert_eq!(
        outputs,
        [
            ElectionOutput::LeaveWaitingRoom,
            ElectionOutput::OpenWaitingRoom,
            ElectionOutput::OpenStore
        ]
    );

    // The holder serves and answers on the seat: it follows there, without a connect; its
    // connection is given back as any other.
    let mut election = seated(&config, now);
    election.handle_input(now, ElectionInput::Admitted);
    assert_eq!(election.role(), Role::Follower);
    assert_eq!(election.poll_output(), None, "no connect, no leaving");
    assert_eq!(election.poll_timeout(), None, "no patience left to run out");
    election.handle_input(now, ElectionInput::CloseRequested);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Disconnect));
    assert!(election.is_closed());
    // Answered on its seat while it looks again from it: the seat is left, not followed.
    let mut election = seated(&config, now);
    let due = election.poll_timeout().unwrap();
    election.handle_input(due, ElectionInput::TimerFired);
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(due, ElectionInput::Admitted);
    assert_eq!(
        election.poll_output(),
        Some(ElectionOutput::LeaveWaitingRoom)
    );
    election.handle_input(due, ElectionInput::LockBusy);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));

    // Closing the handle while in a room leaves it.
    let mut election = seated(&config, now);
    election.handle_input(now, ElectionInput::CloseRequested);
    assert_eq!(
        election.poll_output(),
        Some(ElectionOutput::LeaveWaitingRoom)
    );
    assert!(election.is_closed());
}

#[test]
fn the_lock_holder_keeps_a_waiting_room_open_until_it_serves_or_gives_up() {
    let mut election = Election::new(ElectionConfig::default(), 4);
    let now = Timestamp::ZERO;
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(now, ElectionInput::LockAcquired);
    assert_eq!(
        election.poll_output(),
        Some(ElectionOutput::OpenWaitingRoom)
    );
    assert_eq!(election.poll_output(), Some(ElectionOutput::OpenStore));
    election.handle_input(now, ElectionInput::StoreOpenFailed);
    let outputs: Vec<_> = std::iter::from_fn(|| election.poll_output()).collect();
    assert_eq!(
        outputs,
        [
            ElectionOutput::StepDown,
            ElectionOutput::CloseWaitingRoom,
            ElectionOutput::Failed(party_proto::election::ElectionFailure::StoreOpen)
        ],
        "the room closes after the lock is given back, so those waiting find it free"
    );
}

#[test]
fn a_failed_connect_with_no_room_to_wait_in_waits_a_bounded_jittered_time_then_tries_the_lock() {
    let config = ElectionConfig::default();
    let max = config.max_backoff;
    let mut election = Election::new(config, 99);
    let mut now = Timestamp::ZERO;
    for _ in 0..20 {
        assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
        election.handle_input(now, ElectionInput::LockBusy);
        assert_eq!(election.poll_output(), Some(ElectionOutput::Connect));
        election.handle_input(now, ElectionInput::ConnectFailed);
        assert_eq!(
            election.poll_output(),
            Some(ElectionOutput::EnterWaitingRoom)
        );
        election.handle_input(now, ElectionInput::NoWaitingRoom);
        let at = election
            .poll_timeout()
            .expect("a wait after a failed connect");
        let wait = at.saturating_since(now);
        assert!(wait > Duration::ZERO && wait <= max, "wait {wait:?}");
        now = at;
        election.handle_input(now, ElectionInput::TimerFired);
    }
}

#[test]
fn a_store_still_locked_is_tried_again_for_a_while_then_the_election_fails() {
    let config = ElectionConfig::default();
    let mut election = Election::new(config.clone(), 5);
    let mut now = Timestamp::ZERO;
    assert_eq!(election.poll_output(), Some(ElectionOutput::TryLock));
    election.handle_input(now, ElectionInput::LockAcquired);
    assert_eq!(
        election.poll_output(),
        Some(ElectionOutput::OpenWaitingRoom)
    );
    assert_eq!(election.poll_output(), Some(ElectionOutput::OpenStore));
    election.handle_input(now, ElectionInput::StoreLocked);
    assert_eq!(election.poll_output(), None, "it waits, holding the lock");
    assert_eq!(election.poll_timeout(), Some(now + config.store_retry));
    assert_eq!(election.role(), Role::Electing);
    // Locked again and again until the patience runs out.
    let mut tries = 1;
    loop {
        now = election.poll_timeout().expect("waiting to try again");
        election.handle_input(now, ElectionInput::TimerFired);
        assert_eq!(election.poll_output(), Some(ElectionOutput::OpenStore));
        tries += 1;
        election.handle_input(now, ElectionInput::StoreLocked);
        if election.role() == Role::Closed {
            break;
        }
    }
    let outputs: Vec<_> = std::iter::from_fn(|| election.poll_output()).collect();
    assert_eq!(
        outputs,
        [
            ElectionOutput::StepDown,
            ElectionOutput::CloseWaitingRoom,
            ElectionOutput::Failed(party_proto::election::ElectionFailure::StoreOpen)
        ]
    );
    let expected = config.store_patience.as_millis() / config.store_retry.as_millis();
    assert!(
        (expected..=expected + 1).contains(&(tries as u128)),
        "{tries} tries"
    );

    // Released in time: it goes on to bind.
    let mut election = Election::new(config.clone(), 5);
    let _ = election.poll_output();
    election.handle_input(Timestamp::ZERO, ElectionInput::LockAcquired);
    let _ = election.poll_output();
    let _ = election.poll_output();
    election.handle_input(Timestamp::ZERO, ElectionInput::StoreLocked);
    let retry = election.poll_timeout().unwrap();
    election.handle_input(retry, ElectionInput::TimerFired);
    assert_eq!(election.poll_output(), Some(ElectionOutput::OpenStore));
    election.handle_input(retry, ElectionInput::StoreOpened);
    assert_eq!(election.poll_output(), Some(ElectionOutput::Bind));
}

/// A leadership lost while its store was still locked (a virtual lock can be) leaves no
/// patience spent behind: the next leadership waits for a locked store as long again.
#[test]
fn each_leadership_waits_its_own_patience_for_a_locked_store() {
    let config = ElectionConfig::default();
    let mut election = Election::new(config.clone(), 6);
    let outputs = |election: &mut Election| -> Vec<ElectionOutput> {
        std::iter::from_fn(|| election.poll_output()).collect()
    };
    let first = Timestamp::ZERO;
    assert_eq!(outputs(&mut election), [ElectionOutput::TryLock]);
    election.handle_input(first, ElectionInput::LockAcquired);
    let _ = outputs(&mut election);
    election.handle_input(first, ElectionInput::StoreLocked);
    election.handle_input(first, ElectionInput::LockLost);
    assert_eq!(
        outputs(&mut election),
        [ElectionOutput::CloseWaitingRoom, ElectionOutput::TryLock],
        "nothing held to step down from"
    );

    let later = first + config.store_patience * 2;
    election.handle_input(later, ElectionInput::LockAcquired);
    assert_eq!(
        outputs(&mut election),
        [ElectionOutput::OpenWaitingRoom, ElectionOutput::OpenStore]
    );
    election.handle_input(later, ElectionInput::StoreLocked);
    assert_eq!(
        outputs(&mut election),
        [],
        "the first locked answer of this leadership: it waits"
    );
    assert_eq!(election.poll_timeout(), Some(later + config.store_retry));
}

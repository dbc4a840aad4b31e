//! Who leads: the election machine of one process.
//!
//! ```text
//!            TryLock ──busy──▶ Connect ──ok──▶ Follower ──disconnected──┐
//!               ▲                 │ failed                               │
//!               │                 ▼                                      │
//!               │         EnterWaitingRoom ──none──▶ wait (jittered backoff) ─┐
//!               │                 │ in ──admitted (the holder serves)──▶ Follower
//!               │◀── closed (or 100 ms: looks again from its seat) ◀┘   │    │
//!               │◀───────────────────────────────────────────────────────┴────┘
//!               └─acquired─▶ OpenWaitingRoom, OpenStore ─▶ Bind ─▶ Serve, CloseWaitingRoom
//!                              │  ▲                                   Leader ──lock lost──▶
//!                     locked ──┘  └── wait 5 ms (for up to 2 s: a       StepDown, TryLock
//!                                      previous leader's store still closing)
//! ```
//!
//! Losing a leader goes straight to the lock. The lock holder serves only once its store is
//! open, which takes a while; a process that lost the race for the lock meanwhile finds
//! nobody listening, and waits in the holder's *waiting room* (a second socket the holder
//! binds as soon as it has the lock) until the holder closes it: once serving, or on giving
//! up, or by dying. Closing it tells every process in it at once, and nobody polls
//! meanwhile (DESIGN: no fixed-interval polling). A seat is a connection like any other:
//! the process says hello on it as it sits down, and a holder that comes to serve takes
//! every seat in its room as a follower connection before it closes the room
//! ([`ElectionInput::Admitted`]), so that those waiting are answered without connecting
//! again. A process that finds no room (the holder has not opened it yet, has closed it
//! already, or cannot open one) falls back to a short jittered backoff; one in a room looks
//! again by itself after [`ElectionConfig::room_patience`] in case the room outlives its
//! reason, keeping its seat (its hello waits there); it leaves the room when it leads, or
//! closes, or is answered on its seat while it looks again (it follows where that look
//! leads instead), and a connection it makes from the seat takes the seat's place. Watching the
//! directory (inotify) instead was measured to cost more than the retries it saves, the new
//! leader paying for every watcher at each change of the directory.
//!
//! At most one action that expects an answer (try the lock, open the store, bind, connect,
//! enter a waiting room) is outstanding at a time. A close that comes while one is outstanding waits for its
//! answer and then gives back whatever that answer handed over, so the driver is never told
//! to release something it might not hold yet.

use std::collections::VecDeque;
use std::time::Duration;

use crate::jitter::Backoff;
use crate::time::Timestamp;

/// The role a process plays right now.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Looking for a leader or trying to become one.
    Electing,
    Leader,
    Follower,
    Closed,
}

/// What happened, as seen by the driver.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionInput {
    /// Answer to [`ElectionOutput::TryLock`]: this process now holds the lock.
    LockAcquired,
    /// Answer to [`ElectionOutput::TryLock`]: another process holds the lock.
    LockBusy,
    /// Answer to [`ElectionOutput::TryLock`]: the lock file cannot be used at all (an IO
    /// error, not a holder); without it there is no party to join. The driver keeps the
    /// cause to report.
    LockFailed,
    /// Answer to [`ElectionOutput::OpenStore`].
    StoreOpened,
    /// Answer to [`ElectionOutput::OpenStore`]; the driver keeps the cause to report.
    StoreOpenFailed,
    /// Answer to [`ElectionOutput::OpenStore`]: the store's own lock is still held. With the
    /// election lock in hand that is a previous leader whose store is still shutting down
    /// (sled can let go of its file lock a moment after its last handle drops), so the open
    /// is tried again every [`ElectionConfig::store_retry`] for up to
    /// [`ElectionConfig::store_patience`]; a lock held longer is a foreign process, and the
    /// election fails. The driver keeps the cause to report.
    StoreLocked,
    /// Answer to [`ElectionOutput::Bind`].
    SocketBound,
    /// Answer to [`ElectionOutput::Bind`]; the driver keeps the cause to report.
    BindFailed,
    /// Answer to [`ElectionOutput::Connect`].
    Connected,
    /// Answer to [`ElectionOutput::Connect`]: nobody is listening yet.
    ConnectFailed,
    /// Answer to [`ElectionOutput::EnterWaitingRoom`]: waiting in the lock holder's room.
    InWaitingRoom,
    /// Answer to [`ElectionOutput::EnterWaitingRoom`]: there is no room to wait in.
    NoWaitingRoom,
    /// The waiting room this process waits in was closed, its seat not taken: its holder
    /// serves now, or gave up, or died. (Told by the process machine, which sees the
    /// seat's connection end: see `ProcessInput::Seated`.)
    WaitingRoomClosed,
    /// The holder of the waiting room serves, and answered this process on its seat: the
    /// seat is now its connection to the leader.
    Admitted,
    /// The follower's connection to the leader closed.
    Disconnected,
    /// The follower's connection closed after the leader refused this process (a limit,
    /// another user, another protocol): it waits [`ElectionConfig::refused_backoff`] before
    /// trying again, rather than knocking at once. Also an answer to
    /// [`ElectionOutput::EnterWaitingRoom`]: the room is another user's, not sat in.
    Refused,
    /// The leader learned it no longer holds the lock (only a virtual lock can do this).
    LockLost,
    /// The wait asked for by [`Election::poll_timeout`] is over, or the driver saw a reason
    /// to look again early.
    TimerFired,
    /// The handle is closing.
    CloseRequested,
    /// Serving could not start after [`ElectionOutput::Serve`] (the store thread could not
    /// be started, say), or stopped (the store thread died); the driver keeps the cause to
    /// report.
    ServeFailed,
}

/// What the driver must do.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionOutput {
    /// Try once, without waiting, to take the lock; answer `LockAcquired` or `LockBusy`.
    TryLock,
    /// Open the store (the lock is held); answer `StoreOpened`, `StoreOpenFailed` or
    /// `StoreLocked`. The answer may take a while (a journal to replay, a cluster to reach):
    /// the machine takes other inputs meanwhile.
    OpenStore,
    /// Remove any stale socket and bind it; answer `SocketBound` or `BindFailed`.
    Bind,
    /// Leadership is complete: accept followers and serve.
    Serve,
    /// Connect to the leader's socket; answer `Connected` or `ConnectFailed`. A connection
    /// made from a seat takes the seat's place (the seat's connection closes).
    Connect,
    /// The lock is held: open the waiting room, where the processes that find nobody
    /// listening yet wait for this one to serve. Best effort, no answer: a process that
    /// finds no room backs off instead.
    OpenWaitingRoom,
    /// Close the waiting room: every process waiting in it is told at once.
    CloseWaitingRoom,
    /// Nobody is listening: wait in the lock holder's waiting room; answer
    /// `InWaitingRoom` or `NoWaitingRoom`, then `Admitted` when the holder answers on the
    /// seat, or `WaitingRoomClosed` when the room closes first.
    EnterWaitingRoom,
    /// Stop waiting in the waiting room: close the seat's connection.
    LeaveWaitingRoom,
    /// Give up leadership: stop serving, unbind, close the store, release the lock — each
    /// only if held, in that order.
    StepDown,
    /// Close the connection to the leader.
    Disconnect,
    /// The election cannot go on (the store or the socket could not be set up while the
    /// lock was held). The machine is closed; the driver reports the cause it kept.
    Failed(ElectionFailure),
}

/// Why an election gave up.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElectionFailure {
    Lock,
    StoreOpen,
    Bind,
    Serve,
}

/// Timing of retries.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct ElectionConfig {
    /// First wait after a failed connect.
    pub initial_backoff: Duration,
    /// Longest wait after failed connects. It bounds how late a follower notices a new
    /// leader that is still opening its store, so it is short: a failed connect to a missing
    /// socket is one cheap syscall.
    pub max_backoff: Duration,
    /// Wait after the leader refused this process.
    pub refused_backoff: Duration,
    /// Longest wait in a waiting room before looking again: it bounds how late a process
    /// notices a leader if the room is not closed when it should be.
    pub room_patience: Duration,
    /// How long a store still locked by a previous leader is waited for.
    pub store_patience: Duration,
    /// How often such a store is tried again.
    pub store_retry: Duration,
    /// Bugs to re-create, for the simulator.
    pub bugs: crate::bugs::Bugs,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        ElectionConfig {
            initial_backoff: Duration::from_micros(250),
            max_backoff: Duration::from_millis(2),
            refused_backoff: Duration::from_millis(250),
            room_patience: Duration::from_millis(100),
            store_patience: Duration::from_secs(2),
            store_retry: Duration::from_millis(5),
            bugs: crate::bugs::Bugs::default(),
        }
    }
}

/// An action whose answer is still to come.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Lock,
    Store,
    Bind,
    Connect,
    Room,
}

/// Where an unwinding goes once the awaited answer is in and given back.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Close,
    Elect,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the answer to an action.
    Electing(Awaiting),
    /// Waiting out a backoff before trying the lock again.
    Backoff {
        until: Timestamp,
    },
    /// Holding the lock, waiting to try a store that was still locked again.
    StoreWait {
        until: Timestamp,
    },
    /// In the lock holder's waiting room, until it closes or `until`.
    Waiting {
        until: Timestamp,
    },
    Leader,
    Follower,
    /// The election was abandoned (close, or the lock lost) while an action was out: once
    /// its answer is in, everything held is given back and the machine moves on.
    Unwinding {
        awaiting: Awaiting,
        then: Then,
    },
    Closed,
}

/// What the driver holds on this machine's behalf, as told by its answers.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, Default)]
struct Held {
    lock: bool,
    store: bool,
    socket: bool,
    connection: bool,
    /// This process's waiting room is open.
    room: bool,
    /// This process waits in another's waiting room.
    seat: bool,
}

/// The election machine of one process. See the module documentation.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Election {
    bugs: crate::bugs::Bugs,
    state: State,
    held: Held,
    backoff: Backoff,
    refused_backoff: Duration,
    room_patience: Duration,
    store_patience: Duration,
    store_retry: Duration,
    /// When the first try to open the store of this leadership was answered `StoreLocked`.
    store_locked_since: Option<Timestamp>,
    outputs: VecDeque<ElectionOutput>,
}

impl Election {
    /// A new machine that starts by trying the lock. `seed` jitters its waits.
    pub fn new(config: ElectionConfig, seed: u64) -> Self {
        Election {
            bugs: config.bugs,
            state: State::Electing(Awaiting::Lock),
            held: Held::default(),
            backoff: Backoff::new(config.initial_backoff, config.max_backoff, seed),
            refused_backoff: config.refused_backoff,
            room_patience: config.room_patience,
            store_patience: config.store_patience,
            store_retry: config.store_retry,
            store_locked_since: None,
            outputs: VecDeque::from([ElectionOutput::TryLock]),
        }
    }

    pub fn role(&self) -> Role {
        match self.state {
            State::Electing(_)
            | State::Backoff { .. }
            | State::StoreWait { .. }
            | State::Waiting { .. } => Role::Electing,
            State::Leader => Role::Leader,
            State::Follower => Role::Follower,
            State::Unwinding {
                then: Then::Elect, ..
            } => Role::Electing,
            State::Unwinding {
                then: Then::Close, ..
            }
            | State::Closed => Role::Closed,
        }
    }

    /// True once nothing more will come out of the machine.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed && self.outputs.is_empty()
    }

    /// Feeds one event. Answers that the machine is not waiting for are ignored.
    pub fn handle_input(&mut self, now: Timestamp, input: ElectionInput) {
        use ElectionInput as In;
        #[cfg(feature = "bug-injection")]
        if self.bugs.ignore_lock_loss && input == In::LockLost && self.state == State::Leader {
            return;
        }
        if let Some(awaiting) = self.awaiting() {
            if let Some(success) = answers(awaiting, input) {
                self.record_answer(awaiting, success);
            }
        }
        if input == In::LockLost {
            self.held.lock = false;
        }
        if input == In::WaitingRoomClosed || input == In::Admitted {
            if !self.held.seat {
                return;
            }
            // The driver let go of its seat when it saw the room close; an admitted seat
            // is the connection now, or is left below.
            self.held.seat = false;
        }
        self.state = match (self.state, input) {
            (State::Closed, _) => State::Closed,

            // A close wins over a re-election.
            (State::Unwinding { awaiting, .. }, In::CloseRequested) => State::Unwinding {
                awaiting,
                then: Then::Close,
            },
            (State::Unwinding { awaiting, then }, answer)
                if answers(awaiting, answer).is_some() =>
            {
                self.give_back();
                match then {
                    Then::Close => State::Closed,
                    Then::Elect => self.ask(Awaiting::Lock),
                }
            }
            (State::Unwinding { .. }, In::LockLost) => self.state,
            (State::Electing(awaiting), In::CloseRequested) => State::Unwinding {
                awaiting,
                then: Then::Close,
            },
            (State::Electing(awaiting @ (Awaiting::Store | Awaiting::Bind)), In::LockLost) => {
                State::Unwinding {
                    awaiting,
                    then: Then::Elect,
                }
            }
            (
                State::Backoff { .. }
                | State::StoreWait { .. }
                | State::Waiting { .. }
                | State::Leader
                | State::Follower,
                In::CloseRequested,
            ) => {
                self.give_back();
                State::Closed
            }

            (State::Electing(Awaiting::Lock), In::LockAcquired) => {
                self.store_locked_since = None;
                self.leave_room();
                self.held.room = true;
                self.emit(ElectionOutput::OpenWaitingRoom);
                self.ask(Awaiting::Store)
            }
            (State::Electing(Awaiting::Lock), In::LockBusy) => self.ask(Awaiting::Connect),
            (State::Electing(Awaiting::Lock), In::LockFailed) => self.fail(ElectionFailure::Lock),
            (State::Electing(Awaiting::Store), In::StoreOpened) => {
                self.store_locked_since = None;
                self.ask(Awaiting::Bind)
            }
            (State::Electing(Awaiting::Store), In::StoreOpenFailed) => {
                self.fail(ElectionFailure::StoreOpen)
            }
            (State::Electing(Awaiting::Store), In::StoreLocked) => {
                let since = *self.store_locked_since.get_or_insert(now);
                if now.saturating_since(since) < self.store_patience {
                    State::StoreWait {
                        until: now + self.store_retry,
                    }
                } else {
                    self.fail(ElectionFailure::StoreOpen)
                }
            }
            (State::StoreWait { .. }, In::TimerFired) => self.ask(Awaiting::Store),
            (State::StoreWait { .. }, In::LockLost) => {
                self.give_back();
                self.ask(Awaiting::Lock)
            }
            (State::Electing(Awaiting::Bind), In::SocketBound) => {
                self.backoff.reset();
                self.emit(ElectionOutput::Serve);
                self.close_room();
                State::Leader
            }
            (State::Electing(Awaiting::Bind), In::BindFailed) => self.fail(ElectionFailure::Bind),
            (State::Electing(Awaiting::Connect), In::Connected) => {
                self.backoff.reset();
                State::Follower
            }
            // Looked again from its seat: back to waiting on it.
            (State::Electing(Awaiting::Connect), In::ConnectFailed) if self.held.seat => {
                State::Waiting {
                    until: now + self.room_patience,
                }
            }
            (State::Electing(Awaiting::Connect), In::ConnectFailed) => self.ask(Awaiting::Room),
            (State::Electing(Awaiting::Room), In::InWaitingRoom) => State::Waiting {
                until: now + self.room_patience,
            },
            (State::Electing(Awaiting::Room), In::NoWaitingRoom) => State::Backoff {
                until: now + self.backoff.next_wait(),
            },
            (State::Electing(Awaiting::Room), In::Refused) => State::Backoff {
                until: now + self.refused_backoff,
            },
            (State::Waiting { .. }, In::WaitingRoomClosed) => self.ask(Awaiting::Lock),
            (State::Waiting { .. }, In::Admitted) => {
                self.held.connection = true;
                self.backoff.reset();
                State::Follower
            }
            // Answered on its seat while it looked again: the seat is not taken up.
            (state, In::Admitted) => {
                self.emit(ElectionOutput::LeaveWaitingRoom);
                state
            }
            // Patience over: it looks again, keeping its seat, where its hello waits for the
            // holder to serve.
            (State::Waiting { .. }, In::TimerFired) => self.ask(Awaiting::Lock),
            (State::Backoff { .. }, In::TimerFired) => self.ask(Awaiting::Lock),
            (State::Follower, In::Disconnected) => {
                self.held.connection = false;
                self.ask(Awaiting::Lock)
            }
            (State::Follower, In::Refused) => {
                self.held.connection = false;
                State::Backoff {
                    until: now + self.refused_backoff,
                }
            }
            (State::Leader, In::ServeFailed) => self.fail(ElectionFailure::Serve),
            (State::Leader, In::LockLost) => {
                self.give_back();
                self.ask(Awaiting::Lock)
            }
            (state, _) => state,
        };
    }

    /// The next action for the driver, in order.
    pub fn poll_output(&mut self) -> Option<ElectionOutput> {
        self.outputs.pop_front()
    }

    /// When the machine wants [`ElectionInput::TimerFired`], if it does.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Backoff { until } | State::StoreWait { until } | State::Waiting { until } => {
                Some(until)
            }
            _ => None,
        }
    }

    fn awaiting(&self) -> Option<Awaiting> {
        match self.state {
            State::Electing(awaiting) | State::Unwinding { awaiting, .. } => Some(awaiting),
            _ => None,
        }
    }

    fn record_answer(&mut self, awaiting: Awaiting, success: bool) {
        if success {
            match awaiting {
                Awaiting::Lock => self.held.lock = true,
                Awaiting::Store => self.held.store = true,
                Awaiting::Bind => self.held.socket = true,
                Awaiting::Connect => {
                    // Made from a seat (looking again), the connection took its place.
                    self.held.seat = false;
                    self.held.connection = true;
                }
                Awaiting::Room => self.held.seat = true,
            }
        }
    }

    /// Asks the driver to give back everything it holds for this machine.
    fn give_back(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held.lock || held.store || held.socket {
            self.emit(ElectionOutput::StepDown);
        }
        // After the step down: those waiting find the lock free when they are told.
        if held.room {
            self.emit(ElectionOutput::CloseWaitingRoom);
        }
        if held.connection {
            self.emit(ElectionOutput::Disconnect);
        }
        if held.seat {
            self.emit(ElectionOutput::LeaveWaitingRoom);
        }
    }

    fn leave_room(&mut self) {
        if std::mem::take(&mut self.held.seat) {
            self.emit(ElectionOutput::LeaveWaitingRoom);
        }
    }

    fn close_room(&mut self) {
        if std::mem::take(&mut self.held.room) {
            self.emit(ElectionOutput::CloseWaitingRoom);
        }
    }

    fn emit(&mut self, output: ElectionOutput) {
        self.outputs.push_back(output);
    }

    fn ask(&mut self, awaiting: Awaiting) -> State {
        self.emit(match awaiting {
            Awaiting::Lock => ElectionOutput::TryLock,
            Awaiting::Store => ElectionOutput::OpenStore,
            Awaiting::Bind => ElectionOutput::Bind,
            Awaiting::Connect => ElectionOutput::Connect,
            Awaiting::Room => ElectionOutput::EnterWaitingRoom,
        });
        State::Electing(awaiting)
    }

    fn fail(&mut self, failure: ElectionFailure) -> State {
        self.give_back();
        self.emit(ElectionOutput::Failed(failure));
        State::Closed
    }
}

/// Whether `input` answers `awaiting`, and if so whether it handed something over.
fn answers(awaiting: Awaiting, input: ElectionInput) -> Option<bool> {
    use ElectionInput as In;
    match (awaiting, input) {
        (Awaiting::Lock, In::LockAcquired)
        | (Awaiting::Store, In::StoreOpened)
        | (Awaiting::Bind, In::SocketBound)
        | (Awaiting::Connect, In::Connected)
        | (Awaiting::Room, In::InWaitingRoom) => Some(true),
        (Awaiting::Lock, In::LockBusy | In::LockFailed)
        | (Awaiting::Store, In::StoreOpenFailed | In::StoreLocked)
        | (Awaiting::Bind, In::BindFailed)
        | (Awaiting::Connect, In::ConnectFailed)
        | (Awaiting::Room, In::NoWaitingRoom | In::Refused) => Some(false),
        _ => None,
    }
}

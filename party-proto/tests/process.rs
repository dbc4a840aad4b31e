//! The whole process machine: the decisions that used to live in party-core's driver —
//! a leader's own operations through its in-process session, a refusal or a broken
//! connection backing off, a failed election failing what is pending, a leader that steps
//! down handing its operations to the next one.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use party_proto::election::ElectionFailure;
use party_proto::wire::{ClientMessage, ProtocolId, ReadOp, Response, ServerMessage, Welcome};
use party_proto::{
    ClientId, ElectionConfig, ElectionInput, ElectionOutput, ErrorCode, Process, ProcessConfig,
    ProcessInput, ProcessOutput, RequestId, Role, ServerConfig, ServerInput, ServerOutput,
    Timestamp,
};
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::ZERO;

fn process() -> Process {
    let config = ProcessConfig {
        server: ServerConfig {
            leader_pid: 7,
            ..ServerConfig::default()
        },
        ..ProcessConfig::default()
    };
    Process::new(ClientId(1), config, 3)
}

fn drain(process: &mut Process) -> Vec<ProcessOutput> {
    std::iter::from_fn(|| process.poll_output()).collect()
}

fn answer(process: &mut Process, input: ElectionInput) -> Vec<ProcessOutput> {
    process.handle_input(NOW, ProcessInput::Election(input));
    drain(process)
}

/// A process whose handle does not retry, its first output (`TryLock`) taken.
fn without_retry() -> Process {
    let config = ProcessConfig {
        client: party_proto::ClientConfig {
            retry: false,
            ..party_proto::ClientConfig::default()
        },
        ..ProcessConfig::default()
    };
    let mut process = Process::new(ClientId(1), config, 3);
    drain(&mut process);
    process
}

/// Takes the lock, opens, binds and serves.
fn leader() -> Process {
    let mut process = process();
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
    answer(&mut process, ElectionInput::LockAcquired);
    answer(&mut process, ElectionInput::StoreOpened);
    let serve = answer(&mut process, ElectionInput::SocketBound);
    assert_eq!(
        serve,
        [
            ProcessOutput::Election(ElectionOutput::Serve),
            ProcessOutput::Election(ElectionOutput::CloseWaitingRoom)
        ]
    );
    process.handle_input(NOW, ProcessInput::Served { term: 1 });
    assert!(drain(&mut process).is_empty(), "the welcome stays inside");
    assert_eq!(process.role().role, Role::Leader);
    assert_eq!(process.role().leader_pid, Some(7));
    process
}

/// Finds the lock busy and connects.
fn follower() -> Process {
    let mut process = process();
    drain(&mut process);
    let connect = answer(&mut process, ElectionInput::LockBusy);
    assert_eq!(connect, [ProcessOutput::Election(ElectionOutput::Connect)]);
    let hello = answer(&mut process, ElectionInput::Connected);
    assert!(matches!(
        &hello[..],
        [ProcessOutput::Send(ClientMessage::Hello(_))]
    ));
    assert_eq!(process.role().role, Role::Electing, "not welcomed yet");
    process
}

fn welcome() -> ProcessInput {
    welcome_from(1)
}

/// The welcome of the leader of generation `term`.
fn welcome_from(term: u64) -> ProcessInput {
    ProcessInput::FromLeader(ServerMessage::Welcome(Welcome {
        protocol: ProtocolId::CURRENT,
        leader_pid: 9,
        term,
        store: "fjall".into(),
        limits: ServerConfig::default().limits(),
    }))
}

#[test]
fn a_leaders_own_read_goes_to_the_store_through_its_own_session() {
    let mut process = leader();
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    let work = drain(&mut process);
    let [ProcessOutput::Store(ServerOutput::Read { id: store_id, .. })] = work[..] else {
        panic!("{work:?}");
    };
    let done = ServerInput::Completed {
        id: store_id,
        result: Ok(Response::Value(Some(bytes::Bytes::from_static(b"v")))),
    };
    process.handle_input(NOW, ProcessInput::Store(done));
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Completed {
            id,
            result: Ok(Response::Value(Some(bytes::Bytes::from_static(b"v"))))
        }]
    );
}

#[test]
fn a_refusal_backs_off_instead_of_knocking_again_at_once() {
    let mut process = follower();
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    let refusal = ErrorCode::TooManyConnections { limit: 1 };
    process.handle_input(
        NOW,
        ProcessInput::FromLeader(ServerMessage::Rejected(refusal.clone())),
    );
    process.handle_input(NOW, ProcessInput::LinkClosed);
    let outputs = drain(&mut process);
    assert_eq!(
        outputs,
        [ProcessOutput::Completed {
            id,
            result: Err(refusal.clone())
        }]
    );
    assert_eq!(process.role().rejected, Some(refusal));
    let wait = process.poll_timeout().expect("a backoff");
    assert!(wait.saturating_since(NOW) >= ElectionConfig::default().refused_backoff);
    process.handle_input(wait, ProcessInput::TimerFired);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
}

#[test]
fn a_connection_that_just_ends_tries_the_lock_at_once() {
    let mut process = follower();
    process.handle_input(NOW, welcome());
    assert_eq!(process.role().role, Role::Follower);
    assert_eq!(process.role().leader_pid, Some(9));
    process.handle_input(NOW, ProcessInput::LinkClosed);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
}

#[test]
fn a_broken_connection_fails_what_is_pending_and_backs_off() {
    let mut process = follower();
    process.handle_input(NOW, welcome());
    let sent = drain(&mut process);
    assert!(sent.is_empty(), "{sent:?}");
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    assert!(matches!(
        &drain(&mut process)[..],
        [ProcessOutput::Send(ClientMessage::Read { .. })]
    ));
    let garbage = ErrorCode::Malformed("garbage".into());
    process.handle_input(NOW, ProcessInput::LinkBroken(garbage.clone()));
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Completed {
            id,
            result: Err(garbage)
        }]
    );
    assert!(
        process.poll_timeout().is_some(),
        "waits before trying again"
    );
}

/// The errors a process decides about itself (its election's failure, a leader it
/// refuses, a store locked outside the party) are never sent: from a leader, in an answer
/// or a refusal, they are its mistake, `Malformed`, not this process's state.
#[test]
fn an_error_no_leader_sends_is_taken_as_malformed() {
    let never_sent = [
        ErrorCode::ElectionFailed(ElectionFailure::StoreOpen),
        ErrorCode::LeaderOfOtherUser { uid: 0 },
        ErrorCode::Locked,
    ];
    for error in never_sent {
        let malformed = |result: &Result<Response, ErrorCode>| matches!(result, Err(ErrorCode::Malformed(text)) if text.contains(&error.to_string()));
        let mut process = follower();
        process.handle_input(NOW, welcome());
        drain(&mut process);
        let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
        drain(&mut process);
        let answer = ServerMessage::Reply {
            id,
            result: Err(error.clone()),
        };
        process.handle_input(NOW, ProcessInput::FromLeader(answer));
        match &drain(&mut process)[..] {
            [ProcessOutput::Completed { id: done, result }] => {
                assert_eq!(*done, id);
                assert!(malformed(result), "{error:?} answered as {result:?}");
            }
            other => panic!("{other:?}"),
        }

        let mut process = follower();
        let refused = ServerMessage::Rejected(error.clone());
        process.handle_input(NOW, ProcessInput::FromLeader(refused));
        let rejected = process.role().rejected.map(Err);
        assert!(rejected.as_ref().is_some_and(malformed), "{rejected:?}");
    }
    let sent = ErrorCode::TooManyConnections { limit: 1 };
    assert_eq!(
        sent.clone().into_received(),
        sent,
        "what leaders send is kept"
    );
}

#[test]
fn a_failed_election_is_reported_before_the_failures_it_causes() {
    let mut process = process();
    drain(&mut process);
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    answer(&mut process, ElectionInput::LockAcquired);
    let outputs = answer(&mut process, ElectionInput::StoreOpenFailed);
    assert_eq!(
        outputs,
        [
            ProcessOutput::Election(ElectionOutput::StepDown),
            ProcessOutput::Election(ElectionOutput::CloseWaitingRoom),
            ProcessOutput::Election(ElectionOutput::Failed(ElectionFailure::StoreOpen)),
            ProcessOutput::Completed {
                id,
                result: Err(ErrorCode::ElectionFailed(ElectionFailure::StoreOpen))
            },
        ]
    );
    assert_eq!(process.role().failure, Some(ElectionFailure::StoreOpen));
    assert!(process.is_closed());
}

#[test]
fn a_leader_that_steps_down_re_sends_its_own_operations_to_the_next_one() {
    let mut process = leader();
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    assert!(matches!(
        &drain(&mut process)[..],
        [ProcessOutput::Store(ServerOutput::Read { .. })]
    ));
    let later = NOW + Duration::from_millis(1);
    process.handle_input(later, ProcessInput::Election(ElectionInput::LockLost));
    assert_eq!(
        drain(&mut process),
        [
            ProcessOutput::Election(ElectionOutput::StepDown),
            ProcessOutput::Election(ElectionOutput::TryLock)
        ]
    );
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(later, welcome());
    let resent = drain(&mut process);
    assert!(
        matches!(&resent[..], [ProcessOutput::Send(ClientMessage::Read { id: i, .. })] if *i == id),
        "{resent:?}"
    );
}

/// Without retries, what a leader's own session had not answered when it stepped down
/// fails then, as a follower's requests do when their connection ends: not when (or if)
/// another connection comes.
#[test]
fn without_retry_a_leader_that_steps_down_fails_its_own_operations_at_once() {
    let mut process = without_retry();
    answer(&mut process, ElectionInput::LockAcquired);
    answer(&mut process, ElectionInput::StoreOpened);
    answer(&mut process, ElectionInput::SocketBound);
    process.handle_input(NOW, ProcessInput::Served { term: 1 });
    drain(&mut process);
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    assert!(matches!(
        &drain(&mut process)[..],
        [ProcessOutput::Store(ServerOutput::Read { .. })]
    ));
    let outputs = answer(&mut process, ElectionInput::LockLost);
    let failed = ProcessOutput::Completed {
        id,
        result: Err(ErrorCode::ConnectionLost),
    };
    assert!(outputs.contains(&failed), "{outputs:?}");
}

fn at(millis: u64) -> Timestamp {
    NOW + Duration::from_millis(millis)
}

/// Each failover is counted once the handle is served again, with why its leader went
/// and how long it was without one; a closing handle counts none.
#[test]
fn failovers_are_counted_with_their_cause_and_pause() {
    use party_proto::wire::LeaveCause;
    use party_proto::TakeoverCause;
    let cause = |process: &Process| process.role().takeovers.last.map(|t| t.cause);

    // A connection that ends without a word: a crash.
    let mut process = follower();
    process.handle_input(NOW, welcome());
    assert_eq!(process.role().term, Some(1));
    process.handle_input(at(2), ProcessInput::LinkClosed);
    assert_eq!(process.role().takeovers.count, 0, "not served again yet");
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(at(7), welcome_from(2));
    let takeovers = process.role().takeovers;
    assert_eq!(takeovers.count, 1);
    assert_eq!(cause(&process), Some(TakeoverCause::Crash));
    assert_eq!(
        takeovers.last.map(|t| t.paused),
        Some(Duration::from_millis(5))
    );

    // The leader says it is leaving: a hand-over, even if the next leader dies in turn
    // before serving (the pause counts from the first loss).
    let leaving = ServerMessage::Leaving(LeaveCause::Closing);
    process.handle_input(at(10), ProcessInput::FromLeader(leaving));
    process.handle_input(at(10), ProcessInput::LinkClosed);
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(at(11), ProcessInput::LinkClosed);
    drain(&mut process);
    answer(&mut process, ElectionInput::LockAcquired);
    answer(&mut process, ElectionInput::StoreOpened);
    answer(&mut process, ElectionInput::SocketBound);
    process.handle_input(at(13), ProcessInput::Served { term: 5 });
    assert_eq!(process.role().takeovers.count, 2);
    assert_eq!(cause(&process), Some(TakeoverCause::HandOver));
    assert_eq!(
        process.role().takeovers.last.map(|t| t.paused),
        Some(Duration::from_millis(3))
    );
    assert_eq!(
        process.role().term,
        Some(5),
        "as leader, its own generation"
    );

    // Its own lock lost: it steps down, and counts that once served again.
    process.handle_input(at(20), ProcessInput::Election(ElectionInput::LockLost));
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(at(24), welcome_from(6));
    assert_eq!(process.role().takeovers.count, 3);
    assert_eq!(cause(&process), Some(TakeoverCause::LockLost));

    // Its leader's store failed, and the leader said so.
    let leaving = ServerMessage::Leaving(LeaveCause::StoreFailed);
    process.handle_input(at(26), ProcessInput::FromLeader(leaving));
    process.handle_input(at(26), ProcessInput::LinkClosed);
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(at(28), welcome_from(7));
    assert_eq!(process.role().takeovers.count, 4);
    assert_eq!(cause(&process), Some(TakeoverCause::StoreFailed));

    // Closing is no failover.
    process.handle_input(at(30), ProcessInput::Close);
    process.handle_input(at(30), ProcessInput::LinkClosed);
    assert_eq!(process.role().takeovers.count, 4);
}

/// A leader that steps down tells its followers why: it lost its lock, or its store failed
/// (the election fails then, and the handle with it), or its handle is closing.
#[test]
fn a_leader_steps_down_for_the_cause_it_tells_its_followers() {
    use party_proto::wire::LeaveCause;
    let step_down = ProcessOutput::Election(ElectionOutput::StepDown);

    let mut process = leader();
    let outputs = answer(&mut process, ElectionInput::LockLost);
    assert!(outputs.contains(&step_down), "{outputs:?}");
    assert_eq!(process.leave_cause(), LeaveCause::LockLost);

    let mut process = leader();
    let outputs = answer(&mut process, ElectionInput::ServeFailed);
    assert!(outputs.contains(&step_down), "{outputs:?}");
    assert_eq!(process.leave_cause(), LeaveCause::StoreFailed);
    assert_eq!(process.role().failure, Some(ElectionFailure::Serve));

    let mut process = leader();
    process.handle_input(NOW, ProcessInput::Close);
    drain(&mut process);
    assert_eq!(process.leave_cause(), LeaveCause::Closing);

    // A store that fails to serve a process not leading (not possible in party-core) is
    // no store failure to tell of.
    let mut process = follower();
    answer(&mut process, ElectionInput::ServeFailed);
    assert_eq!(process.leave_cause(), LeaveCause::LockLost);
}

/// Closing an iterator tells the leader, so that it drops its side.
#[test]
fn closing_an_iterator_tells_the_leader() {
    let mut process = follower();
    process.handle_input(NOW, welcome());
    drain(&mut process);
    let iter = process.open_iter(NOW, party_proto::IterOptions::default());
    assert!(matches!(
        &drain(&mut process)[..],
        [ProcessOutput::Send(ClientMessage::IterOpen { .. })]
    ));
    process.close_iter(NOW, iter);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Send(ClientMessage::IterClose { iter })]
    );
}

/// A leader that welcomes the process clears the refusal of the one before: the next
/// connection that ends is an ordinary end (the lock at once), not a refusal (a wait).
#[test]
fn a_welcome_clears_an_earlier_refusal() {
    let mut process = refused_and_looking_again();
    assert!(process.role().rejected.is_some());
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(NOW, welcome());
    assert_eq!(process.role().rejected, None);
    drain(&mut process);
    process.handle_input(NOW, ProcessInput::LinkClosed);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
}

/// Refused, then backed off and looking again: the process after it.
fn refused_and_looking_again() -> Process {
    let mut process = follower();
    let refusal = ErrorCode::TooManyConnections { limit: 1 };
    process.handle_input(
        NOW,
        ProcessInput::FromLeader(ServerMessage::Rejected(refusal)),
    );
    process.handle_input(NOW, ProcessInput::LinkClosed);
    let later = process.poll_timeout().expect("a backoff");
    drain(&mut process);
    process.handle_input(later, ProcessInput::TimerFired);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
    process
}

/// A refused process that then takes the lock and leads is ready: the refusal was the
/// last leader's, and `Db::ready` fails while one is told.
#[test]
fn leading_clears_an_earlier_refusal() {
    let mut process = refused_and_looking_again();
    answer(&mut process, ElectionInput::LockAcquired);
    answer(&mut process, ElectionInput::StoreOpened);
    answer(&mut process, ElectionInput::SocketBound);
    process.handle_input(NOW, ProcessInput::Served { term: 2 });
    assert_eq!(process.role().role, Role::Leader);
    assert_eq!(process.role().rejected, None);
}

/// After a refusal, a later connection that ends before any welcome (its leader died with
/// the connect in its backlog) is no refusal: the process tries the lock at once.
#[test]
fn a_connection_ending_unwelcomed_after_an_earlier_refusal_tries_the_lock_at_once() {
    let mut process = refused_and_looking_again();
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(NOW, ProcessInput::LinkClosed);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
}

/// A process is closed only once its election is and the driver has taken every output.
#[test]
fn a_process_is_closed_only_when_closed_and_drained() {
    let mut process = follower();
    process.handle_input(NOW, welcome());
    drain(&mut process);
    assert!(!process.is_closed(), "a live follower with nothing to say");
    let mut process = leader();
    process.handle_input(NOW, ProcessInput::Close);
    assert!(!process.is_closed(), "its step-down is not taken yet");
    let outputs = drain(&mut process);
    assert!(outputs.contains(&ProcessOutput::Election(ElectionOutput::StepDown)));
    assert!(process.is_closed());
}

/// A peer that never welcomes is no leader: at the deadline the connection is dropped,
/// the election waits as after a refusal, and what is pending waits for a real leader.
#[test]
fn a_peer_that_never_welcomes_is_dropped_at_the_deadline() {
    let mut process = follower();
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    assert!(
        drain(&mut process).is_empty(),
        "requests wait for the welcome"
    );
    let due = NOW + party_proto::ClientConfig::default().welcome_timeout;
    assert_eq!(process.poll_timeout(), Some(due));
    process.handle_input(due, ProcessInput::TimerFired);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::Disconnect)],
        "no completion, and no knocking again at once"
    );
    assert_eq!(process.role().rejected, Some(ErrorCode::TimedOut));
    let retry = process.poll_timeout().expect("a backoff");
    assert!(retry > due);
    process.handle_input(retry, ProcessInput::TimerFired);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(retry, welcome());
    let sent = drain(&mut process);
    assert!(
        matches!(&sent[..], [ProcessOutput::Send(ClientMessage::Read { id: i, .. })] if *i == id),
        "{sent:?}"
    );
    assert_eq!(process.role().rejected, None);
}

/// A connection that breaks while its leader lives on is no failover: served again by the
/// leader of the same generation, the handle counts none.
#[test]
fn served_again_by_the_same_leader_is_no_failover() {
    let mut process = follower();
    process.handle_input(NOW, welcome());
    let broken = ErrorCode::Malformed("garbage".into());
    process.handle_input(at(1), ProcessInput::LinkBroken(broken));
    let retry = process.poll_timeout().expect("a backoff");
    drain(&mut process);
    process.handle_input(retry, ProcessInput::TimerFired);
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(retry, welcome());
    assert_eq!(process.role().takeovers.count, 0);
    assert_eq!(process.role().takeovers.last, None);
}

/// A leader of another user is refused before it hears a word: the connection is
/// dropped, what is pending fails with the typed refusal, and the election waits.
#[test]
fn a_leader_of_another_user_is_refused_before_the_hello() {
    let config = ProcessConfig {
        user: Some(1000),
        ..ProcessConfig::default()
    };
    let mut process = Process::new(ClientId(1), config, 3);
    drain(&mut process);
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    answer(&mut process, ElectionInput::LockBusy);
    process.handle_input(NOW, ProcessInput::Connected { peer_uid: Some(0) });
    let refusal = ErrorCode::LeaderOfOtherUser { uid: 0 };
    assert_eq!(
        drain(&mut process),
        [
            ProcessOutput::Election(ElectionOutput::Disconnect),
            ProcessOutput::Completed {
                id,
                result: Err(refusal.clone())
            }
        ],
        "no hello sent"
    );
    assert_eq!(process.role().rejected, Some(refusal));
    assert!(process.poll_timeout().is_some(), "it tries again later");
    // Its own user's leader is served.
    let mut process = Process::new(
        ClientId(2),
        ProcessConfig {
            user: Some(1000),
            ..ProcessConfig::default()
        },
        3,
    );
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    process.handle_input(
        NOW,
        ProcessInput::Connected {
            peer_uid: Some(1000),
        },
    );
    assert!(matches!(
        &drain(&mut process)[..],
        [ProcessOutput::Send(ClientMessage::Hello(_))]
    ));
}

/// A leader that closes is drained: nothing more is sent to it, and once it has answered
/// what it was sent the process lets it go; nothing fails, even without retries, and what
/// waited goes to the next leader.
#[test]
fn a_closing_leader_is_drained_and_nothing_fails() {
    use party_proto::wire::LeaveCause;
    let mut process = without_retry();
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(NOW, welcome());
    drain(&mut process);
    let first = process.read(NOW, ReadOp::Get { key: b"a".to_vec() });
    assert_eq!(drain(&mut process).len(), 1, "sent");
    let leaving = ServerMessage::Leaving(LeaveCause::Closing);
    process.handle_input(NOW, ProcessInput::FromLeader(leaving));
    let second = process.read(NOW, ReadOp::Get { key: b"b".to_vec() });
    assert!(
        drain(&mut process).is_empty(),
        "nothing more goes to a closing leader"
    );
    let reply = ServerMessage::Reply {
        id: first,
        result: Ok(Response::Value(None)),
    };
    process.handle_input(at(1), ProcessInput::FromLeader(reply));
    let outputs = drain(&mut process);
    let answered = ProcessOutput::Completed {
        id: first,
        result: Ok(Response::Value(None)),
    };
    assert!(outputs.contains(&answered), "{outputs:?}");
    assert!(
        outputs.contains(&ProcessOutput::Election(ElectionOutput::Disconnect)),
        "let go once answered: {outputs:?}"
    );
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, ProcessOutput::Completed { id, .. } if *id == second)),
        "the second waits for the next leader: {outputs:?}"
    );
}

/// Lost its leader, found the lock busy and nobody listening, and sat down in the lock
/// holder's waiting room: its hello is said on the seat.
fn seated() -> Process {
    let mut process = process();
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    let room = answer(&mut process, ElectionInput::ConnectFailed);
    assert_eq!(
        room,
        [ProcessOutput::Election(ElectionOutput::EnterWaitingRoom)]
    );
    process.handle_input(NOW, ProcessInput::Seated { peer_uid: None });
    let hello = drain(&mut process);
    assert!(
        matches!(&hello[..], [ProcessOutput::Send(ClientMessage::Hello(_))]),
        "{hello:?}"
    );
    assert_eq!(process.role().role, Role::Electing);
    process
}

#[test]
fn a_seat_the_holder_takes_is_the_connection_to_it_and_its_requests_wait_for_the_welcome() {
    let mut process = seated();
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    assert!(
        drain(&mut process).is_empty(),
        "nothing but the hello before a welcome"
    );
    let patience = ElectionConfig::default().room_patience;
    assert_eq!(
        process.poll_timeout(),
        Some(NOW + patience),
        "no welcome deadline in a room: the holder's store may take long to open"
    );
    served_once_welcomed(
        &mut process,
        id,
        "the read goes out on the seat, no connect",
    );
    assert_eq!(process.role().leader_pid, Some(9));
    // Its end is a leader lost, as any connection's (not a room closing): the next leader
    // is a failover.
    process.handle_input(NOW, ProcessInput::LinkClosed);
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::Connected);
    process.handle_input(NOW, welcome_from(2));
    assert_eq!(process.role().takeovers.count, 1);
}

#[test]
fn a_seat_that_ends_unanswered_runs_for_the_lock_again_and_loses_nothing() {
    let mut process = seated();
    let id = process.read(NOW, ReadOp::Get { key: b"k".to_vec() });
    process.handle_input(NOW, ProcessInput::LinkClosed);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)],
        "the room closed: straight to the lock, nothing failed"
    );
    answer(&mut process, ElectionInput::LockBusy);
    let hello = answer(&mut process, ElectionInput::Connected);
    assert!(
        matches!(&hello[..], [ProcessOutput::Send(ClientMessage::Hello(_))]),
        "{hello:?}"
    );
    served_once_welcomed(
        &mut process,
        id,
        "the read waited, and goes to the leader found",
    );
}

/// Welcomed, the process sends its waiting read `id` (the only thing it sends) and takes
/// the answer; no failover is told, as it had no leader to lose.
fn served_once_welcomed(process: &mut Process, id: RequestId, how: &str) {
    process.handle_input(NOW, welcome());
    assert_eq!(process.role().role, Role::Follower);
    let sent = drain(process);
    assert!(
        matches!(&sent[..], [ProcessOutput::Send(ClientMessage::Read { .. })]),
        "{how}: {sent:?}"
    );
    assert_eq!(process.role().takeovers.count, 0, "no leader lost");
    let reply = ServerMessage::Reply {
        id,
        result: Ok(Response::Value(None)),
    };
    process.handle_input(NOW, ProcessInput::FromLeader(reply));
    assert_eq!(
        drain(process),
        [ProcessOutput::Completed {
            id,
            result: Ok(Response::Value(None))
        }]
    );
}

#[test]
fn a_connection_made_from_a_seat_takes_its_place() {
    let mut process = seated();
    let patience = process.poll_timeout().expect("the room's patience");
    process.handle_input(patience, ProcessInput::TimerFired);
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::TryLock)]
    );
    answer(&mut process, ElectionInput::LockBusy);
    let hello = answer(&mut process, ElectionInput::Connected);
    assert!(
        matches!(&hello[..], [ProcessOutput::Send(ClientMessage::Hello(_))]),
        "a hello on the new connection, no leaving to do: {hello:?}"
    );
    process.handle_input(NOW, welcome());
    assert_eq!(process.role().role, Role::Follower);
}

#[test]
fn a_seat_answered_while_looking_again_is_left_and_what_came_is_not_read() {
    let mut process = seated();
    let patience = process.poll_timeout().expect("the room's patience");
    process.handle_input(patience, ProcessInput::TimerFired);
    drain(&mut process);
    process.handle_input(patience, welcome());
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::LeaveWaitingRoom)]
    );
    assert_eq!(process.role().role, Role::Electing);
    assert_eq!(process.role().leader_pid, None, "the welcome was not taken");
    answer(&mut process, ElectionInput::LockBusy);
    let hello = answer(&mut process, ElectionInput::Connected);
    assert!(
        matches!(&hello[..], [ProcessOutput::Send(ClientMessage::Hello(_))]),
        "{hello:?}"
    );
}

#[test]
fn the_room_of_another_user_is_not_sat_in() {
    let mut process = Process::new(
        ClientId(1),
        ProcessConfig {
            user: Some(1000),
            ..ProcessConfig::default()
        },
        3,
    );
    drain(&mut process);
    answer(&mut process, ElectionInput::LockBusy);
    answer(&mut process, ElectionInput::ConnectFailed);
    process.handle_input(NOW, ProcessInput::Seated { peer_uid: Some(0) });
    assert_eq!(
        drain(&mut process),
        [ProcessOutput::Election(ElectionOutput::LeaveWaitingRoom)],
        "left unheard: no hello"
    );
    assert!(process.role().rejected.is_some(), "{:?}", process.role());
    let wait = process
        .poll_timeout()
        .expect("backs off as after a refusal");
    assert_eq!(
        wait.saturating_since(NOW),
        ElectionConfig::default().refused_backoff,
        "not knocking again at once"
    );
}

/// What reaches a follower's process from a leader that breaks the protocol, or from the
/// link it comes through.
#[derive(Debug, Clone)]
enum FromLink {
    Message(ServerMessage),
    Closed,
    Broken,
    /// Time passes, by this many milliseconds.
    Time(u64),
}

fn from_link() -> impl Strategy<Value = FromLink> {
    prop_oneof![
        12 => support::server_message().prop_map(|m| FromLink::Message(support::among_known_ids(m))),
        3 => Just(FromLink::Message(support::welcome())),
        1 => Just(FromLink::Closed),
        1 => Just(FromLink::Broken),
        2 => (0u64..2000).prop_map(FromLink::Time),
    ]
}

proptest! {
    /// A follower's whole process (its election, takeovers and session) takes whatever
    /// its leader sends without a panic, connecting again as often as its link ends;
    /// closed, it has answered every request once.
    #[test]
    fn a_follower_process_takes_whatever_its_leader_sends(
        inputs in prop::collection::vec(from_link(), 0..60),
    ) {
        let mut process = follower();
        let mut now = NOW;
        let mut issued = BTreeSet::new();
        let mut completed = BTreeSet::new();
        for (n, input) in inputs.into_iter().enumerate() {
            if n % 5 == 0 {
                issued.insert(process.read(now, ReadOp::Get { key: b"k".to_vec() }));
            }
            let input = match input {
                FromLink::Message(message) => ProcessInput::FromLeader(message),
                FromLink::Closed => ProcessInput::LinkClosed,
                FromLink::Broken => ProcessInput::LinkBroken(ErrorCode::Malformed("garbage".into())),
                FromLink::Time(millis) => {
                    now = now + Duration::from_millis(millis);
                    ProcessInput::TimerFired
                }
            };
            process.handle_input(now, input);
            run_elsewhere_led(&mut process, now, &mut completed)?;
        }
        process.handle_input(now, ProcessInput::Close);
        run_elsewhere_led(&mut process, now, &mut completed)?;
        prop_assert_eq!(completed, issued);
    }
}

/// Carries out what `process` asks while another process holds the lock (and listens),
/// noting what it completes.
fn run_elsewhere_led(
    process: &mut Process,
    now: Timestamp,
    completed: &mut BTreeSet<RequestId>,
) -> Result<(), TestCaseError> {
    while let Some(output) = process.poll_output() {
        let answer = match output {
            ProcessOutput::Completed { id, .. } => {
                prop_assert!(completed.insert(id), "{:?} completed twice", id);
                None
            }
            ProcessOutput::Election(ElectionOutput::TryLock) => Some(ElectionInput::LockBusy),
            ProcessOutput::Election(ElectionOutput::Connect) => Some(ElectionInput::Connected),
            _ => None,
        };
        if let Some(answer) = answer {
            process.handle_input(now, ProcessInput::Election(answer));
        }
    }
    Ok(())
}

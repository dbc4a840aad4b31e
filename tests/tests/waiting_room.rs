//! A process that finds the lock taken and nobody listening yet waits in the lock holder's
//! waiting room, without polling, and is served there the moment the holder serves (see
//! party-proto's election). Real processes: the holder is kept from serving by another
//! program holding its store, the waiting one records its machine's inputs, which tell how
//! it waited and how it came to follow.

#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use party_core::BackendKind;
use party_proto::recording::{decode_segment, Record};
use party_proto::wire::{FrameDecoder, ServerMessage, DEFAULT_MAX_FRAME_LEN};
use party_proto::{ElectionInput, ProcessInput};
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

#[test]
fn a_follower_waits_for_a_slow_leader_in_its_room_and_is_served_there() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let records = tempfile::tempdir().unwrap();
    // Another program holds the store: the lock holder waits for it, its room open.
    let held = BackendKind::Fjall
        .open(&dir.join(BackendKind::Fjall.name()))
        .unwrap();
    let mut holder = Node::spawn(NODE, &dir, &[]);
    let socket_path = PathBuf::from(holder.send("socket").strip_prefix("ok ").unwrap());
    let room = room_of(&socket_path);
    wait_for("the holder's room", || room.exists());
    assert!(!socket_path.exists(), "the holder does not serve yet");

    let mut waiting = Node::spawn_with_env(
        NODE,
        &dir,
        &[],
        &[("PARTY_RECORD", records.path().to_str().unwrap())],
    );
    wait_for("a process waiting in the room", || seats(&room) == 1);
    waiting.submit("get k");
    drop(held);
    assert_eq!(waiting.answer(), "none", "served once the holder serves");
    assert_eq!(holder.send("ready"), "ok leader");
    assert!(!room.exists(), "a serving leader's room is closed");
    assert_eq!(waiting.send("ready"), "ok follower");
    assert_eq!(waiting.send("close"), "ok");

    let seen = recorded(records.path());
    let count = |wanted: Seen| seen.iter().filter(|s| **s == wanted).count();
    // Its first connect found the room open, and so did any after it: it never backed
    // off on a timer. The holder took its seat as it came to serve: no room closed on it,
    // its seat was not hung up on, and no connect after it sat down (a look again from its
    // seat, its patience run out, finds the lock busy and nobody listening yet), only the
    // welcome, there; unless a look again came between the holder binding its socket and
    // taking the seats (a loaded machine): it then connects instead, once, and is welcomed
    // there.
    assert!(
        count(Seen::Election(ElectionInput::InWaitingRoom)) >= 1,
        "{seen:?}"
    );
    assert_eq!(
        count(Seen::Election(ElectionInput::NoWaitingRoom)),
        0,
        "{seen:?}"
    );
    assert_eq!(
        count(Seen::Election(ElectionInput::WaitingRoomClosed)),
        0,
        "{seen:?}"
    );
    assert_eq!(count(Seen::Welcome), 1, "{seen:?}");
    let seated = seen
        .iter()
        .position(|s| *s == Seen::Election(ElectionInput::InWaitingRoom))
        .unwrap();
    // Nothing between its seat and its welcome but looks again: its seat was never hung
    // up on (its own close, after the welcome, ends its connection).
    let welcomed = seen.iter().position(|s| *s == Seen::Welcome).unwrap();
    assert!(welcomed > seated, "{seen:?}");
    let mut looked_again = &seen[seated + 1..welcomed];
    if let [before @ .., Seen::Election(ElectionInput::LockBusy), Seen::Election(ElectionInput::Connected)] =
        looked_again
    {
        looked_again = before;
    }
    assert!(
        looked_again.iter().all(|s| matches!(
            s,
            Seen::Election(ElectionInput::LockBusy | ElectionInput::ConnectFailed)
        )),
        "{seen:?}"
    );
}

/// What a recording tells of how a handle found its leader.
#[derive(Debug, PartialEq)]
enum Seen {
    Election(ElectionInput),
    /// Its seat or connection ended (closed or broken).
    LinkEnded,
    Welcome,
}

/// Where the waiting room of the leader's socket `socket` is.
fn room_of(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".room");
    PathBuf::from(name)
}

/// Connections waiting unaccepted at the listening socket `path`: Linux lists each under
/// the listener's path, beside the listener itself.
fn seats(path: &Path) -> usize {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    let path = path.to_str().unwrap();
    let listed = table
        .lines()
        .filter(|line| line.split_whitespace().nth(7) == Some(path))
        .count();
    listed.saturating_sub(1)
}

/// Waits for a state another process reaches, which nothing announces.
fn wait_for(what: &str, reached: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reached() {
        assert!(Instant::now() < deadline, "never reached: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The election's inputs and the welcomes (in the bytes read from a leader) of every
/// handle recorded in `dir`, in order.
fn recorded(dir: &Path) -> Vec<Seen> {
    let mut seen = Vec::new();
    for file in party_tests::recorded_processes(dir) {
        let segment = decode_segment(&std::fs::read(&file).unwrap()).unwrap();
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        for record in segment.records {
            match record {
                Record::Input { input, .. } => {
                    let input = match input.into_owned() {
                        ProcessInput::Election(input) => input,
                        ProcessInput::Connected { .. } => ElectionInput::Connected,
                        ProcessInput::Seated { .. } => ElectionInput::InWaitingRoom,
                        ProcessInput::LinkClosed | ProcessInput::LinkBroken(_) => {
                            seen.push(Seen::LinkEnded);
                            continue;
                        }
                        _ => continue,
                    };
                    // Each connection's bytes apart, a seat's too.
                    if let ElectionInput::Connected | ElectionInput::InWaitingRoom = input {
                        decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
                    }
                    seen.push(Seen::Election(input));
                }
                Record::Received { bytes, .. } => {
                    let mut read = &bytes.0[..];
                    while let Some(message) = decoder.decode::<ServerMessage>(&mut read).unwrap() {
                        if let ServerMessage::Welcome(_) = message {
                            seen.push(Seen::Welcome);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    seen
}

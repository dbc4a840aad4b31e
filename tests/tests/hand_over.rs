//! A leader that closes hands over: it tells each follower it is closing and answers what
//! the follower asked before it goes, within a bounded drain, rather than cutting the
//! connection as a lost lock or a crash would (the follower would send its requests again,
//! and a write older than the resend window would end `OutcomeUnknown`). And a follower
//! that goes away in the middle of an answer costs the leader that connection alone. Real
//! processes: a leader, and a follower written by hand here, which can stop reading, or go,
//! at a chosen moment.

#![cfg(unix)]

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use party_proto::wire::{
    encode_frame, ClientMessage, FrameDecoder, Hello, LeaveCause, ProtocolId, ReadOp, Response,
    ServerMessage,
};
use party_proto::{ClientId, RequestId};
use party_tests::Node;

const NODE: &str = env!("CARGO_BIN_EXE_party-node");

/// Values asked for at once, each far more than a socket holds: the leader cannot finish
/// writing the first answer until its follower reads most of it.
const VALUES: usize = 2;
const VALUE_LEN: usize = 16 << 20;

/// Bound on each wait, against a hang: no timing is expected of the leader.
const PATIENCE: Duration = Duration::from_secs(30);

#[test]
fn a_leader_closing_while_a_big_answer_waits_for_its_follower_sends_it_whole_then_leaves() {
    let dir = tempfile::tempdir().unwrap();
    // Left unread from now on, the first answer keeps the leader writing it when it is
    // told to close.
    let (mut leader, mut follower, mut heard) = writing_a_big_answer(dir.path(), &[]);
    let socket = dir.path().canonicalize().unwrap().join("party.sock");

    leader.submit("close");
    // The listener goes once the leader has begun to stop, and with it the socket's name.
    let began = Instant::now();
    while socket.exists() {
        assert!(
            began.elapsed() < PATIENCE,
            "the leader never stopped serving"
        );
        std::thread::yield_now();
    }

    while heard.answered.len() < VALUES || heard.left.is_none() {
        heard.read(&mut follower);
    }
    heard.answered.sort_unstable();
    let asked: Vec<RequestId> = (0..VALUES as u64).map(RequestId).collect();
    assert_eq!(heard.answered, asked, "each asked once, each answered once");
    assert_eq!(heard.left, Some(LeaveCause::Closing));
    // The follower lets go: the leader's drain ends.
    drop(follower);
    assert_eq!(leader.answer(), "ok", "the leader closed");
}

/// A follower that goes away while its leader waits to write it a big answer costs the
/// leader that connection alone: the write fails, and the leader serves on. Even in a
/// process where a write to a closed socket raises SIGPIPE with its default action (a C
/// program embedding party, or a Rust one that restored it): every write goes with
/// `MSG_NOSIGNAL`.
#[test]
fn a_follower_gone_while_its_big_answer_is_written_costs_the_leader_that_connection_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, follower, _) = writing_a_big_answer(dir.path(), &["--sigpipe-default"]);
    assert_eq!(leader.send("followers"), "ok 1");

    // The leader waits for room to write the rest of the first answer: the connection's
    // end is what it meets next.
    drop(follower);
    let began = Instant::now();
    loop {
        assert_alive(&mut leader);
        if leader.send("followers") == "ok 0" {
            break;
        }
        assert!(
            began.elapsed() < PATIENCE,
            "the leader never let go of the connection"
        );
    }
    assert_eq!(leader.send("put after gone"), "ok");
    assert_eq!(leader.send("get after"), "ok gone");
    assert_eq!(leader.send("close"), "ok");
}

/// Likewise for followers the leader turns away: a refusal written to a connection whose
/// other end no longer reads costs the leader nothing.
#[test]
fn a_refusal_to_a_follower_already_gone_costs_the_leader_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Node::spawn(
        NODE,
        dir.path(),
        &["--sigpipe-default", "--max-connections", "0"],
    );
    assert_eq!(leader.send("ready"), "ok leader");
    let socket = dir.path().canonicalize().unwrap().join("party.sock");
    let connect = || UnixStream::connect(&socket).expect("connect to the leader's socket");
    // Stopped, the leader accepts nothing: these connect, wait in its backlog, and stop
    // reading before it writes each its refusal, which then meets EPIPE.
    leader.stop();
    let gone: Vec<UnixStream> = (0..8)
        .map(|_| {
            let stream = connect();
            stream.shutdown(Shutdown::Read).unwrap();
            stream
        })
        .collect();
    let mut reading = connect();
    leader.cont();
    // The leader hangs up on each once it has written it its refusal.
    for stream in &gone {
        wait_hung_up(stream);
    }
    reading.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut refusal = Vec::new();
    reading
        .read_to_end(&mut refusal)
        .expect("the leader's refusal, then the connection's end");
    let mut decoder = FrameDecoder::new(u32::MAX);
    assert!(
        matches!(
            decoder.decode(&mut &refusal[..]).unwrap(),
            Some(ServerMessage::Rejected(_))
        ),
        "{refusal:?}"
    );
    assert_alive(&mut leader);
    assert_eq!(leader.send("put after refused"), "ok");
    assert_eq!(leader.send("get after"), "ok refused");
    assert_eq!(leader.send("close"), "ok");
}

/// Waits, at most [`PATIENCE`], until the other end of `stream` has closed.
fn wait_hung_up(stream: &UnixStream) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    // No events asked for: a hang-up is told whatever is asked.
    let mut waiting = [PollFd::new(stream, PollFlags::empty())];
    let patience = Timespec {
        tv_sec: PATIENCE.as_secs().try_into().unwrap(),
        tv_nsec: 0,
    };
    poll(&mut waiting, Some(&patience)).unwrap();
    assert!(
        waiting[0].revents().contains(PollFlags::HUP),
        "the leader never hung up: {:?}",
        waiting[0].revents()
    );
}

/// A leader (started with `args`) with [`VALUES`] big values, and a hand-written follower
/// that asked for them all and read until the first answer began to come: the leader
/// cannot finish writing it until the follower reads on.
fn writing_a_big_answer(dir: &std::path::Path, args: &[&str]) -> (Node, UnixStream, Heard) {
    let mut leader = Node::spawn(NODE, dir, args);
    assert_eq!(leader.send("ready"), "ok leader");
    assert_eq!(
        leader.send(&format!("fill-big {VALUES} {VALUE_LEN}")),
        format!("ok {VALUES}")
    );
    let socket = dir.canonicalize().unwrap().join("party.sock");
    let mut follower = UnixStream::connect(&socket).expect("connect to the leader's socket");
    follower.set_read_timeout(Some(PATIENCE)).unwrap();
    follower.write_all(&hello_and_gets()).unwrap();
    let mut heard = Heard::default();
    while !heard.welcomed || heard.decoder.as_ref().unwrap().buffered_len() == 0 {
        heard.read(&mut follower);
    }
    (leader, follower, heard)
}

/// Fails the test, telling how, if the node's process has ended.
fn assert_alive(node: &mut Node) {
    if let Some(status) = node.exit_within(Duration::ZERO) {
        panic!("the leader's process ended: {status}");
    }
}

/// What the hand-written follower has heard from its leader.
#[derive(Default)]
struct Heard {
    decoder: Option<FrameDecoder>,
    welcomed: bool,
    answered: Vec<RequestId>,
    left: Option<LeaveCause>,
}

impl Heard {
    /// Reads what the leader sent next and takes each whole message in it; the leader
    /// ending the connection first fails the test.
    fn read(&mut self, stream: &mut UnixStream) {
        let mut chunk = vec![0; 1 << 16];
        let len = stream.read(&mut chunk).expect("the leader goes on sending");
        assert!(
            len > 0,
            "the leader ended the connection after {} answers (left: {:?})",
            self.answered.len(),
            self.left
        );
        let decoder = self
            .decoder
            .get_or_insert_with(|| FrameDecoder::new(u32::MAX));
        let mut rest = &chunk[..len];
        while let Some(message) = decoder.decode(&mut rest).unwrap() {
            match message {
                ServerMessage::Welcome(_) => self.welcomed = true,
                ServerMessage::Reply {
                    id,
                    result: Ok(Response::Value(Some(value))),
                } => {
                    assert_eq!(value.len(), VALUE_LEN);
                    self.answered.push(id);
                }
                ServerMessage::Leaving(cause) => self.left = Some(cause),
                other => panic!("{other:?}"),
            }
        }
    }
}

/// A follower's hello, and a get of each big value the leader's `fill-big` wrote.
fn hello_and_gets() -> Vec<u8> {
    let mut frames = Vec::new();
    let hello = Hello {
        protocol: ProtocolId::CURRENT,
        client_id: ClientId(std::process::id().into()),
        store: "fjall".into(),
    };
    let messages = std::iter::once(ClientMessage::Hello(hello)).chain((0..VALUES).map(|i| {
        ClientMessage::Read {
            id: RequestId(i as u64),
            op: ReadOp::Get {
                key: format!("big/{i:06}").into_bytes(),
            },
        }
    }));
    for message in messages {
        encode_frame(&message, u32::MAX, &mut frames).unwrap();
    }
    frames
}

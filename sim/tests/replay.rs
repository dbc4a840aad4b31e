//! `party-sim --replay DIR` as a command: a recording made here the way party-core's driver
//! makes one (a leader's machine answered by a store that commits at once: a put, then a
//! get of it) replays with every output alike and a clean history; the same recording with
//! a check of outputs changed is nondeterminism, and with one output changed it is
//! reported at the step that gave that output; an empty segment file is left out; a
//! directory without recordings is an error; a follower's seat in a waiting room is read
//! apart from the connection before it, cut in the middle of a frame. (Real processes' recordings are replayed in `tests/tests/recording.rs`.)

use std::borrow::Cow;
use std::process::Command;
use std::time::Duration;

use party_proto::recording::{
    decode_segment, encode_item, Fingerprint, Header, Record, Seal, Stream, FORMAT,
};
use party_proto::wire::{
    encode_frame, LeaveCause, ProtocolId, ReadOp, Response, ServerMessage, Welcome, WriteOp,
    DEFAULT_MAX_FRAME_LEN,
};
use party_proto::{
    ClientId, CommitResult, ElectionInput, ElectionOutput, Process, ProcessConfig, ProcessInput,
    ProcessOutput, ServerConfig, ServerInput, ServerOutput, Timestamp, WriteBatch,
};

fn party_sim(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_party-sim"))
        .args(args)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), printed)
}

fn header(stream: Stream, term: Option<u64>) -> Header {
    Header {
        format: FORMAT,
        stream,
        pid: 1,
        client: ClientId(1),
        epoch_us: 1_000,
        segment: 0,
        term,
    }
}

/// A leader's recording, as a driver makes it: each call, then its outputs folded and
/// carried out; its commits in a stream of their own.
struct Recorded {
    process: Process,
    calls: Vec<u8>,
    /// The calls recorded so far.
    steps: usize,
    commits: Vec<u8>,
    outputs: Fingerprint,
    /// The short digests of the outputs folded.
    each: Vec<u8>,
    /// An output (numbered from 1) recorded as another, as a nondeterministic machine
    /// would have given it; and the step that gave it, once it was.
    changed: Option<(u64, Option<usize>)>,
    now: Timestamp,
}

impl Recorded {
    fn new() -> Recorded {
        let process = Process::new(ClientId(1), ProcessConfig::default(), 7);
        let mut calls = Vec::new();
        encode_item(&header(Stream::Process, None), &mut calls);
        encode_item(&process, &mut calls);
        let mut commits = Vec::new();
        encode_item(&header(Stream::Commits, Some(1)), &mut commits);
        Recorded {
            process,
            calls,
            steps: 0,
            commits,
            outputs: Fingerprint::default(),
            each: Vec::new(),
            changed: None,
            now: Timestamp::ZERO,
        }
    }

    fn call(&mut self, record: &Record) {
        encode_item(record, &mut self.calls);
        self.steps += 1;
    }

    fn fold(&mut self, output: &ProcessOutput) {
        let number = self.outputs.count() + 1;
        let folded = match &mut self.changed {
            Some((changed, step)) if *changed == number => {
                // The replay takes outputs after each call: one the machine had before
                // any call, after the first.
                *step = Some(self.steps.saturating_sub(1));
                self.outputs
                    .fold(&ProcessOutput::Election(ElectionOutput::Disconnect), None)
            }
            _ => self.outputs.fold(output, None),
        };
        folded.push(&mut self.each);
    }

    fn tick(&mut self) -> Timestamp {
        self.now = self.now + Duration::from_millis(1);
        self.now
    }

    fn input(&mut self, input: ProcessInput) {
        let at = self.tick();
        self.call(&Record::Input {
            at,
            input: Cow::Borrowed(&input),
        });
        self.process.handle_input(at, input);
    }

    /// Carries out the machine's outputs until there are none: the election's actions
    /// succeed, and the store applies writes and answers reads at once.
    fn carry_out(&mut self, store: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        loop {
            // All that one call gave, taken before any is answered: each is then counted
            // at the step that gave it, as the replay counts it.
            let outputs: Vec<_> = std::iter::from_fn(|| self.process.poll_output()).collect();
            if outputs.is_empty() {
                return;
            }
            for output in &outputs {
                self.fold(output);
            }
            for output in outputs {
                self.answer(output, store);
            }
        }
    }

    /// The caller issues a read.
    fn read(&mut self, op: ReadOp) {
        let at = self.tick();
        self.call(&Record::Read {
            at,
            op: Cow::Borrowed(&op),
        });
        self.process.read(at, op);
    }

    /// Folds the machine's outputs, answering none (a follower's are answered by the calls
    /// that follow).
    fn fold_outputs(&mut self) {
        let outputs: Vec<_> = std::iter::from_fn(|| self.process.poll_output()).collect();
        for output in &outputs {
            self.fold(output);
        }
    }

    /// Bytes read from the leader's connection, and the machine given each whole message
    /// in them, as the driver does (whose decoder is `decoder`).
    fn received(&mut self, bytes: &[u8], decoder: &mut party_proto::wire::FrameDecoder) {
        let at = self.tick();
        self.call(&Record::Received {
            at,
            bytes: party_proto::recording::Bytes(Cow::Borrowed(bytes)),
        });
        let mut read = bytes;
        while let Some(message) = decoder.decode::<ServerMessage>(&mut read).unwrap() {
            self.process
                .handle_input(at, ProcessInput::FromLeader(message));
        }
        self.fold_outputs();
    }

    /// Answers one output as its driver would, if it asks for an answer.
    fn answer(&mut self, output: ProcessOutput, store: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        let answer = match output {
            ProcessOutput::Election(action) => match action {
                ElectionOutput::TryLock => ProcessInput::Election(ElectionInput::LockAcquired),
                ElectionOutput::OpenStore => ProcessInput::Election(ElectionInput::StoreOpened),
                ElectionOutput::Bind => ProcessInput::Election(ElectionInput::SocketBound),
                ElectionOutput::Serve => ProcessInput::Served { term: 1 },
                _ => return,
            },
            ProcessOutput::Store(ServerOutput::Write { id, op, .. }) => {
                let WriteOp::Put { key, value } = &op else {
                    panic!("only puts here")
                };
                store.push((key.clone(), value.clone()));
                let issued = self.now;
                let batch = WriteBatch {
                    ops: vec![op],
                    ..WriteBatch::default()
                };
                encode_item(
                    &Record::Committing {
                        issued,
                        batch: Cow::Owned(batch),
                    },
                    &mut self.commits,
                );
                encode_item(
                    &Record::Committed {
                        answered: issued,
                        result: Cow::Owned(CommitResult::Committed),
                    },
                    &mut self.commits,
                );
                let result = Ok(Response::Written);
                ProcessInput::Store(ServerInput::Completed { id, result })
            }
            ProcessOutput::Store(ServerOutput::Read { id, op, .. }) => {
                let ReadOp::Get { key } = op else {
                    panic!("only gets here")
                };
                let value = store.iter().rev().find(|(k, _)| *k == key);
                let result = Ok(Response::Value(value.map(|(_, v)| v.clone().into())));
                ProcessInput::Store(ServerInput::Completed { id, result })
            }
            _ => return,
        };
        self.input(answer);
    }

    fn finish(mut self) -> Vec<(String, Vec<u8>)> {
        encode_item(&self.outputs.record(&self.each), &mut self.calls);
        // Written at once, as one write: its seal ends it.
        Seal::of(&header(Stream::Process, None)).append_to(&mut self.calls);
        Seal::of(&header(Stream::Commits, Some(1))).append_to(&mut self.commits);
        vec![
            ("1-process-000000.rec".into(), self.calls),
            ("1-commits-t1-000000.rec".into(), self.commits),
        ]
    }
}

/// A leader that puts `a` = 1 and gets it back.
fn recording() -> Vec<(String, Vec<u8>)> {
    recorded(Recorded::new()).finish()
}

fn recorded(mut recorded: Recorded) -> Recorded {
    let mut store = Vec::new();
    recorded.carry_out(&mut store);
    let at = recorded.tick();
    let op = WriteOp::Put {
        key: b"a".to_vec(),
        value: b"1".to_vec(),
    };
    recorded.call(&Record::Write {
        at,
        op: Cow::Borrowed(&op),
    });
    recorded.process.write(at, op);
    recorded.carry_out(&mut store);
    recorded.read(ReadOp::Get { key: b"a".to_vec() });
    recorded.carry_out(&mut store);
    recorded
}

/// `party-sim --replay` on a directory holding `files`: whether it passed, and what it
/// printed.
fn replayed(files: &[(String, Vec<u8>)]) -> (bool, String) {
    let recordings = tempfile::tempdir().unwrap();
    for (name, bytes) in files {
        std::fs::write(recordings.path().join(name), bytes).unwrap();
    }
    party_sim(&["--replay", recordings.path().to_str().unwrap()])
}

#[test]
fn a_recording_replays_by_the_command() {
    let (passed, printed) = replayed(&recording());
    assert!(passed, "{printed}");
    assert!(
        printed.contains("1 processes") && printed.contains("2 operations"),
        "{printed}"
    );
    assert!(printed.contains("1 commits"), "{printed}");
    assert!(
        printed.contains("every output matched the recording"),
        "{printed}"
    );
    assert!(printed.contains("p0 op1 -> Read(Some([49]))"), "{printed}");
    assert!(!printed.contains("VIOLATION"), "{printed}");
}

#[test]
fn outputs_other_than_recorded_are_nondeterminism() {
    let mut files = recording();
    // The last check of the outputs, as the driver made it, now tells of others.
    let calls = &mut files[0].1;
    let mut changed = Fingerprint::default();
    let mut each = Vec::new();
    changed
        .fold(&ProcessOutput::Election(ElectionOutput::Bind), None)
        .push(&mut each);
    encode_item(&changed.record(&each), calls);
    Seal::of(&header(Stream::Process, None)).append_to(calls);
    let (passed, printed) = replayed(&files);
    assert!(!passed, "{printed}");
    assert!(printed.contains("NONDETERMINISM: p0"), "{printed}");
}

#[test]
fn an_output_other_than_recorded_is_reported_at_the_step_that_gave_it() {
    // Each output in turn, recorded as another: the one check (at the end) finds it.
    let outputs = recorded(Recorded::new()).outputs.count();
    assert!(outputs > 5, "{outputs} outputs");
    for number in 1..=outputs {
        let mut changed = Recorded::new();
        changed.changed = Some((number, None));
        let changed = recorded(changed);
        let (Some((_, Some(step))), steps) = (changed.changed, changed.steps) else {
            panic!("output {number} was not changed");
        };
        let (passed, printed) = replayed(&changed.finish());
        assert!(!passed, "{printed}");
        let reported = format!(
            "NONDETERMINISM: p0 (pid 1 client 00000000), step {step}: the replayed machine's output \
             {number} differs from the real one's (found at the check of outputs 1..={outputs}, \
             step {steps})"
        );
        assert!(printed.contains(&reported), "{reported}\n{printed}");
    }
}

#[test]
fn a_segment_cut_short_as_it_began_is_left_out_and_the_rest_replays() {
    let mut files = recording();
    // Killed between creating its next segment and writing the header into it.
    files.push(("1-process-000001.rec".into(), Vec::new()));
    let (passed, printed) = replayed(&files);
    assert!(passed, "{printed}");
    assert!(
        printed.contains("UNCHECKED: 1-process-000001.rec: cut short as it began"),
        "{printed}"
    );
    assert!(
        printed.contains("every output matched the recording"),
        "{printed}"
    );

    // The history is still judged: with the put's commit recorded as another value, the
    // acknowledged put was never committed.
    let commits = decode_segment(&files[1].1).unwrap();
    let mut changed = Vec::new();
    encode_item(&commits.header, &mut changed);
    for mut record in commits.records {
        if let Record::Committing { batch, .. } = &mut record {
            for op in &mut batch.to_mut().ops {
                if let WriteOp::Put { value, .. } = op {
                    *value = b"2".to_vec();
                }
            }
        }
        encode_item(&record, &mut changed);
    }
    Seal::of(&commits.header).append_to(&mut changed);
    files[1].1 = changed;
    let (passed, printed) = replayed(&files);
    assert!(!passed, "{printed}");
    assert!(printed.contains("VIOLATION"), "{printed}");
}

#[test]
fn recordings_of_two_runs_in_one_directory_are_named_and_not_judged_as_one() {
    let mut files = recording();
    // The same leader's commits as another process of another directory recorded them.
    let commits = decode_segment(&files[1].1).unwrap();
    let mut other = Vec::new();
    let other_header = Header {
        pid: 2,
        ..commits.header
    };
    encode_item(&other_header, &mut other);
    for record in &commits.records {
        encode_item(record, &mut other);
    }
    Seal::of(&other_header).append_to(&mut other);
    files.push(("2-commits-t1-000000.rec".into(), other));
    let (passed, printed) = replayed(&files);
    assert!(passed, "{printed}");
    assert!(
        printed.contains("UNCHECKED: term 1 was led by 2 recorded leaders"),
        "{printed}"
    );
    // Judged as one, the put would have committed twice.
    assert!(!printed.contains("VIOLATION"), "{printed}");
}

#[test]
fn a_directory_without_recordings_is_an_error() {
    let empty = tempfile::tempdir().unwrap();
    let (passed, printed) = party_sim(&["--replay", empty.path().to_str().unwrap()]);
    assert!(!passed);
    assert!(printed.contains("no recording"), "{printed}");
}

/// The framed welcome of the leader of generation `term`.
fn welcome(term: u64) -> Vec<u8> {
    let welcome = ServerMessage::Welcome(Welcome {
        protocol: ProtocolId::CURRENT,
        leader_pid: 9,
        term,
        store: "fjall".into(),
        limits: ServerConfig::default().limits(),
    });
    let mut bytes = Vec::new();
    encode_frame(&welcome, DEFAULT_MAX_FRAME_LEN, &mut bytes).unwrap();
    bytes
}

/// A connection cut in the middle of a frame, then the next leader's, reached through a
/// seat in its waiting room or straight: a new connection is read by a new decoder, as the
/// driver reads it, so the cut frame's start must not run into its first frame.
#[test]
fn a_connection_after_one_cut_in_the_middle_of_a_frame_replays_alike() {
    for seated in [true, false] {
        let mut recorded = Recorded::new();
        recorded.fold_outputs();
        let follow = |recorded: &mut Recorded, input: ProcessInput| {
            recorded.input(input);
            recorded.fold_outputs();
        };
        follow(
            &mut recorded,
            ProcessInput::Election(ElectionInput::LockBusy),
        );
        follow(&mut recorded, ProcessInput::Connected { peer_uid: None });
        // The first leader's welcome, and the start of a frame it did not finish: it died.
        let mut decoder = party_proto::wire::FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut cut = welcome(1);
        let mut leaving = Vec::new();
        let message = ServerMessage::Leaving(LeaveCause::Closing);
        encode_frame(&message, DEFAULT_MAX_FRAME_LEN, &mut leaving).unwrap();
        cut.extend_from_slice(&leaving[..leaving.len() - 1]);
        recorded.received(&cut, &mut decoder);
        follow(&mut recorded, ProcessInput::LinkClosed);
        follow(
            &mut recorded,
            ProcessInput::Election(ElectionInput::LockBusy),
        );
        if seated {
            follow(
                &mut recorded,
                ProcessInput::Election(ElectionInput::ConnectFailed),
            );
            follow(&mut recorded, ProcessInput::Seated { peer_uid: None });
        } else {
            follow(&mut recorded, ProcessInput::Connected { peer_uid: None });
        }
        recorded.read(ReadOp::Get { key: b"a".to_vec() });
        recorded.fold_outputs();
        // The next leader's welcome lets the read go out.
        let mut decoder = party_proto::wire::FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        recorded.received(&welcome(2), &mut decoder);
        let (passed, printed) = replayed(&recorded.finish());
        assert!(passed, "seated {seated}: {printed}");
        assert!(
            printed.contains("every output matched the recording"),
            "seated {seated}: {printed}"
        );
    }
}

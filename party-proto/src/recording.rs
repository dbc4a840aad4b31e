//! The recording of a real process: every call its driver made into its [`Process`]
//! machine, with its time, and every output the machine gave; and, while it led, every
//! commit its store made. Since the machine is a pure function of its calls, the simulator
//! can drive a machine of its own with the same calls and must see the same outputs
//! (`party-sim --replay`); and the operations and commits recorded make a history that the
//! simulator's checks can judge.
//!
//! A recording is a ring of segment files per stream (one stream of process calls per
//! handle, one stream of commits per leadership). A segment opens with a [`Header`] and, in
//! a process stream, the machine as it stood then, so the newest segments replay even after
//! the ring dropped the oldest. Each item is framed by its length (u32, little endian) and
//! encoded with postcard. Every write to a segment file ends with the segment's [`Seal`],
//! and only what a seal follows is read back: the ring writes a new segment over the oldest
//! one's file (rewriting cached pages costs the kernel far less than new ones), so past the
//! last seal lie a write cut short by a killed process, or the older segment's bytes.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{IterPoll, WatchPoll};
use crate::feed::CommitSeq;
use crate::ids::{ClientId, IterId, WatchId};
use crate::process::{Process, ProcessInput, ProcessOutput};
use crate::range::{IterOptions, KeyRange};
use crate::time::Timestamp;
use crate::wire::{ReadOp, WriteOp};
use crate::writer::{CommitResult, WriteBatch};

/// The format of recordings this build writes and reads. One more for any change to what
/// is written, digests included ([`Gave`], [`Fingerprint`]): a replay refuses another
/// format rather than report its differences as nondeterminism.
pub const FORMAT: u32 = 21;

/// What a segment's stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    /// Calls into one handle's process machine and its outputs.
    Process,
    /// The commits of one leadership's store thread.
    Commits,
}

/// The first item of every segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub stream: Stream,
    /// The operating system's process id.
    pub pid: u32,
    /// The handle's client id: a process may open several handles.
    pub client: ClientId,
    /// The handle's epoch (its `Timestamp` zero) on the host's monotonic clock, in
    /// microseconds: what puts the times of all processes of one host on one line.
    pub epoch_us: u64,
    /// 0 for the first segment of the stream, then one more for each.
    pub segment: u64,
    /// For a commit stream: the leadership's generation.
    pub term: Option<u64>,
}

/// One item of a stream after its header (and its snapshot). Borrowed when written, owned
/// when read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record<'a> {
    Input {
        at: Timestamp,
        input: Cow<'a, ProcessInput>,
    },
    /// A read; the machine numbers it, the same way in a replay.
    Read {
        at: Timestamp,
        op: Cow<'a, ReadOp>,
    },
    Write {
        at: Timestamp,
        op: Cow<'a, WriteOp>,
    },
    WallClock {
        at: Timestamp,
        wall: Duration,
    },
    OpenIter {
        at: Timestamp,
        options: Cow<'a, IterOptions>,
    },
    /// A take from an iterator, and what it gave, in short.
    IterTake {
        at: Timestamp,
        iter: IterId,
        max: u64,
        gave: Gave,
    },
    CloseIter {
        at: Timestamp,
        iter: IterId,
    },
    OpenWatch {
        at: Timestamp,
        range: Cow<'a, KeyRange>,
        from: Option<CommitSeq>,
    },
    WatchTake {
        at: Timestamp,
        watch: WatchId,
        max: u64,
        gave: Gave,
    },
    CloseWatch {
        at: Timestamp,
        watch: WatchId,
    },
    /// The machine's outputs so far: how many, and their [`Fingerprint`]. Outputs follow
    /// from the calls, so they are not kept whole: a replay folds its own and compares at
    /// each of these, which come every [`OUTPUTS_PER_CHECK`] outputs and before each write
    /// of the recording to its file. `each` holds a short digest of every output since the
    /// last check (see [`Fingerprint::fold`]), two bytes each, so that a difference is
    /// traced to its first output.
    Outputs {
        count: u64,
        digest: u64,
        each: Bytes<'a>,
    },
    /// Bytes read from the leader's connection: the machine was given, at `at`, each
    /// message they completed, in order (`FromLeader`).
    Received {
        at: Timestamp,
        bytes: Bytes<'a>,
    },
    /// A commit asked of the store at `issued`, in the file before the store is asked: a
    /// leader killed before its [`Record::Committed`] may have landed it or not (a replay
    /// tells which by the number the next leader's first commit takes).
    Committing {
        issued: Timestamp,
        batch: Cow<'a, WriteBatch>,
    },
    /// What the store answered, at `answered`, to the [`Record::Committing`] before it.
    Committed {
        answered: Timestamp,
        result: Cow<'a, CommitResult>,
    },
    /// The number the store's next commit takes, as the leader read it from the store at
    /// `at` (as it starts, and again after a commit whose outcome it could not tell).
    StoreNext {
        at: Timestamp,
        next: CommitSeq,
    },
}

/// What a take from an iterator or a subscription gave, in short. The entries or events
/// came in the recorded inputs already (a follower's in [`Record::Received`] bytes, a
/// leader's own handle's in the store's answers), and follow from them: a replay takes its
/// own and compares (recorded in full, a scan was in a follower's recording twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gave {
    /// The entries or events given (none for an answer without any).
    pub items: u64,
    /// A digest of the whole answer.
    pub digest: u64,
}

impl Gave {
    pub fn of_iter(poll: &IterPoll) -> Gave {
        match poll {
            // A scan's takes: each entry's halves digested where they lie, not encoded first.
            IterPoll::Entries(entries) => {
                let mut hasher = WordHasher::default();
                for entry in entries {
                    std::hash::Hasher::write(&mut hasher, &entry.key);
                    std::hash::Hasher::write(&mut hasher, &entry.value);
                }
                Gave {
                    items: entries.len() as u64,
                    digest: std::hash::Hasher::finish(&hasher),
                }
            }
            other => Gave::of(other, 0),
        }
    }

    pub fn of_watch(poll: &WatchPoll) -> Gave {
        let items = match poll {
            WatchPoll::Events(events) => events.len(),
            _ => 0,
        };
        Gave::of(poll, items)
    }

    fn of(poll: &impl Serialize, items: usize) -> Gave {
        Gave {
            items: items as u64,
            digest: digest_of(poll, &mut Vec::new()),
        }
    }
}

/// Bytes of a recording, as one run of bytes rather than a sequence of numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes<'a>(pub Cow<'a, [u8]>);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Ok(Bytes(Cow::Owned(bytes.into_vec())))
    }
}

/// Why bytes are no recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordingError {
    #[error("not a recording: {0}")]
    Malformed(String),
    #[error("a recording of format {found}; this build reads format {FORMAT}")]
    OtherFormat { found: u32 },
    /// The bytes end before the header and (for a process stream) the machine's
    /// snapshot are whole: the process was stopped as it began the segment, which then
    /// holds nothing to replay.
    #[error("a segment cut short as it began (no whole header and snapshot)")]
    CutShortAtStart,
}

/// How many outputs a [`Record::Outputs`] covers at most.
pub const OUTPUTS_PER_CHECK: u64 = 16;

/// The running digest of a machine's outputs, folded the same way by the recording driver
/// and by the replay: a message to send by its encoding (which the driver has anyway), a
/// completion by its id and result, anything else by its encoding.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint {
    count: u64,
    digest: u64,
    scratch: Vec<u8>,
}

impl Fingerprint {
    /// Folds in one output; `sent` is the encoding of a `Send`'s message if at hand. The
    /// output's own short digest, for [`Record::Outputs`]'s `each`.
    pub fn fold(&mut self, output: &ProcessOutput, sent: Option<&[u8]>) -> ShortDigest {
        let folded = match output {
            ProcessOutput::Send(message) => match sent {
                Some(encoded) => digest(encoded),
                None => digest_of(message, &mut self.scratch),
            },
            ProcessOutput::Completed { id, result } => {
                let mut hasher = WordHasher::default();
                std::hash::Hash::hash(&(id.0, result), &mut hasher);
                hasher.0
            }
            output => digest_of(output, &mut self.scratch),
        };
        self.count += 1;
        self.digest = (self.digest ^ folded).wrapping_mul(MIX).rotate_left(23);
        ShortDigest(folded as u16)
    }

    /// Outputs folded so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The record of the outputs so far; `each` holds the short digests of those since
    /// the last record, in order ([`ShortDigest::push`]).
    pub fn record<'a>(&self, each: &'a [u8]) -> Record<'a> {
        Record::Outputs {
            count: self.count,
            digest: self.digest,
            each: Bytes(Cow::Borrowed(each)),
        }
    }
}

/// Two bytes of one output's digest: enough to find the first output that differs in a
/// window whose [`Fingerprint`] differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortDigest(pub u16);

impl ShortDigest {
    /// Appends the digest to a [`Record::Outputs`]'s `each`.
    pub fn push(self, each: &mut Vec<u8>) {
        each.extend_from_slice(&self.0.to_le_bytes());
    }

    /// The digests in a [`Record::Outputs`]'s `each`.
    pub fn all_in(each: &[u8]) -> impl Iterator<Item = ShortDigest> + '_ {
        each.chunks_exact(2)
            .map(|pair| ShortDigest(u16::from_le_bytes([pair[0], pair[1]])))
    }
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// A [`std::hash::Hasher`] with [`digest`]'s mixing, for what derives `Hash`.
#[derive(Default)]
struct WordHasher(u64);

impl std::hash::Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = (self.0 ^ digest(bytes)).wrapping_mul(MIX).rotate_left(29);
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(MIX).rotate_left(29);
    }

    fn write_u8(&mut self, byte: u8) {
        self.write_u64(u64::from(byte));
    }

    fn write_u32(&mut self, word: u32) {
        self.write_u64(u64::from(word));
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }
}

/// A digest of `bytes`, to compare what a replay gives with what the real process gave
/// (not against an adversary). Four lanes take 32 bytes a round, so that a get's value
/// costs a few multiplications in a row rather than one per word (the recording driver
/// digests every answer).
pub fn digest(bytes: &[u8]) -> u64 {
    let step = |lane: u64, word: u64| (lane ^ word).wrapping_mul(MIX).rotate_left(29);
    let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    let mut lanes = [
        MIX ^ bytes.len() as u64,
        MIX,
        MIX.rotate_left(16),
        MIX.rotate_left(32),
    ];
    let mut rounds = bytes.chunks_exact(32);
    for round in &mut rounds {
        for (lane, bytes) in lanes.iter_mut().zip(round.chunks_exact(8)) {
            *lane = step(*lane, word(bytes));
        }
    }
    let mut words = rounds.remainder().chunks_exact(8);
    for (lane, bytes) in lanes.iter_mut().zip(&mut words) {
        *lane = step(*lane, word(bytes));
    }
    // The last few bytes: the input's last word, overlapping words already taken (the
    // length, mixed in first, keeps inputs apart), or for an input shorter than a word
    // its bytes one by one.
    let rest = words.remainder();
    if !rest.is_empty() {
        let last = match bytes.len().checked_sub(8) {
            Some(start) => word(&bytes[start..]),
            None => rest
                .iter()
                .fold(0, |last, byte| last << 8 | u64::from(*byte)),
        };
        lanes[3] = step(lanes[3], last);
    }
    lanes.into_iter().fold(0, step)
}

/// The [`digest`] of `value`'s encoding (made in `scratch`, which is left empty).
pub fn digest_of<T: Serialize>(value: &T, scratch: &mut Vec<u8>) -> u64 {
    scratch.clear();
    postcard::to_io(value, &mut *scratch).expect("recorded items serialize into a Vec");
    let hash = digest(scratch);
    scratch.clear();
    hash
}

/// Appends `item`, framed, to `out`.
pub fn encode_item<T: Serialize>(item: &T, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    // A Vec cannot refuse to grow, and every recorded type serializes.
    postcard::to_io(item, &mut *out).expect("recorded items serialize into a Vec");
    let len = u32::try_from(out.len() - start - 4)
        .ok()
        .filter(|len| *len != SEAL_FRAME)
        .expect("a recorded item is shorter than 4 GiB");
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// The frame length that marks a [`Seal`] rather than an item.
const SEAL_FRAME: u32 = u32::MAX;

/// What ends every write to a segment file: the frame mark, then a digest of the segment's
/// header. An older segment whose file the ring reuses has seals of its own header, which
/// differ (the segment number does), so reading stops where the new segment's bytes end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal([u8; 8]);

impl Seal {
    pub fn of(header: &Header) -> Seal {
        let mut encoded = Vec::new();
        postcard::to_io(header, &mut encoded).expect("a header serializes into a Vec");
        Seal(digest(&encoded).to_le_bytes())
    }

    /// Appends the seal to a write's bytes.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&SEAL_FRAME.to_le_bytes());
        out.extend_from_slice(&self.0);
    }
}

/// One segment, read back.
#[derive(Debug)]
pub struct Segment {
    pub header: Header,
    /// The machine as the segment began (process streams only).
    pub snapshot: Option<Box<Process>>,
    pub records: Vec<Record<'static>>,
    /// Bytes follow the last seal: a write cut short (the process was killed in it), or
    /// what an older segment left in the file (the process was killed before this one
    /// ended).
    pub torn: bool,
}

/// Reads one segment file's bytes: the items its seals cover.
pub fn decode_segment(bytes: &[u8]) -> Result<Segment, RecordingError> {
    let mut frames = Frames { bytes };
    let Some(Frame::Item(first)) = frames.next() else {
        return Err(RecordingError::CutShortAtStart);
    };
    let header: Header = postcard::from_bytes(first).map_err(malformed)?;
    if header.format != FORMAT {
        return Err(RecordingError::OtherFormat {
            found: header.format,
        });
    }
    let seal = Seal::of(&header);
    // How many items the last seal covers, and how many bytes follow it.
    let (mut items, mut sealed) = (vec![first], None);
    while let Some(frame) = frames.next() {
        match frame {
            Frame::Item(item) => items.push(item),
            Frame::Seal(found) if found == seal => {
                sealed = Some((items.len(), frames.bytes.len()));
            }
            // Another segment's seal, or a frame the bytes end in: what follows is not
            // this segment's.
            Frame::Seal(_) | Frame::CutShort => break,
        }
    }
    let (sealed, unsealed_bytes) = sealed.ok_or(RecordingError::CutShortAtStart)?;
    items.truncate(sealed);
    let mut items = items.into_iter().skip(1);
    let snapshot = match header.stream {
        Stream::Process => {
            let item = items.next().ok_or(RecordingError::CutShortAtStart)?;
            Some(Box::new(postcard::from_bytes(item).map_err(malformed)?))
        }
        Stream::Commits => None,
    };
    let records = items
        .map(|item| postcard::from_bytes(item).map_err(malformed))
        .collect::<Result<_, _>>()?;
    Ok(Segment {
        header,
        snapshot,
        records,
        torn: unsealed_bytes > 0,
    })
}

fn malformed(error: postcard::Error) -> RecordingError {
    RecordingError::Malformed(error.to_string())
}

/// The frames of a segment, in order; the last may be cut short.
struct Frames<'a> {
    bytes: &'a [u8],
}

enum Frame<'a> {
    Item(&'a [u8]),
    Seal(Seal),
    /// The bytes end inside a frame.
    CutShort,
}

impl<'a> Iterator for Frames<'a> {
    type Item = Frame<'a>;

    fn next(&mut self) -> Option<Frame<'a>> {
        if self.bytes.is_empty() {
            return None;
        }
        let frame = match self.bytes.split_first_chunk::<4>() {
            Some((len, rest)) if u32::from_le_bytes(*len) == SEAL_FRAME => rest
                .split_first_chunk::<8>()
                .map(|(seal, rest)| (Frame::Seal(Seal(*seal)), rest)),
            Some((len, rest)) => {
                let len = u32::from_le_bytes(*len) as usize;
                (rest.len() >= len).then(|| {
                    let (item, rest) = rest.split_at(len);
                    (Frame::Item(item), rest)
                })
            }
            None => None,
        };
        Some(match frame {
            Some((frame, rest)) => {
                self.bytes = rest;
                frame
            }
            None => {
                self.bytes = &[];
                Frame::CutShort
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::WatchEvent;
    use crate::election::{ElectionFailure, ElectionInput, ElectionOutput};
    use crate::process::ProcessConfig;
    use crate::wire::WriteOp;
    use crate::ErrorCode;

    /// What a recording holds, pinned by a digest of its encoding: a machine as a segment
    /// snapshots it, and every election input and output. A change to any of them (a field,
    /// a variant, their order) fails this test until [`FORMAT`] moves on, and the pin with
    /// it.
    #[test]
    fn the_format_moves_on_with_what_a_recording_holds() {
        use ElectionInput as In;
        use ElectionOutput as Out;
        // With a subscription on each side, the follower's and the one a leader's session
        // serves, whose states a segment's snapshot holds too.
        let mut process = Process::new(ClientId(1), ProcessConfig::default(), 7);
        process.open_watch(Timestamp::ZERO, KeyRange::all(), Some(CommitSeq(3)));
        let mut served = crate::ServerSession::new(Timestamp::ZERO, Default::default());
        let hello = crate::wire::Hello {
            protocol: crate::wire::ProtocolId::CURRENT,
            client_id: ClientId(2),
            store: "fjall".into(),
        };
        let watch_open = crate::wire::ClientMessage::WatchOpen {
            watch: crate::WatchId(1),
            range: KeyRange::all(),
            from: Some(CommitSeq(3)),
            credits: 4,
        };
        for message in [crate::wire::ClientMessage::Hello(hello), watch_open] {
            served.handle_input(Timestamp::ZERO, crate::ServerInput::Message(message));
        }
        let inputs = [
            In::LockAcquired,
            In::LockBusy,
            In::LockFailed,
            In::StoreOpened,
            In::StoreOpenFailed,
            In::StoreLocked,
            In::SocketBound,
            In::BindFailed,
            In::Connected,
            In::ConnectFailed,
            In::InWaitingRoom,
            In::NoWaitingRoom,
            In::WaitingRoomClosed,
            In::Admitted,
            In::Disconnected,
            In::Refused,
            In::LockLost,
            In::TimerFired,
            In::CloseRequested,
            In::ServeFailed,
        ];
        let outputs = [
            Out::TryLock,
            Out::OpenStore,
            Out::Bind,
            Out::Serve,
            Out::Connect,
            Out::OpenWaitingRoom,
            Out::CloseWaitingRoom,
            Out::EnterWaitingRoom,
            Out::LeaveWaitingRoom,
            Out::StepDown,
            Out::Disconnect,
            Out::Failed(ElectionFailure::Serve),
        ];
        let pinned = digest_of(&(&process, &served, inputs, outputs), &mut Vec::new());
        assert_eq!(
            (FORMAT, pinned),
            (21, 0xb7ae_eeb3_0b74_f7cd),
            "what a recording holds changed: move FORMAT on, then the pin"
        );
    }

    fn header(stream: Stream) -> Header {
        Header {
            format: FORMAT,
            stream,
            pid: 7,
            client: ClientId(9),
            epoch_us: 1_000,
            segment: 0,
            term: None,
        }
    }

    fn entries(pairs: &[(&[u8], &[u8])]) -> IterPoll {
        IterPoll::Entries(
            pairs
                .iter()
                .map(|(key, value)| crate::wire::Entry {
                    key: key.to_vec(),
                    value: value.to_vec(),
                })
                .collect(),
        )
    }

    #[test]
    fn what_a_take_gave_differs_whenever_what_it_gave_does() {
        let take = entries(&[(b"a", b"1"), (b"b", b"2")]);
        let gave = Gave::of_iter(&take);
        assert_eq!(gave, Gave::of_iter(&take.clone()));
        assert_eq!(gave.items, 2);
        let others = [
            entries(&[(b"a", b"1"), (b"b", b"3")]),
            entries(&[(b"a", b"1"), (b"b2", b"")]),
            entries(&[(b"a1", b""), (b"b", b"2")]),
            entries(&[(b"b", b"2"), (b"a", b"1")]),
            entries(&[(b"a", b"1")]),
            entries(&[]),
            IterPoll::Pending,
            IterPoll::Done,
            IterPoll::Failed(ErrorCode::ConnectionLost),
        ];
        for other in &others {
            assert_ne!(Gave::of_iter(other), gave, "{other:?}");
        }
        let answers = [
            entries(&[]),
            IterPoll::Pending,
            IterPoll::Done,
            IterPoll::Failed(ErrorCode::ConnectionLost),
            IterPoll::Failed(ErrorCode::Closed),
        ];
        for (n, one) in answers.iter().enumerate() {
            for other in &answers[n + 1..] {
                assert_ne!(
                    Gave::of_iter(one),
                    Gave::of_iter(other),
                    "{one:?} {other:?}"
                );
            }
        }
        let lagged = |missed| {
            WatchPoll::Events(vec![WatchEvent::Lagged {
                missed,
                resume: CommitSeq(5),
            }])
        };
        assert_eq!(Gave::of_watch(&lagged(1)), Gave::of_watch(&lagged(1)));
        assert_ne!(Gave::of_watch(&lagged(1)), Gave::of_watch(&lagged(2)));
        assert_ne!(
            Gave::of_watch(&WatchPoll::Pending),
            Gave::of_watch(&WatchPoll::Events(Vec::new()))
        );
    }

    #[test]
    fn a_segment_reads_back_as_written_and_a_torn_tail_is_left_out() {
        let mut process = Process::new(ClientId(9), ProcessConfig::default(), 3);
        let op = WriteOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let seal = Seal::of(&header(Stream::Process));
        let mut bytes = Vec::new();
        encode_item(&header(Stream::Process), &mut bytes);
        encode_item(&process, &mut bytes);
        seal.append_to(&mut bytes);
        let at = Timestamp::from_epoch(Duration::from_millis(5));
        let written = Record::Write {
            at,
            op: Cow::Borrowed(&op),
        };
        let id = process.write(at, op.clone());
        encode_item(&written, &mut bytes);
        let mut outputs = Fingerprint::default();
        let mut each = Vec::new();
        outputs
            .fold(
                &process.poll_output().expect("a new process tries the lock"),
                None,
            )
            .push(&mut each);
        encode_item(&outputs.record(&each), &mut bytes);
        seal.append_to(&mut bytes);
        let whole = decode_segment(&bytes).unwrap();
        assert!(!whole.torn);
        assert_eq!(whole.records, vec![written.clone(), outputs.record(&each)]);
        // A write cut short: in its frames, and in its seal.
        let sealed = bytes.len();
        encode_item(&written, &mut bytes);
        for cut in [sealed + 6, bytes.len(), bytes.len() + 5] {
            let mut cut_short = bytes.clone();
            seal.append_to(&mut cut_short);
            cut_short.truncate(cut);
            let segment = decode_segment(&cut_short).unwrap();
            assert_eq!(segment.header, header(Stream::Process));
            assert!(segment.torn, "cut at {cut}");
            assert_eq!(segment.records, whole.records, "cut at {cut}");
        }
        // The snapshot is the machine before the write: replaying the write gives its id.
        let mut replayed = whole.snapshot.unwrap();
        assert_eq!(replayed.write(at, op), id);
    }

    /// A segment of `records` wall-clock readings, each write of `per_write` of them
    /// sealed.
    fn commits_segment(segment: u64, records: std::ops::Range<u64>, per_write: u64) -> Vec<u8> {
        let header = Header {
            segment,
            ..header(Stream::Commits)
        };
        let seal = Seal::of(&header);
        let mut bytes = Vec::new();
        encode_item(&header, &mut bytes);
        seal.append_to(&mut bytes);
        for n in records {
            let record = Record::WallClock {
                at: Timestamp::from_epoch(Duration::from_micros(n)),
                wall: Duration::from_secs(n),
            };
            encode_item(&record, &mut bytes);
            if n % per_write == per_write - 1 {
                seal.append_to(&mut bytes);
            }
        }
        bytes
    }

    fn wall_clocks(segment: &Segment) -> Vec<u64> {
        let wall = |record: &Record| match record {
            Record::WallClock { wall, .. } => wall.as_secs(),
            other => panic!("{other:?}"),
        };
        segment.records.iter().map(wall).collect()
    }

    #[test]
    fn a_segment_written_over_an_older_ones_file_reads_back_only_its_own_writes() {
        let older = commits_segment(0, 0..400, 10);
        let newer = commits_segment(4, 1_000..1_100, 10);
        let mut file = older.clone();
        file[..newer.len()].copy_from_slice(&newer);
        let segment = decode_segment(&file).unwrap();
        assert_eq!(segment.header.segment, 4);
        assert!(segment.torn);
        assert_eq!(wall_clocks(&segment), (1_000..1_100).collect::<Vec<_>>());
        // The newer segment's last write cut short, anywhere in it, over the older bytes:
        // every write before it reads back, nothing of the older segment does.
        for cut in (newer.len() - 200..newer.len()).step_by(7) {
            let mut file = older.clone();
            file[..cut].copy_from_slice(&newer[..cut]);
            let segment = decode_segment(&file).unwrap();
            let read = wall_clocks(&segment);
            assert!(
                read.len() >= 80 && read.len().is_multiple_of(10),
                "cut at {cut}: {read:?}"
            );
            assert_eq!(read, (1_000..1_000 + read.len() as u64).collect::<Vec<_>>());
        }
    }

    proptest::proptest! {
        /// A segment with any of its bytes changed, cut anywhere, reads back or is refused,
        /// and never panics; cut only, it reads back a beginning of what was written.
        #[test]
        fn any_bytes_read_back_or_are_refused(
            flips in proptest::collection::vec((0usize..10_000, 1u8..=255), 0..4),
            cut in 0usize..10_000,
        ) {
            let whole = commits_segment(1, 0..200, 7);
            let mut bytes = whole.clone();
            for (at, flip) in &flips {
                let at = at % bytes.len();
                bytes[at] ^= flip;
            }
            bytes.truncate(cut.min(bytes.len()));
            let read = decode_segment(&bytes);
            if let (Ok(segment), true) = (read, flips.is_empty()) {
                let (all, read) = (wall_clocks(&decode_segment(&whole).unwrap()), wall_clocks(&segment));
                proptest::prop_assert_eq!(&read[..], &all[..read.len()]);
            }
        }
    }

    #[test]
    fn digests_tell_apart_what_differs_in_any_byte_or_length() {
        let base = b"the same bytes, long enough for several words".to_vec();
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(digest(&base)));
        assert!(seen.insert(digest(&base[..base.len() - 1])));
        assert!(seen.insert(digest(&[])));
        for at in 0..base.len() {
            let mut changed = base.clone();
            changed[at] ^= 1;
            assert!(seen.insert(digest(&changed)), "byte {at}");
        }
        let mut scratch = vec![7];
        assert_eq!(
            digest_of(&base, &mut scratch),
            digest_of(&base, &mut Vec::new())
        );
        assert!(scratch.is_empty());
    }

    #[test]
    fn other_formats_and_garbage_are_refused() {
        let mut bytes = Vec::new();
        encode_item(
            &Header {
                format: FORMAT + 1,
                ..header(Stream::Commits)
            },
            &mut bytes,
        );
        assert_eq!(
            decode_segment(&bytes).unwrap_err(),
            RecordingError::OtherFormat { found: FORMAT + 1 }
        );
        assert!(matches!(
            decode_segment(&[3, 0, 0, 0, 0xff, 0xff, 0xff]),
            Err(RecordingError::Malformed(_))
        ));
        // A process segment begins with its header and the machine, sealed.
        let mut no_snapshot = Vec::new();
        encode_item(&header(Stream::Process), &mut no_snapshot);
        let mut unsealed = no_snapshot.clone();
        Seal::of(&header(Stream::Process)).append_to(&mut no_snapshot);
        let process = Process::new(ClientId(9), ProcessConfig::default(), 3);
        encode_item(&process, &mut unsealed);
        for cut_short in [no_snapshot, unsealed] {
            assert_eq!(
                decode_segment(&cut_short).unwrap_err(),
                RecordingError::CutShortAtStart
            );
        }
        assert_eq!(
            decode_segment(&[]).unwrap_err(),
            RecordingError::CutShortAtStart
        );
    }
}

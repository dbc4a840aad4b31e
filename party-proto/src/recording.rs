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
//! encoded with postcard; a last item cut short (a process killed in the middle of writing
//! it) is no item.

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::client::{IterPoll, WatchEvent, WatchPoll};
use crate::feed::CommitSeq;
use crate::ids::{ClientId, IterId, WatchId};
use crate::process::{Process, ProcessInput, ProcessOutput};
use crate::range::{IterOptions, KeyRange};
use crate::time::Timestamp;
use crate::wire::{ReadOp, WriteOp};
use crate::writer::{CommitResult, WriteBatch};

/// The format of recordings this build writes and reads.
pub const FORMAT: u32 = 2;

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
    /// A take from an iterator, and what it gave.
    IterTake {
        at: Timestamp,
        iter: IterId,
        max: u64,
        poll: Cow<'a, IterPoll>,
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
        poll: Cow<'a, WatchPoll>,
    },
    WatchGiveBack {
        watch: WatchId,
        events: Cow<'a, [WatchEvent]>,
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
    /// A commit of the store: asked at `issued`, answered at `answered`.
    Commit {
        issued: Timestamp,
        answered: Timestamp,
        batch: Cow<'a, WriteBatch>,
        result: Cow<'a, CommitResult>,
    },
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
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// One segment, read back.
#[derive(Debug)]
pub struct Segment {
    pub header: Header,
    /// The machine as the segment began (process streams only).
    pub snapshot: Option<Box<Process>>,
    pub records: Vec<Record<'static>>,
    /// The segment ends in an item cut short.
    pub torn: bool,
}

/// Reads one segment file's bytes.
pub fn decode_segment(bytes: &[u8]) -> Result<Segment, RecordingError> {
    let mut items = Items { bytes, torn: false };
    let first = items.next().ok_or(RecordingError::CutShortAtStart)?;
    let header: Header = postcard::from_bytes(first).map_err(malformed)?;
    if header.format != FORMAT {
        return Err(RecordingError::OtherFormat {
            found: header.format,
        });
    }
    let snapshot = match header.stream {
        Stream::Process => {
            let item = items.next().ok_or(RecordingError::CutShortAtStart)?;
            Some(Box::new(postcard::from_bytes(item).map_err(malformed)?))
        }
        Stream::Commits => None,
    };
    let mut records = Vec::new();
    for item in items.by_ref() {
        records.push(postcard::from_bytes(item).map_err(malformed)?);
    }
    Ok(Segment {
        header,
        snapshot,
        records,
        torn: items.torn,
    })
}

fn malformed(error: postcard::Error) -> RecordingError {
    RecordingError::Malformed(error.to_string())
}

/// The framed items of a segment; stops at a last one cut short.
struct Items<'a> {
    bytes: &'a [u8],
    torn: bool,
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.bytes.is_empty() {
            return None;
        }
        let Some((len, rest)) = self.bytes.split_first_chunk::<4>() else {
            self.torn = true;
            self.bytes = &[];
            return None;
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            self.torn = true;
            self.bytes = &[];
            return None;
        }
        let (item, rest) = rest.split_at(len);
        self.bytes = rest;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessConfig;
    use crate::wire::WriteOp;

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

    #[test]
    fn a_segment_reads_back_as_written_and_a_torn_tail_is_left_out() {
        let mut process = Process::new(ClientId(9), ProcessConfig::default(), 3);
        let op = WriteOp::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let mut bytes = Vec::new();
        encode_item(&header(Stream::Process), &mut bytes);
        encode_item(&process, &mut bytes);
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
        let whole = bytes.len();
        encode_item(&written, &mut bytes);
        bytes.truncate(whole + 6);

        let segment = decode_segment(&bytes).unwrap();
        assert_eq!(segment.header, header(Stream::Process));
        assert!(segment.torn);
        assert_eq!(
            segment.records,
            vec![written.clone(), outputs.record(&each)]
        );
        // The snapshot is the machine before the write: replaying the write gives its id.
        let mut replayed = segment.snapshot.unwrap();
        assert_eq!(replayed.write(at, op), id);
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
        let mut no_snapshot = Vec::new();
        encode_item(&header(Stream::Process), &mut no_snapshot);
        assert_eq!(
            decode_segment(&no_snapshot).unwrap_err(),
            RecordingError::CutShortAtStart
        );
        assert_eq!(
            decode_segment(&[]).unwrap_err(),
            RecordingError::CutShortAtStart
        );
    }
}

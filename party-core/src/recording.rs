//! Recording a handle (see [`Recording`]): the segment files of its streams, written as
//! the driver and the store thread go, in party-proto's recording format.
//!
//! Each stream is a ring of [`SEGMENTS_KEPT`] segment files: once the newest holds its share
//! of the bound, the next one starts (with the machine as it stands, for a process stream)
//! and the oldest is deleted. A write the driver recorded is written to the file before it
//! can take effect (see `driver/machine.rs`), and a commit before anyone hears of it: a
//! process killed at any point leaves on disk every write it may have made.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use party_proto::recording::{encode_item, Header, Record, Stream, FORMAT};
use party_proto::{ClientId, Process};

/// The environment variable that turns recording on for every handle a program opens
/// without [`crate::Options::record`]: the directory to record into.
pub const RECORD_ENV: &str = "PARTY_RECORD";
/// The environment variable that bounds each stream's recording, in bytes (default
/// [`Recording::DEFAULT_MAX_BYTES`]).
pub const RECORD_MAX_BYTES_ENV: &str = "PARTY_RECORD_MAX_BYTES";

/// How many segment files a stream keeps: the bound is split among them.
pub(crate) const SEGMENTS_KEPT: u64 = 4;

/// How much of a recording may wait in memory (see [`Recorder::due`]).
const LAZY_BYTES: u64 = 64 << 10;

/// Where and how much a handle records: every call its driver makes into its process
/// machine, with its time and the machine's outputs, and the commits it makes while it
/// leads, so that `party-sim --replay DIR` can drive the same machines with the same
/// inputs, compare, and check the history of all recorded processes together. Off by
/// default; [`RECORD_ENV`] turns it on without code changes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recording {
    /// The directory the segment files go to (created if needed); every process of one
    /// run should record into the same one.
    pub dir: PathBuf,
    /// The most each stream of a handle keeps on disk (one stream of calls per handle,
    /// one of commits per leadership); the oldest part goes first.
    pub max_bytes: u64,
}

impl Recording {
    /// 64 MiB per stream.
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

    /// Recording into `dir`, bounded by [`Recording::DEFAULT_MAX_BYTES`] per stream.
    pub fn new(dir: impl Into<PathBuf>) -> Recording {
        Recording {
            dir: dir.into(),
            max_bytes: Recording::DEFAULT_MAX_BYTES,
        }
    }

    pub fn max_bytes(mut self, bytes: u64) -> Recording {
        self.max_bytes = bytes;
        self
    }

    /// The recording [`RECORD_ENV`] and [`RECORD_MAX_BYTES_ENV`] ask for, if any (a bound
    /// that is no number is ignored, with a warning).
    pub fn from_env() -> Option<Recording> {
        let dir = std::env::var_os(RECORD_ENV).filter(|dir| !dir.is_empty())?;
        let mut recording = Recording::new(dir);
        if let Some(bytes) = std::env::var_os(RECORD_MAX_BYTES_ENV) {
            match bytes.to_str().and_then(|bytes| bytes.parse().ok()) {
                Some(bytes) => recording.max_bytes = bytes,
                None => tracing::warn!("{RECORD_MAX_BYTES_ENV} is not a number of bytes: ignored"),
            }
        }
        Some(recording)
    }
}

/// One stream being recorded.
pub(crate) struct Recorder {
    dir: PathBuf,
    segment_bytes: u64,
    header: Header,
    file: File,
    written: u64,
    buffer: Vec<u8>,
}

impl Recorder {
    /// Starts the stream `header` names with its first segment; a process stream's
    /// segments open with the machine, `snapshot`. `None`, after a warning, when the
    /// directory cannot be written: recording never fails the handle.
    pub fn start(
        recording: &Recording,
        header: Header,
        snapshot: Option<&Process>,
    ) -> Option<Recorder> {
        let mut recorder = Recorder {
            dir: recording.dir.clone(),
            segment_bytes: (recording.max_bytes / SEGMENTS_KEPT).max(1),
            file: open_segment(&recording.dir, &header)
                .inspect_err(|error| warn_stopped(&recording.dir, error))
                .ok()?,
            header,
            written: 0,
            buffer: Vec::new(),
        };
        recorder.open_with(snapshot);
        recorder.write_buffer().ok()?;
        Some(recorder)
    }

    /// A process stream's header, for the handle `client` of this process.
    pub fn process_header(client: ClientId) -> Header {
        header(Stream::Process, client, None)
    }

    /// A commit stream's header, for the leadership `term` of the handle `client`.
    pub fn commits_header(client: ClientId, term: u64) -> Header {
        header(Stream::Commits, client, Some(term))
    }

    pub fn record(&mut self, record: &Record<'_>) {
        encode_item(record, &mut self.buffer);
    }

    /// Whether what waits in memory should go to the file now, for a caller that may keep
    /// it waiting: once it makes a block of [`LAZY_BYTES`], or fills the segment.
    pub fn due(&self) -> bool {
        let waiting = self.buffer.len() as u64;
        waiting >= LAZY_BYTES || self.written + waiting >= self.segment_bytes
    }

    /// Writes what was recorded since the last call. Once the segment holds its share of
    /// the bound, the next one starts, with the machine as it stands now (`snapshot`),
    /// and the oldest kept is deleted: then `Ok(true)`. `Err` once recording stopped
    /// (after a warning).
    pub fn flush(&mut self, snapshot: Option<&Process>) -> Result<bool, ()> {
        if !self.buffer.is_empty() {
            self.write_buffer()?;
        }
        if self.written < self.segment_bytes {
            return Ok(false);
        }
        self.header.segment += 1;
        self.file = open_segment(&self.dir, &self.header)
            .inspect_err(|error| warn_stopped(&self.dir, error))
            .map_err(drop)?;
        self.written = 0;
        if let Some(dropped) = self.header.segment.checked_sub(SEGMENTS_KEPT) {
            let old = Header {
                segment: dropped,
                ..self.header.clone()
            };
            let _ = std::fs::remove_file(self.dir.join(segment_name(&old)));
        }
        self.open_with(snapshot);
        self.write_buffer().map(|()| true)
    }

    fn open_with(&mut self, snapshot: Option<&Process>) {
        encode_item(&self.header, &mut self.buffer);
        if let Some(process) = snapshot {
            encode_item(process, &mut self.buffer);
        }
    }

    fn write_buffer(&mut self) -> Result<(), ()> {
        let written = self.file.write_all(&self.buffer);
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        written.map_err(|error| warn_stopped(&self.dir, &error))
    }
}

impl Drop for Recorder {
    /// What a handle closing (or a leadership ending) recorded last.
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            let _ = self.write_buffer();
        }
    }
}

fn header(stream: Stream, client: ClientId, term: Option<u64>) -> Header {
    Header {
        format: FORMAT,
        stream,
        pid: std::process::id(),
        client,
        epoch_us: crate::clock::epoch_on_host_clock().as_micros() as u64,
        segment: 0,
        term,
    }
}

fn open_segment(dir: &Path, header: &Header) -> std::io::Result<File> {
    std::fs::create_dir_all(dir)?;
    File::create(dir.join(segment_name(header)))
}

/// `<pid>-<client>-process-<segment>.rec` or `<pid>-<client>-commits-t<term>-<segment>.rec`.
fn segment_name(header: &Header) -> String {
    let stream = match (header.stream, header.term) {
        (Stream::Process, _) => "process".to_owned(),
        (Stream::Commits, term) => format!("commits-t{}", term.unwrap_or(0)),
    };
    format!(
        "{}-{:032x}-{stream}-{:06}.rec",
        header.pid, header.client.0, header.segment
    )
}

fn warn_stopped(dir: &Path, error: &std::io::Error) {
    tracing::warn!(
        "cannot record into {}: {error}; this stream records no more",
        dir.display()
    );
}

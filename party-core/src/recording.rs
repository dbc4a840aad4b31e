//! Recording a handle (see [`Recording`]): the segment files of its streams, written as
//! the driver and the store thread go, in party-proto's recording format.
//!
//! Each stream is a ring of [`SEGMENTS_KEPT`] segment files: once the newest holds its share
//! of the bound, the next one starts (with the machine as it stands, for a process stream)
//! and the oldest is deleted. A write the driver recorded is written to the file before it
//! can take effect (see `driver/machine.rs`), and a commit before anyone hears of it: a
//! process killed at any point leaves on disk every write it may have made.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

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

/// How many blocks may wait for a stream's writer thread: past them, the caller writes
/// (the writer thread runs at the lowest priority, and a busy machine may not run it).
const QUEUED_BLOCKS: usize = 16;

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
    /// Bytes of the current segment handed to its file (written, or queued for the writer).
    written: u64,
    buffer: Vec<u8>,
    sink: Sink,
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
        let sink = open_segment(&recording.dir, &header)
            .and_then(Sink::new)
            .inspect_err(|error| warn_stopped(&recording.dir, error))
            .ok()?;
        let mut recorder = Recorder {
            dir: recording.dir.clone(),
            segment_bytes: (recording.max_bytes / SEGMENTS_KEPT).max(1),
            header,
            written: 0,
            buffer: Vec::new(),
            sink,
        };
        recorder.open_with(snapshot);
        recorder.write_now().ok()?;
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

    /// Writes what was recorded since the last call to the file before it returns. Once
    /// the segment holds its share of the bound, the next one starts, with the machine as
    /// it stands now (`snapshot`), and the oldest kept is deleted: then `Ok(true)`. `Err`
    /// once recording stopped (after a warning).
    pub fn flush(&mut self, snapshot: Option<&Process>) -> Result<bool, ()> {
        self.write_now()?;
        self.next_segment_if_full(snapshot)
    }

    fn write_now(&mut self) -> Result<(), ()> {
        self.written += self.buffer.len() as u64;
        self.sink
            .write_now(&self.buffer)
            .map_err(|error| warn_stopped(&self.dir, &error))?;
        self.buffer.clear();
        Ok(())
    }

    /// [`Recorder::flush`], but the file is written by the stream's writer thread: for
    /// what need not be on disk before the caller goes on (nothing it holds can take
    /// effect), so that the caller does not wait for the kernel's copy.
    pub fn flush_later(&mut self, snapshot: Option<&Process>) -> Result<bool, ()> {
        self.written += self.buffer.len() as u64;
        self.sink
            .write_later(&mut self.buffer)
            .map_err(|error| warn_stopped(&self.dir, &error))?;
        self.next_segment_if_full(snapshot)
    }

    fn next_segment_if_full(&mut self, snapshot: Option<&Process>) -> Result<bool, ()> {
        if self.written < self.segment_bytes {
            return Ok(false);
        }
        self.header.segment += 1;
        let file = open_segment(&self.dir, &self.header)
            .inspect_err(|error| warn_stopped(&self.dir, error))
            .map_err(drop)?;
        let dropped = self
            .header
            .segment
            .checked_sub(SEGMENTS_KEPT)
            .map(|segment| {
                let dropped = Header {
                    segment,
                    ..self.header.clone()
                };
                self.dir.join(segment_name(&dropped))
            });
        self.sink
            .next_segment(file, dropped)
            .map_err(|error| warn_stopped(&self.dir, &error))?;
        self.written = 0;
        self.open_with(snapshot);
        self.write_now().map(|()| true)
    }

    fn open_with(&mut self, snapshot: Option<&Process>) {
        encode_item(&self.header, &mut self.buffer);
        if let Some(process) = snapshot {
            encode_item(process, &mut self.buffer);
        }
    }
}

impl Drop for Recorder {
    /// What a handle closing (or a leadership ending) recorded last, and every block its
    /// writer thread still holds.
    fn drop(&mut self) {
        let _ = self.sink.write_now(&self.buffer);
        self.sink.close();
    }
}

/// Where a stream's bytes go: its current segment file, written in the order they were
/// handed over, by the caller ([`Sink::write_now`]) or by a thread of the stream's own
/// ([`Sink::write_later`]), which also deletes the segments the ring drops (the kernel
/// takes a while over a file's cached pages).
struct Sink {
    shared: Arc<Shared>,
    /// `None` once closed.
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    jobs: Mutex<Jobs>,
    /// Held while the file is written: taken with `jobs` held, so that the file is written
    /// in the order blocks were queued.
    file: Mutex<File>,
    queued: Condvar,
}

#[derive(Default)]
struct Jobs {
    /// Blocks for the file, in order.
    blocks: VecDeque<Vec<u8>>,
    /// Segments the ring dropped, to delete (in any order, by the writer thread only).
    dropped: Vec<PathBuf>,
    /// Written blocks' buffers, to be filled again (at most [`SPARE_BLOCKS`]).
    spares: Vec<Vec<u8>>,
    /// Why the writer thread stopped, for the next caller.
    failed: Option<std::io::Error>,
    closed: bool,
}

/// How many written blocks' buffers a stream keeps for the next blocks.
const SPARE_BLOCKS: usize = 4;

/// What a block's buffer holds before it grows: a block is handed over once it reaches
/// [`LAZY_BYTES`], and the record that took it there may be as long again.
const BLOCK_CAPACITY: usize = 2 * LAZY_BYTES as usize;

impl Sink {
    fn new(file: File) -> std::io::Result<Sink> {
        let shared = Arc::new(Shared {
            jobs: Mutex::default(),
            file: Mutex::new(file),
            queued: Condvar::new(),
        });
        let writer = std::thread::Builder::new()
            .name("party-recorder".into())
            .spawn({
                let shared = shared.clone();
                move || shared.write_queued()
            })?;
        Ok(Sink {
            shared,
            writer: Some(writer),
        })
    }

    /// Writes every queued block, then `bytes`.
    fn write_now(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut jobs = lock(&self.shared.jobs);
        if let Some(error) = jobs.failed.take() {
            return Err(error);
        }
        let mut file = lock(&self.shared.file);
        while let Some(block) = jobs.blocks.pop_front() {
            file.write_all(&block)?;
            jobs.spare(block);
        }
        drop(jobs);
        file.write_all(bytes)
    }

    /// Queues `buffer`'s bytes for the writer thread and leaves `buffer` empty.
    fn write_later(&self, buffer: &mut Vec<u8>) -> std::io::Result<()> {
        let mut jobs = lock(&self.shared.jobs);
        if let Some(error) = jobs.failed.take() {
            return Err(error);
        }
        if jobs.blocks.len() >= QUEUED_BLOCKS {
            drop(jobs);
            self.write_now(buffer)?;
            buffer.clear();
            return Ok(());
        }
        let empty = jobs
            .spares
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK_CAPACITY));
        jobs.blocks.push_back(std::mem::replace(buffer, empty));
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Writes every queued block to the current file, then goes on in `file`; `dropped`,
    /// a segment the ring no longer keeps, is deleted by the writer thread.
    fn next_segment(&self, file: File, dropped: Option<PathBuf>) -> std::io::Result<()> {
        self.write_now(&[])?;
        *lock(&self.shared.file) = file;
        if let Some(dropped) = dropped {
            lock(&self.shared.jobs).dropped.push(dropped);
            self.shared.queued.notify_one();
        }
        Ok(())
    }

    fn close(&mut self) {
        lock(&self.shared.jobs).closed = true;
        self.shared.queued.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Jobs {
    fn spare(&mut self, mut block: Vec<u8>) {
        if self.spares.len() < SPARE_BLOCKS {
            block.clear();
            self.spares.push(block);
        }
    }
}

impl Shared {
    /// The writer thread: writes queued blocks and deletes dropped segments until the
    /// stream closes, at the lowest priority, so that it takes the time the handle's own
    /// threads leave (recording a busy handle would otherwise slow it down, on a machine
    /// with few cores).
    fn write_queued(&self) {
        #[cfg(target_os = "linux")]
        {
            // On Linux a priority is a thread's own; failing to lower it costs only speed.
            let _ = rustix::process::setpriority_process(None, 19);
        }
        let mut jobs = lock(&self.jobs);
        loop {
            if let Some(block) = jobs.blocks.pop_front() {
                let mut file = lock(&self.file);
                drop(jobs);
                let written = file.write_all(&block);
                drop(file);
                jobs = lock(&self.jobs);
                match written {
                    Ok(()) => jobs.spare(block),
                    Err(error) => jobs.failed = Some(error),
                }
            } else if let Some(dropped) = jobs.dropped.pop() {
                drop(jobs);
                // A segment already gone is as good as deleted.
                let _ = std::fs::remove_file(dropped);
                jobs = lock(&self.jobs);
            } else if jobs.closed {
                return;
            } else {
                jobs = self
                    .queued
                    .wait(jobs)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
    }
}

/// Locks `mutex`; a panic elsewhere while it was held leaves nothing half-done here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use party_proto::recording::decode_segment;
    use party_proto::Timestamp;

    use super::*;

    fn wall_clock(n: u64) -> Record<'static> {
        Record::WallClock {
            at: Timestamp::from_epoch(Duration::from_micros(n)),
            wall: Duration::from_secs(n),
        }
    }

    /// The records of every kept segment of the one stream in `dir`, oldest first.
    fn kept(dir: &Path) -> (usize, Vec<Record<'static>>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        names.sort();
        let records = names
            .iter()
            .flat_map(|name| {
                decode_segment(&std::fs::read(name).unwrap())
                    .unwrap()
                    .records
            })
            .collect();
        (names.len(), records)
    }

    #[test]
    fn blocks_left_to_the_writer_thread_reach_the_file_in_order_with_those_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let recording = Recording::new(dir.path());
        let header = Recorder::commits_header(ClientId(7), 1);
        let mut recorder = Recorder::start(&recording, header, None).unwrap();
        for n in 0..2_000 {
            recorder.record(&wall_clock(n));
            // Now and later in turns, and sometimes several blocks queued at once.
            let flushed = match n % 7 {
                0 => recorder.flush(None),
                _ if n % 3 == 0 => recorder.flush_later(None),
                _ => Ok(false),
            };
            assert_eq!(flushed, Ok(false));
            if n % 7 == 0 {
                // Written at once: on disk before the call returns, after all before it.
                let (_, records) = kept(dir.path());
                assert_eq!(records, (0..=n).map(wall_clock).collect::<Vec<_>>());
            }
        }
        drop(recorder);
        let (segments, records) = kept(dir.path());
        assert_eq!(segments, 1);
        assert_eq!(records, (0..2_000).map(wall_clock).collect::<Vec<_>>());
    }

    #[test]
    fn a_ring_filled_through_the_writer_thread_keeps_its_newest_segments() {
        let dir = tempfile::tempdir().unwrap();
        let recording = Recording::new(dir.path()).max_bytes(4 * 1024);
        let header = Recorder::commits_header(ClientId(7), 1);
        let mut recorder = Recorder::start(&recording, header, None).unwrap();
        let mut segments_started = 0;
        for n in 0..2_000 {
            recorder.record(&wall_clock(n));
            segments_started += u64::from(recorder.flush_later(None).unwrap());
        }
        drop(recorder);
        let (segments, records) = kept(dir.path());
        assert!(segments_started > SEGMENTS_KEPT, "{segments_started}");
        assert_eq!(segments as u64, SEGMENTS_KEPT);
        // The kept segments hold the newest records, none missing between them.
        let first = match records.first() {
            Some(Record::WallClock { wall, .. }) => wall.as_secs(),
            other => panic!("{other:?}"),
        };
        assert!(first > 0);
        assert_eq!(records, (first..2_000).map(wall_clock).collect::<Vec<_>>());
    }
}

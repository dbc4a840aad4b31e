//! Recording a handle (see [`Recording`]): the segment files of its streams, written as
//! the driver and the store thread go, in party-proto's recording format.
//!
//! Each stream is a ring of [`SEGMENTS_KEPT`] segment files: once the newest holds its share
//! of the bound, the next one starts (with the machine as it stands, for a process stream)
//! in the oldest one's file, renamed: rewriting its cached pages costs the kernel far less
//! than filling new ones and freeing the old (a third of the recording's cost at 256 gets
//! in flight). Every write ends with the segment's [`Seal`], which tells its bytes from
//! the older ones past them. A write the driver recorded is written to the file before it
//! can take effect (see `driver/machine.rs`), and a commit before the store is asked: a
//! process killed at any point leaves on disk every write and every commit it may have
//! made.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use party_proto::recording::{encode_item, Header, Record, Seal, Stream, FORMAT};
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

/// How many blocks may wait for a stream's writer thread: past them (a busy machine may
/// leave it no time: it runs at the lowest priority), the caller writes them.
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
    /// What ends each write of the segment `header` names.
    seal: Seal,
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
        let file = open_segment(&recording.dir, &header)
            .inspect_err(|error| warn_stopped(&recording.dir, error))
            .ok()?;
        let mut recorder = Recorder {
            dir: recording.dir.clone(),
            segment_bytes: (recording.max_bytes / SEGMENTS_KEPT).max(1),
            seal: Seal::of(&header),
            header,
            buffer: Vec::new(),
            sink: Sink::new(file),
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
        waiting >= LAZY_BYTES || self.sink.end + waiting >= self.segment_bytes
    }

    /// Writes what was recorded since the last call to the file before it returns. Once
    /// the segment holds its share of the bound, the next one starts, with the machine as
    /// it stands now (`snapshot`), in the oldest kept one's file: then `Ok(true)`. `Err`
    /// once recording stopped (after a warning).
    pub fn flush(&mut self, snapshot: Option<&Process>) -> Result<bool, ()> {
        self.write_now()?;
        self.next_segment_if_full(snapshot)
    }

    /// Writes what was recorded since the last call to the file before it returns, in the
    /// segment it is in (`Ok(false)`): for the middle of a driver's turn, when the machine
    /// may still hold outputs of the turn, which a new segment would count again from its
    /// snapshot.
    pub fn write_through(&mut self, _snapshot: Option<&Process>) -> Result<bool, ()> {
        self.write_now().map(|()| false)
    }

    fn write_now(&mut self) -> Result<(), ()> {
        self.seal_buffer();
        let written = self.sink.write_now(&self.buffer);
        self.buffer.clear();
        written.map_err(|error| warn_stopped(&self.dir, &error))
    }

    /// [`Recorder::flush`], but the file is written by the stream's writer thread: for
    /// what need not be on disk before the caller goes on (nothing it holds can take
    /// effect), so that the caller does not wait for the kernel's copy. (When many blocks
    /// already wait, or a segment ends, the caller writes after all.)
    pub fn flush_later(&mut self, snapshot: Option<&Process>) -> Result<bool, ()> {
        self.seal_buffer();
        let handed = self.sink.write_later(&mut self.buffer);
        self.buffer.clear();
        handed.map_err(|error| warn_stopped(&self.dir, &error))?;
        self.next_segment_if_full(snapshot)
    }

    /// Ends what waits in memory with the seal, unless nothing does.
    fn seal_buffer(&mut self) {
        if !self.buffer.is_empty() {
            self.seal.append_to(&mut self.buffer);
        }
    }

    fn next_segment_if_full(&mut self, snapshot: Option<&Process>) -> Result<bool, ()> {
        if self.sink.end < self.segment_bytes {
            return Ok(false);
        }
        // The segment ends with every block queued for it, before the next one begins.
        self.write_now()?;
        self.header.segment += 1;
        self.seal = Seal::of(&self.header);
        self.reuse_oldest()
            .and_then(|file| self.sink.next_segment(file))
            .map_err(|error| warn_stopped(&self.dir, &error))?;
        self.open_with(snapshot);
        self.write_now().map(|()| true)
    }

    /// The file for the segment the header names: once the ring is full, the oldest one's,
    /// renamed. A new one instead (and the oldest deleted) while the writer thread may still
    /// be writing one of that segment's blocks, which must not land in this one: the thread
    /// may lag that far behind, at its priority on a busy machine. A new one too if the
    /// oldest is gone or cannot be renamed.
    fn reuse_oldest(&mut self) -> std::io::Result<File> {
        let name = self.dir.join(segment_name(&self.header));
        if let Some(segment) = self.header.segment.checked_sub(SEGMENTS_KEPT) {
            let oldest = self.dir.join(segment_name(&Header {
                segment,
                ..self.header.clone()
            }));
            match self.sink.oldest_unshared() {
                Some(file) if std::fs::rename(&oldest, &name).is_ok() => return Ok(file),
                // Still held, gone, or not to be renamed (another process may hold it
                // open): a new file, and the oldest deleted if it can be.
                _ => {
                    let _ = std::fs::remove_file(&oldest);
                }
            }
        }
        open_segment(&self.dir, &self.header)
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
    /// writer thread still holds (nothing once a write failed: a segment must not go on
    /// past a hole).
    fn drop(&mut self) {
        self.seal_buffer();
        let _ = self.sink.write_now(&self.buffer);
        self.sink.close();
    }
}

/// Where a stream's bytes go: its current segment file, each block at the place it was
/// given when handed over, by the caller ([`Sink::write_now`]) or by a thread of the
/// stream's own ([`Sink::write_later`], started at the first need). A segment's file is
/// cut where its bytes end once it is done, as the file may be an older segment's.
///
/// The caller never waits for that thread (which runs at the lowest priority, and may
/// not run for a while on a busy machine): to write now, it writes every block not yet
/// known written itself, the one the thread may be writing included (the same bytes at
/// the same place), then its own. So the file never has a hole before what the caller
/// wrote. After a write fails, nothing more is written.
struct Sink {
    shared: Arc<Shared>,
    file: Arc<File>,
    /// Where the next bytes go in `file`: how much of the segment was handed over.
    end: u64,
    /// The files of the segments before, oldest first, as many as the ring keeps.
    older: VecDeque<Arc<File>>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    jobs: Mutex<Jobs>,
    queued: Condvar,
    /// A write failed: the file may have a hole, after which nothing may go.
    stopped: AtomicBool,
    /// Why, for the caller who finds the stream stopped.
    failure: Mutex<Option<std::io::Error>>,
}

#[derive(Default)]
struct Jobs {
    /// Blocks for the writer thread, in order.
    blocks: VecDeque<Block>,
    /// The block the writer thread is writing.
    writing: Option<Block>,
    /// Written blocks' buffers, to be filled again (at most [`SPARE_BLOCKS`]).
    spares: Vec<Vec<u8>>,
    closed: bool,
}

/// Bytes for a place in a segment file.
#[derive(Clone)]
struct Block {
    file: Arc<File>,
    at: u64,
    bytes: Arc<Vec<u8>>,
}

/// How many written blocks' buffers a stream keeps for the next blocks.
const SPARE_BLOCKS: usize = 4;

/// What a new block's buffer holds before it grows: a block is handed over once it
/// passes [`LAZY_BYTES`], usually by a record far shorter than that.
const BLOCK_CAPACITY: usize = 2 * LAZY_BYTES as usize;

impl Sink {
    fn new(file: File) -> Sink {
        Sink {
            shared: Arc::new(Shared {
                jobs: Mutex::default(),
                queued: Condvar::new(),
                stopped: AtomicBool::new(false),
                failure: Mutex::default(),
            }),
            file: Arc::new(file),
            end: 0,
            older: VecDeque::new(),
            writer: None,
        }
    }

    /// Writes every block handed over and not yet known written, then `bytes`.
    fn write_now(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.shared.check()?;
        let earlier: Vec<Block> = {
            let mut jobs = lock(&self.shared.jobs);
            let writing = jobs.writing.clone();
            writing.into_iter().chain(jobs.blocks.drain(..)).collect()
        };
        for block in earlier {
            self.shared.write(&block)?;
            self.shared.recycle(block.bytes);
        }
        let at = self.place(bytes.len());
        self.shared.write_at(&self.file, bytes, at)
    }

    /// Hands `buffer`'s bytes to the writer thread and leaves `buffer` empty.
    fn write_later(&mut self, buffer: &mut Vec<u8>) -> std::io::Result<()> {
        self.shared.check()?;
        self.start_writer()?;
        let shared = self.shared.clone();
        let mut jobs = lock(&shared.jobs);
        if jobs.blocks.len() >= QUEUED_BLOCKS {
            drop(jobs);
            let written = self.write_now(buffer);
            buffer.clear();
            return written;
        }
        let empty = jobs
            .spares
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BLOCK_CAPACITY));
        let bytes = Arc::new(std::mem::replace(buffer, empty));
        let at = self.place(bytes.len());
        jobs.blocks.push_back(Block {
            file: self.file.clone(),
            at,
            bytes,
        });
        self.shared.queued.notify_one();
        Ok(())
    }

    /// Goes on in `file`, once every block handed over is written to the file before,
    /// which ends there.
    fn next_segment(&mut self, file: File) -> std::io::Result<()> {
        self.write_now(&[])?;
        self.file.set_len(self.end)?;
        self.older
            .push_back(std::mem::replace(&mut self.file, Arc::new(file)));
        self.end = 0;
        Ok(())
    }

    /// The oldest segment's file, once the ring keeps no more before the current one,
    /// unless a block of it is still held: the writer thread may be writing it (its bytes
    /// are written already: the segment ended with every block written by the caller).
    fn oldest_unshared(&mut self) -> Option<File> {
        if (self.older.len() as u64) < SEGMENTS_KEPT - 1 {
            return None;
        }
        Arc::try_unwrap(self.older.pop_front()?).ok()
    }

    /// Where `len` bytes written next go.
    fn place(&mut self, len: usize) -> u64 {
        let at = self.end;
        self.end += len as u64;
        at
    }

    fn start_writer(&mut self) -> std::io::Result<()> {
        if self.writer.is_none() {
            let shared = self.shared.clone();
            let writer = std::thread::Builder::new()
                .name("party-recorder".into())
                .spawn(move || shared.write_queued())?;
            self.writer = Some(writer);
        }
        Ok(())
    }

    /// Stops the writer thread once it has written every block handed over, and ends the
    /// file where they do (unless a write failed: then the file holds what it holds).
    fn close(&mut self) {
        lock(&self.shared.jobs).closed = true;
        self.shared.queued.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        if self.shared.check().is_ok() {
            // What lies past the end is no part of the segment either way.
            let _ = self.file.set_len(self.end);
        }
    }
}

impl Shared {
    /// `Err` once a write failed.
    fn check(&self) -> std::io::Result<()> {
        if !self.stopped.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(lock(&self.failure)
            .take()
            .unwrap_or_else(|| std::io::Error::other("an earlier write failed")))
    }

    fn write(&self, block: &Block) -> std::io::Result<()> {
        self.write_at(&block.file, &block.bytes, block.at)
    }

    /// Writes `bytes` at `at` in `file`, or stops the stream.
    fn write_at(&self, file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
        self.check()?;
        write_all_at(file, bytes, at).inspect_err(|error| {
            *lock(&self.failure) = Some(std::io::Error::new(error.kind(), error.to_string()));
            self.stopped.store(true, Ordering::Release);
        })
    }

    /// Keeps a written block's buffer for the next block, once no one else writes it.
    fn recycle(&self, bytes: Arc<Vec<u8>>) {
        if let Ok(mut bytes) = Arc::try_unwrap(bytes) {
            let mut jobs = lock(&self.jobs);
            if jobs.spares.len() < SPARE_BLOCKS {
                bytes.clear();
                jobs.spares.push(bytes);
            }
        }
    }

    /// The writer thread: writes the blocks handed over until the stream closes, at the
    /// lowest priority, so that it takes the time the handle's own threads leave (on a
    /// machine with few cores it would otherwise delay them).
    fn write_queued(&self) {
        #[cfg(target_os = "linux")]
        {
            // On Linux a priority is a thread's own; failing to lower it costs only speed.
            let _ = rustix::process::setpriority_process(None, 19);
        }
        let mut jobs = lock(&self.jobs);
        loop {
            if let Some(block) = jobs.blocks.pop_front() {
                jobs.writing = Some(block.clone());
                drop(jobs);
                // A failure stops the stream; the caller hears of it at its next write.
                let _ = self.write(&block);
                jobs = lock(&self.jobs);
                jobs.writing = None;
                drop(jobs);
                self.recycle(block.bytes);
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

/// Writes all of `bytes` at `at` in `file`, wherever its cursor is.
#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

/// Writes all of `bytes` at `at` in `file` (which moves its cursor; no one reads it).
#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut at: u64) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match std::os::windows::fs::FileExt::seek_write(file, bytes, at) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                bytes = &bytes[written..];
                at += written as u64;
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
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

    use party_proto::recording::{decode_segment, Segment};
    use party_proto::Timestamp;

    use super::*;

    fn wall_clock(n: u64) -> Record<'static> {
        Record::WallClock {
            at: Timestamp::from_epoch(Duration::from_micros(n)),
            wall: Duration::from_secs(n),
        }
    }

    /// Every kept segment of the one stream in `dir`, oldest first.
    fn segments(dir: &Path) -> Vec<Segment> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        names.sort();
        let segments: Vec<_> = names
            .iter()
            .map(|name| decode_segment(&std::fs::read(name).unwrap()).unwrap())
            .collect();
        let numbers: Vec<_> = segments.iter().map(|s| s.header.segment).collect();
        assert!(numbers.is_sorted(), "{numbers:?}");
        segments
    }

    /// The records of every kept segment of the one stream in `dir`, oldest first.
    fn kept(dir: &Path) -> (usize, Vec<Record<'static>>) {
        let segments = segments(dir);
        let count = segments.len();
        (
            count,
            segments.into_iter().flat_map(|s| s.records).collect(),
        )
    }

    /// The wall-clock readings of `records`, which are all [`wall_clock`]s.
    fn readings(records: &[Record]) -> Vec<u64> {
        let reading = |record: &Record| match record {
            Record::WallClock { wall, .. } => wall.as_secs(),
            other => panic!("{other:?}"),
        };
        records.iter().map(reading).collect()
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

    /// A commit stream recording into `dir`, in segments of 1 KiB.
    fn small_ring(dir: &Path) -> Recorder {
        let recording = Recording::new(dir).max_bytes(4 * 1024);
        let header = Recorder::commits_header(ClientId(7), 1);
        Recorder::start(&recording, header, None).unwrap()
    }

    #[test]
    fn a_ring_filled_through_the_writer_thread_keeps_its_newest_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = small_ring(dir.path());
        let mut segments_started = 0;
        for n in 0..2_000 {
            recorder.record(&wall_clock(n));
            segments_started += u64::from(recorder.flush_later(None).unwrap());
            if n % 300 == 299 {
                // What a process killed now leaves: every record so far, and nothing of
                // the older segments whose files the newer ones were written over.
                assert_eq!(recorder.flush(None), Ok(false));
                let killed = tempfile::tempdir().unwrap();
                for file in std::fs::read_dir(dir.path()).unwrap() {
                    let file = file.unwrap();
                    std::fs::copy(file.path(), killed.path().join(file.file_name())).unwrap();
                }
                let (segments, records) = kept(killed.path());
                assert!(segments as u64 <= SEGMENTS_KEPT);
                let read = readings(&records);
                assert_eq!(read, (read[0]..=n).collect::<Vec<_>>());
            }
        }
        drop(recorder);
        let segments = segments(dir.path());
        assert!(segments_started > SEGMENTS_KEPT, "{segments_started}");
        assert_eq!(segments.len() as u64, SEGMENTS_KEPT);
        // A stream closed ends each file where its segment does.
        assert!(segments.iter().all(|segment| !segment.torn));
        // The kept segments hold the newest records, none missing between them.
        let read = readings(
            &segments
                .into_iter()
                .flat_map(|s| s.records)
                .collect::<Vec<_>>(),
        );
        assert!(read[0] > 0);
        assert_eq!(read, (read[0]..2_000).collect::<Vec<_>>());
    }

    #[test]
    fn a_segment_file_a_late_writer_thread_still_holds_is_not_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut recorder = small_ring(dir.path());
        // The first segment's file, as the writer thread holds it with a block in hand
        // while the thread waits for a core.
        let stalled = recorder.sink.file.clone();
        let mut segments_started = 0;
        let mut n = 0;
        while segments_started <= SEGMENTS_KEPT {
            recorder.record(&wall_clock(n));
            segments_started += u64::from(recorder.flush_later(None).unwrap());
            n += 1;
        }
        // The thread writes its block at last, over the start of that file.
        write_all_at(&stalled, &[0xab; 64], 0).unwrap();
        drop(recorder);
        let (segments, records) = kept(dir.path());
        assert_eq!(segments as u64, SEGMENTS_KEPT);
        let read = readings(&records);
        assert_eq!(read, (read[0]..n).collect::<Vec<_>>());
    }

    #[test]
    fn the_caller_never_waits_for_the_writer_thread_and_leaves_no_hole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut sink = Sink::new(File::create(&path).unwrap());
        // Two blocks handed over that no thread wrote: one taken by the writer thread
        // (which then stalls), one still waiting.
        let mut block = |bytes: &[u8]| Block {
            file: sink.file.clone(),
            at: sink.place(bytes.len()),
            bytes: Arc::new(bytes.to_vec()),
        };
        let (taken, waiting) = (block(b"taken "), block(b"waiting "));
        {
            let mut jobs = lock(&sink.shared.jobs);
            jobs.writing = Some(taken);
            jobs.blocks.push_back(waiting);
        }
        sink.write_now(b"now").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"taken waiting now");
        lock(&sink.shared.jobs).writing = None;
        sink.close();
    }

    #[test]
    fn a_writer_thread_that_never_runs_holds_at_most_its_queue_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut sink = Sink::new(File::create(&path).unwrap());
        // A writer thread that never takes a block, as one at the lowest priority on a
        // busy machine may not for seconds.
        sink.writer = Some(std::thread::spawn(|| {}));
        let handed = QUEUED_BLOCKS + 8;
        let blocks: Vec<Vec<u8>> = (0..handed).map(|n| vec![n as u8; 100 + n]).collect();
        for block in &blocks {
            sink.write_later(&mut block.clone()).unwrap();
            assert!(lock(&sink.shared.jobs).blocks.len() <= QUEUED_BLOCKS);
        }
        // The block past a full queue was written by the caller, with the queue before
        // it; the rest wait.
        let written = QUEUED_BLOCKS + 1;
        assert_eq!(std::fs::read(&path).unwrap(), blocks[..written].concat());
        assert_eq!(lock(&sink.shared.jobs).blocks.len(), handed - written);
        sink.write_now(&[]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), blocks.concat());
        sink.close();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn after_a_failed_write_nothing_more_is_written() {
        // Every write to /dev/full fails (ENOSPC).
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut sink = Sink::new(full);
        let mut block = vec![1; 100];
        sink.write_later(&mut block).unwrap();
        assert!(block.is_empty());
        // The queued block fails first, and stops the stream for good.
        let error = sink.write_now(&[2; 10]).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::StorageFull);
        assert!(sink.shared.stopped.load(Ordering::Acquire));
        assert!(sink.write_now(&[]).is_err());
        assert!(sink.write_later(&mut vec![3; 10]).is_err());
        sink.close();
    }
}

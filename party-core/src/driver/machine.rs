//! The handle's process machine, with every call that changes it recorded while the handle
//! records (see [`crate::Recording`]). Only `&self` queries reach the machine past this
//! wrapper (through `Deref`), so no call that changes it can go unrecorded.
//!
//! What is recorded reaches the file before a write it holds can take effect (before the
//! driver sends to the leader, or hands its own store a write): a process killed at any
//! moment leaves every write it may have made in its recording, so that the replay never
//! meets a value no recorded write put. The rest (reads, answers) goes in blocks (see
//! [`Recorder::due`]) to the recording's writer thread: a killed process may lose the
//! blocks not yet written (at most 16, and what waits here), which only leaves its last
//! operations out of the history.

use std::borrow::Cow;
use std::time::Duration;

use party_proto::recording::{Bytes, Fingerprint, Gave, Record, OUTPUTS_PER_CHECK};
use party_proto::wire::frame::HEADER_LEN;
use party_proto::wire::{ReadOp, ServerMessage, WriteOp};
use party_proto::{
    CommitSeq, IterId, IterOptions, IterPoll, KeyRange, Process, ProcessInput, ProcessOutput,
    RequestId, Timestamp, WatchId, WatchPoll,
};

use crate::recording::Recorder;

pub(super) struct Machine {
    process: Process,
    recorder: Option<Recorder>,
    /// A write was recorded since the recording was last written to its file.
    write_unflushed: bool,
    /// The outputs so far, recorded every [`OUTPUTS_PER_CHECK`] and before each write
    /// of the recording to its file.
    outputs: Fingerprint,
    /// The short digests of the outputs since they were last recorded.
    outputs_each: Vec<u8>,
}

impl std::ops::Deref for Machine {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl Machine {
    pub fn new(process: Process, recording: Option<&crate::Recording>) -> Machine {
        let recorder = recording.and_then(|recording| {
            let header = Recorder::process_header(process.client_id());
            Recorder::start(recording, header, Some(&process))
        });
        Machine {
            process,
            recorder,
            write_unflushed: false,
            outputs: Fingerprint::default(),
            outputs_each: Vec::new(),
        }
    }

    /// Writes what was recorded to its file if a write is among it: call it before
    /// anything the machine asked can make a write take effect. Mid-turn: a full segment
    /// gives way to the next at the turn's end ([`Machine::flush_recording_lazily`]).
    pub fn flush_recorded_writes(&mut self) {
        if std::mem::take(&mut self.write_unflushed) {
            self.flush_recording(Recorder::write_through);
        }
    }

    /// Writes what was recorded to its file if it holds a write; hands a block's worth to
    /// the recording's writer thread.
    pub fn flush_recording_lazily(&mut self) {
        if std::mem::take(&mut self.write_unflushed) {
            self.flush_recording(Recorder::flush);
        } else if self.recorder.as_ref().is_some_and(Recorder::due) {
            self.flush_recording(Recorder::flush_later);
        }
    }

    /// Writes everything recorded to the file: the handle has closed, and its process may
    /// exit (or be killed) the moment its closer hears so.
    pub fn finish_recording(&mut self) {
        self.write_unflushed = false;
        self.flush_recording(Recorder::flush);
    }

    fn flush_recording(
        &mut self,
        flush: impl FnOnce(&mut Recorder, Option<&Process>) -> Result<bool, ()>,
    ) {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&self.outputs.record(&self.outputs_each));
            self.outputs_each.clear();
            match flush(recorder, Some(&self.process)) {
                // A segment's outputs are counted from its snapshot.
                Ok(true) => self.outputs = Fingerprint::default(),
                Ok(false) => {}
                Err(()) => self.recorder = None,
            }
        }
    }

    fn record(&mut self, record: impl FnOnce() -> Record<'static>) {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&record());
        }
    }

    pub fn read(&mut self, now: Timestamp, op: ReadOp) -> RequestId {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::Read {
                at: now,
                op: Cow::Borrowed(&op),
            });
        }
        self.process.read(now, op)
    }

    pub fn write(&mut self, now: Timestamp, op: WriteOp) -> RequestId {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::Write {
                at: now,
                op: Cow::Borrowed(&op),
            });
            self.write_unflushed = true;
        }
        self.process.write(now, op)
    }

    pub fn set_wall_clock(&mut self, now: Timestamp, wall: Duration) {
        self.record(|| Record::WallClock { at: now, wall });
        self.process.set_wall_clock(now, wall);
    }

    pub fn open_iter(&mut self, now: Timestamp, options: IterOptions) -> IterId {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::OpenIter {
                at: now,
                options: Cow::Borrowed(&options),
            });
        }
        self.process.open_iter(now, options)
    }

    pub fn iter_take(&mut self, now: Timestamp, iter: IterId, max: usize) -> IterPoll {
        let poll = self.process.iter_take(now, iter, max);
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::IterTake {
                at: now,
                iter,
                max: max as u64,
                gave: Gave::of_iter(&poll),
            });
        }
        poll
    }

    pub fn close_iter(&mut self, now: Timestamp, iter: IterId) {
        self.record(|| Record::CloseIter { at: now, iter });
        self.process.close_iter(now, iter);
    }

    pub fn open_watch(
        &mut self,
        now: Timestamp,
        range: KeyRange,
        from: Option<CommitSeq>,
    ) -> WatchId {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::OpenWatch {
                at: now,
                range: Cow::Borrowed(&range),
                from,
            });
        }
        self.process.open_watch(now, range, from)
    }

    pub fn watch_take(&mut self, now: Timestamp, watch: WatchId, max: usize) -> WatchPoll {
        let poll = self.process.watch_take(now, watch, max);
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::WatchTake {
                at: now,
                watch,
                max: max as u64,
                gave: Gave::of_watch(&poll),
            });
        }
        poll
    }

    pub fn close_watch(&mut self, now: Timestamp, watch: WatchId) {
        self.record(|| Record::CloseWatch { at: now, watch });
        self.process.close_watch(now, watch);
    }

    pub fn handle_input(&mut self, now: Timestamp, input: ProcessInput) {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::Input {
                at: now,
                input: Cow::Borrowed(&input),
            });
        }
        self.process.handle_input(now, input);
    }

    /// The machine's next output. A `Send` is folded into the recording's fingerprint by
    /// [`Machine::record_sent`], once the driver has encoded it.
    pub fn poll_output(&mut self) -> Option<ProcessOutput> {
        let output = self.process.poll_output()?;
        if self.recorder.is_some() && !matches!(output, ProcessOutput::Send(_)) {
            self.fold(&output, None);
        }
        Some(output)
    }

    /// The last output, a `Send`, and the frame the driver sent for it (empty if none).
    pub fn record_sent(&mut self, output: &ProcessOutput, frame: &[u8]) {
        if self.recorder.is_some() {
            self.fold(output, frame.get(HEADER_LEN..));
        }
    }

    fn fold(&mut self, output: &ProcessOutput, sent: Option<&[u8]>) {
        self.outputs.fold(output, sent).push(&mut self.outputs_each);
        if let Some(recorder) = &mut self.recorder {
            if self.outputs.count().is_multiple_of(OUTPUTS_PER_CHECK) {
                recorder.record(&self.outputs.record(&self.outputs_each));
                self.outputs_each.clear();
            }
        }
    }

    /// Gives the machine the messages one read of the leader's connection completed;
    /// recorded as the bytes read, which a replay decodes again.
    pub fn receive(&mut self, now: Timestamp, bytes: &[u8], messages: Vec<ServerMessage>) {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::Received {
                at: now,
                bytes: Bytes(Cow::Borrowed(bytes)),
            });
        }
        for message in messages {
            self.process
                .handle_input(now, ProcessInput::FromLeader(message));
        }
    }
}

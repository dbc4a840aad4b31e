//! The handle's process machine, with every call that changes it recorded while the handle
//! records (see [`crate::Recording`]). Only `&self` queries reach the machine past this
//! wrapper (through `Deref`), so no call that changes it can go unrecorded.

use std::borrow::Cow;
use std::time::Duration;

use party_proto::recording::Record;
use party_proto::wire::{ReadOp, WriteOp};
use party_proto::{
    CommitSeq, IterId, IterOptions, IterPoll, KeyRange, Process, ProcessInput, ProcessOutput,
    RequestId, Timestamp, WatchEvent, WatchId, WatchPoll,
};

use crate::recording::Recorder;

pub(super) struct Machine {
    process: Process,
    recorder: Option<Recorder>,
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
        Machine { process, recorder }
    }

    /// Writes what this turn of the driver recorded (see [`Recorder::flush`]).
    pub fn flush_recording(&mut self) {
        if let Some(recorder) = &mut self.recorder {
            if recorder.flush(Some(&self.process)).is_err() {
                self.recorder = None;
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
                poll: Cow::Borrowed(&poll),
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
                poll: Cow::Borrowed(&poll),
            });
        }
        poll
    }

    pub fn watch_give_back(&mut self, watch: WatchId, events: Vec<WatchEvent>) {
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::WatchGiveBack {
                watch,
                events: Cow::Borrowed(&events),
            });
        }
        self.process.watch_give_back(watch, events);
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

    pub fn poll_output(&mut self) -> Option<ProcessOutput> {
        let output = self.process.poll_output()?;
        if let Some(recorder) = &mut self.recorder {
            recorder.record(&Record::Output(Cow::Borrowed(&output)));
        }
        Some(output)
    }
}

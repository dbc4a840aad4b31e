//! Replaying the recordings of real processes (`party-sim --replay DIR`; see party-core's
//! `Recording`). Each handle's machine, restored from its recording's snapshot, is driven
//! with exactly the calls its real driver made, and must give exactly the outputs the real
//! machine gave: a difference is nondeterminism, reported at its first step. The operations
//! those calls issued and how they ended, with the commits the leaders' stores made, form
//! one history on the host's clock, which the simulator's checks judge.
//!
//! Nothing here reads files: the caller hands in each segment file's name and bytes.

mod commits;

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use party_backends::{Backend, MemoryBackend};
use party_proto::recording::{
    decode_segment, Fingerprint, Gave, Header, Record, RecordingError, Segment, ShortDigest,
    Stream, OUTPUTS_PER_CHECK,
};
use party_proto::wire::{FrameDecoder, ReadCheck, ServerMessage};
use party_proto::{
    ClientConfig, CommitResult, ElectionInput, ErrorCode, IterId, IterPoll, Process, ProcessInput,
    ProcessOutput, RequestId, Timestamp, WriteBatch,
};

use crate::check::{self, Timeline};
use crate::history::{Excuses, Op, OpKind, Outcome};
use crate::trace::Trace;
use commits::{store_commits, Landing, StoreCommit};

/// Why recordings cannot be replayed at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no recording: no segment files")]
    Empty,
    #[error("{file}: {error}")]
    Segment { file: String, error: RecordingError },
    #[error("{stream}: segment {missing} is missing between the segments kept")]
    Gap { stream: String, missing: u64 },
}

/// What a replay found.
#[derive(Debug)]
pub struct Replayed {
    pub processes: usize,
    /// Calls and outputs replayed.
    pub steps: usize,
    pub ops: usize,
    pub commits: usize,
    /// Where a replayed machine answered otherwise than the real one did: the first such
    /// step of each handle.
    pub nondeterminism: Vec<String>,
    /// What the history checks found.
    pub violations: Vec<String>,
    /// What could not be checked, and why.
    pub unchecked: Vec<String>,
    /// Every operation and commit, in time order, from the first handle's start.
    pub trace: Trace,
}

impl Replayed {
    /// The replay matched the real run and the history passed every check.
    pub fn passed(&self) -> bool {
        self.nondeterminism.is_empty() && self.violations.is_empty()
    }
}

/// One stream's segments, oldest first.
struct StreamSegments {
    name: String,
    header: Header,
    segments: Vec<Segment>,
}

impl StreamSegments {
    /// The ring dropped its first segments.
    fn truncated(&self) -> bool {
        self.header.segment > 0
    }

    fn time(&self, at: Timestamp, origin: u64) -> u64 {
        (self.header.epoch_us + at.since_epoch().as_micros() as u64).saturating_sub(origin)
    }
}

/// Replays the segment files `files` (name, bytes) of one run.
pub fn replay(files: &[(String, Vec<u8>)]) -> Result<Replayed, ReplayError> {
    let (streams, cut_short) = group(files)?;
    if streams.is_empty() {
        return Err(ReplayError::Empty);
    }
    let origin = streams.iter().map(|s| s.header.epoch_us).min().unwrap_or(0);
    let (processes, commit_streams): (Vec<_>, Vec<_>) = streams
        .into_iter()
        .partition(|s| s.header.stream == Stream::Process);
    let mut replayed = Replayed {
        processes: processes.len(),
        steps: 0,
        ops: 0,
        commits: 0,
        nondeterminism: Vec::new(),
        violations: Vec::new(),
        unchecked: Vec::new(),
        trace: Trace::default(),
    };
    let mut events: Vec<(u64, String)> = Vec::new();
    let mut history = Vec::new();
    // Every leadership a recorded handle was served by, or led.
    let mut terms = BTreeSet::new();
    let processes_clients: BTreeSet<u128> = processes
        .iter()
        .map(|stream| stream.header.client.0)
        .collect();
    for (index, mut stream) in processes.into_iter().enumerate() {
        if stream.truncated() {
            replayed.unchecked.push(format!(
                "p{index} ({}): the ring dropped its first segments, so its history starts \
                 late: only its determinism is checked",
                stream.name
            ));
        }
        let machine = stream.segments[0]
            .snapshot
            .take()
            .expect("a process stream's segment holds a snapshot");
        let mut run = ProcessRun::new(
            index,
            *machine,
            &stream,
            origin,
            (&mut history, &mut events, &mut terms),
        );
        let mut step = 0;
        'segments: for segment in stream.segments {
            // Each segment counts the machine's outputs from its snapshot.
            run.count_outputs_afresh();
            for record in segment.records {
                replayed.steps += 1;
                if let Err(difference) = run.step(step, record) {
                    replayed.nondeterminism.push(format!(
                        "p{index} ({}), step {}: {}",
                        stream.name,
                        difference.step.unwrap_or(step),
                        difference.what
                    ));
                    break 'segments;
                }
                step += 1;
            }
        }
    }
    replayed.ops = history.len();
    let recorded_terms: BTreeSet<u64> = commit_streams
        .iter()
        .filter_map(|stream| stream.header.term)
        .collect();
    for term in terms.difference(&recorded_terms) {
        replayed.unchecked.push(format!(
            "the leader of term {term} served recorded handles but was not recorded itself, \
             so its commits are unknown"
        ));
    }
    // A directory's leaderships are numbered one after another: two leaders of one term
    // were recorded in two directories (or runs), whose histories are not one.
    let mut leaders_of_terms: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for stream in &commit_streams {
        if let Some(term) = stream.header.term {
            leaders_of_terms.entry(term).or_default().push(&stream.name);
        }
    }
    for (term, leaders) in leaders_of_terms
        .iter()
        .filter(|(_, leaders)| leaders.len() > 1)
    {
        replayed.unchecked.push(format!(
            "term {term} was led by {} recorded leaders ({}): recordings of more than one \
             data directory or run, whose histories are not one",
            leaders.len(),
            leaders.join(", ")
        ));
    }
    for stream in commit_streams.iter().filter(|stream| stream.truncated()) {
        replayed.unchecked.push(format!(
            "{}: the ring dropped its first segments, so the store's content is unknown",
            stream.name
        ));
    }
    let commits = store_commits(&commit_streams, origin);
    // Each commit names the clients whose writes it holds (their dedup records): a writer
    // that left no recording would put values no recorded write put.
    let recorded_clients: BTreeSet<u128> = processes_clients;
    let unrecorded: BTreeSet<u128> = commits
        .iter()
        .flat_map(|commit| &commit.batch.records)
        .map(|(client, _)| client.0)
        .filter(|client| !recorded_clients.contains(client))
        .collect();
    if !unrecorded.is_empty() {
        replayed.unchecked.push(format!(
            "{} writers committed through the recorded leaders but were not recorded \
             themselves, so some writes are unknown",
            unrecorded.len()
        ));
    }
    replayed.commits = commits.len();
    let mut store = MemoryBackend::new();
    let mut timeline = Timeline::default();
    let mut committed: FxHashMap<(Vec<u8>, Vec<u8>), u32> = FxHashMap::default();
    for StoreCommit {
        stream,
        issued,
        batch,
        landing,
    } in commits
    {
        events.push((
            issued,
            format!("{stream} commits {} writes: {landing}", batch.ops.len()),
        ));
        let landed = match landing {
            Landing::Answered {
                answered,
                result: CommitResult::Committed,
            } => answered,
            // Somewhere between its asking and the next leader's look at the store.
            Landing::Landed { found } => found,
            Landing::Answered {
                result: CommitResult::Unsettled(_),
                ..
            } => {
                replayed.unchecked.push(format!(
                    "{stream}: a commit whose outcome the store did not tell, so the \
                     store's content is unknown"
                ));
                continue;
            }
            Landing::Untold => {
                replayed.unchecked.push(format!(
                    "{stream}: its leader died during a commit, and no recorded leader \
                     after it tells whether the commit landed, so the store's content is \
                     unknown"
                ));
                continue;
            }
            Landing::Answered { .. } | Landing::Lost => continue,
        };
        commit(
            &mut store,
            &mut timeline,
            &mut committed,
            (issued, landed),
            batch,
        );
    }
    events.sort_by_key(|(at, _)| *at);
    for (at, event) in events {
        replayed.trace.line(at, format_args!("{event}"));
    }
    if replayed.unchecked.is_empty() {
        let (violations, unchecked) = check_history(&history, &timeline, &committed);
        replayed.violations.extend(violations);
        replayed.unchecked.extend(unchecked);
    }
    // Such a segment holds nothing: the history is whole without it.
    replayed.unchecked.extend(cut_short.into_iter().map(|file| {
        format!(
            "{file}: cut short as it began (its process stopped as it started the segment), \
             so left out"
        )
    }));
    Ok(replayed)
}

/// The history checks of the simulator, with exactly-once judged by key and value (a real
/// workload's values need not be unique): the violations they found, and what they could
/// not judge. Not the write-order check: it finds a write's commit by the first that left
/// its key with its value, which in a real workload may be an earlier write of that value.
fn check_history(
    history: &[Op],
    timeline: &Timeline,
    committed: &FxHashMap<(Vec<u8>, Vec<u8>), u32>,
) -> (Vec<String>, Vec<String>) {
    let mut violations = check::failures(history);
    violations.extend(check::write_counts(history, committed));
    violations.extend(check::atomic_reads(history, timeline));
    let (keys, too_busy) = check::checkable_keys(history);
    violations.extend(check::linearizability(history, &keys));
    let unchecked = too_busy
        .into_iter()
        .map(|(key, ops)| {
            format!(
                "key {}: {ops} operations, more than the linearizability search takes, and \
                 values written more than once (or deletes), which zones cannot judge",
                key.escape_ascii()
            )
        })
        .collect();
    violations.extend(check::iterators(history, timeline));
    violations.extend(check::conflicts(history, timeline));
    (violations, unchecked)
}

fn commit(
    store: &mut MemoryBackend,
    timeline: &mut Timeline,
    committed: &mut FxHashMap<(Vec<u8>, Vec<u8>), u32>,
    (issued, answered): (u64, u64),
    batch: &WriteBatch,
) {
    let effect = check::effect_of(store, &batch.ops);
    store.write(batch).expect("the memory store cannot fail");
    timeline.commit_between(issued, answered, effect);
    if let Some(append) = &batch.log {
        timeline.logged(append.seq.0);
    }
    for op in &batch.ops {
        for pair in check::put_pairs(op) {
            *committed.entry(pair).or_default() += 1;
        }
    }
}

/// Decodes the files and groups their segments by stream, oldest first; and the files
/// cut short as they began, which hold nothing.
fn group(files: &[(String, Vec<u8>)]) -> Result<(Vec<StreamSegments>, Vec<String>), ReplayError> {
    type StreamKey = (bool, u32, u128, Option<u64>);
    let mut streams: BTreeMap<StreamKey, Vec<Segment>> = BTreeMap::new();
    let mut cut_short = Vec::new();
    for (file, bytes) in files {
        let segment = match decode_segment(bytes) {
            Ok(segment) => segment,
            Err(RecordingError::CutShortAtStart) => {
                cut_short.push(file.clone());
                continue;
            }
            Err(error) => {
                return Err(ReplayError::Segment {
                    file: file.clone(),
                    error,
                })
            }
        };
        let h = &segment.header;
        let key = (h.stream == Stream::Commits, h.pid, h.client.0, h.term);
        streams.entry(key).or_default().push(segment);
    }
    let mut grouped = Vec::new();
    for ((_, pid, client, term), mut segments) in streams {
        segments.sort_by_key(|s| s.header.segment);
        let header = segments[0].header.clone();
        let name = match term {
            Some(term) => format!(
                "pid {pid} client {:08x} commits of term {term}",
                client >> 96
            ),
            None => format!("pid {pid} client {:08x}", client >> 96),
        };
        for (expected, segment) in (header.segment..).zip(&segments) {
            if segment.header.segment != expected {
                return Err(ReplayError::Gap {
                    stream: name,
                    missing: expected,
                });
            }
        }
        grouped.push(StreamSegments {
            name,
            header,
            segments,
        });
    }
    // Handles in the order they started, so that p0 is the first.
    grouped.sort_by_key(|s| (s.header.epoch_us, s.header.pid, s.header.client.0));
    Ok((grouped, cut_short))
}

/// Where every handle's replay adds what it found: its operations, its trace events, the
/// leaderships it met.
type Gathered<'a> = (
    &'a mut Vec<Op>,
    &'a mut Vec<(u64, String)>,
    &'a mut BTreeSet<u64>,
);

/// One handle's machine being replayed, and what its calls add to the history.
struct ProcessRun<'a> {
    index: usize,
    machine: Process,
    epoch: u64,
    origin: u64,
    now: u64,
    excuses: Excuses,
    /// Each request pending: its operation's index, and the size its frame is judged by.
    requests: FxHashMap<RequestId, (usize, u64)>,
    iters: FxHashMap<IterId, usize>,
    /// The leader's connection's bytes as the driver's decoder had them (a new one with
    /// each connection).
    decoder: FrameDecoder,
    /// The replayed outputs, folded as the recording driver folded the real ones.
    outputs: Fingerprint,
    /// Each replayed output of the segment, in order.
    given: Vec<Given>,
    /// The step being replayed.
    step: usize,
    /// The last outputs, described, for a report: their numbers (from 1 in each segment)
    /// and descriptions.
    recent: std::collections::VecDeque<(u64, String)>,
    /// The outputs compared with the recording so far.
    checked: u64,
    history: &'a mut Vec<Op>,
    events: &'a mut Vec<(u64, String)>,
    /// Where the leaderships this handle met are gathered.
    terms: &'a mut BTreeSet<u64>,
}

impl<'a> ProcessRun<'a> {
    fn new(
        index: usize,
        machine: Process,
        stream: &StreamSegments,
        origin: u64,
        (history, events, terms): Gathered<'a>,
    ) -> ProcessRun<'a> {
        let excuses = excuses_of(machine.client_config());
        let decoder = FrameDecoder::new(machine.client_config().max_frame_len);
        ProcessRun {
            index,
            machine,
            epoch: stream.header.epoch_us,
            origin,
            now: stream.time(Timestamp::ZERO, origin),
            excuses,
            requests: FxHashMap::default(),
            iters: FxHashMap::default(),
            decoder,
            outputs: Fingerprint::default(),
            given: Vec::new(),
            step: 0,
            recent: std::collections::VecDeque::new(),
            checked: 0,
            history,
            events,
            terms,
        }
    }

    fn at(&mut self, at: Timestamp) -> Timestamp {
        self.now = (self.epoch + at.since_epoch().as_micros() as u64).saturating_sub(self.origin);
        at
    }

    /// Replays one recorded step, the `step`th of the stream; the difference, if the
    /// machine answers otherwise.
    fn step(&mut self, step: usize, record: Record<'static>) -> Result<(), Difference> {
        self.step = step;
        match record {
            Record::Input { at, input } => {
                let at = self.at(at);
                let input = input.into_owned();
                if let ProcessInput::Served { term } = input {
                    self.met(term);
                }
                // A seat in a waiting room is a new connection too.
                if matches!(
                    input,
                    ProcessInput::Connected { .. }
                        | ProcessInput::Election(ElectionInput::Connected)
                        | ProcessInput::Seated { .. }
                        | ProcessInput::Election(ElectionInput::InWaitingRoom)
                ) {
                    self.decoder = FrameDecoder::new(self.machine.client_config().max_frame_len);
                }
                self.machine.handle_input(at, input);
            }
            Record::Received { at, bytes } => {
                let at = self.at(at);
                let mut input = &bytes.0[..];
                // Bytes that do not decode end here, as they did for the driver, whose
                // next recorded input says the connection broke.
                while let Ok(Some(message)) = self.decoder.decode::<ServerMessage>(&mut input) {
                    if let ServerMessage::Welcome(welcome) = &message {
                        self.met(welcome.term);
                    }
                    self.machine
                        .handle_input(at, ProcessInput::FromLeader(message));
                }
                // As the driver does after each read.
                self.decoder
                    .set_max_frame_len(self.machine.incoming_frame_limit());
            }
            Record::Outputs {
                count,
                digest,
                each,
            } => return self.check_outputs(count, digest, &each.0),
            Record::Read { at, op } => {
                let at = self.at(at);
                let (kind, bound) = (OpKind::of_read(&op), op.request_len_bound());
                let id = self.machine.read(at, op.into_owned());
                self.issue_request(id, kind, bound);
            }
            Record::Write { at, op } => {
                let at = self.at(at);
                let (kind, bound) = (OpKind::of_write(&op), op.request_len_bound());
                let id = self.machine.write(at, op.into_owned());
                self.issue_request(id, kind, bound);
            }
            Record::WallClock { at, wall } => self.machine.set_wall_clock(at, wall),
            Record::OpenIter { at, options } => {
                let at = self.at(at);
                let kind = OpKind::Iterate(options.clone().into_owned());
                let iter = self.machine.open_iter(at, options.into_owned());
                let index = self.issue(kind, Outcome::iterating());
                self.iters.insert(iter, index);
            }
            Record::IterTake {
                at,
                iter,
                max,
                gave,
            } => {
                let at = self.at(at);
                let replayed = self.machine.iter_take(at, iter, max as usize);
                same_take(&gave, &Gave::of_iter(&replayed), &replayed)?;
                self.iterated(iter, replayed);
            }
            Record::CloseIter { at, iter } => {
                let at = self.at(at);
                self.machine.close_iter(at, iter);
                if let Some(index) = self.iters.remove(&iter) {
                    let op = &mut self.history[index];
                    if let Outcome::Iterated { closed_early, .. } = &mut op.outcome {
                        *closed_early = true;
                    }
                    self.complete(index, None);
                }
            }
            Record::OpenWatch { at, range, from } => {
                let at = self.at(at);
                self.machine.open_watch(at, range.into_owned(), from);
            }
            Record::WatchTake {
                at,
                watch,
                max,
                gave,
            } => {
                let at = self.at(at);
                let replayed = self.machine.watch_take(at, watch, max as usize);
                same_take(&gave, &Gave::of_watch(&replayed), &replayed)?;
            }
            Record::CloseWatch { at, watch } => {
                let at = self.at(at);
                self.machine.close_watch(at, watch);
            }
            Record::Committing { .. } | Record::Committed { .. } | Record::StoreNext { .. } => {
                return Err(Difference::from("a commit in a stream of calls".to_owned()))
            }
        }
        self.drain();
        Ok(())
    }

    /// The handle was served by, or led, the leadership `term`.
    fn met(&mut self, term: u64) {
        self.terms.insert(term);
    }

    fn count_outputs_afresh(&mut self) {
        self.outputs = Fingerprint::default();
        self.given.clear();
        self.recent.clear();
        self.checked = 0;
    }

    /// Takes every output the machine has for its driver, as the real driver did after
    /// each call, folding each into the fingerprint.
    fn drain(&mut self) {
        while let Some(output) = self.machine.poll_output() {
            let short = self.outputs.fold(&output, None);
            self.given.push(Given {
                fingerprint: self.outputs.digest(),
                short,
                step: self.step,
            });
            self.recent
                .push_back((self.given.len() as u64, shortened(&output)));
            if self.recent.len() > OUTPUTS_DESCRIBED {
                self.recent.pop_front();
            }
            if let ProcessOutput::Completed { id, result } = output {
                if let Some((index, bound)) = self.requests.remove(&id) {
                    self.history[index].outcome = Outcome::of(result);
                    self.complete(index, Some(bound));
                }
            }
        }
    }

    /// Compares the replay's outputs with the real machine's first `count`; `each`, the
    /// real short digests of those after the last check, finds the first that differs.
    fn check_outputs(&mut self, count: u64, digest: u64, each: &[u8]) -> Result<(), Difference> {
        let checked = std::mem::replace(&mut self.checked, count);
        let replayed = self.given.len() as u64;
        if count > replayed {
            return Err(Difference::from(format!(
                "the real machine had given {count} outputs by then, the replayed one {replayed}"
            )));
        }
        if count == 0 || self.given[count as usize - 1].fingerprint == digest {
            return Ok(());
        }
        let first = (checked..count)
            .zip(ShortDigest::all_in(each))
            .find(|&(number, real)| self.given[number as usize].short != real)
            .map(|(number, _)| number + 1);
        let described = |number: u64| {
            self.recent
                .iter()
                .find(|(at, _)| *at == number)
                .map_or("(no longer kept)", |(_, text)| text.as_str())
        };
        match first {
            Some(number) => Err(Difference {
                step: Some(self.given[number as usize - 1].step),
                what: format!(
                    "the replayed machine's output {number} differs from the real one's (found \
                     at the check of outputs {}..={count}, step {}); the replay's: {}",
                    checked + 1,
                    self.step,
                    described(number)
                ),
            }),
            // Two bytes of each agree: a difference the short digests cannot place.
            None => {
                let recent: Vec<&str> = (checked + 1..=count).map(described).collect();
                Err(Difference::from(format!(
                    "the real machine's outputs {}..={count} differ from the replayed ones; the \
                     replay's: {recent:?}",
                    checked + 1
                )))
            }
        }
    }

    /// A request the machine numbered `id`, pending until it completes; `bound` is the
    /// size its frame is judged by.
    fn issue_request(&mut self, id: RequestId, kind: OpKind, bound: u64) {
        let index = self.issue(kind, Outcome::Unknown);
        self.requests.insert(id, (index, bound));
    }

    fn issue(&mut self, kind: OpKind, outcome: Outcome) -> usize {
        let index = self.history.len();
        self.events
            .push((self.now, format!("p{} op{index} {kind:?}", self.index)));
        self.history.push(Op {
            process: self.index,
            // A recording is one handle's.
            incarnation: 0,
            kind,
            invoke: self.now,
            complete: None,
            outcome,
            excuses: self.excuses,
        });
        index
    }

    /// The operation `index` ended; `request_bound` is its request's frame bound (none for
    /// an iterator).
    fn complete(&mut self, index: usize, request_bound: Option<u64>) {
        let op = &mut self.history[index];
        op.complete = Some(self.now);
        excuse_input_over_limit(op, request_bound);
        self.events.push((
            self.now,
            format!("p{} op{index} -> {:?}", self.index, op.outcome),
        ));
    }

    /// What an iterator's take gave its caller.
    fn iterated(&mut self, iter: IterId, poll: IterPoll) {
        let Some(&index) = self.iters.get(&iter) else {
            return;
        };
        match poll {
            IterPoll::Entries(taken) => {
                let follows = self.machine.iter_at(iter);
                self.history[index].outcome.took(taken, follows);
            }
            IterPoll::Pending => {}
            IterPoll::Done => {
                self.iters.remove(&iter);
                self.complete(index, None);
            }
            IterPoll::Failed(error) => {
                self.iters.remove(&iter);
                self.history[index].outcome = Outcome::Failed(error);
                self.complete(index, None);
            }
        }
    }
}

/// The failures a real handle's settings explain: a lost connection without retries, a
/// timeout with one set, a close, and a write whose outcome could not be known.
fn excuses_of(config: &ClientConfig) -> Excuses {
    Excuses {
        connection_lost: !config.retry,
        timed_out: config.request_timeout.is_some(),
        closed: true,
        // A real store, lock file or socket may fail the election: the recording cannot
        // tell a fault from a bug.
        election_failed: true,
        outcome_unknown: true,
        failed_before: true,
        ..Excuses::default()
    }
}

/// Excuses a failure that the operation's own input, or the leader's disk, explains as the
/// error's figures tell it: its request over a frame limit (by the very bound it was judged
/// by, `request_bound`), an answer over one (of an operation that reads values), a key it
/// names or a write over a real store's limit, which the recording does not hold, or a
/// write refused with less free space than the leader keeps in reserve. The same errors
/// otherwise (figures within the limit, a frame another request made too large, a key the
/// operation does not name) stay unexplained, and so does any other failure of the store.
fn excuse_input_over_limit(op: &mut Op, request_bound: Option<u64>) {
    let Outcome::Failed(error) = &op.outcome else {
        return;
    };
    let writes = matches!(
        op.kind,
        OpKind::Write(_) | OpKind::Clear(_) | OpKind::Transaction { .. }
    );
    // A transaction's conflict carries the value it found.
    let answers_values = matches!(
        op.kind,
        OpKind::Get(_) | OpKind::GetMany(_) | OpKind::Iterate(_) | OpKind::Transaction { .. }
    );
    let excuses = &mut op.excuses;
    match *error {
        ErrorCode::FrameTooLarge { len, max } if len > max && request_bound == Some(len) => {
            excuses.too_large = true;
        }
        ErrorCode::ReplyTooLarge { len, max } if len > max && answers_values => {
            excuses.too_large = true;
        }
        ErrorCode::KeyTooLarge { len, max } if len > max && names_key_of_len(&op.kind, len) => {
            excuses.key_too_large = true;
        }
        ErrorCode::BatchTooLarge { ops, max } if ops > max && writes => {
            excuses.too_many_ops = true;
        }
        // The leader's disk, with less free than its reserve.
        ErrorCode::StoreFull { free, reserve } if free < reserve && writes => {
            excuses.store = true;
        }
        _ => {}
    }
}

/// Whether `kind` names a key of `len` bytes: one it reads or writes.
fn names_key_of_len(kind: &OpKind, len: u64) -> bool {
    let of_len = |key: &[u8]| key.len() as u64 == len;
    match kind {
        OpKind::Get(key) => of_len(key),
        OpKind::GetMany(keys) => keys.iter().any(|key| of_len(key)),
        OpKind::Write(writes) => writes.iter().any(|(key, _)| of_len(key)),
        OpKind::Transaction { reads, writes } => {
            writes.iter().any(|(key, _)| of_len(key))
                || reads
                    .iter()
                    .any(|read| matches!(read, ReadCheck::Key { key, .. } if of_len(key)))
        }
        OpKind::Status | OpKind::Clear(_) | OpKind::Iterate(_) => false,
    }
}

/// An output the replayed machine gave.
struct Given {
    /// The fingerprint of the outputs up to this one.
    fingerprint: u64,
    short: ShortDigest,
    /// The step after which it was taken.
    step: usize,
}

/// How many of the last outputs a replay keeps described, for a report.
const OUTPUTS_DESCRIBED: usize = 4 * OUTPUTS_PER_CHECK as usize;

/// Where and how a replayed process first did otherwise than the recorded one.
struct Difference {
    /// The step that gave the first output that differs, when it is not the step
    /// being replayed (an output check finds a difference a few steps late).
    step: Option<usize>,
    what: String,
}

impl From<String> for Difference {
    fn from(what: String) -> Difference {
        Difference { step: None, what }
    }
}

/// `Ok` when the replayed take gave what the recording says; otherwise the difference, with
/// the replayed take whole (the recording has it only in short).
fn same_take(recorded: &Gave, replayed: &Gave, took: &impl std::fmt::Debug) -> Result<(), String> {
    if recorded == replayed {
        return Ok(());
    }
    Err(format!(
        "the real machine's take gave {} items (digest {:016x}), the replayed one's {} \
         (digest {:016x}): {}",
        recorded.items,
        recorded.digest,
        replayed.items,
        replayed.digest,
        shortened(took)
    ))
}

fn shortened(value: &impl std::fmt::Debug) -> String {
    let mut text = format!("{value:?}");
    if text.len() > 400 {
        let mut end = 400;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use party_proto::wire::WriteOp;
    use party_proto::IterOptions;

    fn bytes(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    /// `kind`, issued by process 0 at `invoke` and ended as `outcome` at `complete`.
    fn op(invoke: u64, complete: u64, kind: OpKind, outcome: Outcome) -> Op {
        Op {
            process: 0,
            incarnation: 0,
            kind,
            invoke,
            complete: Some(complete),
            outcome,
            excuses: Excuses::default(),
        }
    }

    /// What a real handle's settings excuse: a lost connection only without retries, a
    /// time-out only with a request timeout; a close, a failed election, an unknown outcome
    /// and a write failed before always (the recording cannot tell a fault from a bug
    /// there); nothing else, a store's own failure included.
    #[test]
    fn a_handles_settings_excuse_only_the_errors_they_allow() {
        let retrying = ClientConfig::default();
        let excuses = excuses_of(&retrying);
        assert!(!excuses.allow(&ErrorCode::ConnectionLost));
        assert!(!excuses.allow(&ErrorCode::TimedOut));
        assert!(!excuses.allow(&ErrorCode::Backend("disk".into())));
        assert!(excuses.allow(&ErrorCode::Closed));
        assert!(excuses.allow(&ErrorCode::FailedBefore));
        assert!(excuses.allow(&ErrorCode::OutcomeUnknown("lost".into())));
        let impatient = ClientConfig {
            retry: false,
            request_timeout: Some(std::time::Duration::from_secs(1)),
            ..ClientConfig::default()
        };
        let excuses = excuses_of(&impatient);
        assert!(excuses.allow(&ErrorCode::ConnectionLost));
        assert!(excuses.allow(&ErrorCode::TimedOut));
    }

    /// A real caller's input over a real limit is no fault of party's: a failure it explains
    /// by the error's own figures is excused (a key too long that the operation names, a
    /// write of more operations than the store takes, its own request's frame over the
    /// limit, an answer of values over it), and so is a write refused by a disk with less
    /// free than the reserve; the same error with figures within the limit,
    /// naming a key the operation does not hold, a frame of another size than the
    /// operation's own request, or an answer too large for an operation that reads no
    /// values, is not.
    #[test]
    fn a_failure_the_operations_own_input_explains_is_excused() {
        let put = |key: &str| OpKind::Write(vec![(bytes(key), Some(bytes("v")))]);
        let get = |key: &str| OpKind::Get(bytes(key));
        let key = |len, max| ErrorCode::KeyTooLarge { len, max };
        let batch = |ops, max| ErrorCode::BatchTooLarge { ops, max };
        let frame = |len| ErrorCode::FrameTooLarge { len, max: 128 };
        let reply = |len| ErrorCode::ReplyTooLarge { len, max: 128 };
        let full = |free| ErrorCode::StoreFull { free, reserve: 10 };
        let cases = [
            (put("abc"), None, key(3, 2), true),
            (put("ab"), None, key(3, 2), false),
            (put("abc"), None, key(3, 3), false),
            (get("abc"), None, key(3, 2), true),
            (put("a"), None, batch(3, 2), true),
            (put("a"), None, batch(2, 2), false),
            (OpKind::Status, None, batch(3, 2), false),
            (put("a"), Some(129), frame(129), true),
            (put("a"), Some(128), frame(128), false),
            // Another request's frame, refused by the leader, failing every one pending.
            (put("a"), Some(90), frame(129), false),
            (put("a"), None, frame(129), false),
            (get("a"), None, reply(129), true),
            (get("a"), None, reply(64), false),
            (OpKind::Status, None, reply(129), false),
            (put("a"), None, reply(129), false),
            (put("a"), None, full(9), true),
            (put("a"), None, full(10), false),
            (get("a"), None, full(9), false),
            (put("a"), None, ErrorCode::Backend("disk".into()), false),
        ];
        for (kind, bound, error, excused) in cases {
            let mut failed = op(0, 1, kind.clone(), Outcome::Failed(error.clone()));
            excuse_input_over_limit(&mut failed, bound);
            assert_eq!(
                failed.excuses.allow(&error),
                excused,
                "{kind:?} (request bound {bound:?}) failing {error:?}"
            );
        }
    }

    /// A replayed commit lands somewhere between its asking and its answer: a `get_many`
    /// during it may see either side, one that ended before it was asked only the store
    /// before it, one that began after its answer only the store after it.
    #[test]
    fn a_replayed_commit_lands_between_its_asking_and_its_answer() {
        let mut store = MemoryBackend::new();
        let (mut timeline, mut committed) = (Timeline::default(), FxHashMap::default());
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Put {
            key: bytes("k"),
            value: bytes("1"),
        });
        commit(&mut store, &mut timeline, &mut committed, (40, 50), &batch);
        assert_eq!(committed.get(&(bytes("k"), bytes("1"))), Some(&1));
        let read = |invoke: u64, value: Option<&str>| {
            [op(
                invoke,
                invoke + 10,
                OpKind::GetMany(vec![bytes("k")]),
                Outcome::ReadMany(vec![value.map(bytes)]),
            )]
        };
        for seen in [None, Some("1")] {
            assert_eq!(check::atomic_reads(&read(45, seen), &timeline), None);
        }
        assert!(check::atomic_reads(&read(10, None), &timeline).is_none());
        assert!(check::atomic_reads(&read(10, Some("1")), &timeline).is_some());
        assert!(check::atomic_reads(&read(60, Some("1")), &timeline).is_none());
        assert!(check::atomic_reads(&read(60, None), &timeline).is_some());
    }

    /// A replayed history goes through each check, and each finds its own fault: a failure
    /// nothing explains; an acknowledged write never committed (exactly-once); a read that
    /// misses a write acknowledged before it began (linearizability); a `get_many` seeing
    /// half of a batch it overlapped, which each key alone allows (atomicity); an iterator
    /// giving its keys out of order; a conflict naming a value its key never held.
    #[test]
    fn a_replayed_history_goes_through_every_check() {
        let put = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(key, value)| (bytes(key), Some(bytes(value))))
                .collect::<Vec<_>>()
        };
        let mut timeline = Timeline::default();
        let mut committed = FxHashMap::default();
        for (at, pairs) in [(5, &[("a", "1")][..]), (40, &[("b", "1"), ("c", "1")])] {
            timeline.commit(at, put(pairs).into_iter().collect());
            for (key, value) in pairs {
                committed.insert((bytes(key), bytes(value)), 1);
            }
        }
        let history = [
            op(0, 10, OpKind::Write(put(&[("a", "1")])), Outcome::Written),
            op(20, 30, OpKind::Get(bytes("a")), Outcome::Read(None)),
            op(
                35,
                45,
                OpKind::Write(put(&[("b", "1"), ("c", "1")])),
                Outcome::Written,
            ),
            op(
                38,
                50,
                OpKind::GetMany(vec![bytes("b"), bytes("c")]),
                Outcome::ReadMany(vec![Some(bytes("1")), None]),
            ),
            op(60, 70, OpKind::Write(put(&[("d", "1")])), Outcome::Written),
            op(
                80,
                90,
                OpKind::Get(bytes("e")),
                Outcome::Failed(ErrorCode::ConnectionLost),
            ),
            op(
                100,
                110,
                OpKind::Iterate(IterOptions::default()),
                Outcome::Iterated {
                    entries: vec![(bytes("b"), bytes("1")), (bytes("a"), bytes("1"))],
                    closed_early: false,
                    follows: None,
                },
            ),
            op(
                120,
                130,
                OpKind::Transaction {
                    reads: Vec::new(),
                    writes: put(&[("f", "1")]),
                },
                Outcome::Conflict {
                    key: bytes("a"),
                    current: Some(bytes("2")),
                },
            ),
        ];
        let (violations, unchecked) = check_history(&history, &timeline, &committed);
        assert!(unchecked.is_empty(), "{unchecked:?}");
        let found = |start: &str, says: &str| {
            violations
                .iter()
                .any(|v| v.starts_with(start) && v.contains(says))
        };
        assert!(found("op5 failed", "no fault or setting"), "{violations:?}");
        assert!(found("d = 1", "but committed 0"), "{violations:?}");
        assert!(found("key [61]", "not linearizable"), "{violations:?}");
        assert!(
            found("op3: get_many", "never the store's state"),
            "{violations:?}"
        );
        assert!(found("iterator", "repeated or reordered"), "{violations:?}");
        assert!(
            found("op7 was answered a conflict", "never held"),
            "{violations:?}"
        );
    }
}

//! The checks run on every simulated history.
//!
//! - Per-key linearizability with a register model: a Wing–Gong search with memoisation.
//!   Writes whose outcome the caller never learned (crash, connection lost) may or may not
//!   have happened; the search may place them or leave them out. A `get_many` counts as a
//!   read of each of its keys.
//! - Atomicity: a `get_many` must see the store as it was after one commit (so a two-key
//!   batch or a clear is never seen half done), at some point of its own life.
//! - Iterators: keys strictly in order (no repeat), all inside the range, within the limit;
//!   every key present in the store for the iterator's whole life delivered (unless the
//!   caller closed it early); every value delivered one its key held during that life.
//! - Write order: a handle's acknowledged writes commit in the order it issued them.
//! - Outcomes: nothing fails unless a fault or the caller's settings explain it (see
//!   [`crate::history::Excuses`]); a write acknowledged must have been committed, and one
//!   that failed with an error that says it was not applied must not have been. Writes are
//!   judged by their content (each put of the workload writes a value of its own), not by
//!   what the writer claims.
//! - Liveness: nothing pending at the end, requests and open iterators alike.
//!
//! No write applied twice (by content) and at most one leader are checked while the run
//! goes on (see `world.rs`).

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use party_backends::{resolve, Backend, MemoryBackend};
use party_proto::wire::{BatchOp, ReadCheck, WriteOp};
use party_proto::{Change, ErrorCode, KeyRange, WatchEvent};

use crate::history::{Op, OpKind, Outcome};
use crate::world::feed::{inside, Watcher};

/// The values a write puts, once each: the content that identifies it.
pub fn put_values(op: &WriteOp) -> FxHashSet<Vec<u8>> {
    put_pairs(op).into_iter().map(|(_, value)| value).collect()
}

/// Each key a write puts, with its value.
pub fn put_pairs(op: &WriteOp) -> Vec<(Vec<u8>, Vec<u8>)> {
    match op {
        WriteOp::Put { key, value } => vec![(key.clone(), value.clone())],
        WriteOp::Batch { ops } | WriteOp::Transaction { writes: ops, .. } => ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put { key, value } => Some((key.clone(), value.clone())),
                BatchOp::Del { .. } => None,
            })
            .collect(),
        WriteOp::Del { .. } | WriteOp::Clear { .. } => Vec::new(),
    }
}

/// Whether a write that failed with `error` says it was not applied: every error does but
/// the four that leave it open (as party-core's `TransactionError` documents).
fn says_not_applied(error: &ErrorCode) -> bool {
    !matches!(
        error,
        ErrorCode::OutcomeUnknown(_)
            | ErrorCode::TimedOut
            | ErrorCode::ConnectionLost
            | ErrorCode::Closed
    )
}

/// Violations in how operations ended, against how often each value was committed.
pub fn outcomes(history: &[Op], committed: &FxHashMap<Vec<u8>, u32>) -> Vec<String> {
    let mut violations = failures(history);
    for (index, op) in history.iter().enumerate() {
        let (OpKind::Write(writes) | OpKind::Transaction { writes, .. }) = &op.kind else {
            continue;
        };
        let Some(value) = writes.iter().find_map(|(_, value)| value.clone()) else {
            continue;
        };
        let times = committed.get(&value).copied().unwrap_or(0);
        match &op.outcome {
            Outcome::Written if times == 0 => {
                violations.push(format!("op{index} was acknowledged but never committed"))
            }
            Outcome::Failed(error) if says_not_applied(error) && times > 0 => {
                violations.push(format!("op{index} failed with {error:?} but was committed"))
            }
            Outcome::Conflict { .. } if times > 0 => violations.push(format!(
                "op{index} was answered a conflict but was committed"
            )),
            _ => {}
        }
    }
    violations
}

/// The operations that failed with an error nothing explains.
pub fn failures(history: &[Op]) -> Vec<String> {
    let mut violations = Vec::new();
    for (index, op) in history.iter().enumerate() {
        if let Outcome::Failed(error) = &op.outcome {
            if !op.excuses.allow(error) {
                violations.push(format!(
                    "op{index} failed with {error:?}, which no fault or setting explains"
                ));
            }
        }
    }
    violations
}

/// Exactly-once where values need not be unique (a real run's): for each key and value put,
/// the commits that put it against the operations that asked for it. Every acknowledged
/// put must have been committed once; no put may have been committed more often than the
/// operations that may have landed (acknowledged, or ended unknown) asked for it.
pub fn write_counts(history: &[Op], committed: &FxHashMap<(Vec<u8>, Vec<u8>), u32>) -> Vec<String> {
    #[derive(Default)]
    struct Asked {
        acknowledged: u32,
        unknown: u32,
        first: usize,
    }
    let mut asked: BTreeMap<(Vec<u8>, Vec<u8>), Asked> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        let (OpKind::Write(writes) | OpKind::Transaction { writes, .. }) = &op.kind else {
            continue;
        };
        for (key, value) in writes {
            let Some(value) = value else { continue };
            let entry = asked.entry((key.clone(), value.clone())).or_insert(Asked {
                first: index,
                ..Asked::default()
            });
            match &op.outcome {
                Outcome::Written => entry.acknowledged += 1,
                Outcome::Conflict { .. } => {}
                Outcome::Failed(error) if says_not_applied(error) => {}
                _ => entry.unknown += 1,
            }
        }
    }
    let mut violations = Vec::new();
    for ((key, value), asked) in &asked {
        let times = committed
            .get(&(key.clone(), value.clone()))
            .copied()
            .unwrap_or(0);
        let put = || format!("{} = {}", key.escape_ascii(), value.escape_ascii());
        if times < asked.acknowledged {
            violations.push(format!(
                "{} acknowledged {} times (first op{}) but committed {times}",
                put(),
                asked.acknowledged,
                asked.first
            ));
        } else if times > asked.acknowledged + asked.unknown {
            violations.push(format!(
                "{} committed {times} times, but only {} writes of it may have landed (first op{})",
                put(),
                asked.acknowledged + asked.unknown,
                asked.first
            ));
        }
    }
    violations
}

/// What the store held over time: the effect of each commit, in commit order, with the
/// time it was asked of the store and the time the store answered (one instant in the
/// simulator; a real store's commit lands somewhere between).
#[derive(Debug, Default)]
pub struct Timeline {
    commits: Vec<(u64, u64, Effect)>,
    /// For each key and value put, how many commits there were once it was first
    /// committed.
    first_commits: FxHashMap<(Vec<u8>, Vec<u8>), usize>,
    /// The latest answer up to each commit.
    answered_by: Vec<u64>,
    /// The store after each [`CHECKPOINT_EVERY`]th commit, so that finding the state at a
    /// time need not apply every commit from the first.
    checkpoints: Vec<State>,
    /// The store after the last commit.
    last: State,
    /// For each number the change log gave a group, how many commits there were once the
    /// group was taken: an iterator's snapshot, said to follow that number, holds them all.
    log_numbers: FxHashMap<u64, usize>,
}

/// How many commits apart [`Timeline`] keeps the store's state.
const CHECKPOINT_EVERY: usize = 64;

/// What one commit left each key it touched with (`None`: deleted).
pub type Effect = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The store's whole content at one instant.
type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn apply(state: &mut State, effect: &Effect) {
    for (key, value) in effect {
        match value {
            Some(value) => state.insert(key.clone(), value.clone()),
            None => state.remove(key),
        };
    }
}

impl Timeline {
    /// A commit at `at` left each key of `effect` with its value (`None`: deleted).
    pub fn commit(&mut self, at: u64, effect: Effect) {
        self.commit_between(at, at, effect);
    }

    /// A commit asked at `issued` and answered at `answered` (after every commit before
    /// it) left each key of `effect` with its value.
    pub fn commit_between(&mut self, issued: u64, answered: u64, effect: Effect) {
        apply(&mut self.last, &effect);
        let latest = self.answered_by.last().copied().unwrap_or(0);
        self.answered_by.push(latest.max(answered));
        let through = self.commits.len() + 1;
        for (key, value) in &effect {
            if let Some(value) = value {
                let put = (key.clone(), value.clone());
                self.first_commits.entry(put).or_insert(through);
            }
        }
        self.commits.push((issued, answered, effect));
        if self.commits.len().is_multiple_of(CHECKPOINT_EVERY) {
            self.checkpoints.push(self.last.clone());
        }
    }

    /// The change log gave the last commit (or a group of another host, which changed
    /// nothing here) the number `seq`.
    pub fn logged(&mut self, seq: u64) {
        self.log_numbers.entry(seq).or_insert(self.commits.len());
    }

    /// How many commits there were once the group numbered `seq` was taken, if one was;
    /// number 0 names a store that never committed one, so none.
    fn commits_at_log(&self, seq: u64) -> Option<usize> {
        match seq {
            0 => Some(0),
            seq => self.log_numbers.get(&seq).copied(),
        }
    }

    /// How many commits there were once one that left `key` with `value` was (the first
    /// such).
    fn commits_through(&self, key: &[u8], value: &[u8]) -> Option<usize> {
        self.first_commits
            .get(&(key.to_vec(), value.to_vec()))
            .copied()
    }

    /// Every state the store may have been in from `from` to `to`, as far as `keys`
    /// reach: the one before the first commit not answered before `from`, and the one
    /// after each commit from there that was asked by `to` (a commit at `from` or `to`
    /// itself may come before or after an operation that started or ended then, so both
    /// sides count); none before the first `after` commits, known to precede.
    fn states(&self, from: u64, after: usize, to: u64, keys: &KeyRange) -> Vec<State> {
        let within = |state: &State| -> State {
            if keys.is_empty() {
                // (`BTreeMap::range` panics on an empty or inverted range.)
                return State::new();
            }
            state
                .range::<[u8], _>((as_slice(&keys.start), as_slice(&keys.end)))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        };
        // Every commit answered before `from` is behind: start from the checkpoint before
        // the first that is not.
        let behind_by_time = self
            .answered_by
            .partition_point(|answered| *answered < from);
        let behind = behind_by_time.max(after);
        let checkpoint = behind / CHECKPOINT_EVERY;
        let mut state = match checkpoint {
            0 => State::new(),
            n => self.checkpoints[n - 1].clone(),
        };
        for (_, _, effect) in &self.commits[checkpoint * CHECKPOINT_EVERY..behind] {
            apply(&mut state, effect);
        }
        let mut states = Vec::new();
        // Past the commits answered before `from`, the state after `after` is one the
        // operation may see.
        let mut started = after > behind_by_time;
        if started {
            states.push(within(&state));
        }
        for (issued, answered, effect) in &self.commits[behind..] {
            if *issued > to {
                break;
            }
            if *answered >= from && !started {
                states.push(within(&state));
                started = true;
            }
            apply(&mut state, effect);
            if started {
                states.push(within(&state));
            }
        }
        if !started {
            states.push(within(&state));
        }
        states
    }
}

fn as_slice(bound: &std::ops::Bound<Vec<u8>>) -> std::ops::Bound<&[u8]> {
    bound.as_ref().map(Vec::as_slice)
}

/// The keys from the least to the greatest of `keys`.
fn spanning<'a>(keys: impl IntoIterator<Item = &'a Vec<u8>>) -> KeyRange {
    let mut keys = keys.into_iter();
    let Some(first) = keys.next() else {
        return KeyRange::all();
    };
    let (low, high) = keys.fold((first, first), |(low, high), key| {
        (low.min(key), high.max(key))
    });
    KeyRange {
        start: std::ops::Bound::Included(low.clone()),
        end: std::ops::Bound::Included(high.clone()),
    }
}

/// What `ops` leave each key they touch with, committed on `store` as it is (a clear
/// touches the keys it finds).
pub fn effect_of(store: &MemoryBackend, ops: &[WriteOp]) -> Effect {
    resolve(ops, |range| {
        store
            .iter(range, false)?
            .map(|e| e.map(|e| e.key))
            .collect()
    })
    .expect("the memory store cannot fail")
    .into_iter()
    .map(|(key, value)| (key.into_owned(), value.map(<[u8]>::to_vec)))
    .collect()
}

/// Finds the first `get_many` that saw no single state of the store.
pub fn atomic_reads(history: &[Op], timeline: &Timeline) -> Option<String> {
    for (index, op) in history.iter().enumerate() {
        let (OpKind::GetMany(keys), Outcome::ReadMany(values), Some(complete)) =
            (&op.kind, &op.outcome, op.complete)
        else {
            continue;
        };
        let seen_whole = timeline
            .states(op.invoke, 0, complete, &spanning(keys))
            .iter()
            .any(|state| {
                keys.iter()
                    .zip(values)
                    .all(|(key, value)| state.get(key) == value.as_ref())
            });
        if !seen_whole {
            return Some(format!(
                "op{index}: get_many {keys:02x?} saw {values:?}, never the store's state at one instant"
            ));
        }
    }
    None
}

/// One operation on one key, for the register model.
#[derive(Debug, Clone)]
struct KeyOp {
    invoke: u64,
    /// `u64::MAX` when the caller never learned the outcome.
    complete: u64,
    read: bool,
    value: Option<Vec<u8>>,
    /// Must be placed (a read that answered, a write acknowledged).
    required: bool,
}

/// The most operations on one key the linearizability search takes; a longer history is
/// checked by zones if each of its writes puts a value of its own.
const MOST_KEY_OPS: usize = 128;

/// Keys with their count of operations.
pub type KeyCounts = Vec<(Vec<u8>, usize)>;

/// The keys `history` touches that the linearizability checks take, and those they do not
/// (more operations than the search takes, and a value written twice), with their count.
pub fn checkable_keys(history: &[Op]) -> (Vec<Vec<u8>>, KeyCounts) {
    let mut keys = std::collections::BTreeSet::new();
    for op in history {
        match &op.kind {
            OpKind::Get(key) => drop(keys.insert(key.clone())),
            OpKind::GetMany(many) => keys.extend(many.iter().cloned()),
            OpKind::Write(writes) | OpKind::Transaction { writes, .. } => {
                keys.extend(writes.iter().map(|(key, _)| key.clone()))
            }
            _ => {}
        }
    }
    let keys: Vec<Vec<u8>> = keys.into_iter().collect();
    let (mut checkable, mut too_busy) = (Vec::new(), Vec::new());
    for (key, ops) in keys.iter().zip(key_ops(history, &keys)) {
        let key = key.clone();
        if ops.len() > MOST_KEY_OPS && linearizable_by_zones(&ops).is_none() {
            too_busy.push((key, ops.len()));
        } else {
            checkable.push(key);
        }
    }
    (checkable, too_busy)
}

/// Finds the first key whose history is not linearizable, with a description.
pub fn linearizability(history: &[Op], keys: &[Vec<u8>]) -> Option<String> {
    for (key, ops) in keys.iter().zip(key_ops(history, keys)) {
        if ops.len() > MOST_KEY_OPS {
            match linearizable_by_zones(&ops) {
                Some(true) => continue,
                Some(false) => {
                    return Some(format!(
                        "key {key:02x?} is not linearizable (by zones, over {} operations)",
                        ops.len()
                    ))
                }
                None => {
                    return Some(format!(
                        "key {key:02x?}: {} operations, more than the checker takes",
                        ops.len()
                    ))
                }
            }
        }
        match linearizable(&ops) {
            Some(true) => {}
            Some(false) => {
                return Some(format!("key {key:02x?} is not linearizable: {ops:?}"));
            }
            None => {
                return Some(format!(
                    "key {key:02x?}: the linearizability search gave up after {MOST_STATES} \
                     states, over {} operations",
                    ops.len()
                ))
            }
        }
    }
    None
}

/// Each key's operations, in the order of `keys`.
fn key_ops(history: &[Op], keys: &[Vec<u8>]) -> Vec<Vec<KeyOp>> {
    let index: FxHashMap<&[u8], usize> = keys
        .iter()
        .enumerate()
        .map(|(at, key)| (key.as_slice(), at))
        .collect();
    let mut ops: Vec<Vec<KeyOp>> = vec![Vec::new(); keys.len()];
    for op in history {
        let known = matches!(
            op.outcome,
            Outcome::Read(_) | Outcome::ReadMany(_) | Outcome::Written
        );
        let complete = if known {
            op.complete.unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        // The operation's effect on each key it touches, once per key: what it read, or the
        // last thing it wrote.
        let mut touched: Vec<(usize, bool, Option<Vec<u8>>)> = Vec::new();
        let mut touch = |key: &[u8], read: bool, value: &Option<Vec<u8>>| {
            if let Some(&at) = index.get(key) {
                if !touched.iter().any(|(seen, ..)| *seen == at) {
                    touched.push((at, read, value.clone()));
                }
            }
        };
        match (&op.kind, &op.outcome) {
            (OpKind::Get(key), Outcome::Read(value)) => touch(key, true, value),
            (OpKind::GetMany(keys), Outcome::ReadMany(values)) => {
                for (key, value) in keys.iter().zip(values) {
                    touch(key, true, value);
                }
            }
            // A transaction refused wrote nothing; one committed or unknown is a write.
            (OpKind::Transaction { .. }, Outcome::Conflict { .. }) => {}
            (OpKind::Transaction { .. }, Outcome::Failed(error)) if says_not_applied(error) => {}
            (OpKind::Write(writes) | OpKind::Transaction { writes, .. }, _) => {
                for (key, value) in writes.iter().rev() {
                    touch(key, false, value);
                }
            }
            (OpKind::Clear(range), _) => {
                for key in keys.iter().filter(|key| range.contains(key)) {
                    touch(key, false, &None);
                }
            }
            _ => {}
        }
        for (at, read, value) in touched {
            ops[at].push(KeyOp {
                invoke: op.invoke,
                complete,
                read,
                value,
                required: known,
            });
        }
    }
    // A write whose outcome is unknown and whose value no read returned need not be
    // placed: any order that places it stays valid without it (no read sees its value
    // before another write replaces it). Dropping those keeps the search small when many
    // writes end unknown (clients without retry, timeouts).
    for ops in &mut ops {
        let read_values: FxHashSet<Option<Vec<u8>>> = ops
            .iter()
            .filter(|op| op.read)
            .map(|op| op.value.clone())
            .collect();
        ops.retain(|op| op.read || op.required || read_values.contains(&op.value));
    }
    ops
}

/// Linearizability of a register whose writes each put a value of their own (none twice,
/// no deletes), so that each read names the write it read: Gibbons and Korach's zones, in
/// O(n log n), for histories too long for the search. A write and the reads of its value
/// form a cluster, which spans from the earliest end of its operations to the latest start:
/// a forward zone if the earliest end comes first, else a backward zone. Linearizable if
/// and only if no read ends before its write starts, no two forward zones overlap and no
/// backward zone lies inside a forward one. `None` when a value is written twice or
/// deleted.
fn linearizable_by_zones(ops: &[KeyOp]) -> Option<bool> {
    struct Cluster {
        /// The write's start and end; the store's first state is a write at time zero.
        write: Option<(u64, u64)>,
        earliest_end: u64,
        latest_start: u64,
        earliest_read_end: u64,
    }
    let mut clusters: FxHashMap<&Option<Vec<u8>>, Cluster> = FxHashMap::default();
    let none = None;
    clusters.insert(
        &none,
        Cluster {
            write: Some((0, 0)),
            earliest_end: 0,
            latest_start: 0,
            earliest_read_end: u64::MAX,
        },
    );
    for op in ops {
        // One later than told, so that the first state comes strictly before everything.
        let (invoke, complete) = (op.invoke + 1, op.complete.saturating_add(1));
        let cluster = clusters.entry(&op.value).or_insert(Cluster {
            write: None,
            earliest_end: u64::MAX,
            latest_start: 0,
            earliest_read_end: u64::MAX,
        });
        if op.read {
            cluster.earliest_read_end = cluster.earliest_read_end.min(complete);
        } else if op.value.is_none() || cluster.write.replace((invoke, complete)).is_some() {
            return None;
        }
        cluster.earliest_end = cluster.earliest_end.min(complete);
        cluster.latest_start = cluster.latest_start.max(invoke);
    }
    let mut forward = Vec::new();
    let mut backward = Vec::new();
    for cluster in clusters.values() {
        let Some((write_start, _)) = cluster.write else {
            return Some(false); // a read of a value no write put
        };
        if cluster.earliest_read_end < write_start {
            return Some(false);
        }
        if cluster.earliest_end < cluster.latest_start {
            forward.push((cluster.earliest_end, cluster.latest_start));
        } else {
            backward.push((cluster.latest_start, cluster.earliest_end));
        }
    }
    forward.sort_unstable();
    if forward.windows(2).any(|pair| pair[1].0 < pair[0].1) {
        return Some(false);
    }
    let inside_forward = |(start, end): (u64, u64)| {
        let after = forward.partition_point(|zone| zone.0 < start);
        after > 0 && end < forward[after - 1].1
    };
    Some(!backward.iter().any(|zone| inside_forward(*zone)))
}

/// The most states the linearizability search visits before it gives up.
const MOST_STATES: usize = 1 << 21;

/// Whether `ops` can be put in one order that a register would answer alike; `None` if the
/// search gave up (more than [`MOST_STATES`] states).
fn linearizable(ops: &[KeyOp]) -> Option<bool> {
    let mut values: Vec<Option<Vec<u8>>> = vec![None];
    let mut value_ids = FxHashMap::from_iter([(None, 0u32)]);
    let op_values: Vec<u32> = ops
        .iter()
        .map(|op| {
            *value_ids.entry(op.value.clone()).or_insert_with(|| {
                values.push(op.value.clone());
                values.len() as u32 - 1
            })
        })
        .collect();
    let mut search = Search {
        ops,
        required: mask(ops, |op| op.required),
        reads: mask(ops, |op| op.read && op.required),
        writers: vec![0; values.len()],
        values: op_values,
        seen: FxHashSet::default(),
    };
    for (i, op) in ops.iter().enumerate() {
        if !op.read {
            search.writers[search.values[i] as usize] |= 1 << i;
        }
    }
    search.from(0, 0)
}

/// The operations of `ops` that `pick` picks, as a mask of their indices.
fn mask(ops: &[KeyOp], pick: impl Fn(&KeyOp) -> bool) -> u128 {
    ops.iter()
        .enumerate()
        .filter(|(_, op)| pick(op))
        .fold(0, |mask, (i, _)| mask | 1 << i)
}

/// A depth-first search for an order of one key's operations.
struct Search<'a> {
    ops: &'a [KeyOp],
    /// Each operation's value, by number.
    values: Vec<u32>,
    /// The operations every order must hold.
    required: u128,
    /// The reads among them.
    reads: u128,
    /// By value number, the writes that put it.
    writers: Vec<u128>,
    /// The states found to lead nowhere.
    seen: FxHashSet<(u128, u32)>,
}

impl Search<'_> {
    /// Whether the operations not in `done` can follow those in `done`, which left the
    /// register holding `value`; `None` once the search has visited too many states.
    fn from(&mut self, done: u128, value: u32) -> Option<bool> {
        if done & self.required == self.required {
            return Some(true);
        }
        if !self.reads_can_be_met(done, value) || !self.seen.insert((done, value)) {
            return Some(false);
        }
        if self.seen.len() > MOST_STATES {
            return None;
        }
        // Whatever comes next must have started before every remaining operation ended.
        let horizon = self
            .ops
            .iter()
            .enumerate()
            .filter(|(i, _)| done & (1 << i) == 0)
            .map(|(_, op)| op.complete)
            .min()
            .unwrap_or(u64::MAX);
        for (i, op) in self.ops.iter().enumerate() {
            if done & (1 << i) != 0 || op.invoke > horizon {
                continue;
            }
            let next = if op.read {
                if self.values[i] != value {
                    continue;
                }
                value
            } else {
                self.values[i]
            };
            if self.from(done | 1 << i, next)? {
                return Some(true);
            }
        }
        Some(false)
    }

    /// Whether every read still to place sees a value the register holds now or a write
    /// still to place puts. Without this cut, a read that can no longer be met is found
    /// out only after every order of the writes beside it was tried: many writes in
    /// flight together across a failover made that billions.
    fn reads_can_be_met(&self, done: u128, value: u32) -> bool {
        let mut reads = self.reads & !done;
        while reads != 0 {
            let i = reads.trailing_zeros() as usize;
            reads &= reads - 1;
            let wanted = self.values[i];
            if wanted != value && self.writers[wanted as usize] & !done == 0 {
                return false;
            }
        }
        true
    }
}

/// Finds the first transaction answered with a conflict that was not one: the key it names
/// must be one it read, seen with another value than the one named, and the key must have
/// held the value named at some point of the transaction's commit.
pub fn conflicts(history: &[Op], timeline: &Timeline) -> Option<String> {
    for (index, op) in history.iter().enumerate() {
        let (OpKind::Transaction { reads, .. }, Outcome::Conflict { key, current }, Some(complete)) =
            (&op.kind, &op.outcome, op.complete)
        else {
            continue;
        };
        let seen = reads.iter().find_map(|read| match read {
            ReadCheck::Key { key: read, value } if read == key => Some(value.as_ref()),
            ReadCheck::Range { range, entries } if range.contains(key) => Some(
                entries
                    .iter()
                    .find(|entry| entry.key == *key)
                    .map(|entry| &entry.value),
            ),
            _ => None,
        });
        let held = timeline
            .states(op.invoke, 0, complete, &spanning([key]))
            .iter()
            .any(|state| state.get(key) == current.as_ref());
        if seen.is_none_or(|seen| seen == current.as_ref()) || !held {
            return Some(format!(
                "op{index} was answered a conflict on {key:02x?} = {current:02x?}, which is no \
                 change to what it read ({seen:02x?}) or was never held while it ran"
            ));
        }
    }
    None
}

/// Finds the first iterator that repeated, reordered, strayed outside its range or its
/// limit, missed a key that was there all along, or delivered a value its key never held
/// while it ran (from the commit its snapshot was said to follow, if it was).
pub fn iterators(history: &[Op], timeline: &Timeline) -> Option<String> {
    // By handle, how many commits there were once every write it issued so far that
    // committed had: an iterator reads a snapshot taken after all of them.
    let mut writes_through: FxHashMap<(usize, u32), usize> = FxHashMap::default();
    for op in history {
        if let Some(through) = commits_through(op, timeline) {
            let handle = writes_through
                .entry((op.process, op.incarnation))
                .or_default();
            *handle = (*handle).max(through);
        }
        let (
            OpKind::Iterate(options),
            Outcome::Iterated {
                entries,
                closed_early,
                follows,
            },
            Some(complete),
        ) = (&op.kind, &op.outcome, op.complete)
        else {
            continue;
        };
        if options
            .limit
            .is_some_and(|limit| entries.len() as u64 > limit)
        {
            return Some(format!(
                "iterator {options:?} went past its limit: {entries:02x?}"
            ));
        }
        // A snapshot said to follow a commit holds it and every one before (a subscription
        // from the next one would miss them otherwise).
        let snapshot_holds = follows.and_then(|seq| timeline.commits_at_log(seq));
        let after = writes_through
            .get(&(op.process, op.incarnation))
            .copied()
            .unwrap_or(0)
            .max(snapshot_holds.unwrap_or(0));
        let states = timeline.states(op.invoke, after, complete, &options.range);
        if !options.keys {
            // Values only: each must be a value some key in range held meanwhile.
            let stray = entries
                .iter()
                .filter(|_| options.values)
                .find(|(_, value)| {
                    !states.iter().any(|state| {
                        state
                            .iter()
                            .any(|(key, held)| options.range.contains(key) && held == value)
                    })
                });
            if let Some((_, value)) = stray {
                return Some(format!(
                    "iterator {options:?} delivered the value {value:02x?}, held by no key in range"
                ));
            }
            continue;
        }
        let keys: Vec<&Vec<u8>> = entries.iter().map(|(key, _)| key).collect();
        let in_order = keys.windows(2).all(|pair| {
            if options.reverse {
                pair[0] > pair[1]
            } else {
                pair[0] < pair[1]
            }
        });
        if !in_order {
            return Some(format!(
                "iterator {options:?} repeated or reordered keys: {keys:02x?}"
            ));
        }
        if let Some(stray) = keys.iter().find(|key| !options.range.contains(key)) {
            return Some(format!(
                "iterator {options:?} delivered {stray:02x?}, outside its range"
            ));
        }
        for (key, value) in entries {
            let held = states.iter().any(|state| match state.get(key) {
                Some(held) => !options.values || held == value,
                None => false,
            });
            if !held {
                return Some(format!(
                    "iterator {options:?} delivered {key:02x?} = {value:02x?}, which the key never held while it ran"
                ));
            }
        }
        let cut_short = *closed_early
            || options
                .limit
                .is_some_and(|limit| entries.len() as u64 == limit);
        let present_throughout = states
            .first()
            .into_iter()
            .flat_map(|first| first.keys())
            .filter(|key| states.iter().all(|state| state.contains_key(*key)));
        for stable in present_throughout {
            if !options.range.contains(stable) || keys.contains(&stable) {
                continue;
            }
            let beyond_last = keys.last().is_none_or(|last| {
                if options.reverse {
                    stable < *last
                } else {
                    stable > *last
                }
            });
            if !(cut_short && beyond_last) {
                return Some(format!(
                    "iterator {options:?} missed {stable:02x?}, present throughout; got {keys:02x?}"
                ));
            }
        }
    }
    None
}

/// Finds the first acknowledged write that committed before a write its handle issued
/// earlier, also acknowledged (a handle's writes apply in the order they were issued; a
/// write re-sent after its failure's answer was lost must not land after a later one).
pub fn write_order(history: &[Op], timeline: &Timeline) -> Option<String> {
    let mut latest: FxHashMap<(usize, u32), (usize, usize)> = FxHashMap::default();
    for (index, op) in history.iter().enumerate() {
        let Some(through) = commits_through(op, timeline) else {
            continue;
        };
        let handle = latest
            .entry((op.process, op.incarnation))
            .or_insert((0, index));
        if through < handle.0 {
            return Some(format!(
                "op{index} of p{} committed (commit {through}) before op{}, which its handle \
                 issued earlier (commit {})",
                op.process, handle.1, handle.0
            ));
        }
        *handle = (through, index);
    }
    None
}

/// How many commits there were once the write `op`, acknowledged, committed: known by a
/// key it left with its value (a write of deletes or a clear cannot be told apart from
/// others). A write that failed may still have committed, later than operations issued
/// after it (sent before a connection was cut, and read by the leader after the next
/// connection's requests): it says nothing.
fn commits_through(op: &Op, timeline: &Timeline) -> Option<usize> {
    let writes = match (&op.kind, &op.outcome) {
        (OpKind::Write(writes) | OpKind::Transaction { writes, .. }, Outcome::Written) => writes,
        _ => return None,
    };
    writes
        .iter()
        .filter_map(|(key, value)| timeline.commits_through(key, value.as_ref()?))
        .min()
}

/// Liveness at a run's end, long after its last fault: what each process still alive
/// (`None` for one that is not) has pending, as `(requests, open iterators)`, must be
/// nothing (the workload closes every iterator it opens). Names each process that has
/// some, with its counts.
pub fn pending_at_end(
    processes: impl IntoIterator<Item = Option<(usize, usize)>>,
) -> Option<String> {
    let stuck: Vec<String> = processes
        .into_iter()
        .enumerate()
        .filter_map(|(index, pending)| match pending? {
            (0, 0) => None,
            (requests, iters) => Some(format!("p{index}: {requests} requests, {iters} iterators")),
        })
        .collect();
    (!stuck.is_empty()).then(|| stuck.join("; "))
}

/// Every subscriber saw exactly the committed groups of its range from where it started,
/// in commit order, each once and whole; a lag was reported where groups were lost, never
/// a silent gap; it failed only as a fault explains; and one still open at the end saw
/// every commit of its range.
pub fn feed(
    watchers: &[Watcher],
    open: &[bool],
    truth: &BTreeMap<u64, Vec<Change>>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let last = truth.keys().next_back().copied().unwrap_or(0);
    // Empty when `to` is not past `from`, where `range` would panic: a lag claiming to have
    // lost commits from before its subscription's position, or a subscription moved past
    // the log's next number (by changes of a commit that never was, or by a lag resuming
    // there): each reported below as what it is.
    let groups_inside = |from: u64, to: u64, range| -> Vec<u64> {
        truth
            .range(from..to.max(from))
            .filter(|(_, changes)| !inside(changes, range).is_empty())
            .map(|(seq, _)| *seq)
            .collect()
    };
    for (index, watcher) in watchers.iter().enumerate() {
        let name = format!("w{index} (p{}, {:?})", watcher.process, watcher.range);
        if let Some(error) = &watcher.failed {
            if !watcher.excuses.allow(error) {
                violations.push(format!("{name}: failed with {error}"));
            }
        }
        let Some(start) = watcher.start else {
            if !watcher.events.is_empty() {
                violations.push(format!("{name}: events before it started"));
            }
            if watcher.failed.is_none() && !watcher.closed && open[index] {
                violations.push(format!(
                    "{name}: liveness: still open at the end, never started"
                ));
            }
            continue;
        };
        // From a given commit, every group of its range from there on is checked (commit
        // 1 is a store's first: from 0 is from there). Its start was read when its caller
        // first looked, perhaps past quiet groups, never before that commit.
        let mut next = watcher.asked.map_or(start.0, |asked| asked.0.max(1));
        if start.0 < next {
            violations.push(format!(
                "{name}: asked from commit {next}, started at {}",
                start.0
            ));
        }
        for event in &watcher.events {
            match event {
                WatchEvent::Changes { seq, changes } => {
                    if seq.0 < next {
                        violations.push(format!(
                            "{name}: commit {} again or out of order (expected {next} on)",
                            seq.0
                        ));
                        continue;
                    }
                    let skipped = groups_inside(next, seq.0, &watcher.range);
                    if !skipped.is_empty() {
                        violations.push(format!(
                            "{name}: commits {skipped:?} of its range never delivered, no lag said"
                        ));
                    }
                    match truth.get(&seq.0) {
                        None => violations.push(format!(
                            "{name}: changes of commit {}, which never committed",
                            seq.0
                        )),
                        Some(committed) => {
                            let expected = inside(committed, &watcher.range);
                            if *changes != expected || expected.is_empty() {
                                violations.push(format!(
                                    "{name}: commit {} delivered as {changes:?}, committed {expected:?}",
                                    seq.0
                                ));
                            }
                        }
                    }
                    next = seq.0 + 1;
                }
                WatchEvent::Lagged { missed, resume } => {
                    if resume.0 > last + 1 {
                        violations.push(format!(
                            "{name}: a lag resuming at {}, past the log's next number {}",
                            resume.0,
                            last + 1
                        ));
                    }
                    // The leader may have moved it past groups with nothing in its range.
                    let lost_from = resume.0.saturating_sub(*missed);
                    let skipped = groups_inside(next, lost_from, &watcher.range);
                    if lost_from < next || !skipped.is_empty() {
                        violations.push(format!(
                            "{name}: a lag of {missed} before {} while it stood at {next} \
                             (commits of its range in between: {skipped:?})",
                            resume.0
                        ));
                    }
                    next = resume.0;
                }
            }
        }
        if watcher.failed.is_none() && open[index] && !watcher.closed {
            let undelivered = groups_inside(next, last + 1, &watcher.range);
            if !undelivered.is_empty() {
                violations.push(format!(
                    "{name}: liveness: still open at the end, commits {undelivered:?} never came"
                ));
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Excuses;
    use party_proto::{CommitSeq, IterOptions};

    fn op(invoke: u64, complete: u64, read: bool, value: Option<&str>, required: bool) -> KeyOp {
        KeyOp {
            invoke,
            complete,
            read,
            value: value.map(|v| v.as_bytes().to_vec()),
            required,
        }
    }

    /// Zones and the search agree on every small register history with values of their
    /// own: random reads and writes, some writes unacknowledged.
    #[test]
    fn zones_agree_with_the_search() {
        let mut rng = party_proto::jitter::SplitMix64::new(7);
        let mut rand = |n: u64| rng.next_u64() % n;
        let (mut caught, mut passed) = (0, 0);
        for _ in 0..20_000 {
            let count = 1 + rand(7);
            let mut written = 0;
            let ops: Vec<KeyOp> = (0..count)
                .map(|_| {
                    let invoke = rand(50);
                    let complete = invoke + 1 + rand(30);
                    if rand(2) == 0 {
                        written += 1;
                        let unknown = rand(5) == 0;
                        KeyOp {
                            invoke,
                            complete: if unknown { u64::MAX } else { complete },
                            read: false,
                            value: Some(vec![written]),
                            required: !unknown,
                        }
                    } else {
                        let value = rand(u64::from(written) + 2) as u8;
                        KeyOp {
                            invoke,
                            complete,
                            read: true,
                            value: (value > 0).then(|| vec![value]),
                            required: true,
                        }
                    }
                })
                .collect();
            let searched = linearizable(&ops);
            assert_eq!(linearizable_by_zones(&ops), searched, "{ops:?}");
            if searched == Some(true) {
                passed += 1;
            } else {
                caught += 1;
            }
        }
        assert!(
            caught > 1000 && passed > 1000,
            "{caught} caught, {passed} passed"
        );
    }

    #[test]
    fn zones_leave_out_values_written_twice_and_deletes() {
        let twice = [
            op(0, 10, false, Some("a"), true),
            op(20, 30, false, Some("a"), true),
        ];
        assert_eq!(linearizable_by_zones(&twice), None);
        assert_eq!(linearizable_by_zones(&[op(0, 10, false, None, true)]), None);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let history = [
            op(0, 10, false, Some("a"), true),
            op(20, 30, true, None, true),
        ];
        assert_eq!(linearizable(&history), Some(false));
        let overlapping = [
            op(0, 25, false, Some("a"), true),
            op(20, 30, true, None, true),
        ];
        assert_eq!(
            linearizable(&overlapping),
            Some(true),
            "the read may go before the write"
        );
    }

    #[test]
    fn an_unacknowledged_write_may_or_may_not_have_happened() {
        let happened = [
            op(0, u64::MAX, false, Some("a"), false),
            op(20, 30, true, Some("a"), true),
        ];
        assert_eq!(linearizable(&happened), Some(true));
        let did_not = [
            op(0, u64::MAX, false, Some("a"), false),
            op(20, 30, true, None, true),
        ];
        assert_eq!(linearizable(&did_not), Some(true));
        let out_of_thin_air = [op(20, 30, true, Some("b"), true)];
        assert_eq!(linearizable(&out_of_thin_air), Some(false));
    }

    /// Seed 409 787's shape: a read of an early write that answered while thirty writes
    /// were in flight across a failover. Placing a write before that read dooms the order,
    /// which the search would learn only after trying every order of the others.
    #[test]
    fn a_read_pinned_among_many_writes_in_flight_is_placed_at_once() {
        let values: Vec<String> = (0..30).map(|n| format!("w{n}")).collect();
        let mut history = vec![op(0, 10, false, Some("a"), true)];
        history.extend((0..30).map(|n| {
            op(
                20 + n as u64,
                1_000 + n as u64,
                false,
                Some(&values[n]),
                true,
            )
        }));
        history.push(op(50, 999, true, Some("a"), true));
        assert_eq!(linearizable(&history), Some(true));
        // The same read after every write ended can see only one of them.
        history.last_mut().unwrap().invoke = 1_100;
        history.last_mut().unwrap().complete = 1_110;
        assert_eq!(linearizable(&history), Some(false));
    }

    /// A history the search cannot settle in its bound is told, not searched for hours:
    /// thirty writes in flight together, then two reads that agree with no order of them.
    #[test]
    fn a_search_past_its_bound_gives_up() {
        let values: Vec<String> = (0..30).map(|n| format!("w{n}")).collect();
        let key = bytes("k");
        let write = |n: usize| Op {
            process: 0,
            incarnation: 0,
            kind: OpKind::Write(vec![(key.clone(), Some(values[n].clone().into_bytes()))]),
            invoke: n as u64,
            complete: Some(1_000 + n as u64),
            outcome: Outcome::Written,
            excuses: Default::default(),
        };
        let read = |at: u64, value: &str| Op {
            process: 1,
            incarnation: 0,
            kind: OpKind::Get(key.clone()),
            invoke: at,
            complete: Some(at + 10),
            outcome: Outcome::Read(Some(bytes(value))),
            excuses: Default::default(),
        };
        let mut ops: Vec<Op> = (0..30).map(write).collect();
        ops.extend([read(2_000, "w5"), read(2_020, "w7")]);
        let told = linearizability(&ops, &[key]).unwrap();
        assert!(told.contains("gave up"), "{told}");
    }

    #[test]
    fn a_write_applied_again_later_shows_as_a_backwards_read() {
        // w1=a, w2=b both acknowledged in order; a later read sees a again.
        let history = [
            op(0, 10, false, Some("a"), true),
            op(20, 30, false, Some("b"), true),
            op(40, 50, true, Some("a"), true),
        ];
        assert_eq!(linearizable(&history), Some(false));
    }

    fn bytes(text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }

    /// A two-key batch committed at 10: a then b (logged as group 2, after group 1 at 5).
    fn batch_timeline() -> Timeline {
        let mut timeline = Timeline::default();
        timeline.commit(
            5,
            BTreeMap::from([
                (bytes("a"), Some(bytes("0"))),
                (bytes("b"), Some(bytes("0"))),
            ]),
        );
        timeline.logged(1);
        timeline.commit(
            10,
            BTreeMap::from([
                (bytes("a"), Some(bytes("1"))),
                (bytes("b"), Some(bytes("1"))),
            ]),
        );
        timeline.logged(2);
        timeline
    }

    fn finished(kind: OpKind, outcome: Outcome) -> Op {
        Op {
            process: 0,
            incarnation: 0,
            kind,
            invoke: 8,
            complete: Some(12),
            outcome,
            excuses: Default::default(),
        }
    }

    /// A put of `value` to `key`, ended as `outcome`, every failure excused (the checks
    /// that use it judge what committed, not whether a failure was explained).
    fn put(key: &str, value: &str, outcome: Outcome) -> Op {
        Op {
            excuses: Excuses::all(),
            ..finished(
                OpKind::Write(vec![(bytes(key), Some(bytes(value)))]),
                outcome,
            )
        }
    }

    /// A transaction that read nothing and puts `value` to `key`, ended as `outcome`.
    fn transaction(key: &str, value: &str, outcome: Outcome) -> Op {
        Op {
            excuses: Excuses::all(),
            ..finished(
                OpKind::Transaction {
                    reads: Vec::new(),
                    writes: vec![(bytes(key), Some(bytes(value)))],
                },
                outcome,
            )
        }
    }

    /// A transaction's refusal naming `key` as absent.
    fn conflict_on(key: &str) -> Outcome {
        Outcome::Conflict {
            key: bytes(key),
            current: None,
        }
    }

    /// `op`, run from `invoke` to `complete`.
    fn during(invoke: u64, complete: u64, op: Op) -> Op {
        Op {
            invoke,
            complete: Some(complete),
            ..op
        }
    }

    #[test]
    fn a_batch_seen_half_done_is_caught() {
        let timeline = batch_timeline();
        let keys = OpKind::GetMany(vec![bytes("a"), bytes("b")]);
        let whole = finished(
            keys.clone(),
            Outcome::ReadMany(vec![Some(bytes("1")), Some(bytes("1"))]),
        );
        assert_eq!(atomic_reads(&[whole], &timeline), None);
        let half = finished(
            keys,
            Outcome::ReadMany(vec![Some(bytes("1")), Some(bytes("0"))]),
        );
        assert!(atomic_reads(&[half], &timeline).is_some());
    }

    /// A run ends with nothing pending: a request or an open iterator of a process still
    /// alive is named; a dead process's are not.
    #[test]
    fn a_request_or_an_iterator_pending_at_the_end_is_caught() {
        assert_eq!(pending_at_end([Some((0, 0)), None, Some((0, 0))]), None);
        assert_eq!(pending_at_end([None, Some((0, 0))]), None);
        assert_eq!(
            pending_at_end([Some((0, 0)), Some((0, 1))]).as_deref(),
            Some("p1: 0 requests, 1 iterators")
        );
        assert_eq!(
            pending_at_end([Some((2, 0)), None, Some((1, 3))]).as_deref(),
            Some("p0: 2 requests, 0 iterators; p2: 1 requests, 3 iterators")
        );
    }

    /// A `get_many` may see the store as it was after any commit answered while it ran, or
    /// the last one answered before it started, never an older state.
    #[test]
    fn a_get_many_seeing_a_state_from_before_it_started_is_caught() {
        let timeline = batch_timeline();
        let read = |invoke: u64, value: &str| {
            during(
                invoke,
                invoke + 2,
                finished(
                    OpKind::GetMany(vec![bytes("a"), bytes("b")]),
                    Outcome::ReadMany(vec![Some(bytes(value)), Some(bytes(value))]),
                ),
            )
        };
        assert_eq!(atomic_reads(&[read(8, "0")], &timeline), None);
        assert_eq!(
            atomic_reads(&[read(10, "0")], &timeline),
            None,
            "at 10 itself"
        );
        assert!(atomic_reads(&[read(11, "0")], &timeline).is_some());
        assert_eq!(atomic_reads(&[read(11, "1")], &timeline), None);
    }

    /// A handle's acknowledged writes commit in the order it issued them: a write that
    /// committed before one its handle issued earlier is caught; another handle's, or a
    /// failed one, may commit in any order.
    #[test]
    fn a_write_committed_before_one_its_handle_issued_earlier_is_caught() {
        let mut timeline = Timeline::default();
        let put = |process: usize, key: &str, value: &str, outcome: Outcome| Op {
            process,
            ..put(key, value, outcome)
        };
        timeline.commit(5, BTreeMap::from([(bytes("b"), Some(bytes("2")))]));
        timeline.commit(10, BTreeMap::from([(bytes("a"), Some(bytes("1")))]));
        let first = put(0, "a", "1", Outcome::Written);
        let second = put(0, "b", "2", Outcome::Written);
        assert!(write_order(&[first.clone(), second.clone()], &timeline).is_some());
        assert_eq!(
            write_order(&[second.clone(), first.clone()], &timeline),
            None
        );
        let elsewhere = Op {
            process: 1,
            ..second.clone()
        };
        assert_eq!(write_order(&[first.clone(), elsewhere], &timeline), None);
        let failed = Op {
            outcome: Outcome::Failed(ErrorCode::FailedBefore),
            ..first
        };
        assert_eq!(write_order(&[failed, second], &timeline), None);
    }

    /// An iterator reads a snapshot with every write its handle issued before it: one
    /// that shows the store from before such a write is caught, even while it ran when
    /// the write committed; another handle's may show either.
    #[test]
    fn an_iterator_missing_a_write_its_handle_issued_before_it_is_caught() {
        let timeline = batch_timeline();
        let write = finished(
            OpKind::Write(vec![
                (bytes("a"), Some(bytes("1"))),
                (bytes("b"), Some(bytes("1"))),
            ]),
            Outcome::Written,
        );
        let scan = |process: usize, incarnation: u32| Op {
            process,
            incarnation,
            ..finished(
                OpKind::Iterate(IterOptions::default()),
                Outcome::Iterated {
                    entries: vec![(bytes("a"), bytes("0")), (bytes("b"), bytes("0"))],
                    closed_early: false,
                    follows: None,
                },
            )
        };
        assert!(iterators(&[write.clone(), scan(0, 0)], &timeline).is_some());
        assert_eq!(iterators(&[scan(0, 0), write.clone()], &timeline), None);
        assert_eq!(iterators(&[write.clone(), scan(1, 0)], &timeline), None);
        assert_eq!(iterators(&[write, scan(0, 1)], &timeline), None);
    }

    /// An iterator delivers its keys strictly in its order: a key twice, or two keys the
    /// wrong way round, is caught, forward and reverse.
    #[test]
    fn an_iterator_repeating_or_reordering_a_key_is_caught() {
        let timeline = batch_timeline();
        let scan = |reverse: bool, keys: &[&str]| {
            let options = IterOptions {
                reverse,
                ..IterOptions::default()
            };
            let entries = keys.iter().map(|key| (bytes(key), bytes("1"))).collect();
            finished(
                OpKind::Iterate(options),
                Outcome::Iterated {
                    entries,
                    closed_early: true,
                    follows: None,
                },
            )
        };
        assert_eq!(iterators(&[scan(false, &["a", "b"])], &timeline), None);
        assert_eq!(iterators(&[scan(true, &["b", "a"])], &timeline), None);
        for (reverse, keys) in [
            (false, ["a", "a"]),
            (false, ["b", "a"]),
            (true, ["b", "b"]),
            (true, ["a", "b"]),
        ] {
            let told = iterators(&[scan(reverse, &keys)], &timeline).unwrap_or_default();
            assert!(
                told.contains("repeated or reordered"),
                "{reverse} {keys:?}: {told}"
            );
        }
    }

    #[test]
    fn an_iterator_value_its_key_never_held_is_caught() {
        let timeline = batch_timeline();
        let scan = |value: &str| {
            finished(
                OpKind::Iterate(IterOptions::default()),
                Outcome::Iterated {
                    entries: vec![(bytes("a"), bytes(value)), (bytes("b"), bytes("1"))],
                    closed_early: false,
                    follows: None,
                },
            )
        };
        assert_eq!(
            iterators(&[scan("0")], &timeline),
            None,
            "a held 0 until 10"
        );
        assert!(iterators(&[scan("2")], &timeline).is_some());
    }

    /// An iterator's snapshot holds every commit up to the one it is said to follow (so a
    /// subscription from the next one misses nothing): showing the store from before it is
    /// caught, even while the iterator ran when that commit landed. Another host's group
    /// (3) takes a number and changes nothing.
    #[test]
    fn an_iterator_showing_less_than_the_commit_its_snapshot_follows_is_caught() {
        let mut timeline = batch_timeline();
        timeline.logged(3);
        let scan = |value: &str, follows| {
            finished(
                OpKind::Iterate(IterOptions::default()),
                Outcome::Iterated {
                    entries: vec![(bytes("a"), bytes(value)), (bytes("b"), bytes(value))],
                    closed_early: false,
                    follows,
                },
            )
        };
        assert_eq!(iterators(&[scan("0", None)], &timeline), None);
        assert_eq!(iterators(&[scan("0", Some(1))], &timeline), None);
        assert!(iterators(&[scan("0", Some(2))], &timeline).is_some());
        assert!(iterators(&[scan("0", Some(3))], &timeline).is_some());
        assert_eq!(iterators(&[scan("1", Some(3))], &timeline), None);
        // A number no group took bounds nothing.
        assert_eq!(iterators(&[scan("0", Some(9))], &timeline), None);
    }

    #[test]
    fn an_iterator_closed_early_need_not_reach_the_end() {
        let timeline = batch_timeline();
        let partial = |closed_early| {
            finished(
                OpKind::Iterate(IterOptions::default()),
                Outcome::Iterated {
                    entries: vec![(bytes("a"), bytes("1"))],
                    closed_early,
                    follows: None,
                },
            )
        };
        assert_eq!(iterators(&[partial(true)], &timeline), None);
        assert!(
            iterators(&[partial(false)], &timeline).is_some(),
            "b was there throughout"
        );
    }

    /// An acknowledged write is placed in the search though no read saw its value: a later
    /// read of what was there before it is stale.
    #[test]
    fn an_acknowledged_write_no_read_saw_still_rules_out_a_stale_read() {
        let write = during(0, 10, put("k", "a", Outcome::Written));
        let read = |value: Option<&str>| {
            let get = finished(OpKind::Get(bytes("k")), Outcome::Read(value.map(bytes)));
            during(20, 30, get)
        };
        let keys = [bytes("k")];
        assert_eq!(
            linearizability(&[write.clone(), read(Some("a"))], &keys),
            None
        );
        assert!(linearizability(&[write, read(None)], &keys).is_some());
    }

    #[test]
    fn writes_of_unknown_outcome_no_read_saw_are_left_out_of_the_search() {
        let key = bytes("k");
        let write = |n: usize| Op {
            process: 0,
            incarnation: 0,
            kind: OpKind::Write(vec![(key.clone(), Some(n.to_string().into_bytes()))]),
            invoke: n as u64,
            complete: None,
            outcome: Outcome::Unknown,
            excuses: Default::default(),
        };
        // Sixty overlapping writes of unknown outcome: 2^60 subsets to place without the cut.
        let mut history: Vec<Op> = (0..60).map(write).collect();
        history.push(Op {
            process: 1,
            incarnation: 0,
            kind: OpKind::Get(key.clone()),
            invoke: 100,
            complete: Some(110),
            outcome: Outcome::Read(Some(bytes("7"))),
            excuses: Default::default(),
        });
        assert_eq!(linearizability(&history, std::slice::from_ref(&key)), None);
        history.last_mut().unwrap().outcome = Outcome::Read(Some(bytes("never written")));
        assert!(linearizability(&history, &[key]).is_some());
    }

    /// A write that failed with an error saying it was not applied must not have committed;
    /// only the four errors that leave its outcome open may have; an acknowledged one must
    /// have, and a transaction answered a conflict must not.
    #[test]
    fn a_write_that_failed_saying_it_was_not_applied_must_not_have_committed() {
        let committed = FxHashMap::from_iter([(bytes("v"), 1)]);
        let not_applied = [
            ErrorCode::Backend("disk".into()),
            ErrorCode::FailedBefore,
            ErrorCode::Malformed("garbage".into()),
        ];
        for error in not_applied {
            let failed = put("k", "v", Outcome::Failed(error.clone()));
            let told = outcomes(&[failed], &committed);
            assert!(
                told.iter().any(|v| v.contains("but was committed")),
                "{error:?}: {told:?}"
            );
        }
        let open = [
            ErrorCode::OutcomeUnknown("lost".into()),
            ErrorCode::TimedOut,
            ErrorCode::ConnectionLost,
            ErrorCode::Closed,
        ];
        for error in open {
            let failed = put("k", "v", Outcome::Failed(error.clone()));
            assert_eq!(
                outcomes(&[failed], &committed),
                Vec::<String>::new(),
                "{error:?}"
            );
        }
        let never = FxHashMap::default();
        assert_eq!(
            outcomes(&[put("k", "v", Outcome::Written)], &committed),
            Vec::<String>::new()
        );
        assert_eq!(
            outcomes(&[put("k", "v", Outcome::Written)], &never).len(),
            1
        );
        let refused = || transaction("k", "v", conflict_on("k"));
        let told = outcomes(&[refused()], &committed);
        assert!(
            told.len() == 1 && told[0].contains("answered a conflict but was committed"),
            "{told:?}"
        );
        assert_eq!(outcomes(&[refused()], &never), Vec::<String>::new());
    }

    /// A real run's exactly-once, where values repeat: each put of a value committed at
    /// least as often as it was acknowledged, and no more often than the writes of it that
    /// may have landed (acknowledged or unknown; not one refused or failed as not applied).
    #[test]
    fn a_put_committed_fewer_times_than_acknowledged_or_more_than_asked_is_caught() {
        let counts = |times: u32| FxHashMap::from_iter([((bytes("k"), bytes("v")), times)]);
        let acked = || put("k", "v", Outcome::Written);
        let unknown = || put("k", "v", Outcome::Failed(ErrorCode::TimedOut));
        let refused = || transaction("k", "v", conflict_on("k"));
        let not_applied = || put("k", "v", Outcome::Failed(ErrorCode::Backend("disk".into())));
        assert_eq!(
            write_counts(&[acked(), acked()], &counts(2)),
            Vec::<String>::new()
        );
        let told = write_counts(&[acked(), acked()], &counts(1));
        assert!(
            told.len() == 1 && told[0].contains("acknowledged 2 times"),
            "{told:?}"
        );
        assert_eq!(
            write_counts(&[acked(), unknown()], &counts(1)),
            Vec::<String>::new()
        );
        assert_eq!(
            write_counts(&[acked(), unknown()], &counts(2)),
            Vec::<String>::new()
        );
        assert_eq!(write_counts(&[acked(), unknown()], &counts(3)).len(), 1);
        assert_eq!(write_counts(&[refused()], &counts(0)), Vec::<String>::new());
        assert_eq!(write_counts(&[refused()], &counts(1)).len(), 1);
        assert_eq!(write_counts(&[not_applied()], &counts(1)).len(), 1);
    }

    /// A conflict must name a key the transaction read, with another value than it read,
    /// and a value the key held while the transaction ran.
    #[test]
    fn a_conflict_on_a_value_its_key_never_held_is_caught() {
        let timeline = batch_timeline();
        let refused = |current: &str| {
            finished(
                OpKind::Transaction {
                    reads: vec![ReadCheck::Key {
                        key: bytes("a"),
                        value: Some(bytes("0")),
                    }],
                    writes: vec![(bytes("a"), Some(bytes("t")))],
                },
                Outcome::Conflict {
                    key: bytes("a"),
                    current: Some(bytes(current)),
                },
            )
        };
        assert_eq!(conflicts(&[refused("1")], &timeline), None);
        assert!(conflicts(&[refused("0")], &timeline).is_some(), "no change");
        assert!(
            conflicts(&[refused("2")], &timeline).is_some(),
            "never held"
        );
    }

    /// A `get_many`'s answer is a read of each of its keys, placed inside its own life: one
    /// that saw a value written only after it ended is caught.
    #[test]
    fn a_get_many_seeing_a_value_written_after_it_ended_is_caught() {
        let key = bytes("k");
        let get_many = |invoke: u64| {
            let read = finished(
                OpKind::GetMany(vec![key.clone()]),
                Outcome::ReadMany(vec![Some(bytes("a"))]),
            );
            during(invoke, invoke + 10, read)
        };
        let write = during(20, 30, put("k", "a", Outcome::Written));
        let keys = std::slice::from_ref(&key);
        assert_eq!(linearizability(&[write.clone(), get_many(40)], keys), None);
        assert!(linearizability(&[get_many(0), write], keys).is_some());
    }

    /// A key with more operations than the search takes is still checked when the zones
    /// can judge it, and found out when they say it is not linearizable; only one the
    /// zones cannot judge (a value written twice) is left out.
    #[test]
    fn a_busy_key_the_zones_judge_is_checked() {
        let writes = MOST_KEY_OPS + 2;
        let mut history: Vec<Op> = (0..writes)
            .map(|n| {
                let at = n as u64 * 10;
                during(at, at + 5, put("k", &format!("w{n}"), Outcome::Written))
            })
            .collect();
        let at = writes as u64 * 10;
        let stale_read = finished(OpKind::Get(bytes("k")), Outcome::Read(Some(bytes("w0"))));
        let stale_read = during(at, at + 5, stale_read);
        history.push(stale_read);
        let (checkable, too_busy) = checkable_keys(&history);
        assert_eq!((checkable, too_busy), (vec![bytes("k")], vec![]));
        let told = linearizability(&history, &[bytes("k")]).unwrap();
        assert!(told.contains("by zones"), "{told}");
        history[1] = during(10, 15, put("k", "w0", Outcome::Written));
        let (checkable, too_busy) = checkable_keys(&history);
        assert_eq!(
            (checkable, too_busy),
            (vec![], vec![(bytes("k"), writes + 1)])
        );
    }

    /// Commit `n`'s one change: `k` put to `n`.
    fn change(n: u64) -> Change {
        Change::Put {
            key: bytes("k"),
            value: n.to_string().into_bytes(),
        }
    }

    /// Commits 1 to `last`, each the change of [`change`].
    fn commits(last: u64) -> BTreeMap<u64, Vec<Change>> {
        (1..=last).map(|n| (n, vec![change(n)])).collect()
    }

    fn delivered(n: u64) -> WatchEvent {
        WatchEvent::Changes {
            seq: CommitSeq(n),
            changes: vec![change(n)],
        }
    }

    /// A subscription to every key from commit 1 that handed its caller `events`.
    fn watcher(events: Vec<WatchEvent>, closed: bool) -> Watcher {
        Watcher {
            process: 0,
            incarnation: 0,
            range: KeyRange::all(),
            asked: None,
            start: Some(CommitSeq(1)),
            events,
            failed: None,
            closed,
            excuses: Excuses::default(),
        }
    }

    /// A subscription told of a lag that claims commits it was already given (the lag's
    /// first lost commit before the one it stood at) is caught, as is one whose lag skips a
    /// commit of its range unsaid; an honest lag passes.
    #[test]
    fn a_lag_claiming_commits_already_delivered_is_caught() {
        let truth = commits(4);
        let judge = |missed: u64| {
            let resume = CommitSeq(4);
            let lag = WatchEvent::Lagged { missed, resume };
            let events = vec![delivered(1), lag, delivered(4)];
            feed(&[watcher(events, true)], &[false], &truth)
        };
        assert_eq!(judge(2), Vec::<String>::new());
        let told = judge(3);
        assert!(
            told.len() == 1 && told[0].contains("a lag of 3"),
            "{told:?}"
        );
        let told = judge(1);
        assert!(
            told.len() == 1 && told[0].contains("in between: [2]"),
            "commit 2 skipped unsaid: {told:?}"
        );
        // A lag covering every commit it missed (2 to 4) and one that never was (5): it
        // resumes past the log's next number.
        let lag = WatchEvent::Lagged {
            missed: 4,
            resume: CommitSeq(6),
        };
        let past_the_end = watcher(vec![delivered(1), lag], false);
        let told = feed(&[past_the_end], &[true], &truth);
        assert!(
            told.len() == 1 && told[0].contains("past the log's next number 5"),
            "{told:?}"
        );
    }

    /// A subscription still open at the end has seen every commit of its range, the last
    /// one included; one its caller closed, or whose process is gone, need not have.
    #[test]
    fn a_subscription_open_at_the_end_missing_the_last_commit_is_caught() {
        let truth = commits(3);
        let through = |last: u64, closed| watcher((1..=last).map(delivered).collect(), closed);
        let open = feed(&[through(3, false)], &[true], &truth);
        assert_eq!(open, Vec::<String>::new());
        let told = feed(&[through(2, false)], &[true], &truth);
        assert!(
            told.len() == 1 && told[0].contains("commits [3] never came"),
            "{told:?}"
        );
        let closed = feed(&[through(2, true)], &[true], &truth);
        assert_eq!(closed, Vec::<String>::new());
        let gone = feed(&[through(2, false)], &[false], &truth);
        assert_eq!(gone, Vec::<String>::new());
    }
}

//! The checks run on every simulated history.
//!
//! - Per-key linearizability with a register model: a Wing–Gong search with memoisation.
//!   Writes whose outcome the caller never learned (crash, connection lost) may or may not
//!   have happened; the search may place them or leave them out.
//! - Iterators: keys strictly in order (no repeat), all inside the range, and every key
//!   present in the store for the iterator's whole life delivered.
//!
//! - Outcomes: the clients retry and have no timeouts, so nothing may fail but for a fault
//!   injected in the store; a write acknowledged must have been committed, and one that
//!   the store failed must not have been. Writes are judged by their content (each put of
//!   the workload writes a value of its own), not by what the writer claims.
//!
//! No write applied twice (by content) and at most one leader are checked while the run
//! goes on (see `world.rs`); liveness at its end.

use std::collections::{BTreeMap, HashMap, HashSet};

use party_proto::wire::{BatchOp, WriteOp};
use party_proto::ErrorCode;

use crate::history::{Op, OpKind, Outcome};

/// The values a write puts, once each: the content that identifies it.
pub fn put_values(op: &WriteOp) -> HashSet<Vec<u8>> {
    match op {
        WriteOp::Put { value, .. } => HashSet::from([value.clone()]),
        WriteOp::Batch { ops } => ops
            .iter()
            .filter_map(|op| match op {
                BatchOp::Put { value, .. } => Some(value.clone()),
                BatchOp::Del { .. } => None,
            })
            .collect(),
        WriteOp::Del { .. } | WriteOp::Clear { .. } => HashSet::new(),
    }
}

/// An error only a store fault explains: the write was not applied.
fn store_refusal(error: &ErrorCode) -> bool {
    matches!(
        error,
        ErrorCode::Backend(_) | ErrorCode::StoreFull { .. } | ErrorCode::StoreReadOnly
    )
}

/// Violations in how operations ended, against how often each value was committed.
pub fn outcomes(
    history: &[Op],
    committed: &HashMap<Vec<u8>, u32>,
    store_faults: bool,
) -> Vec<String> {
    let mut violations = Vec::new();
    for (index, op) in history.iter().enumerate() {
        if let Outcome::Failed(error) = &op.outcome {
            if !(store_faults && store_refusal(error)) {
                violations.push(format!(
                    "op{index} failed with {error:?}, with retry on and no store fault to explain it"
                ));
            }
        }
        let OpKind::Write(writes) = &op.kind else {
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
            Outcome::Failed(error) if store_refusal(error) && times > 0 => {
                violations.push(format!("op{index} failed with {error:?} but was committed"))
            }
            _ => {}
        }
    }
    violations
}

/// What the store held over time, recorded as the leader committed: per key, when it
/// appeared (`true`) or disappeared (`false`).
#[derive(Debug, Default)]
pub struct Timeline {
    changes: BTreeMap<Vec<u8>, Vec<(u64, bool)>>,
}

impl Timeline {
    pub fn record(&mut self, at: u64, key: &[u8], present: bool) {
        self.changes
            .entry(key.to_vec())
            .or_default()
            .push((at, present));
    }

    /// Keys present at every instant from `from` to `to`. A change at `from` itself may
    /// come before or after the operation that started then, so it does not count.
    fn present_throughout(&self, from: u64, to: u64) -> Vec<&[u8]> {
        self.changes
            .iter()
            .filter(|(_, changes)| {
                let at_start = changes
                    .iter()
                    .take_while(|(t, _)| *t < from)
                    .last()
                    .is_some_and(|(_, present)| *present);
                let removed_meanwhile = changes
                    .iter()
                    .any(|(t, present)| *t >= from && *t <= to && !present);
                at_start && !removed_meanwhile
            })
            .map(|(key, _)| key.as_slice())
            .collect()
    }
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

/// Finds the first key whose history is not linearizable, with a description.
pub fn linearizability(history: &[Op], keys: &[Vec<u8>]) -> Option<String> {
    for key in keys {
        let ops = key_ops(history, key);
        if ops.len() > 128 {
            return Some(format!(
                "key {key:02x?}: {} operations, more than the checker takes",
                ops.len()
            ));
        }
        if !linearizable(&ops) {
            return Some(format!("key {key:02x?} is not linearizable: {ops:?}"));
        }
    }
    None
}

fn key_ops(history: &[Op], key: &[u8]) -> Vec<KeyOp> {
    let mut ops = Vec::new();
    for op in history {
        let known = matches!(op.outcome, Outcome::Read(_) | Outcome::Written);
        let complete = if known {
            op.complete.unwrap_or(u64::MAX)
        } else {
            u64::MAX
        };
        let (read, value) = match (&op.kind, &op.outcome) {
            (OpKind::Get(k), Outcome::Read(value)) if k == key => (true, value.clone()),
            (OpKind::Write(writes), _) => match writes.iter().rev().find(|(k, _)| k == key) {
                Some((_, value)) => (false, value.clone()),
                None => continue,
            },
            (OpKind::Clear(range), _) if range.contains(key) => (false, None),
            _ => continue,
        };
        ops.push(KeyOp {
            invoke: op.invoke,
            complete,
            read,
            value,
            required: known,
        });
    }
    ops
}

fn linearizable(ops: &[KeyOp]) -> bool {
    let required: u128 = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.required)
        .fold(0, |mask, (i, _)| mask | 1 << i);
    let mut values: Vec<Option<Vec<u8>>> = vec![None];
    let mut value_ids = HashMap::from([(None, 0u32)]);
    let op_values: Vec<u32> = ops
        .iter()
        .map(|op| {
            *value_ids.entry(op.value.clone()).or_insert_with(|| {
                values.push(op.value.clone());
                values.len() as u32 - 1
            })
        })
        .collect();
    let mut seen = HashSet::new();
    search(ops, &op_values, required, 0, 0, &mut seen)
}

fn search(
    ops: &[KeyOp],
    values: &[u32],
    required: u128,
    done: u128,
    value: u32,
    seen: &mut HashSet<(u128, u32)>,
) -> bool {
    if done & required == required {
        return true;
    }
    if !seen.insert((done, value)) {
        return false;
    }
    // Whatever comes next must have started before every remaining operation ended.
    let horizon = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .map(|(_, op)| op.complete)
        .min()
        .unwrap_or(u64::MAX);
    for (i, op) in ops.iter().enumerate() {
        if done & (1 << i) != 0 || op.invoke > horizon {
            continue;
        }
        let next = if op.read {
            if values[i] != value {
                continue;
            }
            value
        } else {
            values[i]
        };
        if search(ops, values, required, done | 1 << i, next, seen) {
            return true;
        }
    }
    false
}

/// Finds the first iterator that repeated, reordered, strayed outside its range or missed
/// a key that was there all along.
pub fn iterators(history: &[Op], timeline: &Timeline) -> Option<String> {
    for op in history {
        let (OpKind::Iterate(options), Outcome::Iterated(keys), Some(complete)) =
            (&op.kind, &op.outcome, op.complete)
        else {
            continue;
        };
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
        if options.limit.is_some_and(|limit| keys.len() as u64 > limit) {
            return Some(format!(
                "iterator {options:?} went past its limit: {keys:02x?}"
            ));
        }
        let cut_short = options
            .limit
            .is_some_and(|limit| keys.len() as u64 == limit);
        for stable in timeline.present_throughout(op.invoke, complete) {
            if !options.range.contains(stable) || keys.iter().any(|k| k == stable) {
                continue;
            }
            let beyond_last = keys.last().is_some_and(|last| {
                if options.reverse {
                    stable < last.as_slice()
                } else {
                    stable > last.as_slice()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn op(invoke: u64, complete: u64, read: bool, value: Option<&str>, required: bool) -> KeyOp {
        KeyOp {
            invoke,
            complete,
            read,
            value: value.map(|v| v.as_bytes().to_vec()),
            required,
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        let history = [
            op(0, 10, false, Some("a"), true),
            op(20, 30, true, None, true),
        ];
        assert!(!linearizable(&history));
        let overlapping = [
            op(0, 25, false, Some("a"), true),
            op(20, 30, true, None, true),
        ];
        assert!(
            linearizable(&overlapping),
            "the read may go before the write"
        );
    }

    #[test]
    fn an_unacknowledged_write_may_or_may_not_have_happened() {
        let happened = [
            op(0, u64::MAX, false, Some("a"), false),
            op(20, 30, true, Some("a"), true),
        ];
        assert!(linearizable(&happened));
        let did_not = [
            op(0, u64::MAX, false, Some("a"), false),
            op(20, 30, true, None, true),
        ];
        assert!(linearizable(&did_not));
        let out_of_thin_air = [op(20, 30, true, Some("b"), true)];
        assert!(!linearizable(&out_of_thin_air));
    }

    #[test]
    fn a_write_applied_again_later_shows_as_a_backwards_read() {
        // w1=a, w2=b both acknowledged in order; a later read sees a again.
        let history = [
            op(0, 10, false, Some("a"), true),
            op(20, 30, false, Some("b"), true),
            op(40, 50, true, Some("a"), true),
        ];
        assert!(!linearizable(&history));
    }
}

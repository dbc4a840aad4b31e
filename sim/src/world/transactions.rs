//! Transactional callers, and the check that every transaction committed read what the
//! store held at its place in the commit order.
//!
//! A caller's transaction is two operations in the history, as party-core's
//! `Db::transaction` makes them: a read through the leader (a `get_many` of the keys, or an
//! iteration of the accounts), then a commit of what it read and what it writes. On a
//! conflict it runs again from the read, a few times. Three kinds: a counter incremented,
//! one unit moved between two accounts, and an audit that reads every account and writes
//! nothing. Each value written carries the commit's history index, so the checks know
//! which transaction a committed value came from.
//!
//! The store applies the writer's batches in order, so the commit order is the
//! serialization order: a transaction whose reads do not read the same at its place in it
//! was committed on stale reads (the history is not serializable), and one whose writes
//! are not all in its batch was applied in part.

use super::*;
use party_proto::wire::{Entry, ReadCheck};

/// The counters transactions increment.
const COUNTERS: [&[u8]; 2] = [b"c0", b"c1"];
/// The accounts transfers move units between; an audit reads them all, as a range.
const ACCOUNTS: [&[u8]; 3] = [b"t0", b"t1", b"t2"];
/// How many times a caller runs a transaction that meets conflicts.
const ATTEMPTS: u32 = 4;

#[derive(Debug, Clone)]
pub(super) enum TxnKind {
    Increment(Vec<u8>),
    Transfer { from: Vec<u8>, to: Vec<u8> },
    Audit,
}

/// A transaction under way: what it does, and how many times it ran into a conflict.
#[derive(Debug, Clone)]
pub(super) struct TxnPlan {
    kind: TxnKind,
    attempt: u32,
}

/// The next step of a transaction, due after the caller's think time.
#[derive(Debug, Clone)]
pub(super) enum TxnStep {
    /// Its read (history index) is answered: commit.
    Commit { read: usize, plan: TxnPlan },
    /// It met a conflict: read again.
    Retry(TxnPlan),
}

fn accounts() -> KeyRange {
    KeyRange {
        start: Bound::Included(b"t".to_vec()),
        end: Bound::Excluded(b"u".to_vec()),
    }
}

/// The number a value written by a transaction holds (`n|tag`); 0 for none.
fn number(value: Option<&Vec<u8>>) -> i64 {
    value
        .and_then(|value| std::str::from_utf8(value).ok())
        .and_then(|text| text.split('|').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl World {
    /// A caller starts a transaction of a random kind.
    pub(super) fn start_transaction(&mut self, process: ProcessId) {
        let kind = match self.rng.next_u64() % 5 {
            0 | 1 => {
                let counter = COUNTERS[(self.rng.next_u64() % 2) as usize];
                TxnKind::Increment(counter.to_vec())
            }
            2 | 3 => {
                let from = (self.rng.next_u64() % 3) as usize;
                let to = (from + 1 + (self.rng.next_u64() % 2) as usize) % 3;
                TxnKind::Transfer {
                    from: ACCOUNTS[from].to_vec(),
                    to: ACCOUNTS[to].to_vec(),
                }
            }
            _ => TxnKind::Audit,
        };
        self.transaction_read(process, TxnPlan { kind, attempt: 0 });
    }

    fn transaction_read(&mut self, process: ProcessId, plan: TxnPlan) {
        let read = match &plan.kind {
            TxnKind::Increment(counter) => OpKind::GetMany(vec![counter.clone()]),
            TxnKind::Transfer { from, to } => OpKind::GetMany(vec![from.clone(), to.clone()]),
            TxnKind::Audit => OpKind::Iterate(IterOptions {
                range: accounts(),
                ..IterOptions::default()
            }),
        };
        let index = self.history.len();
        self.processes[process].txns.insert(index, plan);
        self.issue(process, read, true);
    }

    /// Operation `index` of `process` ended: if it is a step of a transaction, the next
    /// step comes after a while.
    pub(super) fn transaction_step_ended(&mut self, process: ProcessId, index: usize) {
        let Some(plan) = self.processes[process].txns.remove(&index) else {
            return;
        };
        let step = match (&self.history[index].kind, &self.history[index].outcome) {
            (OpKind::GetMany(_), Outcome::ReadMany(_))
            | (OpKind::Iterate(_), Outcome::Iterated { .. }) => {
                TxnStep::Commit { read: index, plan }
            }
            (OpKind::Transaction { .. }, Outcome::Conflict { .. })
                if plan.attempt + 1 < ATTEMPTS =>
            {
                TxnStep::Retry(TxnPlan {
                    attempt: plan.attempt + 1,
                    ..plan
                })
            }
            // Done, or failed: the caller gives up.
            _ => return,
        };
        let incarnation = self.processes[process].incarnation;
        let delay = self.rand(1, 500);
        self.schedule(
            delay,
            Event::Transaction {
                process,
                incarnation,
                step,
            },
        );
    }

    pub(super) fn transaction_step(&mut self, process: ProcessId, step: TxnStep) {
        match step {
            TxnStep::Retry(plan) => self.transaction_read(process, plan),
            TxnStep::Commit { read, plan } => {
                let index = self.history.len();
                let tag = format!("p{process}.{index}");
                let (reads, writes) = self.transaction_of(&plan.kind, read, &tag);
                self.processes[process].txns.insert(index, plan);
                self.issue(process, OpKind::Transaction { reads, writes }, true);
            }
        }
    }

    /// What a transaction read (from its read step's outcome) and what it writes.
    #[allow(clippy::type_complexity)]
    fn transaction_of(
        &self,
        kind: &TxnKind,
        read: usize,
        tag: &str,
    ) -> (Vec<ReadCheck>, Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        let op = &self.history[read];
        match (&op.kind, &op.outcome) {
            (OpKind::GetMany(keys), Outcome::ReadMany(values)) => {
                let reads: Vec<ReadCheck> = keys
                    .iter()
                    .zip(values)
                    .map(|(key, value)| ReadCheck::Key {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect();
                let value = |n: i64| Some(format!("{n}|{tag}").into_bytes());
                let writes = match kind {
                    TxnKind::Increment(counter) => {
                        vec![(counter.clone(), value(number(values[0].as_ref()) + 1))]
                    }
                    TxnKind::Transfer { from, to } => vec![
                        (from.clone(), value(number(values[0].as_ref()) - 1)),
                        (to.clone(), value(number(values[1].as_ref()) + 1)),
                    ],
                    TxnKind::Audit => Vec::new(),
                };
                (reads, writes)
            }
            (
                OpKind::Iterate(options),
                Outcome::Iterated {
                    entries,
                    closed_early,
                    ..
                },
            ) => {
                // A caller that stopped early read the range only up to its last entry.
                let mut range = options.range.clone();
                if let (true, Some((last, _))) = (*closed_early, entries.last()) {
                    range.end = Bound::Included(last.clone());
                }
                let entries = entries
                    .iter()
                    .map(|(key, value)| Entry {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect();
                (vec![ReadCheck::Range { range, entries }], Vec::new())
            }
            _ => (Vec::new(), Vec::new()),
        }
    }

    /// Before a batch lands: each transaction in it must read what the store holds at its
    /// place (the state before the batch, then each earlier operation of the batch
    /// applied), and carry every write its caller gave it.
    pub(super) fn check_transactions(&mut self, process: ProcessId, batch: &WriteBatch) {
        let mut found = Vec::new();
        self.each_transaction(batch, |reads, writes, state| {
            if let Some(stale) = reads.iter().find(|read| !holds(read, state)) {
                found.push(format!(
                    "p{process} committed a transaction whose read no longer held \
                     (not serializable): {stale:02x?}"
                ));
            }
            let given: Vec<(Vec<u8>, Option<Vec<u8>>)> = writes
                .iter()
                .map(|step| match step {
                    BatchOp::Put { key, value } => (key.clone(), Some(value.clone())),
                    BatchOp::Del { key } => (key.clone(), None),
                })
                .collect();
            let caller = given
                .iter()
                .find_map(|(_, value)| value.as_deref().and_then(tag_index));
            if let Some(index) = caller {
                if let OpKind::Transaction { writes: sent, .. } = &self.history[index].kind {
                    if *sent != given {
                        found.push(format!(
                            "p{process} applied transaction op{index} in part: \
                             {given:02x?} of {sent:02x?}"
                        ));
                    }
                }
            }
        });
        self.violations.extend(found);
    }

    /// Whether a read of a transaction of `batch` no longer holds at its place: a store
    /// shared over the network compares them as the batch reaches it, and refuses such a
    /// batch whole (etcd), which matters to a batch that reaches it late.
    pub(super) fn reads_stale(&self, batch: &WriteBatch) -> bool {
        let mut stale = false;
        self.each_transaction(batch, |reads, _, state| {
            stale |= reads.iter().any(|read| !holds(read, state));
        });
        stale
    }

    /// Calls `visit` with the reads and writes of each transaction of `batch`, and the
    /// store's state at its place: the state before the batch, then each earlier operation
    /// of the batch applied.
    fn each_transaction(
        &self,
        batch: &WriteBatch,
        mut visit: impl FnMut(&[ReadCheck], &[BatchOp], &BTreeMap<Vec<u8>, Vec<u8>>),
    ) {
        if !batch
            .ops
            .iter()
            .any(|op| matches!(op, WriteOp::Transaction { .. }))
        {
            return;
        }
        let mut state: BTreeMap<Vec<u8>, Vec<u8>> = self
            .store
            .iter(&KeyRange::all(), false)
            .expect("the memory store cannot fail")
            .map(|entry| entry.map(|e| (e.key, e.value)))
            .collect::<Result<_, _>>()
            .expect("the memory store cannot fail");
        for op in &batch.ops {
            if let WriteOp::Transaction { reads, writes } = op {
                visit(reads, writes, &state);
            }
            let effect = resolve(std::slice::from_ref(op), |range| {
                Ok(state
                    .keys()
                    .filter(|key| range.contains(key))
                    .cloned()
                    .collect())
            })
            .expect("resolving in memory cannot fail");
            for (key, value) in effect {
                match value {
                    Some(value) => state.insert(key.into_owned(), value.to_vec()),
                    None => state.remove(&*key),
                };
            }
        }
    }
}

/// The history index of the commit that wrote `value` (`n|p<process>.<index>`).
fn tag_index(value: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(value).ok()?;
    text.split('|').nth(1)?.split('.').nth(1)?.parse().ok()
}

/// Whether `read` reads the same in `state`.
fn holds(read: &ReadCheck, state: &BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
    match read {
        ReadCheck::Key { key, value } => state.get(key) == value.as_ref(),
        ReadCheck::Range { range, entries } => {
            let now = state.iter().filter(|(key, _)| range.contains(key));
            now.eq(entries.iter().map(|entry| (&entry.key, &entry.value)))
        }
    }
}

//! Transactional callers, and the check that every transaction committed read what the
//! store held at its place in the commit order.
//!
//! A caller's transaction is two operations in the history, as party-core's
//! `Db::transaction` makes them: a read through the leader (a `get_many` of the keys, or an
//! iteration of the accounts), then a commit of what it read and what it writes. On a
//! conflict it runs again from the read, a few times. Four kinds: a counter incremented,
//! one unit moved between two accounts, an account closed (its balance moved to another
//! and its key deleted: the next transaction that writes it opens it again), and an audit
//! that reads every account and writes nothing. Closing deletes a key in a transaction,
//! and makes the audits' range lose entries and gain them back. Each value written
//! carries the commit's history index, so the checks know which transaction a committed
//! value came from. A caller sometimes runs a few transactions side by side that commit
//! together (see [`Together`]).
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
    Close { account: Vec<u8>, into: Vec<u8> },
    Audit,
}

/// A transaction under way: what it does, how many times it ran into a conflict, and the
/// transactions it commits together with, if any.
#[derive(Debug, Clone)]
pub(super) struct TxnPlan {
    kind: TxnKind,
    attempt: u32,
    together: Option<u64>,
}

/// Transactions a caller runs side by side: each reads at its own time, and all commit at
/// once when the last has read. The leader's writer then often takes them in one group
/// (when they reach it while its store thread is busy, or all at once), whose
/// transactions are checked against one read of the store before it: one that read what
/// an earlier one of the group writes must wait for the next group.
#[derive(Debug)]
pub(super) struct Together {
    /// How many have yet to read.
    reading: usize,
    /// Those that read: the history index of the read, and the plan.
    read: Vec<(usize, TxnPlan)>,
}

/// The next step of transactions, due after the caller's think time.
#[derive(Debug, Clone)]
pub(super) enum TxnStep {
    /// Their reads (history indexes) are answered: commit them, in this order.
    Commit(Vec<(usize, TxnPlan)>),
    /// A transaction reads: for the first time, or again after a conflict.
    Read(TxnPlan),
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
        let kind = self.transaction_kind();
        self.transaction_read(
            process,
            TxnPlan {
                kind,
                attempt: 0,
                together: None,
            },
        );
    }

    /// A caller starts two audits, and now and then a transaction of a random kind, that
    /// commit together (see [`Together`]), each reading after a while of its own.
    pub(super) fn start_transactions_together(&mut self, process: ProcessId) {
        let count = self.rand(2, 4) as usize;
        let node = &mut self.processes[process];
        let id = node.next_together;
        node.next_together += 1;
        node.together.insert(
            id,
            Together {
                reading: count,
                read: Vec::new(),
            },
        );
        let incarnation = node.incarnation;
        for n in 0..count {
            // Two audits among them: reading the accounts at different times, they may
            // see different counts of entries in the one range the group reads.
            let kind = match n {
                0 | 1 => TxnKind::Audit,
                _ => self.transaction_kind(),
            };
            let plan = TxnPlan {
                kind,
                attempt: 0,
                together: Some(id),
            };
            let delay = self.rand(1, 1_500);
            self.schedule(
                delay,
                Event::Transaction {
                    process,
                    incarnation,
                    step: TxnStep::Read(plan),
                },
            );
        }
    }

    fn transaction_kind(&mut self) -> TxnKind {
        match self.rng.next_u64() % 6 {
            0 | 1 => {
                let counter = COUNTERS[(self.rng.next_u64() % 2) as usize];
                TxnKind::Increment(counter.to_vec())
            }
            2 | 3 => {
                let (from, to) = self.two_accounts();
                TxnKind::Transfer { from, to }
            }
            4 => {
                let (account, into) = self.two_accounts();
                TxnKind::Close { account, into }
            }
            _ => TxnKind::Audit,
        }
    }

    /// Two different accounts, at random.
    fn two_accounts(&mut self) -> (Vec<u8>, Vec<u8>) {
        let first = (self.rng.next_u64() % 3) as usize;
        let second = (first + 1 + (self.rng.next_u64() % 2) as usize) % 3;
        (ACCOUNTS[first].to_vec(), ACCOUNTS[second].to_vec())
    }

    fn transaction_read(&mut self, process: ProcessId, plan: TxnPlan) {
        let read = match &plan.kind {
            TxnKind::Increment(counter) => OpKind::GetMany(vec![counter.clone()]),
            TxnKind::Transfer {
                from: first,
                to: second,
            }
            | TxnKind::Close {
                account: first,
                into: second,
            } => OpKind::GetMany(vec![first.clone(), second.clone()]),
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
        let (kind, outcome) = (&self.history[index].kind, &self.history[index].outcome);
        let committed = matches!(kind, OpKind::Transaction { .. });
        let conflict = matches!(outcome, Outcome::Conflict { .. });
        let answered = matches!(
            (kind, outcome),
            (OpKind::GetMany(_), Outcome::ReadMany(_))
                | (OpKind::Iterate(_), Outcome::Iterated { .. })
        );
        let step = match plan.together {
            Some(id) if !committed => {
                match self.read_together(process, id, index, answered, plan) {
                    Some(all) => TxnStep::Commit(all),
                    None => return,
                }
            }
            _ if answered => TxnStep::Commit(vec![(index, plan)]),
            _ if committed && conflict && plan.attempt + 1 < ATTEMPTS => {
                // Alone from now on: it no longer waits for those it committed with.
                TxnStep::Read(TxnPlan {
                    attempt: plan.attempt + 1,
                    together: None,
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

    /// The read `index` of a transaction that commits with others (those of `id`) ended
    /// (`read`: it was answered; else the caller gives that one up): once none is left to
    /// read, those that read, in a random order.
    fn read_together(
        &mut self,
        process: ProcessId,
        id: u64,
        index: usize,
        read: bool,
        plan: TxnPlan,
    ) -> Option<Vec<(usize, TxnPlan)>> {
        let together = self.processes[process].together.get_mut(&id)?;
        together.reading -= 1;
        if read {
            together.read.push((index, plan));
        }
        if together.reading > 0 {
            return None;
        }
        let mut all = self.processes[process].together.remove(&id)?.read;
        for i in (1..all.len()).rev() {
            let j = self.rand(0, i as u64 + 1) as usize;
            all.swap(i, j);
        }
        (!all.is_empty()).then_some(all)
    }

    pub(super) fn transaction_step(&mut self, process: ProcessId, step: TxnStep) {
        match step {
            TxnStep::Read(plan) => self.transaction_read(process, plan),
            TxnStep::Commit(all) => {
                // Issued together, then carried out: the leader's own handle commits them
                // in one group too.
                for (read, plan) in all {
                    let index = self.history.len();
                    let tag = format!("p{process}.{index}");
                    let (reads, writes) = self.transaction_of(&plan.kind, read, &tag);
                    self.processes[process].txns.insert(index, plan);
                    self.issue(process, OpKind::Transaction { reads, writes }, false);
                }
                self.pump(process);
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
                    // The credit first: a transaction applied in part (its first write
                    // only) is still told by its tag, which a deletion lacks.
                    TxnKind::Close { account, into } => vec![
                        (
                            into.clone(),
                            value(number(values[0].as_ref()) + number(values[1].as_ref())),
                        ),
                        (account.clone(), None),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every read of a transaction is judged against the store at its place, not only its
    /// first: one committed although its second read no longer held is caught.
    #[test]
    fn a_transaction_committed_on_any_stale_read_is_caught() {
        let mut world = World::quiet();
        let absent = |key: &str| ReadCheck::Key {
            key: key.into(),
            value: None,
        };
        let committed = |reads| {
            let mut batch = WriteBatch::new();
            batch.push(WriteOp::Transaction {
                reads,
                writes: Vec::new(),
            });
            batch
        };
        world.check_transactions(0, &committed(vec![absent("a"), absent("b")]));
        assert_eq!(world.violations, Vec::<String>::new());
        let held = ReadCheck::Key {
            key: "b".into(),
            value: Some("1".into()),
        };
        world.check_transactions(0, &committed(vec![absent("a"), held]));
        assert!(
            world.violations.len() == 1 && world.violations[0].contains("not serializable"),
            "{:?}",
            world.violations
        );
    }

    /// A transaction is judged at its place in its batch: after the batch's earlier
    /// operations, deletes included.
    #[test]
    fn a_transaction_reads_the_deletes_before_it_in_its_batch() {
        let mut world = World::quiet();
        let mut before = WriteBatch::new();
        before.push(WriteOp::Put {
            key: "a".into(),
            value: "1".into(),
        });
        world.store.write(&before).unwrap();
        let mut batch = WriteBatch::new();
        batch.push(WriteOp::Del { key: "a".into() });
        batch.push(WriteOp::Transaction {
            reads: vec![ReadCheck::Key {
                key: "a".into(),
                value: None,
            }],
            writes: Vec::new(),
        });
        world.check_transactions(0, &batch);
        assert_eq!(world.violations, Vec::<String>::new());
    }
}

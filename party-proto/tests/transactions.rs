//! Transactions in the leader's writer: a transaction applies only while its reads hold,
//! is admitted against the dedup table before it is checked (so a re-send of one already
//! applied is answered from its record), and one refused for a conflict counts as failed.
//! A model store applies each commit and answers the writer's reads.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use party_proto::txn::{CheckRead, CheckValue};
use party_proto::wire::{BatchOp, Entry, ReadCheck, Response, WriteOp};
use party_proto::{
    ClientId, CommitResult, DedupRecord, ErrorCode, KeyRange, Timestamp, WriteBatch, WriteSeq,
    Writer, WriterConfig, WriterInput, WriterOutput,
};
use proptest::prelude::*;

mod support;
use support::stamp;

const NOW: Timestamp = Timestamp::ZERO;

fn bytes(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// Compare-and-swap as a transaction: `key` must hold `expected`; it then holds `new`.
fn cas(key: &str, expected: Option<&str>, new: &str) -> WriteOp {
    WriteOp::Transaction {
        reads: vec![ReadCheck::Key {
            key: bytes(key),
            value: expected.map(bytes),
        }],
        writes: vec![BatchOp::Put {
            key: bytes(key),
            value: bytes(new),
        }],
    }
}

/// A store in memory: its data and its dedup records, as the writer's commits leave them.
#[derive(Debug, Default, Clone)]
struct Model {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    records: HashMap<ClientId, DedupRecord>,
}

impl Model {
    fn apply_step(&mut self, step: &BatchOp) {
        match step {
            BatchOp::Put { key, value } => {
                self.data.insert(key.clone(), value.clone());
            }
            BatchOp::Del { key } => {
                self.data.remove(key);
            }
        }
    }

    /// Applies one operation; for a transaction, first checks that what it read is what
    /// the store holds at this point of the commit order.
    fn apply(&mut self, op: &WriteOp) -> Result<(), String> {
        match op {
            WriteOp::Put { key, value } => self.apply_step(&BatchOp::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            WriteOp::Del { key } => self.apply_step(&BatchOp::Del { key: key.clone() }),
            WriteOp::Batch { ops } => ops.iter().for_each(|step| self.apply_step(step)),
            WriteOp::Clear { range } => self.data.retain(|key, _| !range.contains(key)),
            WriteOp::Transaction { reads, writes } => {
                for read in reads {
                    let holds = match read {
                        ReadCheck::Key { key, value } => self.data.get(key) == value.as_ref(),
                        ReadCheck::Range { range, entries } => self.range(range) == *entries,
                    };
                    if !holds {
                        return Err(format!("committed with a stale read {read:?}"));
                    }
                }
                writes.iter().for_each(|step| self.apply_step(step));
            }
        }
        Ok(())
    }

    fn range(&self, range: &KeyRange) -> Vec<Entry> {
        self.data
            .iter()
            .filter(|(key, _)| range.contains(key))
            .map(|(key, value)| Entry {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

    fn read(&self, reads: &[CheckRead]) -> Vec<CheckValue> {
        reads
            .iter()
            .map(|read| match read {
                CheckRead::Key(key) => CheckValue::Value(self.data.get(key).cloned()),
                CheckRead::Range { range, limit } => {
                    CheckValue::Entries(self.range(range).into_iter().take(*limit).collect())
                }
            })
            .collect()
    }

    /// The answer to what the writer asks of the store besides commits and replies:
    /// checkpoints, records, sweeps, and reads for checks.
    fn answer(&self, output: WriterOutput<u32>) -> WriterInput {
        match output {
            WriterOutput::Checkpoint => WriterInput::Checkpointed(true),
            WriterOutput::LoadRecords(clients) => WriterInput::RecordsLoaded(Ok(clients
                .into_iter()
                .map(|client| (client, self.records.get(&client).cloned()))
                .collect())),
            WriterOutput::ExpireRecords { .. } => WriterInput::RecordsExpired(Ok(None)),
            WriterOutput::ReadChecks(reads) => WriterInput::ChecksRead(Ok(self.read(&reads))),
            // The model keeps no change log (tests/writer.rs checks the numbering).
            WriterOutput::LoadLogEnds => WriterInput::LogEndsLoaded(Ok(None)),
            other => panic!("the caller answers {other:?}"),
        }
    }

    fn commit(&mut self, batch: &WriteBatch) -> Result<(), String> {
        for op in &batch.ops {
            self.apply(op)?;
        }
        self.records.extend(batch.records.iter().cloned());
        Ok(())
    }
}

type Answer = (u32, Result<Response, ErrorCode>);

/// Carries out the writer's outputs against `model`, every commit landing; returns the
/// batches committed and the answers.
fn run(writer: &mut Writer<u32>, model: &mut Model) -> (Vec<WriteBatch>, Vec<Answer>) {
    run_reading(writer, model, |model, reads| Ok(model.read(reads)))
}

/// [`run`], with `read` answering the writer's reads for transaction checks.
fn run_reading(
    writer: &mut Writer<u32>,
    model: &mut Model,
    mut read: impl FnMut(&Model, &[CheckRead]) -> Result<Vec<CheckValue>, ErrorCode>,
) -> (Vec<WriteBatch>, Vec<Answer>) {
    let (mut commits, mut answers) = (Vec::new(), Vec::new());
    while let Some(output) = writer.poll_output() {
        let input = match output {
            WriterOutput::Commit(batch) => {
                model.commit(&batch).unwrap();
                commits.push(batch);
                WriterInput::Committed(CommitResult::Committed)
            }
            WriterOutput::Reply { to, result } => {
                answers.push((to, result));
                continue;
            }
            WriterOutput::ReadChecks(reads) => WriterInput::ChecksRead(read(model, &reads)),
            other => model.answer(other),
        };
        writer.handle_input(NOW, input);
    }
    (commits, answers)
}

fn writer() -> Writer<u32> {
    support::new_writer(WriterConfig::default(), NOW)
}

fn conflict(key: &str, current: Option<&str>) -> Result<Response, ErrorCode> {
    Ok(Response::Conflict {
        key: bytes(key),
        current: current.map(bytes),
    })
}

#[test]
fn a_compare_and_swap_applies_while_its_read_holds_and_else_answers_the_current_value() {
    let mut model = Model::default();
    let mut writer = writer();
    writer.write(1, stamp(1, 1), cas("k", None, "a"));
    writer.cut(NOW);
    let (commits, answers) = run(&mut writer, &mut model);
    assert_eq!(answers, [(1, Ok(Response::Written))]);
    assert_eq!(commits.len(), 1);
    writer.write(2, stamp(2, 1), cas("k", None, "b"));
    writer.write(3, stamp(2, 2), cas("k", Some("x"), "b"));
    writer.write(4, stamp(2, 3), cas("k", Some("a"), "c"));
    writer.cut(NOW);
    let (_, answers) = run(&mut writer, &mut model);
    assert_eq!(
        answers,
        [
            (2, conflict("k", Some("a"))),
            (3, conflict("k", Some("a"))),
            (4, Ok(Response::Written))
        ]
    );
    assert_eq!(model.data[&bytes("k")], bytes("c"));
}

/// The failover case: the last leader applied the transaction and died before answering.
/// Its own write changed what it read, so a check would refuse it; the record answers it.
#[test]
fn a_transaction_re_sent_after_it_was_applied_is_answered_from_its_record() {
    let mut model = Model::default();
    let mut old_leader = writer();
    old_leader.write(1, stamp(1, 1), cas("k", None, "a"));
    old_leader.cut(NOW);
    let (commits, _lost) = run(&mut old_leader, &mut model);
    assert_eq!(commits.len(), 1);
    let mut new_leader = writer();
    new_leader.write(1, stamp(1, 1), cas("k", None, "a"));
    new_leader.cut(NOW);
    let (commits, answers) = run(&mut new_leader, &mut model);
    assert_eq!(answers, [(1, Ok(Response::Written))]);
    assert!(commits.is_empty(), "applied once: {commits:?}");
}

/// A transaction refused for a conflict may still be re-sent (its answer lost): it must
/// not count as applied when a later write of its client commits, nor be applied after
/// that write (out of its client's order): it is answered `FailedBefore`.
#[test]
fn a_refused_transaction_counts_as_failed_and_a_re_send_after_a_later_write_is_not_applied() {
    let mut model = Model::default();
    model.data.insert(bytes("k"), bytes("other"));
    let mut old_leader = writer();
    old_leader.write(1, stamp(1, 1), cas("k", None, "a"));
    old_leader.write(
        2,
        stamp(1, 2),
        WriteOp::Put {
            key: bytes("j"),
            value: bytes("2"),
        },
    );
    old_leader.cut(NOW);
    let (commits, answers) = run(&mut old_leader, &mut model);
    assert_eq!(answers[0], (1, conflict("k", Some("other"))));
    assert_eq!(commits[0].records[0].1.failed, [WriteSeq(1)]);
    model.data.remove(&bytes("k"));
    let mut new_leader = writer();
    new_leader.write(1, stamp(1, 1), cas("k", None, "a"));
    new_leader.cut(NOW);
    let (commits, answers) = run(&mut new_leader, &mut model);
    assert_eq!(answers, [(1, Err(ErrorCode::FailedBefore))]);
    assert!(commits.is_empty(), "not applied: {commits:?}");
    assert!(!model.data.contains_key(&bytes("k")));
}

/// With no later write of its client landed, a refused transaction re-sent (its answer
/// lost) is decided again, and applied if its reads hold then.
#[test]
fn a_refused_transaction_re_sent_alone_is_decided_again() {
    let mut model = Model::default();
    model.data.insert(bytes("k"), bytes("other"));
    let mut old_leader = writer();
    old_leader.write(1, stamp(1, 1), cas("k", None, "a"));
    old_leader.cut(NOW);
    let (commits, answers) = run(&mut old_leader, &mut model);
    assert_eq!(answers, [(1, conflict("k", Some("other")))]);
    assert!(commits.is_empty());
    model.data.remove(&bytes("k"));
    let mut new_leader = writer();
    new_leader.write(1, stamp(1, 1), cas("k", None, "a"));
    new_leader.cut(NOW);
    let (commits, answers) = run(&mut new_leader, &mut model);
    assert_eq!(answers, [(1, Ok(Response::Written))]);
    assert_eq!(commits.len(), 1, "checked again, and applied this time");
    assert_eq!(model.data[&bytes("k")], bytes("a"));
}

#[test]
fn a_transaction_that_read_a_key_written_earlier_in_its_group_is_checked_after_it() {
    let mut model = Model::default();
    let mut writer = writer();
    writer.write(
        1,
        stamp(1, 1),
        WriteOp::Put {
            key: bytes("k"),
            value: bytes("1"),
        },
    );
    writer.write(2, stamp(2, 1), cas("k", None, "2"));
    writer.write(3, stamp(3, 1), cas("other", None, "3"));
    writer.cut(NOW);
    let (commits, answers) = run(&mut writer, &mut model);
    assert_eq!(commits.len(), 2, "the transaction waits for the next group");
    assert_eq!(commits[0].ops.len(), 1);
    assert!(answers.contains(&(2, conflict("k", Some("1")))));
    assert!(answers.contains(&(3, Ok(Response::Written))));
}

#[test]
fn a_key_that_appeared_in_a_range_read_is_a_conflict() {
    let mut model = Model::default();
    model.data.insert(bytes("a"), bytes("1"));
    let range = KeyRange {
        start: Bound::Included(bytes("a")),
        end: Bound::Excluded(bytes("c")),
    };
    let scan_then_put = |seen: Vec<Entry>| WriteOp::Transaction {
        reads: vec![ReadCheck::Range {
            range: range.clone(),
            entries: seen,
        }],
        writes: vec![BatchOp::Put {
            key: bytes("z"),
            value: Vec::new(),
        }],
    };
    let seen = vec![Entry {
        key: bytes("a"),
        value: bytes("1"),
    }];
    let mut writer = writer();
    writer.write(
        1,
        stamp(1, 1),
        WriteOp::Put {
            key: bytes("b"),
            value: bytes("2"),
        },
    );
    writer.cut(NOW);
    writer.write(2, stamp(2, 1), scan_then_put(seen.clone()));
    writer.cut(NOW);
    let (_, answers) = run(&mut writer, &mut model);
    assert_eq!(answers[1], (2, conflict("b", Some("2"))));
    let mut seen_now = seen;
    seen_now.push(Entry {
        key: bytes("b"),
        value: bytes("2"),
    });
    writer.write(3, stamp(2, 2), scan_then_put(seen_now));
    writer.cut(NOW);
    let (_, answers) = run(&mut writer, &mut model);
    assert_eq!(answers, [(3, Ok(Response::Written))]);
}

#[test]
fn when_the_store_cannot_be_read_its_transactions_fail_and_the_other_writes_go_on() {
    let mut model = Model::default();
    let mut writer = writer();
    writer.write(1, stamp(1, 1), cas("k", None, "a"));
    writer.write(
        2,
        stamp(1, 2),
        WriteOp::Put {
            key: bytes("j"),
            value: bytes("2"),
        },
    );
    writer.cut(NOW);
    let (_, answers) = run_reading(&mut writer, &mut model, |_, _| {
        Err(ErrorCode::Backend("unreachable".into()))
    });
    assert_eq!(
        answers,
        [
            (1, Err(ErrorCode::Backend("unreachable".into()))),
            (2, Ok(Response::Written))
        ]
    );
    assert_eq!(model.records[&ClientId(1)].failed, [WriteSeq(1)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Three clients increment two counters with transactions that read a value seen some
    /// time ago, some re-sent (as after a failover, to a new leader now and then), cut
    /// anywhere, against a store that fails, refuses or loses the answer of some commits.
    /// Every transaction committed read what the store held at its place in the commit
    /// order; each is answered once; acknowledged ones are applied exactly once, refused
    /// ones never; and each counter ends at the number of increments applied to it.
    #[test]
    fn transactions_commit_only_on_what_they_read_and_exactly_once(
        steps in prop::collection::vec((0u128..3, 0u8..2, 0usize..4, any::<bool>(), any::<bool>()), 1..40),
        verdicts in prop::collection::vec(0u8..12, 64),
        new_leader in prop::collection::vec(any::<bool>(), 64),
    ) {
        let mut model = Model::default();
        let mut history: Vec<Model> = vec![model.clone()];
        let mut writer = writer();
        let mut verdicts = verdicts.into_iter().cycle();
        let mut new_leader = new_leader.into_iter().cycle();
        let mut sent: HashMap<u128, (u64, WriteOp)> = HashMap::new();
        let mut named: HashMap<u32, (u128, u64)> = HashMap::new();
        let mut applied: HashMap<(u128, u64), u32> = HashMap::new();
        for (to, (client, counter, staleness, resend, cut)) in steps.into_iter().enumerate() {
            let to = to as u32;
            let (seq, op) = match sent.get(&client) {
                Some((seq, op)) if resend => (*seq, op.clone()),
                other => {
                    let seq = other.map_or(1, |(seq, _)| seq + 1);
                    // What the caller read, a while ago.
                    let seen = &history[history.len().saturating_sub(1 + staleness)];
                    let key = vec![b'c', counter];
                    let value = seen.data.get(&key).cloned();
                    let next = value.as_ref().map_or(0, |v| u64::from_be_bytes(v[..].try_into().unwrap())) + 1;
                    let op = WriteOp::Transaction {
                        reads: vec![ReadCheck::Key { key: key.clone(), value }],
                        writes: vec![
                            BatchOp::Put { key, value: next.to_be_bytes().to_vec() },
                            BatchOp::Put { key: format!("log {client} {seq} {counter}").into_bytes(), value: Vec::new() },
                        ],
                    };
                    (seq, op)
                }
            };
            sent.insert(client, (seq, op.clone()));
            named.insert(to, (client, seq));
            writer.write(to, stamp(client, seq), op);
            if !cut {
                continue;
            }
            writer.cut(NOW);
            while let Some(output) = writer.poll_output() {
                let input = match output {
                    WriterOutput::Commit(batch) => {
                        let verdict = verdicts.next().unwrap_or(2);
                        let result = match verdict {
                            0 => CommitResult::Failed(ErrorCode::Backend("injected".into())),
                            1 => CommitResult::Refused(ErrorCode::StoreReadOnly),
                            3 => CommitResult::Unsettled("lost".into()),
                            // Another host changed what a transaction read.
                            5 => CommitResult::Stale,
                            _ => {
                                let landed = model.commit(&batch);
                                prop_assert!(landed.is_ok(), "{:?}", landed);
                                for op in &batch.ops {
                                    let WriteOp::Transaction { writes, .. } = op else { unreachable!() };
                                    let BatchOp::Put { key, .. } = &writes[1] else { unreachable!() };
                                    let log = String::from_utf8(key.clone()).unwrap();
                                    let mut words = log.split(' ').skip(1);
                                    let client: u128 = words.next().unwrap().parse().unwrap();
                                    let seq: u64 = words.next().unwrap().parse().unwrap();
                                    *applied.entry((client, seq)).or_default() += 1;
                                }
                                history.push(model.clone());
                                if verdict == 4 {
                                    CommitResult::Unsettled("lost".into())
                                } else {
                                    CommitResult::Committed
                                }
                            }
                        };
                        WriterInput::Committed(result)
                    }
                    WriterOutput::Reply { to, result } => {
                        let name = named.remove(&to);
                        prop_assert!(name.is_some(), "write {} answered twice", to);
                        let times = applied.get(&name.unwrap()).copied().unwrap_or(0);
                        match result {
                            Ok(Response::Written) => prop_assert_eq!(times, 1, "acknowledged {:?}", name),
                            Err(ErrorCode::OutcomeUnknown(_)) => {}
                            Ok(Response::Conflict { .. }) | Err(_) => {
                                prop_assert_eq!(times, 0, "refused {:?} yet applied", name)
                            }
                            Ok(other) => prop_assert!(false, "answered {:?}", other),
                        }
                        continue;
                    }
                    other => model.answer(other),
                };
                writer.handle_input(NOW, input);
            }
            if writer.is_idle() && new_leader.next().unwrap_or(false) {
                // The leader dies: what it had not answered is re-sent to the next one.
                writer = support::new_writer(WriterConfig::default(), NOW);
                named.clear();
            }
        }
        prop_assert!(applied.values().all(|times| *times == 1), "{:?}", applied);
        for counter in 0..2u8 {
            let increments = model.data.keys().filter(|key| key.starts_with(b"log ") && key.ends_with(&[b' ', b'0' + counter])).count() as u64;
            let value = model.data.get(&vec![b'c', counter]).map_or(0, |v| u64::from_be_bytes(v[..].try_into().unwrap()));
            prop_assert_eq!(value, increments, "counter {}", counter);
        }
    }
}

/// A transaction counts its writes and, for the compares a shared store makes at commit,
/// one per key read, one per range read and one per entry seen in a range.
#[test]
fn a_transaction_costs_its_writes_and_a_compare_per_read_and_range_entry() {
    let key = |k: &str| ReadCheck::Key {
        key: bytes(k),
        value: None,
    };
    let seen = |k: &str| Entry {
        key: bytes(k),
        value: Vec::new(),
    };
    let txn = WriteOp::Transaction {
        reads: vec![
            key("a"),
            key("b"),
            ReadCheck::Range {
                range: KeyRange::all(),
                entries: vec![seen("x"), seen("y"), seen("z")],
            },
        ],
        writes: vec![
            BatchOp::Del { key: bytes("a") },
            BatchOp::Del { key: bytes("b") },
        ],
    };
    assert_eq!(party_proto::group_cost(&txn), 2 + 2 + 4);
    let empty_scan = WriteOp::Transaction {
        reads: vec![ReadCheck::Range {
            range: KeyRange::all(),
            entries: Vec::new(),
        }],
        writes: Vec::new(),
    };
    assert_eq!(party_proto::group_cost(&empty_scan), 1);
}

/// A transaction that read nothing (blind writes through the transaction API) applies
/// without any read of the store.
#[test]
fn a_transaction_that_read_nothing_applies_without_a_read() {
    let mut model = Model::default();
    let mut writer = writer();
    writer.write(
        1,
        stamp(1, 1),
        WriteOp::Transaction {
            reads: Vec::new(),
            writes: vec![BatchOp::Put {
                key: bytes("k"),
                value: bytes("v"),
            }],
        },
    );
    writer.cut(NOW);
    let (_, answers) = run_reading(&mut writer, &mut model, |_, reads| {
        panic!("nothing to read, asked for {reads:?}")
    });
    assert_eq!(answers, [(1, Ok(Response::Written))]);
    assert_eq!(model.data[&bytes("k")], bytes("v"));
}

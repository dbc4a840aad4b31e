//! The leader's writer: groups, their dedup records, failed and refused groups, re-sent
//! writes, checkpoints. A model store applies each commit; every write must be answered
//! once, acknowledged writes applied exactly once, failed ones not at all.

use std::collections::HashMap;
use std::time::Duration;

use party_proto::wire::{Response, WriteOp};
use party_proto::{
    ClientId, CommitResult, DedupTable, ErrorCode, Timestamp, WriteBatch, WriteSeq, WriteStamp,
    Writer, WriterConfig, WriterInput, WriterOutput,
};
use proptest::prelude::*;

const NOW: Timestamp = Timestamp::ZERO;

fn stamp(client: u128, seq: u64) -> WriteStamp {
    WriteStamp {
        client: ClientId(client),
        seq: WriteSeq(seq),
        oldest_pending: WriteSeq(1),
    }
}

fn put(value: u32) -> WriteOp {
    WriteOp::Put {
        key: b"k".to_vec(),
        value: value.to_be_bytes().to_vec(),
    }
}

fn writer() -> Writer<u32> {
    Writer::new(WriterConfig::default(), DedupTable::default())
}

/// A write's destination and its answer.
type Answer = (u32, Result<Response, ErrorCode>);

/// Carries out a writer's outputs with `store` deciding each commit; returns the commits and
/// the replies.
fn carry_out(
    writer: &mut Writer<u32>,
    mut store: impl FnMut(&WriteBatch) -> CommitResult,
) -> (Vec<WriteBatch>, Vec<Answer>) {
    let (mut commits, mut replies) = (Vec::new(), Vec::new());
    while let Some(output) = writer.poll_output() {
        match output {
            WriterOutput::Commit(batch) => {
                let result = store(&batch);
                commits.push(batch);
                writer.handle_input(NOW, WriterInput::Committed(result));
            }
            WriterOutput::Reply { to, result } => replies.push((to, result)),
            WriterOutput::Checkpoint => writer.handle_input(NOW, WriterInput::Checkpointed(true)),
        }
    }
    (commits, replies)
}

#[test]
fn writes_cut_together_commit_as_one_batch_with_their_records() {
    let mut writer = writer();
    for (seq, to) in [(1, 10), (2, 11)] {
        writer.write(to, stamp(1, seq), put(to));
    }
    writer.write(12, stamp(2, 1), put(12));
    writer.cut();
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].ops, [put(10), put(11), put(12)]);
    let mut records = commits[0].records.clone();
    records.sort_by_key(|(client, _)| *client);
    assert_eq!(records.len(), 2, "one record per client, in the same batch");
    assert_eq!(records[0].1.applied_through, WriteSeq(2));
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|(_, r)| r == &Ok(Response::Written)));
    assert!(writer.is_idle());
}

/// A store that commits at most 4 operations at once: the writer cuts its groups between
/// whole writes to fit (one put and its client's record cost 2, a new client 1 more), and
/// every write is answered once, in order.
#[test]
fn groups_are_cut_to_the_stores_limit_between_whole_writes() {
    let config = WriterConfig {
        max_group_ops: Some(4),
        ..WriterConfig::default()
    };
    let mut writer: Writer<u32> = Writer::new(config, DedupTable::default());
    writer.write(10, stamp(1, 1), put(10));
    writer.write(11, stamp(1, 2), put(11));
    writer.write(12, stamp(2, 1), put(12));
    writer.write(13, stamp(2, 2), put(13));
    writer.write(14, stamp(2, 3), put(14));
    writer.cut();
    let (commits, replies) = carry_out(&mut writer, |batch| {
        assert!(batch.ops.len() + batch.records.len() <= 4, "{batch:?}");
        CommitResult::Committed
    });
    let groups: Vec<Vec<WriteOp>> = commits.into_iter().map(|c| c.ops).collect();
    assert_eq!(
        groups,
        [vec![put(10), put(11)], vec![put(12), put(13), put(14)]]
    );
    let answered: Vec<u32> = replies.iter().map(|(to, _)| *to).collect();
    assert_eq!(answered, [10, 11, 12, 13, 14]);
    assert!(writer.is_idle());
}

#[test]
fn a_failed_group_is_retried_one_by_one_and_the_bad_write_fails_alone() {
    let mut writer = writer();
    for to in 0..4 {
        writer.write(to, stamp(1, u64::from(to) + 1), put(to));
    }
    writer.cut();
    let bad = put(2);
    let (commits, replies) = carry_out(&mut writer, |batch| {
        if batch.ops.contains(&bad) {
            CommitResult::Failed(ErrorCode::Backend("bad key".into()))
        } else {
            CommitResult::Committed
        }
    });
    assert_eq!(commits.len(), 5, "the group, then each write alone");
    assert!(commits[1..].iter().all(|batch| batch.ops.len() == 1));
    // Each single commit carries its own record: the retry is admitted afresh.
    assert!(commits[1..].iter().all(|batch| batch.records.len() == 1));
    let answers: HashMap<u32, bool> = replies.iter().map(|(to, r)| (*to, r.is_ok())).collect();
    assert_eq!(
        answers,
        HashMap::from([(0, true), (1, true), (2, false), (3, true)])
    );
    // The failed write may be re-sent, and is then applied.
    writer.write(20, stamp(1, 3), put(2));
    writer.cut();
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert_eq!(commits.len(), 1, "a failed write is not taken as applied");
    assert_eq!(replies, [(20, Ok(Response::Written))]);
}

#[test]
fn a_refused_group_fails_whole_without_a_retry() {
    let mut writer = writer();
    for to in 0..3 {
        writer.write(to, stamp(1, u64::from(to) + 1), put(to));
    }
    writer.cut();
    let full = ErrorCode::StoreFull {
        free: 1,
        reserve: 2,
    };
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Refused(full.clone()));
    assert_eq!(commits.len(), 1);
    assert_eq!(replies.len(), 3);
    assert!(replies.iter().all(|(_, r)| r == &Err(full.clone())));
}

#[test]
fn a_write_re_sent_after_it_was_applied_is_answered_without_a_commit() {
    let mut writer = writer();
    writer.write(1, stamp(1, 1), put(1));
    writer.cut();
    let (commits, _) = carry_out(&mut writer, |_| CommitResult::Committed);
    // A new leader finds the record in the store.
    let mut writer: Writer<u32> = Writer::new(
        WriterConfig::default(),
        DedupTable::from_records(commits[0].records.clone()),
    );
    writer.write(2, stamp(1, 1), put(1));
    writer.write(3, stamp(1, 1), put(1));
    writer.cut();
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert!(commits.is_empty());
    assert_eq!(
        replies,
        [(2, Ok(Response::Written)), (3, Ok(Response::Written))]
    );
}

#[test]
fn a_checkpoint_is_asked_for_once_writes_pause() {
    let mut writer = writer();
    let quiet = WriterConfig::default().quiet_period;
    let start = Timestamp::from_epoch(Duration::from_secs(1));
    writer.write(1, stamp(1, 1), put(1));
    writer.cut();
    let _ = writer.poll_output();
    writer.handle_input(start, WriterInput::Committed(CommitResult::Committed));
    let _ = writer.poll_output();
    assert_eq!(writer.poll_timeout(), Some(start + quiet));
    writer.handle_timeout(start + quiet / 2);
    assert_eq!(writer.poll_output(), None, "not yet quiet");
    writer.handle_timeout(start + quiet);
    assert_eq!(writer.poll_output(), Some(WriterOutput::Checkpoint));
    writer.handle_input(start + quiet, WriterInput::Checkpointed(true));
    assert_eq!(writer.poll_timeout(), None, "nothing written since");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Writes of three clients in sequence order, some re-sent (as after a failover), cut
    /// anywhere, against a store that fails or refuses some commits: every write is
    /// answered exactly once; when acknowledged its content is in exactly one committed
    /// batch, when failed in none; the dedup records ride in the batch with their data.
    #[test]
    fn every_write_answered_once_and_applied_iff_acknowledged(
        steps in prop::collection::vec((0u128..3, any::<bool>(), any::<bool>()), 1..40),
        verdicts in prop::collection::vec(0u8..10, 64),
    ) {
        let mut writer = writer();
        let mut verdicts = verdicts.into_iter().cycle();
        let mut newest: HashMap<u128, u64> = HashMap::new();
        let mut named: HashMap<u32, (u128, u64)> = HashMap::new();
        let mut applied: HashMap<(u128, u64), u32> = HashMap::new();
        let mut answered = 0;
        for (to, (client, resend, cut)) in steps.into_iter().enumerate() {
            let to = to as u32;
            let seq = match newest.get(&client) {
                Some(seq) if resend => *seq,
                other => other.map_or(1, |seq| seq + 1),
            };
            newest.insert(client, seq);
            named.insert(to, (client, seq));
            let op = WriteOp::Put { key: vec![client as u8], value: seq.to_be_bytes().to_vec() };
            writer.write(to, stamp(client, seq), op);
            if !cut {
                continue;
            }
            writer.cut();
            // In output order: a failure answered to one copy of a re-sent write may come
            // before another copy of it is applied.
            while let Some(output) = writer.poll_output() {
                match output {
                    WriterOutput::Commit(batch) => {
                        let result = match verdicts.next().unwrap_or(2) {
                            0 => CommitResult::Failed(ErrorCode::Backend("injected".into())),
                            1 => CommitResult::Refused(ErrorCode::StoreReadOnly),
                            _ => {
                                let clients: std::collections::HashSet<_> =
                                    batch.records.iter().map(|(client, _)| client.0).collect();
                                for op in &batch.ops {
                                    let WriteOp::Put { key, value } = op else { unreachable!() };
                                    let seq = u64::from_be_bytes(value[..].try_into().unwrap());
                                    let client = u128::from(key[0]);
                                    prop_assert!(clients.contains(&client), "data without its record");
                                    *applied.entry((client, seq)).or_default() += 1;
                                }
                                CommitResult::Committed
                            }
                        };
                        writer.handle_input(NOW, WriterInput::Committed(result));
                    }
                    WriterOutput::Reply { to, result } => {
                        answered += 1;
                        let name = named.remove(&to);
                        prop_assert!(name.is_some(), "write {} answered twice", to);
                        let times = applied.get(&name.unwrap()).copied().unwrap_or(0);
                        match result {
                            Ok(_) => prop_assert_eq!(times, 1, "acknowledged {:?}", name),
                            Err(_) => prop_assert_eq!(times, 0, "failed {:?} yet applied", name),
                        }
                    }
                    WriterOutput::Checkpoint => {
                        writer.handle_input(NOW, WriterInput::Checkpointed(true));
                    }
                }
            }
        }
        prop_assert!(applied.values().all(|times| *times == 1), "{:?}", applied);
        writer.cut();
        let (_, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
        for (to, _) in replies {
            answered += 1;
            named.remove(&to);
        }
        prop_assert!(named.is_empty(), "never answered: {:?} ({} answered)", named, answered);
    }
}

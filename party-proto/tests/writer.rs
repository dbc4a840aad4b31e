//! The leader's writer: groups, their dedup records, failed and refused groups, re-sent
//! writes, checkpoints. A model store applies each commit; every write must be answered
//! once, acknowledged writes applied exactly once, failed ones not at all.

use std::collections::HashMap;
use std::time::Duration;

use party_proto::wire::{Response, WriteOp};
use party_proto::{
    ClientId, CommitResult, CommitSeq, ErrorCode, LogEnds, LogSpan, Timestamp, WriteBatch,
    WriteSeq, Writer, WriterConfig, WriterInput, WriterOutput,
};
use proptest::prelude::*;

mod support;
use support::stamp;

const NOW: Timestamp = Timestamp::ZERO;

fn put(value: u32) -> WriteOp {
    WriteOp::Put {
        key: b"k".to_vec(),
        value: value.to_be_bytes().to_vec(),
    }
}

fn writer() -> Writer<u32> {
    support::new_writer(WriterConfig::default(), NOW)
}

/// A writer that took client 1's first write and asked for its record.
fn loading_the_records_of_a_first_write() -> Writer<u32> {
    let mut writer = writer();
    writer.write(1, stamp(1, 1), put(1));
    writer.cut(NOW);
    assert!(matches!(
        writer.poll_output(),
        Some(WriterOutput::LoadRecords(_))
    ));
    writer
}

/// A write's destination and its answer.
type Answer = (u32, Result<Response, ErrorCode>);

/// The answer of a store that holds no dedup record of `clients`.
fn no_records(clients: Vec<ClientId>) -> WriterInput {
    WriterInput::RecordsLoaded(Ok(clients.into_iter().map(|c| (c, None)).collect()))
}

/// The ends of a model change log.
fn log_ends(log: &std::collections::BTreeMap<u64, Vec<u8>>) -> Option<LogEnds> {
    let span = |(seq, entry): (&u64, &Vec<u8>)| LogSpan::of(CommitSeq(*seq), entry).unwrap();
    Some(LogEnds {
        first: span(log.first_key_value()?),
        last: span(log.last_key_value()?),
    })
}

/// Carries out a writer's outputs with `store` deciding each commit (and holding no record
/// from before); returns the commits and the replies.
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
            WriterOutput::LoadRecords(clients) => writer.handle_input(NOW, no_records(clients)),
            WriterOutput::ExpireRecords { .. } => {
                writer.handle_input(NOW, WriterInput::RecordsExpired(Ok(None)))
            }
            WriterOutput::ReadChecks(_) => unreachable!("no transactions here"),
            // These tests do not look at the numbers.
            WriterOutput::LoadLogEnds => {
                writer.handle_input(NOW, WriterInput::LogEndsLoaded(Ok(None)))
            }
            WriterOutput::TrimLog { .. } => {
                writer.handle_input(NOW, WriterInput::LogTrimmed(Ok(())))
            }
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
    writer.cut(NOW);
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

/// Two writers given the same writes commit the same batches, their records in the same
/// order too: a recording's replay runs the machine again in another process and compares
/// what it commits. (With a map seeded at random per process, eight clients' records came
/// in another order nearly every time.)
#[test]
fn two_writers_given_the_same_writes_commit_the_same_batches() {
    let commits = || {
        let mut writer = writer();
        for client in 1..=8 {
            writer.write(client, stamp(u128::from(client), 1), put(client));
        }
        writer.cut(NOW);
        carry_out(&mut writer, |_| CommitResult::Committed).0
    };
    let first = commits();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].records.len(), 8);
    assert_eq!(first, commits());
}

/// A write that reaches the writer longer than the resend window (half the retention)
/// after its client first sent it is not applied: a leader stalled with it may have let its
/// record expire meanwhile. It is answered with an unknown outcome; the writes around it
/// land.
#[test]
fn a_write_first_sent_longer_ago_than_the_resend_window_is_not_applied() {
    let retention = Duration::from_secs(60);
    let config = WriterConfig {
        dedup_retention: retention,
        ..WriterConfig::default()
    };
    let mut writer: Writer<u32> = support::new_writer(config, NOW);
    let wall = Duration::from_secs(1_000_000);
    writer.set_wall_clock(NOW, wall);
    let now_ms = wall.as_millis() as u64;
    let sent_at = |ms_ago: u64, client: u128, seq: u64| party_proto::WriteStamp {
        first_sent_ms: now_ms - ms_ago,
        ..stamp(client, seq)
    };
    writer.write(10, sent_at(29_999, 1, 1), put(10));
    writer.write(11, sent_at(30_000, 2, 1), put(11));
    writer.write(12, sent_at(0, 2, 2), put(12));
    writer.cut(NOW);
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    let applied: Vec<WriteOp> = commits.into_iter().flat_map(|c| c.ops).collect();
    assert_eq!(applied, [put(10), put(12)]);
    assert_eq!(replies.len(), 3);
    for (to, reply) in replies {
        match to {
            11 => assert!(
                matches!(reply, Err(ErrorCode::OutcomeUnknown(_))),
                "{reply:?}"
            ),
            _ => assert_eq!(reply, Ok(Response::Written)),
        }
    }
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
    let mut writer: Writer<u32> = support::new_writer(config, NOW);
    writer.write(10, stamp(1, 1), put(10));
    writer.write(11, stamp(1, 2), put(11));
    writer.write(12, stamp(2, 1), put(12));
    writer.write(13, stamp(2, 2), put(13));
    writer.write(14, stamp(2, 3), put(14));
    writer.cut(NOW);
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
    writer.cut(NOW);
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
    // The failed write may be re-sent (its answer lost): it is not taken as applied, nor
    // applied after the later write of its client that landed.
    writer.write(20, stamp(1, 3), put(2));
    writer.cut(NOW);
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert!(commits.is_empty(), "{commits:?}");
    assert_eq!(replies, [(20, Err(ErrorCode::FailedBefore))]);
}

#[test]
fn a_refused_group_fails_whole_without_a_retry() {
    let mut writer = writer();
    for to in 0..3 {
        writer.write(to, stamp(1, u64::from(to) + 1), put(to));
    }
    writer.cut(NOW);
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
    writer.cut(NOW);
    let (commits, _) = carry_out(&mut writer, |_| CommitResult::Committed);
    // A new leader asks for the client's record, and finds it in the store.
    let mut writer: Writer<u32> = support::new_writer(WriterConfig::default(), NOW);
    writer.write(2, stamp(1, 1), put(1));
    writer.write(3, stamp(1, 1), put(1));
    writer.cut(NOW);
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::LoadRecords(vec![ClientId(1)]))
    );
    let stored = commits[0].records[0].clone();
    writer.handle_input(
        NOW,
        WriterInput::RecordsLoaded(Ok(vec![(stored.0, Some(stored.1))])),
    );
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
    writer.cut(NOW);
    let load = writer.poll_output();
    assert_eq!(load, Some(WriterOutput::LoadRecords(vec![ClientId(1)])));
    writer.handle_input(NOW, no_records(vec![ClientId(1)]));
    let _ = writer.poll_output();
    writer.handle_input(start, WriterInput::Committed(CommitResult::Committed));
    let _ = writer.poll_output();
    assert_eq!(writer.poll_timeout(), Some(start + quiet));
    writer.handle_timeout(start + quiet / 2);
    assert_eq!(writer.poll_output(), None, "not yet quiet");
    writer.handle_timeout(start + quiet);
    assert_eq!(writer.poll_output(), Some(WriterOutput::Checkpoint));
    writer.handle_input(start + quiet, WriterInput::Checkpointed(true));
    let first_sweep = Timestamp::ZERO + Duration::from_secs(3600);
    assert_eq!(
        writer.poll_timeout(),
        Some(first_sweep),
        "nothing written since"
    );
}

/// What the store replayed when it opened is as unsaved as a commit: a new writer asks for
/// one checkpoint a quiet period after it takes over, written to or not, so that a leader
/// killed before its checkpoint does not leave every later leader to replay it again.
#[test]
fn a_new_writer_checkpoints_once_a_quiet_period_after_it_takes_over() {
    let quiet = WriterConfig::default().quiet_period;
    let took_over = Timestamp::from_epoch(Duration::from_secs(5));
    let mut writer: Writer<u32> = support::new_writer(WriterConfig::default(), took_over);
    assert_eq!(writer.poll_timeout(), Some(took_over + quiet));
    writer.handle_timeout(took_over + quiet / 2);
    assert_eq!(writer.poll_output(), None, "not yet quiet");
    writer.handle_timeout(took_over + quiet);
    assert_eq!(writer.poll_output(), Some(WriterOutput::Checkpoint));
    writer.handle_input(took_over + quiet, WriterInput::Checkpointed(true));
    assert!(
        writer.poll_timeout() > Some(took_over + quiet * 100),
        "once: nothing written since"
    );
}

/// Sweeps of expired records, due every retention / 8 however idle the store, do not put
/// off a new writer's checkpoint, even when they come more often than its quiet period.
#[test]
fn sweeps_of_expired_records_do_not_put_the_checkpoint_off() {
    let config = WriterConfig {
        dedup_retention: Duration::from_millis(80),
        ..WriterConfig::default()
    };
    let quiet = config.quiet_period;
    let mut writer: Writer<u32> = support::new_writer(config, NOW);
    let mut sweeps = 0;
    let checkpointed_at = loop {
        let now = writer
            .poll_timeout()
            .expect("a sweep or the checkpoint is due");
        assert!(
            now <= NOW + quiet,
            "no checkpoint a quiet period after the takeover"
        );
        writer.handle_timeout(now);
        match writer.poll_output() {
            Some(WriterOutput::ExpireRecords { .. }) => {
                sweeps += 1;
                writer.handle_input(now, WriterInput::RecordsExpired(Ok(None)));
            }
            other => {
                assert_eq!(other, Some(WriterOutput::Checkpoint));
                break now;
            }
        }
    };
    assert!(sweeps >= 5, "{sweeps} sweeps in the quiet period");
    assert_eq!(checkpointed_at, NOW + quiet);
}

/// A commit whose outcome is unknown may have landed: the store is checkpointed once quiet.
#[test]
fn a_commit_that_may_have_landed_is_checkpointed() {
    let quiet = WriterConfig::default().quiet_period;
    let mut writer = writer();
    writer.handle_timeout(NOW + quiet);
    assert_eq!(writer.poll_output(), Some(WriterOutput::Checkpoint));
    writer.handle_input(NOW + quiet, WriterInput::Checkpointed(true));
    let unsure_at = NOW + quiet * 2;
    writer.write(1, stamp(1, 1), put(1));
    writer.cut(unsure_at);
    while let Some(output) = writer.poll_output() {
        let input = match output {
            WriterOutput::LoadRecords(clients) => no_records(clients),
            WriterOutput::Commit(_) => {
                WriterInput::Committed(CommitResult::Unsettled("answer lost".into()))
            }
            WriterOutput::LoadLogEnds => WriterInput::LogEndsLoaded(Ok(None)),
            WriterOutput::Reply { result, .. } => {
                assert!(matches!(result, Err(ErrorCode::OutcomeUnknown(_))));
                continue;
            }
            other => panic!("unexpected {other:?}"),
        };
        writer.handle_input(unsure_at, input);
    }
    assert_eq!(writer.poll_timeout(), Some(unsure_at + quiet));
    writer.handle_timeout(unsure_at + quiet);
    assert_eq!(writer.poll_output(), Some(WriterOutput::Checkpoint));
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
        verdicts in prop::collection::vec(0u8..12, 64),
    ) {
        let mut writer = writer();
        let mut verdicts = verdicts.into_iter().cycle();
        let mut newest: HashMap<u128, u64> = HashMap::new();
        let mut named: HashMap<u32, (u128, u64)> = HashMap::new();
        let mut applied: HashMap<(u128, u64), u32> = HashMap::new();
        let mut stored: HashMap<ClientId, party_proto::DedupRecord> = HashMap::new();
        let mut log: std::collections::BTreeMap<u64, Vec<u8>> = Default::default();
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
            writer.cut(NOW);
            // In output order: a failure answered to one copy of a re-sent write may come
            // before another copy of it is applied.
            while let Some(output) = writer.poll_output() {
                match output {
                    WriterOutput::Commit(batch) => {
                        let verdict = verdicts.next().unwrap_or(2);
                        let result = match verdict {
                            0 => CommitResult::Failed(ErrorCode::Backend("injected".into())),
                            1 => CommitResult::Refused(ErrorCode::StoreReadOnly),
                            // The answer lost, the batch landed or not.
                            3 => CommitResult::Unsettled("lost".into()),
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
                                stored.extend(batch.records.iter().cloned());
                                // Every landed group takes the next number, never one taken.
                                let append = batch.log.clone().expect("every group is logged");
                                let last = log.keys().next_back().copied().unwrap_or(0);
                                prop_assert_eq!(append.seq.0, last + 1, "numbered past a gap or twice");
                                let changes = party_proto::feed::decode_entry(&append.entry).unwrap().unwrap();
                                prop_assert_eq!(changes.len(), batch.ops.len());
                                log.insert(append.seq.0, append.entry);
                                if verdict == 4 {
                                    CommitResult::Unsettled("lost".into())
                                } else {
                                    CommitResult::Committed
                                }
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
                            Err(ErrorCode::OutcomeUnknown(_)) => {}
                            Err(_) => prop_assert_eq!(times, 0, "failed {:?} yet applied", name),
                        }
                    }
                    WriterOutput::Checkpoint => {
                        writer.handle_input(NOW, WriterInput::Checkpointed(true));
                    }
                    // Some loads fail.
                    WriterOutput::LoadRecords(clients) => {
                        let loaded = match verdicts.next().unwrap_or(2) {
                            0 => Err(ErrorCode::StoreReadOnly),
                            _ => Ok(clients
                                .into_iter()
                                .map(|client| (client, stored.get(&client).cloned()))
                                .collect()),
                        };
                        writer.handle_input(NOW, WriterInput::RecordsLoaded(loaded));
                    }
                    WriterOutput::ExpireRecords { .. } => {
                        writer.handle_input(NOW, WriterInput::RecordsExpired(Ok(None)));
                    }
                    WriterOutput::ReadChecks(_) => unreachable!("no transactions here"),
                    // Some reads of the log's end fail too.
                    WriterOutput::LoadLogEnds => {
                        let ends = match verdicts.next().unwrap_or(2) {
                            0 => Err(ErrorCode::Backend("unreachable".into())),
                            _ => Ok(log_ends(&log)),
                        };
                        writer.handle_input(NOW, WriterInput::LogEndsLoaded(ends));
                    }
                    WriterOutput::TrimLog { .. } => unreachable!("the log stays small"),
                }
            }
        }
        prop_assert!(applied.values().all(|times| *times == 1), "{:?}", applied);
        writer.cut(NOW);
        let (_, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
        for (to, _) in replies {
            answered += 1;
            named.remove(&to);
        }
        prop_assert!(named.is_empty(), "never answered: {:?} ({} answered)", named, answered);
    }
}

/// Records are swept a page at a time, an eighth of the retention apart, only between
/// groups; a sweep forgets in memory the clients it expires, whose next write has their
/// record read again.
#[test]
fn expired_records_are_swept_page_by_page_between_groups() {
    let config = WriterConfig {
        dedup_retention: Duration::from_millis(800),
        wall_clock_at_epoch: Duration::from_secs(1_000),
        ..WriterConfig::default()
    };
    let at = |ms| Timestamp::from_epoch(Duration::from_millis(ms));
    let mut writer: Writer<u32> = support::new_writer(config, NOW);
    writer.write(1, stamp(1, 1), put(1));
    writer.cut(NOW);
    carry_out(&mut writer, |batch| {
        assert_eq!(
            batch.records[0].1.last_write_ms, 1_000_000,
            "the wall clock"
        );
        CommitResult::Committed
    });
    assert_eq!(writer.known_clients(), 1);

    // A write out when the sweep is due: the sweep waits for it.
    writer.write(2, stamp(1, 2), put(2));
    writer.cut(at(50));
    assert!(matches!(
        writer.poll_output(),
        Some(WriterOutput::Commit(_))
    ));
    writer.handle_timeout(at(100));
    assert_eq!(writer.poll_output(), None);
    writer.handle_input(at(100), WriterInput::Committed(CommitResult::Committed));
    assert!(matches!(
        writer.poll_output(),
        Some(WriterOutput::Reply { to: 2, .. })
    ));
    writer.handle_input(at(150), WriterInput::Checkpointed(true));

    writer.handle_timeout(at(150));
    let first_page = WriterOutput::ExpireRecords {
        written_before_ms: 1_000_150 - 800,
        after: None,
        max: party_proto::EXPIRY_PAGE,
    };
    assert_eq!(writer.poll_output(), Some(first_page));
    assert!(!writer.is_idle(), "a page is out");
    assert_eq!(writer.known_clients(), 1, "client 1 wrote after the cutoff");
    writer.handle_input(at(151), WriterInput::RecordsExpired(Ok(Some(ClientId(9)))));
    assert_eq!(
        writer.poll_timeout(),
        Some(at(151)),
        "the next page at once"
    );
    writer.handle_timeout(at(151));
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::ExpireRecords {
            written_before_ms: 1_000_150 - 800,
            after: Some(ClientId(9)),
            max: party_proto::EXPIRY_PAGE,
        })
    );
    writer.handle_input(at(152), WriterInput::RecordsExpired(Ok(None)));
    assert_eq!(
        writer.poll_timeout(),
        Some(at(252)),
        "done: the next sweep later"
    );

    // Long after client 1's last write (at 1 000 050 ms, wall): the next sweep forgets it,
    // and its next write has its record read again.
    writer.handle_timeout(at(2_000));
    assert!(matches!(
        writer.poll_output(),
        Some(WriterOutput::ExpireRecords {
            written_before_ms: 1_001_200,
            ..
        })
    ));
    assert_eq!(writer.known_clients(), 0);
    writer.handle_input(
        at(2_000),
        WriterInput::RecordsExpired(Err(ErrorCode::StoreReadOnly)),
    );
    assert_eq!(
        writer.poll_timeout(),
        Some(at(2_100)),
        "a failed sweep starts over later"
    );
    writer.write(3, stamp(1, 3), put(3));
    writer.cut(at(2_000));
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::LoadRecords(vec![ClientId(1)]))
    );
}

/// Without its client's record a write cannot be admitted, nor said to have failed (it
/// may be a re-send of one applied before): when the store cannot read the records, the
/// writes of unknown clients end with OutcomeUnknown, and those of known clients go on.
#[test]
fn writes_whose_records_cannot_be_read_end_unknown_and_the_others_go_on() {
    let mut writer = writer();
    writer.write(1, stamp(3, 1), put(1));
    writer.cut(NOW);
    carry_out(&mut writer, |_| CommitResult::Committed);
    writer.write(2, stamp(1, 1), put(2));
    writer.write(3, stamp(3, 2), put(3));
    writer.write(4, stamp(2, 1), put(4));
    writer.cut(NOW);
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::LoadRecords(vec![ClientId(1), ClientId(2)]))
    );
    writer.handle_input(
        NOW,
        WriterInput::RecordsLoaded(Err(ErrorCode::Backend("unreachable".into()))),
    );
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    let unknown = Err(ErrorCode::OutcomeUnknown(
        "backend error: unreachable".into(),
    ));
    assert_eq!(
        replies,
        [
            (2, unknown.clone()),
            (4, unknown),
            (3, Ok(Response::Written))
        ]
    );
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].ops, [put(3)]);
}

/// A commit whose outcome the store cannot tell fails its writes with OutcomeUnknown and
/// makes the writer read the change log's end again at once (the group may have taken its
/// number, and subscriptions wait for it), and its clients' records before their next
/// writes: a re-send of a write that did land is then answered from the record, not
/// applied twice.
#[test]
fn after_an_unsettled_commit_the_records_are_read_again() {
    let mut writer = loading_the_records_of_a_first_write();
    writer.handle_input(NOW, no_records(vec![ClientId(1)]));
    let Some(WriterOutput::Commit(batch)) = writer.poll_output() else {
        panic!("a commit");
    };
    let mut landed = batch.records.clone();
    let unsettled = CommitResult::Unsettled("the answer was lost".into());
    writer.handle_input(NOW, WriterInput::Committed(unsettled));
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::Reply {
            to: 1,
            result: Err(ErrorCode::OutcomeUnknown("the answer was lost".into()))
        })
    );
    assert_eq!(writer.last_committed(), None, "the number is not known now");
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::LoadLogEnds),
        "the log's end is read again without waiting for a write"
    );
    writer.handle_input(NOW, WriterInput::LogEndsLoaded(Ok(None)));
    writer.write(2, stamp(1, 1), put(1));
    writer.cut(NOW);
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::LoadRecords(vec![ClientId(1)])),
        "the client is read again"
    );
    let (client, record) = landed.remove(0);
    writer.handle_input(
        NOW,
        WriterInput::RecordsLoaded(Ok(vec![(client, Some(record))])),
    );
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert!(commits.is_empty(), "it landed: not applied again");
    assert_eq!(replies, [(2, Ok(Response::Written))]);
}

/// A commit refused as stale (a store shared by several hosts changed under it) may have
/// lost the log's next number to another host's writer: the writer reads the log's end
/// again before its writes are tried again, and they take the number after the other's.
#[test]
fn after_a_stale_commit_the_logs_end_is_read_again() {
    let mut writer = loading_the_records_of_a_first_write();
    writer.handle_input(NOW, no_records(vec![ClientId(1)]));
    let Some(WriterOutput::Commit(batch)) = writer.poll_output() else {
        panic!("a commit");
    };
    let taken = batch.log.expect("a group takes a number").seq;
    writer.handle_input(NOW, WriterInput::Committed(CommitResult::Stale));
    assert_eq!(writer.last_committed(), None, "the number is not known now");
    assert_eq!(writer.poll_output(), Some(WriterOutput::LoadLogEnds));
    // Another host's writer committed under that number.
    let theirs = LogSpan {
        seq: taken,
        bytes_before: 0,
        bytes_through: 10,
    };
    let ends = LogEnds {
        first: theirs,
        last: theirs,
    };
    writer.handle_input(NOW, WriterInput::LogEndsLoaded(Ok(Some(ends))));
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    let numbers: Vec<_> = commits
        .iter()
        .map(|batch| batch.log.as_ref().unwrap().seq)
        .collect();
    assert_eq!(numbers, [taken.next()]);
    assert_eq!(replies, [(1, Ok(Response::Written))]);
}

/// Records that cannot be read end unknown only the writes of the group that needed them:
/// a write queued behind its cut, for the next group, waits for that group (whose records
/// are read then) and lands.
#[test]
fn a_failed_read_of_records_fails_only_the_closed_group() {
    let mut writer = loading_the_records_of_a_first_write();
    writer.write(2, stamp(2, 1), put(2));
    writer.cut(NOW);
    let unreadable = WriterInput::RecordsLoaded(Err(ErrorCode::StoreReadOnly));
    writer.handle_input(NOW, unreadable);
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert!(
        matches!(
            &replies[..],
            [
                (1, Err(ErrorCode::OutcomeUnknown(_))),
                (2, Ok(Response::Written))
            ]
        ),
        "{replies:?}"
    );
    assert_eq!(commits.len(), 1);
}

/// A read of the log's end that failed is tried again a quiet period later, not at once: a
/// store that fails every read would otherwise be asked again as fast as it answers.
#[test]
fn a_failed_read_of_the_logs_end_waits_before_it_is_tried_again() {
    let config = WriterConfig::default();
    let mut writer: Writer<u32> = Writer::new(config.clone(), NOW);
    assert_eq!(writer.poll_output(), Some(WriterOutput::LoadLogEnds));
    let unreadable = WriterInput::LogEndsLoaded(Err(ErrorCode::StoreReadOnly));
    writer.handle_input(NOW, unreadable);
    assert_eq!(writer.poll_output(), None, "not at once");
    let again = NOW + config.quiet_period;
    assert_eq!(writer.poll_timeout(), Some(again));
    writer.handle_timeout(again);
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::Checkpoint),
        "what the store replayed at the takeover is saved first"
    );
    writer.handle_input(again, WriterInput::Checkpointed(true));
    assert_eq!(writer.poll_output(), Some(WriterOutput::LoadLogEnds));
}

/// A write answered with an unknown outcome because its client's record could not be read
/// is remembered as such: once the record is read, a later write of the client does not
/// cover it; re-sent (its answer lost) before a later write landed, it is applied, and
/// after one, it is answered `FailedBefore` (applied, it would land after that one).
#[test]
fn a_write_ended_unknown_before_admission_is_not_taken_as_applied_when_re_sent() {
    let ended_unknown = || {
        let mut writer = loading_the_records_of_a_first_write();
        writer.handle_input(
            NOW,
            WriterInput::RecordsLoaded(Err(ErrorCode::StoreReadOnly)),
        );
        assert!(matches!(
            writer.poll_output(),
            Some(WriterOutput::Reply {
                to: 1,
                result: Err(ErrorCode::OutcomeUnknown(_))
            })
        ));
        writer
    };
    let mut writer = ended_unknown();
    writer.write(3, stamp(1, 1), put(1));
    writer.cut(NOW);
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert_eq!(commits.len(), 1, "not taken as applied");
    assert_eq!(commits[0].ops, [put(1)]);
    assert_eq!(replies, [(3, Ok(Response::Written))]);

    let mut writer = ended_unknown();
    writer.write(2, stamp(1, 2), put(2));
    writer.cut(NOW);
    carry_out(&mut writer, |_| CommitResult::Committed);
    writer.write(3, stamp(1, 1), put(1));
    writer.cut(NOW);
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    assert!(commits.is_empty(), "not taken as applied, nor applied late");
    assert_eq!(replies, [(3, Err(ErrorCode::FailedBefore))]);
}

/// The records' times follow the wall clock the driver last told: a leader whose monotonic
/// clock stood still while the machine slept dates its records by the wall clock anyway.
#[test]
fn records_are_dated_by_the_wall_clock_last_told() {
    let mut writer: Writer<u32> = support::new_writer(WriterConfig::default(), NOW);
    let at = |secs| Timestamp::from_epoch(Duration::from_secs(secs));
    // The machine slept: ten seconds of monotonic time, a day and ten seconds of wall time.
    writer.set_wall_clock(at(10), Duration::from_secs(86_410));
    writer.write(1, stamp(1, 1), put(1));
    writer.cut(at(12));
    let mut dated = None;
    while let Some(output) = writer.poll_output() {
        match output {
            WriterOutput::LoadRecords(clients) => {
                writer.handle_input(at(12), no_records(clients));
            }
            WriterOutput::Commit(batch) => {
                dated = Some(batch.records[0].1.last_write_ms);
                writer.handle_input(at(12), WriterInput::Committed(CommitResult::Committed));
            }
            _ => {}
        }
    }
    assert_eq!(dated, Some(86_412_000), "the wall clock two seconds later");
}

/// The limit counts every operation of a group: a two-key batch and its record (3), then a
/// put (4) fit a store of 4; the next put starts the next group.
#[test]
fn a_group_is_cut_where_its_operations_would_pass_the_limit() {
    let config = WriterConfig {
        max_group_ops: Some(4),
        ..WriterConfig::default()
    };
    let mut writer: Writer<u32> = support::new_writer(config, NOW);
    let pair = WriteOp::Batch {
        ops: vec![
            party_proto::wire::BatchOp::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
            },
            party_proto::wire::BatchOp::Put {
                key: b"b".to_vec(),
                value: b"1".to_vec(),
            },
        ],
    };
    writer.write(1, stamp(1, 1), pair.clone());
    writer.write(2, stamp(1, 2), put(2));
    writer.write(3, stamp(1, 3), put(3));
    writer.cut(NOW);
    let (commits, replies) = carry_out(&mut writer, |_| CommitResult::Committed);
    let groups: Vec<Vec<WriteOp>> = commits.into_iter().map(|c| c.ops).collect();
    assert_eq!(groups, [vec![pair, put(2)], vec![put(3)]]);
    assert_eq!(replies.len(), 3);
}

/// A writer numbers its groups on from the stored log's end, and appends each group's
/// entry after the log's bytes so far; once the log is an eighth past its retention it
/// trims the oldest entries, a page at a time, down to the retention and no further, and
/// never the newest entry, however large.
#[test]
fn the_change_log_is_numbered_on_from_its_end_and_trimmed_past_its_retention() {
    use party_proto::feed::decode_entry;
    use party_proto::{Change, ChangeRetention};
    let config = WriterConfig {
        change_retention: ChangeRetention {
            groups: 8,
            bytes: 1 << 20,
        },
        ..WriterConfig::default()
    };
    let mut writer: Writer<u32> = Writer::new(config.clone(), NOW);
    assert_eq!(
        writer.last_committed(),
        None,
        "not known before the log is read"
    );
    assert_eq!(writer.poll_output(), Some(WriterOutput::LoadLogEnds));
    let span = |seq, bytes_before| LogSpan {
        seq: CommitSeq(seq),
        bytes_before,
        bytes_through: bytes_before + 10,
    };
    let ends = LogEnds {
        first: span(3, 20),
        last: span(10, 90),
    };
    assert_eq!(writer.oldest_kept(), None);
    writer.handle_input(NOW, WriterInput::LogEndsLoaded(Ok(Some(ends))));
    assert_eq!(writer.last_committed(), Some(CommitSeq(10)));
    assert_eq!(writer.oldest_kept(), Some(CommitSeq(3)));
    let mut bytes_through = 100;
    for (to, seq) in (1..=2).zip(11..) {
        writer.write(to, stamp(1, u64::from(to)), put(to));
        writer.cut(NOW);
        let (commits, _) = carry_out(&mut writer, |_| CommitResult::Committed);
        let append = commits[0].log.clone().unwrap();
        assert_eq!(append.seq, CommitSeq(seq));
        let logged = LogSpan::of(append.seq, &append.entry).unwrap();
        assert_eq!(logged.bytes_before, bytes_through, "appended after the log");
        bytes_through = logged.bytes_through;
        assert_eq!(
            decode_entry(&append.entry).unwrap().unwrap(),
            [Change::Put {
                key: b"k".to_vec(),
                value: to.to_be_bytes().to_vec()
            }]
        );
    }
    assert_eq!(writer.last_committed(), Some(CommitSeq(12)));
    // 3..=12 is ten groups, past 8 + 8/8: due now.
    assert_eq!(writer.poll_timeout(), Some(Timestamp::ZERO));
    writer.handle_timeout(NOW);
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::TrimLog {
            from: CommitSeq(3),
            to: CommitSeq(5)
        }),
        "down to the newest 8"
    );
    assert!(!writer.is_idle(), "no group while a page is out");
    assert_eq!(writer.oldest_kept(), Some(CommitSeq(3)), "not trimmed yet");
    let trimmed_at = NOW + Duration::from_millis(1);
    writer.handle_input(trimmed_at, WriterInput::LogTrimmed(Ok(())));
    assert_eq!(writer.oldest_kept(), Some(CommitSeq(5)));
    assert_eq!(writer.poll_output(), None, "within its retention: done");
    assert_eq!(
        writer.poll_timeout(),
        Some(trimmed_at + config.quiet_period),
        "the page wrote the store: a checkpoint once quiet after it"
    );

    // By bytes: the newest entry stays even when it alone is over the budget.
    let tight = WriterConfig {
        change_retention: ChangeRetention {
            groups: 100,
            bytes: 1,
        },
        ..config
    };
    let mut writer: Writer<u32> = Writer::new(tight, NOW);
    writer.poll_output();
    writer.handle_input(NOW, WriterInput::LogEndsLoaded(Ok(Some(ends))));
    writer.handle_timeout(NOW);
    assert_eq!(
        writer.poll_output(),
        Some(WriterOutput::TrimLog {
            from: CommitSeq(3),
            to: CommitSeq(10)
        }),
        "everything but the newest"
    );
    // A failed page pauses trimming for a while.
    writer.handle_input(NOW, WriterInput::LogTrimmed(Err(ErrorCode::StoreReadOnly)));
    assert_eq!(writer.oldest_kept(), Some(CommitSeq(3)), "nothing trimmed");
    writer.handle_timeout(NOW);
    assert_eq!(writer.poll_output(), None);
    assert!(writer.poll_timeout().is_some_and(|at| at > NOW));
}

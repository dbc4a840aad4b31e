//! Exactly-once writes through the dedup table, with failed batches, lost replies, re-sends
//! and leader crashes: no write is applied twice, no write is acknowledged unless it was
//! applied, and a client's writes are applied in the order it issued them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use party_proto::{Admission, ClientId, DedupRecord, DedupTable, WriteSeq, WriteStamp};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    /// Client `c` issues a new write.
    Write(usize),
    /// Client `c` (re)connects and re-sends every write it has no answer for, in order,
    /// before anything new — as the client session does.
    Resend(usize),
    /// The writer commits the group; the batch succeeds, fails, or its outcome is unknown
    /// (a network store's answer lost: it landed or not); the replies reach the clients or
    /// are lost.
    Commit {
        outcome: Outcome,
        replies_lost: bool,
    },
    /// The leader dies: the group is gone, every client loses its connection, and the next
    /// leader starts with an empty table, learning each client's stored record when its
    /// first write arrives.
    Crash,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Success,
    Failure,
    Unsettled { landed: bool },
}

fn action() -> impl Strategy<Value = Action> {
    let outcome = prop_oneof![
        4 => Just(Outcome::Success),
        2 => Just(Outcome::Failure),
        2 => any::<bool>().prop_map(|landed| Outcome::Unsettled { landed }),
    ];
    prop_oneof![
        4 => (0usize..2).prop_map(Action::Write),
        2 => (0usize..2).prop_map(Action::Resend),
        3 => (outcome, any::<bool>())
            .prop_map(|(outcome, replies_lost)| Action::Commit { outcome, replies_lost }),
        1 => Just(Action::Crash),
    ]
}

/// Client `client`'s write `seq`, re-sending nothing below `oldest`.
fn stamp_of(client: u128, seq: u64, oldest: u64) -> WriteStamp {
    WriteStamp {
        client: ClientId(client),
        seq: WriteSeq(seq),
        oldest_pending: WriteSeq(oldest),
        first_sent_ms: 0,
    }
}

/// The wall clock at every commit.
const NOW_MS: u64 = 1_000;

#[derive(Default)]
struct Client {
    connected: bool,
    next_seq: u64,
    /// Writes without an answer, which the client will re-send.
    pending: BTreeSet<u64>,
}

impl Client {
    fn stamp(&self, id: usize, seq: u64) -> WriteStamp {
        WriteStamp {
            client: ClientId(id as u128),
            seq: WriteSeq(seq),
            oldest_pending: WriteSeq(*self.pending.first().unwrap_or(&seq)),
            first_sent_ms: 0,
        }
    }
}

struct World {
    clients: Vec<Client>,
    table: DedupTable,
    /// What the store holds: data (as applied sequence numbers) and records.
    applied: Vec<(usize, u64)>,
    records: BTreeMap<ClientId, DedupRecord>,
    /// The group being built: writes to apply, and writes answered with its outcome.
    group: Vec<(usize, u64)>,
    waiting_on_group: Vec<(usize, u64)>,
    acknowledged: HashMap<(usize, u64), u32>,
}

impl World {
    fn deliver(&mut self, c: usize, seq: u64) {
        let stamp = self.clients[c].stamp(c, seq);
        if !self.table.knows(&stamp.client) {
            let record = self.records.get(&stamp.client).cloned();
            self.table.learn(stamp.client, record);
        }
        match self.table.admit(stamp) {
            Admission::Apply => self.group.push((c, seq)),
            Admission::InGroup => self.waiting_on_group.push((c, seq)),
            Admission::AlreadyApplied => self.answer(c, seq, Some(true), false),
            Admission::FailedBefore => self.answer(c, seq, Some(false), false),
        }
    }

    /// Answers a write: success, failure (`Some(false)`), or unknown outcome (`None`).
    fn answer(&mut self, c: usize, seq: u64, success: Option<bool>, lost: bool) {
        if lost {
            return;
        }
        // A client takes the first answer to a write and ignores any later one, and
        // re-sends none of them, whatever they say.
        let first_answer = self.clients[c].pending.remove(&seq);
        if first_answer && success == Some(true) {
            *self.acknowledged.entry((c, seq)).or_default() += 1;
        }
    }

    fn run(&mut self, action: Action) {
        match action {
            Action::Write(c) => {
                let client = &mut self.clients[c];
                client.next_seq += 1;
                let seq = client.next_seq;
                client.pending.insert(seq);
                if client.connected {
                    self.deliver(c, seq);
                }
            }
            Action::Resend(c) => {
                self.clients[c].connected = true;
                let pending: Vec<u64> = self.clients[c].pending.iter().copied().collect();
                for seq in pending {
                    self.deliver(c, seq);
                }
            }
            Action::Commit {
                outcome,
                replies_lost,
            } => {
                if let Outcome::Success | Outcome::Unsettled { landed: true } = outcome {
                    self.records.extend(self.table.group_records(NOW_MS));
                    self.applied.extend(self.group.iter().copied());
                }
                let success = match outcome {
                    Outcome::Success => {
                        self.table.commit_group(NOW_MS);
                        Some(true)
                    }
                    Outcome::Failure => {
                        self.table.abort_group(NOW_MS);
                        Some(false)
                    }
                    Outcome::Unsettled { .. } => {
                        self.table.forget_group(NOW_MS);
                        None
                    }
                };
                let answered: Vec<_> = self
                    .group
                    .drain(..)
                    .chain(self.waiting_on_group.drain(..))
                    .collect();
                for (c, seq) in answered {
                    self.answer(c, seq, success, replies_lost);
                }
            }
            Action::Crash => {
                self.group.clear();
                self.waiting_on_group.clear();
                for client in &mut self.clients {
                    client.connected = false;
                }
                self.table = DedupTable::default();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn applied_at_most_once_and_acknowledged_only_if_applied(
        actions in prop::collection::vec(action(), 0..80),
    ) {
        let mut world = World {
            clients: vec![Client { connected: true, ..Client::default() }, Client::default()],
            table: DedupTable::default(),
            applied: Vec::new(),
            records: BTreeMap::new(),
            group: Vec::new(),
            waiting_on_group: Vec::new(),
            acknowledged: HashMap::new(),
        };
        for action in actions {
            world.run(action);
        }
        let mut seen = BTreeSet::new();
        let mut latest = [0u64; 2];
        for write in &world.applied {
            prop_assert!(seen.insert(*write), "{write:?} applied twice");
            let (c, seq) = *write;
            prop_assert!(seq > latest[c], "{write:?} applied after write {} of its client", latest[c]);
            latest[c] = seq;
        }
        for (write, times) in &world.acknowledged {
            prop_assert_eq!(*times, 1, "{:?} acknowledged {} times", write, times);
            prop_assert!(seen.contains(write), "{write:?} acknowledged but never applied");
        }
        // Settle: every client re-sends until all its writes are answered; then each write
        // it ever issued was applied exactly once.
        for c in 0..2 {
            world.run(Action::Resend(c));
        }
        world.run(Action::Commit { outcome: Outcome::Success, replies_lost: false });
        for (c, client) in world.clients.iter().enumerate() {
            prop_assert!(client.pending.is_empty());
            for seq in 1..=client.next_seq {
                let acked = world.acknowledged.contains_key(&(c, seq));
                let applied = seen.contains(&(c, seq)) || world.applied.contains(&(c, seq));
                prop_assert!(!acked || applied);
            }
        }
    }
}

#[test]
fn a_failed_write_below_a_later_success_is_not_applied_when_re_sent() {
    let client = ClientId(1);
    let stamp = |seq, oldest| stamp_of(1, seq, oldest);
    let mut table = DedupTable::default();
    table.learn(client, None);
    assert_eq!(table.admit(stamp(1, 1)), Admission::Apply);
    table.abort_group(NOW_MS);
    assert_eq!(table.admit(stamp(2, 1)), Admission::Apply);
    let records = table.group_records(NOW_MS);
    assert_eq!(
        records,
        vec![(
            client,
            DedupRecord {
                applied_through: WriteSeq(2),
                failed: vec![WriteSeq(1)],
                last_write_ms: NOW_MS,
            }
        )]
    );
    table.commit_group(NOW_MS);

    // The answer to write 1 was lost with the leader; the next leader learns the record.
    let mut next = DedupTable::default();
    assert!(!next.knows(&client));
    next.learn(client, Some(records[0].1.clone()));
    assert_eq!(
        next.admit(stamp(1, 1)),
        Admission::FailedBefore,
        "failed, and applied now it would land after write 2"
    );
    assert_eq!(next.admit(stamp(2, 1)), Admission::AlreadyApplied);
    next.commit_group(NOW_MS + 1);
    // Once the client says nothing below 3 is pending, the failure is forgotten.
    assert_eq!(next.admit(stamp(3, 3)), Admission::Apply);
    assert_eq!(
        next.group_records(NOW_MS + 2),
        vec![(
            client,
            DedupRecord {
                applied_through: WriteSeq(3),
                failed: vec![],
                last_write_ms: NOW_MS + 2,
            }
        )]
    );
}

#[test]
fn clients_that_have_not_written_since_the_cutoff_are_forgotten_the_others_kept() {
    let stamp = |client, seq| stamp_of(client, seq, seq);
    let mut table = DedupTable::default();
    for client in [1, 2, 3] {
        table.learn(ClientId(client), None);
    }
    table.admit(stamp(1, 1));
    table.commit_group(100);
    table.admit(stamp(2, 1));
    table.commit_group(200);
    // Client 3 never wrote here: nothing to keep. Client 1's write in the group being
    // built keeps it, old as its last commit is.
    table.admit(stamp(1, 2));
    table.forget_written_before(150);
    assert!(table.knows(&ClientId(1)), "a write of it is in the group");
    assert!(table.knows(&ClientId(2)), "wrote at 200, after the cutoff");
    assert!(!table.knows(&ClientId(3)));
    table.commit_group(300);
    table.forget_written_before(250);
    assert!(table.knows(&ClientId(1)));
    assert!(!table.knows(&ClientId(2)));
    // What the store holds stays behind what the table learned since.
    table.learn(
        ClientId(1),
        Some(DedupRecord {
            applied_through: WriteSeq(0),
            failed: vec![],
            last_write_ms: 0,
        }),
    );
    assert_eq!(table.admit(stamp(1, 2)), Admission::AlreadyApplied);
}

/// A failure counts as the client's sign of life: a client whose last success is old but
/// whose write just failed is not forgotten by the next sweep, so the failed write, re-sent
/// after a later one committed, is still known to have failed (not acknowledged as applied;
/// and not applied after the later one either).
#[test]
fn a_sweep_right_after_a_failure_keeps_the_failed_write_re_sendable() {
    let client = ClientId(1);
    let stamp = |seq, oldest| stamp_of(1, seq, oldest);
    let mut table = DedupTable::default();
    let old = DedupRecord {
        applied_through: WriteSeq(1),
        failed: vec![],
        last_write_ms: 100,
    };
    table.learn(client, Some(old));
    assert_eq!(table.admit(stamp(2, 2)), Admission::Apply);
    table.abort_group(10_000);
    table.forget_written_before(5_000);
    assert!(table.knows(&client), "it failed a write at 10 000");
    assert_eq!(table.admit(stamp(3, 2)), Admission::Apply);
    table.commit_group(10_001);
    assert_eq!(
        table.admit(stamp(2, 2)),
        Admission::FailedBefore,
        "failed, not applied"
    );
}

/// A sweep forgets marks of unknown outcome older than its cutoff (their clients no longer
/// re-send those writes) but keeps fresh ones: the client's record must still be read
/// again before its next write.
#[test]
fn a_sweep_keeps_fresh_marks_of_unknown_outcome_and_drops_old_ones() {
    let stamp = |client, seq| stamp_of(client, seq, seq);
    let mut table = DedupTable::default();
    for client in [1, 2] {
        table.learn(ClientId(client), None);
        table.admit(stamp(client, 1));
    }
    table.commit_group(9_000);
    table.mark_uncertain(stamp(1, 2), 10_000);
    table.mark_uncertain(stamp(2, 2), 1_000);
    table.forget_written_before(5_000);
    assert!(
        !table.knows(&ClientId(1)),
        "a fresh mark: read the record again"
    );
    assert!(table.knows(&ClientId(2)), "an old mark is dropped");
}

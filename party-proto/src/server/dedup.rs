//! Exactly-once writes: the leader's record of which writes of each client it has applied.
//!
//! A write is named by (client id, sequence number). The writer admits each write against
//! this table, stores the table's new record for the client *in the same atomic batch* as the
//! write, and only then tells the table the group committed. A new leader starts with an
//! empty table and learns a client's stored record when that client's first write arrives
//! (the writer asks the store for it), so a write re-sent after a failover that the old
//! leader had applied is answered from the record instead of being applied again, and
//! taking over costs the same however many clients ever wrote.
//!
//! Records expire: each says when its client last wrote (by the wall clock of the leader
//! that committed it), and records older than the retention are removed from the store
//! and forgotten here. The client never re-sends a write older than half the retention
//! (see `ClientConfig::resend_window`), so an expired record is never needed.
//!
//! The record keeps the newest applied sequence number and the failed ones below it: "applied
//! iff seq ≤ newest" would wrongly acknowledge a write that failed while a later one
//! succeeded, if the failure's answer was lost in a failover. Such a write is not applied
//! when it comes again either: it would land after the later one, out of its client's
//! order; it is answered [`crate::ErrorCode::FailedBefore`]. Failed numbers are forgotten
//! once the client reports (`oldest_pending`) that it will never re-send them.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, WriteSeq};

/// Names one write: its client, its sequence number, and the client's promise that it will
/// never re-send anything below `oldest_pending`.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStamp {
    pub client: ClientId,
    pub seq: WriteSeq,
    pub oldest_pending: WriteSeq,
    /// When the client first sent the write (see `ClientMessage::Write`).
    pub first_sent_ms: u64,
}

impl WriteStamp {
    /// The client had no older write pending when it sent this one: it writes one at a
    /// time (or this write begins a burst), so no other write of its is there to commit
    /// with this one.
    pub fn alone(&self) -> bool {
        self.oldest_pending == self.seq
    }
}

/// What the store keeps per client, next to the data, in a namespace callers never see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// The newest sequence number applied; 0 when none has been.
    pub applied_through: WriteSeq,
    /// Sequence numbers that failed and may still be re-sent, in ascending order.
    pub failed: Vec<WriteSeq>,
    /// When the client's newest write in this record committed: milliseconds since the
    /// Unix epoch, by the committing leader's wall clock. The record expires by it.
    pub last_write_ms: u64,
}

/// What to do with a write.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Apply it (with the record of [`DedupTable::group_records`] in the same batch).
    Apply,
    /// It was applied before: answer success without applying it.
    AlreadyApplied,
    /// The same write is already in the current group: answer with that group's outcome.
    InGroup,
    /// It failed, and a later write of its client has been applied since (or is in the
    /// group being built): applied now, it would land after that write, out of the order
    /// they were issued in. Answer
    /// [`crate::ErrorCode::FailedBefore`] (its first answer was lost, or it would not have
    /// been sent again).
    FailedBefore,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Default)]
struct ClientWrites {
    applied_through: u64,
    failed: BTreeSet<u64>,
    /// When the client last wrote, applied or failed: a client is forgotten only once it
    /// has been silent for the retention, failures included, so that a failed write it may
    /// still re-send is not forgotten with it.
    last_write_ms: u64,
}

/// The leader's dedup table. See the module documentation.
#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct DedupTable {
    clients: FxHashMap<ClientId, ClientWrites>,
    /// Writes admitted into the group being built, per client.
    group: FxHashMap<ClientId, BTreeSet<u64>>,
    /// Writes whose commit may or may not have landed, per client, and when the latest
    /// was: the client's stored record, once read again, says which did.
    uncertain: FxHashMap<ClientId, (BTreeSet<u64>, u64)>,
}

impl DedupTable {
    /// Whether the table holds what the store knows of `client`: only then may its writes
    /// be admitted (a client the table never learned counts as one that never wrote).
    /// Not after a commit of the client whose outcome is unknown, until the record is read
    /// again.
    pub fn knows(&self, client: &ClientId) -> bool {
        self.clients.contains_key(client) && !self.uncertain.contains_key(client)
    }

    /// What the store holds for `client` (`None`: no record, it never wrote or its record
    /// expired). What the table already knows of it is newer and stays, but for the writes
    /// whose commit it was unsure of: the record says whether they landed.
    pub fn learn(&mut self, client: ClientId, record: Option<DedupRecord>) {
        let stored = |seq: u64| {
            record
                .as_ref()
                .is_some_and(|r| seq <= r.applied_through.0 && !r.failed.contains(&WriteSeq(seq)))
        };
        let (uncertain, _) = self.uncertain.remove(&client).unwrap_or_default();
        let writes = self.clients.entry(client).or_insert_with(|| match &record {
            Some(record) => ClientWrites {
                applied_through: record.applied_through.0,
                failed: record.failed.iter().map(|seq| seq.0).collect(),
                last_write_ms: record.last_write_ms,
            },
            None => ClientWrites::default(),
        });
        for seq in uncertain {
            if stored(seq) {
                writes.applied_through = writes.applied_through.max(seq);
                writes.failed.remove(&seq);
            } else {
                // It did not land: it failed, and may be re-sent. Left out, a later write
                // would cover it as applied.
                writes.failed.insert(seq);
            }
        }
    }

    /// Forgets the clients that last wrote before `cutoff_ms` (as their records expire from
    /// the store), but none with a write in the group being built; and writes of unknown
    /// outcome marked before it, which their clients no longer re-send.
    pub fn forget_written_before(&mut self, cutoff_ms: u64) {
        let group = &self.group;
        self.clients.retain(|client, writes| {
            writes.last_write_ms >= cutoff_ms || group.contains_key(client)
        });
        self.uncertain
            .retain(|_, (_, marked_ms)| *marked_ms >= cutoff_ms);
    }

    /// How many clients the table knows.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Decides about one write of the group being built.
    pub fn admit(&mut self, stamp: WriteStamp) -> Admission {
        self.admit_keeping_order(stamp, true)
    }

    /// [`DedupTable::admit`], or with `keep_order` false the re-created bug that applies a
    /// failed write after a later one of its client ([`crate::bugs::Bugs::reapply_failed`]).
    pub(crate) fn admit_keeping_order(&mut self, stamp: WriteStamp, keep_order: bool) -> Admission {
        let writes = self.clients.entry(stamp.client).or_default();
        writes.failed = writes.failed.split_off(&stamp.oldest_pending.0);
        let seq = stamp.seq.0;
        let group = self.group.entry(stamp.client).or_default();
        if group.contains(&seq) {
            Admission::InGroup
        } else if seq <= writes.applied_through && !writes.failed.contains(&seq) {
            Admission::AlreadyApplied
        } else if keep_order
            && (seq < writes.applied_through || group.last().is_some_and(|last| seq < *last))
        {
            // Only a write that failed comes after a later one of its client (a client
            // sends in order, and again in order after a reconnect).
            Admission::FailedBefore
        } else {
            group.insert(seq);
            Admission::Apply
        }
    }

    /// The records to store in the same atomic batch as the group's writes, which commit
    /// at `now_ms` (the wall clock, as in [`DedupRecord::last_write_ms`]).
    pub fn group_records(&self, now_ms: u64) -> Vec<(ClientId, DedupRecord)> {
        self.group
            .iter()
            .filter(|(_, seqs)| !seqs.is_empty())
            .map(|(client, seqs)| (*client, self.after_commit(client, seqs, now_ms)))
            .collect()
    }

    /// The group's batch, committed at `now_ms`, is durable: its writes count as applied.
    pub fn commit_group(&mut self, now_ms: u64) {
        for (client, seqs) in std::mem::take(&mut self.group) {
            let record = self.after_commit(&client, &seqs, now_ms);
            let writes = self.clients.entry(client).or_default();
            writes.applied_through = record.applied_through.0;
            writes.failed = record.failed.iter().map(|seq| seq.0).collect();
            writes.last_write_ms = record.last_write_ms;
        }
    }

    /// Whether the group's batch (at `now_ms`) landed is unknown: its clients' records are
    /// read again from the store, which knows, before their next writes are admitted.
    pub fn forget_group(&mut self, now_ms: u64) {
        for (client, seqs) in std::mem::take(&mut self.group) {
            let (uncertain, marked_ms) = self.uncertain.entry(client).or_default();
            uncertain.extend(seqs);
            *marked_ms = now_ms;
        }
    }

    /// A write answered at `now_ms` with an unknown outcome without being admitted (its
    /// client's record could not be read): once the record is, it says whether the write
    /// had landed before.
    pub fn mark_uncertain(&mut self, stamp: WriteStamp, now_ms: u64) {
        let (uncertain, marked_ms) = self.uncertain.entry(stamp.client).or_default();
        uncertain.insert(stamp.seq.0);
        *marked_ms = now_ms;
    }

    /// A write admitted to the group being built is not applied after all (a transaction
    /// whose reads no longer hold): it leaves the group and counts as failed, so that a
    /// re-send of it is decided again rather than answered as applied.
    pub fn reject(&mut self, stamp: WriteStamp, now_ms: u64) {
        if let Some(group) = self.group.get_mut(&stamp.client) {
            group.remove(&stamp.seq.0);
        }
        let writes = self.clients.entry(stamp.client).or_default();
        writes.failed.insert(stamp.seq.0);
        writes.last_write_ms = writes.last_write_ms.max(now_ms);
    }

    /// The group's batch failed at `now_ms`: none of its writes was applied, and each may be
    /// re-sent.
    pub fn abort_group(&mut self, now_ms: u64) {
        for (client, seqs) in std::mem::take(&mut self.group) {
            let writes = self.clients.entry(client).or_default();
            writes.failed.extend(seqs);
            writes.last_write_ms = writes.last_write_ms.max(now_ms);
        }
    }

    fn after_commit(&self, client: &ClientId, group: &BTreeSet<u64>, now_ms: u64) -> DedupRecord {
        let current = self.clients.get(client).cloned().unwrap_or_default();
        let newest = group.last().copied().unwrap_or(0);
        DedupRecord {
            applied_through: WriteSeq(current.applied_through.max(newest)),
            failed: current
                .failed
                .difference(group)
                .map(|seq| WriteSeq(*seq))
                .collect(),
            last_write_ms: now_ms.max(current.last_write_ms),
        }
    }
}

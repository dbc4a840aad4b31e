//! Exactly-once writes: the leader's record of which writes of each client it has applied.
//!
//! A write is named by (client id, sequence number). The writer admits each write against
//! this table, stores the table's new record for the client *in the same atomic batch* as the
//! write, and only then tells the table the group committed. A new leader loads the stored
//! records, so a write re-sent after a failover that the old leader had applied is answered
//! from the record instead of being applied again.
//!
//! The record keeps the newest applied sequence number and the failed ones below it: "applied
//! iff seq ≤ newest" would wrongly acknowledge a write that failed while a later one
//! succeeded, if the failure's answer was lost in a failover. Failed numbers are forgotten
//! once the client reports (`oldest_pending`) that it will never re-send them.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, WriteSeq};

/// Names one write: its client, its sequence number, and the client's promise that it will
/// never re-send anything below `oldest_pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStamp {
    pub client: ClientId,
    pub seq: WriteSeq,
    pub oldest_pending: WriteSeq,
}

/// What the store keeps per client, next to the data, in a namespace callers never see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupRecord {
    /// The newest sequence number applied; 0 when none has been.
    pub applied_through: WriteSeq,
    /// Sequence numbers that failed and may still be re-sent, in ascending order.
    pub failed: Vec<WriteSeq>,
}

/// What to do with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Apply it (with the record of [`DedupTable::group_records`] in the same batch).
    Apply,
    /// It was applied before: answer success without applying it.
    AlreadyApplied,
    /// The same write is already in the current group: answer with that group's outcome.
    InGroup,
}

#[derive(Debug, Clone, Default)]
struct ClientWrites {
    applied_through: u64,
    failed: BTreeSet<u64>,
}

/// The leader's dedup table. See the module documentation.
#[derive(Debug, Default)]
pub struct DedupTable {
    clients: HashMap<ClientId, ClientWrites>,
    /// Writes admitted into the group being built, per client.
    group: HashMap<ClientId, BTreeSet<u64>>,
}

impl DedupTable {
    /// The table as a new leader finds it in the store.
    pub fn from_records(records: impl IntoIterator<Item = (ClientId, DedupRecord)>) -> Self {
        let clients = records
            .into_iter()
            .map(|(client, record)| {
                let writes = ClientWrites {
                    applied_through: record.applied_through.0,
                    failed: record.failed.iter().map(|seq| seq.0).collect(),
                };
                (client, writes)
            })
            .collect();
        DedupTable {
            clients,
            group: HashMap::new(),
        }
    }

    /// Decides about one write of the group being built.
    pub fn admit(&mut self, stamp: WriteStamp) -> Admission {
        let writes = self.clients.entry(stamp.client).or_default();
        writes.failed = writes.failed.split_off(&stamp.oldest_pending.0);
        let seq = stamp.seq.0;
        let group = self.group.entry(stamp.client).or_default();
        if group.contains(&seq) {
            Admission::InGroup
        } else if seq <= writes.applied_through && !writes.failed.contains(&seq) {
            Admission::AlreadyApplied
        } else {
            group.insert(seq);
            Admission::Apply
        }
    }

    /// The records to store in the same atomic batch as the group's writes.
    pub fn group_records(&self) -> Vec<(ClientId, DedupRecord)> {
        self.group
            .iter()
            .filter(|(_, seqs)| !seqs.is_empty())
            .map(|(client, seqs)| (*client, self.after_commit(client, seqs)))
            .collect()
    }

    /// The group's batch is durable: its writes count as applied.
    pub fn commit_group(&mut self) {
        for (client, seqs) in std::mem::take(&mut self.group) {
            let record = self.after_commit(&client, &seqs);
            let writes = self.clients.entry(client).or_default();
            writes.applied_through = record.applied_through.0;
            writes.failed = record.failed.iter().map(|seq| seq.0).collect();
        }
    }

    /// The group's batch failed: none of its writes was applied, and each may be re-sent.
    pub fn abort_group(&mut self) {
        for (client, seqs) in std::mem::take(&mut self.group) {
            self.clients.entry(client).or_default().failed.extend(seqs);
        }
    }

    fn after_commit(&self, client: &ClientId, group: &BTreeSet<u64>) -> DedupRecord {
        let current = self.clients.get(client).cloned().unwrap_or_default();
        let newest = group.last().copied().unwrap_or(0);
        DedupRecord {
            applied_through: WriteSeq(current.applied_through.max(newest)),
            failed: current
                .failed
                .difference(group)
                .map(|seq| WriteSeq(*seq))
                .collect(),
        }
    }
}

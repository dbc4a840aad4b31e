//! The follower's table of requests that have no answer yet.
//!
//! Kept in request-id order, which is issue order: after a reconnect the requests are re-sent
//! in that order, so the writes of one client reach the leader in sequence order — which is
//! what lets the leader's dedup table keep just the newest sequence number per client.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{RequestId, WriteSeq};
use crate::time::Timestamp;
use crate::wire::{ClientMessage, ReadOp, WriteOp};

/// A request as the follower keeps it until it is answered.
#[derive(Debug, Clone)]
pub(crate) enum RequestOp {
    Read(ReadOp),
    Write(WriteSeq, WriteOp),
}

impl RequestOp {
    fn message(&self, id: RequestId, oldest_pending: Option<WriteSeq>) -> ClientMessage {
        match self {
            RequestOp::Read(op) => ClientMessage::Read { id, op: op.clone() },
            RequestOp::Write(seq, op) => ClientMessage::Write {
                id,
                seq: *seq,
                oldest_pending: oldest_pending.unwrap_or(*seq),
                op: op.clone(),
            },
        }
    }
}

#[derive(Debug)]
struct Pending {
    op: RequestOp,
    deadline: Option<Timestamp>,
    /// Sent on the current connection.
    sent: bool,
}

#[derive(Debug, Default)]
pub(crate) struct PendingTable {
    requests: BTreeMap<RequestId, Pending>,
    deadlines: BTreeSet<(Timestamp, RequestId)>,
    /// Sequence numbers of the pending writes.
    writes: BTreeSet<WriteSeq>,
}

impl PendingTable {
    pub(crate) fn insert(&mut self, id: RequestId, op: RequestOp, deadline: Option<Timestamp>) {
        if let Some(deadline) = deadline {
            self.deadlines.insert((deadline, id));
        }
        if let RequestOp::Write(seq, _) = &op {
            self.writes.insert(*seq);
        }
        self.requests.insert(
            id,
            Pending {
                op,
                deadline,
                sent: false,
            },
        );
    }

    /// Marks one request as sent and returns its message.
    pub(crate) fn mark_sent(&mut self, id: RequestId) -> Option<ClientMessage> {
        let oldest_pending = self.writes.first().copied();
        let pending = self.requests.get_mut(&id)?;
        pending.sent = true;
        Some(pending.op.message(id, oldest_pending))
    }

    pub(crate) fn remove(&mut self, id: RequestId) -> bool {
        match self.requests.remove(&id) {
            Some(pending) => {
                if let Some(deadline) = pending.deadline {
                    self.deadlines.remove(&(deadline, id));
                }
                if let RequestOp::Write(seq, _) = pending.op {
                    self.writes.remove(&seq);
                }
                true
            }
            None => false,
        }
    }

    /// Marks every unsent request as sent, and returns their messages in issue order.
    pub(crate) fn send_unsent(&mut self) -> Vec<ClientMessage> {
        let oldest_pending = self.writes.first().copied();
        self.requests
            .iter_mut()
            .filter(|(_, pending)| !pending.sent)
            .map(|(id, pending)| {
                pending.sent = true;
                pending.op.message(*id, oldest_pending)
            })
            .collect()
    }

    /// Ids of the requests sent on the current connection.
    pub(crate) fn sent(&self) -> Vec<RequestId> {
        self.requests
            .iter()
            .filter(|(_, pending)| pending.sent)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The connection is gone: every request is to be sent again on the next one.
    pub(crate) fn mark_all_unsent(&mut self) {
        for pending in self.requests.values_mut() {
            pending.sent = false;
        }
    }

    pub(crate) fn ids(&self) -> Vec<RequestId> {
        self.requests.keys().copied().collect()
    }

    /// Removes and returns the requests whose deadline is at or before `now`.
    pub(crate) fn take_expired(&mut self, now: Timestamp) -> Vec<RequestId> {
        let expired: Vec<RequestId> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|(_, id)| *id)
            .collect();
        for id in &expired {
            self.remove(*id);
        }
        expired
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    pub(crate) fn len(&self) -> usize {
        self.requests.len()
    }
}

//! The follower's table of requests that have no answer yet.
//!
//! Kept in request-id order, which is issue order: after a reconnect the requests are re-sent
//! in that order, so the writes of one client reach the leader in sequence order — which is
//! what lets the leader's dedup table keep just the newest sequence number per client.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::ids::{RequestId, WriteSeq};
use crate::time::Timestamp;
use crate::wire::{ClientMessage, ReadOp, WriteOp};

/// A request as the follower keeps it until it is answered.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub(crate) enum RequestOp {
    Read(ReadOp),
    Write(WriteSeq, Arc<WriteOp>),
}

impl RequestOp {
    /// At least the size of the frame that carries this request.
    pub(crate) fn len_bound(&self) -> u64 {
        match self {
            RequestOp::Read(op) => op.request_len_bound(),
            RequestOp::Write(_, op) => op.request_len_bound(),
        }
    }

    fn message(
        &self,
        id: RequestId,
        oldest_pending: Option<WriteSeq>,
        first_sent_ms: u64,
    ) -> ClientMessage {
        match self {
            RequestOp::Read(op) => ClientMessage::Read { id, op: op.clone() },
            RequestOp::Write(seq, op) => ClientMessage::Write {
                id,
                seq: *seq,
                oldest_pending: oldest_pending.unwrap_or(*seq),
                first_sent_ms,
                op: Arc::clone(op),
            },
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Pending {
    op: RequestOp,
    deadline: Option<Timestamp>,
    /// Sent on the current connection.
    sent: bool,
    /// When a write was first sent, on any connection.
    first_sent: Option<Timestamp>,
    /// The same by the wall clock, in milliseconds since the Unix epoch, as told to leaders.
    first_sent_ms: u64,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub(crate) struct PendingTable {
    requests: BTreeMap<RequestId, Pending>,
    deadlines: BTreeSet<(Timestamp, RequestId)>,
    /// Sequence numbers of the pending writes.
    writes: BTreeSet<WriteSeq>,
    /// The requests not sent on the current connection. Requests go out in id order, so
    /// these are always the newest ones.
    unsent: BTreeSet<RequestId>,
    /// Requests sent on the current connection that completed here (timed out) before the
    /// leader answered: the leader still counts them in flight until it does.
    abandoned: BTreeSet<RequestId>,
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
                first_sent: None,
                first_sent_ms: 0,
            },
        );
        self.unsent.insert(id);
    }

    /// The oldest request not sent on the current connection, the size bound of its frame,
    /// and when it was first sent if it is a write sent before (reads go again at any age).
    pub(crate) fn next_unsent(&self) -> Option<(RequestId, u64, Option<Timestamp>)> {
        let id = *self.unsent.first()?;
        let pending = &self.requests[&id];
        let first_sent = match pending.op {
            RequestOp::Write(..) => pending.first_sent,
            RequestOp::Read(_) => None,
        };
        Some((id, pending.op.len_bound(), first_sent))
    }

    /// Whether `id` is a write sent to a leader before, on this connection or an earlier
    /// one: it may have been applied.
    pub(crate) fn write_sent(&self, id: RequestId) -> bool {
        self.requests.get(&id).is_some_and(|pending| {
            matches!(pending.op, RequestOp::Write(..)) && pending.first_sent.is_some()
        })
    }

    /// Requests the leader has taken on the current connection and not answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.requests.len() - self.unsent.len() + self.abandoned.len()
    }

    /// Marks one request as sent at `now` and returns its message.
    /// The message that sends request `id` now; `wall_at_epoch` is the wall clock at the
    /// machine's epoch (see [`crate::ClientConfig::wall_clock_at_epoch`]).
    pub(crate) fn mark_sent(
        &mut self,
        id: RequestId,
        now: Timestamp,
        wall_at_epoch: std::time::Duration,
    ) -> Option<ClientMessage> {
        let oldest_pending = self.writes.first().copied();
        let pending = self.requests.get_mut(&id)?;
        pending.sent = true;
        if pending.first_sent.is_none() {
            pending.first_sent = Some(now);
            // By the wall clock as known now: kept, so that a sleep of the machine (which
            // stops the monotonic clock) before a re-send does not make the write look
            // younger than it is.
            let wall_ms = (wall_at_epoch + now.since_epoch()).as_millis();
            pending.first_sent_ms = u64::try_from(wall_ms).unwrap_or(u64::MAX);
        }
        self.unsent.remove(&id);
        Some(
            pending
                .op
                .message(id, oldest_pending, pending.first_sent_ms),
        )
    }

    /// Forgets a request that completed. False if it was not pending (a late or unknown
    /// answer).
    pub(crate) fn remove(&mut self, id: RequestId) -> bool {
        match self.requests.remove(&id) {
            Some(pending) => {
                if let Some(deadline) = pending.deadline {
                    self.deadlines.remove(&(deadline, id));
                }
                if let RequestOp::Write(seq, _) = pending.op {
                    self.writes.remove(&seq);
                }
                self.unsent.remove(&id);
                true
            }
            None => false,
        }
    }

    /// The leader answered a request: true if it was still pending here.
    pub(crate) fn answered(&mut self, id: RequestId) -> bool {
        self.abandoned.remove(&id);
        self.remove(id)
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
        for (id, pending) in &mut self.requests {
            pending.sent = false;
            self.unsent.insert(*id);
        }
        self.abandoned.clear();
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
            if self.requests.get(id).is_some_and(|pending| pending.sent) {
                self.abandoned.insert(*id);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages that send a write, first and again after a lost connection, share
    /// its values with the table's copy instead of copying them (a megabyte a send for a
    /// 1 MiB value).
    #[test]
    fn a_writes_messages_share_its_values() {
        let mut table = PendingTable::default();
        let op = Arc::new(WriteOp::Put {
            key: b"k".to_vec(),
            value: vec![b'v'; 1024],
        });
        let id = RequestId(1);
        table.insert(id, RequestOp::Write(WriteSeq(1), Arc::clone(&op)), None);
        let first = table.mark_sent(id, Timestamp::ZERO, std::time::Duration::ZERO);
        table.mark_all_unsent();
        let again = table.mark_sent(id, Timestamp::ZERO, std::time::Duration::ZERO);
        for message in [first, again] {
            let Some(ClientMessage::Write { op: sent, .. }) = message else {
                panic!("not a write: {message:?}");
            };
            assert!(Arc::ptr_eq(&sent, &op));
        }
    }
}

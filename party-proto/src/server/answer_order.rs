//! A connection's writes in flight, in the order they came, and the answers of reads and
//! iterators held until the writes issued before them are answered (with the drops of
//! those iterators' store iterators, which follow their answers).
//!
//! A read or an iterator issued after a write runs after it, but its answer can come back
//! from the store first (another thread reads it, or the write's answer waits its turn).
//! Were it sent first, a leader that dies right then would leave the follower with the read's
//! answer and without the write's: the follower sends the write again to the next leader,
//! where it may land, although the read was answered as if it had not (a write the store
//! refused, or that had not reached it). Sent after the write's answer, on the same ordered
//! connection, a read answered means the writes before it are answered too.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::session::ServerOutput;
use crate::ids::{IterId, RequestId};
use crate::wire::ServerMessage;

/// Which writes an answer waits for: every write admitted up to this one, by its number.
pub type Fence = u64;

#[derive(serde::Serialize, serde::Deserialize, Debug, Default)]
pub struct AnswerOrder {
    /// The number the next write admitted takes.
    next: u64,
    /// The writes in flight, by request, with their numbers.
    in_flight: FxHashMap<RequestId, u64>,
    /// Whether each write from the oldest one in flight on is still unanswered; the oldest
    /// is, and the first number not covered here is `next`.
    unanswered: VecDeque<bool>,
    /// Answers waiting for their fence, in the order they were made.
    held: VecDeque<(Fence, ServerOutput)>,
}

impl AnswerOrder {
    pub fn write_admitted(&mut self, id: RequestId) {
        self.in_flight.insert(id, self.next);
        self.unanswered.push_back(true);
        self.next += 1;
    }

    pub fn writes_running(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// What an answer to a request issued now must wait for, if anything.
    pub fn fence(&self) -> Option<Fence> {
        self.writes_running().then(|| self.next - 1)
    }

    /// Takes a write's answer into account, and gives back the answers it let go, in the
    /// order they were made. Not a write of this connection in flight: nothing changes.
    pub fn write_answered(&mut self, id: RequestId) -> Vec<ServerOutput> {
        let Some(number) = self.in_flight.remove(&id) else {
            return Vec::new();
        };
        let oldest = self.next - self.unanswered.len() as u64;
        self.unanswered[(number - oldest) as usize] = false;
        while self.unanswered.front() == Some(&false) {
            self.unanswered.pop_front();
        }
        if self.held.is_empty() || number != oldest {
            return Vec::new();
        }
        let (released, held) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(fence, _)| self.is_clear(*fence));
        self.held = held;
        released.into_iter().map(|(_, output)| output).collect()
    }

    /// Whether an answer behind this fence would be held now.
    pub fn holds(&self, fence: Option<Fence>) -> bool {
        fence.is_some_and(|fence| !self.is_clear(fence))
    }

    /// The output to give now, or none if it must wait (held here).
    pub fn pass(&mut self, fence: Option<Fence>, output: ServerOutput) -> Option<ServerOutput> {
        match fence {
            Some(fence) if !self.is_clear(fence) => {
                self.held.push_back((fence, output));
                None
            }
            _ => Some(output),
        }
    }

    /// An answer about an iterator that is gone: after its end if that is held (and then
    /// that answer once, however often it is asked for), otherwise now.
    pub fn pass_after_end_of(
        &mut self,
        gone: IterId,
        output: ServerOutput,
    ) -> Option<ServerOutput> {
        let end = self.held.iter().find_map(|(fence, held)| {
            matches!(held, ServerOutput::IterDrop { iter } if *iter == gone).then_some(*fence)
        });
        let Some(fence) = end else {
            return Some(output);
        };
        if !self.held.iter().any(|(_, held)| *held == output) {
            self.held.push_back((fence, output));
        }
        None
    }

    /// Store iterators whose drop is held: they count toward the connection's iterators
    /// until then.
    pub fn held_drops(&self) -> usize {
        self.held
            .iter()
            .filter(|(_, output)| matches!(output, ServerOutput::IterDrop { .. }))
            .count()
    }

    pub fn holds_drop_of(&self, dropped: IterId) -> bool {
        self.held.iter().any(
            |(_, output)| matches!(output, ServerOutput::IterDrop { iter } if *iter == dropped),
        )
    }

    /// Forgets the held messages of an iterator its follower closed.
    pub fn forget_messages_of(&mut self, closed: IterId) {
        self.held.retain(|(_, output)| {
            let iter = match output {
                ServerOutput::Send(
                    ServerMessage::IterData { iter, .. }
                    | ServerMessage::IterAt { iter, .. }
                    | ServerMessage::IterEnd { iter }
                    | ServerMessage::IterFailed { iter, .. },
                ) => Some(*iter),
                _ => None,
            };
            iter != Some(closed)
        });
    }

    /// Whether every write up to the fence has been answered.
    fn is_clear(&self, fence: Fence) -> bool {
        fence < self.next - self.unanswered.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(iter: u64) -> ServerOutput {
        ServerOutput::IterDrop { iter: IterId(iter) }
    }

    #[test]
    fn an_answer_waits_for_every_write_before_it_in_any_order_they_are_answered() {
        let mut order = AnswerOrder::default();
        assert_eq!(order.fence(), None);
        order.write_admitted(RequestId(1));
        order.write_admitted(RequestId(2));
        let fence = order.fence();
        order.write_admitted(RequestId(3));
        assert_eq!(order.pass(fence, end(7)), None);
        assert_eq!(order.write_answered(RequestId(2)), vec![]);
        assert_eq!(order.write_answered(RequestId(1)), vec![end(7)]);
        // Write 3 came after the answer's request: it does not hold it, nor what comes next.
        assert_eq!(order.pass(fence, end(8)), Some(end(8)));
        assert!(order.writes_running());
        assert_eq!(order.write_answered(RequestId(3)), vec![]);
        assert!(!order.writes_running());
        assert_eq!(order.fence(), None);
    }

    #[test]
    fn answers_let_go_together_keep_their_order_and_later_fences_wait_on() {
        let mut order = AnswerOrder::default();
        order.write_admitted(RequestId(1));
        let first = order.fence();
        order.write_admitted(RequestId(2));
        let second = order.fence();
        assert_eq!(order.pass(second, end(1)), None);
        assert_eq!(order.pass(first, end(2)), None);
        assert_eq!(order.pass(first, end(3)), None);
        assert_eq!(order.write_answered(RequestId(9)), vec![]);
        assert_eq!(order.write_answered(RequestId(1)), vec![end(2), end(3)]);
        assert_eq!(order.write_answered(RequestId(2)), vec![end(1)]);
    }

    #[test]
    fn a_closed_iterators_messages_are_forgotten_and_held_drops_counted() {
        let mut order = AnswerOrder::default();
        order.write_admitted(RequestId(1));
        let fence = order.fence();
        let data = |iter| ServerOutput::Send(ServerMessage::IterEnd { iter: IterId(iter) });
        assert_eq!(order.pass(fence, data(1)), None);
        assert_eq!(order.pass(fence, data(2)), None);
        assert_eq!(order.pass(fence, end(1)), None);
        assert_eq!(order.pass(fence, end(2)), None);
        assert_eq!(order.held_drops(), 2);
        assert!(order.holds_drop_of(IterId(2)) && !order.holds_drop_of(IterId(3)));
        order.forget_messages_of(IterId(1));
        assert_eq!(
            order.write_answered(RequestId(1)),
            vec![data(2), end(1), end(2)]
        );
        assert_eq!(order.held_drops(), 0);
    }

    #[test]
    fn an_answer_about_a_gone_iterator_follows_its_held_end_once() {
        let mut order = AnswerOrder::default();
        let gone = |iter| {
            ServerOutput::Send(ServerMessage::IterFailed {
                iter: IterId(iter),
                error: crate::ErrorCode::NotFound,
            })
        };
        order.write_admitted(RequestId(1));
        assert_eq!(order.pass_after_end_of(IterId(1), gone(1)), Some(gone(1)));
        assert_eq!(order.pass(order.fence(), end(1)), None);
        assert_eq!(order.pass_after_end_of(IterId(1), gone(1)), None);
        assert_eq!(order.pass_after_end_of(IterId(1), gone(1)), None);
        assert_eq!(order.pass_after_end_of(IterId(2), gone(2)), Some(gone(2)));
        assert_eq!(order.write_answered(RequestId(1)), vec![end(1), gone(1)]);
    }
}

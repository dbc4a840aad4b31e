//! Where big answers lie in a ring of memory a follower shares with its leader.
//!
//! A socket carries a 64 KiB value at a fraction of the rate one process copies it, so a
//! follower that is sent big values offers its leader a ring ([`ClientMessage::OfferRing`]):
//! the leader copies each big answer's value into the ring and sends only where it lies
//! ([`ServerMessage::ReplyInRing`]), and the follower copies it out. Positions count bytes
//! from the ring's start over every lap, so that each side can tell a position of this lap
//! from one of the last. The leader writes the values in the order of the frames that name
//! them and the follower takes them in that order, so the follower's position, which it
//! tells the leader through the ring itself, is all the leader needs to know where it may
//! write. A value lies in one piece: one that would run past the ring's end starts the
//! next lap. A value that finds no room goes through the socket.
//!
//! This file only counts; the memory and the counter's sharing are the transport's.
//!
//! [`ClientMessage::OfferRing`]: super::ClientMessage::OfferRing
//! [`ServerMessage::ReplyInRing`]: super::ServerMessage::ReplyInRing

use bytes::Bytes;

use super::{Response, ServerMessage};
use crate::RequestId;

/// The request `message` answers and its value, if the value may go through a ring: a get's
/// answer's, of at least `at_least` bytes (party-core's transport takes those it would lend
/// to the socket, the simulator any that is not empty).
pub fn ring_answer(message: &ServerMessage, at_least: usize) -> Option<(RequestId, &Bytes)> {
    match message {
        ServerMessage::Reply {
            id,
            result: Ok(Response::Value(Some(value))),
        } if value.len() >= at_least.max(1) => Some((*id, value)),
        _ => None,
    }
}

/// Where a value goes in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Its first byte's offset in the ring.
    pub at: u64,
    /// The position right after it, sent in the `ReplyInRing` that names it.
    pub end: u64,
}

/// The leader's side: where the next value goes, and whether the follower has made room.
#[derive(Debug, Clone)]
pub struct RingPlacer {
    len: u64,
    #[cfg(feature = "bug-injection")]
    ignores_room: bool,
    /// Where the next value goes.
    head: u64,
    /// How far the follower had taken the values, when last told.
    taken: u64,
}

impl RingPlacer {
    /// A ring of `len` bytes, none of them written yet.
    pub fn new(len: u64) -> Self {
        RingPlacer {
            len,
            #[cfg(feature = "bug-injection")]
            ignores_room: false,
            head: 0,
            taken: 0,
        }
    }

    /// The placer with the bug classes of `bugs` that concern it.
    #[cfg(feature = "bug-injection")]
    pub fn with_bugs(mut self, bugs: &crate::bugs::Bugs) -> Self {
        self.ignores_room = bugs.ring_ignores_room;
        self
    }

    /// Room for a value of `value_len` bytes, if the follower has taken enough of those
    /// before it (as far as it last said: see [`RingPlacer::taken`]). Once placed, the value
    /// must be written before the frame naming it is sent.
    pub fn place(&mut self, value_len: u64) -> Option<Placed> {
        if value_len == 0 || value_len > self.len || self.short_of_room(value_len) {
            return None;
        }
        let start = self.start_for(value_len);
        let end = start + value_len;
        self.head = end;
        Some(Placed {
            at: start % self.len,
            end,
        })
    }

    /// Whether a value of `value_len` bytes would need the follower to have taken more than
    /// it last said (worth reading its position again before giving up on the ring). With
    /// nothing left to take, any value that fits the ring has room; one that does not fit
    /// (or a ring of no bytes, which a follower may offer) never has.
    pub fn short_of_room(&self, value_len: u64) -> bool {
        if value_len == 0 || value_len > self.len {
            return false;
        }
        #[cfg(feature = "bug-injection")]
        if self.ignores_room {
            return false;
        }
        let end = self.start_for(value_len).saturating_add(value_len);
        self.taken < self.head && end - self.taken > self.len
    }

    /// Where a value of `value_len` bytes starts: at the head, or at the next lap's start if
    /// it would run past the ring's end there.
    fn start_for(&self, value_len: u64) -> u64 {
        let at = self.head % self.len;
        if value_len > self.len - at {
            self.head + (self.len - at)
        } else {
            self.head
        }
    }

    /// What to send instead of `message` once its value lies in the ring: a
    /// `ReplyInRing`, if `message` answers a get with a value of at least `at_least` bytes,
    /// the ring has room for it, and `write` copied it to that offset of the ring's values
    /// (`false` if it could not). The follower's position is read (`position`) only when
    /// the one last read leaves no room.
    pub fn place_answer(
        &mut self,
        message: &ServerMessage,
        at_least: usize,
        position: impl FnOnce() -> u64,
        write: impl FnOnce(u64, &[u8]) -> bool,
    ) -> Option<ServerMessage> {
        let (id, value) = ring_answer(message, at_least)?;
        let len = u32::try_from(value.len()).ok()?;
        if self.short_of_room(u64::from(len)) {
            self.taken(position());
        }
        let placed = self.place(u64::from(len))?;
        // A value not written leaves a gap the follower never reads: the next value's
        // start lies past it.
        write(placed.at, value).then_some(ServerMessage::ReplyInRing {
            id,
            end: placed.end,
            len,
        })
    }

    /// The follower's position, as read from the ring. A position behind the last one told,
    /// or past what was written, cannot be the follower's and is not taken.
    pub fn taken(&mut self, position: u64) {
        if (self.taken..=self.head).contains(&position) {
            self.taken = position;
        }
    }
}

/// Why a follower refuses a value the leader says lies in the ring: a leader that says so
/// breaks the protocol, and the connection is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a value in the ring from a leader the follower offered none")]
    NoRing,
    #[error("a value in the ring ending at {end} overlaps what was taken, up to {taken}")]
    Behind { end: u64, taken: u64 },
    #[error("a value in the ring of {len} bytes does not fit a ring of {ring_len}")]
    TooLong { len: u64, ring_len: u64 },
    #[error("a value in the ring from {start} to {end} runs past the ring's end")]
    Wraps { start: u64, end: u64 },
}

/// The follower's side: which values it has taken out of the ring.
#[derive(Debug, Clone)]
pub struct RingTaker {
    len: u64,
    taken: u64,
}

impl RingTaker {
    /// A ring of `len` bytes, nothing taken yet.
    pub fn new(len: u64) -> Self {
        RingTaker { len, taken: 0 }
    }

    /// The offset in the ring of the value of `value_len` bytes the leader says ends at
    /// `end`, if it lies after every value taken before it, in one piece. (Whether the
    /// leader overwrote a value before it was taken cannot be told from here: the follower
    /// trusts its leader to place values as [`RingPlacer`] does.) The caller copies it out,
    /// then calls [`RingTaker::took`].
    pub fn locate(&self, end: u64, value_len: u64) -> Result<u64, RingError> {
        if value_len > self.len {
            return Err(RingError::TooLong {
                len: value_len,
                ring_len: self.len,
            });
        }
        let start = end
            .checked_sub(value_len)
            .filter(|start| *start >= self.taken)
            .ok_or(RingError::Behind {
                end,
                taken: self.taken,
            })?;
        let at = start % self.len;
        if value_len > self.len - at {
            return Err(RingError::Wraps { start, end });
        }
        Ok(at)
    }

    /// `message` as the follower takes it: a value in the ring read out (`read` copies the
    /// bytes at an offset of the ring's values, `None` if it could not) and answered as a
    /// `Reply` again; any other message as it is.
    pub fn take_answer(
        &mut self,
        message: ServerMessage,
        read: impl FnOnce(u64, u64) -> Option<Vec<u8>>,
    ) -> Result<ServerMessage, RingError> {
        let ServerMessage::ReplyInRing { id, end, len } = message else {
            return Ok(message);
        };
        let len = u64::from(len);
        let at = self.locate(end, len)?;
        let value = read(at, len).ok_or(RingError::TooLong {
            len,
            ring_len: self.len,
        })?;
        self.took(end);
        Ok(ServerMessage::Reply {
            id,
            result: Ok(Response::Value(Some(Bytes::from(value)))),
        })
    }

    /// The value ending at `end` is copied out: its room, and any skipped before it, may be
    /// written again.
    pub fn took(&mut self, end: u64) {
        self.taken = self.taken.max(end);
    }

    /// How far the values are taken: the position the leader is told.
    pub fn position(&self) -> u64 {
        self.taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ring whose bytes remember which value wrote them, and which values a follower has
    /// copied out whole.
    struct Model {
        placer: RingPlacer,
        taker: RingTaker,
        bytes: Vec<Option<usize>>,
        /// Values sent and not yet taken: (value, end, len).
        in_flight: std::collections::VecDeque<(usize, u64, u64)>,
        next: usize,
    }

    impl Model {
        fn new(len: u64) -> Self {
            Model {
                placer: RingPlacer::new(len),
                taker: RingTaker::new(len),
                bytes: vec![None; len as usize],
                in_flight: Default::default(),
                next: 0,
            }
        }

        fn send(&mut self, value_len: u64) -> bool {
            let mut placed = self.placer.place(value_len);
            if placed.is_none() && self.placer.short_of_room(value_len) {
                self.placer.taken(self.taker.position());
                placed = self.placer.place(value_len);
            }
            let Some(Placed { at, end }) = placed else {
                return false;
            };
            for byte in &mut self.bytes[at as usize..(at + value_len) as usize] {
                *byte = Some(self.next);
            }
            self.in_flight.push_back((self.next, end, value_len));
            self.next += 1;
            true
        }

        fn take(&mut self) {
            let Some((value, end, len)) = self.in_flight.pop_front() else {
                return;
            };
            let at = self
                .taker
                .locate(end, len)
                .expect("a value the leader placed");
            let bytes = &self.bytes[at as usize..(at + len) as usize];
            assert!(
                bytes.iter().all(|b| *b == Some(value)),
                "value {value} was overwritten before it was taken"
            );
            self.taker.took(end);
        }
    }

    proptest! {
        /// Whatever the sizes and however far the follower lags, a value placed is never
        /// overwritten before the follower takes it, and the follower accepts every one.
        #[test]
        fn a_placed_value_is_taken_whole(
            len in 1u64..300,
            steps in proptest::collection::vec((1u64..320, any::<bool>()), 1..200),
        ) {
            let mut model = Model::new(len);
            let mut sent = 0;
            for (value_len, take) in steps {
                if model.send(value_len) {
                    sent += 1;
                }
                if take {
                    model.take();
                }
            }
            while !model.in_flight.is_empty() {
                model.take();
            }
            // Room is given back: once the follower's position is read, a ring with nothing
            // left to take has room for any value that fits it, wherever its head is.
            model.placer.taken(model.taker.position());
            prop_assert!(model.send(len));
            prop_assert_eq!(sent + 1, model.next);
        }
    }

    /// A ring of no bytes, as a follower may offer (party-core's leader refuses one, the
    /// session passes the offer on as it came), places nothing and never fails.
    #[test]
    fn a_ring_of_no_bytes_places_nothing() {
        let mut placer = RingPlacer::new(0);
        for value_len in [0, 1, 100] {
            assert!(!placer.short_of_room(value_len));
            assert_eq!(placer.place(value_len), None);
        }
        let answer = ServerMessage::Reply {
            id: RequestId(1),
            result: Ok(Response::Value(Some(Bytes::from_static(b"value")))),
        };
        assert_eq!(placer.place_answer(&answer, 1, || 0, |_, _| true), None);
    }

    /// An answer to a get goes through the ring and comes out as it went in; other
    /// messages, values under the size asked for, and values with no room stay as they are.
    #[test]
    fn an_answer_goes_through_the_ring_and_comes_out_whole() {
        let mut memory = [0u8; 10];
        let mut placer = RingPlacer::new(10);
        let mut taker = RingTaker::new(10);
        let answer = |id, value: &[u8]| ServerMessage::Reply {
            id: RequestId(id),
            result: Ok(Response::Value(Some(Bytes::copy_from_slice(value)))),
        };
        let mut write = |at: u64, value: &[u8]| {
            memory[at as usize..at as usize + value.len()].copy_from_slice(value);
            true
        };
        let sent = placer.place_answer(&answer(1, b"abcdef"), 2, || 0, &mut write);
        assert_eq!(
            sent,
            Some(ServerMessage::ReplyInRing {
                id: RequestId(1),
                end: 6,
                len: 6
            })
        );
        let none = ServerMessage::Reply {
            id: RequestId(2),
            result: Ok(Response::Value(None)),
        };
        assert_eq!(placer.place_answer(&none, 2, || 0, &mut write), None);
        assert_eq!(
            placer.place_answer(&answer(3, b"a"), 2, || 0, &mut write),
            None
        );
        // Six of ten bytes unread: five more would wrap, and the ring's start is not free.
        assert_eq!(
            placer.place_answer(&answer(4, b"ghijk"), 2, || 0, &mut write),
            None
        );
        let read = |at: u64, len: u64| Some(memory[at as usize..(at + len) as usize].to_vec());
        assert_eq!(
            taker.take_answer(sent.unwrap(), read),
            Ok(answer(1, b"abcdef"))
        );
        assert_eq!(taker.take_answer(none.clone(), |_, _| None), Ok(none));
        assert_eq!(taker.position(), 6);
    }

    /// A ring whose values are all taken has room for a value that must skip to the next
    /// lap: the skipped bytes hold nothing unread.
    #[test]
    fn a_drained_ring_takes_a_value_that_skips_its_end() {
        let mut placer = RingPlacer::new(100);
        assert_eq!(placer.place(50), Some(Placed { at: 0, end: 50 }));
        placer.taken(50);
        assert_eq!(placer.place(60), Some(Placed { at: 0, end: 160 }));
        let mut taker = RingTaker::new(100);
        taker.took(50);
        assert_eq!(taker.locate(160, 60), Ok(0));
    }

    /// A value that would run past the end starts the next lap, once the follower has taken
    /// what lies at the ring's start; the skipped bytes are given back with it.
    #[test]
    fn a_value_that_would_wrap_waits_for_the_ring_start() {
        let mut placer = RingPlacer::new(100);
        assert_eq!(placer.place(60), Some(Placed { at: 0, end: 60 }));
        assert_eq!(placer.place(30), Some(Placed { at: 60, end: 90 }));
        // 20 bytes would run past 100: it goes at 0 of the next lap, where the first value
        // still lies.
        assert!(placer.short_of_room(20));
        assert_eq!(placer.place(20), None);
        placer.taken(60);
        assert_eq!(placer.place(20), Some(Placed { at: 0, end: 120 }));

        let mut taker = RingTaker::new(100);
        assert_eq!(taker.locate(60, 60), Ok(0));
        taker.took(60);
        assert_eq!(taker.locate(90, 30), Ok(60));
        taker.took(90);
        assert_eq!(taker.locate(120, 20), Ok(0));
        taker.took(120);
        assert_eq!(taker.position(), 120);
    }

    /// A follower takes only what a leader following the ring's rules could have placed.
    #[test]
    fn a_follower_refuses_values_no_leader_could_have_placed() {
        let mut taker = RingTaker::new(100);
        taker.took(50);
        assert_eq!(
            taker.locate(60, 20),
            Err(RingError::Behind { end: 60, taken: 50 })
        );
        assert_eq!(
            taker.locate(500, 101),
            Err(RingError::TooLong {
                len: 101,
                ring_len: 100
            })
        );
        assert_eq!(
            taker.locate(110, 20),
            Err(RingError::Wraps {
                start: 90,
                end: 110
            })
        );
        assert_eq!(
            taker.locate(10, 20),
            Err(RingError::Behind { end: 10, taken: 50 })
        );
        assert_eq!(
            taker.locate(69, 20),
            Err(RingError::Behind { end: 69, taken: 50 })
        );
        assert_eq!(taker.locate(70, 20), Ok(50));
        assert_eq!(taker.locate(150, 10), Ok(40));
    }

    /// A position read from the ring that no follower could have reached is not believed:
    /// one past what was written would let the leader overwrite values still unread.
    #[test]
    fn a_leader_believes_only_positions_a_follower_could_reach() {
        let mut placer = RingPlacer::new(100);
        placer.place(40);
        placer.place(40);
        placer.taken(1_000);
        assert_eq!(placer.place(40), None);
        placer.taken(40);
        assert_eq!(placer.place(40), Some(Placed { at: 0, end: 140 }));
    }
}

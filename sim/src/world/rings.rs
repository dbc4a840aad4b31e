//! Rings for big answers, as party-core's transport keeps them (`value_ring.rs`), through
//! the same party-proto code (`RingPlacer::place_answer`, `RingTaker::take_answer`): a
//! follower offers one (here at its welcome, on about half the connections, so that the
//! socket's own path stays covered; party-core waits for the first big value, which would
//! leave too few values in a ring here to reach its edges), the leader's session says so,
//! and from then on the leader places each value in the ring where it has room and sends
//! where it lies. The ring here is a few bytes long, so that values wrap, wait for room and
//! go by the socket when there is none; its memory dies with the connection, as a real
//! ring's does with the processes' handles on it.

use super::*;

/// A connection's ring: memory both ends see, and each end's count of it.
pub(super) struct SimRing {
    memory: Vec<u8>,
    /// The leader's side, once its session has heard the offer.
    placer: Option<RingPlacer>,
    taker: RingTaker,
    /// The follower's position as the leader reads it from the ring.
    told: u64,
}

impl World {
    /// After the client end of `conn` took `reply` from the socket: at the welcome, the
    /// transport offers a ring on connections the seed gives one.
    pub(super) fn maybe_offer_ring(&mut self, conn: ConnId, reply: &ServerMessage) {
        let welcomed = matches!(reply, ServerMessage::Welcome(_));
        let undecided = self.conns.get(&conn).is_some_and(|c| !c.ring_decided);
        if !welcomed || !undecided {
            return;
        }
        let ring = self.chance(50).then(|| self.rand(1, 64));
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.ring_decided = true;
        let Some(len) = ring else {
            return;
        };
        c.ring = Some(SimRing {
            memory: vec![0; len as usize],
            placer: None,
            taker: RingTaker::new(len),
            told: 0,
        });
        self.trace
            .line(self.now, format_args!("conn{conn} offers a ring of {len}"));
        let offer = ClientMessage::OfferRing {
            fd: 0,
            len,
            token: 0,
        };
        self.send_to_server(conn, &offer);
    }

    /// The leader's session heard the offer: its answers may go through the ring.
    pub(super) fn ring_offered(&mut self, conn: ConnId, len: u64) {
        let Some(ring) = self.conns.get_mut(&conn).and_then(|c| c.ring.as_mut()) else {
            self.violations.push(format!(
                "conn{conn}: a ring offered that the follower never made"
            ));
            return;
        };
        if ring.memory.len() as u64 != len {
            self.violations.push(format!(
                "conn{conn}: a ring offered as {len} bytes, made otherwise"
            ));
            return;
        }
        ring.placer = Some(RingPlacer::new(len).with_bugs(&self.injection.bugs));
    }

    /// What a leader sends on `conn` instead of `message` once its value lies in the ring,
    /// if the ring has room for it.
    pub(super) fn through_ring(
        &mut self,
        conn: ConnId,
        message: &ServerMessage,
    ) -> Option<ServerMessage> {
        let ring = self.conns.get_mut(&conn)?.ring.as_mut()?;
        let SimRing {
            memory,
            placer: Some(placer),
            told,
            ..
        } = ring
        else {
            return None;
        };
        let in_ring = placer.place_answer(
            message,
            1,
            || *told,
            |at, value| {
                memory[at as usize..at as usize + value.len()].copy_from_slice(value);
                true
            },
        )?;
        if let ServerMessage::ReplyInRing { id, end, len } = &in_ring {
            self.trace.line(
                self.now,
                format_args!("conn{conn} {id:?}: {len} bytes in the ring up to {end}"),
            );
        }
        Some(in_ring)
    }

    /// A message the client end of `conn` took from the socket, with a value the leader put
    /// in the ring taken out of it; `None` (a violation) if the ring does not hold it.
    pub(super) fn out_of_ring(
        &mut self,
        conn: ConnId,
        reply: ServerMessage,
    ) -> Option<ServerMessage> {
        let ring = self.conns.get_mut(&conn).and_then(|c| c.ring.as_mut());
        let taken = match ring {
            Some(SimRing { memory, taker, .. }) => taker.take_answer(reply, |at, len| {
                Some(memory[at as usize..(at + len) as usize].to_vec())
            }),
            None if matches!(reply, ServerMessage::ReplyInRing { .. }) => Err(RingError::NoRing),
            None => Ok(reply),
        };
        taken
            .inspect_err(|error| self.violations.push(format!("conn{conn}: {error}")))
            .ok()
    }

    /// After the client end of `conn` read what arrived: the leader may read how far it
    /// took the ring's values.
    pub(super) fn tell_ring_taken(&mut self, conn: ConnId) {
        if let Some(ring) = self.conns.get_mut(&conn).and_then(|c| c.ring.as_mut()) {
            ring.told = ring.taker.position();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leader's session must pass on the length of the ring its follower made:
    /// another, shorter or longer, is a violation; the same one arms the leader's placer.
    #[test]
    fn a_ring_offered_otherwise_than_made_is_caught() {
        for told in [7, 8, 9] {
            let (mut world, conn) = World::connected();
            world.conns.get_mut(&conn).unwrap().ring = Some(SimRing {
                memory: vec![0; 8],
                placer: None,
                taker: RingTaker::new(8),
                told: 0,
            });
            world.ring_offered(conn, told);
            let armed = world.conns[&conn].ring.as_ref().unwrap().placer.is_some();
            if told == 8 {
                assert!(
                    armed && world.violations.is_empty(),
                    "{:?}",
                    world.violations
                );
            } else {
                assert!(
                    !armed && world.violations.len() == 1,
                    "{told}: {:?}",
                    world.violations
                );
            }
        }
    }

    /// A value said to lie in a ring on a connection whose follower made none is a
    /// violation, and the answer is dropped; an answer on the socket passes as it is.
    #[test]
    fn a_value_in_a_ring_never_made_is_caught() {
        let (mut world, conn) = World::connected();
        let on_socket = ServerMessage::Reply {
            id: RequestId(2),
            result: Ok(party_proto::wire::Response::Value(None)),
        };
        assert_eq!(world.out_of_ring(conn, on_socket.clone()), Some(on_socket));
        let in_ring = ServerMessage::ReplyInRing {
            id: RequestId(1),
            end: 4,
            len: 4,
        };
        assert_eq!(world.out_of_ring(conn, in_ring), None);
        assert_eq!(
            world.violations,
            [format!("conn{conn}: {}", RingError::NoRing)]
        );
    }
}

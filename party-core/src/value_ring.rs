//! The ring big answers come through (see `party_proto::wire::ring` for how values are
//! placed in it): a follower offers one once a big value has come through the socket, a
//! memory file of its own (`memfd`) sealed against shrinking; its leader opens the same
//! file through the follower's descriptor in `/proc` (the follower runs as the leader's
//! user: see `admit_peer`), and both map it. Where either step fails, nothing changes:
//! values go through the socket, as to a follower that offered none.

use std::sync::atomic::Ordering::{Acquire, Release};

use party_proto::wire::{
    ring_answer, ClientMessage, RingError, RingPlacer, RingTaker, ServerMessage, LEND_AT,
};

use crate::shared_memory::SharedMemory;

/// Bytes before the ring's values: the follower's position, the offer's token, then room
/// up to a page, so that the values start on one.
const HEADER: u64 = 4096;

/// Where the offer's token lies in the ring's file.
#[cfg(not(loom))]
const TOKEN_AT: usize = 8;

/// A follower's offer of a ring, as its leader's session passes it on.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RingOffer {
    pub fd: u32,
    pub len: u64,
    pub token: u64,
}

/// Bytes of values a ring holds at once: 64 answers of 64 KiB, or four of 1 MiB. Its
/// pages take memory only once written, in the follower and its leader alike.
const RING_LEN: u64 = 4 * 1024 * 1024;

/// A follower's side of its connection's ring: none until a big value comes through the
/// socket, then one, offered to the leader with the next requests.
#[derive(Debug)]
pub struct FollowerRing {
    may_offer: bool,
    ring: Option<(SharedMemory, RingTaker)>,
    offer: Option<ClientMessage>,
    /// The position last told to the leader.
    told: u64,
}

impl FollowerRing {
    /// With `may_offer` false it never offers one: a recording handle keeps every byte it
    /// reads, and a value in the ring is not among them.
    pub fn new(may_offer: bool) -> Self {
        FollowerRing {
            may_offer,
            ring: None,
            offer: None,
            told: 0,
        }
    }

    /// `message`, with a value the leader placed in the ring taken out of it (a `Reply`
    /// again); an error if the leader named what the ring does not hold.
    pub fn resolve(&mut self, message: ServerMessage) -> Result<ServerMessage, RingError> {
        if let Some((memory, taker)) = &mut self.ring {
            return taker.take_answer(message, |at, len| {
                memory.read((HEADER + at) as usize, len as usize)
            });
        }
        if matches!(message, ServerMessage::ReplyInRing { .. }) {
            return Err(RingError::NoRing);
        }
        if self.may_offer && ring_answer(&message, LEND_AT).is_some() {
            self.may_offer = false;
            match offer_ring() {
                Ok((memory, offer)) => {
                    self.ring = Some((memory, RingTaker::new(RING_LEN)));
                    self.offer = Some(offer);
                }
                Err(error) => tracing::debug!("big answers stay on the socket: {error}"),
            }
        }
        Ok(message)
    }

    /// The offer to send, once.
    pub fn take_offer(&mut self) -> Option<ClientMessage> {
        self.offer.take()
    }

    /// Tells the leader how far the values are taken, if further than it was told: after
    /// each read of the socket, not after each value, which would cost the leader's core a
    /// cache line's trip for each.
    pub fn tell_taken(&mut self) {
        if let Some((memory, taker)) = &self.ring {
            if taker.position() != self.told {
                self.told = taker.position();
                memory.counter().store(self.told, Release);
            }
        }
    }
}

/// A new ring, mapped, and the message that offers it.
#[cfg(all(target_os = "linux", not(loom)))]
fn offer_ring() -> std::io::Result<(SharedMemory, ClientMessage)> {
    use rustix::fs::{MemfdFlags, SealFlags};
    use std::os::fd::AsRawFd;
    let fd = rustix::fs::memfd_create(
        "party-ring",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let file = std::fs::File::from(fd);
    file.set_len(HEADER + RING_LEN)?;
    rustix::fs::fcntl_add_seals(&file, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
    let token = crate::db::random_u64();
    let offer = ClientMessage::OfferRing {
        fd: u32::try_from(file.as_raw_fd()).map_err(std::io::Error::other)?,
        len: RING_LEN,
        token,
    };
    let memory = SharedMemory::map(file)?;
    memory.write(TOKEN_AT, &token.to_le_bytes());
    Ok((memory, offer))
}

#[cfg(any(not(target_os = "linux"), loom))]
fn offer_ring() -> std::io::Result<(SharedMemory, ClientMessage)> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// A leader's side of a follower's ring.
#[derive(Debug)]
pub struct LeaderRing {
    memory: SharedMemory,
    placer: RingPlacer,
}

impl LeaderRing {
    /// Opens the ring that process `pid` offered.
    #[cfg(not(loom))]
    pub fn open(pid: i32, offer: RingOffer) -> std::io::Result<LeaderRing> {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/fd/{}", offer.fd))?;
        let memory = SharedMemory::map(file)?;
        let len = offer.len;
        if len == 0 || memory.file().metadata()?.len() < HEADER.saturating_add(len) {
            return Err(std::io::Error::other("a ring shorter than offered"));
        }
        if memory.read(TOKEN_AT, 8).as_deref() != Some(&offer.token.to_le_bytes()[..]) {
            return Err(std::io::Error::other("a file that is not the ring offered"));
        }
        Ok(LeaderRing {
            memory,
            placer: RingPlacer::new(len),
        })
    }

    /// The message to send for `message`: an answer whose big value is now in the ring,
    /// where it has room, with the bytes placed; otherwise `message` as it was, and 0.
    pub fn place(&mut self, message: ServerMessage) -> (ServerMessage, usize) {
        let memory = &self.memory;
        let in_ring = self.placer.place_answer(
            &message,
            LEND_AT,
            || memory.counter().load(Acquire),
            |at, value| memory.write((HEADER + at) as usize, value),
        );
        match in_ring {
            Some(in_ring @ ServerMessage::ReplyInRing { len, .. }) => (in_ring, len as usize),
            _ => (message, 0),
        }
    }
}

/// A follower's ring of `len` bytes, offered, and its leader's end of it: for the loom
/// models, where the two are threads sharing a `SharedMemory` rather than processes mapping
/// one file.
#[cfg(loom)]
pub fn offered_ring(len: u64) -> (FollowerRing, LeaderRing) {
    let memory = SharedMemory::new((HEADER + len) as usize);
    let follower = FollowerRing {
        may_offer: false,
        ring: Some((memory.clone(), RingTaker::new(len))),
        offer: None,
        told: 0,
    };
    let leader = LeaderRing {
        memory,
        placer: RingPlacer::new(len),
    };
    (follower, leader)
}

#[cfg(all(test, target_os = "linux", not(loom)))]
mod tests {
    use super::*;
    use bytes::Bytes;
    use party_proto::wire::Response;
    use party_proto::RequestId;

    fn answer(id: u64, value: Vec<u8>) -> ServerMessage {
        ServerMessage::Reply {
            id: RequestId(id),
            result: Ok(Response::Value(Some(Bytes::from(value)))),
        }
    }

    /// A value of `len` bytes, each byte telling `n` apart.
    fn marked(n: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|at| (n as usize * 31 + at * 7) as u8)
            .collect()
    }

    /// A follower's ring, offered, and its leader's end of it (here, the same process).
    fn ring_pair() -> (FollowerRing, LeaderRing) {
        let mut follower = FollowerRing::new(true);
        let first = answer(0, marked(0, LEND_AT));
        assert_eq!(follower.resolve(first.clone()), Ok(first));
        let offer = take_offer(&mut follower);
        assert_eq!(follower.take_offer(), None, "offered twice");
        (
            follower,
            LeaderRing::open(own_pid(), offer).expect("the ring opens"),
        )
    }

    fn take_offer(follower: &mut FollowerRing) -> RingOffer {
        match follower.take_offer() {
            Some(ClientMessage::OfferRing { fd, len, token }) => RingOffer { fd, len, token },
            other => panic!("no ring offered after a big value: {other:?}"),
        }
    }

    fn own_pid() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    /// A leader opens only the file the follower offered: one whose token differs (a
    /// process id naming another process), one shorter than said, or a file that can
    /// shrink, is left alone.
    #[test]
    fn a_leader_opens_only_the_ring_offered() {
        let mut follower = FollowerRing::new(true);
        follower.resolve(answer(0, marked(0, LEND_AT))).unwrap();
        let offer = take_offer(&mut follower);
        let other_token = RingOffer {
            token: offer.token ^ 1,
            ..offer
        };
        assert!(LeaderRing::open(own_pid(), other_token).is_err());
        let longer = RingOffer {
            len: offer.len + 1,
            ..offer
        };
        assert!(LeaderRing::open(own_pid(), longer).is_err());
        // A ring of no bytes holds no value: one offered is refused, not counted in.
        let empty = RingOffer { len: 0, ..offer };
        assert!(LeaderRing::open(own_pid(), empty).is_err());
        let unsealed = std::fs::File::from(
            rustix::fs::memfd_create("party-ring", rustix::fs::MemfdFlags::ALLOW_SEALING).unwrap(),
        );
        unsealed.set_len(HEADER + offer.len).unwrap();
        std::os::unix::fs::FileExt::write_all_at(
            &unsealed,
            &offer.token.to_le_bytes(),
            TOKEN_AT as u64,
        )
        .unwrap();
        let unsealed = RingOffer {
            fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&unsealed)).unwrap(),
            ..offer
        };
        assert!(LeaderRing::open(own_pid(), unsealed).is_err());
        assert!(LeaderRing::open(own_pid(), offer).is_ok());
    }

    /// Values of varied sizes go round the ring many times and come out whole; once the
    /// ring is full the rest go as they are, and room comes back as the follower says it
    /// took them.
    #[test]
    fn values_go_round_the_ring_whole_and_wait_for_room() {
        let (mut follower, mut leader) = ring_pair();
        let mut placed_bytes = 0;
        let mut by_socket = 0;
        for round in 0..6u64 {
            let mut sent = Vec::new();
            for n in 0..24u64 {
                let id = round * 100 + n;
                let len = LEND_AT + ((id * 40_503) % (600 * 1024)) as usize;
                let (message, placed) = leader.place(answer(id, marked(id, len)));
                match &message {
                    ServerMessage::ReplyInRing { .. } => assert_eq!(placed, len),
                    _ => {
                        assert_eq!(placed, 0);
                        by_socket += 1;
                    }
                }
                placed_bytes += placed;
                sent.push((id, len, message));
            }
            for (id, len, message) in sent {
                assert_eq!(follower.resolve(message), Ok(answer(id, marked(id, len))));
            }
            follower.tell_taken();
        }
        assert!(
            placed_bytes as u64 > 4 * RING_LEN,
            "the ring went round {placed_bytes}"
        );
        assert!(by_socket > 0, "the ring never filled");
    }

    /// Small values, and any value before the follower offered a ring, stay where they
    /// were; a recording follower never offers one.
    #[test]
    fn only_big_values_to_a_ring_that_was_offered_go_through_it() {
        let (_, mut leader) = ring_pair();
        let small = answer(1, marked(1, LEND_AT - 1));
        assert_eq!(leader.place(small.clone()), (small, 0));
        let mut recording = FollowerRing::new(false);
        let big = answer(2, marked(2, 4 * LEND_AT));
        assert_eq!(recording.resolve(big.clone()), Ok(big));
        assert_eq!(recording.take_offer(), None);
    }

    /// A leader naming a value a follower's ring does not hold breaks the connection.
    #[test]
    fn a_value_the_ring_does_not_hold_is_refused() {
        let in_ring = |end, len| ServerMessage::ReplyInRing {
            id: RequestId(9),
            end,
            len,
        };
        let mut no_ring = FollowerRing::new(true);
        assert_eq!(no_ring.resolve(in_ring(10, 10)), Err(RingError::NoRing));
        let (mut follower, mut leader) = ring_pair();
        let (first, _) = leader.place(answer(3, marked(3, LEND_AT)));
        assert!(follower.resolve(first).is_ok());
        // The same value again lies behind what the follower took.
        let end = LEND_AT as u64;
        assert!(matches!(
            follower.resolve(in_ring(end, LEND_AT as u32)),
            Err(RingError::Behind { .. })
        ));
    }

    /// The follower tells its position through the ring's counter, where its leader reads
    /// it; only once it moved.
    #[test]
    fn the_follower_tells_its_leader_how_far_it_took_the_values() {
        let (mut follower, mut leader) = ring_pair();
        let (message, _) = leader.place(answer(4, marked(4, 3 * LEND_AT)));
        assert_eq!(leader.memory.counter().load(Acquire), 0);
        follower.resolve(message).unwrap();
        follower.tell_taken();
        assert_eq!(leader.memory.counter().load(Acquire), 3 * LEND_AT as u64);
    }
}

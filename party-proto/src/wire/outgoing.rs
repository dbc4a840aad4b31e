//! Frames on their way out, with big values lent rather than copied: a value the store
//! lends to a leader's answer (a [`Bytes`]), or a put's value a follower keeps for a
//! re-send, is written to the socket from where it lies, beside the bytes encoded around
//! it. The bytes sent are those of [`encode_frame`](super::encode_frame) for the same
//! messages, only gathered from more places.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;
use postcard::ser_flavors::Flavor;
use serde::Serialize;

use super::frame::{close_frame, FrameError, HEADER_LEN};
use super::message::{ClientMessage, Response, ServerMessage, WriteOp};

/// Values from this size on are lent; below it, a copy costs less than keeping the value
/// and one more slice in the write.
pub const LEND_AT: usize = 16 * 1024;

/// Encoded frames waiting to be sent, with the values they lend.
#[derive(Debug)]
pub struct Outgoing {
    encoded: Vec<u8>,
    /// Each lent value, in order, with the place in `encoded` it goes before.
    lent: Vec<(usize, Bytes)>,
    lent_len: usize,
    /// Values from this size on are lent.
    lend_at: usize,
}

impl Default for Outgoing {
    fn default() -> Self {
        Outgoing::lending_from(LEND_AT)
    }
}

impl Outgoing {
    /// Lends values from `lend_at` bytes on (the simulator lends small ones, to run this
    /// path under every seed).
    pub fn lending_from(lend_at: usize) -> Self {
        Outgoing {
            encoded: Vec::new(),
            lent: Vec::new(),
            lent_len: 0,
            lend_at,
        }
    }

    /// Appends `message` as one frame, lending `lendable` (a value the message holds) if it
    /// is big enough. On error nothing is appended.
    pub fn push<M: Serialize>(
        &mut self,
        message: &M,
        lendable: Option<&Bytes>,
        max_frame_len: u32,
    ) -> Result<(), FrameError> {
        let frame_start = self.encoded.len();
        let lent_before = (self.lent.len(), self.lent_len);
        self.encoded.extend_from_slice(&[0; HEADER_LEN]);
        let lend_at = self.lend_at;
        let lending = Lending {
            outgoing: self,
            lendable: lendable.filter(|value| value.len() >= lend_at),
        };
        let encoded = postcard::serialize_with_flavor(message, lending).map_err(FrameError::Encode);
        let body_len =
            self.encoded.len() - frame_start - HEADER_LEN + self.lent_len - lent_before.1;
        let closed = close_frame(
            &mut self.encoded,
            frame_start,
            encoded.map(|()| body_len),
            max_frame_len,
        );
        if closed.is_err() {
            self.lent.truncate(lent_before.0);
            self.lent_len = lent_before.1;
        }
        closed
    }

    /// Appends a message of a leader, lending the value of an answer to a get.
    #[inline]
    pub fn push_server(
        &mut self,
        message: &ServerMessage,
        max_frame_len: u32,
    ) -> Result<(), FrameError> {
        let lendable = match message {
            ServerMessage::Reply {
                result: Ok(Response::Value(Some(value))),
                ..
            } => Some(value),
            _ => None,
        };
        self.push(message, lendable, max_frame_len)
    }

    /// Appends a message of a follower, lending the value of a put: the operation the
    /// message shares with the client's copy kept for a re-send.
    #[inline]
    pub fn push_client(
        &mut self,
        message: &ClientMessage,
        max_frame_len: u32,
    ) -> Result<(), FrameError> {
        let lendable = match message {
            ClientMessage::Write { op, .. } => match &**op {
                WriteOp::Put { value, .. } if value.len() >= self.lend_at => {
                    Some(Bytes::from_owner(PutValue(Arc::clone(op))))
                }
                _ => None,
            },
            _ => None,
        };
        self.push(message, lendable.as_ref(), max_frame_len)
    }

    /// The bytes from `from` on, when they lie in one piece: no value was lent among them
    /// (a recording handle, which keeps every frame it sends, lends none).
    #[inline]
    pub fn tail(&self, from: usize) -> Option<&[u8]> {
        let lent_end = self
            .lent
            .last()
            .map_or(0, |(before, _)| before + self.lent_len);
        if from < lent_end {
            return None;
        }
        self.encoded.get(from - self.lent_len..)
    }

    /// Takes the frames out, leaving this empty and lending as before.
    #[inline]
    pub fn take(&mut self) -> Outgoing {
        std::mem::replace(self, Outgoing::lending_from(self.lend_at))
    }

    /// Bytes waiting, lent ones included.
    #[inline]
    pub fn len(&self) -> usize {
        self.encoded.len() + self.lent_len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `into` with the bytes from `from` on, in order, as far as it has room: how many
    /// slices it filled (none once `from` is at the end).
    #[inline]
    pub fn slices<'a>(&'a self, from: usize, into: &mut [IoSlice<'a>]) -> usize {
        let mut skip = from;
        let mut filled = 0;
        for piece in self.pieces() {
            if filled == into.len() {
                break;
            }
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            into[filled] = IoSlice::new(&piece[skip..]);
            skip = 0;
            filled += 1;
        }
        filled
    }

    /// Forgets every frame, keeping the room for encoding of at most `keep` bytes.
    #[inline]
    pub fn clear(&mut self, keep: usize) {
        self.encoded.clear();
        if self.encoded.capacity() > keep {
            self.encoded = Vec::new();
        }
        self.lent.clear();
        self.lent_len = 0;
    }

    /// The bytes in order: encoded runs between the lent values.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        let lent = self.lent.iter().flat_map(move |(before, value)| {
            let run = &self.encoded[at..*before];
            at = *before;
            [run, &value[..]]
        });
        let last = self.lent.last().map_or(0, |(before, _)| *before);
        lent.chain(std::iter::once(&self.encoded[last..]))
            .filter(|piece| !piece.is_empty())
    }
}

/// A put's value, lent out of the operation that holds it.
struct PutValue(Arc<WriteOp>);

impl AsRef<[u8]> for PutValue {
    fn as_ref(&self) -> &[u8] {
        match &*self.0 {
            WriteOp::Put { value, .. } => value,
            _ => &[],
        }
    }
}

/// A postcard output that appends to an [`Outgoing`], keeping back the one value it may lend.
struct Lending<'a> {
    outgoing: &'a mut Outgoing,
    lendable: Option<&'a Bytes>,
}

impl Flavor for Lending<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.outgoing.encoded.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // The value itself, not bytes equal to it: lent once, where it is written.
        match self.lendable {
            Some(value) if std::ptr::eq(data, &value[..]) => {
                let outgoing = &mut *self.outgoing;
                outgoing.lent.push((outgoing.encoded.len(), value.clone()));
                outgoing.lent_len += value.len();
                self.lendable = None;
            }
            _ => self.outgoing.encoded.extend_from_slice(data),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

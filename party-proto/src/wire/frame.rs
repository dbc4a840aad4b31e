//! Length-prefixed frames: a 4-byte little-endian body length, then a postcard body.
//!
//! The decoder takes bytes in any chunking. A frame that arrives whole is decoded straight
//! from the caller's buffer; only a frame split across reads is copied, and only after its
//! header has passed the size cap, so the decoder never holds more than one frame. The rest
//! of a big frame can be read straight into the decoder ([`FrameDecoder::unfinished_frame`]),
//! which saves that copy for big values.

use bytes::buf::{BufMut, Limit};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ErrorCode;
use crate::wire::ProtocolId;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The default cap on a frame body: 64 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 64 * 1024 * 1024;

/// Room a frame decoder makes for a frame ahead of what has arrived of it, when less than
/// this has: a frame of up to about this size is held in one allocation from its start.
const RESERVE_AHEAD: usize = 1024 * 1024;

/// Least room a frame decoder keeps ahead for the rest of a frame, read into it.
const MIN_ROOM: usize = 64 * 1024;

/// Why bytes could not be turned into a message, or a message into a frame. Every variant
/// means the connection can no longer be trusted and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("frame does not decode: {0}")]
    Malformed(#[source] postcard::Error),
    #[error("frame has {extra} bytes after its message")]
    TrailingBytes { extra: usize },
    /// The frame does not decode, but it is a handshake (a hello or a welcome) of another
    /// protocol or version, whose layout may differ: said so, rather than as garbage.
    #[error("a handshake of protocol {got}")]
    OtherProtocol { got: ProtocolId },
    #[error("message does not encode: {0}")]
    Encode(#[source] postcard::Error),
}

impl From<FrameError> for ErrorCode {
    fn from(error: FrameError) -> ErrorCode {
        match error {
            FrameError::TooLarge { len, max } => ErrorCode::FrameTooLarge { len, max },
            FrameError::OtherProtocol { got } => ErrorCode::ProtocolMismatch {
                expected: ProtocolId::CURRENT,
                got,
            },
            other => ErrorCode::Malformed(other.to_string()),
        }
    }
}

/// Appends `message` to `out` as one frame. On error `out` is left as it was.
pub fn encode_frame<M: Serialize>(
    message: &M,
    max_frame_len: u32,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let frame_start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    let encoded = postcard::to_io(message, &mut *out)
        .map(drop)
        .map_err(FrameError::Encode);
    let body_len = out.len() - frame_start - HEADER_LEN;
    close_frame(out, frame_start, encoded.map(|()| body_len), max_frame_len)
}

/// Writes the header of the frame begun at `frame_start` of `out`, whose body is `body_len`
/// bytes long; or, when the body did not encode or is over the cap, takes the frame out
/// again.
pub(super) fn close_frame(
    out: &mut Vec<u8>,
    frame_start: usize,
    body_len: Result<usize, FrameError>,
    max_frame_len: u32,
) -> Result<(), FrameError> {
    let checked = body_len.and_then(|len| match u32::try_from(len) {
        Ok(len) if len <= max_frame_len => Ok(len),
        _ => Err(FrameError::TooLarge {
            len: len as u64,
            max: u64::from(max_frame_len),
        }),
    });
    match checked {
        Ok(len) => {
            out[frame_start..frame_start + HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(error) => {
            out.truncate(frame_start);
            Err(error)
        }
    }
}

/// Turns a byte stream back into messages.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_len: u32,
    /// The start of a frame that did not arrive whole; empty between frames.
    partial: Vec<u8>,
    /// The first error; once set, the stream is not read any further.
    failed: Option<FrameError>,
}

impl FrameDecoder {
    pub fn new(max_frame_len: u32) -> Self {
        FrameDecoder {
            max_frame_len,
            partial: Vec::new(),
            failed: None,
        }
    }

    /// Decodes the next message from `input`, advancing `input` past the bytes used.
    ///
    /// Returns `Ok(None)` once `input` is used up without completing a frame (the start of
    /// that frame is kept for the next call). After an error every call returns that error.
    pub fn decode<M: DeserializeOwned>(
        &mut self,
        input: &mut &[u8],
    ) -> Result<Option<M>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.decode_unchecked(input);
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.partial = Vec::new();
        }
        result
    }

    /// Takes frames up to `max_frame_len` bytes from now on.
    pub fn set_max_frame_len(&mut self, max_frame_len: u32) {
        self.max_frame_len = max_frame_len;
    }

    /// Bytes held from a frame that has not arrived whole.
    pub fn buffered_len(&self) -> usize {
        self.partial.len()
    }

    /// Room for the rest of the frame under way, to read it into straight from the stream,
    /// when at least `at_least` bytes of it are still missing; `None` between frames (and
    /// after an error). It ends where the frame does, so a read into it takes nothing of the
    /// next frame. What is written there is part of the frame: the next [`decode`] call (with
    /// no new input, if need be) returns the message once the frame is whole.
    ///
    /// [`decode`]: FrameDecoder::decode
    pub fn unfinished_frame(&mut self, at_least: usize) -> Option<Limit<&mut Vec<u8>>> {
        if self.failed.is_some() || self.partial.len() < HEADER_LEN {
            return None;
        }
        // A cap lowered since the header came is told by the next decode.
        let body_len = self.checked_body_len(&self.partial[..HEADER_LEN]).ok()?;
        let missing = HEADER_LEN + body_len - self.partial.len();
        if missing < at_least.max(1) {
            return None;
        }
        self.reserve_for(missing, 0);
        Some((&mut self.partial).limit(missing))
    }

    fn decode_unchecked<M: DeserializeOwned>(
        &mut self,
        input: &mut &[u8],
    ) -> Result<Option<M>, FrameError> {
        if self.partial.is_empty() && input.len() >= HEADER_LEN {
            let body_len = self.checked_body_len(&input[..HEADER_LEN])?;
            if let Some(body) = input.get(HEADER_LEN..HEADER_LEN + body_len) {
                *input = &input[HEADER_LEN + body_len..];
                return decode_body(body).map(Some);
            }
        }

        let header_missing = HEADER_LEN.saturating_sub(self.partial.len());
        if header_missing > 0 {
            self.take(input, header_missing);
            if self.partial.len() < HEADER_LEN {
                return Ok(None);
            }
        }
        let body_len = self.checked_body_len(&self.partial[..HEADER_LEN])?;
        let body_missing = HEADER_LEN + body_len - self.partial.len();
        self.reserve_for(body_missing, input.len());
        self.take(input, body_missing);
        if self.partial.len() < HEADER_LEN + body_len {
            return Ok(None);
        }
        let frame = std::mem::take(&mut self.partial);
        decode_body(&frame[HEADER_LEN..]).map(Some)
    }

    /// Makes room for a frame of which `missing` bytes have not been taken yet, `at_hand` of
    /// them about to be: a big value arrives in many reads, and growing a little at a time
    /// would copy it again and again. So it grows only when the room left is short of what
    /// is at hand (or of [`MIN_ROOM`]), and then by as much as the frame will hold (or
    /// [`RESERVE_AHEAD`]): a frame moves a few times whatever its size, a header alone does
    /// not reserve what it claims, and a frame little bigger than that gets all its room.
    fn reserve_for(&mut self, missing: usize, at_hand: usize) {
        let room_left = self.partial.capacity() - self.partial.len();
        if room_left >= at_hand.max(MIN_ROOM).min(missing) {
            return;
        }
        let ahead = at_hand.saturating_add((self.partial.len() + at_hand).max(RESERVE_AHEAD));
        let whole_frame_within = ahead.saturating_add(ahead / 4);
        let room = if missing <= whole_frame_within {
            missing
        } else {
            ahead
        };
        self.partial.reserve_exact(room);
    }

    fn take(&mut self, input: &mut &[u8], wanted: usize) {
        let (taken, rest) = input.split_at(wanted.min(input.len()));
        self.partial.extend_from_slice(taken);
        *input = rest;
    }

    fn checked_body_len(&self, header: &[u8]) -> Result<usize, FrameError> {
        let mut len_bytes = [0; HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let len = u32::from_le_bytes(len_bytes);
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len: u64::from(len),
                max: u64::from(self.max_frame_len),
            });
        }
        // A u32 always fits in usize on the 32- and 64-bit targets party builds for.
        Ok(len as usize)
    }
}

fn decode_body<M: DeserializeOwned>(body: &[u8]) -> Result<M, FrameError> {
    let decoded = match postcard::take_from_bytes(body) {
        Ok((message, [])) => return Ok(message),
        Ok((_, rest)) => FrameError::TrailingBytes { extra: rest.len() },
        Err(error) => FrameError::Malformed(error),
    };
    Err(handshake_protocol(body)
        .filter(|got| *got != ProtocolId::CURRENT)
        .map_or(decoded, |got| FrameError::OtherProtocol { got }))
}

/// The protocol named by a frame that starts as a handshake does in every version: the
/// first variant (`Hello` from a client, `Welcome` from a leader), its protocol id first.
fn handshake_protocol(body: &[u8]) -> Option<ProtocolId> {
    let (variant, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    let (protocol, _) = postcard::take_from_bytes::<ProtocolId>(rest).ok()?;
    (variant == 0 && protocol.magic == crate::wire::MAGIC).then_some(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hello of another version whose layout differs is still told apart from garbage,
    /// so both ends can say "protocol mismatch" whatever the next version adds to it.
    #[test]
    fn a_handshake_of_another_layout_is_named_by_its_protocol() {
        let old = ProtocolId {
            version: 4,
            ..ProtocolId::CURRENT
        };
        // A hello of version 4: a protocol id and a client id, nothing after.
        let mut frame = Vec::new();
        encode_frame(&(0u32, old, 7u128), 1024, &mut frame).unwrap();
        let mut input = frame.as_slice();
        let error = FrameDecoder::new(1024)
            .decode::<crate::wire::ClientMessage>(&mut input)
            .unwrap_err();
        assert_eq!(error, FrameError::OtherProtocol { got: old });
        // The same bytes claiming this very version, or not a party magic, or not the
        // handshake's variant, are malformed, not a mismatch.
        let http = ProtocolId {
            magic: *b"HTTP",
            ..old
        };
        for body in [
            (0u32, ProtocolId::CURRENT, 7u128),
            (0u32, http, 7u128),
            (1u32, old, 7u128),
        ] {
            let mut frame = Vec::new();
            encode_frame(&body, 1024, &mut frame).unwrap();
            let mut input = frame.as_slice();
            let error = FrameDecoder::new(1024)
                .decode::<crate::wire::ClientMessage>(&mut input)
                .unwrap_err();
            assert!(
                !matches!(error, FrameError::OtherProtocol { .. }),
                "{body:?}: {error:?}"
            );
        }
    }

    /// A frame over the cap and another protocol's handshake each keep their own error
    /// code, which the caller acts on (a smaller write; an upgrade), not `Malformed`.
    #[test]
    fn frame_errors_keep_their_causes_as_error_codes() {
        let other = ProtocolId {
            version: 4,
            ..ProtocolId::CURRENT
        };
        assert_eq!(
            ErrorCode::from(FrameError::TooLarge { len: 17, max: 16 }),
            ErrorCode::FrameTooLarge { len: 17, max: 16 }
        );
        assert_eq!(
            ErrorCode::from(FrameError::OtherProtocol { got: other }),
            ErrorCode::ProtocolMismatch {
                expected: ProtocolId::CURRENT,
                got: other
            }
        );
        assert!(matches!(
            ErrorCode::from(FrameError::TrailingBytes { extra: 1 }),
            ErrorCode::Malformed(_)
        ));
    }

    #[test]
    fn a_header_over_the_cap_fails_before_any_body_arrives() {
        let mut decoder = FrameDecoder::new(16);
        let mut input: &[u8] = &17u32.to_le_bytes();
        let error = decoder.decode::<u8>(&mut input).unwrap_err();
        assert_eq!(error, FrameError::TooLarge { len: 17, max: 16 });
        assert_eq!(decoder.buffered_len(), 0);
        let mut more: &[u8] = &[1, 0, 0, 0, 7];
        assert_eq!(decoder.decode::<u8>(&mut more), Err(error), "errors stick");
    }

    /// A follower takes its leader's larger frames once welcomed: a cap moved holds from
    /// the next frame, up or down.
    #[test]
    fn a_cap_moved_holds_from_the_next_frame() {
        let mut stream = Vec::new();
        encode_frame(&vec![5u8; 20], u32::MAX, &mut stream).unwrap();
        let mut decoder = FrameDecoder::new(16);
        decoder.set_max_frame_len(32);
        let mut input = stream.as_slice();
        assert_eq!(decoder.decode(&mut input), Ok(Some(vec![5u8; 20])));
        decoder.set_max_frame_len(20);
        let mut input = stream.as_slice();
        assert_eq!(
            decoder.decode::<Vec<u8>>(&mut input),
            Err(FrameError::TooLarge { len: 21, max: 20 })
        );
    }

    #[test]
    fn encoding_over_the_cap_leaves_the_buffer_untouched() {
        let mut out = vec![9];
        let error = encode_frame(&vec![0u8; 100], 10, &mut out).unwrap_err();
        assert!(matches!(error, FrameError::TooLarge { max: 10, .. }));
        assert_eq!(out, vec![9]);
    }

    /// A big value's frame read in pieces: its rest goes straight into the decoder, up to
    /// its end and not a byte further, and the frame after it is decoded from the input.
    #[test]
    fn the_rest_of_a_big_frame_is_read_into_the_decoder_up_to_its_end() {
        let value: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut stream = Vec::new();
        encode_frame(&value, u32::MAX, &mut stream).unwrap();
        encode_frame(&7u8, u32::MAX, &mut stream).unwrap();
        let mut decoder = FrameDecoder::new(u32::MAX);
        assert!(decoder.unfinished_frame(1).is_none(), "between frames");
        let mut input = &stream[..1000];
        assert_eq!(decoder.decode::<Vec<u8>>(&mut input), Ok(None));
        assert!(
            decoder.unfinished_frame(usize::MAX).is_none(),
            "less is missing"
        );
        let mut rest = &stream[1000..];
        while let Some(mut room) = decoder.unfinished_frame(1) {
            let piece = rest.len().min(room.remaining_mut()).min(30_000);
            room.put_slice(&rest[..piece]);
            rest = &rest[piece..];
        }
        assert_eq!(rest.len(), 5, "the next frame is left in the stream");
        let mut nothing: &[u8] = &[];
        assert_eq!(decoder.decode(&mut nothing), Ok(Some(value)));
        assert_eq!(decoder.decode(&mut rest), Ok(Some(7u8)));
    }

    /// A frame a little over [`RESERVE_AHEAD`] gets room for all of it with its first piece
    /// (room for exactly `RESERVE_AHEAD` made the next piece move it to a new allocation),
    /// and so it does from its header alone when its rest is read into the decoder.
    #[test]
    fn a_frame_under_way_is_given_room_ahead_of_what_arrived() {
        let value = vec![1u8; RESERVE_AHEAD + 10];
        let mut stream = Vec::new();
        encode_frame(&value, u32::MAX, &mut stream).unwrap();
        for first in [4096, 65536] {
            let mut decoder = FrameDecoder::new(u32::MAX);
            let mut input = &stream[..first];
            assert_eq!(decoder.decode::<Vec<u8>>(&mut input), Ok(None));
            assert!(
                decoder.partial.capacity() >= stream.len(),
                "after {first} bytes"
            );
        }
        let mut direct = FrameDecoder::new(u32::MAX);
        let mut header = &stream[..HEADER_LEN];
        assert_eq!(direct.decode::<Vec<u8>>(&mut header), Ok(None));
        let room = direct.unfinished_frame(1).unwrap();
        assert_eq!(room.remaining_mut(), stream.len() - HEADER_LEN);
        assert!(direct.partial.capacity() >= stream.len());
        // A header alone does not reserve what it claims, only up to RESERVE_AHEAD more.
        let mut decoder = FrameDecoder::new(u32::MAX);
        let mut header: &[u8] = &(u32::MAX - 1).to_le_bytes();
        assert_eq!(decoder.decode::<Vec<u8>>(&mut header), Ok(None));
        assert!(decoder.partial.capacity() <= 2 * RESERVE_AHEAD);
        decoder.unfinished_frame(1).unwrap();
        assert!(decoder.partial.capacity() <= 2 * RESERVE_AHEAD);
    }

    /// A frame of 8 MiB read in pieces of 64 KiB, through the decoder or straight into it,
    /// moves to a bigger allocation a few times, not at every piece.
    #[test]
    fn a_big_frame_moves_a_few_times_whatever_its_pieces() {
        let value = vec![3u8; 8 << 20];
        let mut stream = Vec::new();
        encode_frame(&value, u32::MAX, &mut stream).unwrap();
        for direct in [false, true] {
            let mut decoder = FrameDecoder::new(u32::MAX);
            let (mut moves, mut capacity) = (0, 0);
            let mut moved = |decoder: &FrameDecoder| {
                if decoder.partial.capacity() != capacity {
                    capacity = decoder.partial.capacity();
                    moves += 1;
                }
            };
            let mut rest = stream.as_slice();
            let mut decoded = None;
            while decoded.is_none() {
                let (mut piece, after) = rest.split_at(rest.len().min(64 << 10));
                rest = after;
                if direct {
                    if let Some(mut room) = decoder.unfinished_frame(1) {
                        let into = piece.len().min(room.remaining_mut());
                        room.put_slice(&piece[..into]);
                        piece = &piece[into..];
                    }
                    moved(&decoder);
                }
                decoded = decoder.decode::<Vec<u8>>(&mut piece).unwrap();
                moved(&decoder);
            }
            assert_eq!(decoded, Some(value.clone()));
            // Its first room, three doublings, let go once whole.
            assert!(
                moves <= 6,
                "{moves} moves (read into the decoder: {direct})"
            );
        }
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_refused() {
        let mut input: &[u8] = &[2, 0, 0, 0, 5, 6];
        let error = FrameDecoder::new(16).decode::<u8>(&mut input).unwrap_err();
        assert_eq!(error, FrameError::TrailingBytes { extra: 1 });
    }
}

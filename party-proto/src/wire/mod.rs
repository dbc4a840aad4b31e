//! The wire format: postcard-encoded messages in length-prefixed frames, opened by a
//! handshake that names the protocol and the client.

mod bytes;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod outgoing;
pub mod ring;

pub use frame::{encode_frame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_LEN};
pub use handshake::{Hello, LeaderLimits, ProtocolId, Welcome, MAGIC, PROTOCOL_VERSION};
pub use message::{
    BatchOp, ClientMessage, Entry, LeaderStatus, LeaveCause, ReadCheck, ReadOp, Response,
    ServerMessage, WriteOp,
};
pub use outgoing::{Outgoing, LEND_AT};
pub use ring::{ring_answer, Placed, RingError, RingPlacer, RingTaker};

//! A connection's socket send buffer, grown the first time a turn is big.
//!
//! A big value sent through the kernel's default buffer (208 KiB on Linux) goes out in many
//! writes, each waiting for the reader to make room. A bigger buffer for every connection
//! cost turns of small frames (64 KiB gets ran 5 % slower with 1 MiB buffers), so only a
//! connection that sends big turns gets one.

use interprocess::local_socket::tokio::Stream;

/// A turn of this many bytes or more grows the buffer. A leader's turn is sent once it
/// holds 256 KiB, so a run of 64 KiB answers stays below this; one 1 MiB value does not.
pub(crate) const SEND_BUFFER_GROWN_AT: usize = 512 * 1024;

/// The buffer asked for. The kernel caps it at `net.core.wmem_max` (4 MiB on this project's
/// machines, 208 KiB on many systems, where this changes nothing).
pub(crate) const GROWN_SEND_BUFFER: usize = 1024 * 1024;

/// Whether a connection's buffer was grown; it is asked for once, not at every big turn.
#[derive(Debug, Default)]
pub(crate) struct SendBuffer {
    grown: bool,
}

impl SendBuffer {
    /// Grows `stream`'s send buffer before a turn of `turn_len` bytes goes out, if the turn
    /// is big and the buffer was not grown before. A refusal only costs speed.
    pub(crate) fn before_sending(&mut self, stream: &Stream, turn_len: usize) {
        if self.grown || turn_len < SEND_BUFFER_GROWN_AT {
            return;
        }
        self.grown = true;
        if let Err(error) = grow(stream) {
            tracing::debug!("send buffer not grown: {error}");
        }
    }
}

#[cfg(unix)]
fn grow(stream: &Stream) -> std::io::Result<()> {
    let socket = crate::socket_now::gathering(stream);
    rustix::net::sockopt::set_socket_send_buffer_size(socket, GROWN_SEND_BUFFER)?;
    Ok(())
}

/// Elsewhere (Windows' pipes) the buffer is the pipe's, set when it was made.
#[cfg(not(unix))]
fn grow(_: &Stream) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::socket_now::{gathering, tests::socket_pair};
    use rustix::net::sockopt::{set_socket_send_buffer_size, socket_send_buffer_size};

    fn size(stream: &Stream) -> usize {
        socket_send_buffer_size(gathering(stream)).unwrap()
    }

    fn shrink(stream: &Stream) {
        set_socket_send_buffer_size(gathering(stream), 32 * 1024).unwrap();
    }

    #[tokio::test]
    async fn the_send_buffer_grows_at_the_first_big_turn_only() {
        let (stream, _peer) = socket_pair();
        // Small, so that growing shows whatever the system's cap.
        shrink(&stream);
        let small = size(&stream);
        let mut buffer = SendBuffer::default();
        buffer.before_sending(&stream, SEND_BUFFER_GROWN_AT - 1);
        assert_eq!(size(&stream), small, "a small turn leaves the buffer");
        buffer.before_sending(&stream, SEND_BUFFER_GROWN_AT);
        assert!(size(&stream) > small, "a big turn grows it");
        shrink(&stream);
        buffer.before_sending(&stream, 4 * SEND_BUFFER_GROWN_AT);
        assert_eq!(size(&stream), small, "asked for once only");
    }
}

//! A follower's connection to the leader. The driver reads it directly, and writes to it
//! directly while the socket takes the bytes at once; what it cannot take goes to a writer
//! task, so that a deep pipeline of requests never deadlocks on full socket buffers while
//! replies wait to be read. Each task hop saved is a wakeup saved on the way of a request.
//! The writer task is started the first time the socket is full: most links never need
//! it, and a failover then costs each follower no task to start, wake or abort.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use party_proto::wire::{
    FrameDecoder, FrameError, Outgoing, RingError, ServerMessage, DEFAULT_MAX_FRAME_LEN,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::leader::read_next;
use crate::send_buffer::SendBuffer;
use crate::socket_now::{recv_now, send_now, write_rest};
use crate::spin::Spinner;
use crate::sync::{Frames, Handed, Handover, Sink};
use crate::value_ring::FollowerRing;

/// What one read of the connection gave.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub messages: Vec<ServerMessage>,
    /// Set when the connection is gone after these messages.
    pub end: Option<LinkEnd>,
}

#[derive(Debug)]
pub(crate) enum LinkEnd {
    Closed,
    /// The leader sent bytes that do not decode.
    Garbage(FrameError),
    /// The leader named a value in the ring that the ring does not hold.
    BadRing(RingError),
}

/// A turn's frames handed to the writer task, with how many of their bytes the socket took.
type Unwritten = (Outgoing, usize);

/// An open connection to the leader. Dropping it closes the connection.
pub(crate) struct Link {
    stream: Arc<Stream>,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
    /// Whether the writer task holds buffers not yet written out.
    handover: Handover,
    /// The writer task and its queue, once the socket was first full.
    writer: Option<(UnboundedSender<Unwritten>, JoinHandle<()>)>,
    /// Grown for a big write (a put of a big value).
    send_buffer: SendBuffer,
    /// In low-latency mode, how long a wait for the leader polls before it parks.
    spinner: Option<Spinner>,
    /// Whether [`Link::last_read`] must give every byte read (for a recording), those read
    /// straight into the decoder included.
    keep_reads: bool,
    /// The ring big answers come through.
    ring: FollowerRing,
}

impl Link {
    /// Connects to the leader's socket; replies over `max_frame_len` bytes break the link
    /// (until [`Link::set_incoming_frame_limit`] moves it).
    /// With `spin`, waits for the leader's answers poll for up to that long first. With
    /// `keep_reads`, [`Link::last_read`] gives every byte read.
    pub async fn connect(
        socket: &Path,
        max_frame_len: u32,
        spin: Option<std::time::Duration>,
        keep_reads: bool,
    ) -> std::io::Result<Link> {
        let name = socket.to_fs_name::<GenericFilePath>()?;
        let stream = Arc::new(Stream::connect(name).await?);
        Ok(Link {
            stream,
            decoder: FrameDecoder::new(max_frame_len),
            buffer: crate::leader::read_buffer(),
            handover: Handover::default(),
            writer: None,
            send_buffer: SendBuffer::default(),
            spinner: spin.map(Spinner::new),
            keep_reads,
            ring: FollowerRing::new(!keep_reads),
        })
    }

    /// Takes replies up to `max_frame_len` bytes from now on.
    pub fn set_incoming_frame_limit(&mut self, max_frame_len: u32) {
        self.decoder.set_max_frame_len(max_frame_len);
    }

    /// The user the process at the other end runs as, where the platform tells.
    pub fn peer_uid(&self) -> Option<u32> {
        crate::leader::peer_uid(&self.stream)
    }

    /// Waits for what the leader sends next: every whole message of one read. `answers_due`
    /// says requests are in flight: in low-latency mode the wait then polls before it
    /// parks. Cancel-safe: nothing is lost when the future is dropped before it completes.
    pub async fn receive(&mut self, answers_due: bool) -> Received {
        let mut received = Received::default();
        // Into the buffer's spare capacity, never zeroed (see the leader's connections).
        self.buffer.clear();
        let polled = match &mut self.spinner {
            Some(spinner) if answers_due => {
                let (stream, buffer) = (&*self.stream, &mut self.buffer);
                spinner.spin(|| recv_now(stream, buffer)).await
            }
            _ => None,
        };
        let (read, direct) = match polled {
            Some(read) => (read, false),
            None => {
                let (stream, buffer) = (&*self.stream, &mut self.buffer);
                // A big answer's rest straight into the decoder, as the leader reads a big
                // request's.
                read_next(stream, buffer, &mut self.decoder, self.keep_reads).await
            }
        };
        if let Ok(0) | Err(_) = read {
            received.end = Some(LinkEnd::Closed);
            return received;
        }
        let mut input = if direct {
            &[][..]
        } else {
            crate::leader::grow_when_filled(&mut self.buffer);
            &self.buffer[..]
        };
        loop {
            match self.decoder.decode::<ServerMessage>(&mut input) {
                Ok(Some(message)) => match self.ring.resolve(message) {
                    Ok(message) => received.messages.push(message),
                    Err(error) => {
                        received.end = Some(LinkEnd::BadRing(error));
                        return received;
                    }
                },
                Ok(None) => {
                    self.ring.tell_taken();
                    return received;
                }
                Err(error) => {
                    received.end = Some(LinkEnd::Garbage(error));
                    return received;
                }
            }
        }
    }

    /// The bytes the last [`Link::receive`] read, whole messages or not (those read straight
    /// into the decoder only with `keep_reads`).
    pub fn last_read(&self) -> &[u8] {
        &self.buffer
    }

    /// Sends the frames in `out` to the leader, in order with everything sent before, and
    /// leaves `out` empty (its room kept, up to `OUT_KEPT`, when the socket took it all).
    /// Values `out` lends are kept until written.
    pub fn send(&mut self, out: &mut Outgoing) {
        if let Some(offer) = self.ring.take_offer() {
            let _ = out.push_client(&offer, DEFAULT_MAX_FRAME_LEN);
        }
        self.send_buffer.before_sending(&self.stream, out.len());
        let (stream, handover, writer) = (&self.stream, &self.handover, &mut self.writer);
        handover.send(out, &mut Socket(stream), |frames, from| {
            let (queue, _) = writer.get_or_insert_with(|| {
                let (queue, mut frames) = unbounded_channel::<Unwritten>();
                let (writing, written) = (stream.clone(), handover.clone());
                let task = tokio::spawn(async move {
                    written
                        .write_handed(&mut Socket(&writing), &mut frames)
                        .await;
                });
                (queue, task)
            });
            let _ = queue.send((frames, from));
        });
    }
}

/// A turn's encoded frames kept for the next turn, at most (a turn of big puts may encode
/// more; those lent are not counted).
const OUT_KEPT: usize = 256 * 1024;

impl Frames for Outgoing {
    fn len(&self) -> usize {
        Outgoing::len(self)
    }

    fn clear(&mut self) {
        Outgoing::clear(self, OUT_KEPT);
    }

    fn take(&mut self) -> Self {
        Outgoing::take(self)
    }
}

/// The connection as the hand-off writes to it.
struct Socket<'a>(&'a Stream);

impl Sink<Outgoing> for Socket<'_> {
    fn write_now(&mut self, frames: &Outgoing, from: usize) -> usize {
        // Full, or failed: the writer task waits, or meets the error and stops (the driver
        // then reads the end of the connection).
        send_now(self.0, frames, from)
    }

    async fn write_all(&mut self, frames: &Outgoing, from: usize) -> bool {
        write_rest(self.0, frames, from).await.is_ok()
    }
}

impl Handed<Outgoing> for UnboundedReceiver<Unwritten> {
    fn next(&mut self) -> impl Future<Output = Option<Unwritten>> {
        self.recv()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.writer {
            task.abort();
        }
    }
}

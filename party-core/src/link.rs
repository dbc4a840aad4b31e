//! A follower's connection to the leader. The driver reads it directly, and writes to it
//! directly while the socket takes the bytes at once; what it cannot take goes to a writer
//! task, so that a deep pipeline of requests never deadlocks on full socket buffers while
//! replies wait to be read. Each task hop saved is a wakeup saved on the way of a request.

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use party_proto::wire::{FrameDecoder, FrameError, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinHandle;

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
}

/// An open connection to the leader. Dropping it closes the connection.
pub(crate) struct Link {
    stream: Arc<Stream>,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
    writer: UnboundedSender<Vec<u8>>,
    /// Buffers handed to the writer task and not yet written out.
    with_writer: Arc<AtomicUsize>,
    writer_task: JoinHandle<()>,
}

impl Link {
    /// Connects to the leader's socket; replies over `max_frame_len` bytes break the link.
    pub async fn connect(socket: &Path, max_frame_len: u32) -> std::io::Result<Link> {
        let name = socket.to_fs_name::<GenericFilePath>()?;
        let stream = Arc::new(Stream::connect(name).await?);
        let (writer, mut frames) = unbounded_channel::<Vec<u8>>();
        let writing = stream.clone();
        let with_writer = Arc::new(AtomicUsize::new(0));
        let written = with_writer.clone();
        let writer_task = tokio::spawn(async move {
            let mut send = &*writing;
            while let Some(mut bytes) = frames.recv().await {
                // Buffers queued meanwhile go out in the same write.
                let mut buffers = 1;
                while let Ok(more) = frames.try_recv() {
                    bytes.extend_from_slice(&more);
                    buffers += 1;
                }
                if send.write_all(&bytes).await.is_err() {
                    return;
                }
                written.fetch_sub(buffers, Ordering::Release);
            }
        });
        Ok(Link {
            stream,
            decoder: FrameDecoder::new(max_frame_len),
            buffer: vec![0u8; 64 * 1024],
            writer,
            with_writer,
            writer_task,
        })
    }

    /// Waits for what the leader sends next: every whole message of one read. Cancel-safe:
    /// nothing is lost when the future is dropped before it completes.
    pub async fn receive(&mut self) -> Received {
        let mut recv = &*self.stream;
        let mut received = Received::default();
        let n = match recv.read(&mut self.buffer).await {
            Ok(0) | Err(_) => {
                received.end = Some(LinkEnd::Closed);
                return received;
            }
            Ok(n) => n,
        };
        let mut input = &self.buffer[..n];
        loop {
            match self.decoder.decode::<ServerMessage>(&mut input) {
                Ok(Some(message)) => received.messages.push(message),
                Ok(None) => return received,
                Err(error) => {
                    received.end = Some(LinkEnd::Garbage(error));
                    return received;
                }
            }
        }
    }

    /// Sends the bytes (whole frames) in `out` to the leader, in order with everything sent
    /// before, and leaves `out` empty (its buffer kept when the socket took it all).
    pub fn send(&self, out: &mut Vec<u8>) {
        if out.is_empty() {
            return;
        }
        // Only this method hands buffers over, so once the writer has none left, writing
        // here cannot overtake it.
        if self.with_writer.load(Ordering::Acquire) == 0 {
            let sent = self.write_now(out);
            out.drain(..sent);
        }
        if !out.is_empty() {
            self.with_writer.fetch_add(1, Ordering::Relaxed);
            let _ = self.writer.send(std::mem::take(out));
        }
    }

    /// Writes what the socket takes without waiting; how much that was.
    fn write_now(&self, bytes: &[u8]) -> usize {
        let mut context = Context::from_waker(Waker::noop());
        let mut send = &*self.stream;
        let mut sent = 0;
        while sent < bytes.len() {
            match Pin::new(&mut send).poll_write(&mut context, &bytes[sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => sent += n,
                // Full, or failed: the writer task waits, or meets the error and stops
                // (the driver then reads the end of the connection).
                _ => break,
            }
        }
        sent
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.writer_task.abort();
    }
}

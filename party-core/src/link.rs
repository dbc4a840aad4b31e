//! A follower's connection to the leader. The driver reads it directly (one task hop less
//! per burst of replies); writes go through a writer task, so that a deep pipeline of
//! requests can never deadlock on full socket buffers while replies wait to be read.

use std::path::Path;
use std::sync::Arc;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use party_proto::wire::{FrameDecoder, FrameError, ServerMessage, DEFAULT_MAX_FRAME_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    writer_task: JoinHandle<()>,
}

impl Link {
    pub async fn connect(socket: &Path) -> std::io::Result<Link> {
        let name = socket.to_fs_name::<GenericFilePath>()?;
        let stream = Arc::new(Stream::connect(name).await?);
        let (writer, mut frames) = unbounded_channel::<Vec<u8>>();
        let writing = stream.clone();
        let writer_task = tokio::spawn(async move {
            let mut send = &*writing;
            while let Some(mut bytes) = frames.recv().await {
                // Frames queued meanwhile go out in the same write.
                while let Ok(more) = frames.try_recv() {
                    bytes.extend_from_slice(&more);
                }
                if send.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        Ok(Link {
            stream,
            decoder: FrameDecoder::new(DEFAULT_MAX_FRAME_LEN),
            buffer: vec![0u8; 64 * 1024],
            writer,
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

    /// Queues bytes (whole frames) for the leader.
    pub fn send(&self, bytes: Vec<u8>) {
        let _ = self.writer.send(bytes);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.writer_task.abort();
    }
}

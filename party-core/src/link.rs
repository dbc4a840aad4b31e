//! A follower's connection to the leader: a reader task and a writer task, so that a deep
//! pipeline of requests can never deadlock on full socket buffers.

use std::path::Path;
use std::sync::Arc;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use party_proto::wire::{FrameDecoder, FrameError, ServerMessage, DEFAULT_MAX_FRAME_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::task::JoinHandle;

/// What the reader task reports, tagged with the link's number.
#[derive(Debug)]
pub(crate) enum LinkEvent {
    Message(ServerMessage),
    /// The connection is gone; with the decode error if the leader sent garbage.
    Closed(Option<FrameError>),
}

/// An open connection to the leader. Dropping it closes the connection.
pub(crate) struct Link {
    pub number: u64,
    writer: UnboundedSender<Vec<u8>>,
    tasks: [JoinHandle<()>; 2],
}

impl Link {
    /// Connects to the leader's socket; events go to `events` tagged with `number`.
    pub async fn connect(
        socket: &Path,
        number: u64,
        events: UnboundedSender<(u64, LinkEvent)>,
    ) -> std::io::Result<Link> {
        let name = socket.to_fs_name::<GenericFilePath>()?;
        let stream = Arc::new(Stream::connect(name).await?);
        let reading = stream.clone();
        let reader = tokio::spawn(async move {
            let mut recv = &*reading;
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
            let mut buffer = vec![0u8; 64 * 1024];
            let failure = loop {
                let n = match recv.read(&mut buffer).await {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => n,
                };
                let mut input = &buffer[..n];
                let decoded = loop {
                    match decoder.decode::<ServerMessage>(&mut input) {
                        Ok(Some(message)) => {
                            let _ = events.send((number, LinkEvent::Message(message)));
                        }
                        Ok(None) => break None,
                        Err(error) => break Some(error),
                    }
                };
                if decoded.is_some() {
                    break decoded;
                }
            };
            let _ = events.send((number, LinkEvent::Closed(failure)));
        });
        let (writer, mut frames) = unbounded_channel::<Vec<u8>>();
        let writer_task = tokio::spawn(async move {
            let mut send = &*stream;
            while let Some(bytes) = frames.recv().await {
                if send.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        Ok(Link {
            number,
            writer,
            tasks: [reader, writer_task],
        })
    }

    /// Queues bytes (whole frames) for the leader.
    pub fn send(&self, bytes: Vec<u8>) {
        let _ = self.writer.send(bytes);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

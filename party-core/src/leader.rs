//! Serving as leader: the store thread, the accept loop, and one task per follower
//! connection running a [`ServerSession`].

use std::sync::Arc;

use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::{Listener, Stream};
use party_backends::Backend;
use party_proto::wire::{
    encode_frame, ClientMessage, FrameDecoder, ServerMessage, DEFAULT_MAX_FRAME_LEN,
};
use party_proto::{DedupTable, ServerConfig, ServerInput, ServerOutput, ServerSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::store::{self, ConnId, StoreJob, StoreQueue};
use crate::sync::{ConnIds, Followers};

/// A running leadership: stop it with [`Leader::stop`].
pub(crate) struct Leader {
    queue: StoreQueue,
    store_thread: std::thread::JoinHandle<()>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    conn_ids: ConnIds,
}

impl Leader {
    /// Starts the store thread and accepts followers on `listener`.
    pub fn start(
        store: Arc<dyn Backend>,
        dedup: DedupTable,
        listener: Listener,
        config: ServerConfig,
    ) -> std::io::Result<Leader> {
        let (queue, jobs) = std::sync::mpsc::channel();
        let followers = Followers::default();
        let counted = followers.clone();
        let store_thread = std::thread::Builder::new()
            .name("party-store".into())
            .spawn(move || store::run(store, dedup, counted, jobs))?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let conn_ids = ConnIds::default();
        tasks.spawn(tick(queue.clone(), cancel.clone()));
        tasks.spawn(accept_loop(
            listener,
            queue.clone(),
            config,
            cancel.clone(),
            tasks.clone(),
            conn_ids.clone(),
            followers,
        ));
        Ok(Leader {
            queue,
            store_thread,
            cancel,
            tasks,
            conn_ids,
        })
    }

    /// The queue of the store thread, for the leader's own handle.
    pub fn queue(&self) -> &StoreQueue {
        &self.queue
    }

    /// A fresh connection number, for the leader's own handle.
    pub fn conn_id(&self) -> ConnId {
        self.conn_ids.next()
    }

    /// Stops accepting, closes every follower connection, and waits for the store thread
    /// to finish its queue and close the store. The socket file is removed when the
    /// listener drops.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        drop(self.queue);
        let thread = self.store_thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("the store thread panicked");
        }
    }
}

/// Paces the store thread's checkpoints.
async fn tick(queue: StoreQueue, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(store::QUIET_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticks.tick() => {
                if queue.send(StoreJob::Tick).is_err() {
                    return;
                }
            }
        }
    }
}

async fn accept_loop(
    listener: Listener,
    queue: StoreQueue,
    config: ServerConfig,
    cancel: CancellationToken,
    tasks: TaskTracker,
    conn_ids: ConnIds,
    followers: Followers,
) {
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!("accept failed: {error}");
                    continue;
                }
            },
        };
        let conn = conn_ids.next();
        let follower = followers.join();
        let served = serve(stream, conn, queue.clone(), config.clone(), cancel.clone());
        tasks.spawn(async move {
            served.await;
            drop(follower);
        });
    }
}

/// Serves one follower until it leaves, breaks the protocol, or the leader stops.
async fn serve(
    stream: Stream,
    conn: ConnId,
    queue: StoreQueue,
    config: ServerConfig,
    cancel: CancellationToken,
) {
    let (mut recv, mut send) = (&stream, &stream);
    let (to, mut events) = unbounded_channel::<ServerInput>();
    let mut session = ServerSession::new(clock::now(), config);
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let closing = run_outputs(&mut session, conn, &queue, &to, |message| {
            encode_frame(&message, DEFAULT_MAX_FRAME_LEN, &mut out)
                .inspect_err(|error| tracing::warn!("connection {conn}: cannot send: {error}"))
                .is_ok()
        });
        if !out.is_empty() {
            // A follower that stops reading fills its socket; the leader must still be
            // able to stop.
            let written = tokio::select! {
                written = send.write_all(&out) => written.is_ok(),
                _ = cancel.cancelled() => false,
            };
            if !written {
                break;
            }
            out.clear();
        }
        if closing {
            break;
        }
        let timeout = session.poll_timeout();
        tokio::select! {
            _ = cancel.cancelled() => break,
            read = recv.read(&mut buffer) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut input = &buffer[..n];
                loop {
                    match decoder.decode::<ClientMessage>(&mut input) {
                        Ok(Some(message)) => {
                            session.handle_input(clock::now(), ServerInput::Message(message));
                        }
                        Ok(None) => break,
                        Err(error) => {
                            session.handle_input(clock::now(), ServerInput::BadFrame(error));
                            break;
                        }
                    }
                }
            }
            Some(event) = events.recv() => {
                session.handle_input(clock::now(), event);
                while let Ok(event) = events.try_recv() {
                    session.handle_input(clock::now(), event);
                }
            }
            _ = sleep_until(timeout) => session.handle_timeout(clock::now()),
        }
    }
    let _ = queue.send(StoreJob::Disconnected { conn });
}

/// Carries out a session's outputs: messages to `send` (which says whether it could), work
/// to the store. True when the connection is to be closed.
pub(crate) fn run_outputs(
    session: &mut ServerSession,
    conn: ConnId,
    queue: &StoreQueue,
    to: &UnboundedSender<ServerInput>,
    mut send: impl FnMut(ServerMessage) -> bool,
) -> bool {
    let mut closing = false;
    while let Some(output) = session.poll_output() {
        let job = match output {
            ServerOutput::Send(message) => {
                closing |= !send(message);
                continue;
            }
            ServerOutput::Close(reason) => {
                tracing::warn!("closing connection {conn}: {reason}");
                closing = true;
                continue;
            }
            ServerOutput::Read { id, op } => StoreJob::Read {
                id,
                op,
                to: to.clone(),
            },
            ServerOutput::Write { id, stamp, op } => StoreJob::Write {
                id,
                stamp,
                op,
                to: to.clone(),
            },
            ServerOutput::IterOpen { iter, options } => StoreJob::IterOpen {
                conn,
                iter,
                options,
                to: to.clone(),
            },
            ServerOutput::IterPull { iter, max } => StoreJob::IterPull {
                conn,
                iter,
                max,
                to: to.clone(),
            },
            ServerOutput::IterDrop { iter } => StoreJob::IterDrop { conn, iter },
        };
        // The store thread outlives every connection; a failed send means it is gone
        // and the leader is stopping anyway.
        let _ = queue.send(job);
    }
    closing
}

/// Sleeps until `at`, or forever when there is no timeout.
pub(crate) async fn sleep_until(at: Option<party_proto::Timestamp>) {
    match at {
        Some(at) => tokio::time::sleep_until(clock::instant(at)).await,
        None => std::future::pending().await,
    }
}

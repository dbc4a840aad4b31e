//! The leader's scan thread: iterators read their chunks here, off the store thread, so that
//! a large scan no longer holds up every other process's writes and point reads.
//!
//! The store thread still opens each iterator, in order with the writes (its snapshot
//! follows every write that came before it), and hands it over; the pulls and drops of that
//! iterator reach this thread through the store thread too, so they always come after the
//! open. Reading a snapshot while the store thread writes is what snapshots are for.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;

use party_backends::Chunks;
use party_proto::{ErrorCode, IterId, ServerInput};

use crate::store::{ConnId, ReplyTo};

/// Work for the scan thread.
pub(crate) enum ScanJob {
    /// An iterator the store thread opened.
    Open {
        conn: ConnId,
        iter: IterId,
        chunks: Chunks,
    },
    Pull {
        conn: ConnId,
        iter: IterId,
        max: u32,
        to: ReplyTo,
    },
    Drop {
        conn: ConnId,
        iter: IterId,
    },
    /// A connection is gone: drop its iterators.
    Disconnected {
        conn: ConnId,
    },
}

/// The scan thread, running until [`Scans::stop`].
pub(crate) struct Scans {
    jobs: Sender<ScanJob>,
    thread: JoinHandle<()>,
}

impl Scans {
    pub fn start() -> std::io::Result<Scans> {
        let (jobs, received) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("party-scans".into())
            .spawn(move || run(received))?;
        Ok(Scans { jobs, thread })
    }

    /// Hands a job over. A pull the thread can no longer take fails its iterator rather
    /// than leave it waiting.
    pub fn send(&self, job: ScanJob) {
        if let Err(std::sync::mpsc::SendError(ScanJob::Pull { iter, to, .. })) = self.jobs.send(job)
        {
            let error = ErrorCode::Backend("the leader's scan thread stopped".into());
            let _ = to.send(ServerInput::IterFailed { iter, error });
        }
    }

    /// Drops every iterator and waits for the thread: the store can close after this.
    pub fn stop(self) {
        drop(self.jobs);
        let _ = self.thread.join();
    }
}

fn run(jobs: Receiver<ScanJob>) {
    let mut iters: HashMap<(ConnId, IterId), Chunks> = HashMap::new();
    for job in jobs {
        match job {
            ScanJob::Open { conn, iter, chunks } => {
                iters.insert((conn, iter), chunks);
            }
            ScanJob::Pull {
                conn,
                iter,
                max,
                to,
            } => {
                let Some(chunks) = iters.get_mut(&(conn, iter)) else {
                    continue;
                };
                // A store's iterator that panics fails its own scan, not every later one.
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    chunks.next_chunk(max as usize)
                }));
                let input = match read {
                    Ok(Ok((entries, exhausted))) => {
                        if exhausted {
                            iters.remove(&(conn, iter));
                        }
                        ServerInput::IterChunk {
                            iter,
                            entries,
                            exhausted,
                        }
                    }
                    Ok(Err(error)) => {
                        iters.remove(&(conn, iter));
                        let error = error.into();
                        ServerInput::IterFailed { iter, error }
                    }
                    Err(_panic) => {
                        iters.remove(&(conn, iter));
                        let error = ErrorCode::Backend("reading the store panicked".into());
                        ServerInput::IterFailed { iter, error }
                    }
                };
                let _ = to.send(input);
            }
            ScanJob::Drop { conn, iter } => {
                iters.remove(&(conn, iter));
            }
            ScanJob::Disconnected { conn } => iters.retain(|(c, _), _| *c != conn),
        }
    }
}

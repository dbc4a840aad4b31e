//! The leader's scan thread: iterators read their chunks here, off the store thread, so that
//! a large scan no longer holds up every other process's writes and point reads.
//!
//! The store thread still opens each iterator, in order with the writes (its snapshot
//! follows every write that came before it), and hands it over; the pulls and drops of that
//! iterator reach this thread through the store thread too, so they always come after the
//! open. Reading a snapshot while the store thread writes is what snapshots are for.
//!
//! The thread starts with the first iterator: many leaders never scan, and a new leader
//! has threads enough to start while its followers wait.

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
        max_bytes: u64,
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

/// The scan thread, from the first iterator until [`Scans::stop`].
#[derive(Default)]
pub(crate) struct Scans {
    running: Option<(Sender<ScanJob>, JoinHandle<()>)>,
}

impl Scans {
    /// Hands over an iterator the store opened, starting the thread for the first one.
    pub fn open(&mut self, conn: ConnId, iter: IterId, chunks: Chunks) -> std::io::Result<()> {
        if self.running.is_none() {
            let (jobs, received) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("party-scans".into())
                .spawn(move || run(received))?;
            self.running = Some((jobs, thread));
        }
        self.send(ScanJob::Open { conn, iter, chunks });
        Ok(())
    }

    /// Hands a job over. A pull the thread cannot take fails its iterator rather than
    /// leave it waiting.
    pub fn send(&self, job: ScanJob) {
        let (unsent, why) = match &self.running {
            Some((jobs, _)) => (jobs.send(job).err().map(|unsent| unsent.0), "stopped"),
            None => (Some(job), "is not running"),
        };
        if let Some(ScanJob::Pull { iter, to, .. }) = unsent {
            let error = ErrorCode::Backend(format!("the leader's scan thread {why}"));
            let _ = to.send(ServerInput::IterFailed { iter, error });
        }
    }

    /// Drops every iterator and waits for the thread: the store can close after this.
    pub fn stop(self) {
        if let Some((jobs, thread)) = self.running {
            drop(jobs);
            let _ = thread.join();
        }
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
                max_bytes,
                to,
            } => {
                let Some(chunks) = iters.get_mut(&(conn, iter)) else {
                    continue;
                };
                // A store's iterator that panics fails its own scan, not every later one.
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    chunks.next_chunk(max as usize, max_bytes)
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

#[cfg(test)]
mod tests {
    use party_backends::{Backend, MemoryBackend, WriteBatch};
    use party_proto::wire::WriteOp;
    use party_proto::IterOptions;

    use super::*;

    fn store_with_one_entry() -> MemoryBackend {
        let store = MemoryBackend::new();
        let put = WriteOp::Put {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
        };
        store.write(WriteBatch::new().push(put)).unwrap();
        store
    }

    fn started(scans: &Scans) -> bool {
        scans.running.is_some()
    }

    #[test]
    fn the_thread_starts_with_the_first_iterator_and_a_pull_before_it_fails() {
        let store = store_with_one_entry();
        let (to, mut answers) = tokio::sync::mpsc::unbounded_channel();
        let (conn, iter) = (1, IterId(1));
        let pull = || ScanJob::Pull {
            conn,
            iter,
            max: 10,
            max_bytes: u64::MAX,
            to: to.clone(),
        };
        let mut scans = Scans::default();
        scans.send(pull());
        assert!(!started(&scans), "no iterator yet, no thread");
        assert!(
            matches!(answers.try_recv(), Ok(ServerInput::IterFailed { .. })),
            "a pull no thread can take fails rather than waits"
        );
        let chunks = store.chunks(&IterOptions::default()).unwrap();
        scans.open(conn, iter, chunks).unwrap();
        assert!(started(&scans));
        scans.send(pull());
        scans.stop();
        let Ok(ServerInput::IterChunk { entries, .. }) = answers.try_recv() else {
            panic!("the iterator's pull was not answered");
        };
        assert_eq!(entries.len(), 1);
    }

    /// Iterator ids are each connection's own: a connection that goes takes its iterators
    /// and leaves another's with the same id reading.
    #[test]
    fn a_gone_connection_drops_only_its_own_iterators() {
        let store = store_with_one_entry();
        let (gone, staying, iter) = (1, 2, IterId(1));
        let mut scans = Scans::default();
        for conn in [gone, staying] {
            let chunks = store.chunks(&IterOptions::default()).unwrap();
            scans.open(conn, iter, chunks).unwrap();
        }
        scans.send(ScanJob::Disconnected { conn: gone });
        let mut answers = [gone, staying].map(|conn| {
            let (to, answers) = tokio::sync::mpsc::unbounded_channel();
            scans.send(ScanJob::Pull {
                conn,
                iter,
                max: 10,
                max_bytes: u64::MAX,
                to,
            });
            answers
        });
        scans.stop();
        let Ok(ServerInput::IterChunk { entries, .. }) = answers[1].try_recv() else {
            panic!("the staying connection's pull was not answered");
        };
        assert_eq!(entries.len(), 1);
        assert!(
            answers[0].try_recv().is_err(),
            "the gone connection's iterator was dropped, its pull unanswered"
        );
    }
}

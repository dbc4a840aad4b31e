//! Compare-and-swap and optimistic read-write transactions, decided by the leader.
//!
//! A [`Transaction`] reads through the leader as any read does, keeps what each read saw,
//! and buffers its writes. Its commit sends both; the leader's writer applies the writes
//! only if every read would read the same at that point of the commit order, and answers a
//! conflict otherwise (party-proto's `txn` module decides). [`crate::Db::transaction`] then
//! runs the closure again, after a short jittered wait, up to
//! [`crate::Options::transaction_attempts`] times.
//!
//! A commit in flight when the leader dies is re-sent like any write: the new leader answers
//! it from its dedup record if the old one applied it, and checks it afresh if not, so a
//! transaction is applied at most once and never answered a conflict after it was applied.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use party_proto::jitter::Backoff;
use party_proto::wire::{self, ReadCheck, Response, WriteOp};

use crate::data::{Entry, IterOptions};
use crate::db::Db;
use crate::error::Error;
use crate::sublevel::KeySpace;

/// A compare-and-swap that did not apply: the key holds `current` (`None`: absent), not
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compare-and-swap conflict: the key holds {current:02x?}")]
pub struct CasConflict {
    pub current: Option<Vec<u8>>,
}

/// Why [`crate::Db::transaction`] did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError<E> {
    /// The closure returned this error; nothing was written.
    #[error("the transaction was aborted: {0}")]
    Aborted(E),
    /// Every attempt met a conflict (another process changed what it read); nothing was
    /// written. `key` is the last key found changed.
    #[error("the transaction met a conflict on each of its {attempts} attempts (last at key {key:02x?})")]
    Conflict { attempts: u32, key: Vec<u8> },
    /// A read or the commit failed. The transaction was not applied, except that after
    /// [`Error::OutcomeUnknown`], [`Error::TimedOut`], [`Error::ConnectionLost`] or
    /// [`Error::Closed`] its commit may have been (read the keys to know).
    #[error(transparent)]
    Db(#[from] Error),
}

/// The waits between attempts: short at first, as a conflict is usually over at once,
/// then longer, spread so that contenders do not meet again.
const FIRST_WAIT: Duration = Duration::from_micros(200);
const LONGEST_WAIT: Duration = Duration::from_millis(20);

/// One attempt of a transaction: reads go through the leader and are remembered, writes
/// are buffered until the commit. Clones share the attempt.
#[derive(Clone)]
pub struct Transaction {
    db: Db,
    state: Arc<Mutex<Attempt>>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Attempt {
    reads: Vec<ReadCheck>,
    /// What the keys read one by one held, so that reading one again gives the same.
    seen: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// The buffered writes, each key's last (`None`: deleted).
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// A read that failed: the error the transaction ends with, unless the closure
    /// went on without it.
    failure: Option<Error>,
}

impl Transaction {
    fn new(db: Db) -> Self {
        Transaction {
            db,
            state: Arc::new(Mutex::new(Attempt::default())),
        }
    }

    fn attempt(&self) -> std::sync::MutexGuard<'_, Attempt> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The key's value: what this transaction wrote to it, or what it held when first read
    /// (the commit checks it still does).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        let key = key.as_ref();
        {
            let attempt = self.attempt();
            if let Some(value) = attempt.writes.get(key).or_else(|| attempt.seen.get(key)) {
                return Ok(value.clone());
            }
        }
        let read = self.db.get(key).await;
        let mut attempt = self.attempt();
        match read {
            Ok(value) => {
                attempt.seen.insert(key.to_vec(), value.clone());
                attempt.reads.push(ReadCheck::Key {
                    key: self.db.space().key(key),
                    value: value.clone(),
                });
                Ok(value)
            }
            Err(error) => Err(attempt.failed(error)),
        }
    }

    /// The entries `options` select, with this transaction's own writes in them. The whole
    /// range is read (the limit applies after), and the commit checks it holds the same
    /// entries then: no key changed, none gone, none new. Meant for small ranges: all of it
    /// travels with the commit.
    pub async fn iter(&self, options: IterOptions) -> Result<Vec<Entry>, Error> {
        let whole = IterOptions::default().range(options.range.clone());
        let read = match self.db.iter(whole).await {
            Ok(iter) => iter.collect().await,
            Err(error) => Err(error),
        };
        let mut attempt = self.attempt();
        let entries = match read {
            Ok(entries) => entries,
            Err(error) => return Err(attempt.failed(error)),
        };
        let range: party_proto::KeyRange = options.range.clone().into();
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = entries
            .iter()
            .map(|entry| (entry.key.clone(), entry.value.clone()))
            .collect();
        // The check names the keys as the store holds them.
        let space = self.db.space();
        attempt.reads.push(ReadCheck::Range {
            range: space.range(options.range.clone()).into(),
            entries: entries
                .into_iter()
                .map(|entry| wire::Entry {
                    key: space.key(&entry.key),
                    value: entry.value,
                })
                .collect(),
        });
        for (key, value) in &attempt.writes {
            if !range.contains(key) {
                continue;
            }
            match value {
                Some(value) => merged.insert(key.clone(), value.clone()),
                None => merged.remove(key),
            };
        }
        let limit = options.limit.map_or(usize::MAX, |n| n as usize);
        let select = |(key, value): (Vec<u8>, Vec<u8>)| Entry {
            key: if options.keys { key } else { Vec::new() },
            value: if options.values { value } else { Vec::new() },
        };
        Ok(if options.reverse {
            merged.into_iter().rev().take(limit).map(select).collect()
        } else {
            merged.into_iter().take(limit).map(select).collect()
        })
    }

    /// Sets the key at commit.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (key, value) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        self.attempt().writes.insert(key, Some(value));
    }

    /// Deletes the key at commit.
    pub fn del(&self, key: impl AsRef<[u8]>) {
        self.attempt().writes.insert(key.as_ref().to_vec(), None);
    }

    /// What to send at commit, and the failure of a read, if one failed.
    fn finish(&self) -> (WriteOp, Option<Error>) {
        let mut attempt = self.attempt();
        let space = self.db.space();
        let writes = std::mem::take(&mut attempt.writes)
            .into_iter()
            .map(|(key, value)| match value {
                Some(value) => wire::BatchOp::Put {
                    key: space.key(&key),
                    value,
                },
                None => wire::BatchOp::Del {
                    key: space.key(&key),
                },
            })
            .collect();
        let reads = std::mem::take(&mut attempt.reads);
        (
            WriteOp::Transaction { reads, writes },
            attempt.failure.take(),
        )
    }
}

impl Attempt {
    /// Keeps the first failed read's error and gives the caller one like it.
    fn failed(&mut self, error: Error) -> Error {
        let copy = error.duplicate();
        self.failure.get_or_insert(error);
        copy
    }
}

impl Db {
    /// Sets `key` to `new` (`None`: deletes it) if it holds `expected` (`None`: absent), in
    /// one step at the leader; otherwise changes nothing and says what the key holds.
    pub fn compare_and_swap<K, E, N>(
        &self,
        key: K,
        expected: Option<E>,
        new: Option<N>,
    ) -> impl Future<Output = Result<Result<(), CasConflict>, Error>> + Send + 'static
    where
        K: AsRef<[u8]>,
        E: AsRef<[u8]>,
        N: AsRef<[u8]>,
    {
        let key = self.space().key(key.as_ref());
        let write = match new {
            Some(value) => wire::BatchOp::Put {
                key: key.clone(),
                value: value.as_ref().to_vec(),
            },
            None => wire::BatchOp::Del { key: key.clone() },
        };
        let answer = self.write_answered(WriteOp::Transaction {
            reads: vec![ReadCheck::Key {
                key,
                value: expected.map(|value| value.as_ref().to_vec()),
            }],
            writes: vec![write],
        });
        async move {
            match answer.await? {
                Response::Written => Ok(Ok(())),
                Response::Conflict { current, .. } => Ok(Err(CasConflict { current })),
                other => Err(crate::db::unexpected(other)),
            }
        }
    }

    /// Runs `body` as a serializable transaction: its reads ([`Transaction::get`],
    /// [`Transaction::iter`]) go through the leader, its writes ([`Transaction::put`],
    /// [`Transaction::del`]) apply at commit, all at once, and only if nothing it read has
    /// changed by then. On a conflict `body` runs again (it must be fine to run more than
    /// once), up to [`crate::Options::transaction_attempts`] times in all. Returns what the
    /// attempt that committed returned.
    ///
    /// A transaction that only reads is checked too: what it returns was read from one
    /// state of the store. So is one whose body returns an error after reading: it ends
    /// [`TransactionError::Aborted`] only if what it read held together; otherwise it
    /// runs again, as on a conflict.
    pub async fn transaction<F, Fut, R, E>(&self, mut body: F) -> Result<R, TransactionError<E>>
    where
        F: FnMut(Transaction) -> Fut,
        Fut: Future<Output = Result<R, E>>,
    {
        let mut retries = Retries::new(self);
        while let Some(wait) = retries.next_wait() {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let tx = self.begin();
            let returned = body(tx.clone()).await;
            let (result, commit) = match tx.settle(returned) {
                Settled::Done(result) => return result,
                Settled::Commit(value, commit) => (Ok(value), commit),
                Settled::Abort(error, check) => (Err(TransactionError::Aborted(error)), check),
            };
            if retries.committed(self.write_answered(commit).await)? {
                return result;
            }
        }
        Err(retries.exhausted())
    }

    /// A new attempt of a transaction.
    pub(crate) fn begin(&self) -> Transaction {
        Transaction::new(self.clone())
    }
}

/// How an attempt's body ended, for the retry loop.
pub(crate) enum Settled<R, E> {
    /// The transaction is over: failed, or with nothing to commit.
    Done(Result<R, TransactionError<E>>),
    /// Send this commit; the body returned this value.
    Commit(R, WriteOp),
    /// The body gave up with this error after reading: the reads (this commit, with no
    /// writes) are checked first, so that it gave up on one state of the store, not on
    /// values read at different moments that never held together.
    Abort(E, WriteOp),
}

impl Transaction {
    /// What follows the body's return: the commit to send, or the transaction's end.
    pub(crate) fn settle<R, E>(&self, returned: Result<R, E>) -> Settled<R, E> {
        let (commit, failure) = self.finish();
        match (returned, failure) {
            (Err(_), Some(failure)) => Settled::Done(Err(TransactionError::Db(failure))),
            (Err(error), None) => match commit {
                WriteOp::Transaction { reads, .. } if !reads.is_empty() => Settled::Abort(
                    error,
                    WriteOp::Transaction {
                        reads,
                        writes: Vec::new(),
                    },
                ),
                _ => Settled::Done(Err(TransactionError::Aborted(error))),
            },
            (Ok(value), _) => match &commit {
                WriteOp::Transaction { reads, writes } if reads.is_empty() && writes.is_empty() => {
                    Settled::Done(Ok(value))
                }
                _ => Settled::Commit(value, commit),
            },
        }
    }
}

/// The retry loop of a transaction, shared by the async and the blocking form: how many
/// attempts are left, and the wait before each.
pub(crate) struct Retries {
    attempts: u32,
    made: u32,
    backoff: Backoff,
    last_key: Vec<u8>,
    /// Where the handle's keys live: a conflict's key is told as the handle names it.
    space: KeySpace,
}

impl Retries {
    /// The retries of a transaction of `db`.
    pub(crate) fn new(db: &Db) -> Self {
        Retries {
            attempts: db.transaction_attempts(),
            made: 0,
            backoff: Backoff::new(FIRST_WAIT, LONGEST_WAIT, crate::db::random_u64()),
            last_key: Vec::new(),
            space: db.space().clone(),
        }
    }

    /// The wait before the next attempt (none before the first); `None` when none is left.
    pub(crate) fn next_wait(&mut self) -> Option<Duration> {
        if self.made == self.attempts {
            return None;
        }
        self.made += 1;
        Some(match self.made {
            1 => Duration::ZERO,
            _ => self.backoff.next_wait(),
        })
    }

    /// Whether the commit's answer says it committed (false: a conflict, try again).
    pub(crate) fn committed(&mut self, answer: Result<Response, Error>) -> Result<bool, Error> {
        match answer {
            Ok(Response::Written) => Ok(true),
            Ok(Response::Conflict { key, .. }) => {
                self.last_key = self.space.strip(key);
                Ok(false)
            }
            // A try whose answer (a conflict, or a store's failure) was lost with its
            // leader, and a later write of the handle went ahead: nothing landed, and the
            // body may run again.
            Err(Error::FailedBefore) => Ok(false),
            Ok(other) => Err(crate::db::unexpected(other)),
            Err(error) => Err(error),
        }
    }

    pub(crate) fn exhausted<E>(self) -> TransactionError<E> {
        TransactionError::Conflict {
            attempts: self.attempts,
            key: self.last_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retries() -> Retries {
        Retries {
            attempts: 3,
            made: 0,
            backoff: Backoff::new(FIRST_WAIT, LONGEST_WAIT, 7),
            last_key: Vec::new(),
            space: KeySpace::default(),
        }
    }

    /// An attempt runs again after a conflict, and after an earlier try that failed
    /// unheard while a later write went ahead (nothing of it landed); other errors end
    /// the transaction.
    #[test]
    fn a_conflict_or_a_failed_earlier_try_runs_the_body_again() {
        let mut retries = retries();
        let conflict = Response::Conflict {
            key: b"k".to_vec(),
            current: None,
        };
        assert!(!retries.committed(Ok(conflict)).unwrap());
        assert_eq!(retries.last_key, b"k");
        assert!(!retries.committed(Err(Error::FailedBefore)).unwrap());
        assert!(retries.committed(Ok(Response::Written)).unwrap());
        assert!(matches!(
            retries.committed(Err(Error::TimedOut)),
            Err(Error::TimedOut)
        ));
    }
}

//! The same handle for programs without an async runtime: every call blocks until done.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::runtime::Runtime;

use crate::data::{BatchOp, Entry, IterOptions, KeyRange};
use crate::db::{open, Db, Iter};
use crate::error::Error;
use crate::options::Options;
use crate::role::Role;
use crate::transaction::{CasConflict, Retries, Settled, Transaction, TransactionError};

/// A blocking [`Db`], with a small runtime of its own. Calling it from inside an async
/// runtime returns [`Error::BlockingInRuntime`] instead of stalling that runtime.
#[derive(Debug, Clone)]
pub struct BlockingDb {
    db: Db,
    runtime: Arc<OwnRuntime>,
}

/// The handle's runtime. When the last user goes, the handle is closed on it first: just
/// dropping the runtime would cut the leader's step-down short, releasing the lock before
/// the store is closed.
#[derive(Debug)]
struct OwnRuntime {
    /// Taken only as it is dropped.
    runtime: Option<Runtime>,
    db: Db,
    /// Set once [`BlockingDb::close_before_exit`] returned: the handle has stopped, and the
    /// process means to exit without waiting for the store to close.
    closed_for_exit: AtomicBool,
}

impl OwnRuntime {
    /// Runs `future` to its end on the handle's runtime; refused inside an async runtime,
    /// which blocking would stall (and where tokio would panic).
    fn block_on<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        outside_runtime()?;
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => Err(Error::Closed),
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let db = self.db.clone();
        let wait_for_the_store = !self.closed_for_exit.load(Ordering::Acquire);
        let close = move || {
            if wait_for_the_store {
                let _ = runtime.block_on(db.close());
            }
            drop(runtime);
        };
        if outside_runtime().is_ok() {
            close();
        } else {
            // Inside an async runtime this thread may neither wait for the close nor drop
            // a runtime (tokio panics): a thread of its own does both, waited for, so that
            // the handle has stepped down when the last one is gone, wherever it went.
            let _ = std::thread::spawn(close).join();
        }
    }
}

impl BlockingDb {
    /// Opens `dir` and waits until the handle leads or follows.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<BlockingDb, Error> {
        outside_runtime()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("party")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                context: "cannot start a runtime for",
                path: dir.as_ref().to_owned(),
                source,
            })?;
        let db = runtime.block_on(async {
            let db = open(dir, options).await?;
            db.ready().await?;
            Ok::<_, Error>(db)
        })?;
        Ok(BlockingDb {
            runtime: Arc::new(OwnRuntime {
                runtime: Some(runtime),
                db: db.clone(),
                closed_for_exit: AtomicBool::new(false),
            }),
            db,
        })
    }

    /// The async handle underneath.
    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn role(&self) -> Role {
        self.db.role()
    }

    pub fn is_leader(&self) -> bool {
        self.db.is_leader()
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        self.block_on(self.db.get(key))
    }

    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        self.block_on(self.db.get_many(keys))
    }

    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
        self.block_on(self.db.put(key, value))
    }

    pub fn del(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        self.block_on(self.db.del(key))
    }

    pub fn batch(&self, ops: Vec<BatchOp>) -> Result<(), Error> {
        self.block_on(self.db.batch(ops))
    }

    pub fn clear(&self, range: KeyRange) -> Result<(), Error> {
        self.block_on(self.db.clear(range))
    }

    /// See [`crate::Db::compare_and_swap`].
    pub fn compare_and_swap<K, E, N>(
        &self,
        key: K,
        expected: Option<E>,
        new: Option<N>,
    ) -> Result<Result<(), CasConflict>, Error>
    where
        K: AsRef<[u8]>,
        E: AsRef<[u8]>,
        N: AsRef<[u8]>,
    {
        self.block_on(self.db.compare_and_swap(key, expected, new))
    }

    /// See [`crate::Db::transaction`]: `body` reads and writes through a
    /// [`BlockingTransaction`], and runs again on a conflict.
    pub fn transaction<R, E>(
        &self,
        mut body: impl FnMut(&BlockingTransaction) -> Result<R, E>,
    ) -> Result<R, TransactionError<E>> {
        outside_runtime()?;
        let mut retries = Retries::new(&self.db);
        while let Some(wait) = retries.next_wait() {
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            let tx = BlockingTransaction {
                tx: self.db.begin(),
                runtime: self.runtime.clone(),
            };
            let returned = body(&tx);
            let (result, commit) = match tx.tx.settle(returned) {
                Settled::Done(result) => return result,
                Settled::Commit(value, commit) => (Ok(value), commit),
                Settled::Abort(error, check) => (Err(TransactionError::Aborted(error)), check),
            };
            let answer = self.runtime.block_on(self.db.write_answered(commit));
            if retries.committed(answer)? {
                return result;
            }
        }
        Err(retries.exhausted())
    }

    /// An iterator whose `next` blocks.
    pub fn iter(&self, options: IterOptions) -> Result<BlockingIter, Error> {
        let iter = self.block_on(self.db.iter(options))?;
        Ok(BlockingIter {
            iter,
            runtime: self.runtime.clone(),
        })
    }

    pub fn close(&self) -> Result<(), Error> {
        self.block_on(self.db.close())
    }

    /// See [`crate::Db::close_before_exit`]. Dropping the last clone afterwards does not
    /// wait for the store to close either, so that the process exits at once.
    pub fn close_before_exit(&self) -> Result<(), Error> {
        self.block_on(self.db.close_before_exit())?;
        self.runtime.closed_for_exit.store(true, Ordering::Release);
        Ok(())
    }

    fn block_on<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.runtime.block_on(future)
    }
}

fn outside_runtime() -> Result<(), Error> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(Error::BlockingInRuntime),
        Err(_) => Ok(()),
    }
}

/// One attempt of a [`BlockingDb::transaction`]: [`Transaction`] with blocking reads.
#[derive(Debug)]
pub struct BlockingTransaction {
    tx: Transaction,
    runtime: Arc<OwnRuntime>,
}

impl BlockingTransaction {
    /// See [`Transaction::get`].
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, Error> {
        self.runtime.block_on(self.tx.get(key))
    }

    /// See [`Transaction::iter`].
    pub fn iter(&self, options: IterOptions) -> Result<Vec<Entry>, Error> {
        self.runtime.block_on(self.tx.iter(options))
    }

    /// See [`Transaction::put`].
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.tx.put(key, value);
    }

    /// See [`Transaction::del`].
    pub fn del(&self, key: impl AsRef<[u8]>) {
        self.tx.del(key);
    }
}

/// A blocking [`Iter`]: a plain [`Iterator`] of entries.
#[derive(Debug)]
pub struct BlockingIter {
    iter: Iter,
    runtime: Arc<OwnRuntime>,
}

impl Iterator for BlockingIter {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let iter = &mut self.iter;
        let next = async { iter.next().await.transpose() };
        self.runtime.block_on(next).transpose()
    }
}

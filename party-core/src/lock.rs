//! The election lock: a dedicated file in the data directory, taken with an OS file lock.
//!
//! The lock file is never deleted: deleting it would let two processes lock two different
//! inodes under the same name and both believe they lead. The OS releases the lock when its
//! holder dies (also on `kill -9`), which is what lets a follower take over; a handle's
//! lock file sits at the top of its descriptors where it can (not with sled, see
//! [`LockFile::open_on_top`]), so that a killed leader lets it go before its followers see
//! their connections end.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use party_backends::lock_order::LockRank;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "party.lock";

/// Failure to take the election lock for a reason other than "someone else holds it".
#[derive(Debug, thiserror::Error)]
#[error("cannot use lock file {path}: {source}")]
pub struct LockError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The held election lock. Dropping it releases the lock; the file stays.
#[derive(Debug)]
pub struct ElectionLock {
    // Holding the open file is what holds the lock.
    _file: File,
    path: PathBuf,
}

impl ElectionLock {
    /// Tries once, without waiting, to take the lock of the data directory `dir`.
    ///
    /// Returns `Ok(None)` when another handle (in this or another process) holds it.
    pub fn try_acquire(dir: &Path) -> Result<Option<ElectionLock>, LockError> {
        Ok(LockFile::open(dir)?.try_lock()?.ok())
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of a data directory, open and not locked: kept between tries, each try is
/// then one call to the OS (a handle that lost its leader tries again at every retry while
/// the next leader opens its store).
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// [`LockFile::open`], on a descriptor at the top of this process's table, so that a
    /// holder killed lets the lock go before its sockets tell anyone it is gone
    /// ([`party_backends::lock_order`]). A handle's own lock file, used for a store whose
    /// lock goes before it ([`party_backends::BackendKind::lets_its_lock_go_first`]).
    pub fn open_on_top(dir: &Path) -> Result<LockFile, LockError> {
        let LockFile { file, path } = LockFile::open(dir)?;
        let file = party_backends::lock_order::to_the_top(file, LockRank::Election);
        Ok(LockFile { file, path })
    }

    /// Opens the lock file of the data directory `dir`, creating it if need be.
    pub fn open(dir: &Path) -> Result<LockFile, LockError> {
        let path = dir.join(LOCK_FILE_NAME);
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(file) => Ok(LockFile { file, path }),
            Err(source) => Err(LockError { path, source }),
        }
    }

    /// Tries once, without waiting, to take the lock; gives the file back when another
    /// handle (in this or another process) holds it.
    pub fn try_lock(self) -> Result<Result<ElectionLock, LockFile>, LockError> {
        match self.file.try_lock() {
            Ok(()) => Ok(Ok(ElectionLock {
                _file: self.file,
                path: self.path,
            })),
            Err(TryLockError::WouldBlock) => Ok(Err(self)),
            Err(TryLockError::Error(source)) => Err(LockError {
                path: self.path,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_handle_is_refused_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = ElectionLock::try_acquire(dir.path()).unwrap();
        assert!(first.is_some(), "a fresh directory must be lockable");
        assert!(
            ElectionLock::try_acquire(dir.path()).unwrap().is_none(),
            "a second open of the lock file must see it busy"
        );
        drop(first);
        let again = ElectionLock::try_acquire(dir.path()).unwrap();
        assert!(again.is_some(), "dropping the holder must release the lock");
        assert!(
            again.unwrap().path().exists(),
            "the lock file is never deleted"
        );
    }

    #[test]
    fn a_lock_file_kept_open_takes_the_lock_once_its_holder_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let holder = ElectionLock::try_acquire(dir.path()).unwrap().unwrap();
        let file = LockFile::open(dir.path()).unwrap();
        let file = file
            .try_lock()
            .unwrap()
            .expect_err("held by another handle");
        let file = file.try_lock().unwrap().expect_err("still held");
        drop(holder);
        let lock = file.try_lock().unwrap().expect("released");
        assert!(
            ElectionLock::try_acquire(dir.path()).unwrap().is_none(),
            "the kept file's lock is a lock like any other"
        );
        drop(lock);
    }

    #[test]
    fn missing_directory_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("does/not/exist");
        let err = ElectionLock::try_acquire(&missing).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert!(err.path.starts_with(&missing));
    }
}

//! Which lock a killed process lets go of first. Linux closes a dying process's files from
//! its highest descriptor down (each file's last close, which lets its `flock` go, runs in
//! that order), so a lock on a low descriptor, taken at a handle's start, went only after
//! the leader's sockets, accepted later on higher descriptors, had told its followers it
//! was gone: up to milliseconds later (other files closing in between: measured 0–5 ms with
//! twenty ext4 files), and the first follower to try the lock found it still held and
//! waited out a retry. A lock moved to the top of the descriptor table goes before the
//! sockets; the store's own lock above the directory's, so that the process that takes
//! the directory's lock finds the store's free.

use std::fs::File;

/// Where a lock goes among the top descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRank {
    /// The data directory's election lock (`party.lock`).
    Election,
    /// A store's own lock, let go before the election's.
    Store,
}

/// The highest descriptor a lock is moved to, whatever the process may open: a process
/// allowed a million descriptors would otherwise grow its table to that size for a lock.
const CEILING: u64 = 1024;

/// Below this limit on descriptors a process keeps its last ones for itself.
const FLOOR: u64 = 64;

/// `file` on a descriptor at the top of the table, by `rank`; `file` as it is where there
/// is none free there (another handle's lock holds it) or on a system without descriptors.
pub fn to_the_top(file: File, rank: LockRank) -> File {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, Resource};
        let limit = getrlimit(Resource::Nofile)
            .current
            .unwrap_or(CEILING)
            .min(CEILING);
        if limit < FLOOR {
            return file;
        }
        let below_the_limit = match rank {
            LockRank::Store => 1,
            LockRank::Election => 2,
        };
        let Ok(slot) = i32::try_from(limit - below_the_limit) else {
            return file;
        };
        match rustix::io::fcntl_dupfd_cloexec(&file, slot) {
            // The lock belongs to the file, not the descriptor: the old one closes, the
            // file stays open through the new.
            Ok(moved) => File::from(moved),
            Err(_) => file,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = rank;
        file
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_store_lock_goes_above_the_election_lock_and_both_above_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let open = |name: &str| File::create(dir.path().join(name)).unwrap();
        let election = to_the_top(open("election"), LockRank::Election);
        let store = to_the_top(open("store"), LockRank::Store);
        let other = open("other");
        assert!(
            store.as_raw_fd() > election.as_raw_fd(),
            "store {} election {}",
            store.as_raw_fd(),
            election.as_raw_fd()
        );
        assert!(election.as_raw_fd() > other.as_raw_fd());
    }

    #[test]
    fn a_lock_moved_up_is_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = to_the_top(File::create(&path).unwrap(), LockRank::Election);
        held.try_lock().unwrap();
        let other = File::open(&path).unwrap();
        assert!(other.try_lock().is_err(), "the moved file lost its lock");
        drop(held);
        other.try_lock().unwrap();
    }
}

//! Which lock a killed process lets go of first. Linux runs the last close of a dying
//! process's files from its highest descriptor down (each one is queued as the process
//! closes its table in ascending order, and the queue runs last in, first out: so on the
//! 6.x kernels measured here; a kernel that ran it first in, first out would let a moved
//! lock go last), and a `flock` goes with that last close: a lock on a low descriptor,
//! taken at a handle's start, went only after the leader's sockets, accepted later on
//! higher descriptors, had told its followers it was gone; up to milliseconds later (other
//! files closing in between: measured 0–5 ms with twenty ext4 files), so the first follower
//! to try the lock found it still held and waited out a retry. A lock moved to the top of
//! the descriptor table goes before the sockets; the store's own lock above the
//! directory's, so that the process that takes the directory's lock finds the store's
//! free. A process with more sockets than the top leaves room for has some above it, whose
//! followers find the lock held as before.

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

/// A limit on descriptors below this is too small to tell a top from the rest.
const FLOOR: u64 = 64;

/// `file` on its rank's descriptor at the top of the table; `file` as it is where that
/// descriptor is taken (by another handle's lock, say: anywhere else the order could
/// come out wrong) or on a system without descriptors.
pub fn to_the_top(file: File, rank: LockRank) -> File {
    #[cfg(unix)]
    {
        match slot(usable_limit(), rank) {
            Some(slot) => moved_to(file, slot),
            None => file,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = rank;
        file
    }
}

/// The descriptors a lock may be moved among: this process's limit, at most [`CEILING`].
#[cfg(unix)]
fn usable_limit() -> u64 {
    use rustix::process::{getrlimit, Resource};
    capped(getrlimit(Resource::Nofile).current)
}

/// A limit on descriptors (`None`: none), at most [`CEILING`].
#[cfg(unix)]
fn capped(limit: Option<u64>) -> u64 {
    limit.unwrap_or(CEILING).min(CEILING)
}

/// The descriptor for `rank` under a limit of `limit` descriptors.
#[cfg(unix)]
fn slot(limit: u64, rank: LockRank) -> Option<i32> {
    if limit < FLOOR {
        return None;
    }
    let below_the_limit = match rank {
        LockRank::Store => 1,
        LockRank::Election => 2,
    };
    i32::try_from(limit - below_the_limit).ok()
}

/// `file` on descriptor `slot` if it is free, else `file` as it is.
#[cfg(unix)]
fn moved_to(file: File, slot: i32) -> File {
    use std::os::fd::AsRawFd;
    match rustix::io::fcntl_dupfd_cloexec(&file, slot) {
        // The lock belongs to the open file, not to a descriptor: the old one closes, the
        // file stays open (and locked) through the new.
        Ok(moved) if moved.as_raw_fd() == slot => File::from(moved),
        _ => file,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A process may open many more descriptors than the ceiling (20 000 on the machines
    /// this was written on, or no limit at all): a lock still goes no higher.
    #[test]
    fn a_lock_goes_no_higher_than_the_ceiling_whatever_the_limit() {
        for (limit, store_slot) in [
            (None, 1023),
            (Some(u64::MAX), 1023),
            (Some(20_000), 1023),
            (Some(1024), 1023),
            (Some(256), 255),
            (Some(FLOOR), 63),
        ] {
            assert_eq!(slot(capped(limit), LockRank::Store), Some(store_slot));
        }
    }

    #[test]
    fn the_store_lock_goes_above_the_election_lock_under_any_limit() {
        for limit in [FLOOR, 256, 1024] {
            let election = slot(limit, LockRank::Election).unwrap();
            let store = slot(limit, LockRank::Store).unwrap();
            assert!(store > election, "limit {limit}");
            assert!(u64::try_from(store).unwrap() < limit, "limit {limit}");
        }
        assert_eq!(slot(FLOOR - 1, LockRank::Store), None);
    }

    /// Slots of their own under this process's limit (the fjall tests beside them take the
    /// top two).
    fn free_slots() -> Option<(i32, i32)> {
        let top = i32::try_from(usable_limit()).ok()?.checked_sub(11)?;
        (top > 16).then_some((top, top - 1))
    }

    #[test]
    fn a_lock_moved_to_a_free_slot_is_there_and_still_held() {
        let Some((slot, _)) = free_slots() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = moved_to(File::create(&path).unwrap(), slot);
        assert_eq!(held.as_raw_fd(), slot);
        held.try_lock().unwrap();
        let other = File::open(&path).unwrap();
        assert!(other.try_lock().is_err(), "the moved file lost its lock");
        drop(held);
        other.try_lock().unwrap();
    }

    #[test]
    fn a_lock_whose_slot_is_taken_stays_where_it_is() {
        let Some((_, slot)) = free_slots() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let taken = moved_to(File::create(dir.path().join("first")).unwrap(), slot);
        assert_eq!(taken.as_raw_fd(), slot);
        let second = File::create(dir.path().join("second")).unwrap();
        let low = second.as_raw_fd();
        assert_eq!(moved_to(second, slot).as_raw_fd(), low);
    }
}

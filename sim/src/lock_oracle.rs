//! The virtual election lock, with the semantics of `flock`: one holder at a time, and the
//! lock is free the instant its holder crashes.

/// Identifies a virtual process.
pub type ProcessId = usize;

/// Who holds the virtual lock file, if anyone.
#[derive(Debug, Default)]
pub struct LockOracle {
    holder: Option<ProcessId>,
    /// Counts the times the lock was taken: names one holding.
    taken: u64,
}

impl LockOracle {
    /// A non-blocking lock attempt: true when `process` holds the lock afterwards.
    pub fn try_lock(&mut self, process: ProcessId) -> bool {
        match self.holder {
            None => {
                self.holder = Some(process);
                self.taken += 1;
                true
            }
            Some(holder) => holder == process,
        }
    }

    /// Releases the lock if `process` holds it (a clean unlock, or the process crashing).
    pub fn release(&mut self, process: ProcessId) {
        if self.holder == Some(process) {
            self.holder = None;
        }
    }

    pub fn holder(&self) -> Option<ProcessId> {
        self.holder
    }

    /// Names the current holding, if any: a leadership releases only the holding it was
    /// elected with, not one its process took again after losing that one.
    pub fn holding(&self) -> Option<(ProcessId, u64)> {
        self.holder.map(|holder| (holder, self.taken))
    }

    /// Releases the lock if it is still `holding`.
    pub fn release_holding(&mut self, holding: (ProcessId, u64)) {
        if self.holding() == Some(holding) {
            self.holder = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_until_it_releases() {
        let mut lock = LockOracle::default();
        assert!(lock.try_lock(1));
        assert!(!lock.try_lock(2), "a second process must see the lock busy");
        lock.release(2);
        assert_eq!(lock.holder(), Some(1), "only the holder can release");
        lock.release(1);
        assert!(lock.try_lock(2));
        assert_eq!(lock.holder(), Some(2));
    }

    #[test]
    fn a_holding_lost_and_taken_again_is_not_released_by_its_old_name() {
        let mut lock = LockOracle::default();
        assert!(lock.try_lock(1));
        let first = lock.holding().unwrap();
        lock.release(1);
        assert!(lock.try_lock(1));
        lock.release_holding(first);
        assert_eq!(lock.holder(), Some(1), "the second holding stays");
        let second = lock.holding().unwrap();
        lock.release_holding(second);
        assert_eq!(lock.holder(), None);
    }
}

//! The virtual election lock, with the semantics of `flock`: one holder at a time, and the
//! lock is free the instant its holder crashes.

/// Identifies a virtual process.
pub type ProcessId = usize;

/// Who holds the virtual lock file, if anyone.
#[derive(Debug, Default)]
pub struct LockOracle {
    holder: Option<ProcessId>,
}

impl LockOracle {
    /// A non-blocking lock attempt: true when `process` holds the lock afterwards.
    pub fn try_lock(&mut self, process: ProcessId) -> bool {
        match self.holder {
            None => {
                self.holder = Some(process);
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
}

//! Known bug classes, re-created on purpose (cargo feature `bug-injection`) so that the
//! simulator can prove its checks catch them. Never enabled in a build that serves data.

/// Which bugs to re-create; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Iterators resume from an inclusive bound on the last delivered key, so that key is
    /// delivered again after a failover (level-party's behaviour).
    pub inclusive_resume: bool,
    /// A leader keeps serving after losing the lock.
    pub ignore_lock_loss: bool,
}

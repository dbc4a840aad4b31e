//! When writes stop being committed on the callers' threads for a while: a commit that took
//! long there (fjall stalls its writers for 10–500 ms when compaction falls behind) held an
//! async worker, and with it every task waiting for that worker (other followers' reads,
//! on a single-worker runtime the leader's own handle). While paused, writes go to the
//! store thread, which may stall without holding anyone else up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A commit on a caller's thread that takes longer than this pauses the others: longer
/// than fjall's rotations of its memtable and journal under a steady load (at 2 ms they
/// paused it often enough to cost a quarter of the rate of 64 puts in flight), as long as
/// its shortest stall.
const SLOW: Duration = Duration::from_millis(10);

/// How long a slow commit pauses commits on callers' threads.
const PAUSE: Duration = Duration::from_millis(100);

/// Shared by every clone: until when writes go to the store thread, in microseconds of the
/// handle's clock (a heuristic: any order of its loads and stores is correct).
#[derive(Debug, Clone, Default)]
pub(crate) struct SlowWrites(Arc<AtomicU64>);

impl SlowWrites {
    /// Whether a write may be committed on the caller's thread at `now`.
    pub fn allow(&self, now: Duration) -> bool {
        micros(now) >= self.0.load(Ordering::Relaxed)
    }

    /// A commit on a caller's thread ended at `now` after `took`.
    pub fn took(&self, now: Duration, took: Duration) {
        if took > SLOW {
            // What explains a run of slower writes after it (`RUST_LOG=party_core=debug`).
            tracing::debug!(
                ?took,
                "a slow commit: writes go to the store thread for a while"
            );
            self.0.fetch_max(micros(now + PAUSE), Ordering::Relaxed);
        }
    }
}

fn micros(time: Duration) -> u64 {
    u64::try_from(time.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_commit_pauses_commits_here_for_a_while_and_a_quick_one_does_not() {
        let slow = SlowWrites::default();
        let at = |ms| Duration::from_millis(ms);
        assert!(slow.allow(at(0)));
        slow.took(at(10), Duration::from_micros(300));
        assert!(slow.allow(at(10)), "a quick commit changes nothing");
        slow.clone().took(at(20), Duration::from_millis(30));
        assert!(!slow.allow(at(21)), "paused, for every clone");
        assert!(!slow.allow(at(119)));
        assert!(slow.allow(at(120)), "and only for a while");
    }
}

//! The driver's side of "time is a parameter": one epoch per process, from which every
//! `Timestamp` handed to the sans-IO machines is measured.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use party_proto::Timestamp;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn now() -> Timestamp {
    Timestamp::from_epoch(epoch().elapsed())
}

/// The wall clock, as a duration since the Unix epoch (for the writer's dedup records,
/// which other processes read). `now()` stops while the machine sleeps; this does not.
pub(crate) fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The wall clock at this process's epoch (`Timestamp` zero), for the machines that tell
/// wall-clock times to other processes.
pub(crate) fn wall_at_epoch() -> Duration {
    wall_now().saturating_sub(epoch().elapsed())
}

/// The tokio instant of a machine's timeout.
pub(crate) fn instant(at: Timestamp) -> tokio::time::Instant {
    (epoch() + at.since_epoch()).into()
}

/// This process's epoch on the host's monotonic clock (Linux's `CLOCK_MONOTONIC`, which
/// `Instant` reads too): the same line for every process of the host, for recordings.
pub(crate) fn epoch_on_host_clock() -> Duration {
    #[cfg(unix)]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let host = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        host.saturating_sub(epoch().elapsed())
    }
    #[cfg(not(unix))]
    {
        wall_at_epoch()
    }
}

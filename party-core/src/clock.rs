//! The driver's side of "time is a parameter": one epoch per process, from which every
//! `Timestamp` handed to the sans-IO machines is measured.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use party_proto::Timestamp;

use crate::alarm::{self, Alarm};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn now() -> Timestamp {
    Timestamp::from_epoch(elapsed())
}

/// The handle's clock: time since the process first read it.
pub(crate) fn elapsed() -> Duration {
    epoch().elapsed()
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

/// The tokio instant of a machine's timeout; one past what an `Instant` can hold (a
/// `request_timeout` of `Duration::MAX`, the machines' sums saturating there) is parked.
pub(crate) fn instant(at: Timestamp) -> tokio::time::Instant {
    match epoch().checked_add(at.since_epoch()) {
        Some(at) => at.into(),
        None => tokio::time::Instant::now() + PARKED,
    }
}

/// A machine's timeout as one tokio timer that a loop moves, rather than a timer made
/// and dropped at every turn: each of those took the runtime's timer lock twice, while
/// moving a timer later (a request's timeout after the one before) takes no lock. A
/// timeout closer than [`alarm::NEAR`] when it is set (the election's retries) also rings
/// on an [`Alarm`], tokio's timer counting whole milliseconds; whichever rings first ends
/// the wait. One set while the last alarm's thread still sleeps waits on tokio's timer
/// alone (a deadline left as it was gets no alarm later either).
pub(crate) struct Timer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    armed: Option<Timestamp>,
    /// The armed timeout's alarm, if it was near when set.
    alarm: Option<Alarm>,
    /// When the thread of the last alarm is done sleeping (about: it starts once the pool
    /// takes it up): a near timeout set before then (one moved, a request's timeout made
    /// under 2 ms by its caller) waits on tokio's timer alone, so that a handle keeps about
    /// one thread asleep at a time.
    alarm_asleep_until: Duration,
}

/// Where a timer with no timeout waits: far enough never to fire, and later than any
/// timeout, so that parking it there takes no lock either.
const PARKED: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Timer {
    pub fn new() -> Timer {
        Timer {
            sleep: Box::pin(tokio::time::sleep(PARKED)),
            armed: None,
            alarm: None,
            alarm_asleep_until: Duration::ZERO,
        }
    }

    /// Resolves at `at`; never when there is none.
    pub fn until(&mut self, at: Option<Timestamp>) -> impl Future<Output = ()> + '_ {
        if at != self.armed {
            self.alarm = at.and_then(|at| self.alarm_for(elapsed(), at));
            let deadline = match at {
                Some(at) => instant(at),
                None => tokio::time::Instant::now() + PARKED,
            };
            self.sleep.as_mut().reset(deadline);
            self.armed = at;
        }
        std::future::poll_fn(move |context| {
            if self.armed.is_none() {
                return Poll::Pending;
            }
            if let Some(alarm) = &mut self.alarm {
                if alarm.poll_rung(context).is_ready() {
                    return Poll::Ready(());
                }
            }
            self.sleep.as_mut().poll(context)
        })
    }

    /// An alarm for `at`, set at `now`: at once if it is due, on a thread if it is near and
    /// no alarm's thread still sleeps.
    fn alarm_for(&mut self, now: Duration, at: Timestamp) -> Option<Alarm> {
        let after = at.since_epoch().saturating_sub(now);
        if after.is_zero() {
            return Some(Alarm::ring_in(after));
        }
        if after >= alarm::NEAR || now < self.alarm_asleep_until {
            return None;
        }
        self.alarm_asleep_until = now + after;
        Some(Alarm::ring_in(after))
    }
}

/// This process's epoch on the host's monotonic clock (Linux's `CLOCK_MONOTONIC`, which
/// `Instant` reads too): the same line for every process of the host, for recordings.
pub(crate) fn epoch_on_host_clock() -> Duration {
    #[cfg(unix)]
    {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let host = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
        host.saturating_sub(elapsed())
    }
    #[cfg(not(unix))]
    {
        wall_at_epoch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls the timer once, so that it is set as a loop's turn would leave it.
    async fn set(timer: &mut Timer, at: Option<Timestamp>) {
        let first = tokio::time::timeout(Duration::ZERO, timer.until(at)).await;
        assert!(first.is_err(), "a timeout in the future fired at once");
    }

    /// Whether the timer fires for `at` before a plain sleep until `before`.
    async fn fires_before(timer: &mut Timer, at: Option<Timestamp>, before: Timestamp) -> bool {
        tokio::select! {
            biased;
            () = timer.until(at) => true,
            () = tokio::time::sleep_until(instant(before)) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_moved_later_fires_at_the_later_time_only() {
        let mut timer = Timer::new();
        let soon = now() + Duration::from_millis(10);
        let later = soon + Duration::from_millis(20);
        set(&mut timer, Some(soon)).await;
        let margin = Duration::from_millis(5);
        assert!(!fires_before(&mut timer, Some(later), soon + margin).await);
        assert!(fires_before(&mut timer, Some(later), later + margin).await);
        assert!(tokio::time::Instant::now() >= instant(later));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_moved_earlier_fires_at_the_earlier_time() {
        let mut timer = Timer::new();
        let soon = now() + Duration::from_millis(10);
        let later = soon + Duration::from_millis(20);
        set(&mut timer, Some(later)).await;
        assert!(fires_before(&mut timer, Some(soon), soon + Duration::from_millis(5)).await);
        assert!(tokio::time::Instant::now() < instant(later));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_timeout_it_never_fires_not_even_at_the_one_before() {
        let mut timer = Timer::new();
        let soon = now() + Duration::from_millis(10);
        set(&mut timer, Some(soon)).await;
        let long_after = soon + Duration::from_secs(3600);
        assert!(!fires_before(&mut timer, None, long_after).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_that_fired_fires_again_when_asked_for_again() {
        let mut timer = Timer::new();
        let soon = now() + Duration::from_millis(10);
        timer.until(Some(soon)).await;
        let again = tokio::time::timeout(Duration::from_millis(1), timer.until(Some(soon))).await;
        assert!(again.is_ok(), "a timeout already due fires at once");
        let next = now() + Duration::from_millis(10);
        assert!(fires_before(&mut timer, Some(next), next + Duration::from_millis(5)).await);
    }

    #[tokio::test]
    async fn a_near_timeout_rings_on_an_alarm_and_a_far_one_on_tokios_timer() {
        let mut timer = Timer::new();
        let near = now() + alarm::NEAR / 4;
        timer.until(Some(near)).await;
        assert!(timer.alarm.is_some(), "a near timeout is not on an alarm");
        assert!(now() >= near, "the alarm rang before the timeout");
        let far = now() + alarm::NEAR * 5;
        set(&mut timer, Some(far)).await;
        assert!(timer.alarm.is_none(), "a far timeout kept the alarm");
        // Near again, then none: its alarm goes with it.
        let _ = tokio::time::timeout(Duration::ZERO, timer.until(Some(now()))).await;
        assert!(timer.alarm.is_some());
        set(&mut timer, None).await;
        assert!(timer.alarm.is_none(), "a timeout taken back kept its alarm");
    }

    #[tokio::test]
    async fn a_handle_keeps_at_most_one_alarm_asleep() {
        let mut timer = Timer::new();
        let at = |micros| Timestamp::from_epoch(Duration::from_micros(micros));
        let now = |micros| Duration::from_micros(micros);
        assert!(timer.alarm_for(now(0), at(1_000)).is_some());
        // Moved while that one sleeps: tokio's timer alone.
        assert!(timer.alarm_for(now(500), at(750)).is_none());
        assert!(timer.alarm_for(now(1_000), at(1_250)).is_some());
        assert!(
            timer.alarm_for(now(1_250), at(1_250 + 2_000)).is_none(),
            "far"
        );
        assert!(timer.alarm_for(now(1_250), at(1_300)).is_some());
        // Due already: rings at once, whatever sleeps.
        let due = timer
            .alarm_for(now(1_260), at(1_260))
            .expect("a due timeout's alarm");
        assert!(due.is_rung());
    }

    #[tokio::test]
    async fn a_near_timeout_that_rang_rings_again_when_asked_for_again() {
        let mut timer = Timer::new();
        let near = now() + alarm::NEAR / 4;
        timer.until(Some(near)).await;
        let again = tokio::time::timeout(alarm::NEAR, timer.until(Some(near))).await;
        assert!(again.is_ok(), "a near timeout already due rings at once");
    }
}

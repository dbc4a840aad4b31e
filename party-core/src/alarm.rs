//! Short waits, to the tens of microseconds. tokio's timers count whole milliseconds and
//! round a deadline up to the next one, so a wait of 125–500 µs (the election's first
//! retries while a dead leader's lock is still going away, a transaction's first retry
//! after a conflict) took 1–2 ms, on the failover's path. A wait shorter than [`NEAR`]
//! sleeps on a thread of tokio's blocking pool instead (the kernel's timers, precise to
//! its timer slack, 50 µs by default), which wakes the task when it is over.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Waits shorter than this ring on an [`Alarm`]; longer ones on tokio's timers, whose
/// millisecond is close enough for them (and which move without a thread, as a request's
/// timeout does at every request).
pub(crate) const NEAR: Duration = Duration::from_millis(2);

/// One short wait, on a blocking thread. Dropped before it rings, its thread still sleeps
/// out the rest (under [`NEAR`]) and goes back to the pool.
pub(crate) struct Alarm {
    rung: tokio::task::JoinHandle<()>,
}

impl Alarm {
    /// Rings `after` from now. Must be called within a tokio runtime.
    pub fn ring_in(after: Duration) -> Alarm {
        Alarm {
            rung: tokio::task::spawn_blocking(move || std::thread::sleep(after)),
        }
    }

    /// Ready once the alarm has rung.
    pub fn poll_rung(&mut self, context: &mut Context<'_>) -> Poll<()> {
        // A sleep does not fail; a pool shutting down cancels it, which rings it too.
        Pin::new(&mut self.rung).poll(context).map(|_| ())
    }
}

/// Waits `wait`: on an [`Alarm`] if it is shorter than [`NEAR`], else on tokio's timer.
pub(crate) async fn sleep(wait: Duration) {
    if wait < NEAR {
        let mut alarm = Alarm::ring_in(wait);
        std::future::poll_fn(|context| alarm.poll_rung(context)).await;
    } else {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_wait_ends_after_its_time_on_either_side_of_near() {
        for wait in [Duration::ZERO, Duration::from_micros(200), NEAR] {
            let start = Instant::now();
            sleep(wait).await;
            assert!(
                start.elapsed() >= wait,
                "a wait of {wait:?} ended before its time"
            );
        }
    }

    #[tokio::test]
    async fn an_alarm_rings_once_its_time_is_over() {
        let start = Instant::now();
        let mut alarm = Alarm::ring_in(Duration::from_micros(300));
        std::future::poll_fn(|context| alarm.poll_rung(context)).await;
        assert!(start.elapsed() >= Duration::from_micros(300));
    }
}

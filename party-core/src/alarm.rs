//! Short waits, to the tens of microseconds. tokio's timers count whole milliseconds and
//! round a deadline up to the next one, so a wait of 125–500 µs (the election's first
//! retries while a dead leader's lock is still going away) took 1–2 ms, on the failover's
//! path. A wait shorter than [`NEAR`] also sleeps on a thread of tokio's blocking pool (the
//! kernel's timers, precise to its timer slack, 50 µs by default), which wakes the task when
//! it is over; the caller keeps tokio's timer armed beside it, so that a pool kept busy by
//! the program makes the wait no later than tokio alone would.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Waits shorter than this ring on an [`Alarm`]; longer ones on tokio's timers alone, whose
/// millisecond is close enough for them (and which move without a thread, as a request's
/// timeout does at every request).
pub(crate) const NEAR: Duration = Duration::from_millis(2);

/// One short wait, on a blocking thread. Dropped before it rings, its thread still sleeps
/// out the rest (under [`NEAR`]) and goes back to the pool.
pub(crate) struct Alarm {
    /// `None` once it has rung (a wait of zero rings at once, without a thread).
    sleeping: Option<tokio::task::JoinHandle<()>>,
}

impl Alarm {
    /// Rings `after` from now. Must be called within a tokio runtime.
    pub fn ring_in(after: Duration) -> Alarm {
        let sleeping = (!after.is_zero())
            .then(|| tokio::task::spawn_blocking(move || std::thread::sleep(after)));
        Alarm { sleeping }
    }

    /// Whether it has rung, as far as polls have seen (at once for a wait of zero).
    #[cfg(test)]
    pub fn is_rung(&self) -> bool {
        self.sleeping.is_none()
    }

    /// Ready once the alarm has rung, and at every poll after.
    pub fn poll_rung(&mut self, context: &mut Context<'_>) -> Poll<()> {
        if let Some(sleeping) = &mut self.sleeping {
            // A sleep does not fail; a pool shutting down cancels it, which rings it too.
            let _ = std::task::ready!(Pin::new(sleeping).poll(context));
            self.sleeping = None;
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    async fn rung(alarm: &mut Alarm) {
        std::future::poll_fn(|context| alarm.poll_rung(context)).await;
    }

    #[tokio::test]
    async fn an_alarm_rings_once_its_time_is_over_and_stays_rung() {
        let start = Instant::now();
        let mut alarm = Alarm::ring_in(Duration::from_micros(300));
        rung(&mut alarm).await;
        assert!(start.elapsed() >= Duration::from_micros(300));
        // Polled again (a loop's next turn): rung still, not a finished task polled anew.
        rung(&mut alarm).await;
    }

    #[tokio::test]
    async fn an_alarm_for_now_rings_at_once() {
        let mut alarm = Alarm::ring_in(Duration::ZERO);
        assert!(alarm.is_rung(), "a thread for a wait of zero");
        rung(&mut alarm).await;
    }
}

//! The low-latency mode's wait ([`crate::Options::spin`]): an end that expects the other
//! end to speak soon polls its socket for a while before it parks. Parking costs a round
//! of the kernel's scheduler on each side of every exchange (tens of microseconds on a
//! virtual machine), many times what the exchange itself takes; polling costs a core while
//! it lasts, so it is bounded, and it adapts: a wait that the other end does not end in
//! time halves the next one's bound, down to a sixteenth; one it does end doubles it back.
//!
//! Only an end that expects an answer spins: a follower with requests in flight, a leader's
//! connection right after an exchange. An idle handle never does.

use std::future::poll_fn;
use std::task::Poll;
use std::time::{Duration, Instant};

/// How long a spin holds its worker thread before it lets the runtime's other tasks run.
const SLICE: Duration = Duration::from_micros(20);

/// How long one end may poll before it parks, adapted to how its waits end.
#[derive(Debug, Clone)]
pub(crate) struct Spinner {
    max: Duration,
    budget: Duration,
}

/// The longest wait that polls, whatever the option asks: a connection also notices its
/// leader stopping only between two waits.
pub(crate) const MAX_SPIN: Duration = Duration::from_millis(10);

impl Spinner {
    pub fn new(max: Duration) -> Spinner {
        let max = max.min(MAX_SPIN);
        Spinner { max, budget: max }
    }

    /// Polls `attempt` until it gives something, yielding to the runtime's other tasks
    /// every [`SLICE`]; `None` once the bound is spent (the caller then parks).
    pub async fn spin<T>(&mut self, attempt: impl FnMut() -> Option<T>) -> Option<T> {
        self.spin_by(Instant::now, attempt).await
    }

    /// [`Spinner::spin`] by the clock `now` (a test's own, to count tries).
    async fn spin_by<T>(
        &mut self,
        now: impl Fn() -> Instant,
        mut attempt: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let began = now();
        let budget = self.budget;
        let got = poll_fn(|context| {
            let slice = now();
            loop {
                if let Some(got) = attempt() {
                    return Poll::Ready(Some(got));
                }
                if now() - began >= budget {
                    return Poll::Ready(None);
                }
                if now() - slice >= SLICE {
                    // Scheduled again behind whatever else is ready: a yield, not a stall.
                    // Not after every try: each yield also wakes an idle worker to steal.
                    context.waker().wake_by_ref();
                    return Poll::Pending;
                }
                std::hint::spin_loop();
            }
        })
        .await;
        self.adapt(got.is_some());
        got
    }

    fn adapt(&mut self, ended_in_time: bool) {
        self.budget = if ended_in_time {
            (self.budget * 2).min(self.max)
        } else {
            (self.budget / 2).max(self.max / 16)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_the_other_end_ends_in_time_keeps_its_bound() {
        let mut spinner = Spinner::new(Duration::from_millis(1));
        let mut tries = 0;
        let got = spinner
            .spin(|| {
                tries += 1;
                (tries == 3).then_some(tries)
            })
            .await;
        assert_eq!(got, Some(3));
        assert_eq!(spinner.budget, Duration::from_millis(1));
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_halves_the_next_bound_down_to_a_sixteenth() {
        let max = Duration::from_micros(160);
        let mut spinner = Spinner::new(max);
        let began = Instant::now();
        assert_eq!(spinner.spin(|| None::<()>).await, None);
        assert!(began.elapsed() >= max, "gave up before its bound");
        assert_eq!(spinner.budget, max / 2);
        for _ in 0..8 {
            spinner.spin(|| None::<()>).await;
        }
        assert_eq!(spinner.budget, max / 16);
        spinner.spin(|| Some(())).await;
        assert_eq!(spinner.budget, max / 8);
    }

    /// A bound halved by waits that ran out is the one the next wait keeps to: an end
    /// whose other end is slow gives up its core sooner. By a clock that moves 100 µs at
    /// each reading: a bound of 625 µs allows a few tries, the option's 10 ms dozens.
    #[tokio::test]
    async fn a_wait_gives_up_at_its_adapted_bound_not_the_options() {
        let mut spinner = Spinner::new(MAX_SPIN);
        spinner.budget = MAX_SPIN / 16;
        let clock = std::cell::Cell::new(Instant::now());
        let now = || {
            clock.set(clock.get() + Duration::from_micros(100));
            clock.get()
        };
        let mut tries = 0;
        let got = spinner
            .spin_by(now, || {
                tries += 1;
                None::<()>
            })
            .await;
        assert_eq!(got, None);
        assert!((2..8).contains(&tries), "{tries} tries");
    }

    /// The option's documented cap: a connection must notice its leader stopping.
    #[tokio::test]
    async fn a_bound_over_the_cap_counts_as_the_cap() {
        let mut spinner = Spinner::new(Duration::from_secs(10));
        assert_eq!((spinner.max, spinner.budget), (MAX_SPIN, MAX_SPIN));
        spinner.spin(|| Some(())).await;
        assert_eq!(
            spinner.budget, MAX_SPIN,
            "an answer in time does not pass it"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_spinning_task_lets_the_others_run() {
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        tokio::spawn(async move { sender.send(7).unwrap() });
        let mut spinner = Spinner::new(Duration::from_secs(10));
        // On a single thread, the sender only runs if the spin yields.
        let got = spinner.spin(|| receiver.try_recv().ok()).await;
        assert_eq!(got, Some(7));
    }
}

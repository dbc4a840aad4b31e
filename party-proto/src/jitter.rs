//! Bounded, jittered retry waits. The randomness is a caller-supplied seed run through
//! SplitMix64, so waits are spread between processes yet replayable in the simulator.

use std::time::Duration;

/// A small deterministic generator (SplitMix64). Not for anything secret.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Exponential backoff capped at `max`, each wait drawn from the upper half of its step so
/// processes that failed together do not retry together.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The wait before the next retry; each call doubles the step, up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        let step = self
            .initial
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(self.rng.next_u64() % spread.saturating_add(1))
    }

    /// Starts again from the initial step, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_stay_bounded_and_reset() {
        let initial = Duration::from_millis(1);
        let max = Duration::from_millis(50);
        let mut backoff = Backoff::new(initial, max, 7);
        let waits: Vec<Duration> = (0..40).map(|_| backoff.next_wait()).collect();
        assert!(waits.iter().all(|w| *w >= initial / 2 && *w <= max));
        assert!(waits[0] <= initial);
        assert!(waits[39] >= max / 2, "late waits reach the cap's range");
        backoff.reset();
        assert!(backoff.next_wait() <= initial);
    }

    /// A cap set below the initial step does not shorten the first waits below it: the
    /// initial step is the least a caller asked to wait between tries. The waits spread
    /// over the whole upper half of the step.
    #[test]
    fn a_cap_below_the_initial_step_is_the_initial_step() {
        let initial = Duration::from_millis(10);
        let mut backoff = Backoff::new(initial, Duration::from_millis(1), 7);
        let waits: Vec<Duration> = (0..20).map(|_| backoff.next_wait()).collect();
        assert!(waits.iter().all(|w| *w >= initial / 2 && *w <= initial));
        assert!(waits.iter().any(|w| *w < Duration::from_millis(6)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(9)));
    }

    #[test]
    fn same_seed_same_waits_other_seed_other_waits() {
        let run = |seed| {
            let mut b = Backoff::new(Duration::from_millis(1), Duration::from_secs(1), seed);
            (0..8).map(|_| b.next_wait()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}

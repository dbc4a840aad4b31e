//! Time as a parameter. The machines never read a clock: every input carries `now`, and
//! the driver picks the epoch (process start for party-core, zero for the simulator).

use std::ops::Add;
use std::time::Duration;

/// A point in time, measured from an epoch chosen by the driver.
#[derive(
    serde::Serialize,
    serde::Deserialize,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// The driver's epoch.
    pub const ZERO: Timestamp = Timestamp(Duration::ZERO);

    pub const fn from_epoch(elapsed: Duration) -> Self {
        Timestamp(elapsed)
    }

    pub const fn since_epoch(self) -> Duration {
        self.0
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(rhs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = Timestamp::from_epoch(Duration::from_millis(5));
        assert_eq!(
            (t + Duration::from_millis(3)).since_epoch(),
            Duration::from_millis(8)
        );
        assert_eq!(Timestamp::ZERO.saturating_since(t), Duration::ZERO);
        assert_eq!(
            t.saturating_since(Timestamp::ZERO),
            Duration::from_millis(5)
        );
        assert_eq!(
            (t + Duration::MAX).since_epoch(),
            Duration::MAX,
            "adding past the end saturates"
        );
    }
}

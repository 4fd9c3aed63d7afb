//! Jittered exponential backoff for reconnects, with the randomness passed in so that it
//! can be tested exactly.

use std::time::Duration;

/// Delay before the next reconnect attempt: doubles per failure from `base` up to `max`,
/// and each delay is drawn uniformly from its upper half ("equal jitter"), so that many
/// nodes cut off together do not reconnect together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base`, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    /// The delay after one more failure. `unit` is a random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// Call after a connection that worked: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_within_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(100));
        assert_eq!(b.next_delay(0.5), Duration::from_millis(300));
        assert_eq!(b.next_delay(0.0), Duration::from_millis(400));
        assert_eq!(
            b.next_delay(0.0),
            Duration::from_millis(500),
            "capped at 1 s"
        );
        for _ in 0..100 {
            assert!(b.next_delay(1.0) <= Duration::from_secs(1));
        }
        b.reset();
        assert_eq!(b.next_delay(0.0), Duration::from_millis(50));
    }
}

//! Exponential backoff with full jitter, shared by reconnect loops, the
//! relay and message retries.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// Delay before retry number `attempt` (1-based): a random duration up to
    /// `initial * 2^(attempt-1)`, capped at `max`. Full jitter keeps many
    /// consumers that failed together from retrying together.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(2_u32.saturating_pow(attempt.saturating_sub(1).min(20)));
        let ceiling = exp.min(self.max);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX).max(1);
        // Never below a tenth of the ceiling, so a retry is never immediate.
        let floor = millis / 10;
        Duration::from_millis(rand::rng().random_range(floor..=millis))
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..100 {
            assert!(b.delay(1) <= Duration::from_millis(100));
            assert!(b.delay(3) <= Duration::from_millis(400));
            assert!(b.delay(3) >= Duration::from_millis(40));
            assert!(b.delay(30) <= Duration::from_secs(2));
        }
    }
}

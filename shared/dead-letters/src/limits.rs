//! How long the broker calls of one operation may wait.

use crate::{DeadLetterError, Result};
use std::time::{Duration, Instant};

/// How long the broker calls of one operation may wait: each at most a round
/// trip, and all of them together at most the budget, if there is one.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    round_trip: Duration,
    /// When the budget is spent, and the budget.
    deadline: Option<(Instant, Duration)>,
}

impl Limits {
    pub fn new(round_trip: Duration, budget: Option<Duration>) -> Self {
        Self { round_trip, deadline: budget.map(|b| (Instant::now() + b, b)) }
    }

    pub(crate) fn round_trip(&self) -> Duration {
        self.round_trip
    }

    /// Time left in the budget (`None`: no budget).
    pub(crate) fn left(&self) -> Option<Duration> {
        self.deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()))
    }

    /// How long the next call may wait: a round trip, or what is left of the
    /// budget; an error once the budget is spent.
    pub(crate) fn wait(&self, doing: &str) -> Result<Duration> {
        match (self.left(), self.deadline) {
            (Some(left), Some((_, budget))) if left.is_zero() => {
                Err(DeadLetterError::Timeout { after: budget, doing: format!("{doing} (the operation's time is up)") })
            }
            (Some(left), _) => Ok(left.min(self.round_trip)),
            _ => Ok(self.round_trip),
        }
    }

    /// Whether there is still a full round trip's time left: a replay starts
    /// another letter only then, so that it can finish it.
    pub(crate) fn has_round_trip_left(&self) -> bool {
        self.left().is_none_or(|left| left >= self.round_trip)
    }

    /// The earliest of `span` from now and the end of the budget less `reserve`.
    pub(crate) fn until(&self, span: Duration, reserve: Duration) -> Instant {
        let by_span = Instant::now() + span;
        match self.deadline {
            Some((at, _)) => by_span.min(at.checked_sub(reserve).unwrap_or(at)),
            None => by_span,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_caps_every_wait_and_ends_the_operation() {
        let unbounded = Limits::new(Duration::from_secs(2), None);
        assert_eq!(unbounded.wait("x").unwrap(), Duration::from_secs(2));
        assert!(unbounded.has_round_trip_left());

        let budget = Limits::new(Duration::from_secs(2), Some(Duration::from_millis(300)));
        assert!(budget.wait("x").unwrap() <= Duration::from_millis(300));
        assert!(!budget.has_round_trip_left(), "less than a round trip left");
        assert!(
            budget.until(Duration::from_secs(4), Duration::from_millis(100))
                <= Instant::now() + Duration::from_millis(200)
        );

        let spent = Limits::new(Duration::from_secs(2), Some(Duration::ZERO));
        let err = spent.wait("reading a dead letter").unwrap_err();
        assert!(err.is_broker_error(), "a 503, not a 500");
        assert!(err.to_string().contains("reading a dead letter"), "{err}");
    }
}

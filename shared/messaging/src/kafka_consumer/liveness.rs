//! Whether a consumer still hears from the brokers. librdkafka reconnects by
//! itself, but a consumer has been seen to stay for good on "1/1 brokers are
//! down" while the broker served every other client (docs/broker-notes.md): a consumer that has heard only errors for [`ConsumerLiveness`]'s
//! bound is replaced, as [`crate::kafka::KafkaPublisher`] replaces a failed
//! producer. So is a group member that does not settle in its group (joined,
//! synced, assigned) within the bound, though its metadata requests are
//! answered: a consumer the broker answers but never gives partitions to
//! is as deaf as one that hears only errors.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What one consumer (one generation) heard since it was created: records
/// and answered metadata requests are signs of life; receive errors and
/// failed metadata requests are errors.
#[derive(Clone)]
pub(super) struct ConsumerLiveness(Arc<Mutex<Heard>>);

struct Heard {
    /// Creation, or the last sign of life.
    since: Instant,
    /// Errors since then, and the last one.
    errors: u64,
    last_error: Option<String>,
    /// When the last record came.
    last_record: Option<Instant>,
    /// Group mode: where the member is in its group's protocol.
    group: Option<GroupProgress>,
}

/// Whether a group member settled in its group, from librdkafka's statistics.
struct GroupProgress {
    /// Creation, or the last report of the member settled.
    settled_at: Instant,
    /// What the last report said, if the member was not settled.
    unsettled: Option<String>,
}

impl ConsumerLiveness {
    pub(super) fn new(now: Instant) -> Self {
        Self(Arc::new(Mutex::new(Heard { since: now, errors: 0, last_error: None, last_record: None, group: None })))
    }

    /// Also watches the member's progress in its group (subscribed consumers).
    pub(super) fn in_group(self, now: Instant) -> Self {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).group =
            Some(GroupProgress { settled_at: now, unsettled: None });
        self
    }

    /// A statistics report of the member's group state: `settled`, or not and why.
    pub(super) fn group_state(&self, settled: bool, described: String, now: Instant) {
        let mut heard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = heard.group.as_mut() {
            if settled {
                (group.settled_at, group.unsettled) = (now, None);
            } else {
                group.unsettled = Some(described);
            }
        }
    }

    /// An answered request.
    pub(super) fn alive(&self, now: Instant) {
        let mut heard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (heard.since, heard.errors, heard.last_error) = (now, 0, None);
    }

    /// A record came: alive, and proof the fetches work.
    pub(super) fn record(&self, now: Instant) {
        let mut heard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (heard.since, heard.errors, heard.last_error, heard.last_record) = (now, 0, None, Some(now));
    }

    /// Whether a record came within `window` before `now`.
    pub(super) fn record_within(&self, window: Duration, now: Instant) -> bool {
        let heard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        heard.last_record.is_some_and(|at| now.saturating_duration_since(at) <= window)
    }

    pub(super) fn error(&self, error: &dyn std::fmt::Display) {
        let mut heard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        heard.errors += 1;
        heard.last_error = Some(error.to_string());
    }

    /// Why the consumer is stuck, if nothing but errors came for `bound`
    /// (silence without errors is an idle topic, not a fault), or if, in a
    /// group, it has not been settled in it for `settle_bound` (a record or
    /// an answer from the brokers does not count: they come without
    /// partitions).
    pub(super) fn stuck(&self, bound: Duration, settle_bound: Duration, now: Instant) -> Option<String> {
        let heard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let quiet = now.saturating_duration_since(heard.since);
        if heard.errors > 0 && quiet >= bound {
            return Some(format!(
                "no record and no answered metadata request for {}s, {} errors, the last: {}",
                quiet.as_secs(),
                heard.errors,
                heard.last_error.as_deref().unwrap_or("none")
            ));
        }
        let group = heard.group.as_ref()?;
        let unsettled_for = now.saturating_duration_since(group.settled_at);
        match &group.unsettled {
            Some(described) if unsettled_for >= settle_bound => {
                Some(format!("not settled in its consumer group for {}s: {described}", unsettled_for.as_secs()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(30);

    #[test]
    fn stuck_only_after_nothing_but_errors_for_the_bound() {
        let start = Instant::now();
        let liveness = ConsumerLiveness::new(start);
        assert_eq!(liveness.stuck(BOUND, BOUND, start + BOUND * 2), None, "an idle topic without errors is not stuck");
        liveness.error(&"AllBrokersDown");
        assert_eq!(liveness.stuck(BOUND, BOUND, start + BOUND / 2), None, "not for long enough");
        let stuck = liveness.stuck(BOUND, BOUND, start + BOUND).expect("errors only, for the bound");
        assert!(stuck.contains("1 errors") && stuck.contains("AllBrokersDown"), "{stuck}");
    }

    #[test]
    fn a_sign_of_life_starts_the_bound_again() {
        let start = Instant::now();
        let liveness = ConsumerLiveness::new(start);
        liveness.error(&"timed out");
        liveness.record(start + BOUND / 2);
        assert!(liveness.record_within(Duration::from_secs(1), start + BOUND / 2));
        assert_eq!(liveness.stuck(BOUND, BOUND, start + BOUND), None, "a record came in between");
        liveness.error(&"timed out");
        assert!(liveness.stuck(BOUND, BOUND, start + BOUND / 2 + BOUND).is_some());
    }

    #[test]
    fn a_group_member_that_does_not_settle_for_the_bound_is_stuck_though_the_brokers_answer() {
        let start = Instant::now();
        let liveness = ConsumerLiveness::new(start).in_group(start);
        liveness.group_state(false, "join state wait-join".into(), start + BOUND / 2);
        liveness.alive(start + BOUND / 2);
        assert_eq!(liveness.stuck(BOUND, BOUND, start + BOUND / 2), None, "not for long enough");
        let stuck = liveness.stuck(BOUND, BOUND, start + BOUND).expect("unsettled since its creation, for the bound");
        assert!(stuck.contains("not settled") && stuck.contains("wait-join"), "{stuck}");
        liveness.group_state(true, "steady".into(), start + BOUND);
        assert_eq!(liveness.stuck(BOUND, BOUND, start + BOUND * 3 / 2), None, "settled: the bound starts again");
        liveness.group_state(false, "join state wait-sync".into(), start + BOUND * 3 / 2);
        assert_eq!(liveness.stuck(BOUND, BOUND, start + BOUND * 3 / 2), None, "a rebalance has begun, not lasted");
        assert!(liveness.stuck(BOUND, BOUND, start + BOUND * 2).is_some_and(|s| s.contains("wait-sync")));
    }

    #[test]
    fn outside_a_group_its_state_is_not_watched() {
        let start = Instant::now();
        let liveness = ConsumerLiveness::new(start);
        liveness.group_state(false, "join state init".into(), start);
        assert_eq!(liveness.stuck(BOUND, BOUND, start + BOUND * 2), None);
    }
}

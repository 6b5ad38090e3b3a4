//! The seeded kill schedule: which component dies when, and for how long.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Everything the chaos run may kill.
pub const TARGETS: [&str; 9] =
    ["order", "stock", "payment", "shipping", "email", "loyalty", "postgres", "rabbitmq", "kafka"];
/// Infrastructure that every run with enough kills must include.
pub const INFRASTRUCTURE: [&str; 3] = ["postgres", "rabbitmq", "kafka"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedKill {
    /// When to kill, from the start of the load.
    pub at: Duration,
    pub target: &'static str,
    /// How long it stays dead before the restart.
    pub down_for: Duration,
}

/// `kills` kills spread over `window`, reproducible from `seed`. With at
/// least three kills, each of PostgreSQL, RabbitMQ and Kafka dies at least
/// once; the rest are drawn from every target.
pub fn plan(seed: u64, kills: usize, window: Duration, targets: &[&'static str]) -> Vec<PlannedKill> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chosen: Vec<&'static str> = Vec::with_capacity(kills);
    let infrastructure: Vec<&'static str> = INFRASTRUCTURE.iter().copied().filter(|t| targets.contains(t)).collect();
    if kills >= infrastructure.len() {
        chosen.extend(infrastructure);
    }
    while chosen.len() < kills {
        chosen.push(targets[rng.random_range(0..targets.len())]);
    }
    chosen.shuffle(&mut rng);
    let slot = window.as_secs_f64() / kills.max(1) as f64;
    chosen
        .into_iter()
        .enumerate()
        .map(|(i, target)| PlannedKill {
            at: Duration::from_secs_f64(slot * (i as f64 + rng.random_range(0.1..0.9))),
            target,
            down_for: Duration::from_millis(rng.random_range(200..2_000)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_plan_and_every_infrastructure_component_dies() {
        let a = plan(7, 10, Duration::from_secs(60), &TARGETS);
        assert_eq!(a, plan(7, 10, Duration::from_secs(60), &TARGETS));
        assert_ne!(a, plan(8, 10, Duration::from_secs(60), &TARGETS));
        assert_eq!(a.len(), 10);
        for component in INFRASTRUCTURE {
            assert!(a.iter().any(|k| k.target == component), "{component} never killed");
        }
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        assert!(a.iter().all(|k| k.at < Duration::from_secs(60)));
    }
}

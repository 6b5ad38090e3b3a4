//! The seeded fault schedule: which component dies, or which link is cut,
//! when, and for how long.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Everything the chaos run may kill.
pub const TARGETS: [&str; 9] =
    ["order", "stock", "payment", "shipping", "email", "loyalty", "postgres", "rabbitmq", "kafka"];
/// Infrastructure that every run with enough kills must include.
pub const INFRASTRUCTURE: [&str; 3] = ["postgres", "rabbitmq", "kafka"];
/// The links a run may partition: the network between the services and
/// each piece of infrastructure, named after it.
pub const LINKS: [&str; 3] = INFRASTRUCTURE;

/// What happens to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL, then a restart.
    Kill,
    /// The network to it drops every byte, silently, then heals for new
    /// connections only (see `chaos_proxy`).
    Partition,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFault {
    /// When to strike, from the start of the load.
    pub at: Duration,
    pub kind: FaultKind,
    /// A component or service to kill, or a link to cut.
    pub target: &'static str,
    /// How long it stays dead (or cut) before the restart (or heal).
    pub down_for: Duration,
}

/// `kills` kills and `partitions` partitions spread over `window`, in time
/// order, reproducible from `seed`. The kills are those of [`kills`] for the
/// same seed whatever the number of partitions, so a seed that found
/// something with kills alone still finds it.
pub fn plan(
    seed: u64,
    kills: usize,
    partitions: usize,
    window: Duration,
    targets: &[&'static str],
) -> Vec<PlannedFault> {
    let mut faults = self::kills(seed, kills, window, targets);
    faults.extend(self::partitions(seed, partitions, window));
    faults.sort_by_key(|fault| fault.at);
    faults
}

/// With at least three kills, each of PostgreSQL, RabbitMQ and Kafka dies
/// at least once; the rest are drawn from every target.
pub fn kills(seed: u64, kills: usize, window: Duration, targets: &[&'static str]) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let infrastructure: Vec<&'static str> = INFRASTRUCTURE.iter().copied().filter(|t| targets.contains(t)).collect();
    let chosen = draw(&mut rng, kills, &infrastructure, targets);
    spread(&mut rng, chosen, FaultKind::Kill, window, 200..2_000)
}

/// With at least three partitions, each link is cut at least once. Cuts
/// last 1 to 8 s: any cut strands every connection that lived through it
/// for good, so even a short one must be noticed and recovered from.
pub fn partitions(seed: u64, partitions: usize, window: Duration) -> Vec<PlannedFault> {
    // Its own stream of the seed: adding partitions leaves the kills alone.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b21);
    let chosen = draw(&mut rng, partitions, &LINKS, &LINKS);
    spread(&mut rng, chosen, FaultKind::Partition, window, 1_000..8_000)
}

/// `count` targets: every one of `required` (if `count` allows), the rest
/// drawn from `pool`, shuffled.
fn draw(rng: &mut StdRng, count: usize, required: &[&'static str], pool: &[&'static str]) -> Vec<&'static str> {
    let mut chosen: Vec<&'static str> = Vec::with_capacity(count);
    if count >= required.len() {
        chosen.extend(required);
    }
    while chosen.len() < count {
        chosen.push(pool[rng.random_range(0..pool.len())]);
    }
    chosen.shuffle(rng);
    chosen
}

/// One fault per equal slot of `window`, at a random point of its slot.
fn spread(
    rng: &mut StdRng,
    targets: Vec<&'static str>,
    kind: FaultKind,
    window: Duration,
    down_ms: std::ops::Range<u64>,
) -> Vec<PlannedFault> {
    let slot = window.as_secs_f64() / targets.len().max(1) as f64;
    targets
        .into_iter()
        .enumerate()
        .map(|(i, target)| PlannedFault {
            at: Duration::from_secs_f64(slot * (i as f64 + rng.random_range(0.1..0.9))),
            kind,
            target,
            down_for: Duration::from_millis(rng.random_range(down_ms.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_plan_and_every_infrastructure_component_dies() {
        let a = plan(7, 10, 0, Duration::from_secs(60), &TARGETS);
        assert_eq!(a, plan(7, 10, 0, Duration::from_secs(60), &TARGETS));
        assert_ne!(a, plan(8, 10, 0, Duration::from_secs(60), &TARGETS));
        assert_eq!(a.len(), 10);
        for component in INFRASTRUCTURE {
            assert!(a.iter().any(|k| k.target == component), "{component} never killed");
        }
        assert!(a.iter().all(|k| k.kind == FaultKind::Kill));
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        assert!(a.iter().all(|k| k.at < Duration::from_secs(60)));
    }

    #[test]
    fn partitions_cut_every_link_and_leave_the_kills_of_the_seed_alone() {
        let window = Duration::from_secs(60);
        let with = plan(7, 10, 4, window, &TARGETS);
        assert_eq!(with.len(), 14);
        assert!(with.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        let kills: Vec<PlannedFault> = with.iter().filter(|f| f.kind == FaultKind::Kill).cloned().collect();
        assert_eq!(kills, plan(7, 10, 0, window, &TARGETS));
        let cuts: Vec<&PlannedFault> = with.iter().filter(|f| f.kind == FaultKind::Partition).collect();
        for link in LINKS {
            assert!(cuts.iter().any(|c| c.target == link), "{link} never cut");
        }
        assert!(cuts.iter().all(|c| c.down_for >= Duration::from_secs(1) && c.down_for < Duration::from_secs(8)));
        assert!(cuts.iter().all(|c| c.at < window));
    }
}

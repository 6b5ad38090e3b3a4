//! Invariant 7 on the brokers: no dead letter is waiting anywhere (7b, 7c),
//! and nothing is still in flight (7d). Counted by the dead-letter tools, so
//! "empty" means what an operator sees: messages in a RabbitMQ queue, and
//! Kafka records past a group's committed offsets (records cannot be deleted
//! from a topic; a dead-letter topic's group is its admin group).

use crate::CheckError;
use crate::report::{CheckResult, Invariant, ResultBuilder};
use contracts::Topology;
use dead_letters::{DeadLetters, PendingCount};
use messaging::secret::redact_url;

/// The RabbitMQ of the local runner's development stack.
pub const DEV_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:21672/%2f";
/// The Kafka (Tansu) of the local runner's development stack.
pub const DEV_KAFKA_BROKERS: &str = "127.0.0.1:21092";

/// Where the brokers are; either may be absent, and the checks that need it are skipped.
#[derive(Clone, Default)]
pub struct Brokers {
    /// e.g. `amqp://guest:guest@127.0.0.1:21672/%2f`
    pub amqp_url: Option<String>,
    /// e.g. `127.0.0.1:21092`
    pub kafka_brokers: Option<String>,
    /// Names of the queues and topics (its namespace must match the services').
    pub topology: Topology,
}

/// By hand: the AMQP URL's password is left out.
impl std::fmt::Debug for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brokers")
            .field("amqp_url", &self.amqp_url.as_deref().map(redact_url))
            .field("kafka_brokers", &self.kafka_brokers)
            .field("topology", &self.topology)
            .finish()
    }
}

impl Brokers {
    fn tools(&self) -> DeadLetters {
        DeadLetters::new(
            self.amqp_url.clone().unwrap_or_default(),
            self.kafka_brokers.clone().unwrap_or_default(),
            self.topology.clone(),
        )
    }
}

/// One count per queue, topic or group; each non-empty one is an offender,
/// "<n> <what>".
fn result(
    invariant: Invariant,
    max: usize,
    counts: impl IntoIterator<Item = (String, u64, &'static str)>,
) -> CheckResult {
    let mut r = ResultBuilder::new(invariant, max);
    for (name, n, what) in counts {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        r.count(&name, n);
        if n > 0 {
            r.offend(name, format!("{n} {what}"));
        }
    }
    r.finish()
}

fn dead_letters(counts: Vec<PendingCount>) -> impl Iterator<Item = (String, u64, &'static str)> {
    counts.into_iter().map(|c| (c.destination.name, c.pending, "dead letter(s) waiting"))
}

/// 7b. Every RabbitMQ dead-letter queue is empty; skipped without a URL.
pub async fn amqp_dead_letters(brokers: &Brokers, max: usize) -> Result<CheckResult, CheckError> {
    if brokers.amqp_url.is_none() {
        return Ok(CheckResult::skipped(Invariant::AmqpDeadLettersEmpty, "no AMQP URL given"));
    }
    let counts = brokers.tools().rabbitmq_pending().await.map_err(|e| CheckError::Amqp(e.to_string()))?;
    Ok(result(Invariant::AmqpDeadLettersEmpty, max, dead_letters(counts)))
}

/// 7c. Every Kafka dead-letter topic has nothing pending; skipped without brokers.
pub async fn kafka_dead_letters(brokers: &Brokers, max: usize) -> Result<CheckResult, CheckError> {
    if brokers.kafka_brokers.is_none() {
        return Ok(CheckResult::skipped(Invariant::KafkaDeadLettersEmpty, "no Kafka brokers given"));
    }
    let counts = brokers.tools().kafka_pending().await.map_err(|e| CheckError::Kafka(e.to_string()))?;
    Ok(result(Invariant::KafkaDeadLettersEmpty, max, dead_letters(counts)))
}

/// 7d. No command or reply waits in its queue and every consumer group has
/// committed past every record of the topics it reads; skipped unless both
/// brokers are given. Checked after a run has drained, it makes the other
/// checks final: nothing left on its way can still add an effect, and an
/// order that is not final had its message lost, not delayed.
pub async fn nothing_in_flight(brokers: &Brokers, max: usize) -> Result<CheckResult, CheckError> {
    if brokers.amqp_url.is_none() || brokers.kafka_brokers.is_none() {
        return Ok(CheckResult::skipped(Invariant::NothingInFlight, "needs both brokers"));
    }
    let backlog = brokers.tools().live_backlog().await.map_err(|e| CheckError::Broker(e.to_string()))?;
    Ok(result(
        Invariant::NothingInFlight,
        max,
        backlog.into_iter().map(|b| {
            let what = if b.group.is_some() { "record(s) not yet consumed" } else { "message(s) waiting" };
            (b.name(), b.waiting, what)
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_amqp_password_does_not_print() {
        let brokers = Brokers {
            amqp_url: Some("amqp://guest:hunter2@127.0.0.1:5672/%2f".to_owned()),
            kafka_brokers: Some(DEV_KAFKA_BROKERS.to_owned()),
            topology: Topology::default(),
        };
        let printed = format!("{brokers:?}");
        assert!(!printed.contains("hunter2") && printed.contains("127.0.0.1:5672"), "{printed}");
    }
}

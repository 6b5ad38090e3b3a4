//! Invariant 7 on the brokers: no dead letter is waiting anywhere. Counted by
//! the dead-letter tools, so "empty" means what an operator sees: messages in
//! a RabbitMQ `.dlq` queue, and Kafka `.dlq` records not yet replayed or
//! purged (records cannot be deleted from a topic).

use crate::CheckError;
use crate::report::{CheckResult, Invariant, ResultBuilder};
use contracts::Topology;
use dead_letters::{DeadLetters, PendingCount};

/// The RabbitMQ of the local runner's development stack.
pub const DEV_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:55672/%2f";
/// The Kafka (Tansu) of the local runner's development stack.
pub const DEV_KAFKA_BROKERS: &str = "127.0.0.1:59092";

/// Where the brokers are; either may be absent, and its check is skipped.
#[derive(Debug, Clone, Default)]
pub struct Brokers {
    /// e.g. `amqp://guest:guest@127.0.0.1:55672/%2f`
    pub amqp_url: Option<String>,
    /// e.g. `127.0.0.1:59092`
    pub kafka_brokers: Option<String>,
    /// Names of the queues and topics (its namespace must match the services').
    pub topology: Topology,
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

fn result(invariant: Invariant, counts: Vec<PendingCount>, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(invariant, max);
    for count in counts {
        let pending = i64::try_from(count.pending).unwrap_or(i64::MAX);
        r.count(&count.destination.name, pending);
        if pending > 0 {
            r.offend(&count.destination.name, format!("{pending} dead letter(s) waiting"));
        }
    }
    r.finish()
}

/// 7b. Every RabbitMQ dead-letter queue is empty; skipped without a URL.
pub async fn amqp_dead_letters(brokers: &Brokers, max: usize) -> Result<CheckResult, CheckError> {
    if brokers.amqp_url.is_none() {
        return Ok(CheckResult::skipped(Invariant::AmqpDeadLettersEmpty, "no AMQP URL given"));
    }
    let counts = brokers.tools().rabbitmq_pending().await.map_err(|e| CheckError::Amqp(e.to_string()))?;
    Ok(result(Invariant::AmqpDeadLettersEmpty, counts, max))
}

/// 7c. Every Kafka dead-letter topic has nothing pending; skipped without brokers.
pub async fn kafka_dead_letters(brokers: &Brokers, max: usize) -> Result<CheckResult, CheckError> {
    if brokers.kafka_brokers.is_none() {
        return Ok(CheckResult::skipped(Invariant::KafkaDeadLettersEmpty, "no Kafka brokers given"));
    }
    let counts = brokers.tools().kafka_pending().await.map_err(|e| CheckError::Kafka(e.to_string()))?;
    Ok(result(Invariant::KafkaDeadLettersEmpty, counts, max))
}

//! What the tools work on and report: dead-letter destinations, letters,
//! counts, replay selections and reports.

use crate::values;
use contracts::Topology;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most letters one replay sends back. A larger selection is replayed in
/// several calls, each report saying how many remain: a Kafka replay holds
/// the records it sends in memory, and every call must end in bounded time.
pub const MAX_REPLAY_PER_CALL: usize = 1000;

/// Headers that describe the dead-lettering rather than the message: ours
/// (`messaging::dead_letter`) and RabbitMQ's own. A replay removes them.
pub const DEAD_LETTER_HEADERS: &[&str] = &[
    messaging::dead_letter::REASON,
    messaging::dead_letter::ATTEMPTS,
    messaging::dead_letter::ORIGINAL_DESTINATION,
    messaging::dead_letter::CONSUMER,
    messaging::dead_letter::DEAD_LETTERED_AT,
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    "x-delivery-count",
];

pub fn is_dead_letter_header(name: &str) -> bool {
    DEAD_LETTER_HEADERS.contains(&name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Broker {
    Rabbitmq,
    Kafka,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Broker::Rabbitmq => "rabbitmq",
            Broker::Kafka => "kafka",
        })
    }
}

/// A dead-letter queue or topic of the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Destination {
    pub name: String,
    pub broker: Broker,
    /// The queue or topic whose consumer dead-letters here: where a replay sends.
    pub source: String,
    /// Kafka: the consumer group that dead-letters here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Destination {
    /// `<queue>.dlq`, where the consumer of RabbitMQ `queue` dead-letters.
    pub fn rabbitmq(queue: &str) -> Self {
        Self {
            name: Topology::dead_letter_queue(queue),
            broker: Broker::Rabbitmq,
            source: queue.to_owned(),
            group: None,
        }
    }

    /// `<topic>.<group>.dlq`, where consumer group `group` dead-letters records of `topic`.
    pub fn kafka(topic: &str, group: &str) -> Self {
        Self {
            name: Topology::dead_letter_topic(topic, group),
            broker: Broker::Kafka,
            source: topic.to_owned(),
            group: Some(group.to_owned()),
        }
    }

    /// Kafka: the group whose committed offsets mark what was replayed or purged.
    pub fn admin_group(&self) -> String {
        format!("{}.admin", self.name)
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingCount {
    #[serde(flatten)]
    pub destination: Destination,
    /// Letters waiting: messages in the queue, or records past the admin group's offsets.
    pub pending: u64,
}

/// Messages the system's own consumers have yet to take from one live
/// queue, or one consumer group has yet to commit past on one topic.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    /// The queue, or the topic.
    pub source: String,
    pub broker: Broker,
    /// Kafka: the consumer group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Messages ready in the queue, or records past the group's committed offsets.
    pub waiting: u64,
}

impl Backlog {
    /// `queue`, or `topic (group)`.
    pub fn name(&self) -> String {
        match &self.group {
            Some(group) => format!("{} ({group})", self.source),
            None => self.source.clone(),
        }
    }
}

/// Where a Kafka record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KafkaPosition {
    #[schema(minimum = 0)]
    pub partition: i32,
    #[schema(minimum = 0)]
    pub offset: i64,
}

/// One dead letter as stored, with the dead-letter headers decoded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Absent when the envelope itself was what could not be read.
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    pub correlation_id: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<u32>,
    pub original_destination: Option<String>,
    pub dead_lettered_by: Option<String>,
    pub dead_lettered_at: Option<String>,
    /// Every header, values as JSON (AMQP tables such as `x-death` as objects).
    pub headers: BTreeMap<String, serde_json::Value>,
    /// RabbitMQ: the message properties (message id, type, reply-to, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, serde_json::Value>,
    /// Kafka: the record key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Kafka: where the record is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<KafkaPosition>,
    /// The body as text (invalid UTF-8 replaced).
    pub payload: String,
    pub payload_bytes: usize,
}

impl DeadLetter {
    /// Fills the decoded fields from the header values.
    pub(crate) fn decode_headers(&mut self) {
        let text = |name: &str| self.headers.get(name).and_then(values::as_text);
        self.reason = text(messaging::dead_letter::REASON);
        self.attempts = text(messaging::dead_letter::ATTEMPTS).and_then(|a| a.trim().parse().ok());
        self.original_destination = text(messaging::dead_letter::ORIGINAL_DESTINATION);
        self.dead_lettered_by = text(messaging::dead_letter::CONSUMER);
        self.dead_lettered_at = text(messaging::dead_letter::DEAD_LETTERED_AT);
    }
}

/// Which letters a replay sends back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelection {
    All,
    /// One letter by message id (Kafka: only the oldest pending one of its partition).
    Message(String),
    /// Kafka: the pending records of one partition up to this offset, inclusive.
    UpTo(KafkaPosition),
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    pub message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<KafkaPosition>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub dead_letter_destination: String,
    /// Where the letters were sent.
    pub sent_to: String,
    pub replayed: u64,
    /// Letters of the selection, as it was when the replay started, still
    /// pending: past [`MAX_REPLAY_PER_CALL`] or the time budget. Replay again.
    pub remaining: u64,
    pub messages: Vec<Replayed>,
}

impl ReplayReport {
    pub(crate) fn new(dlq: &Destination) -> Self {
        Self {
            dead_letter_destination: dlq.name.clone(),
            sent_to: dlq.source.clone(),
            replayed: 0,
            remaining: 0,
            messages: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PurgeReport {
    pub dead_letter_destination: String,
    pub purged: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_letter_headers_are_stripped() {
        assert!(is_dead_letter_header("x-dead-letter-reason"));
        assert!(is_dead_letter_header("x-death"));
        assert!(!is_dead_letter_header("traceparent"));
        assert!(!is_dead_letter_header("schema_version"));
    }
}

//! Dead letters: list, inspect, replay and purge what the consumers could not
//! handle (how letters get there: `messaging::dead_letter`).
//!
//! - RabbitMQ `<queue>.dlq` ([`amqp`]): letters are read with `basic.get` and
//!   left unacknowledged, so closing the channel puts them back. A replay
//!   acknowledges a letter only after the broker confirmed its copy.
//! - Kafka `<topic>.<group>.dlq` ([`kafka`]): records cannot be deleted, so
//!   every dead-letter topic has an admin consumer group of its own
//!   (`<dlq>.admin`) whose committed offsets mark what was replayed or purged.
//!   Pending = the records after those offsets (all of them if none), up to
//!   the high watermarks. Kafka positions are contiguous per partition, so a
//!   single record can be replayed only when it is the oldest pending one of
//!   its partition; otherwise replay all, or up to an offset.
//!
//! A replay sends a letter back to the queue or topic its dead-letter
//! destination belongs to (`x-original-destination` is only shown: a forged
//! header cannot route a message anywhere else), with the same message id,
//! properties, key and headers minus the dead-letter ones, so the consumer's
//! inbox still drops a message that had in fact been handled. One replay
//! sends at most [`MAX_REPLAY_PER_CALL`] letters and says how many remain.
//!
//! Time: every broker call waits at most one round trip
//! ([`DeadLetters::with_timeout`]); with [`DeadLetters::with_budget`] a whole
//! operation also ends within that budget (the admin routes use one well
//! below the HTTP request timeout): a read that does not finish in time is
//! an error, and a replay stops reading and sending in time to confirm and
//! report what it sent (a timeout only if it had read nothing).

pub mod amqp;
pub mod kafka;
mod values;

use contracts::Topology;
use messaging::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    fn decode_headers(&mut self) {
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
    fn new(dlq: &Destination) -> Self {
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

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("`{name}` is not a dead-letter destination here; valid names: {}", valid.join(", "))]
    UnknownDestination { name: String, valid: Vec<String> },
    #[error("no message with id `{message_id}` in {destination}")]
    MessageNotFound { destination: String, message_id: String },
    /// The request makes no sense for this destination (e.g. an offset for a queue).
    #[error("{0}")]
    Unsupported(String),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("replay to {destination} failed after {replayed} message(s), at message {message_id:?}: {reason}")]
    ReplayFailed { destination: String, message_id: Option<String>, replayed: u64, reason: String },
    #[error("timed out after {after:?} {doing}")]
    Timeout { after: Duration, doing: String },
    #[error("background task failed: {0}")]
    Task(String),
}

impl DeadLetterError {
    /// The broker could not be reached or answered with an error: worth retrying later.
    pub fn is_broker_error(&self) -> bool {
        matches!(
            self,
            DeadLetterError::Amqp(_)
                | DeadLetterError::Kafka(_)
                | DeadLetterError::Timeout { .. }
                | DeadLetterError::ReplayFailed { .. }
        )
    }
}

pub type Result<T, E = DeadLetterError> = std::result::Result<T, E>;

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

/// Where the brokers are and how the names are prefixed. Each operation opens
/// its own connections: administration is rare, and nothing stays open.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    amqp_url: Secret,
    kafka_brokers: String,
    topology: Topology,
    timeout: Duration,
    budget: Option<Duration>,
}

impl DeadLetters {
    pub fn new(amqp_url: impl Into<String>, kafka_brokers: impl Into<String>, topology: Topology) -> Self {
        Self {
            amqp_url: Secret::new(amqp_url),
            kafka_brokers: kafka_brokers.into(),
            topology,
            timeout: Duration::from_secs(15),
            budget: None,
        }
    }

    /// How long one broker round trip may take (reading a Kafka topic to its
    /// end, or waiting for a replay's deliveries: twice that).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one whole operation may take: broker waits are cut to fit,
    /// and a replay stops starting letters in time to report what it did.
    /// Without one (the default) only [`Self::with_timeout`] bounds the calls.
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = Some(budget);
        self
    }

    fn limits(&self) -> Limits {
        Limits::new(self.timeout, self.budget)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Every dead-letter destination of the topology: the `.dlq` of each
    /// command queue, then each Kafka group's `.dlq` topic per subscribed topic.
    pub fn destinations(&self) -> Vec<Destination> {
        let mut all: Vec<Destination> =
            self.topology.command_queues().iter().map(|queue| Destination::rabbitmq(queue)).collect();
        for (service, topics) in self.topology.subscriptions() {
            let group = self.topology.consumer_group(service);
            all.extend(topics.iter().map(|topic| Destination::kafka(topic, &group)));
        }
        all
    }

    /// The destination called `name`, or an error listing the valid names.
    pub fn resolve(&self, name: &str) -> Result<Destination> {
        let all = self.destinations();
        match all.iter().find(|d| d.name == name) {
            Some(d) => Ok(d.clone()),
            None => Err(DeadLetterError::UnknownDestination {
                name: name.to_owned(),
                valid: all.into_iter().map(|d| d.name).collect(),
            }),
        }
    }

    /// Pending letters of every destination of the topology (for the
    /// invariant "every dead-letter queue empty" and the CLI's summary).
    pub async fn summary(&self) -> Result<Vec<PendingCount>> {
        self.pending_of(&self.destinations()).await
    }

    /// Pending letters of the RabbitMQ dead-letter queues only.
    pub async fn rabbitmq_pending(&self) -> Result<Vec<PendingCount>> {
        let dlqs: Vec<Destination> = self.destinations().into_iter().filter(|d| d.broker == Broker::Rabbitmq).collect();
        self.pending_of(&dlqs).await
    }

    /// Pending records of the Kafka dead-letter topics only.
    pub async fn kafka_pending(&self) -> Result<Vec<PendingCount>> {
        let dlqs: Vec<Destination> = self.destinations().into_iter().filter(|d| d.broker == Broker::Kafka).collect();
        self.pending_of(&dlqs).await
    }

    /// What is still on its way through the brokers: messages ready in each
    /// command and reply queue, and records each consumer group has not
    /// committed past on each topic it reads. Counted like the dead letters,
    /// so with them the invariant checker can tell a lost message (found
    /// nowhere) from one still in flight. Unacknowledged RabbitMQ deliveries
    /// are not counted (AMQP does not tell); a queue never declared holds none.
    pub async fn live_backlog(&self) -> Result<Vec<Backlog>> {
        let limits = self.limits();
        let queues = self.topology.command_queues();
        let counts = amqp::counts(self.amqp_url.expose(), &queues, limits).await?;
        let mut all: Vec<Backlog> = queues
            .into_iter()
            .zip(counts)
            .map(|(source, waiting)| Backlog { source, broker: Broker::Rabbitmq, group: None, waiting })
            .collect();
        let pairs: Vec<(String, String)> = self
            .topology
            .subscriptions()
            .into_iter()
            .flat_map(|(service, topics)| {
                let group = self.topology.consumer_group(service);
                topics.into_iter().map(move |topic| (group.clone(), topic))
            })
            .collect();
        // One client and a few round trips per pair: asked all at once.
        let waiting = futures::future::try_join_all(
            pairs.iter().map(|(group, topic)| kafka::unconsumed(&self.kafka_brokers, group, topic, limits)),
        )
        .await?;
        all.extend(pairs.into_iter().zip(waiting).map(|((group, source), waiting)| Backlog {
            source,
            broker: Broker::Kafka,
            group: Some(group),
            waiting,
        }));
        Ok(all)
    }

    /// Pending letters of each destination, in the order given.
    pub async fn pending(&self, dlqs: &[Destination]) -> Result<Vec<PendingCount>> {
        self.pending_of(dlqs).await
    }

    async fn pending_of(&self, dlqs: &[Destination]) -> Result<Vec<PendingCount>> {
        let limits = self.limits();
        let queues: Vec<String> =
            dlqs.iter().filter(|d| d.broker == Broker::Rabbitmq).map(|d| d.name.clone()).collect();
        let mut queue_counts =
            if queues.is_empty() { Vec::new() } else { amqp::counts(self.amqp_url.expose(), &queues, limits).await? }
                .into_iter();
        let mut counts = Vec::with_capacity(dlqs.len());
        for d in dlqs {
            let pending = match d.broker {
                Broker::Rabbitmq => queue_counts.next().unwrap_or_default(),
                Broker::Kafka => kafka::count(&self.kafka_brokers, d, limits).await?,
            };
            counts.push(PendingCount { destination: d.clone(), pending });
        }
        Ok(counts)
    }

    /// Up to `limit` pending letters, left where they are.
    pub async fn list(&self, dlq: &Destination, limit: usize) -> Result<Vec<DeadLetter>> {
        match dlq.broker {
            Broker::Rabbitmq => amqp::list(self.amqp_url.expose(), dlq, limit, self.limits()).await,
            Broker::Kafka => kafka::list(&self.kafka_brokers, dlq, limit, self.limits()).await,
        }
    }

    /// One pending letter by message id, left where it is.
    pub async fn show(&self, dlq: &Destination, message_id: &str) -> Result<DeadLetter> {
        match dlq.broker {
            Broker::Rabbitmq => amqp::show(self.amqp_url.expose(), dlq, message_id, self.limits()).await,
            Broker::Kafka => kafka::show(&self.kafka_brokers, dlq, message_id, self.limits()).await,
        }
    }

    /// Sends the selected letters back to where they came from, at most
    /// [`MAX_REPLAY_PER_CALL`]; each leaves the dead-letter destination only
    /// once the broker has its copy.
    pub async fn replay(&self, dlq: &Destination, selection: &ReplaySelection) -> Result<ReplayReport> {
        match dlq.broker {
            Broker::Rabbitmq => amqp::replay(self.amqp_url.expose(), dlq, selection, self.limits()).await,
            Broker::Kafka => kafka::replay(&self.kafka_brokers, dlq, selection, self.limits()).await,
        }
    }

    /// Drops every pending letter; returns how many.
    pub async fn purge(&self, dlq: &Destination) -> Result<PurgeReport> {
        let purged = match dlq.broker {
            Broker::Rabbitmq => amqp::purge(self.amqp_url.expose(), dlq, self.limits()).await?,
            Broker::Kafka => kafka::purge(&self.kafka_brokers, dlq, self.limits()).await?,
        };
        Ok(PurgeReport { dead_letter_destination: dlq.name.clone(), purged })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_cover_every_command_queue_and_group_topic() {
        let dl = DeadLetters::new("amqp://x", "x:1", Topology::new("t1."));
        let stock = dl.resolve("t1.stock.commands.dlq").unwrap();
        assert_eq!((stock.broker, stock.source.as_str()), (Broker::Rabbitmq, "t1.stock.commands"));
        let email = dl.resolve("t1.shipments.t1.email.dlq").unwrap();
        assert_eq!((email.broker, email.source.as_str()), (Broker::Kafka, "t1.shipments"));
        assert_eq!(email.group.as_deref(), Some("t1.email"));
        assert_eq!(email.admin_group(), "t1.shipments.t1.email.dlq.admin");
        let kafka_topics: Vec<String> =
            Topology::new("t1.").all_topics().into_iter().filter(|t| t.ends_with(".dlq")).collect();
        let known: Vec<String> =
            dl.destinations().into_iter().filter(|d| d.broker == Broker::Kafka).map(|d| d.name).collect();
        assert_eq!(known, kafka_topics);
    }

    #[test]
    fn the_amqp_password_does_not_print() {
        let dl = DeadLetters::new("amqp://guest:hunter2@127.0.0.1:5672/%2f", "x:1", Topology::default());
        assert!(!format!("{dl:?}").contains("hunter2"), "{dl:?}");
    }

    #[test]
    fn an_unknown_name_lists_the_valid_ones() {
        let dl = DeadLetters::new("amqp://x", "x:1", Topology::default());
        let err = dl.resolve("stock.commands").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("stock.commands.dlq") && text.contains("orders.email.dlq"), "{text}");
    }

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

    #[test]
    fn only_dead_letter_headers_are_stripped() {
        assert!(is_dead_letter_header("x-dead-letter-reason"));
        assert!(is_dead_letter_header("x-death"));
        assert!(!is_dead_letter_header("traceparent"));
        assert!(!is_dead_letter_header("schema_version"));
    }
}

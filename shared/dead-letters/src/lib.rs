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
mod error;
pub mod kafka;
mod letters;
mod limits;
mod values;

pub use error::{DeadLetterError, Result};
pub use letters::{
    Backlog, Broker, DEAD_LETTER_HEADERS, DeadLetter, Destination, KafkaPosition, MAX_REPLAY_PER_CALL, PendingCount,
    PurgeReport, ReplayReport, ReplaySelection, Replayed, is_dead_letter_header,
};
pub use limits::Limits;

use contracts::Topology;
use messaging::secret::Secret;
use std::time::Duration;

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
}

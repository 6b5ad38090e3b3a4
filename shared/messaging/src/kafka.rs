//! Kafka: an idempotent producer (`acks=all`) whose sends are confirmed one by
//! one, topic creation, and a readiness probe. librdkafka reconnects by
//! itself; the probe only reports whether the brokers answer.

use crate::wire;
use contracts::Envelope;
use health::Readiness;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode as ErrorCode;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Re-exported so callers name librdkafka errors without depending on rdkafka.
pub use rdkafka::error as rdkafka_error;

pub const PRODUCER_COMPONENT: &str = "kafka-producer";

#[derive(Debug, thiserror::Error)]
pub enum KafkaPublishError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("Kafka delivery future dropped (producer closed)")]
    Canceled,
    /// A pinned send found another producer than its batch's first send
    /// (see [`ProducerPin`]); it was not enqueued.
    #[error(
        "the Kafka producer was replaced mid-batch (the batch is pinned to generation {pinned}, now {current}); \
         the rest of the batch goes out on the next pass"
    )]
    ProducerChanged { pinned: u64, current: u64 },
}

impl KafkaPublishError {
    /// The brokers refused the record itself: see [`is_record_refused`].
    pub fn is_record_refused(&self) -> bool {
        matches!(self, KafkaPublishError::Kafka(e) if is_record_refused(e))
    }
}

/// Settings for a producer that neither loses nor reorders nor duplicates
/// on retry: idempotence implies `acks=all` and at most 5 in-flight requests
/// per connection with ordering kept.
pub fn producer_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("socket.keepalive.enable", "true")
        // `socket.timeout.ms` stays at librdkafka's 60 s. 15 s brought a
        // service back from a silent partition in 11 s instead of 56 s, but
        // against a saturated broker (Tansu in the long chaos run) it timed
        // out requests that were only queued, tore their connections down,
        // and restarted consumers stayed unready for minutes.
        .set("reconnect.backoff.max.ms", "2000");
    config
}

/// Publishes to Kafka through one idempotent producer at a time.
///
/// A delivery that fails for any reason but the record itself leaves the
/// producer's idempotence state in doubt: librdkafka may have bumped its
/// epoch on its own (after a timeout) or raised a fatal error, and some
/// brokers (Tansu 0.6) crash on a bumped epoch they never handed out. So the
/// producer is then replaced by a new one (a new producer id, sequences from
/// zero); what the old one still held is purged and fails, and the outbox
/// sends it again. Duplicates that this may cause are the inbox's job.
pub struct KafkaPublisher {
    slot: Arc<ProducerSlot>,
}

struct ProducerSlot {
    config: ClientConfig,
    current: RwLock<Generation>,
}

/// The producer in use and how many were replaced before it.
#[derive(Clone)]
struct Generation {
    number: u64,
    producer: FutureProducer,
}

impl ProducerSlot {
    fn current(&self) -> Generation {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces generation `number` unless that happened already (every
    /// record it held fails at once, and only the first failure counts).
    fn replace(&self, number: u64, reason: &KafkaError) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.number != number {
            return;
        }
        let producer = match self.config.create::<FutureProducer>() {
            Ok(producer) => producer,
            Err(e) => {
                tracing::error!(error = %e, "could not create a Kafka producer to replace the failed one; keeping it");
                return;
            }
        };
        let retired = std::mem::replace(&mut *current, Generation { number: number + 1, producer });
        drop(current);
        metrics::counter!("kafka_producer_replacements_total").increment(1);
        tracing::warn!(error = %reason, generation = number + 1, "a Kafka delivery failed: producer replaced");
        // Purging and destroying a producer block (up to half a second).
        tokio::task::spawn_blocking(move || {
            retired.producer.purge(PurgeConfig::default().queue().inflight());
            drop(retired);
        });
    }
}

/// Holds one batch's records to one producer generation: the first pinned
/// send takes the producer in use, and every later one is enqueued on that
/// producer or not at all. One producer keeps the order of a partition, but
/// a replacement purges what the old one held: a record lost with it would
/// be overtaken by the next one, written by the new producer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProducerPin {
    generation: Option<u64>,
}

impl ProducerPin {
    /// Pins to `current` unless pinned already; refuses another generation.
    fn admit(&mut self, current: u64) -> Result<(), KafkaPublishError> {
        match *self.generation.get_or_insert(current) {
            pinned if pinned == current => Ok(()),
            pinned => Err(KafkaPublishError::ProducerChanged { pinned, current }),
        }
    }
}

/// What one enqueue attempt on the current producer came to.
enum Enqueued<'a, K: rdkafka::message::ToBytes + ?Sized> {
    Sent(PendingDelivery),
    /// The local queue is full: the record, to try again.
    QueueFull(FutureRecord<'a, K, [u8]>),
}

/// A record handed to the producer, not yet acknowledged by the brokers.
pub struct PendingDelivery {
    future: DeliveryFuture,
    generation: u64,
    slot: Arc<ProducerSlot>,
}

impl PendingDelivery {
    /// Waits until all in-sync replicas have the record: `(partition, offset)`.
    pub async fn delivered(self) -> Result<(i32, i64), KafkaPublishError> {
        match self.future.await {
            Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
            Ok(Err((e, _))) => {
                if !is_record_refused(&e) {
                    self.slot.replace(self.generation, &e);
                }
                Err(e.into())
            }
            Err(_) => Err(KafkaPublishError::Canceled),
        }
    }
}

/// Errors by which the brokers refuse the record itself (too large, no such
/// topic, not allowed): sending it again, by any producer, fails again.
pub fn is_record_refused(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
        )
    )
}

impl KafkaPublisher {
    pub fn new(brokers: &str, client_id: &str) -> Result<Self, KafkaPublishError> {
        Self::with_config(producer_config(brokers, client_id))
    }

    /// A publisher with settings of the caller's (tests shorten timeouts).
    pub fn with_config(config: ClientConfig) -> Result<Self, KafkaPublishError> {
        let producer = config.create()?;
        let current = RwLock::new(Generation { number: 0, producer });
        Ok(Self { slot: Arc::new(ProducerSlot { config, current }) })
    }

    /// How many times the producer was replaced after a failed delivery.
    pub fn replacements(&self) -> u64 {
        self.slot.current().number
    }

    /// Enqueues one record; records sent one after another to the same
    /// partition are written in that order.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        envelope: &Envelope,
        payload: &[u8],
        extra_headers: &[(&str, String)],
    ) -> Result<PendingDelivery, KafkaPublishError> {
        self.send_pinned(&mut ProducerPin::default(), topic, key, envelope, payload, extra_headers).await
    }

    /// [`Self::send`] on the producer of `pin` (see [`ProducerPin`]): if the
    /// producer was replaced since the pin was taken, nothing is enqueued
    /// and the error is [`KafkaPublishError::ProducerChanged`].
    pub async fn send_pinned(
        &self,
        pin: &mut ProducerPin,
        topic: &str,
        key: &str,
        envelope: &Envelope,
        payload: &[u8],
        extra_headers: &[(&str, String)],
    ) -> Result<PendingDelivery, KafkaPublishError> {
        let headers = wire::kafka_headers(envelope, extra_headers);
        self.enqueue_pinned(pin, FutureRecord::to(topic).key(key).payload(payload).headers(headers)).await
    }

    /// Sends a record with the given headers as they are (dead letters,
    /// replays), keeping their order.
    pub async fn send_raw(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: &[(String, String)],
        extra_headers: &[(&str, String)],
    ) -> Result<PendingDelivery, KafkaPublishError> {
        let owned = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra_headers.iter().map(|(k, v)| (*k, v.as_str())))
            .fold(rdkafka::message::OwnedHeaders::new(), |h, (key, value)| {
                h.insert(rdkafka::message::Header { key, value: Some(value) })
            });
        self.enqueue(FutureRecord::to(topic).key(key).payload(payload).headers(owned)).await
    }

    /// Sends a copy of a record: key (possibly none), payload and headers
    /// byte for byte (dead letters).
    pub async fn send_copy(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: rdkafka::message::OwnedHeaders,
    ) -> Result<PendingDelivery, KafkaPublishError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.enqueue(record).await
    }

    async fn enqueue<K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        record: FutureRecord<'_, K, [u8]>,
    ) -> Result<PendingDelivery, KafkaPublishError> {
        self.enqueue_pinned(&mut ProducerPin::default(), record).await
    }

    async fn enqueue_pinned<K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        pin: &mut ProducerPin,
        mut record: FutureRecord<'_, K, [u8]>,
    ) -> Result<PendingDelivery, KafkaPublishError> {
        loop {
            match self.enqueue_once(pin, record)? {
                Enqueued::Sent(pending) => return Ok(pending),
                Enqueued::QueueFull(returned) => {
                    // Local queue full: wait for deliveries to drain it.
                    record = returned;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// One attempt, under the slot's read lock: a replacement (which takes
    /// the write lock, then purges the old producer) cannot come between
    /// the pin's check and the enqueue, so nothing is enqueued on a producer
    /// after its purge, nor on a newer one than the pin's.
    fn enqueue_once<'a, K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        pin: &mut ProducerPin,
        record: FutureRecord<'a, K, [u8]>,
    ) -> Result<Enqueued<'a, K>, KafkaPublishError> {
        let current = self.slot.current.read().unwrap_or_else(PoisonError::into_inner);
        pin.admit(current.number)?;
        match current.producer.send_result(record) {
            Ok(future) => {
                Ok(Enqueued::Sent(PendingDelivery { future, generation: current.number, slot: self.slot.clone() }))
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                Ok(Enqueued::QueueFull(returned))
            }
            Err((e, _)) => {
                let number = current.number;
                drop(current);
                if is_fatal(&e) {
                    // A fatal producer refuses everything from now on.
                    self.slot.replace(number, &e);
                }
                Err(e.into())
            }
        }
    }

    /// Reports [`PRODUCER_COMPONENT`] readiness by asking the brokers for
    /// metadata every few seconds, until `shutdown`.
    pub fn spawn_readiness_probe(&self, readiness: Readiness, shutdown: CancellationToken) {
        readiness.register(PRODUCER_COMPONENT);
        let slot = self.slot.clone();
        tokio::spawn(async move {
            probe_loop(readiness, PRODUCER_COMPONENT, shutdown, move || {
                slot.current().producer.client().fetch_metadata(None, Duration::from_secs(2)).map(|_| ())
            })
            .await
        });
    }

    /// Waits for queued records to be delivered, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaPublishError> {
        Ok(self.slot.current().producer.flush(timeout)?)
    }
}

fn is_fatal(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageProduction(RDKafkaErrorCode::Fatal))
}

/// Runs `probe` (a blocking librdkafka call) every 2 s and reports readiness.
pub async fn probe_loop<F>(readiness: Readiness, component: &'static str, shutdown: CancellationToken, probe: F)
where
    F: Fn() -> Result<(), KafkaError> + Send + Sync + Clone + 'static,
{
    loop {
        let check = probe.clone();
        match tokio::task::spawn_blocking(check).await {
            Ok(Ok(())) => readiness.ready(component),
            Ok(Err(e)) => readiness.not_ready(component, format!("Kafka metadata: {e}")),
            Err(e) => readiness.not_ready(component, format!("Kafka probe panicked: {e}")),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// How dead-letter topics (`<topic>.<group>.dlq`) are created: their records
/// are kept until replayed or purged (the admin group's offsets say which),
/// not for the broker's default retention (7 days on Apache Kafka), so
/// triage may take as long as it takes.
pub const DEAD_LETTER_TOPIC_CONFIG: &[(&str, &str)] = &[("retention.ms", "-1")];

/// Whether `topic` is a dead-letter topic (see `contracts::Topology::dead_letter_topic`).
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic.ends_with(".dlq")
}

/// What CreateTopics is asked for `topic`: dead-letter topics with
/// [`DEAD_LETTER_TOPIC_CONFIG`] unless `plain`.
fn new_topic(topic: &str, partitions: i32, plain: bool) -> NewTopic<'_> {
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    if plain || !is_dead_letter_topic(topic) {
        return new;
    }
    DEAD_LETTER_TOPIC_CONFIG.iter().fold(new, |new, (key, value)| new.set(key, value))
}

/// Errors by which a broker refuses a topic's configuration rather than the topic.
fn refuses_config(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidConfig
            | ErrorCode::PolicyViolation
            | ErrorCode::InvalidRequest
            | ErrorCode::UnsupportedVersion
    )
}

/// Creates `topics` with `partitions` each; an existing topic is fine (and
/// left as it is). Dead-letter topics get [`DEAD_LETTER_TOPIC_CONFIG`]; a
/// broker that refuses it gets them with its defaults, and a warning.
pub async fn ensure_topics(brokers: &str, topics: &[String], partitions: i32) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let new_topics: Vec<NewTopic<'_>> = topics.iter().map(|t| new_topic(t, partitions, false)).collect();
    let mut refused = Vec::new();
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(_) | Err((_, ErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) if is_dead_letter_topic(&topic) && refuses_config(code) => refused.push((topic, code)),
            Err((topic, code)) => return Err(creation_failed(&topic, code)),
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        topics = ?refused,
        config = ?DEAD_LETTER_TOPIC_CONFIG,
        "the broker refused the dead-letter topic configuration: creating them with its default retention, \
         past which unhandled dead letters are deleted; set retention.ms=-1 on them by hand"
    );
    let plain: Vec<NewTopic<'_>> = refused.iter().map(|(t, _)| new_topic(t, partitions, true)).collect();
    for result in admin.create_topics(&plain, &options).await? {
        match result {
            Ok(_) | Err((_, ErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(creation_failed(&topic, code)),
        }
    }
    Ok(())
}

fn creation_failed(topic: &str, code: ErrorCode) -> KafkaError {
    tracing::error!(topic, ?code, "creating Kafka topic failed");
    KafkaError::AdminOp(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topics_are_kept_until_purged() {
        let dlq = new_topic("t1.orders.t1.shipping.dlq", 4, false);
        assert_eq!(dlq.config, [("retention.ms", "-1")]);
        assert!(new_topic("t1.orders.t1.shipping.dlq", 4, true).config.is_empty(), "the fallback");
        assert!(new_topic("t1.orders", 4, false).config.is_empty(), "event topics keep the broker's default");
        assert!(refuses_config(ErrorCode::InvalidConfig));
        assert!(!refuses_config(ErrorCode::RequestTimedOut), "a passing error is retried as a whole");
    }

    /// A publisher whose brokers never answer: records stay queued in the
    /// producer, where they can be counted.
    fn publisher_without_brokers() -> KafkaPublisher {
        let mut config = producer_config("127.0.0.1:1", "pin-test");
        config.set("message.timeout.ms", "60000");
        KafkaPublisher::with_config(config).unwrap()
    }

    /// What another lane's failed delivery does: the producer is replaced
    /// and the old one's records purged.
    fn replace_producer(publisher: &KafkaPublisher) {
        let failed = KafkaError::MessageProduction(RDKafkaErrorCode::RequestTimedOut);
        publisher.slot.replace(publisher.slot.current().number, &failed);
    }

    /// A batch of A1 and A2, sent pinned or with [`KafkaPublisher::send`],
    /// with the producer replaced between the two sends.
    async fn send_a1_replace_send_a2(
        publisher: &KafkaPublisher,
        pinned: bool,
    ) -> (PendingDelivery, Result<PendingDelivery, KafkaPublishError>) {
        let envelope = Envelope::new("Test", "agg", "test");
        let mut pin = ProducerPin::default();
        let a1 = publisher.send_pinned(&mut pin, "t", "agg", &envelope, b"A1", &[]).await.unwrap();
        replace_producer(publisher);
        let a2 = if pinned {
            publisher.send_pinned(&mut pin, "t", "agg", &envelope, b"A2", &[]).await
        } else {
            publisher.send("t", "agg", &envelope, b"A2", &[]).await
        };
        (a1, a2)
    }

    #[tokio::test]
    async fn a_pinned_batch_is_not_enqueued_on_a_replacing_producer() {
        let publisher = publisher_without_brokers();
        let (a1, a2) = send_a1_replace_send_a2(&publisher, true).await;
        assert!(matches!(a2, Err(KafkaPublishError::ProducerChanged { pinned: 0, current: 1 })), "{:?}", a2.err());
        // Refused before enqueueing (librdkafka's queue length is no
        // witness: it also counts its own requests and events).
        // A1 was purged with the old producer: A1 and A2 both go out on the
        // next pass, in order.
        let a1 = tokio::time::timeout(Duration::from_secs(10), a1.delivered()).await.unwrap();
        assert!(a1.is_err(), "{a1:?}");
    }

    /// The negative control: unpinned, A1 is purged with the old producer
    /// while A2 waits on the new one, to be written first.
    #[tokio::test]
    async fn an_unpinned_batch_is_enqueued_on_the_replacing_producer() {
        let publisher = publisher_without_brokers();
        let (a1, a2) = send_a1_replace_send_a2(&publisher, false).await;
        let a2 = a2.expect("unpinned, A2 is sent");
        assert_eq!((a1.generation, a2.generation), (0, 1), "A2 is on the new producer, A1 on the purged one");
        let a1 = tokio::time::timeout(Duration::from_secs(10), a1.delivered()).await.unwrap();
        assert!(a1.is_err(), "{a1:?}");
        publisher.slot.current().producer.purge(PurgeConfig::default().queue().inflight());
    }
}

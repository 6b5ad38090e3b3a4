//! Consumes Kafka topics through the [`MessageProcessor`], one record at a
//! time so each order's events are applied in order. Offsets are committed
//! manually, never auto-committed, and only for records whose handler
//! transaction has committed: together, at most every
//! [`OFFSET_COMMIT_INTERVAL`], and on shutdown; unchanged ones again every
//! [`OFFSET_REASSERT_INTERVAL`]. A crash therefore redelivers
//! up to that interval's records, which the inbox absorbs; a commit per
//! record would cost a broker round trip each and only narrow that window.
//! A record that can never be handled is copied to `<topic>.<group>.dlq`
//! (delivery confirmed) before its offset may be committed.
//!
//! `kafka_consumer_lag{topic,partition,group}`: records of each assigned
//! partition past the group's committed offset, from librdkafka's statistics
//! every [`STATISTICS_INTERVAL`] (read off the consumer's own polling, no
//! extra broker calls). A partition whose lag librdkafka does not know yet
//! (nothing committed) is not reported.

mod context;
mod liveness;
mod offsets;
mod statistics;

use crate::consumer::{Disposition, IncomingMessage, MessageHandler, MessageProcessor, MessageSource};
use crate::dead_letter;
use crate::kafka::{KafkaPublishError, KafkaPublisher, probe_loop};
use crate::retry::Backoff;
use crate::safety;
use crate::wire;
use context::LagContext;
use contracts::Topology;
use health::Readiness;
use liveness::ConsumerLiveness;
use offsets::{HandledOffsets, commit};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const CONSUMER_COMPONENT: &str = "kafka-consumer";

/// Longest a handled record's offset waits to be committed.
pub const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Default of [`KafkaConsumer::with_offset_reassertion`]: one small request
/// per consumer this often, far below the two minutes a test or an operator
/// waits for a group to catch up.
pub const OFFSET_REASSERT_INTERVAL: Duration = Duration::from_secs(10);

/// Default of [`KafkaConsumer::with_fetch_wait_max`]: librdkafka's own.
pub const DEFAULT_FETCH_WAIT_MAX: Duration = Duration::from_millis(500);

/// Group mode: how long the coordinator waits for a silent member. A
/// replacing consumer may wait that long for its predecessor's partitions.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How often librdkafka reports the statistics the lag gauge is set from.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// The consumer, with the context that turns its statistics into the lag gauge.
type LagConsumer = StreamConsumer<LagContext>;

/// How a consumer gets its partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Assignment {
    /// Kafka consumer groups: the brokers share partitions among the
    /// replicas of a service and rebalance when one comes or goes.
    #[default]
    Group,
    /// Every partition, taken directly (offsets still committed to the
    /// group): for a single replica on a broker whose group coordinator
    /// cannot be trusted to evict a killed member. Tansu 0.6 never evicts a
    /// SIGKILLed member, so its partitions are never reassigned.
    AllPartitions,
}

impl std::str::FromStr for Assignment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "group" => Ok(Self::Group),
            "all-partitions" => Ok(Self::AllPartitions),
            other => Err(format!("expected `group` or `all-partitions`, got `{other}`")),
        }
    }
}

pub struct KafkaConsumer<H> {
    brokers: String,
    group: String,
    topics: Vec<String>,
    processor: Arc<MessageProcessor<H>>,
    dead_letters: Arc<KafkaPublisher>,
    readiness: Readiness,
    group_instance_id: Option<String>,
    debug: Option<String>,
    assignment: Assignment,
    replace_after: Option<Duration>,
    offset_reassertion: Option<Duration>,
    fetch_wait_max: Duration,
    replacements: Replacements,
}

/// How many times a [`KafkaConsumer`] replaced its consumer, and why the
/// last time, readable while it runs (its metric is
/// `kafka_consumer_replacements_total`; readiness shows the reason only
/// until the new consumer's first probe).
#[derive(Clone, Debug, Default)]
pub struct Replacements(Arc<(AtomicU64, Mutex<Option<String>>)>);

impl Replacements {
    pub fn count(&self) -> u64 {
        self.0.0.load(Ordering::Relaxed)
    }

    pub fn last_reason(&self) -> Option<String> {
        self.0.1.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn record(&self, reason: &str) {
        *self.0.1.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        self.0.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Default of [`KafkaConsumer::with_replacement_after`]: far above a broker
/// restart (under a second for Tansu) and the metadata probe's 2 s timeout,
/// so only a consumer that has given up is replaced.
pub const DEFAULT_REPLACE_AFTER: Duration = Duration::from_secs(30);

/// How long a group member may take to settle in its group (joined, synced,
/// assigned) before it is replaced. A rebalance waits for every member: one
/// that went silent is evicted after [`SESSION_TIMEOUT`], then the others
/// join and sync (Tansu answers each after about 3 s, and its rebalance
/// after a replacement was seen to take 12 s); three session timeouts leave
/// room for that, and stay far below the minutes a wedged group never ends.
pub const GROUP_SETTLE_BOUND: Duration = Duration::from_secs(30);

/// How often the consumer loop asks whether its consumer is stuck.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How one consumer (one generation) ended.
enum GenerationEnd {
    Shutdown,
    /// Heard only errors for the bound: replace it.
    Stuck(String),
    /// Cannot be created or subscribed: a configuration error, for good.
    Failed,
}

impl<H: MessageHandler> KafkaConsumer<H> {
    pub fn new(
        brokers: &str,
        group: &str,
        topics: Vec<String>,
        processor: Arc<MessageProcessor<H>>,
        dead_letters: Arc<KafkaPublisher>,
        readiness: Readiness,
    ) -> Self {
        readiness.register(CONSUMER_COMPONENT);
        Self {
            brokers: brokers.to_owned(),
            group: group.to_owned(),
            topics,
            processor,
            dead_letters,
            readiness,
            group_instance_id: None,
            debug: None,
            assignment: Assignment::Group,
            replace_after: Some(DEFAULT_REPLACE_AFTER),
            offset_reassertion: Some(OFFSET_REASSERT_INTERVAL),
            fetch_wait_max: DEFAULT_FETCH_WAIT_MAX,
            replacements: Replacements::default(),
        }
    }

    /// A handle on how many times this consumer replaced itself.
    pub fn replacements(&self) -> Replacements {
        self.replacements.clone()
    }

    /// Static group membership: a restarted consumer with the same instance
    /// id takes its old place at once instead of waiting for the group to
    /// notice the dead member and rebalance. Must be unique per replica.
    pub fn with_group_instance_id(mut self, id: Option<String>) -> Self {
        self.group_instance_id = id.filter(|i| !i.is_empty());
        self
    }

    pub fn with_assignment(mut self, assignment: Assignment) -> Self {
        self.assignment = assignment;
        self
    }

    /// librdkafka debug contexts (e.g. `cgrp,topic`), for diagnosing group trouble.
    pub fn with_debug(mut self, contexts: Option<String>) -> Self {
        self.debug = contexts.filter(|d| !d.is_empty());
        self
    }

    /// Replaces the consumer by a new one once it has heard nothing but
    /// errors for `bound` (see the liveness module); `None` never does (the
    /// negative control of the test that shows why it must).
    pub fn with_replacement_after(mut self, bound: Option<Duration>) -> Self {
        self.replace_after = bound;
        self
    }

    /// Commits the offsets of handled records again every `interval` while
    /// nothing new is handled, whatever became of an earlier commit; `None`
    /// never does (the negative control of the test that shows why it must).
    pub fn with_offset_reassertion(mut self, interval: Option<Duration>) -> Self {
        self.offset_reassertion = interval;
        self
    }

    /// Longest a fetch waits at the broker for records. A broker that does
    /// not answer a waiting fetch when records arrive (Tansu 0.6, see
    /// docs/benchmarks.md) makes this the latency of every hop.
    pub fn with_fetch_wait_max(mut self, wait: Duration) -> Self {
        self.fetch_wait_max = wait;
        self
    }

    fn consumer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("client.id", format!("{}-consumer", self.group))
            // The offset moves only when we say so, after the commit.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string())
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", self.fetch_wait_max.as_millis().to_string())
            .set("reconnect.backoff.max.ms", "2000")
            .set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string());
        if let Some(id) = &self.group_instance_id {
            config.set("group.instance.id", id);
        }
        if let Some(contexts) = &self.debug {
            config.set("debug", contexts);
        }
        config
    }

    /// Consumes until `shutdown`; the record in progress is finished and its
    /// offset committed first. A consumer that is stuck is replaced by a new
    /// one, which starts from the committed offsets (the inbox absorbs what
    /// is read again).
    pub async fn run(self, shutdown: CancellationToken) {
        for generation in 0_u64.. {
            match self.run_generation(generation, &shutdown).await {
                GenerationEnd::Shutdown | GenerationEnd::Failed => return,
                GenerationEnd::Stuck(reason) => {
                    self.replacements.record(&reason);
                    metrics::counter!("kafka_consumer_replacements_total", "group" => self.group.clone()).increment(1);
                    tracing::warn!(group = %self.group, generation = generation + 1, %reason, "Kafka consumer stuck: replaced");
                    self.readiness.not_ready(CONSUMER_COMPONENT, format!("replacing a stuck Kafka consumer: {reason}"));
                }
            }
        }
    }

    /// One consumer, from creation until shutdown or until it is stuck.
    async fn run_generation(&self, generation: u64, shutdown: &CancellationToken) -> GenerationEnd {
        let created = Instant::now();
        let liveness = match self.assignment {
            Assignment::Group => ConsumerLiveness::new(created).in_group(created),
            Assignment::AllPartitions => ConsumerLiveness::new(created),
        };
        let context = LagContext::new(&self.group, liveness.clone());
        let consumer: LagConsumer = match self.consumer_config().create_with_context(context) {
            Ok(c) => c,
            Err(e) => {
                // Only a configuration error gets here; the process cannot work.
                self.readiness.not_ready(CONSUMER_COMPONENT, format!("creating Kafka consumer: {e}"));
                tracing::error!(error = %e, "cannot create Kafka consumer");
                return GenerationEnd::Failed;
            }
        };
        let consumer = Arc::new(consumer);
        // Ends this generation's probe with it.
        let generation_over = shutdown.child_token();
        let end = match self.assignment {
            Assignment::Group => {
                let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                match consumer.subscribe(&topics) {
                    Ok(()) => None,
                    Err(e) => {
                        self.readiness.not_ready(CONSUMER_COMPONENT, format!("subscribing: {e}"));
                        tracing::error!(error = %e, "cannot subscribe");
                        Some(GenerationEnd::Failed)
                    }
                }
            }
            Assignment::AllPartitions => self.assign_all_partitions(&consumer, &liveness, shutdown).await,
        };
        let end = match end {
            Some(end) => end,
            None => {
                self.spawn_probe(&consumer, &liveness, generation_over.clone());
                tracing::info!(group = %self.group, topics = ?self.topics, generation, "consuming");
                self.consume(&consumer, &liveness, shutdown).await
            }
        };
        generation_over.cancel();
        // A stuck consumer's close may never finish: the next one starts
        // at once. On shutdown it gets a moment to leave its group.
        let wait = if matches!(end, GenerationEnd::Shutdown) { CLOSE_WAIT_ON_SHUTDOWN } else { Duration::ZERO };
        close_off_runtime(consumer, wait).await;
        end
    }

    /// Reports readiness from a metadata request every few seconds; an
    /// answer is also a sign of life for the liveness check.
    fn spawn_probe(&self, consumer: &Arc<LagConsumer>, liveness: &ConsumerLiveness, stop: CancellationToken) {
        // Weak: the probe task must never hold the last reference, or the
        // consumer would be closed (and block) on a runtime thread.
        let (consumer, liveness) = (Arc::downgrade(consumer), liveness.clone());
        tokio::spawn(probe_loop(self.readiness.clone(), CONSUMER_COMPONENT, stop, move || {
            // Runs on a blocking thread: if this is the last reference, the close happens there.
            let Some(consumer) = consumer.upgrade() else { return Ok(()) };
            match consumer.client().fetch_metadata(None, Duration::from_secs(2)) {
                Ok(_) => {
                    liveness.alive(Instant::now());
                    Ok(())
                }
                // The consumer's requests queue behind its fetches: a busy,
                // slow broker (Tansu under load) can time the metadata out
                // while records keep arriving, which is being ready.
                Err(_) if liveness.record_within(RECORDS_COUNT_AS_READY, Instant::now()) => Ok(()),
                Err(e) => {
                    liveness.error(&e);
                    Err(e)
                }
            }
        }));
    }

    /// The consume loop of one generation.
    async fn consume(
        &self,
        consumer: &Arc<LagConsumer>,
        liveness: &ConsumerLiveness,
        shutdown: &CancellationToken,
    ) -> GenerationEnd {
        let backoff = Backoff::default();
        let mut failures = 0;
        let mut handled = HandledOffsets::new(self.offset_reassertion);
        let mut commit_tick = tokio::time::interval(OFFSET_COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness_tick = tokio::time::interval(LIVENESS_CHECK_INTERVAL);
        liveness_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            let record = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break GenerationEnd::Shutdown,
                _ = commit_tick.tick() => {
                    handled.commit(consumer);
                    continue;
                }
                _ = liveness_tick.tick() => {
                    match self.stuck(consumer, liveness) {
                        Some(reason) => break GenerationEnd::Stuck(reason),
                        None => continue,
                    }
                }
                // Cancel-safe: a record is taken off the queue only when recv returns it.
                r = consumer.recv() => r,
            };
            match record {
                Ok(record) => {
                    failures = 0;
                    liveness.record(Instant::now());
                    match self.handle(consumer, &record, shutdown).await {
                        Handled::Done => handled.record(&record),
                        // Its offset was committed before handling.
                        Handled::CommittedEarly => {}
                        Handled::Abandoned => break GenerationEnd::Shutdown,
                    }
                }
                Err(e) => {
                    failures += 1;
                    liveness.error(&e);
                    tracing::warn!(error = %e, "Kafka receive error");
                    // A broker down for good must not hold up shutdown by a backoff.
                    tokio::select! {
                        _ = shutdown.cancelled() => break GenerationEnd::Shutdown,
                        _ = tokio::time::sleep(backoff.delay(failures.min(6))) => {}
                    }
                }
            }
        };
        // Everything handled before the stop, and nothing abandoned (a
        // stuck consumer's commit most likely fails: redelivery, absorbed
        // by the inbox).
        handled.commit_and_wait(consumer).await;
        if matches!(end, GenerationEnd::Shutdown) {
            tracing::info!(group = %self.group, "Kafka consumer stopped");
        }
        end
    }

    /// Why the consumer should be replaced, if it should: it has heard only
    /// errors for the bound, or has not settled in its group for
    /// [`GROUP_SETTLE_BOUND`] (at least the bound), or librdkafka raised a
    /// fatal error.
    fn stuck(&self, consumer: &LagConsumer, liveness: &ConsumerLiveness) -> Option<String> {
        let bound = self.replace_after?;
        liveness.stuck(bound, bound.max(GROUP_SETTLE_BOUND), Instant::now()).or_else(|| fatal_error(consumer))
    }

    /// Takes every partition of the topics, starting at the group's committed
    /// offsets, retrying until the brokers answer. `None` once assigned.
    async fn assign_all_partitions(
        &self,
        consumer: &Arc<LagConsumer>,
        liveness: &ConsumerLiveness,
        shutdown: &CancellationToken,
    ) -> Option<GenerationEnd> {
        let mut failures = 0;
        loop {
            let (client, topics) = (consumer.clone(), self.topics.clone());
            let listed = tokio::task::spawn_blocking(move || {
                let mut partitions = TopicPartitionList::new();
                for topic in &topics {
                    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(5))?;
                    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
                        for p in t.partitions() {
                            partitions.add_partition_offset(topic, p.id(), Offset::Stored)?;
                        }
                    }
                }
                Ok::<_, rdkafka::error::KafkaError>(partitions)
            })
            .await;
            match listed {
                Ok(Ok(partitions)) if partitions.count() > 0 => {
                    liveness.alive(Instant::now());
                    match consumer.assign(&partitions) {
                        Ok(()) => return None,
                        Err(e) => tracing::warn!(error = %e, "assigning partitions failed"),
                    }
                }
                Ok(Ok(_)) => tracing::warn!(topics = ?self.topics, "no partitions yet"),
                Ok(Err(e)) => {
                    liveness.error(&e);
                    tracing::warn!(error = %e, "reading partitions failed");
                }
                Err(e) => tracing::warn!(error = %e, "partition lookup panicked"),
            }
            if let Some(reason) = self.stuck(consumer, liveness) {
                return Some(GenerationEnd::Stuck(reason));
            }
            failures += 1;
            tokio::select! {
                _ = shutdown.cancelled() => return Some(GenerationEnd::Shutdown),
                _ = tokio::time::sleep(Backoff::default().delay(failures.min(6))) => {}
            }
        }
    }

    async fn handle(
        &self,
        consumer: &LagConsumer,
        record: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> Handled {
        let unsafe_early_commit = safety::unsafe_modes().ack_before_commit;
        if unsafe_early_commit {
            commit(consumer, record);
        }
        let source = MessageSource::Topic {
            topic: record.topic().to_owned(),
            group: self.group.clone(),
            partition: record.partition(),
            offset: record.offset(),
        };
        let disposition = match wire::envelope_from_kafka(record.headers()) {
            Ok(envelope) => {
                let message =
                    IncomingMessage { envelope, payload: record.payload().unwrap_or_default().to_vec(), source };
                self.processor.process(&message, shutdown).await
            }
            Err(e) => Disposition::DeadLetter { reason: format!("malformed envelope: {e}"), attempts: 1 },
        };
        if unsafe_early_commit {
            return Handled::CommittedEarly;
        }
        match disposition {
            Disposition::Acknowledge => Handled::Done,
            Disposition::DeadLetter { reason, attempts } => {
                let mut failures = 0;
                // The offset must not move past a record that is not safely
                // in the dead-letter topic.
                while let Err(e) = self.dead_letter(record, &reason, attempts).await {
                    failures += 1;
                    tracing::error!(error = %e, "could not dead-letter; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Handled::Abandoned,
                        _ = tokio::time::sleep(Backoff::default().delay(failures.min(6))) => {}
                    }
                }
                Handled::Done
            }
            Disposition::Abandon => Handled::Abandoned,
        }
    }

    /// Copies the record, byte for byte (key, payload, headers) to the
    /// dead-letter topic, adding (replacing) only the dead-letter headers.
    async fn dead_letter(&self, record: &BorrowedMessage<'_>, reason: &str, attempts: u32) -> Result<(), String> {
        let topic = Topology::dead_letter_topic(record.topic(), &self.group);
        let mut headers = OwnedHeaders::new();
        if let Some(original) = record.headers() {
            for header in original.iter().filter(|h| !dead_letter::ALL.contains(&h.key)) {
                headers = headers.insert(Header { key: header.key, value: header.value });
            }
        }
        for (key, value) in dead_letter::headers(reason, attempts, record.topic(), self.processor.consumer()) {
            headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
        }
        let payload = record.payload().unwrap_or_default();
        match self.send_dead_letter(&topic, record.key(), payload, headers.clone()).await {
            Err(e) if e.is_record_refused() => {
                // Retrying the same copy would stall every partition of this
                // consumer for good: keep the headers, and where the
                // original still is, instead.
                let left_at = format!("{}:{} ({e})", record.partition(), record.offset());
                tracing::error!(error = %e, %topic, left_at, "dead-letter topic refused the copy; sending its headers only");
                let headers =
                    headers.insert(Header { key: dead_letter::PAYLOAD_LEFT_AT, value: Some(left_at.as_bytes()) });
                self.send_dead_letter(&topic, record.key(), &[], headers).await.map_err(|e| e.to_string())?;
            }
            result => result.map_err(|e| e.to_string())?,
        }
        metrics::counter!("dead_letters_total", "destination" => topic).increment(1);
        Ok(())
    }

    async fn send_dead_letter(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), KafkaPublishError> {
        self.dead_letters.send_copy(topic, key, payload, headers).await?.delivered().await.map(|_| ())
    }
}

/// librdkafka's fatal error, if it raised one (a static member fenced by
/// another with its `group.instance.id`): the client will never consume
/// again, though its metadata requests may still be answered.
fn fatal_error(consumer: &LagConsumer) -> Option<String> {
    consumer.client().fatal_error().map(|(code, reason)| format!("fatal error {code:?}: {reason}"))
}

/// How recent a received record must be to prove the broker serves this
/// consumer when a metadata request does not come back in time.
const RECORDS_COUNT_AS_READY: Duration = Duration::from_secs(10);

/// How long shutdown waits for a consumer's close (it leaves its group).
const CLOSE_WAIT_ON_SHUTDOWN: Duration = Duration::from_secs(5);

/// Closes `consumer` on a thread of its own, waiting at most `wait` for it.
/// librdkafka's close waits for the brokers, for good while they cannot be
/// reached; on a runtime thread it would block the tasks sharing it (seen:
/// a whole test runtime hung), and on tokio's blocking pool it would hold
/// up the process's exit, which waits for that pool.
async fn close_off_runtime(consumer: Arc<LagConsumer>, wait: Duration) {
    let (closed, done) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("kafka-consumer-close".into()).spawn(move || {
        // A probe or a final commit may still hold it for their own
        // (bounded) timeouts: the close must happen here, not there.
        while Arc::strong_count(&consumer) > 1 {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(consumer);
        let _ = closed.send(());
    });
    match spawned {
        Ok(_) if wait.is_zero() => {}
        Ok(_) => {
            if tokio::time::timeout(wait, done).await.is_err() {
                tracing::warn!(?wait, "the Kafka consumer did not close in time; left closing");
            }
        }
        // The consumer went down with the closure, on this thread.
        Err(e) => tracing::error!(error = %e, "no thread to close the Kafka consumer on; closed here"),
    }
}

/// What became of one record.
enum Handled {
    /// Its effect committed (or it is safely dead-lettered): its offset may be committed.
    Done,
    /// `UNSAFE_ACK_BEFORE_COMMIT`: its offset was committed before handling.
    CommittedEarly,
    /// Shutdown interrupted it: its offset must not be committed.
    Abandoned,
}

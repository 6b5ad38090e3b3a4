//! Consumes Kafka topics through the [`MessageProcessor`], one record at a
//! time so each order's events are applied in order. Offsets are committed
//! manually, never auto-committed, and only for records whose handler
//! transaction has committed: together, at most every
//! [`OFFSET_COMMIT_INTERVAL`], and on shutdown. A crash therefore redelivers
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

use crate::consumer::{Disposition, IncomingMessage, MessageHandler, MessageProcessor, MessageSource};
use crate::dead_letter;
use crate::kafka::{KafkaPublishError, KafkaPublisher, probe_loop};
use crate::retry::Backoff;
use crate::safety;
use crate::wire;
use contracts::Topology;
use health::Readiness;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const CONSUMER_COMPONENT: &str = "kafka-consumer";

/// Longest a handled record's offset waits to be committed.
pub const OFFSET_COMMIT_INTERVAL: Duration = Duration::from_secs(1);

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
        }
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
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
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
    /// offset committed first.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer: LagConsumer = match self.consumer_config().create_with_context(LagContext::new(&self.group)) {
            Ok(c) => c,
            Err(e) => {
                // Only a configuration error gets here; the process cannot work.
                self.readiness.not_ready(CONSUMER_COMPONENT, format!("creating Kafka consumer: {e}"));
                tracing::error!(error = %e, "cannot create Kafka consumer");
                return;
            }
        };
        let consumer = Arc::new(consumer);
        match self.assignment {
            Assignment::Group => {
                let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
                if let Err(e) = consumer.subscribe(&topics) {
                    self.readiness.not_ready(CONSUMER_COMPONENT, format!("subscribing: {e}"));
                    tracing::error!(error = %e, "cannot subscribe");
                    return;
                }
            }
            Assignment::AllPartitions => {
                if !self.assign_all_partitions(&consumer, &shutdown).await {
                    return;
                }
            }
        }
        let probe_consumer = consumer.clone();
        let last_record = LastRecord::default();
        let probe_last_record = last_record.clone();
        tokio::spawn(probe_loop(self.readiness.clone(), CONSUMER_COMPONENT, shutdown.clone(), move || {
            match probe_consumer.client().fetch_metadata(None, Duration::from_secs(2)) {
                Ok(_) => Ok(()),
                // The consumer's requests queue behind its fetches: a busy,
                // slow broker (Tansu under load) can time the metadata out
                // while records keep arriving, which is being ready.
                Err(_) if probe_last_record.within(RECORDS_COUNT_AS_READY) => Ok(()),
                Err(e) => Err(e),
            }
        }));
        tracing::info!(group = %self.group, topics = ?self.topics, "consuming");
        let backoff = Backoff::default();
        let mut failures = 0;
        let mut handled = HandledOffsets::default();
        let mut commit_tick = tokio::time::interval(OFFSET_COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let record = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = commit_tick.tick() => {
                    handled.commit(&consumer);
                    continue;
                }
                // Cancel-safe: a record is taken off the queue only when recv returns it.
                r = consumer.recv() => r,
            };
            match record {
                Ok(record) => {
                    failures = 0;
                    last_record.mark();
                    match self.handle(&consumer, &record, &shutdown).await {
                        Handled::Done => handled.record(&record),
                        // Its offset was committed before handling.
                        Handled::CommittedEarly => {}
                        Handled::Abandoned => break,
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "Kafka receive error");
                    // A broker down for good must not hold up shutdown by a backoff.
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.delay(failures.min(6))) => {}
                    }
                }
            }
        }
        // Everything handled before the stop, and nothing abandoned.
        handled.commit_and_wait(&consumer).await;
        tracing::info!(group = %self.group, "Kafka consumer stopped");
    }

    /// Takes every partition of the topics, starting at the group's committed
    /// offsets, retrying until the brokers answer. Returns false on shutdown.
    async fn assign_all_partitions(&self, consumer: &Arc<LagConsumer>, shutdown: &CancellationToken) -> bool {
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
                Ok(Ok(partitions)) if partitions.count() > 0 => match consumer.assign(&partitions) {
                    Ok(()) => return true,
                    Err(e) => tracing::warn!(error = %e, "assigning partitions failed"),
                },
                Ok(Ok(_)) => tracing::warn!(topics = ?self.topics, "no partitions yet"),
                Ok(Err(e)) => tracing::warn!(error = %e, "reading partitions failed"),
                Err(e) => tracing::warn!(error = %e, "partition lookup panicked"),
            }
            failures += 1;
            tokio::select! {
                _ = shutdown.cancelled() => return false,
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

/// How recent a received record must be to prove the broker serves this
/// consumer when a metadata request does not come back in time.
const RECORDS_COUNT_AS_READY: Duration = Duration::from_secs(10);

/// When this consumer last received a record.
#[derive(Clone, Default)]
struct LastRecord(Arc<Mutex<Option<std::time::Instant>>>);

impl LastRecord {
    fn mark(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(std::time::Instant::now());
    }

    fn within(&self, window: Duration) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).is_some_and(|at| at.elapsed() <= window)
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

/// The next offset to commit per partition, for records handled since the
/// last commit. Only ever offsets of handled records, so a commit never
/// skips one that was not; a lost or stale commit only means redelivery.
#[derive(Default)]
struct HandledOffsets {
    next: BTreeMap<(String, i32), i64>,
    /// The last offset a commit was asked for, per partition.
    requested: BTreeMap<(String, i32), i64>,
}

impl HandledOffsets {
    fn record(&mut self, record: &BorrowedMessage<'_>) {
        self.next.insert((record.topic().to_owned(), record.partition()), record.offset() + 1);
    }

    /// The offsets to commit, emptying the set; `None` if there are none.
    /// Offsets whose asynchronous commit the broker refused are committed
    /// again, unless a later one was asked for since (it covers them):
    /// otherwise a partition that went quiet would keep an old offset and
    /// redeliver, after a restart, records handled long ago.
    fn take(&mut self, consumer: &LagConsumer) -> Option<TopicPartitionList> {
        self.retry_refused(consumer.context().take_failed_commits());
        if self.next.is_empty() {
            return None;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in std::mem::take(&mut self.next) {
            if let Err(e) = offsets.add_partition_offset(&topic, partition, Offset::Offset(next)) {
                tracing::warn!(error = %e, %topic, partition, "cannot add offset to commit");
            }
            self.requested.insert((topic, partition), next);
        }
        Some(offsets)
    }

    fn retry_refused(&mut self, refused: Vec<((String, i32), i64)>) {
        for (partition, offset) in refused {
            if self.requested.get(&partition) == Some(&offset) {
                self.next.entry(partition).or_insert(offset);
            }
        }
    }

    fn commit(&mut self, consumer: &LagConsumer) {
        if let Some(offsets) = self.take(consumer)
            && let Err(e) = consumer.commit(&offsets, CommitMode::Async)
        {
            tracing::warn!(error = %e, "offset commit failed; the records may be redelivered");
        }
    }

    /// The last commit, waited for (bounded: the broker may be down, and
    /// shutdown has a deadline).
    async fn commit_and_wait(&mut self, consumer: &Arc<LagConsumer>) {
        let Some(offsets) = self.take(consumer) else { return };
        let consumer = consumer.clone();
        let commit = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync));
        match tokio::time::timeout(Duration::from_secs(3), commit).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "final offset commit failed; the records may be redelivered"),
            Ok(Err(e)) => tracing::warn!(error = %e, "final offset commit panicked"),
            Err(_) => tracing::warn!("final offset commit not confirmed in time; the records may be redelivered"),
        }
    }
}

/// The unsafe early commit of one record.
fn commit(consumer: &LagConsumer, record: &BorrowedMessage<'_>) {
    if let Err(e) = consumer.commit_message(record, CommitMode::Async) {
        tracing::warn!(error = %e, "offset commit failed; the record may be redelivered");
    }
}

/// Sets `kafka_consumer_lag` from librdkafka's statistics (see the module
/// docs); everything else as librdkafka's default context does.
struct LagContext {
    group: String,
    /// The partitions whose lag was set, to zero the gauge of one no longer assigned.
    reported: Mutex<BTreeSet<(String, i32)>>,
    /// Offsets of asynchronous commits the broker did not take.
    failed_commits: Mutex<Vec<((String, i32), i64)>>,
}

impl LagContext {
    fn new(group: &str) -> Self {
        Self { group: group.to_owned(), reported: Mutex::new(BTreeSet::new()), failed_commits: Mutex::new(Vec::new()) }
    }

    fn take_failed_commits(&self) -> Vec<((String, i32), i64)> {
        std::mem::take(&mut *self.failed_commits.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn report(&self, lags: Vec<PartitionLag>) {
        let mut reported = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let assigned: BTreeSet<(String, i32)> = lags.iter().map(|l| (l.topic.clone(), l.partition)).collect();
        // Another member reports it now: this one owes nothing there, and
        // sums over the group stay right.
        for (topic, partition) in reported.iter().filter(|key| !assigned.contains(*key)) {
            self.gauge(topic, *partition).set(0.0);
        }
        reported.retain(|key| assigned.contains(key));
        for lag in lags {
            if let Some(records) = lag.records {
                self.gauge(&lag.topic, lag.partition).set(records as f64);
                reported.insert((lag.topic, lag.partition));
            }
        }
    }

    fn gauge(&self, topic: &str, partition: i32) -> metrics::Gauge {
        metrics::gauge!(
            "kafka_consumer_lag",
            "topic" => topic.to_owned(),
            "partition" => partition.to_string(),
            "group" => self.group.clone(),
        )
    }
}

impl ClientContext for LagContext {
    fn stats_raw(&self, statistics: &[u8]) {
        match partition_lags(statistics) {
            Ok(lags) => self.report(lags),
            Err(e) => tracing::debug!(error = %e, "unreadable librdkafka statistics"),
        }
    }
}

impl ConsumerContext for LagContext {
    /// Group mode only: what the group coordinator gave or took (one line
    /// per rebalance, so an operator sees a replica take its share).
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let described = |partitions: &TopicPartitionList| {
            partitions.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect::<Vec<_>>()
        };
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(group = %self.group, partitions = ?described(partitions), "group assigned partitions")
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(group = %self.group, partitions = ?described(partitions), "group revoked partitions")
            }
            Rebalance::Error(error) => tracing::warn!(group = %self.group, %error, "group rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let failed: Vec<((String, i32), i64)> = offsets
            .elements()
            .iter()
            .filter(|element| result.is_err() || element.error().is_err())
            .filter_map(|element| match element.offset() {
                Offset::Offset(offset) => Some(((element.topic().to_owned(), element.partition()), offset)),
                _ => None,
            })
            .collect();
        if !failed.is_empty() {
            tracing::warn!(?result, partitions = failed.len(), "offset commit refused; it will be committed again");
            self.failed_commits.lock().unwrap_or_else(PoisonError::into_inner).extend(failed);
        }
    }
}

/// The lag of one partition this consumer is assigned.
#[derive(Debug, PartialEq, Eq)]
struct PartitionLag {
    topic: String,
    partition: i32,
    /// `None` while librdkafka does not know it (it says -1).
    records: Option<u64>,
}

/// The parts of librdkafka's statistics JSON read here; the rest is skipped
/// (parsing it all into `rdkafka::Statistics` would break on any field a
/// librdkafka version adds or drops).
#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
}

#[derive(Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Deserialize)]
struct PartitionStatistics {
    partition: i32,
    /// Assigned to this consumer (the others are only known from metadata).
    #[serde(default)]
    desired: bool,
    #[serde(default = "unknown_lag")]
    consumer_lag: i64,
}

fn unknown_lag() -> i64 {
    -1
}

/// The assigned partitions of `statistics`, with their lag where known. The
/// internal partition -1 (messages not yet given a partition) is left out.
fn partition_lags(statistics: &[u8]) -> Result<Vec<PartitionLag>, serde_json::Error> {
    let statistics: Statistics = serde_json::from_slice(statistics)?;
    let mut lags: Vec<PartitionLag> = statistics
        .topics
        .into_iter()
        .flat_map(|(topic, t)| {
            t.partitions.into_values().filter(|p| p.desired && p.partition >= 0).map(move |p| PartitionLag {
                topic: topic.clone(),
                partition: p.partition,
                records: u64::try_from(p.consumer_lag).ok(),
            })
        })
        .collect();
    lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(lags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_commit_is_retried_unless_a_later_one_was_asked_for() {
        let p0 = ("orders".to_owned(), 0);
        let p1 = ("orders".to_owned(), 1);
        let mut handled = HandledOffsets::default();
        handled.requested.insert(p0.clone(), 10);
        handled.requested.insert(p1.clone(), 25);
        // p0's commit of 10 was refused and nothing newer asked for: again.
        // p1's refused 20 is covered by the 25 asked for since.
        handled.retry_refused(vec![(p0.clone(), 10), (p1.clone(), 20)]);
        assert_eq!(handled.next, BTreeMap::from([(p0.clone(), 10)]));
        // A record handled meanwhile wins over the refused offset.
        handled.next.insert(p0.clone(), 12);
        handled.retry_refused(vec![(p0.clone(), 10)]);
        assert_eq!(handled.next, BTreeMap::from([(p0, 12)]));
    }

    #[test]
    fn lag_is_read_for_assigned_partitions_and_unknown_when_librdkafka_says_minus_one() {
        let statistics = br#"{
            "name": "g-consumer#consumer-1", "type": "consumer", "ts": 1,
            "brokers": {},
            "topics": {
                "orders": {
                    "topic": "orders", "age": 1, "metadata_age": 1,
                    "partitions": {
                        "0": {"partition": 0, "desired": true, "committed_offset": 40, "hi_offset": 42, "consumer_lag": 2},
                        "1": {"partition": 1, "desired": true, "committed_offset": -1001, "consumer_lag": -1},
                        "2": {"partition": 2, "desired": false, "consumer_lag": 7},
                        "-1": {"partition": -1, "desired": false, "consumer_lag": -1}
                    }
                }
            }
        }"#;
        let lags = partition_lags(statistics).unwrap();
        assert_eq!(
            lags,
            [
                PartitionLag { topic: "orders".into(), partition: 0, records: Some(2) },
                PartitionLag { topic: "orders".into(), partition: 1, records: None },
            ]
        );
        assert!(partition_lags(br#"{"name": "producer", "type": "producer"}"#).unwrap().is_empty());
        assert!(partition_lags(b"not json").is_err());
    }
}

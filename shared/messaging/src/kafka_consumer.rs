//! Consumes Kafka topics through the [`MessageProcessor`], one record at a
//! time so each order's events are applied in order. Offsets are committed
//! manually, after the handler's transaction commits; never auto-committed.
//! A record that can never be handled is copied to `<topic>.<group>.dlq`
//! (delivery confirmed) before its offset is committed.

use crate::consumer::{Disposition, IncomingMessage, MessageHandler, MessageProcessor, MessageSource};
use crate::dead_letter;
use crate::kafka::{KafkaPublisher, probe_loop};
use crate::retry::Backoff;
use crate::safety;
use crate::wire;
use contracts::Topology;
use health::Readiness;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const CONSUMER_COMPONENT: &str = "kafka-consumer";

pub struct KafkaConsumer<H> {
    brokers: String,
    group: String,
    topics: Vec<String>,
    processor: Arc<MessageProcessor<H>>,
    dead_letters: Arc<KafkaPublisher>,
    readiness: Readiness,
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
        Self { brokers: brokers.to_owned(), group: group.to_owned(), topics, processor, dead_letters, readiness }
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
            .set("reconnect.backoff.max.ms", "2000");
        config
    }

    /// Consumes until `shutdown`; the record in progress is finished and its
    /// offset committed first.
    pub async fn run(self, shutdown: CancellationToken) {
        let consumer: StreamConsumer = match self.consumer_config().create() {
            Ok(c) => c,
            Err(e) => {
                // Only a configuration error gets here; the process cannot work.
                self.readiness.not_ready(CONSUMER_COMPONENT, format!("creating Kafka consumer: {e}"));
                tracing::error!(error = %e, "cannot create Kafka consumer");
                return;
            }
        };
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            self.readiness.not_ready(CONSUMER_COMPONENT, format!("subscribing: {e}"));
            tracing::error!(error = %e, "cannot subscribe");
            return;
        }
        let consumer = Arc::new(consumer);
        let probe_consumer = consumer.clone();
        tokio::spawn(probe_loop(self.readiness.clone(), CONSUMER_COMPONENT, shutdown.clone(), move || {
            probe_consumer.client().fetch_metadata(None, Duration::from_secs(2)).map(|_| ())
        }));
        tracing::info!(group = %self.group, topics = ?self.topics, "consuming");
        let backoff = Backoff::default();
        let mut failures = 0;
        loop {
            let record = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = consumer.recv() => r,
            };
            match record {
                Ok(record) => {
                    failures = 0;
                    if !self.handle(&consumer, &record, &shutdown).await {
                        break;
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "Kafka receive error");
                    tokio::time::sleep(backoff.delay(failures.min(6))).await;
                }
            }
        }
        tracing::info!(group = %self.group, "Kafka consumer stopped");
    }

    /// Returns false when the record was abandoned because of shutdown.
    async fn handle(
        &self,
        consumer: &StreamConsumer,
        record: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> bool {
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
            return true;
        }
        match disposition {
            Disposition::Acknowledge => commit(consumer, record),
            Disposition::DeadLetter { reason, attempts } => {
                let mut failures = 0;
                // The offset must not move past a record that is not safely
                // in the dead-letter topic.
                while let Err(e) = self.dead_letter(record, &reason, attempts).await {
                    failures += 1;
                    tracing::error!(error = %e, "could not dead-letter; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(Backoff::default().delay(failures.min(6))) => {}
                    }
                }
                commit(consumer, record);
            }
            Disposition::Abandon => return false,
        }
        true
    }

    async fn dead_letter(&self, record: &BorrowedMessage<'_>, reason: &str, attempts: u32) -> Result<(), String> {
        let topic = Topology::dead_letter_topic(record.topic(), &self.group);
        let mut headers = wire::kafka_headers_text(record.headers());
        headers.retain(|(k, _)| !k.starts_with("x-"));
        let extra = dead_letter::headers(reason, attempts, record.topic(), self.processor.consumer());
        let key = record.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
        self.dead_letters
            .send_raw(&topic, &key, record.payload().unwrap_or_default(), &headers, &extra)
            .await
            .map_err(|e| e.to_string())?
            .delivered()
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!("dead_letters_total", "destination" => topic).increment(1);
        Ok(())
    }
}

fn commit(consumer: &StreamConsumer, record: &BorrowedMessage<'_>) {
    // Async: a commit lost in a crash only means a redelivery, which the
    // inbox absorbs; the next commit covers it otherwise.
    if let Err(e) = consumer.commit_message(record, CommitMode::Async) {
        tracing::warn!(error = %e, "offset commit failed; the record may be redelivered");
    }
}

//! Transactional outbox: a message is a row written in the caller's open
//! transaction, so the business change and the messages it causes commit or
//! roll back together. The [`crate::relay`] publishes committed rows later.

use crate::safety;
use contracts::{Envelope, MessageContract};
use sqlx::PgConnection;
use sqlx::types::Json;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Relay lanes: each lane is published by at most one relay at a time, in id
/// order, and all messages of one aggregate fall in the same lane.
pub const LANES: i16 = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A RabbitMQ queue, reached through the default exchange.
    Queue(String),
    /// A Kafka topic; the record key is the message's partition key.
    Topic(String),
}

impl Destination {
    pub fn transport(&self) -> &'static str {
        match self {
            Destination::Queue(_) => "amqp",
            Destination::Topic(_) => "kafka",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Destination::Queue(n) | Destination::Topic(n) => n,
        }
    }
}

/// A message ready to be written to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxMessage {
    pub envelope: Envelope,
    pub destination: Destination,
    /// The aggregate the message belongs to: ordering scope and Kafka key.
    pub partition_key: String,
    pub payload: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("serializing {message_type}: {source}")]
    Serialize { message_type: &'static str, source: serde_json::Error },
    #[error("a reply to {0} is impossible: the request has no reply_to address")]
    NoReturnAddress(String),
    #[error("writing the outbox row: {0}")]
    Database(#[from] sqlx::Error),
}

/// Builds envelopes for one producing service: fresh UUIDv7 ids, causation
/// and correlation from the message being handled, trace context of the
/// current span.
#[derive(Debug, Clone)]
pub struct MessageFactory {
    producer: String,
}

impl MessageFactory {
    pub fn new(producer: impl Into<String>) -> Self {
        Self { producer: producer.into() }
    }

    pub fn producer(&self) -> &str {
        &self.producer
    }

    fn envelope<M: MessageContract>(&self, correlation_id: &str, cause: Option<&Envelope>) -> Envelope {
        let mut envelope = Envelope::new(M::MESSAGE_TYPE, correlation_id, self.producer.clone());
        envelope.schema_version = M::SCHEMA_VERSION;
        envelope.causation_id = cause.map(|c| c.message_id);
        let trace = telemetry::current_trace_headers();
        envelope.traceparent = trace.traceparent;
        envelope.tracestate = trace.tracestate;
        envelope
    }

    fn payload<M: MessageContract>(payload: &M) -> Result<serde_json::Value, OutboxError> {
        serde_json::to_value(payload).map_err(|source| OutboxError::Serialize { message_type: M::MESSAGE_TYPE, source })
    }

    /// A command to `queue` about order `correlation_id`, answered on `reply_to`.
    pub fn command<M: MessageContract>(
        &self,
        queue: &str,
        correlation_id: &str,
        reply_to: &str,
        cause: Option<&Envelope>,
        payload: &M,
    ) -> Result<OutboxMessage, OutboxError> {
        let mut envelope = self.envelope::<M>(correlation_id, cause);
        envelope.reply_to = Some(reply_to.to_owned());
        Ok(OutboxMessage {
            envelope,
            destination: Destination::Queue(queue.to_owned()),
            partition_key: correlation_id.to_owned(),
            payload: Self::payload(payload)?,
        })
    }

    /// The reply to `request`, sent to its return address with its correlation id.
    pub fn reply<M: MessageContract>(&self, request: &Envelope, payload: &M) -> Result<OutboxMessage, OutboxError> {
        let reply_to =
            request.reply_to.clone().ok_or_else(|| OutboxError::NoReturnAddress(request.message_type.clone()))?;
        let envelope = self.envelope::<M>(&request.correlation_id, Some(request));
        Ok(OutboxMessage {
            envelope,
            destination: Destination::Queue(reply_to),
            partition_key: request.correlation_id.clone(),
            payload: Self::payload(payload)?,
        })
    }

    /// An event of aggregate `aggregate_id` (its `sequence`-th), on `topic`.
    pub fn event<M: MessageContract>(
        &self,
        topic: &str,
        aggregate_id: &str,
        sequence: i64,
        cause: Option<&Envelope>,
        payload: &M,
    ) -> Result<OutboxMessage, OutboxError> {
        let mut envelope = self.envelope::<M>(aggregate_id, cause);
        envelope.aggregate_id = Some(aggregate_id.to_owned());
        envelope.sequence = Some(sequence);
        Ok(OutboxMessage {
            envelope,
            destination: Destination::Topic(topic.to_owned()),
            partition_key: aggregate_id.to_owned(),
            payload: Self::payload(payload)?,
        })
    }
}

/// Stable lane of a partition key (FNV-1a), the same in every process.
pub fn lane_of(partition_key: &str) -> i16 {
    let hash =
        partition_key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    i16::try_from(hash % LANES.unsigned_abs() as u64).unwrap_or(0)
}

pub struct Outbox;

impl Outbox {
    /// Writes `message` in the caller's transaction. Nothing is published
    /// until that transaction commits and the relay picks the row up.
    pub async fn add(conn: &mut PgConnection, message: &OutboxMessage) -> Result<(), OutboxError> {
        if safety::unsafe_modes().publish_without_outbox {
            direct_publish_queue().send(message.clone());
            return Ok(());
        }
        sqlx::query!(
            "INSERT INTO outbox (message_id, message_type, transport, destination, partition_key, lane, envelope, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            message.envelope.message_id,
            message.envelope.message_type,
            message.destination.transport(),
            message.destination.name(),
            message.partition_key,
            lane_of(&message.partition_key),
            // The envelope is written from its struct, as serde shapes it.
            Json(&message.envelope) as _,
            message.payload,
        )
        .execute(conn)
        .await?;
        metrics::counter!("outbox_messages_written_total", "message_type" => message.envelope.message_type.clone())
            .increment(1);
        Ok(())
    }

    pub async fn add_all(conn: &mut PgConnection, messages: &[OutboxMessage]) -> Result<(), OutboxError> {
        for message in messages {
            Self::add(&mut *conn, message).await?;
        }
        Ok(())
    }
}

/// What waits in one outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxBacklog {
    /// Unsent rows the relay is working on.
    pub pending: i64,
    pub oldest_pending_age_seconds: f64,
    /// Unsent rows the relay gave up on (see the relay's parking).
    pub parked: i64,
}

impl OutboxBacklog {
    pub async fn read(pool: &sqlx::PgPool) -> Result<Self, sqlx::Error> {
        let backlog = sqlx::query!(
            r#"SELECT count(*) FILTER (WHERE parked_at IS NULL) AS "pending!",
                      EXTRACT(EPOCH FROM (clock_timestamp() - min(created_at) FILTER (WHERE parked_at IS NULL)))::float8
                          AS oldest_pending_age_seconds,
                      count(*) FILTER (WHERE parked_at IS NOT NULL) AS "parked!"
               FROM outbox WHERE sent_at IS NULL"#,
        )
        .fetch_one(pool)
        .await?;
        Ok(Self {
            pending: backlog.pending,
            oldest_pending_age_seconds: backlog.oldest_pending_age_seconds.unwrap_or(0.0),
            parked: backlog.parked,
        })
    }
}

/// The outbox backlog, sampled in its own task (a relay pass can take long
/// while a broker is down, which is exactly when the figures matter): it
/// sets the `/metrics` gauges and lets `POST /orders` shed load without a
/// query of its own.
#[derive(Debug, Clone, Default)]
pub struct OutboxBacklogMonitor {
    pending: Arc<AtomicI64>,
}

impl OutboxBacklogMonitor {
    /// Unsent, unparked rows at the last sample.
    pub fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Samples every `interval` until `shutdown`.
    pub async fn run(self, pool: sqlx::PgPool, interval: Duration, shutdown: CancellationToken) {
        loop {
            if let Ok(backlog) =
                crate::deadline::within(crate::deadline::QUERY_TIMEOUT, OutboxBacklog::read(&pool)).await
            {
                self.pending.store(backlog.pending, Ordering::Relaxed);
                metrics::gauge!("outbox_pending_messages").set(backlog.pending as f64);
                metrics::gauge!("outbox_oldest_pending_age_seconds").set(backlog.oldest_pending_age_seconds);
                metrics::gauge!("outbox_parked_messages").set(backlog.parked as f64);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// The in-memory hand-off of the UNSAFE publish-without-outbox mode: what a
/// service without an outbox does, publishing from memory whatever happens
/// to its transaction. The relay drains it.
pub struct DirectPublishQueue {
    sender: mpsc::UnboundedSender<OutboxMessage>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<OutboxMessage>>>,
}

impl DirectPublishQueue {
    fn send(&self, message: OutboxMessage) {
        // The receiver lives as long as the relay; a send after it is gone
        // loses the message, which is exactly this unsafe mode's flaw.
        let _ = self.sender.send(message);
    }

    /// Taken once, by the relay.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<OutboxMessage>> {
        self.receiver.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

pub fn direct_publish_queue() -> &'static DirectPublishQueue {
    static QUEUE: OnceLock<DirectPublishQueue> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (sender, receiver) = mpsc::unbounded_channel();
        DirectPublishQueue { sender, receiver: std::sync::Mutex::new(Some(receiver)) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::catalogue::{ReserveStock, StockReserved};
    use uuid::Uuid;

    #[test]
    fn lanes_are_stable_and_in_range() {
        let key = "0190b2a4-0000-7000-8000-000000000001";
        assert_eq!(lane_of(key), lane_of(key));
        for i in 0..1000 {
            let lane = lane_of(&format!("order-{i}"));
            assert!((0..LANES).contains(&lane));
        }
    }

    #[test]
    fn a_reply_goes_to_the_return_address_with_the_request_as_cause() {
        let factory = MessageFactory::new("order");
        let order_id = Uuid::now_v7();
        let cmd = factory
            .command(
                "stock.commands",
                &order_id.to_string(),
                "order.replies",
                None,
                &ReserveStock { order_id, lines: vec![] },
            )
            .unwrap();
        assert_eq!(cmd.envelope.reply_to.as_deref(), Some("order.replies"));
        let stock = MessageFactory::new("stock");
        let reply = stock.reply(&cmd.envelope, &StockReserved { order_id, lines: vec![], total_cents: 0 }).unwrap();
        assert_eq!(reply.destination, Destination::Queue("order.replies".into()));
        assert_eq!(reply.envelope.causation_id, Some(cmd.envelope.message_id));
        assert_eq!(reply.envelope.correlation_id, order_id.to_string());
        assert_eq!(reply.envelope.producer, "stock");
        assert!(stock.reply(&reply.envelope, &StockReserved { order_id, lines: vec![], total_cents: 0 }).is_err());
    }
}

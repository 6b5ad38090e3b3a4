//! The receive pipeline shared by both brokers: one database transaction per
//! message holding the inbox row, the handler's effect and any outbox rows it
//! writes; retries with backoff; dead-lettering of what can never succeed.
//!
//! The broker loops ([`crate::amqp_consumer`], [`crate::kafka_consumer`])
//! acknowledge only after [`MessageProcessor::process`] returns, i.e. after
//! the commit.

use crate::crash;
use crate::db_errors::is_transient_db_error;
use crate::inbox::{Inbox, InboxOutcome};
use crate::outbox::OutboxError;
use crate::retry::Backoff;
use contracts::{Envelope, MessageContract};
use futures::FutureExt;
use sqlx::{PgConnection, PgPool};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Where a message came from, for spans, logs and dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSource {
    Queue { queue: String, redelivered: bool },
    Topic { topic: String, group: String, partition: i32, offset: i64 },
}

impl MessageSource {
    pub fn destination(&self) -> &str {
        match self {
            MessageSource::Queue { queue, .. } => queue,
            MessageSource::Topic { topic, .. } => topic,
        }
    }

    fn system(&self) -> &'static str {
        match self {
            MessageSource::Queue { .. } => "rabbitmq",
            MessageSource::Topic { .. } => "kafka",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IncomingMessage {
    pub envelope: Envelope,
    /// The JSON body, undecoded: a handler decodes the type it expects.
    pub payload: Vec<u8>,
    pub source: MessageSource,
}

impl IncomingMessage {
    /// Decodes the payload as `M`, refusing a newer schema than this build knows.
    pub fn decode<M: MessageContract>(&self) -> Result<M, HandlerError> {
        if self.envelope.schema_version > M::SCHEMA_VERSION {
            return Err(HandlerError::Poison(format!(
                "{} schema version {} is newer than the supported {}",
                M::MESSAGE_TYPE,
                self.envelope.schema_version,
                M::SCHEMA_VERSION
            )));
        }
        serde_json::from_slice(&self.payload)
            .map_err(|e| HandlerError::Poison(format!("malformed {} payload: {e}", M::MESSAGE_TYPE)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message can never be handled (malformed, unsupported schema):
    /// dead-letter it at once.
    #[error("{0}")]
    Poison(String),
    /// Handling failed; retried up to the attempt limit, then dead-lettered.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

impl HandlerError {
    /// Infrastructure trouble that will pass (database unreachable, pool
    /// exhausted, serialization conflict): retried without limit, never
    /// dead-lettered, because the message itself is fine.
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Database(e) | HandlerError::Outbox(OutboxError::Database(e)) => is_transient_db_error(e),
            _ => false,
        }
    }
}

/// A service's reaction to the messages of one channel.
pub trait MessageHandler: Send + Sync + 'static {
    /// Message types this handler applies. Other catalogue types arriving on
    /// the same channel are acknowledged and ignored; types outside the
    /// catalogue are dead-lettered.
    fn message_types(&self) -> &'static [&'static str];

    /// Applies `message` in `conn`, an open transaction that already holds
    /// the inbox row; write outbox rows through the same connection.
    fn handle(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// What the broker loop must do with the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Handled, or a duplicate, stale or ignored message: acknowledge.
    Acknowledge,
    /// Can never succeed: move to the dead-letter destination, then acknowledge.
    DeadLetter { reason: String, attempts: u32 },
    /// Shutting down mid-retry: leave it unacknowledged for redelivery.
    Abandon,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts for a failing handler before its message is dead-lettered.
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// Backoff while the database is unreachable (no attempt limit).
    pub transient_backoff: Backoff,
    /// Bound on one attempt (its whole transaction). A connection the
    /// network black-holed answers nothing and reports no error: without a
    /// bound the attempt, and the delivery slot or partition behind it,
    /// would wait forever. Past it the attempt is dropped (rolled back, or
    /// committed unbeknown: the retry then meets the inbox) and retried as
    /// a transient failure.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
            transient_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            attempt_timeout: Duration::from_secs(15),
        }
    }
}

pub struct MessageProcessor<H> {
    pool: PgPool,
    inbox: Inbox,
    handler: H,
    policy: RetryPolicy,
}

enum Outcome {
    Applied,
    Duplicate,
    Stale,
}

impl<H: MessageHandler> MessageProcessor<H> {
    /// `consumer` names this endpoint in the inbox (e.g. `email`).
    pub fn new(pool: PgPool, consumer: &str, handler: H, policy: RetryPolicy) -> Arc<Self> {
        Arc::new(Self { pool, inbox: Inbox::new(consumer), handler, policy })
    }

    pub fn consumer(&self) -> &str {
        self.inbox.consumer()
    }

    /// Handles one message, retrying as the policy says, and tells the broker
    /// loop what to do with the delivery. Runs inside a consumer span that
    /// continues the producer's trace.
    pub async fn process(&self, message: &IncomingMessage, shutdown: &CancellationToken) -> Disposition {
        let span = consumer_span(self.consumer(), message);
        // A panicking handler is a bug, but must not strand the delivery
        // (its prefetch slot, or the partition behind it): its transaction
        // rolled back while unwinding, so dead-letter it like any message
        // that cannot be handled.
        let processed =
            AssertUnwindSafe(self.process_in_span(message, shutdown).instrument(span.clone())).catch_unwind().await;
        let disposition = processed.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let labels = self.labels(&message.envelope.message_type);
            span.in_scope(|| self.dead_letter(&labels, format!("handler panicked: {what}"), 1))
        });
        if matches!(disposition, Disposition::DeadLetter { .. }) {
            span.record("otel.status_code", "ERROR");
        }
        disposition
    }

    async fn process_in_span(&self, message: &IncomingMessage, shutdown: &CancellationToken) -> Disposition {
        let message_type = message.envelope.message_type.clone();
        let labels = self.labels(&message_type);
        if !self.handler.message_types().contains(&message_type.as_str()) {
            if contracts::catalogue::ALL_MESSAGE_TYPES.contains(&message_type.as_str()) {
                metrics::counter!("messages_consumed_total", &with_outcome(&labels, "ignored")).increment(1);
                return Disposition::Acknowledge;
            }
            return self.dead_letter(&labels, format!("unknown message type `{message_type}`"), 1);
        }
        let mut attempt: u32 = 0;
        let mut transient_failures: u32 = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = crate::deadline::within(self.policy.attempt_timeout, self.apply_once(message)).await;
            metrics::histogram!("message_handler_seconds", &labels).record(started.elapsed().as_secs_f64());
            let error = match result {
                Ok(outcome) => {
                    let outcome = match outcome {
                        Outcome::Applied => "applied",
                        Outcome::Duplicate => {
                            tracing::info!("duplicate message: already handled, no effect");
                            metrics::counter!("inbox_duplicates_total", "consumer" => self.consumer().to_owned())
                                .increment(1);
                            "duplicate"
                        }
                        Outcome::Stale => "stale",
                    };
                    metrics::counter!("messages_consumed_total", &with_outcome(&labels, outcome)).increment(1);
                    return Disposition::Acknowledge;
                }
                Err(error) => error,
            };
            metrics::counter!("message_handler_failures_total", &labels).increment(1);
            let delay = if error.is_transient() {
                // The message is fine; the infrastructure is not. Do not
                // count this against the message.
                attempt -= 1;
                transient_failures += 1;
                tracing::warn!(error = %error, transient_failures, "transient failure, retrying");
                self.policy.transient_backoff.delay(transient_failures)
            } else if matches!(error, HandlerError::Poison(_)) || attempt >= self.policy.max_attempts {
                return self.dead_letter(&labels, error.to_string(), attempt);
            } else {
                tracing::warn!(error = %error, attempt, "handler failed, retrying");
                self.policy.backoff.delay(attempt)
            };
            metrics::counter!("message_retries_total", &labels).increment(1);
            tokio::select! {
                _ = shutdown.cancelled() => return Disposition::Abandon,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Metric labels of a message: a type outside the catalogue counts as
    /// `unknown`, so poison messages cannot grow the series without bound
    /// (the real type is in the log and the dead letter).
    fn labels(&self, message_type: &str) -> [(&'static str, String); 2] {
        let known = contracts::catalogue::ALL_MESSAGE_TYPES.contains(&message_type);
        let message_type = if known { message_type } else { "unknown" };
        [("consumer", self.consumer().to_owned()), ("message_type", message_type.to_owned())]
    }

    fn dead_letter(&self, labels: &[(&'static str, String); 2], reason: String, attempts: u32) -> Disposition {
        tracing::error!(reason = %reason, attempts, "dead-lettering message");
        metrics::counter!("messages_consumed_total", &with_outcome(labels, "dead_lettered")).increment(1);
        Disposition::DeadLetter { reason, attempts }
    }

    /// One transaction: inbox row, effect, outbox rows; commit.
    async fn apply_once(&self, message: &IncomingMessage) -> Result<Outcome, HandlerError> {
        let span = crate::db_span::transaction_span(&self.pool, "TRANSACTION");
        self.apply_in_transaction(message).instrument(span).await
    }

    async fn apply_in_transaction(&self, message: &IncomingMessage) -> Result<Outcome, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let outcome = match self.inbox.record(&mut tx, &message.envelope).await? {
            InboxOutcome::Duplicate => return Ok(Outcome::Duplicate),
            InboxOutcome::Stale { last_applied } => {
                tracing::info!(last_applied, sequence = ?message.envelope.sequence, "stale event: recorded, not applied");
                Outcome::Stale
            }
            InboxOutcome::New => {
                crash::crash_point(crash::INBOX_AFTER_RECORD_BEFORE_EFFECT);
                self.handler.handle(&mut tx, message).await?;
                Outcome::Applied
            }
        };
        tx.commit().await?;
        crash::crash_point(crash::CONSUMER_AFTER_COMMIT_BEFORE_ACK);
        Ok(outcome)
    }
}

fn with_outcome(labels: &[(&'static str, String); 2], outcome: &'static str) -> [(&'static str, String); 3] {
    [labels[0].clone(), labels[1].clone(), ("outcome", outcome.to_owned())]
}

/// The span of one message's processing, a child of the producer's span,
/// named and attributed after the OpenTelemetry messaging conventions.
fn consumer_span(consumer: &str, message: &IncomingMessage) -> tracing::Span {
    let e = &message.envelope;
    let span = tracing::info_span!(
        "process",
        otel.name = format!("process {}", message.source.destination()),
        otel.kind = "consumer",
        messaging.system = message.source.system(),
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = message.source.destination(),
        messaging.message.id = %e.message_id,
        messaging.message.conversation_id = %e.correlation_id,
        messaging.consumer.group.name = consumer,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        message_type = %e.message_type,
        order_id = %e.correlation_id,
        otel.status_code = tracing::field::Empty,
    );
    // Parent first: the OpenTelemetry span must not have started yet.
    telemetry::set_remote_parent(
        &span,
        &telemetry::TraceHeaders { traceparent: e.traceparent.clone(), tracestate: e.tracestate.clone() },
    );
    if let MessageSource::Topic { partition, offset, .. } = &message.source {
        span.record("messaging.destination.partition.id", partition.to_string());
        span.record("messaging.kafka.offset", offset);
    }
    span
}

//! Publishing outbox rows to their broker with confirmation: what the
//! polling relay ([`crate::relay`]) and the log-tailing relay
//! ([`crate::log_tailing`]) share. Rows go out in the order given, without
//! waiting in between (the broker keeps the order of one channel or
//! partition); only the confirmed prefix counts as published.
//!
//! That holds only if one batch stays on one channel and one producer: a
//! message lost with a channel that died or was reset (by another lane's
//! failure) would otherwise be overtaken by the next one, sent on a new
//! channel. So each batch is pinned ([`BatchPins`]): a send that would go
//! out on another channel or producer generation than the batch's first is
//! not made, and the rest of the batch waits for the next pass.

use crate::amqp::{AmqpError, AmqpPublisher, ChannelPin};
use crate::crash;
use crate::kafka::{KafkaPublishError, KafkaPublisher, ProducerPin};
use chrono::{DateTime, Utc};
use contracts::Envelope;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error(transparent)]
    Kafka(#[from] KafkaPublishError),
    #[error("no {0} publisher is configured in this service")]
    NoPublisher(&'static str),
    #[error("outbox row {0} is corrupt: {1}")]
    Corrupt(i64, String),
    /// Not sent, or sent and not counted: an earlier row of its sequence
    /// failed this pass (see [`OutboxPublisher::publish_in_order`]).
    #[error("not published: an earlier message of its lane failed")]
    AfterEarlierFailure,
}

impl PublishError {
    /// The broker was reached and said no to this message (no such queue,
    /// message too large), or the row cannot be published at all: trying
    /// the same row again will not help. Anything else (connection lost,
    /// timeout, a nack while a queue recovers) is worth waiting out.
    pub(crate) fn is_refusal(&self) -> bool {
        match self {
            PublishError::Amqp(AmqpError::Unroutable(_)) => true,
            PublishError::Amqp(_) => false,
            PublishError::Kafka(e) => e.is_record_refused(),
            PublishError::NoPublisher(_) | PublishError::Corrupt(..) => true,
            PublishError::AfterEarlierFailure => false,
        }
    }

    /// Not sent, by our choice: the batch's channel or producer was
    /// replaced since its first message, and sending the rest elsewhere
    /// could reorder them. The broker did nothing wrong; the next pass sends it.
    pub(crate) fn is_held_back(&self) -> bool {
        matches!(
            self,
            PublishError::Amqp(AmqpError::ChannelChanged { .. })
                | PublishError::Kafka(KafkaPublishError::ProducerChanged { .. })
        )
    }

    /// Whether the AMQP channel is unusable after this error (a refusal
    /// leaves it open; reopening it would only flap readiness).
    pub(crate) fn breaks_amqp_channel(&self) -> bool {
        matches!(self, PublishError::Amqp(AmqpError::Protocol(_) | AmqpError::Timeout(_)))
    }
}

#[derive(sqlx::FromRow, Clone)]
pub(crate) struct OutboxRow {
    pub(crate) id: i64,
    pub(crate) transport: String,
    pub(crate) destination: String,
    pub(crate) partition_key: String,
    /// Decoded per row (see [`OutboxRow::envelope`]), so one row that no
    /// longer decodes is parked instead of failing its whole lane.
    pub(crate) envelope: serde_json::Value,
    pub(crate) payload: serde_json::Value,
    pub(crate) created_at: DateTime<Utc>,
    /// Earlier passes in which the broker refused this row.
    pub(crate) refusals: i32,
    /// Its aggregate's lane: the sequence whose order publishing keeps.
    pub(crate) lane: i16,
}

impl OutboxRow {
    pub(crate) fn envelope(&self) -> Result<Envelope, PublishError> {
        // From a reference: no copy of the JSON tree per message.
        Envelope::deserialize(&self.envelope)
            .map_err(|e| PublishError::Corrupt(self.id, format!("envelope does not decode: {e}")))
    }
}

pub(crate) enum InFlight {
    Amqp(crate::amqp::PendingConfirm),
    Kafka(crate::kafka::PendingDelivery),
}

/// Which rows of a batch must stay in order, so that a failure ends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// The whole batch: the log-tailing relay reports one position for it.
    WholeBatch,
    /// Each lane on its own: the polling relay marks each lane's prefix,
    /// and a row the broker refuses does not hold back the other lanes.
    PerLane,
}

/// The brokers a service publishes to (either may be absent).
#[derive(Clone)]
pub(crate) struct OutboxPublisher {
    pub(crate) amqp: Option<Arc<AmqpPublisher>>,
    pub(crate) kafka: Option<Arc<KafkaPublisher>>,
}

/// One batch's channel and producer, taken at its first send to each.
#[derive(Debug, Default)]
struct BatchPins {
    amqp: ChannelPin,
    kafka: ProducerPin,
}

impl OutboxPublisher {
    /// Sends every row in id order without waiting in between (the broker
    /// keeps the order of one channel / partition, and the batch is pinned
    /// to one of each), then waits for each confirmation. A result per row
    /// up to where publishing stopped: only an `Ok` was confirmed, and
    /// within each of `order`'s sequences the `Ok`s are a prefix.
    ///
    /// A refused row (see [`PublishError::is_refusal`]) ends its sequence
    /// only; any other failure (a lost channel, a timeout, a nack) ends the
    /// batch, since waiting for the confirms after it (up to a timeout
    /// each) gains nothing.
    pub(crate) async fn publish_in_order(&self, rows: &[OutboxRow], order: Order) -> Vec<Result<(), PublishError>> {
        let sequence = |row: &OutboxRow| match order {
            Order::WholeBatch => 0,
            Order::PerLane => row.lane,
        };
        let mut pins = BatchPins::default();
        let middle = rows.len() / 2;
        let mut in_flight = Vec::with_capacity(rows.len());
        let mut ended = HashSet::new();
        for (i, row) in rows.iter().enumerate() {
            if i == middle && i > 0 {
                crash::crash_point(crash::RELAY_MID_BATCH);
            }
            // Nothing after a failure in its sequence can be marked sent
            // this pass, so it is not sent.
            if ended.contains(&sequence(row)) {
                in_flight.push((Err(PublishError::AfterEarlierFailure), tracing::Span::none(), row));
                continue;
            }
            let (sent, span) = match row.envelope() {
                Ok(envelope) => {
                    let span = publish_span(&envelope, &row.transport, &row.destination);
                    if let Some(written) = row.created_at.timestamp_nanos_opt() {
                        span.record("ordermesh.outbox.written_at_unix_nano", written);
                    }
                    (self.send_with(row, envelope, Some(&mut pins)).instrument(span.clone()).await, span)
                }
                Err(corrupt) => (Err(corrupt), tracing::Span::none()),
            };
            let stop = matches!(&sent, Err(e) if !e.is_refusal());
            if sent.is_err() {
                ended.insert(sequence(row));
            }
            in_flight.push((sent, span, row));
            if stop {
                break;
            }
        }
        let mut results = Vec::with_capacity(rows.len());
        let mut unawaited = Vec::new();
        let mut ended = HashSet::new();
        let mut in_flight = in_flight.into_iter();
        for (sent, span, row) in in_flight.by_ref() {
            if ended.contains(&sequence(row)) {
                // Confirmed or not, it follows a failure in its sequence.
                if let Ok(InFlight::Amqp(pending)) = sent {
                    unawaited.push(pending);
                }
                results.push(Err(PublishError::AfterEarlierFailure));
                continue;
            }
            let result = match sent {
                Ok(InFlight::Amqp(p)) => p.confirmed().await.map_err(PublishError::from),
                Ok(InFlight::Kafka(p)) => p
                    .delivered()
                    .await
                    .map(|(partition, offset)| {
                        span.record("messaging.destination.partition.id", partition.to_string());
                        span.record("messaging.kafka.offset", offset);
                    })
                    .map_err(PublishError::from),
                Err(e) => Err(e),
            };
            let labels = [("transport", row.transport.clone()), ("destination", row.destination.clone())];
            match &result {
                Ok(()) => {
                    let latency = (Utc::now() - row.created_at).to_std().unwrap_or_default();
                    metrics::histogram!("outbox_commit_to_confirm_seconds", &labels).record(latency.as_secs_f64());
                    metrics::counter!("outbox_published_total", &labels).increment(1);
                }
                Err(e) if e.is_held_back() => {
                    span.in_scope(|| tracing::info!(reason = %e, "held back for the next pass"));
                    metrics::counter!("outbox_held_back_total", &labels).increment(1);
                }
                Err(e) => {
                    span.in_scope(|| tracing::warn!(error = %e, "broker did not confirm"));
                    span.record("otel.status_code", "ERROR");
                    metrics::counter!("outbox_publish_failures_total", &labels).increment(1);
                    if e.breaks_amqp_channel() {
                        if let Some(amqp) = &self.amqp {
                            // Every AMQP message of the batch went out on
                            // the pinned channel: that one failed.
                            amqp.reset_pinned(&pins.amqp, &e.to_string()).await;
                        }
                    }
                }
            }
            drop(span);
            let stop = matches!(&result, Err(e) if !e.is_refusal());
            if result.is_err() {
                ended.insert(sequence(row));
            }
            results.push(result);
            if stop {
                break;
            }
        }
        // Still, lapin keeps every confirm dropped unawaited until its
        // channel closes, and the channel lives on: consume them aside.
        unawaited.extend(in_flight.filter_map(|(sent, _, _)| match sent {
            Ok(InFlight::Amqp(pending)) => Some(pending),
            _ => None,
        }));
        if !unawaited.is_empty() {
            tokio::spawn(async move {
                for pending in unawaited {
                    let _ = pending.confirmed().await;
                }
            });
        }
        results
    }

    /// One row, on whatever channel or producer is current (a message on
    /// its own: direct publishing).
    pub(crate) async fn send(&self, row: &OutboxRow, envelope: Envelope) -> Result<InFlight, PublishError> {
        self.send_with(row, envelope, None).await
    }

    async fn send_with(
        &self,
        row: &OutboxRow,
        mut envelope: Envelope,
        pins: Option<&mut BatchPins>,
    ) -> Result<InFlight, PublishError> {
        // The consumer's span will be a child of this publish span.
        let trace = telemetry::current_trace_headers();
        envelope.traceparent = trace.traceparent.or(envelope.traceparent);
        envelope.tracestate = trace.tracestate.or(envelope.tracestate);
        let payload = serde_json::to_vec(&row.payload).map_err(|e| PublishError::Corrupt(row.id, e.to_string()))?;
        match row.transport.as_str() {
            "amqp" => {
                let amqp = self.amqp.as_ref().ok_or(PublishError::NoPublisher("AMQP"))?;
                let sent = match pins {
                    Some(pins) => amqp.send_pinned(&mut pins.amqp, &row.destination, &envelope, &payload, &[]).await,
                    None => amqp.send(&row.destination, &envelope, &payload, &[]).await,
                };
                Ok(InFlight::Amqp(sent?))
            }
            "kafka" => {
                let kafka = self.kafka.as_ref().ok_or(PublishError::NoPublisher("Kafka"))?;
                let (topic, key) = (&row.destination, &row.partition_key);
                let sent = match pins {
                    Some(pins) => kafka.send_pinned(&mut pins.kafka, topic, key, &envelope, &payload, &[]).await,
                    None => kafka.send(topic, key, &envelope, &payload, &[]).await,
                };
                Ok(InFlight::Kafka(sent?))
            }
            other => Err(PublishError::Corrupt(row.id, format!("unknown transport `{other}`"))),
        }
    }
}

/// The producer span of one publish: a child of the context stored with the
/// outbox row (the request or message that caused it).
fn publish_span(envelope: &Envelope, transport: &str, destination: &str) -> tracing::Span {
    let system = if transport == "amqp" { "rabbitmq" } else { "kafka" };
    let span = tracing::info_span!(
        "publish",
        otel.name = format!("send {destination}"),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = destination,
        messaging.message.id = %envelope.message_id,
        messaging.message.conversation_id = %envelope.correlation_id,
        message_type = %envelope.message_type,
        order_id = %envelope.correlation_id,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        // When the outbox row was written: the console shows how long the
        // message waited there before this publish.
        ordermesh.outbox.written_at_unix_nano = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    telemetry::set_remote_parent(
        &span,
        &telemetry::TraceHeaders { traceparent: envelope.traceparent.clone(), tracestate: envelope.tracestate.clone() },
    );
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use std::time::Duration;

    #[test]
    fn only_a_broker_that_says_no_counts_as_a_refusal() {
        assert!(PublishError::Amqp(AmqpError::Unroutable("q".into())).is_refusal());
        assert!(PublishError::Corrupt(1, "bad".into()).is_refusal());
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(PublishError::Kafka(KafkaPublishError::Kafka(too_large)).is_refusal());
        // An outage or a slow broker is waited out, never parked.
        assert!(!PublishError::Amqp(AmqpError::Timeout(Duration::from_secs(1))).is_refusal());
        assert!(!PublishError::Amqp(AmqpError::Nacked).is_refusal());
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(!PublishError::Kafka(KafkaPublishError::Kafka(timed_out)).is_refusal());
        assert!(!PublishError::Kafka(KafkaPublishError::Canceled).is_refusal());
    }

    #[test]
    fn a_send_held_back_by_its_batch_pin_is_retried_and_leaves_the_new_channel_alone() {
        let channel_changed = PublishError::Amqp(AmqpError::ChannelChanged { pinned: 1 });
        assert!(!channel_changed.is_refusal(), "never parked: the next pass sends it");
        assert!(channel_changed.is_held_back());
        assert!(!PublishError::Amqp(AmqpError::Nacked).is_held_back());
        assert!(!channel_changed.breaks_amqp_channel(), "the new channel did not fail");
        let producer_changed = PublishError::Kafka(KafkaPublishError::ProducerChanged { pinned: 0, current: 1 });
        assert!(!producer_changed.is_refusal());
        assert!(producer_changed.is_held_back());
    }
}

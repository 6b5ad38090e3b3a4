//! The envelope: the metadata every message carries on both brokers.
//!
//! The body of a message is its JSON payload only; the envelope travels as
//! headers (AMQP properties/headers, Kafka record headers) so a broker tool or
//! a consumer can route, deduplicate and trace without parsing the body.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Names of the envelope headers, identical on AMQP and Kafka.
pub mod header {
    pub const MESSAGE_ID: &str = "message_id";
    pub const MESSAGE_TYPE: &str = "message_type";
    pub const CORRELATION_ID: &str = "correlation_id";
    pub const CAUSATION_ID: &str = "causation_id";
    pub const REPLY_TO: &str = "reply_to";
    pub const PRODUCER: &str = "producer";
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    pub const AGGREGATE_ID: &str = "aggregate_id";
    pub const SEQUENCE: &str = "sequence";
}

/// The metadata every message carries. It travels as headers (`to_headers`,
/// every value as text); this JSON form is how the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Envelope {
    /// UUIDv7: unique, and roughly time-ordered so inbox indexes stay compact.
    pub message_id: Uuid,
    /// `<channel>.<Name>`, e.g. `stock.ReserveStock`, `orders.OrderPaid`.
    pub message_type: String,
    /// The order this message belongs to.
    pub correlation_id: String,
    /// The message whose handling produced this one.
    pub causation_id: Option<Uuid>,
    /// Return address; commands only.
    pub reply_to: Option<String>,
    /// The service that produced the message.
    pub producer: String,
    /// When the message was produced (UTC, microseconds).
    pub occurred_at: DateTime<Utc>,
    /// Version of the payload's schema; a consumer dead-letters a version it does not know.
    pub schema_version: u32,
    /// W3C trace context of the producing span.
    pub traceparent: Option<String>,
    /// W3C trace state of the producing span.
    pub tracestate: Option<String>,
    /// Events only: the aggregate (the order id).
    pub aggregate_id: Option<String>,
    /// Events only: the event's number within its aggregate, from 1.
    pub sequence: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope header `{0}` is missing")]
    Missing(&'static str),
    #[error("envelope header `{header}` is invalid: {reason}")]
    Invalid { header: &'static str, reason: String },
}

impl Envelope {
    /// A fresh envelope with a new UUIDv7 id, stamped now.
    pub fn new(
        message_type: impl Into<String>,
        correlation_id: impl Into<String>,
        producer: impl Into<String>,
    ) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            message_type: message_type.into(),
            correlation_id: correlation_id.into(),
            causation_id: None,
            reply_to: None,
            producer: producer.into(),
            // Microseconds: what both the headers and PostgreSQL keep.
            occurred_at: Utc::now().trunc_subsecs(6),
            schema_version: 1,
            traceparent: None,
            tracestate: None,
            aggregate_id: None,
            sequence: None,
        }
    }

    /// The envelope as `(header, value)` pairs; absent optional fields are omitted.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (header::MESSAGE_ID, self.message_id.to_string()),
            (header::MESSAGE_TYPE, self.message_type.clone()),
            (header::CORRELATION_ID, self.correlation_id.clone()),
            (header::PRODUCER, self.producer.clone()),
            (header::OCCURRED_AT, self.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            (header::SCHEMA_VERSION, self.schema_version.to_string()),
        ];
        let optional = [
            (header::CAUSATION_ID, self.causation_id.map(|id| id.to_string())),
            (header::REPLY_TO, self.reply_to.clone()),
            (header::TRACEPARENT, self.traceparent.clone()),
            (header::TRACESTATE, self.tracestate.clone()),
            (header::AGGREGATE_ID, self.aggregate_id.clone()),
            (header::SEQUENCE, self.sequence.map(|s| s.to_string())),
        ];
        headers.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        headers
    }

    /// Rebuilds an envelope from headers looked up by name.
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Result<Self, EnvelopeError> {
        let required = |name: &'static str| get(name).ok_or(EnvelopeError::Missing(name));
        let optional_non_empty = |name: &'static str| get(name).filter(|v| !v.is_empty());
        Ok(Self {
            message_id: parse(header::MESSAGE_ID, &required(header::MESSAGE_ID)?)?,
            message_type: non_empty(header::MESSAGE_TYPE, required(header::MESSAGE_TYPE)?)?,
            correlation_id: non_empty(header::CORRELATION_ID, required(header::CORRELATION_ID)?)?,
            causation_id: optional_non_empty(header::CAUSATION_ID)
                .map(|v| parse(header::CAUSATION_ID, &v))
                .transpose()?,
            reply_to: optional_non_empty(header::REPLY_TO),
            producer: non_empty(header::PRODUCER, required(header::PRODUCER)?)?,
            occurred_at: DateTime::parse_from_rfc3339(&required(header::OCCURRED_AT)?)
                .map_err(|e| invalid(header::OCCURRED_AT, e))?
                .with_timezone(&Utc),
            schema_version: parse(header::SCHEMA_VERSION, &required(header::SCHEMA_VERSION)?)?,
            traceparent: optional_non_empty(header::TRACEPARENT),
            tracestate: optional_non_empty(header::TRACESTATE),
            aggregate_id: optional_non_empty(header::AGGREGATE_ID),
            sequence: optional_non_empty(header::SEQUENCE).map(|v| parse(header::SEQUENCE, &v)).transpose()?,
        })
    }
}

fn invalid(header: &'static str, reason: impl ToString) -> EnvelopeError {
    EnvelopeError::Invalid { header, reason: reason.to_string() }
}

fn parse<T: std::str::FromStr>(header: &'static str, value: &str) -> Result<T, EnvelopeError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| invalid(header, e))
}

fn non_empty(header: &'static str, value: String) -> Result<String, EnvelopeError> {
    if value.trim().is_empty() { Err(invalid(header, "empty")) } else { Ok(value) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn full() -> Envelope {
        let mut e = Envelope::new("orders.OrderPaid", "0190b2a4-0000-7000-8000-000000000001", "order");
        e.causation_id = Some(Uuid::now_v7());
        e.reply_to = Some("order.replies".into());
        e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        e.tracestate = Some("vendor=x".into());
        e.aggregate_id = Some("0190b2a4-0000-7000-8000-000000000001".into());
        e.sequence = Some(2);
        e
    }

    fn round_trip(e: &Envelope) -> Result<Envelope, EnvelopeError> {
        let map: HashMap<_, _> = e.to_headers().into_iter().collect();
        Envelope::from_headers(|k| map.get(k).cloned())
    }

    #[test]
    fn every_field_survives_a_round_trip_through_headers() {
        let e = full();
        assert_eq!(round_trip(&e).unwrap(), e);
        let minimal = Envelope::new("stock.ReserveStock", "o-1", "order");
        assert_eq!(round_trip(&minimal).unwrap(), minimal);
    }

    #[test]
    fn missing_and_malformed_headers_are_named() {
        let e = full();
        let mut map: HashMap<_, _> = e.to_headers().into_iter().collect();
        map.remove(header::MESSAGE_ID);
        assert_eq!(Envelope::from_headers(|k| map.get(k).cloned()), Err(EnvelopeError::Missing(header::MESSAGE_ID)));
        map.insert(header::MESSAGE_ID, "not-a-uuid".into());
        assert!(matches!(
            Envelope::from_headers(|k| map.get(k).cloned()),
            Err(EnvelopeError::Invalid { header: header::MESSAGE_ID, .. })
        ));
        map.insert(header::MESSAGE_ID, Uuid::now_v7().to_string());
        map.insert(header::SEQUENCE, "two".into());
        assert!(matches!(
            Envelope::from_headers(|k| map.get(k).cloned()),
            Err(EnvelopeError::Invalid { header: header::SEQUENCE, .. })
        ));
    }
}

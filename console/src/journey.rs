//! One order's journey, computed from the spans of its traces: the spans
//! grouped by service on one time axis, each message hop from its publish
//! to every consume with the time the message waited (in the outbox until
//! the relay published it, in the broker until a consumer took it), and
//! what is missing: a service that should have spans and has none, a hop
//! whose publish or consume has not arrived.

use crate::config::SERVICES;
use crate::otlp::ReceivedSpan;
use contracts::Topology;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Set by the relay on each publish span: when the outbox row was written.
pub const OUTBOX_WRITTEN_AT_ATTRIBUTE: &str = "ordermesh.outbox.written_at_unix_nano";

const MESSAGE_ID: &str = "messaging.message.id";
const DESTINATION: &str = "messaging.destination.name";
const MESSAGE_TYPE: &str = "message_type";
const SYSTEM: &str = "messaging.system";
const PRODUCER: i16 = 4;
const CONSUMER: i16 = 5;

#[derive(Debug, Clone, Serialize)]
pub struct Journey {
    pub trace_ids: Vec<String>,
    pub started_at_unix_ms: f64,
    pub duration_ms: f64,
    pub services: Vec<ServiceLane>,
    pub hops: Vec<Hop>,
    pub missing: Vec<Missing>,
    /// Nothing is missing: every hop has its publish and every consume
    /// expected of it.
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceLane {
    pub name: String,
    pub spans: Vec<SpanBar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpanBar {
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_id: String,
    pub name: String,
    pub kind: &'static str,
    pub start_ms: f64,
    pub duration_ms: f64,
    pub error: bool,
    pub attributes: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub message_id: String,
    pub message_type: String,
    pub destination: String,
    pub system: String,
    pub producer: Option<HopEnd>,
    /// From the outbox row's write to the start of its publish.
    pub outbox_wait_ms: Option<f64>,
    pub consumers: Vec<Consumption>,
    pub expected_consumers: Vec<String>,
    pub not_consumed_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HopEnd {
    pub service: String,
    pub span_id: String,
    pub start_ms: f64,
    pub end_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Consumption {
    pub service: String,
    pub span_id: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// From the broker's confirmation of the publish to this consume.
    pub broker_wait_ms: Option<f64>,
    /// 1 for the first delivery to this service, 2 for a redelivery, …
    pub attempt: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub service: String,
    pub reason: String,
}

/// Who publishes and who consumes on each channel of a topology.
pub struct Channels(Vec<crate::channels::Channel>);

impl Channels {
    pub fn of(topology: &Topology) -> Self {
        Self(crate::channels::of(topology))
    }

    fn consumers_of(&self, destination: &str) -> Vec<String> {
        crate::channels::consumers_of(&self.0, destination)
    }

    fn producer_of(&self, destination: &str, message_type: &str) -> Option<String> {
        crate::channels::producer_of(&self.0, destination, message_type)
    }
}

fn kind_name(kind: i16) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        PRODUCER => "producer",
        CONSUMER => "consumer",
        _ => "unspecified",
    }
}

fn text<'a>(span: &'a ReceivedSpan, key: &str) -> &'a str {
    span.attributes.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn millis(nanos: i64) -> f64 {
    nanos as f64 / 1e6
}

/// The journey of the order whose traces are `spans`.
pub fn journey(spans: &[ReceivedSpan], channels: &Channels) -> Journey {
    let origin = spans.iter().map(|s| s.start_unix_nano).min().unwrap_or_default();
    let end = spans.iter().map(|s| s.end_unix_nano).max().unwrap_or(origin);
    let at = |nanos: i64| millis(nanos - origin);
    let trace_ids: BTreeSet<String> = spans.iter().map(|s| s.trace_id.clone()).collect();

    let mut lanes: BTreeMap<(usize, String), Vec<SpanBar>> = BTreeMap::new();
    for span in spans {
        let rank = SERVICES.iter().position(|s| *s == span.service).unwrap_or(SERVICES.len());
        lanes.entry((rank, span.service.clone())).or_default().push(SpanBar {
            span_id: span.span_id.clone(),
            parent_span_id: span.parent_span_id.clone(),
            trace_id: span.trace_id.clone(),
            name: span.name.clone(),
            kind: kind_name(span.kind),
            start_ms: at(span.start_unix_nano),
            duration_ms: millis(span.end_unix_nano - span.start_unix_nano),
            error: span.is_error,
            attributes: span.attributes.clone(),
        });
    }
    let present: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();

    // Hops by message id, in the order their first span started.
    let mut hops: Vec<Hop> = Vec::new();
    let hop_of = |hops: &mut Vec<Hop>, span: &ReceivedSpan| -> usize {
        let id = text(span, MESSAGE_ID);
        if let Some(i) = hops.iter().position(|h| h.message_id == id) {
            return i;
        }
        let destination = text(span, DESTINATION).to_owned();
        hops.push(Hop {
            message_id: id.to_owned(),
            message_type: text(span, MESSAGE_TYPE).to_owned(),
            system: text(span, SYSTEM).to_owned(),
            expected_consumers: channels.consumers_of(&destination),
            destination,
            producer: None,
            outbox_wait_ms: None,
            consumers: Vec::new(),
            not_consumed_by: Vec::new(),
        });
        hops.len() - 1
    };
    let messaging = spans.iter().filter(|s| matches!(s.kind, PRODUCER | CONSUMER) && !text(s, MESSAGE_ID).is_empty());
    for span in messaging {
        let i = hop_of(&mut hops, span);
        let hop = &mut hops[i];
        let end = HopEnd {
            service: span.service.clone(),
            span_id: span.span_id.clone(),
            start_ms: at(span.start_unix_nano),
            end_ms: at(span.end_unix_nano),
        };
        if span.kind == PRODUCER {
            // A publish retried after a failed confirmation has one span
            // per try: the last one is the one the broker confirmed.
            hop.outbox_wait_ms = span
                .attributes
                .get(OUTBOX_WRITTEN_AT_ATTRIBUTE)
                .and_then(Value::as_i64)
                .map(|written| millis(span.start_unix_nano - written).max(0.0));
            hop.producer = Some(end);
        } else {
            let attempt = hop.consumers.iter().filter(|c| c.service == span.service).count() + 1;
            hop.consumers.push(Consumption {
                service: end.service,
                span_id: end.span_id,
                start_ms: end.start_ms,
                end_ms: end.end_ms,
                broker_wait_ms: None,
                attempt,
            });
        }
    }
    let mut missing: Vec<Missing> = Vec::new();
    let mut note = |service: &str, reason: String| {
        if !missing.iter().any(|m| m.service == service) {
            missing.push(Missing { service: service.to_owned(), reason });
        }
    };
    for hop in &mut hops {
        if let Some(producer) = &hop.producer {
            for consumer in &mut hop.consumers {
                consumer.broker_wait_ms = Some((consumer.start_ms - producer.end_ms).max(0.0));
            }
        }
        hop.not_consumed_by = hop
            .expected_consumers
            .iter()
            .filter(|service| !hop.consumers.iter().any(|c| &c.service == *service))
            .cloned()
            .collect();
        for service in &hop.not_consumed_by {
            if !present.contains(service.as_str()) {
                note(
                    service,
                    format!(
                        "no spans from {service}: expected to consume {} from {}",
                        hop.message_type, hop.destination
                    ),
                );
            }
        }
        if hop.producer.is_none() {
            let producer = channels.producer_of(&hop.destination, &hop.message_type);
            let service = producer.unwrap_or_else(|| "unknown".to_owned());
            let reason = if present.contains(service.as_str()) {
                format!("the publish of {} to {} has no span from {service} yet", hop.message_type, hop.destination)
            } else {
                format!("no spans from {service}: expected to publish {} to {}", hop.message_type, hop.destination)
            };
            note(&service, reason);
        }
    }
    let complete = missing.is_empty() && hops.iter().all(|h| h.producer.is_some() && h.not_consumed_by.is_empty());
    Journey {
        trace_ids: trace_ids.into_iter().collect(),
        started_at_unix_ms: millis(origin),
        duration_ms: millis(end - origin),
        services: lanes.into_iter().map(|((_, name), spans)| ServiceLane { name, spans }).collect(),
        hops,
        missing,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span(service: &str, id: &str, kind: i16, start: i64, end: i64, attributes: Value) -> ReceivedSpan {
        ReceivedSpan {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: String::new(),
            service: service.into(),
            name: format!("{service} {id}"),
            kind,
            start_unix_nano: start * 1_000_000,
            end_unix_nano: end * 1_000_000,
            is_error: false,
            order_id: None,
            attributes: attributes.as_object().cloned().unwrap_or_default(),
        }
    }

    fn publish(service: &str, id: &str, message: &str, destination: &str, kind: &str, at: i64) -> ReceivedSpan {
        span(
            service,
            id,
            PRODUCER,
            at,
            at + 2,
            json!({MESSAGE_ID: message, DESTINATION: destination, MESSAGE_TYPE: kind, SYSTEM: "kafka",
                   OUTBOX_WRITTEN_AT_ATTRIBUTE: (at - 3) * 1_000_000}),
        )
    }

    fn consume(service: &str, id: &str, message: &str, destination: &str, at: i64) -> ReceivedSpan {
        span(service, id, CONSUMER, at, at + 5, json!({MESSAGE_ID: message, DESTINATION: destination}))
    }

    fn paid_order_spans() -> Vec<ReceivedSpan> {
        vec![
            span("order", "http", 2, 0, 20, json!({})),
            publish("order", "p1", "m1", "orders", "orders.OrderPaid", 10),
            consume("shipping", "c1", "m1", "orders", 16),
            consume("email", "c2", "m1", "orders", 17),
            consume("loyalty", "c3", "m1", "orders", 18),
        ]
    }

    #[test]
    fn a_hop_waits_in_the_outbox_and_in_the_broker() {
        let journey = journey(&paid_order_spans(), &Channels::of(&Topology::default()));
        let hop = &journey.hops[0];
        assert_eq!(hop.outbox_wait_ms, Some(3.0));
        let waits: Vec<_> = hop.consumers.iter().map(|c| (c.service.as_str(), c.broker_wait_ms)).collect();
        assert_eq!(waits, [("shipping", Some(4.0)), ("email", Some(5.0)), ("loyalty", Some(6.0))]);
        assert!(journey.complete, "{:?}", journey.missing);
        let lanes: Vec<_> = journey.services.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(lanes, ["order", "shipping", "email", "loyalty"]);
    }

    #[test]
    fn a_service_without_spans_is_named_missing() {
        let spans: Vec<_> = paid_order_spans().into_iter().filter(|s| s.service != "shipping").collect();
        let journey = journey(&spans, &Channels::of(&Topology::default()));
        assert_eq!(journey.missing.len(), 1, "{:?}", journey.missing);
        assert_eq!(journey.missing[0].service, "shipping");
        assert!(journey.missing[0].reason.contains("orders.OrderPaid"), "{}", journey.missing[0].reason);
        assert_eq!(journey.hops[0].not_consumed_by, ["shipping"]);
        assert!(!journey.complete);
    }

    #[test]
    fn a_consume_without_its_publish_names_the_producer() {
        let ns = Topology::new("t1.");
        let spans = vec![
            span("order", "http", 2, 0, 20, json!({})),
            consume("order", "c1", "m9", "t1.order.replies", 30),
            span("payment", "x", 2, 0, 1, json!({})),
        ];
        let mut with_type = spans.clone();
        with_type[1].attributes.insert(MESSAGE_TYPE.into(), json!("stock.StockReserved"));
        let journey = journey(&with_type, &Channels::of(&ns));
        assert_eq!(journey.missing[0].service, "stock", "{:?}", journey.missing);
        assert!(!journey.complete);
    }

    #[test]
    fn a_redelivery_is_a_second_attempt() {
        let mut spans = paid_order_spans();
        spans.push(consume("email", "c4", "m1", "orders", 40));
        let journey = journey(&spans, &Channels::of(&Topology::default()));
        let email: Vec<_> =
            journey.hops[0].consumers.iter().filter(|c| c.service == "email").map(|c| c.attempt).collect();
        assert_eq!(email, [1, 2]);
    }
}

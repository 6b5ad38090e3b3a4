//! An OTLP/HTTP trace receiver for tests, standing in for Jaeger, and the
//! check that one order's spans form one unbroken trace across services.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

/// One received span, flattened.
#[derive(Debug, Clone)]
pub struct CollectedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
pub struct OtlpReceiver {
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

impl OtlpReceiver {
    /// Serves `POST /v1/traces` on an ephemeral port; returns the receiver and
    /// the endpoint to put in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub async fn start() -> (Self, String) {
        let receiver = Self::default();
        let app = Router::new().route("/v1/traces", post(receive)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the OTLP receiver");
        let endpoint = format!("http://{}", listener.local_addr().expect("local addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, endpoint)
    }

    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn trace(&self, trace_id: &str) -> Vec<CollectedSpan> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

/// Decoded by the console's own OTLP decoder, so the tests read spans as
/// the console does.
async fn receive(State(receiver): State<OtlpReceiver>, body: Bytes) -> axum::http::StatusCode {
    let Ok(export) = console::otlp::decode(&body, console::otlp::Encoding::Protobuf) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    let collected = export.spans.into_iter().map(|span| CollectedSpan {
        service: span.service,
        name: span.name,
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_span_id: span.parent_span_id,
        kind: i32::from(span.kind),
        attributes: span
            .attributes
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => (key, text),
                other => (key, other.to_string()),
            })
            .collect(),
    });
    receiver.spans.lock().unwrap_or_else(|e| e.into_inner()).extend(collected);
    axum::http::StatusCode::OK
}

/// What is wrong with a trace, if anything.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TraceReport {
    pub services: BTreeSet<String>,
    /// Spans whose parent is not in the trace: a broken hop.
    pub orphans: Vec<String>,
    /// Roots: exactly one is expected (the HTTP request).
    pub roots: Vec<String>,
    /// Messaging spans missing a semantic-convention attribute.
    pub missing_attributes: Vec<String>,
}

pub const MESSAGING_ATTRIBUTES: &[&str] =
    &["messaging.system", "messaging.destination.name", "messaging.operation.type", "messaging.message.id"];

impl TraceReport {
    /// Checks every span of one trace: each parent present, one root, and the
    /// messaging attributes on producer and consumer spans (plus partition and
    /// offset on Kafka consumers).
    pub fn of(spans: &[CollectedSpan]) -> Self {
        let ids: HashMap<&str, &CollectedSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
        let mut report = TraceReport { services: spans.iter().map(|s| s.service.clone()).collect(), ..Self::default() };
        for span in spans {
            let label = format!("{}: {}", span.service, span.name);
            if span.parent_span_id.is_empty() {
                report.roots.push(label.clone());
            } else if !ids.contains_key(span.parent_span_id.as_str()) {
                report.orphans.push(label.clone());
            }
            if span.kind == 4 || span.kind == 5 {
                let mut required: Vec<&str> = MESSAGING_ATTRIBUTES.to_vec();
                if span.kind == 5 && span.attributes.get("messaging.system").map(String::as_str) == Some("kafka") {
                    required.extend(["messaging.destination.partition.id", "messaging.kafka.offset"]);
                }
                for attribute in required {
                    if !span.attributes.contains_key(attribute) {
                        report.missing_attributes.push(format!("{label} lacks {attribute}"));
                    }
                }
            }
        }
        report
    }

    pub fn is_one_unbroken_trace(&self) -> bool {
        self.orphans.is_empty() && self.roots.len() == 1 && self.missing_attributes.is_empty()
    }
}

/// Spans about conversation `order_id` (the messaging conversation id) that
/// are not in `trace_id`: a hop that started a trace of its own. Looking
/// only inside the order's trace cannot see those when the service that
/// broke the chain has other spans in it.
pub fn stray_spans(all: &[CollectedSpan], trace_id: &str, order_id: &str) -> Vec<String> {
    all.iter()
        .filter(|s| s.attributes.get("messaging.message.conversation_id").map(String::as_str) == Some(order_id))
        .filter(|s| s.trace_id != trace_id)
        .map(|s| format!("{}: {} (trace {})", s.service, s.name, s.trace_id))
        .collect()
}

/// Consumer spans per service within one trace.
pub fn consumer_spans_per_service(spans: &[CollectedSpan]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for span in spans.iter().filter(|s| s.kind == 5) {
        *counts.entry(span.service.clone()).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, id: &str, parent: &str, kind: i32, attrs: &[(&str, &str)]) -> CollectedSpan {
        CollectedSpan {
            service: service.into(),
            name: format!("{service}-{id}"),
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            kind,
            attributes: attrs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        }
    }

    fn messaging(system: &str) -> Vec<(&'static str, &str)> {
        vec![
            ("messaging.system", system),
            ("messaging.destination.name", "q"),
            ("messaging.operation.type", "send"),
            ("messaging.message.id", "m"),
        ]
    }

    fn hop_chain() -> Vec<CollectedSpan> {
        vec![
            span("order", "a", "", 2, &[]),
            span("order", "b", "a", 4, &messaging("rabbitmq")),
            span("stock", "c", "b", 5, &messaging("rabbitmq")),
            span("stock", "d", "c", 4, &messaging("rabbitmq")),
            span("order", "e", "d", 5, &messaging("rabbitmq")),
        ]
    }

    #[test]
    fn an_unbroken_chain_passes() {
        let report = TraceReport::of(&hop_chain());
        assert!(report.is_one_unbroken_trace(), "{report:?}");
        assert_eq!(report.services.len(), 2);
    }

    #[test]
    fn one_broken_hop_is_caught() {
        // stock's consumer did not continue the producer's context: its span
        // is a new root, and what it caused hangs off that new root.
        let mut spans = hop_chain();
        spans[2].parent_span_id.clear();
        let report = TraceReport::of(&spans);
        assert!(!report.is_one_unbroken_trace());
        assert_eq!(report.roots.len(), 2, "{report:?}");

        // A parent that never arrived (the context was lost mid-way).
        let mut spans = hop_chain();
        spans[3].parent_span_id = "zz".into();
        let report = TraceReport::of(&spans);
        assert_eq!(report.orphans, vec!["stock: stock-d".to_string()]);
    }

    #[test]
    fn a_hop_that_starts_its_own_trace_is_a_stray_even_if_its_service_is_in_the_trace() {
        let conversation = |mut s: CollectedSpan| {
            s.attributes.insert("messaging.message.conversation_id".into(), "order-1".into());
            s
        };
        let mut all: Vec<CollectedSpan> = hop_chain().into_iter().map(conversation).collect();
        assert!(stray_spans(&all, "t", "order-1").is_empty());
        // order's consumer of the reply began a new trace: order still has
        // spans in the order's trace, so a check of services alone passes.
        all[4].trace_id = "other".into();
        all[4].parent_span_id.clear();
        let in_trace: Vec<CollectedSpan> = all.iter().filter(|s| s.trace_id == "t").cloned().collect();
        assert_eq!(TraceReport::of(&in_trace).services.len(), 2);
        assert_eq!(stray_spans(&all, "t", "order-1"), vec!["order: order-e (trace other)".to_string()]);
        assert_eq!(consumer_spans_per_service(&in_trace).get("order"), None);
    }

    #[test]
    fn missing_messaging_attributes_are_named() {
        let mut spans = hop_chain();
        spans[1].attributes.remove("messaging.destination.name");
        spans.push(span("shipping", "f", "b", 5, &messaging("kafka")));
        let report = TraceReport::of(&spans);
        assert!(report.missing_attributes.contains(&"order: order-b lacks messaging.destination.name".to_string()));
        assert!(report.missing_attributes.contains(&"shipping: shipping-f lacks messaging.kafka.offset".to_string()));
    }
}

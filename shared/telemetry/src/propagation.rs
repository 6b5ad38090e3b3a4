//! W3C trace context in and out of message headers.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The two W3C headers a message carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// The headers that are set, by name: for an outgoing HTTP request.
    pub fn into_pairs(self) -> impl Iterator<Item = (&'static str, String)> {
        [("traceparent", self.traceparent), ("tracestate", self.tracestate)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
    }
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for TraceHeaders {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent.as_deref(),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// The trace context of the current span, ready to store with an outbox row.
pub fn current_trace_headers() -> TraceHeaders {
    let context = tracing::Span::current().context();
    let mut headers = TraceHeaders::default();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut headers));
    headers
}

/// Hex trace id of the current span, if it has a valid one.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}

/// Makes `span` a child of the remote context in `headers`. Call it right after
/// creating the span and before entering it: a started span cannot be re-parented.
/// A missing or malformed `traceparent` leaves the span a new root.
pub fn set_remote_parent(span: &tracing::Span, headers: &TraceHeaders) {
    if headers.traceparent.is_none() {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed (e.g. unit tests).
        let _ = span.set_parent(parent);
    }
}

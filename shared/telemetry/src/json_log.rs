//! JSON log lines that carry the OpenTelemetry `trace_id` and `span_id`, so a
//! log line found in any service leads straight to the whole trace.

use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON log layer writing to `writer`. Span fields are rendered by the
/// default field formatter, which colours them unless told not to: never
/// inside JSON strings.
pub fn layer<S, W>(service: &str, writer: W) -> tracing_subscriber::fmt::Layer<S, DefaultFields, JsonWithTraceIds, W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    tracing_subscriber::fmt::layer().with_ansi(false).event_format(JsonWithTraceIds::new(service)).with_writer(writer)
}

pub struct JsonWithTraceIds {
    service: String,
}

impl JsonWithTraceIds {
    pub fn new(service: &str) -> Self {
        Self { service: service.to_owned() }
    }
}

struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole chain: "connecting: connection refused" beats "connecting".
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.0.insert(field.name().to_owned(), Value::from(text));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        line.insert("level".into(), Value::from(meta.level().as_str()));
        line.insert("service".into(), Value::from(self.service.as_str()));
        line.insert("target".into(), Value::from(meta.target()));

        let mut fields = Map::new();
        event.record(&mut JsonFields(&mut fields));
        if let Some(message) = fields.remove("message") {
            line.insert("message".into(), message);
        }

        let span = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.insert("span".into(), Value::from(span.name()));
            // Fields of enclosing spans (order_id, message_type, …) as
            // recorded by the default field formatter.
            let mut span_fields = Vec::new();
            for s in span.scope().from_root() {
                if let Some(formatted) = s.extensions().get::<FormattedFields<N>>() {
                    if !formatted.is_empty() {
                        span_fields.push(format!("{}{{{}}}", s.name(), formatted.fields));
                    }
                }
            }
            if !span_fields.is_empty() {
                line.insert("spans".into(), Value::from(span_fields.join(" ")));
            }
        }
        if let Some((trace_id, span_id)) = traced_span(event).and_then(|id| otel_ids(&id)) {
            line.insert("trace_id".into(), Value::from(trace_id));
            line.insert("span_id".into(), Value::from(span_id));
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// The span an event belongs to, whether or not the log filter shows that
/// span: `ctx` only knows the spans its layer's filter let through, so a
/// `warn` line inside an `info` span would otherwise lose its trace id when
/// the service logs at `warn`.
fn traced_span(event: &Event<'_>) -> Option<tracing::span::Id> {
    if event.is_root() {
        None
    } else if let Some(parent) = event.parent() {
        Some(parent.clone())
    } else {
        tracing::Span::current().id()
    }
}

/// The OpenTelemetry trace and span ids of tracing span `id`, if it has a
/// valid context.
pub(crate) fn otel_ids(id: &tracing::span::Id) -> Option<(String, String)> {
    let context = tracing::dispatcher::get_default(|dispatch| tracing_opentelemetry::get_otel_context(id, dispatch))?;
    let otel_span = context.span();
    let sc = otel_span.span_context();
    sc.is_valid().then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// The compact human format, each line led by its trace id (when it has
/// one), so a developer can still jump from a line to its trace.
pub struct CompactWithTraceId {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Compact>,
}

impl CompactWithTraceId {
    pub fn new() -> Self {
        Self { inner: tracing_subscriber::fmt::format().compact() }
    }
}

impl<S, N> FormatEvent<S, N> for CompactWithTraceId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        if let Some((trace_id, _)) = traced_span(event).and_then(|id| otel_ids(&id)) {
            write!(writer, "[{trace_id}] ")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::CapturedLogs;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn a_json_line_carries_span_fields_as_plain_text() {
        let lines = CapturedLogs::default();
        let subscriber = tracing_subscriber::registry().with(layer("stock", lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("process", order_id = "o-1", attempt = 2);
            let _entered = span.enter();
            tracing::info!(sku = "sku-1", "reserved");
        });
        let text = lines.text();
        assert!(!text.contains('\u{1b}'), "terminal colour codes in a JSON log line: {text}");
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["service"], "stock");
        assert_eq!(line["message"], "reserved");
        assert_eq!(line["span"], "process");
        assert_eq!(line["spans"], "process{order_id=\"o-1\" attempt=2}");
        assert_eq!(line["fields"]["sku"], "sku-1");
    }
}

//! OTLP/HTTP trace exports, protobuf or JSON, turned into flat spans.
//! Nothing a sender puts in an export can make this panic: a body that
//! does not decode is an error, a span with ids of the wrong length is
//! rejected alone (OTLP's partial success) and counted.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The attribute every message hop and the order's own spans carry.
pub const ORDER_ID_ATTRIBUTE: &str = "order_id";

/// One span as the console stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub service: String,
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i16,
    pub start_unix_nano: i64,
    pub end_unix_nano: i64,
    pub is_error: bool,
    pub order_id: Option<Uuid>,
    pub attributes: Map<String, Value>,
}

/// How an export was encoded; the answer goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From the request's `Content-Type`: JSON if it says so, protobuf
    /// otherwise (the OTLP/HTTP default).
    pub fn of_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(ct) if ct.trim_start().to_ascii_lowercase().starts_with("application/json") => Encoding::Json,
            _ => Encoding::Protobuf,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("the body is not an OTLP trace export ({encoding}): {reason}")]
    Malformed { encoding: &'static str, reason: String },
}

/// The spans of one export, and how many were rejected with why.
#[derive(Debug, Default)]
pub struct DecodedExport {
    pub spans: Vec<ReceivedSpan>,
    pub rejected: i64,
    pub rejection: Option<String>,
}

pub fn decode(body: &[u8], encoding: Encoding) -> Result<DecodedExport, OtlpError> {
    let request = match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| OtlpError::Malformed { encoding: "protobuf", reason: e.to_string() })?,
        Encoding::Json => serde_json::from_slice::<ExportTraceServiceRequest>(body)
            .map_err(|e| OtlpError::Malformed { encoding: "JSON", reason: e.to_string() })?,
    };
    Ok(flatten(request))
}

/// The answer OTLP/HTTP expects, in the request's encoding.
pub fn response_body(export: &DecodedExport, encoding: Encoding) -> Vec<u8> {
    let response = ExportTraceServiceResponse {
        partial_success: (export.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: export.rejected,
            error_message: export.rejection.clone().unwrap_or_default(),
        }),
    };
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

fn flatten(request: ExportTraceServiceRequest) -> DecodedExport {
    let mut export = DecodedExport::default();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| kv.value.as_ref())
            .map(text_of)
            .unwrap_or_else(|| "unknown_service".to_owned());
        for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
            if span.trace_id.len() != 16 || span.span_id.len() != 8 || !matches!(span.parent_span_id.len(), 0 | 8) {
                export.rejected += 1;
                export.rejection = Some(format!(
                    "span {:?}: trace id must be 16 bytes, span ids 8 (got {}, {}, {})",
                    span.name,
                    span.trace_id.len(),
                    span.span_id.len(),
                    span.parent_span_id.len()
                ));
                continue;
            }
            let attributes = attributes_of(&span.attributes);
            let order_id = [ORDER_ID_ATTRIBUTE, "messaging.message.conversation_id"]
                .iter()
                .filter_map(|key| attributes.get(*key).and_then(Value::as_str))
                .find_map(|text| Uuid::parse_str(text).ok());
            let start = i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX);
            let end = i64::try_from(span.end_time_unix_nano).unwrap_or(i64::MAX).max(start);
            export.spans.push(ReceivedSpan {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                service: service.clone(),
                name: span.name,
                kind: i16::try_from(span.kind).unwrap_or(0),
                start_unix_nano: start,
                end_unix_nano: end,
                is_error: span.status.is_some_and(|s| s.code == StatusCode::Error as i32),
                order_id,
                attributes,
            });
        }
    }
    export
}

fn attributes_of(pairs: &[KeyValue]) -> Map<String, Value> {
    pairs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json_of))).collect()
}

fn json_of(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        Some(any_value::Value::ArrayValue(array)) => Value::Array(array.values.iter().map(json_of).collect()),
        Some(any_value::Value::KvlistValue(list)) => Value::Object(attributes_of(&list.values)),
        Some(any_value::Value::BytesValue(bytes)) => Value::String(hex(bytes)),
        Some(any_value::Value::StringValueStrindex(_)) | None => Value::Null,
    }
}

fn text_of(value: &AnyValue) -> String {
    match json_of(value) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn export_with(span: Span) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue("stock".into())) }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn span(order: &str) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "process stock.commands".into(),
            kind: 5,
            start_time_unix_nano: 10,
            end_time_unix_nano: 5,
            attributes: vec![KeyValue {
                key: ORDER_ID_ATTRIBUTE.into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(order.into())) }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_protobuf_export_becomes_flat_spans_with_their_order() {
        let order = Uuid::now_v7();
        let body = export_with(span(&order.to_string())).encode_to_vec();
        let export = decode(&body, Encoding::Protobuf).unwrap();
        let [span] = export.spans.as_slice() else { panic!("{export:?}") };
        assert_eq!((span.service.as_str(), span.kind, span.order_id), ("stock", 5, Some(order)));
        assert_eq!(span.trace_id, "01".repeat(16));
        assert_eq!(span.end_unix_nano, 10, "an end before the start is clamped to it");
    }

    #[test]
    fn the_json_encoding_is_read_with_hex_ids() {
        let body = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "email"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331",
                "name": "send", "kind": 4, "startTimeUnixNano": "1", "endTimeUnixNano": "2"
            }]}]
        }]});
        let export = decode(body.to_string().as_bytes(), Encoding::Json).unwrap();
        assert_eq!(export.spans[0].trace_id, "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(export.spans[0].service, "email");
    }

    #[test]
    fn garbage_is_an_error_and_bad_ids_are_rejected_alone() {
        assert!(decode(b"\xff\xff\xff not protobuf", Encoding::Protobuf).is_err());
        assert!(decode(b"{", Encoding::Json).is_err());
        let mut bad = span("not an order");
        bad.trace_id = vec![1; 3];
        let export = decode(&export_with(bad).encode_to_vec(), Encoding::Protobuf).unwrap();
        assert_eq!((export.spans.len(), export.rejected), (0, 1));
        let response =
            ExportTraceServiceResponse::decode(response_body(&export, Encoding::Protobuf).as_slice()).unwrap();
        assert_eq!(response.partial_success.unwrap().rejected_spans, 1);
    }
}

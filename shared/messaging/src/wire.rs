//! The envelope on the wire: AMQP properties/headers and Kafka record headers.
//!
//! AMQP has native properties for the message id, type, correlation id, reply
//! address, producer (app id) and timestamp; they are used so broker tools show
//! them, and the remaining fields travel as headers. On Kafka every field is a
//! header. The body is the JSON payload on both.

use contracts::envelope::header;
use contracts::{Envelope, EnvelopeError};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use rdkafka::message::{Header, Headers, OwnedHeaders};

pub const CONTENT_TYPE_JSON: &str = "application/json";
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// Headers carried natively as AMQP properties rather than in the header table.
const AMQP_NATIVE: &[&str] =
    &[header::MESSAGE_ID, header::MESSAGE_TYPE, header::CORRELATION_ID, header::REPLY_TO, header::PRODUCER];

/// AMQP properties for a persistent JSON message carrying `envelope`, plus
/// any `extra` headers (dead-letter reason, attempts, …).
pub fn amqp_properties(envelope: &Envelope, extra: &[(&str, String)]) -> BasicProperties {
    let mut table = FieldTable::default();
    for (name, value) in envelope.to_headers() {
        if !AMQP_NATIVE.contains(&name) {
            table.insert(name.into(), AMQPValue::LongString(value.into()));
        }
    }
    for (name, value) in extra {
        table.insert((*name).into(), AMQPValue::LongString(value.clone().into()));
    }
    let mut props = BasicProperties::default()
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_delivery_mode(PERSISTENT)
        .with_message_id(envelope.message_id.to_string().into())
        .with_type(envelope.message_type.clone().into())
        .with_correlation_id(envelope.correlation_id.clone().into())
        .with_app_id(envelope.producer.clone().into())
        .with_timestamp(u64::try_from(envelope.occurred_at.timestamp()).unwrap_or(0))
        .with_headers(table);
    if let Some(reply_to) = &envelope.reply_to {
        props = props.with_reply_to(reply_to.clone().into());
    }
    props
}

/// The value of a header in an AMQP header table, as text.
pub fn amqp_header(props: &BasicProperties, name: &str) -> Option<String> {
    let table = props.headers().as_ref()?;
    amqp_value_text(table.inner().get(&ShortString::from(name))?)
}

fn amqp_value_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        AMQPValue::LongUInt(n) => Some(n.to_string()),
        AMQPValue::ShortInt(n) => Some(n.to_string()),
        AMQPValue::ShortUInt(n) => Some(n.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads the envelope back from AMQP properties and headers.
pub fn envelope_from_amqp(props: &BasicProperties) -> Result<Envelope, EnvelopeError> {
    let native = |value: &Option<ShortString>| value.as_ref().map(|v| v.as_str().to_owned());
    Envelope::from_headers(|name| match name {
        header::MESSAGE_ID => native(props.message_id()),
        header::MESSAGE_TYPE => native(props.kind()),
        header::CORRELATION_ID => native(props.correlation_id()),
        header::REPLY_TO => native(props.reply_to()),
        header::PRODUCER => native(props.app_id()),
        other => amqp_header(props, other),
    })
}

/// All headers of an AMQP message as text pairs (for dead-letter inspection).
pub fn amqp_headers_text(props: &BasicProperties) -> Vec<(String, String)> {
    props
        .headers()
        .as_ref()
        .map(|t| t.inner().iter().filter_map(|(k, v)| amqp_value_text(v).map(|v| (k.as_str().to_owned(), v))).collect())
        .unwrap_or_default()
}

/// Kafka record headers for `envelope`, plus any `extra` headers.
pub fn kafka_headers(envelope: &Envelope, extra: &[(&str, String)]) -> OwnedHeaders {
    let pairs = envelope.to_headers();
    let all = pairs.iter().map(|(k, v)| (*k, v.as_str())).chain(extra.iter().map(|(k, v)| (*k, v.as_str())));
    all.fold(OwnedHeaders::new(), |headers, (key, value)| headers.insert(Header { key, value: Some(value) }))
}

/// The value of a Kafka header, as text (the last one wins if repeated).
pub fn kafka_header<H: Headers>(headers: &H, name: &str) -> Option<String> {
    headers
        .iter()
        .filter(|h| h.key == name)
        .filter_map(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        .last()
}

/// Reads the envelope back from Kafka headers.
pub fn envelope_from_kafka<H: Headers>(headers: Option<&H>) -> Result<Envelope, EnvelopeError> {
    match headers {
        Some(h) => Envelope::from_headers(|name| kafka_header(h, name)),
        None => Err(EnvelopeError::Missing(header::MESSAGE_ID)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn envelope() -> Envelope {
        let mut e = Envelope::new("stock.ReserveStock", Uuid::now_v7().to_string(), "order");
        e.causation_id = Some(Uuid::now_v7());
        e.reply_to = Some("order.replies".into());
        e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        e.aggregate_id = Some("agg-1".into());
        e.sequence = Some(7);
        e
    }

    #[test]
    fn envelope_round_trips_through_amqp_properties() {
        let e = envelope();
        let props = amqp_properties(&e, &[("x-attempts", "3".into())]);
        assert_eq!(props.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some(e.message_id.to_string().as_str()));
        assert_eq!(envelope_from_amqp(&props).unwrap(), e);
        assert_eq!(amqp_header(&props, "x-attempts").as_deref(), Some("3"));
    }

    #[test]
    fn envelope_round_trips_through_kafka_headers() {
        let mut e = envelope();
        e.reply_to = None;
        let headers = kafka_headers(&e, &[("x-dead-letter-reason", "bad".into())]);
        assert_eq!(envelope_from_kafka(Some(&headers)).unwrap(), e);
        assert_eq!(kafka_header(&headers, "x-dead-letter-reason").as_deref(), Some("bad"));
    }

    #[test]
    fn a_message_without_headers_is_rejected_by_name() {
        assert_eq!(envelope_from_kafka::<OwnedHeaders>(None), Err(EnvelopeError::Missing(header::MESSAGE_ID)));
        let props = BasicProperties::default();
        assert_eq!(envelope_from_amqp(&props), Err(EnvelopeError::Missing(header::MESSAGE_ID)));
    }
}

//! The envelope as headers: its schema comes from `contracts::Envelope`'s,
//! with every value as the text `Envelope::to_headers` writes, and the
//! broker mapping of `messaging` (src/wire.rs, src/dead_letter.rs), which
//! tests/wire.rs holds to the real functions.

use crate::SpecError;
use crate::catalogue::Kind;
use contracts::envelope::header;
use contracts::{Envelope, Topology};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// AMQP properties that carry an envelope header (`wire::amqp_properties`):
/// broker tools show them. The other headers travel in the header table.
pub(crate) const AMQP_PROPERTIES: [(&str, &str); 5] = [
    ("message-id", header::MESSAGE_ID),
    ("type", header::MESSAGE_TYPE),
    ("correlation-id", header::CORRELATION_ID),
    ("reply-to", header::REPLY_TO),
    ("app-id", header::PRODUCER),
];

/// The AMQP `timestamp` property: `occurred_at` in whole seconds.
pub(crate) const AMQP_TIMESTAMP_OF: &str = header::OCCURRED_AT;

/// Headers a consumer adds to a dead letter (`messaging::dead_letter`).
pub(crate) const DEAD_LETTER: [(&str, &str); 5] = [
    ("x-dead-letter-reason", "Why the consumer gave up on the message (at most 1000 characters)."),
    ("x-attempts", "How many times handling was attempted (decimal)."),
    ("x-original-destination", "The queue or topic the message was consumed from."),
    ("x-dead-lettered-by", "The consumer that gave up on it."),
    ("x-dead-lettered-at", "When, RFC 3339."),
];

/// Kafka only: set when the dead-letter topic refused the copy.
pub(crate) const PAYLOAD_LEFT_AT: (&str, &str) = (
    "x-payload-left-at",
    "Set when the dead-letter topic refused the copy (too large): the record carries the headers only, \
     and this says where the original still is (`<partition>:<offset>` of the original topic) and why.",
);

/// Header fields that a message of `kind` never carries (`MessageFactory`
/// sets `reply_to` on commands only, `aggregate_id` and `sequence` on events only).
fn absent(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Command => &[header::AGGREGATE_ID, header::SEQUENCE],
        Kind::Reply => &[header::REPLY_TO, header::AGGREGATE_ID, header::SEQUENCE],
        Kind::Event => &[header::REPLY_TO],
    }
}

/// Optional header fields that a message of `kind` always carries.
fn always(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Command => &[header::REPLY_TO],
        // A reply's causation is the command it answers.
        Kind::Reply => &[header::CAUSATION_ID],
        Kind::Event => &[header::AGGREGATE_ID, header::SEQUENCE],
    }
}

/// The envelope's fields as header values: the schema of each field's JSON
/// form turned into the text `to_headers` writes (absent rather than null).
pub(crate) fn fields() -> Result<Map<String, Value>, SpecError> {
    let schema = SchemaSettings::draft07().for_serialize().into_generator().into_root_schema_for::<Envelope>();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .ok_or(SpecError::Envelope("its schema has no properties"))?;
    Ok(properties.iter().map(|(name, field)| (name.clone(), as_text(field))).collect())
}

fn as_text(field: &Value) -> Value {
    let types: Vec<&str> = match field.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let mut text = Map::new();
    text.insert("type".into(), json!("string"));
    // An empty optional header counts as absent (`Envelope::from_headers`).
    text.insert("minLength".into(), json!(1));
    if types.contains(&"integer") {
        let unsigned = field.get("minimum").and_then(Value::as_i64).is_some_and(|m| m >= 0);
        text.insert("pattern".into(), json!(if unsigned { "^[0-9]+$" } else { "^-?[0-9]+$" }));
    } else if let Some(format) = field.get("format") {
        text.insert("format".into(), format.clone());
    }
    if let Some(description) = field.get("description") {
        text.insert("description".into(), description.clone());
    }
    Value::Object(text)
}

/// Headers every envelope has: what `to_headers` writes for a fresh one.
fn required_everywhere() -> Vec<&'static str> {
    Envelope::new("t.T", "c", "p").to_headers().into_iter().map(|(name, _)| name).collect()
}

/// The schema of the headers of every message of `kind`.
pub(crate) fn schema(kind: Kind, topology: &Topology) -> Result<Value, SpecError> {
    let mut properties = fields()?;
    properties.retain(|name, _| !absent(kind).contains(&name.as_str()));
    if kind == Kind::Command {
        // A command may name no other return address (`Topology::reply_queues`).
        if let Some(Value::Object(reply_to)) = properties.get_mut(header::REPLY_TO) {
            reply_to.insert("enum".into(), json!(topology.reply_queues()));
        }
    }
    let mut required: Vec<&str> = required_everywhere();
    required.extend(always(kind));
    required.sort_unstable();
    let (title, what) = match kind {
        Kind::Command => ("Command headers", "a command"),
        Kind::Reply => ("Reply headers", "a reply"),
        Kind::Event => ("Event headers", "an event"),
    };
    Ok(json!({
        "type": "object",
        "title": title,
        "description": format!(
            "The envelope of {what}, every value as text. The names are the same on both brokers. \
             On RabbitMQ five of them travel as AMQP properties (message-id, type, correlation-id, \
             reply-to, app-id) and the others in the header table: see each message's \
             `bindings.amqp.x-properties`. On Kafka all are record headers."
        ),
        "properties": properties,
        "required": required,
    }))
}

/// The AMQP message binding of an envelope-carrying message of `message_type`.
pub(crate) fn amqp_message_binding(message_type: &str, kind: Kind) -> Result<Value, SpecError> {
    let properties: Map<String, Value> = AMQP_PROPERTIES
        .iter()
        .filter(|(_, field)| !absent(kind).contains(field))
        .map(|(property, field)| ((*property).to_owned(), json!(field)))
        .chain([("timestamp".to_owned(), json!(AMQP_TIMESTAMP_OF))])
        .collect();
    let in_table: Vec<String> = fields()?
        .keys()
        .filter(|name| !absent(kind).contains(&name.as_str()))
        .filter(|name| !AMQP_PROPERTIES.iter().any(|(_, field)| field == name))
        .cloned()
        .collect();
    Ok(json!({
        "messageType": message_type,
        "bindingVersion": crate::AMQP_BINDING_VERSION,
        "x-properties": properties,
        "x-header-table": in_table,
    }))
}

/// The headers of a dead letter on RabbitMQ or Kafka.
pub(crate) fn dead_letter_schema(kafka: bool) -> Value {
    let mut properties: Map<String, Value> = DEAD_LETTER
        .iter()
        .map(|(name, description)| ((*name).to_owned(), json!({ "type": "string", "description": description })))
        .collect();
    if kafka {
        properties.insert(PAYLOAD_LEFT_AT.0.into(), json!({ "type": "string", "description": PAYLOAD_LEFT_AT.1 }));
    }
    let (description, required): (&str, Vec<&str>) = if kafka {
        (
            "The record's own headers (its envelope, which may be what was wrong with it), \
             plus the dead-letter headers its consumer group added.",
            DEAD_LETTER.iter().map(|(name, _)| *name).collect(),
        )
    } else {
        (
            "The message's own properties and headers (its envelope, which may be what was wrong with it), \
             plus the dead-letter headers its consumer added; a message RabbitMQ moved itself, past the \
             queue's delivery limit, carries RabbitMQ's x-death and x-first-death-* headers instead.",
            vec![],
        )
    };
    let mut schema = json!({
        "type": "object",
        "title": if kafka { "Kafka dead-letter headers" } else { "RabbitMQ dead-letter headers" },
        "description": description,
        "properties": properties,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

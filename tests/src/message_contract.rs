//! The message API held to the wire: messages captured on RabbitMQ and Kafka
//! during a test (`brokers::FirehoseTap`, `brokers::read_topics`), each
//! checked against the AsyncAPI document (docs/api/asyncapi.json): its
//! channel, its type among that channel's messages, its payload and headers
//! against their schemas, and the AMQP properties or Kafka key, partition
//! and operation bindings as the document states them.
//!
//! The document names every queue and topic with the empty namespace; a
//! test's system prefixes each with `<namespace>.`, so wire names are mapped
//! back through `contracts::Topology` before anything is looked up.

use crate::schema_check::{compile_in_document, escape};
use anyhow::{Context, Result};
use contracts::Topology;
use jsonschema::{Draft, Validator};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Broker {
    RabbitMq,
    Kafka,
}

impl Broker {
    /// The `protocol` of the document's server for this broker.
    fn protocol(self) -> &'static str {
        match self {
            Broker::RabbitMq => "amqp",
            Broker::Kafka => "kafka",
        }
    }
}

impl fmt::Display for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Broker::RabbitMq => "RabbitMQ",
            Broker::Kafka => "Kafka",
        })
    }
}

/// One message as a broker carried it, nothing decoded beyond the wire's
/// own types (so a header sent as a number stays a number).
#[derive(Debug, Clone)]
pub struct WireMessage {
    pub broker: Broker,
    /// The queue (RabbitMQ: the routing key, through the default exchange)
    /// or the topic, with the test's namespace as on the wire.
    pub destination: String,
    /// RabbitMQ: the exchange it was published to (`""`: the default one).
    pub exchange: Option<String>,
    /// RabbitMQ: the basic properties other than `headers`, by their AMQP
    /// names (`message-id`, `type`, `delivery-mode`, …).
    pub properties: Map<String, Value>,
    /// The AMQP header table or the Kafka record headers, in wire order:
    /// text as JSON strings, AMQP numbers as numbers, a Kafka header
    /// without a value as null.
    pub headers: Vec<(String, Value)>,
    /// Kafka: the record key and partition.
    pub key: Option<Vec<u8>>,
    pub partition: Option<i32>,
    pub body: Vec<u8>,
}

impl WireMessage {
    /// The type the message claims: RabbitMQ's `type` property, Kafka's
    /// `message_type` header.
    pub fn claimed_type(&self) -> Option<&str> {
        match self.broker {
            Broker::RabbitMq => self.properties.get("type").and_then(Value::as_str),
            Broker::Kafka => self.headers.iter().rev().find(|(k, _)| k == "message_type").and_then(|(_, v)| v.as_str()),
        }
    }
}

/// A message the document does not describe, and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub broker: Broker,
    pub message_type: String,
    /// The document's channel, or the wire name if none matched.
    pub channel: String,
    pub errors: Vec<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} on {} channel `{}`:", self.message_type, self.broker, self.channel)?;
        for error in &self.errors {
            writeln!(f, "  - {error}")?;
        }
        Ok(())
    }
}

/// What [`Contract::check_all`] found.
#[derive(Debug, Default)]
pub struct Report {
    pub checked: usize,
    /// Messages that passed, by broker and the document's message name.
    pub seen: BTreeMap<(Broker, String), usize>,
    pub refusals: Vec<Refusal>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.refusals.is_empty()
    }

    /// Which of `expected` no valid message on `broker` was.
    pub fn missing<'a>(&self, broker: Broker, expected: &[&'a str]) -> Vec<&'a str> {
        expected.iter().copied().filter(|name| !self.seen.contains_key(&(broker, (*name).to_owned()))).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} messages checked against the AsyncAPI document, {} refused",
            self.checked,
            self.refusals.len()
        )?;
        for ((broker, name), count) in &self.seen {
            writeln!(f, "  {broker:<8} {name}: {count}")?;
        }
        for refusal in &self.refusals {
            write!(f, "{refusal}")?;
        }
        Ok(())
    }
}

/// A message's channel and description in the document, and its envelope
/// as the document names the fields.
struct Found {
    channel: Value,
    channel_name: String,
    message_pointer: String,
    described: Value,
    headers: Map<String, Value>,
}

/// The AsyncAPI document with compiled schemas, for one namespace.
pub struct Contract {
    document: Value,
    /// The test's prefix on every queue and topic (`<namespace>.`).
    namespace: String,
    /// Wire name → the document's channel.
    channels: HashMap<String, String>,
    /// The document with every object schema closed to properties it does
    /// not name (see [`closed`]).
    closed: Value,
    /// Compiled schemas by document (closed or not) and JSON pointer.
    validators: HashMap<(bool, String), Validator>,
}

impl Contract {
    /// The committed document (docs/api/asyncapi.json), the one the
    /// api-specs drift test holds to the code.
    pub fn load(topology: &Topology) -> Result<Contract> {
        let path = xtask::repo_root().join("docs/api/asyncapi.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let document = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Contract::new(document, topology))
    }

    pub fn new(document: Value, topology: &Topology) -> Contract {
        let plain = Topology::default();
        let queues = |t: &Topology| {
            let mut queues = t.command_queues();
            queues.extend(t.command_queues().iter().map(|q| Topology::dead_letter_queue(q)));
            queues
        };
        // Same order on both sides; dead-letter topics also carry the
        // (namespaced) consumer group, so plain prefix stripping would not do.
        let channels = queues(topology)
            .into_iter()
            .zip(queues(&plain))
            .chain(topology.all_topics().into_iter().zip(plain.all_topics()))
            .collect();
        let closed = closed(&document);
        Contract { document, closed, namespace: topology.namespace().to_owned(), channels, validators: HashMap::new() }
    }

    /// Checks every message; the report lists each refusal.
    pub fn check_all<'a>(&mut self, messages: impl IntoIterator<Item = &'a WireMessage>) -> Report {
        let mut report = Report::default();
        for message in messages {
            report.checked += 1;
            match self.check(message) {
                Ok(name) => *report.seen.entry((message.broker, name)).or_default() += 1,
                Err(refusal) => report.refusals.push(refusal),
            }
        }
        report
    }

    /// The document's name for `message` if it matches its description.
    pub fn check(&mut self, message: &WireMessage) -> Result<String, Refusal> {
        let claimed = message.claimed_type().unwrap_or("(no type)").to_owned();
        let refuse = |channel: &str, errors: Vec<String>| Refusal {
            broker: message.broker,
            message_type: claimed.clone(),
            channel: channel.to_owned(),
            errors,
        };
        let Some(channel_name) = self.channels.get(&message.destination).cloned() else {
            return Err(refuse(&message.destination, vec!["no channel of the document is this queue or topic".into()]));
        };
        let channel_pointer = format!("/channels/{}", escape(&channel_name));
        let Some(channel) = self.document.pointer(&channel_pointer).cloned() else {
            return Err(refuse(&channel_name, vec![format!("the document has no channel `{channel_name}`")]));
        };
        let mut errors = Vec::new();
        self.check_server(&channel, message.broker, &mut errors);
        let message_pointer = match self.select(&channel, message) {
            Ok(pointer) => pointer,
            Err(error) => {
                errors.push(error);
                return Err(refuse(&channel_name, errors));
            }
        };
        let described = self.document.pointer(&message_pointer).cloned().unwrap_or(Value::Null);
        let name = described["name"].as_str().unwrap_or(&claimed).to_owned();
        let dead_letter = name.ends_with(".DeadLetter");

        let headers = match message.broker {
            Broker::RabbitMq => self.amqp_headers(&described, message, &mut errors),
            Broker::Kafka => self.kafka_headers(&message_pointer, dead_letter, message, &mut errors),
        };
        let headers = self.without_namespace(headers, &mut errors);
        if described.get("headers").is_some() {
            self.validate(
                &format!("{message_pointer}/headers"),
                &Value::Object(headers.clone()),
                "headers",
                &mut errors,
            );
        }
        match serde_json::from_slice::<Value>(&message.body) {
            Ok(payload) => {
                if described.get("payload").is_some() {
                    let pointer = format!("{message_pointer}/payload");
                    let before = errors.len();
                    self.validate(&pointer, &payload, "payload", &mut errors);
                    if errors.len() == before {
                        self.validate_closed(
                            &pointer,
                            &payload,
                            "payload, a field the document does not name",
                            &mut errors,
                        );
                    }
                }
            }
            // A dead letter's body is the original's, byte for byte, whatever it was.
            Err(e) if !dead_letter => errors.push(format!("payload: the body is not JSON: {e}")),
            Err(_) => {}
        }
        let found = Found { channel, channel_name, message_pointer, described, headers };
        match message.broker {
            Broker::RabbitMq => self.check_amqp(&found, message, &mut errors),
            Broker::Kafka => self.check_kafka(&found, message, &mut errors),
        }
        if self.sending_operations(&found.channel_name, &found.message_pointer).is_empty() {
            errors.push(format!("no operation of the document sends {name} on `{}`", found.channel_name));
        }
        if errors.is_empty() { Ok(name) } else { Err(refuse(&found.channel_name, errors)) }
    }

    /// The channel is on a server of the broker that carried the message.
    fn check_server(&self, channel: &Value, broker: Broker, errors: &mut Vec<String>) {
        let protocols: Vec<&str> = channel["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|server| self.resolve(server))
            .filter_map(|(_, server)| server["protocol"].as_str())
            .collect();
        if !protocols.contains(&broker.protocol()) {
            errors.push(format!("the channel is on {protocols:?}, the message travelled on {broker}"));
        }
    }

    /// The pointer of the channel's message that `message` is: by the AMQP
    /// binding's `messageType` on RabbitMQ, by name (the `message_type`
    /// header's value) on Kafka. A dead-letter channel's one message is any
    /// message that was dead-lettered there.
    fn select(&self, channel: &Value, message: &WireMessage) -> Result<String, String> {
        let candidates: Vec<(String, &Value)> = channel["messages"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|reference| self.resolve(reference))
            .collect();
        let claimed = message.claimed_type();
        let matching: Vec<&(String, &Value)> = candidates
            .iter()
            .filter(|(_, described)| {
                let declared = match message.broker {
                    Broker::RabbitMq => described.pointer("/bindings/amqp/messageType"),
                    Broker::Kafka => described.get("name"),
                };
                claimed.is_some() && declared.and_then(Value::as_str) == claimed
            })
            .collect();
        match (matching.as_slice(), candidates.as_slice()) {
            ([(pointer, _)], _) => Ok(pointer.clone()),
            ([], [(pointer, only)]) if only["name"].as_str().is_some_and(|n| n.ends_with(".DeadLetter")) => {
                Ok(pointer.clone())
            }
            ([], _) => {
                let names: Vec<&str> = candidates.iter().filter_map(|(_, m)| m["name"].as_str()).collect();
                Err(format!(
                    "unknown message type {} on this channel (it carries {})",
                    claimed.map_or("(none)".to_owned(), |c| format!("`{c}`")),
                    names.join(", ")
                ))
            }
            (several, _) => Err(format!("{} messages of the channel claim this type", several.len())),
        }
    }

    /// The envelope as the document names it, from the AMQP properties its
    /// binding maps (`x-properties`) and the header table (`x-header-table`).
    fn amqp_headers(&self, described: &Value, message: &WireMessage, errors: &mut Vec<String>) -> Map<String, Value> {
        let mut headers = Map::new();
        let mapped = described.pointer("/bindings/amqp/x-properties").and_then(Value::as_object);
        let in_table: Option<Vec<&str>> = described
            .pointer("/bindings/amqp/x-header-table")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect());
        for (property, field) in mapped.into_iter().flatten() {
            // `timestamp` repeats occurred_at in whole seconds (check_amqp).
            if property == "timestamp" {
                continue;
            }
            if let (Some(field), Some(value)) = (field.as_str(), message.properties.get(property)) {
                headers.insert(field.to_owned(), value.clone());
            }
        }
        for (name, value) in &message.headers {
            if let Some(in_table) = in_table.as_ref().filter(|t| !t.contains(&name.as_str())) {
                match mapped.into_iter().flatten().find(|(_, f)| f.as_str() == Some(name)) {
                    Some((property, _)) => {
                        errors.push(format!("header table: `{name}` travels as the `{property}` property"));
                    }
                    None => errors.push(format!(
                        "header table: `{name}` is not one the document names ({})",
                        in_table.join(", ")
                    )),
                }
            }
            if headers.insert(name.clone(), value.clone()).is_some() {
                errors.push(format!("header table: `{name}` twice"));
            }
        }
        headers
    }

    /// The Kafka record headers as an object; every one must be named by
    /// the message's headers schema (a dead letter keeps the original's too).
    fn kafka_headers(
        &self,
        message_pointer: &str,
        dead_letter: bool,
        message: &WireMessage,
        errors: &mut Vec<String>,
    ) -> Map<String, Value> {
        let named = self.schema_properties(&format!("{message_pointer}/headers"));
        let mut headers = Map::new();
        for (name, value) in &message.headers {
            if !dead_letter && !named.contains(name.as_str()) {
                errors.push(format!("headers: `{name}` is not named by the message's headers schema"));
            }
            if headers.insert(name.clone(), value.clone()).is_some() {
                errors.push(format!("headers: `{name}` twice"));
            }
        }
        headers
    }

    /// The property names a schema declares, through `$ref` and `allOf`.
    fn schema_properties(&self, pointer: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut pending = vec![pointer.to_owned()];
        while let Some(pointer) = pending.pop() {
            let Some(schema) = self.document.pointer(&pointer) else { continue };
            if let Some(Value::String(reference)) = schema.get("$ref") {
                pending.push(reference.trim_start_matches('#').to_owned());
            }
            names.extend(schema["properties"].as_object().into_iter().flat_map(|p| p.keys().cloned()));
            let parts = schema["allOf"].as_array().map_or(0, Vec::len);
            pending.extend((0..parts).map(|i| format!("{pointer}/allOf/{i}")));
        }
        names
    }

    /// The document describes the empty namespace: a return address names
    /// the test's queue, so its prefix is taken off (and must be there).
    fn without_namespace(&self, mut headers: Map<String, Value>, errors: &mut Vec<String>) -> Map<String, Value> {
        if let Some(Value::String(reply_to)) = headers.get_mut("reply_to") {
            match reply_to.strip_prefix(&self.namespace) {
                Some(plain) => *reply_to = plain.to_owned(),
                None => errors.push(format!("headers: reply_to `{reply_to}` is not a queue of the test's namespace")),
            }
        }
        headers
    }

    /// AMQP: the default exchange for a queue channel, the content type,
    /// the properties the sending operation's binding fixes, the timestamp,
    /// and no property the document does not mention.
    fn check_amqp(&self, found: &Found, message: &WireMessage, errors: &mut Vec<String>) {
        let Found { channel, channel_name, message_pointer, described, headers } = found;
        if channel.pointer("/bindings/amqp/is").and_then(Value::as_str) == Some("queue")
            && message.exchange.as_deref() != Some("")
        {
            errors.push(format!(
                "published to exchange {:?}; a queue channel is reached through the default exchange",
                message.exchange
            ));
        }
        let content_type = described["contentType"].as_str().or(self.document["defaultContentType"].as_str());
        if message.properties.get("content-type").and_then(Value::as_str) != content_type {
            errors.push(format!(
                "property content-type is {}, the document says {content_type:?}",
                message.properties.get("content-type").map_or("absent".into(), Value::to_string)
            ));
        }
        let mut documented: BTreeSet<&str> = BTreeSet::from(["content-type"]);
        if let Some(mapped) = described.pointer("/bindings/amqp/x-properties").and_then(Value::as_object) {
            documented.extend(mapped.keys().map(String::as_str));
        }
        if described.pointer("/bindings/amqp/contentEncoding").is_some() {
            documented.insert("content-encoding");
        }
        for operation in self.sending_operations(channel_name, message_pointer) {
            let Some(binding) = operation.pointer("/bindings/amqp") else { continue };
            if let Some(mode) = binding.get("deliveryMode") {
                documented.insert("delivery-mode");
                if message.properties.get("delivery-mode") != Some(mode) {
                    errors.push(format!(
                        "property delivery-mode is {}, the sending operation's binding says {mode}",
                        message.properties.get("delivery-mode").map_or("absent".into(), Value::to_string)
                    ));
                }
            }
            if binding.get("timestamp") == Some(&json!(true)) && !message.properties.contains_key("timestamp") {
                errors.push("no timestamp property, which the sending operation's binding promises".into());
            }
        }
        let undocumented: Vec<&String> =
            message.properties.keys().filter(|p| !documented.contains(p.as_str())).collect();
        if !undocumented.is_empty() {
            errors.push(format!("properties the document does not mention: {undocumented:?}"));
        }
        // x-properties maps `timestamp` to occurred_at: its whole seconds.
        let of = described.pointer("/bindings/amqp/x-properties/timestamp").and_then(Value::as_str);
        if let (Some(field), Some(timestamp)) = (of, message.properties.get("timestamp")) {
            let occurred =
                headers.get(field).and_then(Value::as_str).and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok());
            if let Some(occurred) = occurred
                && timestamp.as_i64() != Some(occurred.timestamp())
            {
                errors.push(format!(
                    "property timestamp is {timestamp}, {field} is {occurred} ({} s)",
                    occurred.timestamp()
                ));
            }
        }
    }

    /// Kafka: the key as the binding's schema says, equal to the message's
    /// correlation id (`correlationId`: the order id) and to the aggregate
    /// the key's description names; the partition within the topic's.
    fn check_kafka(&mut self, found: &Found, message: &WireMessage, errors: &mut Vec<String>) {
        let Found { channel, message_pointer, described, headers, .. } = found;
        if let Some(partitions) = channel.pointer("/bindings/kafka/partitions").and_then(Value::as_i64) {
            match message.partition {
                Some(p) if (0..partitions).contains(&i64::from(p)) => {}
                other => errors.push(format!("partition {other:?} is not one of the topic's {partitions}")),
            }
        }
        if described.pointer("/bindings/kafka/key").is_none() {
            return;
        }
        let key = match message.key.as_deref().map(std::str::from_utf8) {
            None => return errors.push("key: the record has none; the binding describes one".into()),
            Some(Err(e)) => return errors.push(format!("key: not UTF-8: {e}")),
            Some(Ok(key)) => key,
        };
        self.validate(&format!("{message_pointer}/bindings/kafka/key"), &json!(key), "key", errors);
        let payload: Value = serde_json::from_slice(&message.body).unwrap_or(Value::Null);
        if let Some((_, correlation)) = described.get("correlationId").and_then(|c| self.resolve(c)) {
            let location = correlation["location"].as_str().unwrap_or_default();
            let value = if let Some(pointer) = location.strip_prefix("$message.header#") {
                Value::Object(headers.clone()).pointer(pointer).cloned()
            } else if let Some(pointer) = location.strip_prefix("$message.payload#") {
                payload.pointer(pointer).cloned()
            } else {
                None
            };
            if value.as_ref().and_then(Value::as_str) != Some(key) {
                errors.push(format!("key `{key}` is not the correlation id ({location} is {value:?})"));
            }
        }
        let names_aggregate = described
            .pointer("/bindings/kafka/key/description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.contains("aggregate_id"));
        if names_aggregate && headers.get("aggregate_id").and_then(Value::as_str) != Some(key) {
            errors.push(format!("key `{key}` is not the aggregate_id header ({:?})", headers.get("aggregate_id")));
        }
    }

    /// The document's operations that send the message at `message_pointer`
    /// on `channel_name`.
    fn sending_operations(&self, channel_name: &str, message_pointer: &str) -> Vec<&Value> {
        let channel_ref = format!("#/channels/{}", escape(channel_name));
        self.document["operations"]
            .as_object()
            .into_iter()
            .flat_map(|ops| ops.values())
            .filter(|op| op["action"] == "send" && op["channel"]["$ref"] == channel_ref.as_str())
            .filter(|op| {
                op["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| self.resolve(m).is_some_and(|(pointer, _)| pointer == message_pointer))
            })
            .collect()
    }

    /// Follows local `$ref`s to a value and its pointer.
    fn resolve<'a>(&'a self, value: &'a Value) -> Option<(String, &'a Value)> {
        let mut pointer = String::new();
        let mut current = value;
        for _ in 0..8 {
            match current.get("$ref").and_then(Value::as_str) {
                Some(reference) => {
                    pointer = reference.strip_prefix('#')?.to_owned();
                    current = self.document.pointer(&pointer)?;
                }
                None => return Some((pointer, current)),
            }
        }
        None
    }

    /// Validates `instance` against the schema at `pointer`; every error,
    /// with where in the instance, goes to `errors` under `part`.
    fn validate(&mut self, pointer: &str, instance: &Value, part: &str, errors: &mut Vec<String>) {
        self.validate_in(false, pointer, instance, part, errors);
    }

    /// Like [`Self::validate`], against the [`closed`] document.
    fn validate_closed(&mut self, pointer: &str, instance: &Value, part: &str, errors: &mut Vec<String>) {
        self.validate_in(true, pointer, instance, part, errors);
    }

    fn validate_in(&mut self, closed: bool, pointer: &str, instance: &Value, part: &str, errors: &mut Vec<String>) {
        let key = (closed, pointer.to_owned());
        if !self.validators.contains_key(&key) {
            // AsyncAPI 3.0's default schema format is a superset of JSON Schema draft 7.
            match compile_in_document(if closed { &self.closed } else { &self.document }, pointer, Draft::Draft7) {
                Ok(validator) => {
                    self.validators.insert(key.clone(), validator);
                }
                Err(e) => return errors.push(format!("{part}: {e}")),
            }
        }
        if let Some(validator) = self.validators.get(&key) {
            for error in validator.iter_errors(instance) {
                let at = error.instance_path().to_string();
                errors.push(format!("{part}{}: {error}", if at.is_empty() { String::new() } else { format!(" {at}") }));
            }
        }
    }
}

/// The document with `additionalProperties: false` on every object schema
/// of `components.schemas` that names properties and says nothing of others.
/// The document leaves payloads open (serde ignores unknown fields), so a
/// field a producer adds without documenting it would pass the plain check;
/// against this copy it is named. Only payloads are checked this way: the
/// headers schemas combine parts with `allOf`, which closing would break, and
/// `check` names undocumented headers itself.
fn closed(document: &Value) -> Value {
    fn close(schema: &mut Value) {
        match schema {
            Value::Object(object) => {
                if object.get("properties").is_some_and(Value::is_object)
                    && !object.contains_key("additionalProperties")
                {
                    object.insert("additionalProperties".into(), Value::Bool(false));
                }
                object.values_mut().for_each(close);
            }
            Value::Array(items) => items.iter_mut().for_each(close),
            _ => {}
        }
    }
    let mut closed = document.clone();
    if let Some(schemas) = closed.pointer_mut("/components/schemas") {
        close(schemas);
    }
    closed
}

#[cfg(test)]
mod tests {
    //! Negative controls: the check refuses what the document does not
    //! describe, so a passing flow test means something.

    use super::*;

    fn contract() -> Contract {
        Contract::load(&Topology::new("t1.")).expect("the committed AsyncAPI document")
    }

    /// A ReserveStock command as the firehose shows one of namespace `t1.`.
    fn reserve_stock() -> WireMessage {
        let order = "0190b2a4-5e10-7000-8000-000000000001";
        let text = |v: &str| json!(v);
        WireMessage {
            broker: Broker::RabbitMq,
            destination: "t1.stock.commands".into(),
            exchange: Some(String::new()),
            properties: [
                ("content-type", text("application/json")),
                ("delivery-mode", json!(2)),
                ("message-id", text("0190b2a4-5e10-7000-8000-000000010000")),
                ("type", text("stock.ReserveStock")),
                ("correlation-id", text(order)),
                ("reply-to", text("t1.order.replies")),
                ("app-id", text("order")),
                ("timestamp", json!(1_767_268_800)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            headers: vec![
                ("occurred_at".into(), text("2026-01-01T12:00:00.000000Z")),
                ("schema_version".into(), text("1")),
                ("causation_id".into(), text("0190b2a4-5e10-7000-8000-000000000004")),
            ],
            key: None,
            partition: None,
            body: json!({"order_id": order, "lines": [{"sku": "SKU-002", "quantity": 1}]}).to_string().into_bytes(),
        }
    }

    /// An OrderPaid event on the namespace's `orders` topic.
    fn order_paid() -> WireMessage {
        let order = "0190b2a4-5e10-7000-8000-000000000001";
        let headers = [
            ("message_id", "0190b2a4-5e10-7000-8000-00000001000b"),
            ("message_type", "orders.OrderPaid"),
            ("correlation_id", order),
            ("producer", "order"),
            ("occurred_at", "2026-01-01T12:00:00.000000Z"),
            ("schema_version", "1"),
            ("aggregate_id", order),
            ("sequence", "2"),
        ];
        WireMessage {
            broker: Broker::Kafka,
            destination: "t1.orders".into(),
            exchange: None,
            properties: Map::new(),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect(),
            key: Some(order.as_bytes().to_vec()),
            partition: Some(1),
            body: json!({"order_id": order, "customer_id": "c-1", "payment_id": order, "amount_cents": 6249})
                .to_string()
                .into_bytes(),
        }
    }

    fn refused(contract: &mut Contract, message: &WireMessage) -> String {
        match contract.check(message) {
            Ok(name) => panic!("{name} passed: {message:?}"),
            Err(refusal) => refusal.to_string(),
        }
    }

    #[test]
    fn messages_as_the_document_describes_them_pass() {
        let mut contract = contract();
        assert_eq!(contract.check(&reserve_stock()).map_err(|r| r.to_string()).unwrap(), "stock.ReserveStock");
        assert_eq!(contract.check(&order_paid()).map_err(|r| r.to_string()).unwrap(), "orders.OrderPaid");
    }

    #[test]
    fn a_payload_field_of_the_wrong_type_is_refused() {
        let mut contract = contract();
        let mut message = reserve_stock();
        message.body =
            json!({"order_id": "0190b2a4-5e10-7000-8000-000000000001", "lines": [{"sku": "SKU-002", "quantity": "1"}]})
                .to_string()
                .into_bytes();
        let refusal = refused(&mut contract, &message);
        assert!(refusal.contains("payload /lines/0/quantity"), "{refusal}");
        assert!(refusal.contains("stock.ReserveStock on RabbitMQ channel `stock.commands`"), "{refusal}");
    }

    #[test]
    fn a_missing_required_header_is_refused() {
        let mut contract = contract();
        let mut message = order_paid();
        message.headers.retain(|(k, _)| k != "sequence");
        let refusal = refused(&mut contract, &message);
        assert!(refusal.contains("headers: \"sequence\" is a required property"), "{refusal}");
        // On RabbitMQ too: causation_id travels in the header table.
        let mut message = reserve_stock();
        message.properties.remove("reply-to");
        let refusal = refused(&mut contract, &message);
        assert!(refusal.contains("\"reply_to\" is a required property"), "{refusal}");
    }

    #[test]
    fn an_unknown_type_or_a_type_on_the_wrong_channel_is_refused() {
        let mut contract = contract();
        let mut message = reserve_stock();
        message.properties.insert("type".into(), json!("stock.ReserveEverything"));
        let refusal = refused(&mut contract, &message);
        assert!(refusal.contains("unknown message type `stock.ReserveEverything`"), "{refusal}");
        let mut message = reserve_stock();
        message.destination = "t1.payment.commands".into();
        let refusal = refused(&mut contract, &message);
        assert!(refusal.contains("unknown message type `stock.ReserveStock`"), "{refusal}");
    }

    #[test]
    fn wire_details_the_bindings_fix_are_checked() {
        let mut contract = contract();
        let wrong = |change: fn(&mut WireMessage)| {
            let mut message = reserve_stock();
            change(&mut message);
            message
        };
        for (message, expected) in [
            (wrong(|m| m.headers.push(("message_id".into(), json!("x")))), "travels as the `message-id` property"),
            (wrong(|m| m.headers.push(("x-extra".into(), json!("x")))), "`x-extra` is not one the document names"),
            (wrong(|m| m.headers[1].1 = json!(1)), "headers /schema_version: 1 is not of type \"string\""),
            (wrong(|m| _ = m.properties.insert("delivery-mode".into(), json!(1))), "delivery-mode is 1"),
            (wrong(|m| _ = m.properties.insert("timestamp".into(), json!(0))), "property timestamp is 0"),
            (wrong(|m| _ = m.properties.insert("reply-to".into(), json!("order.replies"))), "not a queue of the test"),
            (wrong(|m| m.exchange = Some("amq.direct".into())), "through the default exchange"),
            (wrong(|m| m.destination = "t2.stock.commands".into()), "no channel of the document"),
            (wrong(|m| m.body = b"not json".to_vec()), "the body is not JSON"),
            (
                wrong(|m| {
                    m.body = json!({"order_id": "0190b2a4-5e10-7000-8000-000000000001", "lines": [], "priority": 1})
                        .to_string()
                        .into_bytes()
                }),
                "payload, a field the document does not name: Additional properties are not allowed ('priority'",
            ),
        ] {
            let refusal = refused(&mut contract, &message);
            assert!(refusal.contains(expected), "expected {expected:?} in:\n{refusal}");
        }
        let mut message = order_paid();
        message.key = Some(b"0190b2a4-5e10-7000-8000-000000000009".to_vec());
        let refusal = refused(&mut contract, &message);
        assert!(refusal.contains("is not the correlation id"), "{refusal}");
        message.key = Some(b"not-a-uuid".to_vec());
        assert!(refused(&mut contract, &message).contains("key: \"not-a-uuid\" is not a \"uuid\""));
        let mut message = order_paid();
        message.headers.push(("x-extra".into(), json!("x")));
        assert!(refused(&mut contract, &message).contains("`x-extra` is not named"));
    }
}

//! The document's own consistency, against `contracts` rather than against
//! the generator: every queue and topic is a channel, every message type a
//! message with a payload schema, every reference resolves.

use contracts::Topology;
use contracts::catalogue::ALL_MESSAGE_TYPES;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::OnceLock;

const DEAD_LETTER_MESSAGES: [&str; 2] = ["rabbitmq.DeadLetter", "kafka.DeadLetter"];

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| api_specs::document().expect("the document builds"))
}

fn object<'a>(value: &'a Value, pointer: &str) -> &'a serde_json::Map<String, Value> {
    value.pointer(pointer).and_then(Value::as_object).unwrap_or_else(|| panic!("{pointer} is not an object"))
}

/// The target of a local `$ref` (`#/a/b`), and the pointer it names.
fn resolve<'a>(reference: &'a Value, context: &str) -> (&'a str, &'static Value) {
    let target = reference["$ref"].as_str().unwrap_or_else(|| panic!("{context}: not a $ref: {reference}"));
    let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{context}: {target} is not local"));
    let value = document().pointer(pointer).unwrap_or_else(|| panic!("{context}: {target} does not exist"));
    (target, value)
}

fn expected_channels(topology: &Topology) -> BTreeSet<String> {
    let queues = topology.command_queues();
    let dead_letter_queues = queues.iter().map(|q| Topology::dead_letter_queue(q)).collect::<Vec<_>>();
    queues.into_iter().chain(dead_letter_queues).chain(topology.all_topics()).collect()
}

#[test]
fn every_queue_and_topic_of_the_topology_is_a_channel_and_nothing_else_is() {
    let topology = Topology::default();
    let channels = object(document(), "/channels");
    let names: BTreeSet<String> = channels.keys().cloned().collect();
    assert_eq!(names, expected_channels(&topology));
    let queues: BTreeSet<String> =
        topology.command_queues().iter().flat_map(|q| [q.clone(), Topology::dead_letter_queue(q)]).collect();
    for (name, channel) in channels {
        assert_eq!(channel["address"], name.as_str(), "channel {name}'s address");
        let server = if queues.contains(name) { "#/servers/rabbitmq" } else { "#/servers/kafka" };
        assert_eq!(channel["servers"], serde_json::json!([{ "$ref": server }]), "channel {name}'s broker");
        let binding = if queues.contains(name) { "/bindings/amqp/queue/name" } else { "/bindings/kafka/topic" };
        assert_eq!(channel.pointer(binding), Some(&Value::from(name.as_str())), "channel {name}'s binding");
        assert!(!object(channel, "/messages").is_empty(), "channel {name} has no message");
    }
}

#[test]
fn every_message_type_of_the_catalogue_has_a_message_with_a_payload_schema() {
    let messages = object(document(), "/components/messages");
    let names: BTreeSet<&str> = messages.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = ALL_MESSAGE_TYPES.iter().copied().chain(DEAD_LETTER_MESSAGES).collect();
    assert_eq!(names, expected);
    for message_type in ALL_MESSAGE_TYPES {
        let message = &messages[*message_type];
        assert_eq!(message["name"], *message_type);
        let (target, schema) = resolve(&message["payload"], message_type);
        assert_eq!(schema["type"], "object", "{message_type}'s payload {target}");
        let properties = object(schema, "/properties");
        assert!(properties.contains_key("order_id"), "{message_type}: every payload names its order");
        let required: BTreeSet<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        assert_eq!(required, properties.keys().map(String::as_str).collect(), "{message_type}: every field travels");
        let (_, headers) = resolve(&message["headers"]["allOf"][0], message_type);
        assert!(object(headers, "/properties").contains_key("message_id"), "{message_type}'s headers");
        let example = &message["examples"][0];
        assert_eq!(example["headers"]["message_type"], *message_type, "{message_type}'s example");
        assert!(example["payload"].is_object(), "{message_type} has an example payload");
    }
}

#[test]
fn every_channel_message_is_a_component_message() {
    for (name, channel) in object(document(), "/channels") {
        for (key, reference) in object(channel, "/messages") {
            let (target, message) = resolve(reference, &format!("channel {name}"));
            assert_eq!(target, format!("#/components/messages/{key}"));
            assert_eq!(message["name"], key.as_str());
        }
    }
}

/// A message reference of an operation must point into the operation's channel.
fn check_messages(operation: &Value, channel_ref: &str, context: &str) -> Vec<&'static Value> {
    let messages = operation["messages"].as_array().unwrap_or_else(|| panic!("{context}: no messages"));
    assert!(!messages.is_empty(), "{context}: no messages");
    messages
        .iter()
        .map(|reference| {
            let (target, message) = resolve(reference, context);
            assert!(
                target.starts_with(&format!("{channel_ref}/messages/")),
                "{context}: {target} is not in {channel_ref}"
            );
            resolve(message, context).1
        })
        .collect()
}

#[test]
fn every_operation_references_an_existing_channel_and_its_messages() {
    let operations = object(document(), "/operations");
    for (id, operation) in operations {
        let (channel_ref, channel) = resolve(&operation["channel"], id);
        assert!(channel_ref.starts_with("#/channels/") && channel.is_object(), "{id}: channel {channel_ref}");
        assert!(matches!(operation["action"].as_str(), Some("send" | "receive")), "{id}: action");
        let messages = check_messages(operation, channel_ref, id);
        let commands = messages.iter().filter(|m| m["tags"][0]["name"] == "command").count();
        if let Some(reply) = operation.get("reply") {
            let (reply_channel, _) = resolve(&reply["channel"], &format!("{id}'s reply"));
            for message in check_messages(reply, reply_channel, &format!("{id}'s reply")) {
                assert_eq!(message["tags"][0]["name"], "reply", "{id}: a reply answers with replies");
            }
        } else {
            assert_eq!(commands, 0, "{id}: a command's operation says what replies to it");
        }
    }
}

#[test]
fn every_channel_is_sent_to_and_received_from_and_every_message_has_one_sender() {
    let operations = object(document(), "/operations");
    for name in object(document(), "/channels").keys() {
        let reference = format!("#/channels/{name}");
        let actions: BTreeSet<&str> = operations
            .values()
            .filter(|o| o["channel"]["$ref"] == reference.as_str())
            .filter_map(|o| o["action"].as_str())
            .collect();
        assert_eq!(actions, BTreeSet::from(["receive", "send"]), "channel {name}");
    }
    for message_type in ALL_MESSAGE_TYPES {
        let senders: Vec<&String> = operations
            .iter()
            .filter(|(id, o)| o["action"] == "send" && !id.contains(".replay."))
            .filter(|(_, o)| {
                o["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["$ref"].as_str().is_some_and(|r| r.ends_with(&format!("/messages/{message_type}"))))
            })
            .map(|(id, _)| id)
            .collect();
        assert_eq!(senders.len(), 1, "{message_type} has one producer: {senders:?}");
    }
}

#[test]
fn events_are_keyed_by_order_id_and_consumed_by_the_subscribed_groups() {
    let topology = Topology::default();
    let operations = object(document(), "/operations");
    for (service, topics) in topology.subscriptions() {
        let group = topology.consumer_group(service);
        for topic in topics {
            let receives = operations.values().filter(|o| {
                o["action"] == "receive"
                    && o["channel"]["$ref"] == format!("#/channels/{topic}").as_str()
                    && o.pointer("/bindings/kafka/groupId/const") == Some(&Value::from(group.as_str()))
            });
            assert!(receives.count() > 0, "group {group} subscribes to {topic} but receives nothing from it");
        }
    }
    for topic in topology.event_topics() {
        for reference in object(document(), &format!("/channels/{topic}/messages")).values() {
            let (target, message) = resolve(reference, &topic);
            assert_eq!(message.pointer("/bindings/kafka/key/format"), Some(&Value::from("uuid")), "{target}'s key");
        }
    }
}

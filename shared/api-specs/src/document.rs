//! Assembles the AsyncAPI 3.0 document: servers, one channel per queue and
//! topic of the topology (dead-letter ones included), the operations of every
//! service, and the messages with their schemas under `components`.

use crate::catalogue::{self, Entry, Kind};
use crate::{AMQP_BINDING_VERSION, ASYNCAPI_VERSION, KAFKA_BINDING_VERSION, SpecError, examples, headers};
use contracts::Topology;
use contracts::topology::EVENT_TOPIC_PARTITIONS;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// Past this many deliveries RabbitMQ moves a command or reply to its
/// dead-letter queue itself (`messaging::amqp::DELIVERY_LIMIT`).
pub(crate) const AMQP_DELIVERY_LIMIT: i64 = 10;
/// How dead-letter topics are created (`messaging::kafka::DEAD_LETTER_TOPIC_CONFIG`):
/// kept until replayed or purged.
pub(crate) const DEAD_LETTER_TOPIC_RETENTION_MS: i64 = -1;
/// The dead-letter tools (shared/dead-letters), which read, replay and purge.
const DEAD_LETTER_TOOL: &str = "dead-letters";
const AMQP_DEAD_LETTER: &str = "rabbitmq.DeadLetter";
const KAFKA_DEAD_LETTER: &str = "kafka.DeadLetter";
const ORDER_ID_CORRELATION: &str = "orderId";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Rabbitmq,
    Kafka,
}

impl Broker {
    fn server(self) -> &'static str {
        match self {
            Broker::Rabbitmq => "rabbitmq",
            Broker::Kafka => "kafka",
        }
    }
}

/// A queue or topic of the topology.
struct Channel {
    address: String,
    broker: Broker,
    /// Dead-letter channels: the channel whose consumer dead-letters here,
    /// and that consumer (a service; on Kafka also its group).
    dead_letters_of: Option<(String, String)>,
}

fn channels(topology: &Topology, entries: &[Entry]) -> Vec<Channel> {
    let mut channels = Vec::new();
    for queue in topology.command_queues() {
        let consumer = handlers_on(entries, &queue).into_iter().collect::<Vec<_>>().join(", ");
        channels.push(Channel {
            address: Topology::dead_letter_queue(&queue),
            broker: Broker::Rabbitmq,
            dead_letters_of: Some((queue.clone(), consumer)),
        });
        channels.push(Channel { address: queue, broker: Broker::Rabbitmq, dead_letters_of: None });
    }
    for topic in topology.event_topics() {
        channels.push(Channel { address: topic, broker: Broker::Kafka, dead_letters_of: None });
    }
    for (service, topics) in topology.subscriptions() {
        let group = topology.consumer_group(service);
        for topic in topics {
            channels.push(Channel {
                address: Topology::dead_letter_topic(&topic, &group),
                broker: Broker::Kafka,
                dead_letters_of: Some((topic, service.to_owned())),
            });
        }
    }
    channels.sort_by(|a, b| a.address.cmp(&b.address));
    channels
}

fn handlers_on(entries: &[Entry], channel: &str) -> BTreeSet<&'static str> {
    entries.iter().filter(|e| e.channel == channel).flat_map(|e| e.handlers.iter().copied()).collect()
}

fn producers_on(entries: &[Entry], channel: &str) -> BTreeSet<&'static str> {
    entries.iter().filter(|e| e.channel == channel).map(|e| e.producer).collect()
}

fn channel_ref(address: &str) -> Value {
    json!({ "$ref": format!("#/channels/{address}") })
}

fn channel_message_ref(address: &str, message: &str) -> Value {
    json!({ "$ref": format!("#/channels/{address}/messages/{message}") })
}

fn list(names: &BTreeSet<&str>) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// The whole document, from the code.
pub fn document() -> Result<Value, SpecError> {
    let topology = Topology::default();
    let mut generator = SchemaSettings::draft07()
        .for_serialize()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .into_generator();
    let entries = catalogue::entries(&topology, &mut generator)?;
    let mut schemas = generator.take_definitions(true);
    let channels = channels(&topology, &entries);

    let headers = [
        ("CommandHeaders", headers::schema(Kind::Command, &topology)?),
        ("ReplyHeaders", headers::schema(Kind::Reply, &topology)?),
        ("EventHeaders", headers::schema(Kind::Event, &topology)?),
        ("RabbitmqDeadLetterHeaders", headers::dead_letter_schema(false)),
        ("KafkaDeadLetterHeaders", headers::dead_letter_schema(true)),
    ];
    for (name, schema) in headers {
        if schemas.insert(name.to_owned(), schema).is_some() {
            return Err(SpecError::SchemaName(name.to_owned()));
        }
    }

    let mut messages = Map::new();
    for (position, entry) in entries.iter().enumerate() {
        let broker = broker_of(&channels, &entry.channel);
        messages.insert(entry.message_type.to_owned(), message(&topology, entry, position, broker, &schemas)?);
    }
    messages.insert(AMQP_DEAD_LETTER.to_owned(), dead_letter_message(Broker::Rabbitmq));
    messages.insert(KAFKA_DEAD_LETTER.to_owned(), dead_letter_message(Broker::Kafka));

    let channel_objects: Map<String, Value> =
        channels.iter().map(|c| (c.address.clone(), channel(c, &entries, &topology))).collect();

    Ok(json!({
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:ordermesh:messages",
        "info": {
            "title": "ordermesh messages",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Commands and replies over RabbitMQ, events over Kafka, between the six services of \
                ordermesh (order, stock, payment, shipping, email, loyalty), with the dead-letter queues and topics \
                and the dead-letter tools. Generated from shared/contracts by `cargo run -p api-specs`; do not edit \
                by hand (docs/api/README.md). Every message carries the envelope as headers and its JSON payload as \
                the body; a consumer dead-letters a message whose schema_version it does not know. Channel names \
                are those of the default, empty namespace (MESSAGING_NAMESPACE prefixes every queue, topic and group).",
            "license": { "name": env!("CARGO_PKG_LICENSE") },
        },
        "defaultContentType": "application/json",
        "servers": servers(),
        "channels": channel_objects,
        "operations": operations(&channels, &entries, &topology),
        "components": {
            "schemas": schemas,
            "messages": messages,
            "correlationIds": {
                ORDER_ID_CORRELATION: {
                    "description": "The order id. A reply carries its command's, and its causation_id is the \
                        command's message_id (`MessageFactory::reply`); on RabbitMQ it travels as the \
                        correlation-id property.",
                    "location": "$message.header#/correlation_id",
                },
            },
        },
    }))
}

fn broker_of(channels: &[Channel], address: &str) -> Broker {
    channels.iter().find(|c| c.address == address).map_or(Broker::Rabbitmq, |c| c.broker)
}

fn servers() -> Value {
    json!({
        "rabbitmq": {
            "host": "127.0.0.1:21672",
            "protocol": "amqp",
            "protocolVersion": "0.9.1",
            "title": "RabbitMQ",
            "description": "Commands and replies. The dev stack's broker (`AMQP_URL`, virtual host `/`); \
                every queue is a durable quorum queue reached through the default exchange.",
        },
        "kafka": {
            "host": "127.0.0.1:21092",
            "protocol": "kafka",
            "title": "Kafka",
            "description": "Events. The dev stack's Kafka-compatible broker (`KAFKA_BROKERS`); producers are \
                idempotent with acks=all.",
        },
    })
}

fn channel(channel: &Channel, entries: &[Entry], topology: &Topology) -> Value {
    let address = channel.address.as_str();
    let server = json!([{ "$ref": format!("#/servers/{}", channel.broker.server()) }]);
    let (messages, description) = match &channel.dead_letters_of {
        None => {
            let messages: Map<String, Value> = entries
                .iter()
                .filter(|e| e.channel == address)
                .map(|e| {
                    (e.message_type.to_owned(), json!({ "$ref": format!("#/components/messages/{}", e.message_type) }))
                })
                .collect();
            (messages, live_channel_description(channel, entries, topology))
        }
        Some((source, consumer)) => {
            let message = match channel.broker {
                Broker::Rabbitmq => AMQP_DEAD_LETTER,
                Broker::Kafka => KAFKA_DEAD_LETTER,
            };
            let messages = [(message.to_owned(), json!({ "$ref": format!("#/components/messages/{message}") }))];
            let description = match channel.broker {
                Broker::Rabbitmq => format!(
                    "Dead letters of `{source}`: what its consumer ({consumer}) could not handle, and what \
                     RabbitMQ moved here itself after {AMQP_DELIVERY_LIMIT} deliveries. A durable quorum queue. \
                     The dead-letter tools read, replay (to `{source}`, same message id) and purge them."
                ),
                Broker::Kafka => format!(
                    "Dead letters of consumer group `{group}` on `{source}`: records copied byte for byte \
                     (key, payload, headers) with the reason added. Kept until replayed or purged \
                     (retention.ms = -1): the dead-letter tools mark what they handled with the offsets of \
                     group `{address}.admin` and replay to `{source}`.",
                    group = topology.consumer_group(consumer),
                ),
            };
            (messages.into_iter().collect(), description)
        }
    };
    json!({
        "address": address,
        "title": address,
        "description": description,
        "servers": server,
        "messages": messages,
        "bindings": channel_bindings(channel),
    })
}

fn live_channel_description(channel: &Channel, entries: &[Entry], topology: &Topology) -> String {
    let address = channel.address.as_str();
    let producers = list(&producers_on(entries, address));
    match channel.broker {
        Broker::Rabbitmq => {
            let kind = if entries.iter().any(|e| e.channel == address && e.kind == Kind::Reply) {
                "Replies"
            } else {
                "Commands"
            };
            format!(
                "{kind}, point to point, from {producers} to {consumers}. A durable quorum queue reached through \
                 the default exchange (routing key = the queue's name); a message its consumer cannot handle, or \
                 delivered more than {AMQP_DELIVERY_LIMIT} times, goes to `{dlq}`.",
                consumers = list(&handlers_on(entries, address)),
                dlq = Topology::dead_letter_queue(address),
            )
        }
        Broker::Kafka => {
            let groups: BTreeSet<String> = topology
                .subscriptions()
                .into_iter()
                .filter(|(_, topics)| topics.iter().any(|t| t == address))
                .map(|(service, _)| topology.consumer_group(service))
                .collect();
            let groups: BTreeSet<&str> = groups.iter().map(String::as_str).collect();
            format!(
                "Events, publish-subscribe, from {producers}. {EVENT_TOPIC_PARTITIONS} partitions; the record key \
                 is the order id, so each order's events keep their order. Consumer groups: {groups}; each gets \
                 every event and acknowledges those it does not handle. A record a group cannot handle goes to \
                 `{address}.<group>.dlq`.",
                groups = list(&groups),
            )
        }
    }
}

fn channel_bindings(channel: &Channel) -> Value {
    match channel.broker {
        Broker::Rabbitmq => {
            // Another client declaring these queues must pass the same
            // arguments, or RabbitMQ refuses (PRECONDITION_FAILED).
            let arguments = if channel.dead_letters_of.is_some() {
                json!({ "x-queue-type": "quorum" })
            } else {
                json!({
                    "x-queue-type": "quorum",
                    "x-delivery-limit": AMQP_DELIVERY_LIMIT,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": Topology::dead_letter_queue(&channel.address),
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                })
            };
            json!({ "amqp": {
                "is": "queue",
                "queue": { "name": channel.address, "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/" },
                "x-arguments": arguments,
                "bindingVersion": AMQP_BINDING_VERSION,
            }})
        }
        Broker::Kafka => {
            let mut kafka = json!({
                "topic": channel.address,
                "partitions": EVENT_TOPIC_PARTITIONS,
                "bindingVersion": KAFKA_BINDING_VERSION,
            });
            if channel.dead_letters_of.is_some() {
                kafka["topicConfiguration"] = json!({ "retention.ms": DEAD_LETTER_TOPIC_RETENTION_MS });
            }
            json!({ "kafka": kafka })
        }
    }
}

fn headers_schema_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Command => "CommandHeaders",
        Kind::Reply => "ReplyHeaders",
        Kind::Event => "EventHeaders",
    }
}

fn message(
    topology: &Topology,
    entry: &Entry,
    position: usize,
    broker: Broker,
    schemas: &Map<String, Value>,
) -> Result<Value, SpecError> {
    let summary = entry
        .payload
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit_once('/'))
        .and_then(|(_, name)| schemas.get(name))
        .and_then(|schema| schema.get("description"))
        .cloned()
        .unwrap_or_else(|| json!(entry.name()));
    let envelope = examples::envelope(topology, entry, position);
    let example_headers: Map<String, Value> =
        envelope.to_headers().into_iter().map(|(name, value)| (name.to_owned(), json!(value))).collect();
    let handlers: BTreeSet<&str> = entry.handlers.iter().copied().collect();
    let mut description = format!(
        "A {kind} on `{channel}`, from `{producer}`, handled by {handlers}.",
        kind = entry.kind.as_str(),
        channel = entry.channel,
        producer = entry.producer,
        handlers = if handlers.is_empty() {
            "no service (every group acknowledges it as ignored)".into()
        } else {
            list(&handlers)
        },
    );
    if !entry.replies.is_empty() {
        let replies: BTreeSet<&str> = entry.replies.iter().copied().collect();
        description.push_str(&format!(
            " Answered on the queue its reply_to names by {}, with its correlation_id; the reply's causation_id \
             is its message_id.",
            list(&replies)
        ));
    }
    if let Some(sequence) = entry.sequence {
        description.push_str(&format!(" Event {sequence} of its aggregate (the `sequence` header)."));
    }
    let bindings = match broker {
        Broker::Rabbitmq => json!({ "amqp": headers::amqp_message_binding(entry.message_type, entry.kind)? }),
        Broker::Kafka => json!({ "kafka": {
            "key": {
                "type": "string",
                "format": "uuid",
                "description": "The order id (the aggregate_id header): one order's events share a partition.",
            },
            "bindingVersion": KAFKA_BINDING_VERSION,
        }}),
    };
    let mut example = json!({ "name": "sample", "headers": example_headers, "payload": entry.example });
    if broker == Broker::Kafka {
        example["summary"] = json!(format!("Record key: {}", examples::order_id()));
    }
    Ok(json!({
        "name": entry.message_type,
        "title": entry.name(),
        "summary": summary,
        "description": description,
        "contentType": "application/json",
        "tags": [{ "name": entry.kind.as_str() }],
        "headers": { "allOf": [
            { "$ref": format!("#/components/schemas/{}", headers_schema_name(entry.kind)) },
            {
                "type": "object",
                "properties": {
                    "message_type": { "const": entry.message_type },
                    "producer": { "const": entry.producer },
                    "schema_version": { "const": entry.schema_version.to_string() },
                },
            },
        ]},
        "payload": entry.payload,
        "correlationId": { "$ref": format!("#/components/correlationIds/{ORDER_ID_CORRELATION}") },
        "bindings": bindings,
        "examples": [example],
    }))
}

fn dead_letter_message(broker: Broker) -> Value {
    match broker {
        Broker::Rabbitmq => json!({
            "name": AMQP_DEAD_LETTER,
            "title": "Dead letter (RabbitMQ)",
            "summary": "A message its consumer could not handle, or that RabbitMQ moved after too many deliveries.",
            "description": "The original message, body and properties unchanged, with the dead-letter headers \
                added. Its body is usually one of the queue's catalogue payloads as JSON, but it may be what was \
                wrong with it.",
            "headers": { "$ref": "#/components/schemas/RabbitmqDeadLetterHeaders" },
            "payload": { "description": "The original body, byte for byte." },
            "bindings": { "amqp": { "bindingVersion": AMQP_BINDING_VERSION } },
        }),
        Broker::Kafka => json!({
            "name": KAFKA_DEAD_LETTER,
            "title": "Dead letter (Kafka)",
            "summary": "A record its consumer group could not handle.",
            "description": "The original record copied byte for byte (key, payload, headers), with the \
                dead-letter headers added or replaced. Its payload is usually one of the topic's catalogue \
                payloads as JSON, but it may be what was wrong with it, and it is empty when the dead-letter \
                topic refused the copy (see x-payload-left-at).",
            "headers": { "$ref": "#/components/schemas/KafkaDeadLetterHeaders" },
            "payload": { "description": "The original payload, byte for byte, or nothing." },
            "bindings": { "kafka": {
                "key": { "type": "string", "description": "The original record's key (the order id)." },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }},
        }),
    }
}

fn operations(channels: &[Channel], entries: &[Entry], topology: &Topology) -> Map<String, Value> {
    let mut operations = Map::new();
    // What answers any of `commands` (nothing for replies and events).
    let reply_ref = |commands: &[&Entry]| -> Option<Value> {
        let replies: Vec<&Entry> =
            entries.iter().filter(|e| commands.iter().any(|c| c.replies.contains(&e.message_type))).collect();
        let channel = replies.first()?.channel.clone();
        Some(json!({
            "channel": channel_ref(&channel),
            "messages": replies.iter().map(|r| channel_message_ref(&channel, r.message_type)).collect::<Vec<_>>(),
        }))
    };
    for entry in entries {
        let broker = broker_of(channels, &entry.channel);
        let message = channel_message_ref(&entry.channel, entry.message_type);
        let mut send = json!({
            "action": "send",
            "channel": channel_ref(&entry.channel),
            "messages": [message],
            "title": format!("{} sends {}", entry.producer, entry.name()),
            "description": format!(
                "Written to {}'s outbox in the transaction of the change that causes it; the relay publishes \
                 it with broker confirmation, then marks it sent.",
                entry.producer
            ),
            "tags": [{ "name": entry.producer }],
        });
        if broker == Broker::Rabbitmq {
            send["bindings"] = json!({ "amqp": {
                "deliveryMode": 2,
                "mandatory": true,
                "timestamp": true,
                "bindingVersion": AMQP_BINDING_VERSION,
            }});
        }
        if let Some(reply) = reply_ref(&[entry]) {
            send["reply"] = reply;
        }
        operations.insert(format!("{}.send.{}", entry.producer, entry.name()), send);

        for handler in entry.handlers {
            let mut receive = json!({
                "action": "receive",
                "channel": channel_ref(&entry.channel),
                "messages": [message],
                "title": format!("{handler} handles {}", entry.name()),
                "description": "Recorded in the consumer's inbox in the transaction of its effect, and \
                    acknowledged after the commit: a redelivery finds the inbox row and has no second effect.",
                "tags": [{ "name": handler }],
            });
            receive["bindings"] = match broker {
                Broker::Rabbitmq => json!({ "amqp": { "ack": true, "bindingVersion": AMQP_BINDING_VERSION } }),
                Broker::Kafka => json!({ "kafka": {
                    "groupId": { "type": "string", "const": topology.consumer_group(handler) },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }}),
            };
            if let Some(reply) = reply_ref(&[entry]) {
                receive["reply"] = reply;
            }
            operations.insert(format!("{handler}.receive.{}", entry.name()), receive);
        }
    }
    for channel in channels {
        let Some((source, consumer)) = &channel.dead_letters_of else { continue };
        let dlq = channel.address.as_str();
        let message = match channel.broker {
            Broker::Rabbitmq => AMQP_DEAD_LETTER,
            Broker::Kafka => KAFKA_DEAD_LETTER,
        };
        let letter = channel_message_ref(dlq, message);
        let mut send = json!({
            "action": "send",
            "channel": channel_ref(dlq),
            "messages": [letter],
            "title": format!("{consumer} dead-letters what it cannot handle from {source}"),
            "description": "A poison message (malformed, unknown type or schema version) or one whose handler \
                failed too many times, with its reason; the consumer goes on with the next.",
            "tags": [{ "name": consumer }],
        });
        if channel.broker == Broker::Rabbitmq {
            send["bindings"] =
                json!({ "amqp": { "deliveryMode": 2, "mandatory": true, "bindingVersion": AMQP_BINDING_VERSION } });
        }
        operations.insert(format!("{consumer}.send.{dlq}"), send);

        let mut receive = json!({
            "action": "receive",
            "channel": channel_ref(dlq),
            "messages": [letter],
            "title": format!("The dead-letter tools read {dlq}"),
            "description": "`dead-letters` (CLI) and the services' /admin/dead-letters list, inspect, replay and purge.",
            "tags": [{ "name": DEAD_LETTER_TOOL }],
        });
        if channel.broker == Broker::Kafka {
            receive["bindings"] = json!({ "kafka": {
                "groupId": { "type": "string", "const": format!("{dlq}.admin") },
                "bindingVersion": KAFKA_BINDING_VERSION,
            }});
        }
        operations.insert(format!("{DEAD_LETTER_TOOL}.receive.{dlq}"), receive);

        let originals: Vec<&Entry> = entries.iter().filter(|e| &e.channel == source).collect();
        let mut replay = json!({
            "action": "send",
            "channel": channel_ref(source),
            "messages": originals.iter().map(|e| channel_message_ref(source, e.message_type)).collect::<Vec<_>>(),
            "title": format!("The dead-letter tools replay {dlq} to {source}"),
            "description": "The letter goes back with the same message id, properties, key and headers minus \
                the dead-letter ones, so the consumer's inbox still drops one that had in fact been handled; \
                a replayed command is answered like any other.",
            "tags": [{ "name": DEAD_LETTER_TOOL }],
        });
        if let Some(reply) = reply_ref(&originals) {
            replay["reply"] = reply;
        }
        operations.insert(format!("{DEAD_LETTER_TOOL}.replay.{dlq}"), replay);
    }
    operations
}

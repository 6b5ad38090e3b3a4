//! The document's broker mapping is what `messaging` really does: envelopes
//! built by `MessageFactory`, put on AMQP by `wire::amqp_properties`, the
//! dead-letter headers, queue and topic settings.

use contracts::catalogue::{OrderPaid, ReserveStock, StockReserved};
use contracts::{Envelope, Topology};
use messaging::{MessageFactory, dead_letter, wire};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

fn document() -> Value {
    api_specs::document().expect("the document builds")
}

fn names(value: &Value) -> BTreeSet<String> {
    match value {
        Value::Object(map) => map.keys().cloned().collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => panic!("neither an object nor an array: {value}"),
    }
}

/// A command, its reply and an event, as the services build them.
fn envelopes() -> [(&'static str, Envelope); 3] {
    let topology = Topology::default();
    let order = MessageFactory::new("order");
    let id = Uuid::now_v7();
    let command = order
        .command(
            &topology.stock_commands(),
            &id.to_string(),
            &topology.order_replies(),
            None,
            &ReserveStock { order_id: id, lines: vec![] },
        )
        .expect("command")
        .envelope;
    let reply = MessageFactory::new("stock")
        .reply(&command, &StockReserved { order_id: id, lines: vec![], total_cents: 0 })
        .expect("reply")
        .envelope;
    let paid = OrderPaid { order_id: id, customer_id: "c-1".into(), amount_cents: 1, payment_id: Uuid::now_v7() };
    let event = order.event(&topology.orders_topic(), &id.to_string(), 2, Some(&reply), &paid).expect("event").envelope;
    [("CommandHeaders", command), ("ReplyHeaders", reply), ("EventHeaders", event)]
}

#[test]
fn each_kind_of_message_carries_the_headers_its_schema_names() {
    let document = document();
    for (schema_name, envelope) in envelopes() {
        let schema = &document["components"]["schemas"][schema_name];
        let sent: BTreeSet<String> = envelope.to_headers().into_iter().map(|(k, _)| k.to_owned()).collect();
        let named = names(&schema["properties"]);
        let required = names(&schema["required"]);
        assert!(sent.is_subset(&named), "{schema_name}: {:?} are sent but not described", sent.difference(&named));
        assert!(required.is_subset(&sent), "{schema_name}: {:?} are required but not sent", required.difference(&sent));
    }
}

#[test]
fn amqp_properties_and_header_table_are_where_the_document_says() {
    let document = document();
    let [(_, command), (_, reply), _] = envelopes();
    for (message_type, envelope) in [("stock.ReserveStock", command), ("stock.StockReserved", reply)] {
        let binding = &document["components"]["messages"][message_type]["bindings"]["amqp"];
        let props = wire::amqp_properties(&envelope, &[]);
        let headers: BTreeMap<&str, String> = envelope.to_headers().into_iter().collect();
        let property = |name: &str| -> Option<String> {
            let short = match name {
                "message-id" => props.message_id(),
                "type" => props.kind(),
                "correlation-id" => props.correlation_id(),
                "reply-to" => props.reply_to(),
                "app-id" => props.app_id(),
                "timestamp" => return props.timestamp().map(|t| t.to_string()),
                other => panic!("the document names an AMQP property the test does not know: {other}"),
            };
            short.as_ref().map(|v| v.as_str().to_owned())
        };
        for (name, field) in binding["x-properties"].as_object().expect("x-properties") {
            let field = field.as_str().expect("a header name");
            let expected = if name == "timestamp" {
                Some(envelope.occurred_at.timestamp().to_string())
            } else {
                headers.get(field).cloned()
            };
            assert_eq!(property(name), expected, "{message_type}: AMQP property {name} carries {field}");
        }
        let table: BTreeSet<String> = props
            .headers()
            .as_ref()
            .map(|t| t.inner().keys().map(|k| k.as_str().to_owned()).collect())
            .unwrap_or_default();
        let documented: BTreeSet<String> =
            names(&binding["x-header-table"]).into_iter().filter(|h| headers.contains_key(h.as_str())).collect();
        assert_eq!(table, documented, "{message_type}: the AMQP header table");
        assert_eq!(binding["messageType"], message_type);
        assert_eq!(document["components"]["messages"][message_type]["contentType"], wire::CONTENT_TYPE_JSON);
        assert_eq!(props.delivery_mode(), &Some(2), "operations say deliveryMode 2");
    }
}

#[test]
fn dead_letter_headers_are_those_messaging_adds() {
    let document = document();
    let schemas = &document["components"]["schemas"];
    let kafka: BTreeSet<String> = dead_letter::ALL.iter().map(|h| (*h).to_owned()).collect();
    assert_eq!(names(&schemas["KafkaDeadLetterHeaders"]["properties"]), kafka);
    let added: BTreeSet<String> =
        dead_letter::headers("reason", 1, "q", "c").into_iter().map(|(k, _)| k.to_owned()).collect();
    assert_eq!(names(&schemas["RabbitmqDeadLetterHeaders"]["properties"]), added);
    assert_eq!(names(&schemas["KafkaDeadLetterHeaders"]["required"]), added);
}

#[test]
fn queue_and_topic_settings_are_those_messaging_declares() {
    let document = document();
    let topology = Topology::default();
    for queue in topology.command_queues() {
        let arguments = &document["channels"][&queue]["bindings"]["amqp"]["x-arguments"];
        assert_eq!(arguments["x-delivery-limit"], messaging::amqp::DELIVERY_LIMIT, "{queue}");
        assert_eq!(arguments["x-dead-letter-routing-key"], Topology::dead_letter_queue(&queue), "{queue}");
    }
    let retention = messaging::kafka::DEAD_LETTER_TOPIC_CONFIG
        .iter()
        .find(|(key, _)| *key == "retention.ms")
        .and_then(|(_, value)| value.parse::<i64>().ok())
        .expect("dead-letter topics have a retention.ms");
    for topic in topology.all_topics().iter().filter(|t| messaging::kafka::is_dead_letter_topic(t)) {
        let configuration = &document["channels"][topic]["bindings"]["kafka"]["topicConfiguration"];
        assert_eq!(configuration["retention.ms"], retention, "{topic}");
    }
}

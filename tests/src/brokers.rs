//! Reading what reached the brokers, for tests that check what was published.

use crate::message_contract::{Broker, WireMessage};
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use messaging::wire;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use std::time::Duration;

/// A message as a broker delivered it.
#[derive(Debug, Clone)]
pub struct Received {
    pub envelope: contracts::Envelope,
    pub payload: serde_json::Value,
    pub key: Option<String>,
}

/// Consumes `queue` until `quiet` passes with nothing new (or `max_wait`).
pub async fn drain_queue(amqp_url: &str, queue: &str, quiet: Duration, max_wait: Duration) -> Vec<Received> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await.unwrap();
    let channel = conn.create_channel().await.unwrap();
    // A dead-letter queue is declared with its command queue, by whoever
    // consumes that; declaring it as a command queue would clash.
    if !queue.ends_with(".dlq") {
        messaging::amqp::declare_command_queue(&channel, queue).await.unwrap();
    }
    let mut consumer = channel
        .basic_consume(queue.into(), "test-drain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + max_wait;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(
        quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
        consumer.next(),
    )
    .await
    {
        let envelope = wire::envelope_from_amqp(&delivery.properties).unwrap();
        let payload = serde_json::from_slice(&delivery.data).unwrap();
        received.push(Received { envelope, payload, key: None });
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    received
}

/// Reads `topic` from the beginning with a fresh group until `quiet` passes.
pub async fn drain_topic(brokers: &str, topic: &str, quiet: Duration, max_wait: Duration) -> Vec<Received> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + max_wait;
    // The first records can take a while (group join); after that, stop when quiet.
    let mut wait = max_wait;
    while let Ok(Ok(record)) = tokio::time::timeout(wait, consumer.recv()).await {
        let envelope = wire::envelope_from_kafka(record.headers()).unwrap();
        let payload = serde_json::from_slice(record.payload().unwrap_or_default()).unwrap();
        let key = record.key().map(|k| String::from_utf8_lossy(k).into_owned());
        received.push(Received { envelope, payload, key });
        wait = quiet.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    }
    received
}

/// Deletes `queue` and what it holds (benchmarks leave thousands behind).
pub async fn delete_queue(amqp_url: &str, queue: &str) -> Result<(), lapin::Error> {
    let conn = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default()).await?;
    conn.close(200, "done".into()).await
}

/// Every message published on a stack's RabbitMQ while it runs, seen
/// through the firehose tracer: commands and replies are consumed by the
/// services, so draining their queues afterwards would find nothing.
pub struct FirehoseTap {
    connection: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
}

/// The firehose copies each publish here, routing key `publish.<exchange>`.
const TRACE_EXCHANGE: &str = "amq.rabbitmq.trace";

impl FirehoseTap {
    /// Turns the firehose on for `/` and binds an exclusive queue to it;
    /// start it before the traffic it is to see.
    pub async fn start(stack: &xtask::Stack) -> anyhow::Result<FirehoseTap> {
        // On, idempotently, and never off: the tracer is per node and
        // vhost, so a test turning it off at its end would blind the taps
        // of tests running beside it. Left on, a publish costs one more
        // copy, dropped while no tap is bound; the node forgets it on restart.
        let output = stack.rabbitmq().ctl(&["trace_on", "-p", "/"], Duration::from_secs(60)).await?;
        anyhow::ensure!(
            output.status.success(),
            "rabbitmqctl trace_on failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let connection = lapin::Connection::connect(&stack.amqp_url(), lapin::ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare("".into(), exclusive, FieldTable::default()).await?;
        channel
            .queue_bind(
                queue.name().clone(),
                TRACE_EXCHANGE.into(),
                "publish.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let consumer =
            channel.basic_consume(queue.name().clone(), "firehose-tap".into(), no_ack, FieldTable::default()).await?;
        Ok(FirehoseTap { connection, channel, consumer })
    }

    /// The messages published so far to queues whose name starts with
    /// `prefix` (a test's namespace). Other tests' traffic goes through the
    /// same tap and is left out. The end is a marker this tap publishes
    /// last rather than a quiet spell (other tests keep the tap busy): the
    /// copies of the publishes the test has waited for are queued before it.
    pub async fn collect(mut self, prefix: &str, max_wait: Duration) -> anyhow::Result<Vec<WireMessage>> {
        let marker = format!("{prefix}firehose-tap.end.{}", uuid::Uuid::now_v7());
        // To no queue: only the firehose sees it.
        self.channel
            .basic_publish(
                "".into(),
                marker.as_str().into(),
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default(),
            )
            .await?
            .await?;
        let mut captured = Vec::new();
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.consumer.next()).await;
            let delivery = match next {
                Ok(Some(delivery)) => delivery?,
                Ok(None) => anyhow::bail!("the firehose tap's consumer ended"),
                Err(_) => anyhow::bail!(
                    "the firehose did not bring the end marker within {max_wait:?} (is tracing on?); {} messages so far",
                    captured.len()
                ),
            };
            let traced = traced_publish(&delivery)?;
            if traced.iter().any(|m| m.destination == marker) {
                break;
            }
            captured.extend(traced.into_iter().filter(|m| m.destination.starts_with(prefix)));
        }
        let _ = self.connection.close(200, "done".into()).await;
        Ok(captured)
    }
}

/// The original message of a firehose `publish.<exchange>` copy: its
/// exchange, routing keys and properties are in the copy's headers
/// (`exchange_name`, `routing_keys`, `properties`), the body is unchanged.
/// One per routing key: a message with CC or BCC headers went to several.
fn traced_publish(delivery: &lapin::message::Delivery) -> anyhow::Result<Vec<WireMessage>> {
    let trace = delivery
        .properties
        .headers()
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("a firehose message without headers: {:?}", delivery.routing_key))?
        .inner();
    let text = |name: &str| match trace.get(&ShortString::from(name)) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let routing_keys: Vec<String> = match trace.get(&ShortString::from("routing_keys")) {
        Some(AMQPValue::FieldArray(keys)) => {
            keys.as_slice().iter().filter_map(|k| amqp_json(k).as_str().map(str::to_owned)).collect()
        }
        other => anyhow::bail!("a firehose message without routing_keys: {other:?}"),
    };
    let Some(AMQPValue::FieldTable(original)) = trace.get(&ShortString::from("properties")) else {
        anyhow::bail!("a firehose message without properties: {trace:?}");
    };
    let mut properties = serde_json::Map::new();
    let mut headers = Vec::new();
    for (name, value) in original {
        match (name.as_str(), value) {
            ("headers", AMQPValue::FieldTable(table)) => {
                headers = table.into_iter().map(|(k, v)| (k.as_str().to_owned(), amqp_json(v))).collect();
            }
            // The firehose names properties as RabbitMQ's record does
            // (`message_id`); the AMQP names, which the document uses, have hyphens.
            (name, value) => {
                properties.insert(name.replace('_', "-"), amqp_json(value));
            }
        }
    }
    let exchange = text("exchange_name");
    Ok(routing_keys
        .into_iter()
        .map(|destination| WireMessage {
            broker: Broker::RabbitMq,
            destination,
            exchange: exchange.clone(),
            properties: properties.clone(),
            headers: headers.clone(),
            key: None,
            partition: None,
            body: delivery.data.clone(),
        })
        .collect())
}

/// An AMQP field value as JSON, keeping its kind (text, number, table…).
fn amqp_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::{Value, json};
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Timestamp(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!({"scale": d.scale, "value": d.value}),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => text_or_bytes(s.as_bytes()),
        AMQPValue::ByteArray(b) => json!(b.as_slice()),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(amqp_json).collect()),
        AMQPValue::FieldTable(table) => {
            Value::Object(table.into_iter().map(|(k, v)| (k.as_str().to_owned(), amqp_json(v))).collect())
        }
        AMQPValue::Void => Value::Null,
    }
}

/// Every record of `topics` from the beginning to the end each partition
/// has when called, with key, partition and headers as they are stored.
/// Partitions are assigned by hand under a fresh group id: no group to join,
/// no offsets committed, and the end is the high watermark rather than a
/// quiet spell. A topic that does not exist has no records.
pub async fn read_topics(brokers: &str, topics: &[String], max_wait: Duration) -> anyhow::Result<Vec<WireMessage>> {
    let brokers = brokers.to_owned();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || read_topics_blocking(&brokers, &topics, max_wait)).await?
}

fn read_topics_blocking(brokers: &str, topics: &[String], max_wait: Duration) -> anyhow::Result<Vec<WireMessage>> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Headers;
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-contract-{}", uuid::Uuid::now_v7()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let deadline = std::time::Instant::now() + max_wait;
    let left = || deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_secs(1));
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), left())?;
        let Some(described) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
            continue;
        };
        for partition in described.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), left())?;
            if high > low {
                assignment.add_partition_offset(topic, partition.id(), Offset::Offset(low))?;
                ends.insert((topic.clone(), partition.id()), high);
            }
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading {topics:?}: partitions not read to their end within {max_wait:?}: {ends:?}"
        );
        let record = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            // Passing fetch errors (leader moves, reconnects): keep polling.
            Some(Err(_)) => continue,
            Some(Ok(record)) => record,
        };
        let at = (record.topic().to_owned(), record.partition());
        let Some(end) = ends.get(&at).copied() else { continue };
        if record.offset() + 1 >= end {
            ends.remove(&at);
        }
        if record.offset() >= end {
            continue;
        }
        let headers = record
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = h.value.map_or(serde_json::Value::Null, text_or_bytes);
                        (h.key.to_owned(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(WireMessage {
            broker: Broker::Kafka,
            destination: at.0,
            exchange: None,
            properties: serde_json::Map::new(),
            headers,
            key: record.key().map(<[u8]>::to_vec),
            partition: Some(at.1),
            body: record.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(records)
}

/// Bytes that should be text: a JSON string if they are UTF-8, else the
/// bytes as an array, which no text schema accepts.
fn text_or_bytes(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::Value::String(text.to_owned()),
        Err(_) => serde_json::json!(bytes),
    }
}

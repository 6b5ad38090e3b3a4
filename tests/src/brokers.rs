//! Reading what reached the brokers, for tests that check what was published.

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
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

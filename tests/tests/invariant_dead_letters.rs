//! Invariant 7 on real brokers: a dead letter in a RabbitMQ `.dlq` queue or
//! a Kafka `.dlq` topic fails the check and is named.
//!
//! Everything it creates lives under a fresh namespace and is deleted after.

#![allow(clippy::unwrap_used)]

use contracts::{Envelope, Topology};
use invariants::Invariant;
use invariants::brokers::{self, Brokers};
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use messaging::kafka::{KafkaPublisher, ensure_topics};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use uuid::Uuid;

async fn required(var: &str) -> String {
    let stack = system_tests::test_stack().await;
    match var {
        "TEST_AMQP_URL" => stack.amqp_url(),
        _ => stack.kafka_brokers(),
    }
}

fn fresh_topology() -> Topology {
    Topology::new(format!("inv{}.", &Uuid::now_v7().simple().to_string()[20..]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_command_fails_the_amqp_check() {
    let url = required("TEST_AMQP_URL").await;
    let topology = fresh_topology();
    let brokers = Brokers { amqp_url: Some(url.clone()), kafka_brokers: None, topology: topology.clone() };

    // Nothing declared yet: no dead-letter queue is an empty one.
    let empty = brokers::amqp_dead_letters(&brokers, 10).await.expect("check");
    assert!(empty.passed(), "{empty:?}");

    let connection = Connection::connect(&url, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(Default::default()).await.expect("confirms");
    messaging::amqp::declare_topology(&channel, &topology).await.expect("declare");
    let dlq = Topology::dead_letter_queue(&topology.payment_commands());
    let envelope = Envelope::new("payment.ProcessPayment", Uuid::now_v7().to_string(), "test");
    channel
        .basic_publish(
            "".into(),
            dlq.clone().into(),
            Default::default(),
            b"{}",
            messaging::wire::amqp_properties(&envelope, &[]),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");

    let result = brokers::amqp_dead_letters(&brokers, 10).await;
    for queue in topology.command_queues() {
        for name in [Topology::dead_letter_queue(&queue), queue] {
            let _ = channel.queue_delete(name.into(), QueueDeleteOptions::default()).await;
        }
    }
    let check = result.expect("check");
    assert_eq!(check.invariant, Invariant::AmqpDeadLettersEmpty);
    assert!(check.failed() && check.names(&dlq), "{check:?}");
    assert_eq!(check.counts[&dlq], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_event_fails_the_kafka_check() {
    let bootstrap = required("TEST_KAFKA_BROKERS").await;
    let topology = fresh_topology();
    let brokers = Brokers { amqp_url: None, kafka_brokers: Some(bootstrap.clone()), topology: topology.clone() };

    let empty = brokers::kafka_dead_letters(&brokers, 10).await.expect("check");
    assert!(empty.passed(), "{empty:?}");

    let dead_letter_topic = Topology::dead_letter_topic(&topology.orders_topic(), &topology.consumer_group("email"));
    ensure_topics(&bootstrap, std::slice::from_ref(&dead_letter_topic), 2).await.expect("create topic");
    let producer = KafkaPublisher::new(&bootstrap, "invariants-test").expect("producer");
    producer
        .send_raw(&dead_letter_topic, "some-order", b"{}", &[], &[("x-dead-letter-reason", "test".into())])
        .await
        .expect("send")
        .delivered()
        .await
        .expect("delivered");

    let result = brokers::kafka_dead_letters(&brokers, 10).await;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("admin client");
    let _ = admin.delete_topics(&[dead_letter_topic.as_str()], &AdminOptions::new()).await;
    let check = result.expect("check");
    assert!(check.failed() && check.names(&dead_letter_topic), "{check:?}");
    assert_eq!(check.counts[&dead_letter_topic], 1);
}

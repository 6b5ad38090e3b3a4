//! Invariant 7 on real brokers: a dead letter in a RabbitMQ `.dlq` queue or
//! a Kafka `.dlq` topic fails the check and is named (7b, 7c), and so does a
//! command left in its queue or a record a consumer group has not committed
//! past (7d).
//!
//! Everything it creates lives under a fresh namespace and is deleted after.

#![allow(clippy::unwrap_used)]

use contracts::{Envelope, Topology};
use invariants::Invariant;
use invariants::brokers::{self, Brokers};
use lapin::options::QueueDeleteOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use messaging::kafka::{KafkaPublisher, ensure_topics};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
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

/// A confirm-mode channel, with `topology`'s queues declared.
async fn declared_channel(url: &str, topology: &Topology) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(Default::default()).await.expect("confirms");
    messaging::amqp::declare_topology(&channel, topology).await.expect("declare");
    (connection, channel)
}

/// One `{}` message of `message_type` in `queue`, confirmed by the broker.
async fn publish_confirmed(channel: &Channel, queue: &str, message_type: &str) {
    let envelope = Envelope::new(message_type, Uuid::now_v7().to_string(), "test");
    let properties = messaging::wire::amqp_properties(&envelope, &[]);
    channel
        .basic_publish("".into(), queue.into(), Default::default(), b"{}", properties)
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// Deletes `topology`'s queues and their dead-letter queues.
async fn delete_queues(channel: &Channel, topology: &Topology) {
    for queue in topology.command_queues() {
        for name in [Topology::dead_letter_queue(&queue), queue] {
            let _ = channel.queue_delete(name.into(), QueueDeleteOptions::default()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lettered_command_fails_the_amqp_check() {
    let url = required("TEST_AMQP_URL").await;
    let topology = fresh_topology();
    let brokers = Brokers { amqp_url: Some(url.clone()), kafka_brokers: None, topology: topology.clone() };

    // Nothing declared yet: no dead-letter queue is an empty one.
    let empty = brokers::amqp_dead_letters(&brokers, 10).await.expect("check");
    assert!(empty.passed(), "{empty:?}");

    let (_connection, channel) = declared_channel(&url, &topology).await;
    let dlq = Topology::dead_letter_queue(&topology.payment_commands());
    publish_confirmed(&channel, &dlq, "payment.ProcessPayment").await;

    let result = brokers::amqp_dead_letters(&brokers, 10).await;
    delete_queues(&channel, &topology).await;
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

    let check = brokers::kafka_dead_letters(&brokers, 10).await.expect("check");
    assert!(check.failed() && check.names(&dead_letter_topic), "{check:?}");
    assert_eq!(check.counts[&dead_letter_topic], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_left_in_its_queue_or_a_record_behind_a_group_fails_the_in_flight_check() {
    let url = required("TEST_AMQP_URL").await;
    let bootstrap = required("TEST_KAFKA_BROKERS").await;
    let topology = fresh_topology();
    let brokers =
        Brokers { amqp_url: Some(url.clone()), kafka_brokers: Some(bootstrap.clone()), topology: topology.clone() };

    // Nothing declared or created yet: nothing can be in flight.
    let empty = brokers::nothing_in_flight(&brokers, 10).await.expect("check");
    assert!(empty.passed(), "{empty:?}");
    let one_broker = Brokers { kafka_brokers: None, ..brokers.clone() };
    assert!(!brokers::nothing_in_flight(&one_broker, 10).await.expect("check").failed(), "skipped, not failed");

    // A command nobody consumes.
    let (_connection, channel) = declared_channel(&url, &topology).await;
    let queue = topology.stock_commands();
    publish_confirmed(&channel, &queue, "stock.ReserveStock").await;

    // An event the three groups reading `orders` have not consumed; then
    // shipping commits past it, as its consumer would after handling it.
    let topic = topology.orders_topic();
    ensure_topics(&bootstrap, std::slice::from_ref(&topic), 1).await.expect("create topic");
    let producer = KafkaPublisher::new(&bootstrap, "invariants-test").expect("producer");
    producer.send_raw(&topic, "some-order", b"{}", &[], &[]).await.expect("send").delivered().await.expect("delivered");
    let shipping = topology.consumer_group("shipping");
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", &shipping).create().expect("consumer");
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset(&topic, 0, Offset::Offset(1)).expect("offset");
    consumer.commit(&offsets, CommitMode::Sync).expect("commit");

    let result = brokers::nothing_in_flight(&brokers, 10).await;
    delete_queues(&channel, &topology).await;

    let check = result.expect("check");
    assert_eq!(check.invariant, Invariant::NothingInFlight);
    assert!(check.failed(), "{check:?}");
    assert!(check.names(&queue), "{check:?}");
    assert_eq!(check.counts[&queue], 1);
    assert_eq!(check.counts[&topology.payment_commands()], 0);
    for group in ["email", "loyalty"] {
        let name = format!("{topic} ({})", topology.consumer_group(group));
        assert!(check.names(&name) && check.counts[&name] == 1, "{name}: {check:?}");
    }
    let caught_up = format!("{topic} ({shipping})");
    assert!(!check.names(&caught_up) && check.counts[&caught_up] == 0, "{caught_up}: {check:?}");
}

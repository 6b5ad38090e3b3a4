//! Starts PostgreSQL, RabbitMQ and Kafka in Docker and checks that each one
//! answers its own protocol. Needs a Docker engine and `--features docker`
//! (this test target is not built without it):
//!
//! ```text
//! cargo test -p test-containers --features docker
//! ```
//!
//! Like the system tests, it fails (never skips) when the infrastructure
//! cannot be started.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Connection as _;
use std::time::Duration;
use test_containers::Containers;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_rabbitmq_and_kafka_start_and_answer() {
    const { assert!(test_containers::ENABLED) };
    let containers = Containers::start().await.unwrap_or_else(|e| panic!("starting the containers: {e:#}"));

    containers.ping().await.unwrap_or_else(|e| panic!("a container does not answer: {e:#}"));

    // The database of a service, named by an SQL keyword as `order` is.
    containers.create_database("order").await.unwrap();
    containers.create_database("order").await.expect("creating an existing database is a no-op");
    let mut order_db = sqlx::PgConnection::connect(&containers.postgres_url("order")).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()").fetch_one(&mut order_db).await.unwrap();
    assert_eq!(name, "order");

    // A record through the advertised listener, not just the bootstrap connection.
    let brokers = containers.kafka_brokers();
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let topic = NewTopic::new("smoke", 1, TopicReplication::Fixed(1));
    for result in admin.create_topics(&[topic], &AdminOptions::new()).await.unwrap() {
        result.unwrap_or_else(|(topic, code)| panic!("creating topic {topic}: {code}"));
    }
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("message.timeout.ms", "20000").create().unwrap();
    producer
        .send(FutureRecord::to("smoke").key("k").payload("hello"), Duration::from_secs(20))
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {brokers}: {e}"));

    assert!(containers.amqp_url().starts_with("amqp://guest:guest@"));
}

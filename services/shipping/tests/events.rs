//! The shipping handler against a throwaway database on the machine's own
//! PostgreSQL (TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432;
//! the test fails if it is unreachable): one shipment and one
//! `ShipmentScheduled` per paid order, however often the order is reported paid.

use contracts::catalogue::{OrderCancelled, OrderPaid};
use contracts::{MessageContract, Topology};
use messaging::{IncomingMessage, MessageFactory, MessageHandler, MessageSource};
use shipping_service::events::ShippingEvents;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use std::time::Duration;
use uuid::Uuid;

fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn admin() -> PgPool {
    let server = server_url();
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {server} must be reachable for this test: {e}"))
}

struct TestDatabase {
    name: String,
    pool: PgPool,
}

impl TestDatabase {
    async fn new() -> Self {
        let name = format!("shipping_test_{}", Uuid::now_v7().simple());
        admin().await.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("create database");
        let pool = PgPool::connect(&format!("{}/{name}", server_url())).await.expect("connect");
        messaging::migrations::run(&pool, sqlx::migrate!("../../migrations/shipping")).await.expect("migrate");
        Self { name, pool }
    }

    async fn drop_it(self) {
        self.pool.close().await;
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        admin().await.execute(sql.as_str()).await.expect("drop database");
    }

    /// Handles `event` (a fresh message id each time) as the consumer would:
    /// in one transaction, committed.
    async fn handle<M: MessageContract>(
        &self,
        handler: &impl MessageHandler,
        order_id: Uuid,
        sequence: i64,
        event: &M,
    ) {
        let topology = Topology::default();
        let published = MessageFactory::new("order")
            .event(&topology.orders_topic(), &order_id.to_string(), sequence, None, event)
            .expect("event");
        let message = IncomingMessage {
            envelope: published.envelope,
            payload: serde_json::to_vec(event).expect("payload"),
            source: MessageSource::Topic {
                topic: topology.orders_topic(),
                group: "shipping".into(),
                partition: 0,
                offset: 0,
            },
        };
        let mut tx = self.pool.begin().await.expect("begin");
        handler.handle(&mut tx, &message).await.expect("handled");
        tx.commit().await.expect("commit");
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect("count")
    }
}

#[tokio::test]
async fn a_paid_order_gets_one_shipment_and_one_event() {
    let db = TestDatabase::new().await;
    let handler = ShippingEvents::new(MessageFactory::new("shipping"), Topology::default(), "test-carrier".into());
    let order_id = Uuid::now_v7();
    let paid = OrderPaid { order_id, customer_id: "c-1".into(), amount_cents: 1_798, payment_id: Uuid::now_v7() };
    db.handle(&handler, order_id, 2, &paid).await;
    // The same fact again under a new message id changes nothing.
    db.handle(&handler, order_id, 2, &paid).await;

    assert_eq!(db.count("SELECT count(*) FROM shipments").await, 1);
    let events: Vec<(String, String, String, serde_json::Value, serde_json::Value)> =
        sqlx::query_as("SELECT message_type, destination, partition_key, envelope, payload FROM outbox ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 1);
    let (message_type, topic, key, envelope, payload) = &events[0];
    assert_eq!((message_type.as_str(), topic.as_str()), ("shipments.ShipmentScheduled", "shipments"));
    assert_eq!(key, &order_id.to_string(), "keyed by order id");
    assert_eq!(envelope["sequence"], 1);
    assert_eq!(envelope["aggregate_id"], order_id.to_string());
    assert_eq!(payload["carrier"], "test-carrier");
    db.drop_it().await;
}

#[tokio::test]
async fn other_order_events_are_not_handled() {
    let handler = ShippingEvents::new(MessageFactory::new("shipping"), Topology::default(), "test-carrier".into());
    assert!(!handler.message_types().contains(&OrderCancelled::MESSAGE_TYPE));
    assert_eq!(handler.message_types(), [OrderPaid::MESSAGE_TYPE]);
}

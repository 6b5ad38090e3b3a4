//! The email handler against a throwaway database on the machine's own
//! PostgreSQL (TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432;
//! the test fails if it is unreachable): one e-mail per order and kind,
//! however often its event arrives.

use contracts::catalogue::{OrderCancelled, OrderPaid, ShipmentScheduled};
use contracts::{MessageContract, Topology};
use email_service::events::EmailEvents;
use messaging::{IncomingMessage, MessageFactory, MessageHandler, MessageSource};
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
        let name = format!("email_test_{}", Uuid::now_v7().simple());
        admin().await.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("create database");
        let pool = PgPool::connect(&format!("{}/{name}", server_url())).await.expect("connect");
        messaging::migrations::run(&pool, sqlx::migrate!("../../migrations/email")).await.expect("migrate");
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
                group: "email".into(),
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
async fn each_event_records_its_email_once() {
    let db = TestDatabase::new().await;
    let completed = Uuid::now_v7();
    let paid =
        OrderPaid { order_id: completed, customer_id: "c-1".into(), amount_cents: 1_798, payment_id: Uuid::now_v7() };
    let shipped = ShipmentScheduled {
        order_id: completed,
        shipment_id: Uuid::now_v7(),
        customer_id: "c-1".into(),
        carrier: "test-carrier".into(),
    };
    let gone = Uuid::now_v7();
    let cancelled = OrderCancelled { order_id: gone, customer_id: "c-2".into(), reason: "payment declined".into() };
    for _ in 0..2 {
        db.handle(&EmailEvents, completed, 2, &paid).await;
        db.handle(&EmailEvents, completed, 1, &shipped).await;
        db.handle(&EmailEvents, gone, 2, &cancelled).await;
    }
    let recorded: Vec<(Uuid, String, String, String)> =
        sqlx::query_as("SELECT order_id, kind, recipient, message_id_header FROM sent_emails ORDER BY created_at")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let kinds: Vec<&str> = recorded.iter().map(|(_, kind, _, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["order_confirmation", "shipment_notice", "cancellation_notice"]);
    assert_eq!(recorded[2].2, "c-2@example.com");
    assert_eq!(recorded[2].3, format!("<{gone}.cancellation_notice@ordermesh.local>"));
    // Recorded, not yet delivered: that is the sender's job.
    assert_eq!(db.count("SELECT count(*) FROM sent_emails WHERE smtp_delivered_at IS NULL").await, 3);
    db.drop_it().await;
}

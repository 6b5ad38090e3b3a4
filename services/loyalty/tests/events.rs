//! The loyalty handler against a throwaway database on the machine's own
//! PostgreSQL (TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432;
//! the test fails if it is unreachable): one credit per paid order, one
//! reversal per credited cancelled order, nothing for the rest.

use contracts::catalogue::{OrderCancelled, OrderPaid};
use contracts::{MessageContract, Topology};
use loyalty_service::events::LoyaltyEvents;
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
        let name = format!("loyalty_test_{}", Uuid::now_v7().simple());
        admin().await.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("create database");
        let pool = PgPool::connect(&format!("{}/{name}", server_url())).await.expect("connect");
        messaging::migrations::run(&pool, sqlx::migrate!("../../migrations/loyalty")).await.expect("migrate");
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
                group: "loyalty".into(),
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

impl TestDatabase {
    async fn balance(&self, customer_id: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT balance FROM loyalty_accounts WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(&self.pool)
            .await
            .expect("balance")
    }
}

fn paid(order_id: Uuid, customer_id: &str, amount_cents: i64) -> OrderPaid {
    OrderPaid { order_id, customer_id: customer_id.into(), amount_cents, payment_id: Uuid::now_v7() }
}

fn cancelled(order_id: Uuid, customer_id: &str) -> OrderCancelled {
    OrderCancelled { order_id, customer_id: customer_id.into(), reason: "test".into() }
}

#[tokio::test]
async fn a_paid_order_is_credited_once_and_a_cancellation_reverses_it_once() {
    let db = TestDatabase::new().await;
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    db.handle(&LoyaltyEvents, first, 2, &paid(first, "c-1", 1_798)).await;
    db.handle(&LoyaltyEvents, first, 2, &paid(first, "c-1", 1_798)).await;
    db.handle(&LoyaltyEvents, second, 2, &paid(second, "c-1", 250)).await;
    assert_eq!(db.balance("c-1").await, Some(19));

    db.handle(&LoyaltyEvents, first, 3, &cancelled(first, "c-1")).await;
    db.handle(&LoyaltyEvents, first, 3, &cancelled(first, "c-1")).await;
    assert_eq!(db.balance("c-1").await, Some(2));
    assert_eq!(db.count("SELECT count(*) FROM loyalty_ledger").await, 3);
    assert_eq!(db.count("SELECT sum(points)::int8 FROM loyalty_ledger").await, 2);
    db.drop_it().await;
}

#[tokio::test]
async fn cancelling_an_order_never_credited_changes_nothing() {
    let db = TestDatabase::new().await;
    let order_id = Uuid::now_v7();
    db.handle(&LoyaltyEvents, order_id, 2, &cancelled(order_id, "c-9")).await;
    assert_eq!(db.balance("c-9").await, None, "no account for a customer who never earned points");
    assert_eq!(db.count("SELECT count(*) FROM loyalty_ledger").await, 0);
    db.drop_it().await;
}

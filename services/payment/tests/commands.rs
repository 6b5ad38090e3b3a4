//! The payment handlers against a throwaway database on the machine's own
//! PostgreSQL (TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432;
//! the tests fail if it is unreachable): one charge per order whatever the
//! message ids, deterministic declines, one refund per payment.

use contracts::catalogue::{ProcessPayment, RefundPayment};
use contracts::{MessageContract, Topology};
use messaging::{IncomingMessage, MessageFactory, MessageHandler, MessageSource};
use payment_service::commands::PaymentCommands;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use std::time::Duration;
use uuid::Uuid;

const LIMIT: i64 = 100_000;

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
        let name = format!("payment_test_{}", Uuid::now_v7().simple());
        admin().await.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("create database");
        let pool = PgPool::connect(&format!("{}/{name}", server_url())).await.expect("connect");
        messaging::migrations::run(&pool, sqlx::migrate!("../../migrations/payment")).await.expect("migrate");
        Self { name, pool }
    }

    async fn drop_it(self) {
        self.pool.close().await;
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        admin().await.execute(sql.as_str()).await.expect("drop database");
    }

    /// Handles `command` as the consumer would: in one transaction, committed.
    async fn handle<M: MessageContract>(&self, handler: &PaymentCommands, order_id: Uuid, command: &M) {
        let topology = Topology::default();
        let request = MessageFactory::new("order")
            .command(&topology.payment_commands(), &order_id.to_string(), &topology.order_replies(), None, command)
            .expect("command");
        let message = IncomingMessage {
            envelope: request.envelope,
            payload: serde_json::to_vec(command).expect("payload"),
            source: MessageSource::Queue { queue: topology.payment_commands(), redelivered: false },
        };
        let mut tx = self.pool.begin().await.expect("begin");
        handler.handle(&mut tx, &message).await.expect("handled");
        tx.commit().await.expect("commit");
    }

    /// The replies written to the outbox: `(message type, payload)`, oldest first.
    async fn replies(&self) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String, serde_json::Value)> =
            sqlx::query_as("SELECT message_type, destination, payload FROM outbox ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .expect("outbox");
        for (_, destination, _) in &rows {
            assert_eq!(destination, "order.replies", "replies go to the return address");
        }
        rows.into_iter().map(|(t, _, p)| (t, p)).collect()
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.expect("count")
    }
}

fn charge(order_id: Uuid, method: &str, amount_cents: i64) -> ProcessPayment {
    ProcessPayment { order_id, customer_id: "c-1".into(), amount_cents, payment_method: method.into() }
}

#[tokio::test]
async fn an_order_is_charged_once_whatever_the_message_ids() {
    let db = TestDatabase::new().await;
    let handler = PaymentCommands::new(MessageFactory::new("payment"), LIMIT);
    let order_id = Uuid::now_v7();
    // Two commands for one order, each with its own message id.
    db.handle(&handler, order_id, &charge(order_id, "card", 1_798)).await;
    db.handle(&handler, order_id, &charge(order_id, "card", 1_798)).await;

    assert_eq!(db.count("SELECT count(*) FROM payments").await, 1);
    let replies = db.replies().await;
    assert_eq!(replies.len(), 2);
    for (message_type, payload) in &replies {
        assert_eq!(message_type, "payment.PaymentSucceeded");
        assert_eq!(payload["amount_cents"], 1_798);
    }
    assert_eq!(replies[0].1["payment_id"], replies[1].1["payment_id"], "the same payment both times");
    db.drop_it().await;
}

#[tokio::test]
async fn the_declined_card_and_an_amount_over_the_limit_are_declined() {
    let db = TestDatabase::new().await;
    let handler = PaymentCommands::new(MessageFactory::new("payment"), LIMIT);
    let declined_card = Uuid::now_v7();
    db.handle(&handler, declined_card, &charge(declined_card, "card_declined", 100)).await;
    let over_default = Uuid::now_v7();
    db.handle(&handler, over_default, &charge(over_default, "card", LIMIT + 1)).await;
    // A customer limit overrides the default, both ways.
    sqlx::query("INSERT INTO customer_limits (customer_id, limit_cents) VALUES ('c-1', 500)")
        .execute(&db.pool)
        .await
        .unwrap();
    let over_own = Uuid::now_v7();
    db.handle(&handler, over_own, &charge(over_own, "card", 501)).await;
    let within_own = Uuid::now_v7();
    db.handle(&handler, within_own, &charge(within_own, "card", 500)).await;

    let types: Vec<String> = db.replies().await.into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        ["payment.PaymentDeclined", "payment.PaymentDeclined", "payment.PaymentDeclined", "payment.PaymentSucceeded"]
    );
    assert_eq!(db.count("SELECT count(*) FROM payments WHERE status = 'declined'").await, 3);
    db.drop_it().await;
}

#[tokio::test]
async fn a_payment_is_refunded_once_and_nothing_charged_refunds_nothing() {
    let db = TestDatabase::new().await;
    let handler = PaymentCommands::new(MessageFactory::new("payment"), LIMIT);
    let paid = Uuid::now_v7();
    db.handle(&handler, paid, &charge(paid, "card", 2_450)).await;
    let refund = |order_id| RefundPayment { order_id, reason: "order already cancelled".into() };
    db.handle(&handler, paid, &refund(paid)).await;
    db.handle(&handler, paid, &refund(paid)).await;
    let never_charged = Uuid::now_v7();
    db.handle(&handler, never_charged, &refund(never_charged)).await;
    let declined = Uuid::now_v7();
    db.handle(&handler, declined, &charge(declined, "card_declined", 100)).await;
    db.handle(&handler, declined, &refund(declined)).await;

    assert_eq!(db.count("SELECT count(*) FROM refunds").await, 1);
    let refunds: Vec<serde_json::Value> =
        db.replies().await.into_iter().filter(|(t, _)| t == "payment.PaymentRefunded").map(|(_, p)| p).collect();
    let amounts: Vec<i64> = refunds.iter().map(|p| p["amount_cents"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [2_450, 2_450, 0, 0]);
    assert_eq!(refunds[0]["payment_id"], refunds[1]["payment_id"]);
    db.drop_it().await;
}

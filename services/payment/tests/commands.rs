//! The payment handlers against a throwaway database on the test stack's
//! PostgreSQL (TEST_POSTGRES_URL, see test-support;
//! the tests fail if it is unreachable): one charge per order whatever the
//! message ids, deterministic declines, one refund per payment.

use contracts::catalogue::{ProcessPayment, RefundPayment};
use contracts::{MessageContract, Topology};
use messaging::{IncomingMessage, MessageFactory};
use payment_service::commands::PaymentCommands;
use test_support::{ThrowawayDatabase, order_command};
use uuid::Uuid;

const LIMIT: i64 = 100_000;

/// What these tests read from a payment database.
trait PaymentDatabase {
    async fn replies(&self) -> Vec<(String, serde_json::Value)>;
}

impl PaymentDatabase for ThrowawayDatabase {
    /// The replies written to the outbox: `(message type, payload)`, oldest first.
    async fn replies(&self) -> Vec<(String, serde_json::Value)> {
        let rows: Vec<(String, String, serde_json::Value)> =
            sqlx::query_as("SELECT message_type, destination, payload FROM outbox ORDER BY id")
                .fetch_all(self.pool())
                .await
                .expect("outbox");
        for (_, destination, _) in &rows {
            assert_eq!(destination, "order.replies", "replies go to the return address");
        }
        rows.into_iter().map(|(t, _, p)| (t, p)).collect()
    }
}

/// `command` as the order service sends it to payment's queue.
fn from_order<M: MessageContract>(order_id: Uuid, command: &M) -> IncomingMessage {
    order_command(&Topology::default().payment_commands(), order_id, command)
}

fn charge(order_id: Uuid, method: &str, amount_cents: i64) -> ProcessPayment {
    ProcessPayment { order_id, customer_id: "c-1".into(), amount_cents, payment_method: method.into() }
}

#[tokio::test]
async fn an_order_is_charged_once_whatever_the_message_ids() {
    let db = ThrowawayDatabase::create("payment_test", sqlx::migrate!("../../migrations/payment")).await;
    let handler = PaymentCommands::new(MessageFactory::new("payment"), LIMIT);
    let order_id = Uuid::now_v7();
    // Two commands for one order, each with its own message id.
    db.handle(&handler, &from_order(order_id, &charge(order_id, "card", 1_798))).await;
    db.handle(&handler, &from_order(order_id, &charge(order_id, "card", 1_798))).await;

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
    let db = ThrowawayDatabase::create("payment_test", sqlx::migrate!("../../migrations/payment")).await;
    let handler = PaymentCommands::new(MessageFactory::new("payment"), LIMIT);
    let declined_card = Uuid::now_v7();
    db.handle(&handler, &from_order(declined_card, &charge(declined_card, "card_declined", 100))).await;
    let over_default = Uuid::now_v7();
    db.handle(&handler, &from_order(over_default, &charge(over_default, "card", LIMIT + 1))).await;
    // A customer limit overrides the default, both ways.
    sqlx::query("INSERT INTO customer_limits (customer_id, limit_cents) VALUES ('c-1', 500)")
        .execute(db.pool())
        .await
        .unwrap();
    let over_own = Uuid::now_v7();
    db.handle(&handler, &from_order(over_own, &charge(over_own, "card", 501))).await;
    let within_own = Uuid::now_v7();
    db.handle(&handler, &from_order(within_own, &charge(within_own, "card", 500))).await;

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
    let db = ThrowawayDatabase::create("payment_test", sqlx::migrate!("../../migrations/payment")).await;
    let handler = PaymentCommands::new(MessageFactory::new("payment"), LIMIT);
    let paid = Uuid::now_v7();
    db.handle(&handler, &from_order(paid, &charge(paid, "card", 2_450))).await;
    let refund = |order_id| RefundPayment { order_id, reason: "order already cancelled".into() };
    db.handle(&handler, &from_order(paid, &refund(paid))).await;
    db.handle(&handler, &from_order(paid, &refund(paid))).await;
    let never_charged = Uuid::now_v7();
    db.handle(&handler, &from_order(never_charged, &refund(never_charged))).await;
    let declined = Uuid::now_v7();
    db.handle(&handler, &from_order(declined, &charge(declined, "card_declined", 100))).await;
    db.handle(&handler, &from_order(declined, &refund(declined))).await;

    assert_eq!(db.count("SELECT count(*) FROM refunds").await, 1);
    let refunds: Vec<serde_json::Value> =
        db.replies().await.into_iter().filter(|(t, _)| t == "payment.PaymentRefunded").map(|(_, p)| p).collect();
    let amounts: Vec<i64> = refunds.iter().map(|p| p["amount_cents"].as_i64().unwrap()).collect();
    assert_eq!(amounts, [2_450, 2_450, 0, 0]);
    assert_eq!(refunds[0]["payment_id"], refunds[1]["payment_id"]);
    db.drop_it().await;
}

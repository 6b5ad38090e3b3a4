//! The order saga against a throwaway database on the test stack's
//! PostgreSQL (TEST_POSTGRES_URL, see test-support;
//! the tests fail if it is unreachable): each reply moves the order forward
//! once; a repeated, late or unawaited reply is recorded and changes nothing.

use contracts::catalogue::{
    OrderLine, PaymentDeclined, PaymentSucceeded, PricedLine, ReserveStock, StockRejected, StockReserved,
};
use contracts::{Envelope, MessageContract, Topology};
use messaging::{IncomingMessage, MessageFactory, MessageSource};
use order_service::saga::OrderSaga;
use order_service::store::{self, NewOrder};
use test_support::ThrowawayDatabase;
use uuid::Uuid;

async fn database() -> ThrowawayDatabase {
    ThrowawayDatabase::create("order_saga_test", sqlx::migrate!("../../migrations/order")).await
}

fn saga() -> OrderSaga {
    OrderSaga::new(MessageFactory::new("order"), Topology::default())
}

/// A placed order waiting for the reply to its `ReserveStock`, and that command.
async fn placed_order(db: &ThrowawayDatabase) -> (Uuid, Envelope) {
    let order_id = Uuid::now_v7();
    let topology = Topology::default();
    let reserve = MessageFactory::new("order")
        .command(
            &topology.stock_commands(),
            &order_id.to_string(),
            &topology.order_replies(),
            None,
            &ReserveStock { order_id, lines: vec![OrderLine { sku: "SKU-001".into(), quantity: 2 }] },
        )
        .expect("command");
    let order = NewOrder {
        id: order_id,
        customer_id: "c-saga".into(),
        payment_method: "card".into(),
        lines: vec![("SKU-001".into(), 2)],
        idempotency_key: None,
        request_fingerprint: "{}".into(),
        trace_id: None,
        awaiting_message_id: Some(reserve.envelope.message_id),
    };
    let mut tx = db.pool().begin().await.expect("begin");
    store::insert_order(&mut tx, &order).await.expect("insert");
    tx.commit().await.expect("commit");
    (order_id, reserve.envelope)
}

/// `payload` from `producer` as a reply to `request`, arriving on order.replies
/// under a message id of its own.
fn reply_to<M: MessageContract>(producer: &str, request: &Envelope, payload: &M) -> IncomingMessage {
    let reply = MessageFactory::new(producer).reply(request, payload).expect("reply");
    IncomingMessage {
        envelope: reply.envelope,
        payload: serde_json::to_vec(payload).expect("payload"),
        source: MessageSource::Queue { queue: Topology::default().order_replies(), redelivered: false },
    }
}

fn reserved(order_id: Uuid) -> StockReserved {
    StockReserved {
        order_id,
        lines: vec![PricedLine { sku: "SKU-001".into(), quantity: 2, unit_price_cents: 999 }],
        total_cents: 1_998,
    }
}

/// The order's status and the history notes of what was ignored.
async fn status_and_ignored(db: &ThrowawayDatabase, order_id: Uuid) -> (String, Vec<String>) {
    let order = store::fetch_order(db.pool(), order_id).await.expect("fetch").expect("the order exists");
    let ignored = order
        .history
        .iter()
        .filter_map(|h| h.note.clone())
        .filter(|note| note.contains("stale, repeated or out of order"))
        .collect();
    (order.status, ignored)
}

/// Messages of `message_type` the saga wrote to its outbox.
async fn sent(db: &ThrowawayDatabase, message_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE message_type = $1")
        .bind(message_type)
        .fetch_one(db.pool())
        .await
        .expect("outbox")
}

/// The `ProcessPayment` the saga sent, which a payment reply must answer.
async fn payment_request(db: &ThrowawayDatabase) -> Envelope {
    let (envelope,): (sqlx::types::Json<Envelope>,) =
        sqlx::query_as("SELECT envelope FROM outbox WHERE message_type = 'payment.ProcessPayment'")
            .fetch_one(db.pool())
            .await
            .expect("ProcessPayment in the outbox");
    envelope.0
}

#[tokio::test]
async fn a_repeated_reply_under_a_new_message_id_moves_the_order_once() {
    let db = database().await;
    let saga = saga();
    let (order_id, reserve) = placed_order(&db).await;

    // Stock answers twice (the inbox cannot help: each reply has its own id).
    db.handle(&saga, &reply_to("stock", &reserve, &reserved(order_id))).await;
    db.handle(&saga, &reply_to("stock", &reserve, &reserved(order_id))).await;
    let (status, ignored) = status_and_ignored(&db, order_id).await;
    assert_eq!(status, "STOCK_RESERVED");
    assert_eq!(ignored.len(), 1, "the second reply is recorded as ignored: {ignored:?}");
    assert_eq!(sent(&db, "payment.ProcessPayment").await, 1, "one charge requested");
    db.drop_it().await;
}

#[tokio::test]
async fn a_late_reply_never_moves_a_paid_order_backwards() {
    let db = database().await;
    let saga = saga();
    let (order_id, reserve) = placed_order(&db).await;
    db.handle(&saga, &reply_to("stock", &reserve, &reserved(order_id))).await;
    let charge = payment_request(&db).await;
    let paid = PaymentSucceeded { order_id, payment_id: Uuid::now_v7(), amount_cents: 1_998 };
    db.handle(&saga, &reply_to("payment", &charge, &paid)).await;
    assert_eq!(status_and_ignored(&db, order_id).await.0, "PAID");

    // A decline and a stock rejection after the order was paid, answering
    // the very commands it sent, and a success answering no charge at all.
    let declined = PaymentDeclined { order_id, reason: "late".into() };
    db.handle(&saga, &reply_to("payment", &charge, &declined)).await;
    let rejected = StockRejected { order_id, reason: "late".into(), unavailable: vec![] };
    db.handle(&saga, &reply_to("stock", &reserve, &rejected)).await;
    let stray = PaymentSucceeded { order_id, payment_id: Uuid::now_v7(), amount_cents: 1 };
    db.handle(&saga, &reply_to("payment", &reserve, &stray)).await;

    let (status, ignored) = status_and_ignored(&db, order_id).await;
    assert_eq!(status, "PAID", "never backwards");
    assert_eq!(ignored.len(), 3, "each one recorded in the history: {ignored:?}");
    assert_eq!(sent(&db, "stock.ReleaseStock").await, 0, "no compensation for a paid order");
    assert_eq!(sent(&db, "orders.OrderCancelled").await, 0);
    assert_eq!(sent(&db, "orders.OrderPaid").await, 1, "OrderPaid published once");
    db.drop_it().await;
}

#[tokio::test]
async fn a_late_reservation_of_a_cancelled_order_is_given_back() {
    let db = database().await;
    let saga = saga();
    let (order_id, reserve) = placed_order(&db).await;
    let rejected = StockRejected { order_id, reason: "out of stock".into(), unavailable: vec!["SKU-001".into()] };
    db.handle(&saga, &reply_to("stock", &reserve, &rejected)).await;
    assert_eq!(status_and_ignored(&db, order_id).await.0, "CANCELLED");
    assert_eq!(sent(&db, "orders.OrderCancelled").await, 1);

    // The reservation succeeding after all must not revive the order, and
    // must not stay held either.
    db.handle(&saga, &reply_to("stock", &reserve, &reserved(order_id))).await;
    let (status, _) = status_and_ignored(&db, order_id).await;
    assert_eq!(status, "CANCELLED");
    assert_eq!(sent(&db, "payment.ProcessPayment").await, 0, "nothing charged");
    assert_eq!(sent(&db, "stock.ReleaseStock").await, 1, "the late reservation is released");
    assert_eq!(sent(&db, "orders.OrderCancelled").await, 1, "cancelled once");
    db.drop_it().await;
}

//! The shipping handler against a throwaway database on the test stack's
//! PostgreSQL (TEST_POSTGRES_URL, see test-support;
//! the test fails if it is unreachable): one shipment and one
//! `ShipmentScheduled` per paid order, however often the order is reported paid.

use contracts::catalogue::{OrderCancelled, OrderPaid};
use contracts::{MessageContract, Topology};
use messaging::{MessageFactory, MessageHandler};
use shipping_service::events::ShippingEvents;
use test_support::{ThrowawayDatabase, order_event};
use uuid::Uuid;

#[tokio::test]
async fn a_paid_order_gets_one_shipment_and_one_event() {
    let db = ThrowawayDatabase::create("shipping_test", sqlx::migrate!("../../migrations/shipping")).await;
    let handler = ShippingEvents::new(MessageFactory::new("shipping"), Topology::default(), "test-carrier".into());
    let order_id = Uuid::now_v7();
    let paid = OrderPaid { order_id, customer_id: "c-1".into(), amount_cents: 1_798, payment_id: Uuid::now_v7() };
    db.handle(&handler, &order_event("shipping", order_id, 2, &paid)).await;
    // The same fact again under a new message id changes nothing.
    db.handle(&handler, &order_event("shipping", order_id, 2, &paid)).await;

    assert_eq!(db.count("SELECT count(*) FROM shipments").await, 1);
    let events: Vec<(String, String, String, serde_json::Value, serde_json::Value)> =
        sqlx::query_as("SELECT message_type, destination, partition_key, envelope, payload FROM outbox ORDER BY id")
            .fetch_all(db.pool())
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
async fn a_cancellation_is_taken_through_the_inbox_and_ships_nothing() {
    let db = ThrowawayDatabase::create("shipping_test", sqlx::migrate!("../../migrations/shipping")).await;
    let handler = ShippingEvents::new(MessageFactory::new("shipping"), Topology::default(), "test-carrier".into());
    // Taken (so the sequence guard sees it) but without effect.
    assert_eq!(handler.message_types(), [OrderPaid::MESSAGE_TYPE, OrderCancelled::MESSAGE_TYPE]);
    let order_id = Uuid::now_v7();
    let cancelled = OrderCancelled { order_id, customer_id: "c-1".into(), reason: "out of stock".into() };
    db.handle(&handler, &order_event("shipping", order_id, 2, &cancelled)).await;
    assert_eq!(db.count("SELECT count(*) FROM shipments").await, 0);
    assert_eq!(db.count("SELECT count(*) FROM outbox").await, 0);
    db.drop_it().await;
}

//! The email handler against a throwaway database on the test stack's
//! PostgreSQL (TEST_POSTGRES_URL, see test-support;
//! the test fails if it is unreachable): one e-mail per order and kind,
//! however often its event arrives.

use contracts::catalogue::{OrderCancelled, OrderPaid, ShipmentScheduled};
use email_service::events::EmailEvents;
use test_support::{ThrowawayDatabase, order_event};
use uuid::Uuid;

#[tokio::test]
async fn each_event_records_its_email_once() {
    let db = ThrowawayDatabase::create("email_test", sqlx::migrate!("../../migrations/email")).await;
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
        db.handle(&EmailEvents, &order_event("email", completed, 2, &paid)).await;
        db.handle(&EmailEvents, &order_event("email", completed, 1, &shipped)).await;
        db.handle(&EmailEvents, &order_event("email", gone, 2, &cancelled)).await;
    }
    let recorded: Vec<(Uuid, String, String, String)> =
        sqlx::query_as("SELECT order_id, kind, recipient, message_id_header FROM sent_emails ORDER BY created_at")
            .fetch_all(db.pool())
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

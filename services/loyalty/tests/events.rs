//! The loyalty handler against a throwaway database on the test stack's
//! PostgreSQL (TEST_POSTGRES_URL, see test-support;
//! the test fails if it is unreachable): one credit per paid order, one
//! reversal per credited cancelled order, nothing for the rest.

use contracts::catalogue::{OrderCancelled, OrderPaid};
use loyalty_service::events::LoyaltyEvents;
use test_support::{ThrowawayDatabase, order_event};
use uuid::Uuid;

/// What these tests read from a loyalty database.
trait LoyaltyDatabase {
    async fn balance(&self, customer_id: &str) -> Option<i64>;
}

impl LoyaltyDatabase for ThrowawayDatabase {
    async fn balance(&self, customer_id: &str) -> Option<i64> {
        sqlx::query_scalar("SELECT balance FROM loyalty_accounts WHERE customer_id = $1")
            .bind(customer_id)
            .fetch_optional(self.pool())
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
    let db = ThrowawayDatabase::create("loyalty_test", sqlx::migrate!("../../migrations/loyalty")).await;
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    let paid_first = order_event("loyalty", first, 2, &paid(first, "c-1", 1_798));
    // Delivered twice (a redelivery: same message id): the inbox applies it once.
    assert!(db.deliver("loyalty", &LoyaltyEvents, &paid_first).await);
    assert!(!db.deliver("loyalty", &LoyaltyEvents, &paid_first).await);
    db.deliver("loyalty", &LoyaltyEvents, &order_event("loyalty", second, 2, &paid(second, "c-1", 250))).await;
    assert_eq!(db.balance("c-1").await, Some(19));

    let cancel_first = order_event("loyalty", first, 3, &cancelled(first, "c-1"));
    db.deliver("loyalty", &LoyaltyEvents, &cancel_first).await;
    db.deliver("loyalty", &LoyaltyEvents, &cancel_first).await;
    assert_eq!(db.balance("c-1").await, Some(2));
    assert_eq!(db.count("SELECT count(*) FROM loyalty_ledger").await, 3);
    assert_eq!(db.count("SELECT sum(points)::int8 FROM loyalty_ledger").await, 2);
    db.drop_it().await;
}

/// The ledger itself does not deduplicate: without the inbox a redelivered
/// OrderPaid credits twice. This is what the chaos suite's skip-inbox
/// negative control relies on to show the checker noticing.
#[tokio::test]
async fn without_the_inbox_a_redelivery_credits_twice() {
    let db = ThrowawayDatabase::create("loyalty_test", sqlx::migrate!("../../migrations/loyalty")).await;
    let order_id = Uuid::now_v7();
    let paid_once = order_event("loyalty", order_id, 2, &paid(order_id, "c-2", 1_000));
    db.handle(&LoyaltyEvents, &paid_once).await;
    db.handle(&LoyaltyEvents, &paid_once).await;
    assert_eq!(db.balance("c-2").await, Some(20));
    db.drop_it().await;
}

#[tokio::test]
async fn cancelling_an_order_never_credited_changes_nothing() {
    let db = ThrowawayDatabase::create("loyalty_test", sqlx::migrate!("../../migrations/loyalty")).await;
    let order_id = Uuid::now_v7();
    db.handle(&LoyaltyEvents, &order_event("loyalty", order_id, 2, &cancelled(order_id, "c-9"))).await;
    assert_eq!(db.balance("c-9").await, None, "no account for a customer who never earned points");
    assert_eq!(db.count("SELECT count(*) FROM loyalty_ledger").await, 0);
    db.drop_it().await;
}

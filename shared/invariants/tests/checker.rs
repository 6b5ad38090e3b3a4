//! The checker against real databases: throwaway databases on the test
//! stack's PostgreSQL (TEST_POSTGRES_URL, see test-support),
//! migrated with the services' real migrations, filled with a consistent
//! little world, then corrupted one row at a time. Each corruption must fail
//! exactly the invariant it breaks, naming the culprit. These tests fail,
//! never skip, when PostgreSQL is unreachable.

use invariants::{CheckOptions, DatabaseUrls, Databases, Invariant, Report};
use sqlx::PgPool;
use std::collections::BTreeSet;
use test_support::ThrowawayDatabase;
use uuid::Uuid;

/// Six migrated databases holding one COMPLETED order (2 × SKU-001 for
/// customer c-1) and one CANCELLED order (payment declined, stock released,
/// customer c-2), with every row the services leave behind for them.
/// Dropped when the test ends, passed or not.
struct World {
    db: Databases,
    urls: DatabaseUrls,
    completed: Uuid,
    cancelled: Uuid,
    /// Dropped with the world.
    _databases: [ThrowawayDatabase; 6],
}

impl World {
    async fn new() -> Self {
        let (order, stock, payment, shipping, email, loyalty) = tokio::join!(
            ThrowawayDatabase::create("invariants_test_order", sqlx::migrate!("../../migrations/order")),
            ThrowawayDatabase::create("invariants_test_stock", sqlx::migrate!("../../migrations/stock")),
            ThrowawayDatabase::create("invariants_test_payment", sqlx::migrate!("../../migrations/payment")),
            ThrowawayDatabase::create("invariants_test_shipping", sqlx::migrate!("../../migrations/shipping")),
            ThrowawayDatabase::create("invariants_test_email", sqlx::migrate!("../../migrations/email")),
            ThrowawayDatabase::create("invariants_test_loyalty", sqlx::migrate!("../../migrations/loyalty")),
        );
        let urls = DatabaseUrls {
            order: order.url().to_owned(),
            stock: stock.url().to_owned(),
            payment: payment.url().to_owned(),
            shipping: shipping.url().to_owned(),
            email: email.url().to_owned(),
            loyalty: loyalty.url().to_owned(),
        };
        let db = Databases::connect(&urls).await.expect("connect to the test databases");
        let world = Self {
            db,
            urls,
            completed: Uuid::now_v7(),
            cancelled: Uuid::now_v7(),
            _databases: [order, stock, payment, shipping, email, loyalty],
        };
        world.fill().await;
        world
    }

    async fn fill(&self) {
        let (done, gone) = (self.completed, self.cancelled);
        let (paid, declined, shipment) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        run(
            &self.db.order,
            &format!(
                "INSERT INTO orders (id, customer_id, payment_method, status, total_cents, payment_id, event_sequence)
             VALUES ('{done}', 'c-1', 'card', 'COMPLETED', 1798, '{paid}', 3),
                    ('{gone}', 'c-2', 'card_declined', 'CANCELLED', 4599, NULL, 2);
             INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents)
             VALUES ('{done}', 0, 'SKU-001', 2, 899), ('{gone}', 0, 'SKU-002', 1, 4599);"
            ),
        )
        .await;
        // Relayed messages: published, so the outbox is drained.
        self.outbox_row(&self.db.order, "orders.OrderPaid", done, true).await;
        self.outbox_row(&self.db.payment, "payment.PaymentSucceeded", done, true).await;
        run(
            &self.db.stock,
            &format!(
                "UPDATE products SET on_hand = on_hand - 2 WHERE sku = 'SKU-001';
             INSERT INTO reservations (order_id, sku, quantity, status, released_at)
             VALUES ('{done}', 'SKU-001', 2, 'reserved', NULL), ('{gone}', 'SKU-002', 1, 'released', now());"
            ),
        )
        .await;
        run(&self.db.payment, &format!(
            "INSERT INTO payments (id, order_id, customer_id, amount_cents, payment_method, status, decline_reason, request_message_id)
             VALUES ('{paid}', '{done}', 'c-1', 1798, 'card', 'succeeded', NULL, '{}'),
                    ('{declined}', '{gone}', 'c-2', 4599, 'card_declined', 'declined', 'card declined', '{}');",
            Uuid::now_v7(), Uuid::now_v7()
        ))
        .await;
        run(
            &self.db.shipping,
            &format!(
                "INSERT INTO shipments (id, order_id, customer_id, payment_id, carrier, cause_message_id)
             VALUES ('{shipment}', '{done}', 'c-1', '{paid}', 'test-carrier', '{}');",
                Uuid::now_v7()
            ),
        )
        .await;
        self.email(done, "order_confirmation").await;
        self.email(done, "shipment_notice").await;
        self.email(gone, "cancellation_notice").await;
        run(
            &self.db.loyalty,
            &format!(
                "INSERT INTO loyalty_accounts (customer_id, balance) VALUES ('c-1', 17);
             INSERT INTO loyalty_ledger (customer_id, order_id, kind, points, cause_message_id)
             VALUES ('c-1', '{done}', 'credit', 17, '{}');",
                Uuid::now_v7()
            ),
        )
        .await;
    }

    /// An order stuck in `PAID`, never to become final.
    async fn paid_order(&self) -> Uuid {
        let id = Uuid::now_v7();
        run(
            &self.db.order,
            &format!(
                "INSERT INTO orders (id, customer_id, payment_method, status) VALUES ('{id}', 'c-3', 'card', 'PAID')"
            ),
        )
        .await;
        id
    }

    async fn outbox_row(&self, pool: &PgPool, message_type: &str, order_id: Uuid, sent: bool) {
        let sent_at = if sent { "now()" } else { "NULL" };
        run(pool, &format!(
            "INSERT INTO outbox (message_id, message_type, transport, destination, partition_key, lane, envelope, payload, sent_at)
             VALUES ('{}', '{message_type}', 'kafka', 'orders', '{order_id}', 0, '{{}}', '{{}}', {sent_at});",
            Uuid::now_v7()
        ))
        .await;
    }

    async fn email(&self, order_id: Uuid, kind: &str) {
        run(
            &self.db.email,
            &format!(
            "INSERT INTO sent_emails (id, order_id, kind, recipient, subject, body, message_id_header, cause_message_id)
             VALUES ('{}', '{order_id}', '{kind}', 'c@example.com', 's', 'b', '<{}.{kind}@ordermesh.local>', '{}');",
            Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7()
        ),
        )
        .await;
    }

    async fn check(&self) -> Report {
        self.check_with(CheckOptions::default()).await
    }

    async fn check_with(&self, options: CheckOptions) -> Report {
        invariants::check(&self.db, &options).await.expect("the checker reads the test databases")
    }

    fn accepted(&self, ids: &[Uuid]) -> CheckOptions {
        CheckOptions { accepted: Some(ids.iter().copied().collect::<BTreeSet<_>>()), ..CheckOptions::default() }
    }

    fn urls(&self) -> DatabaseUrls {
        self.urls.clone()
    }
}

async fn run(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(sql).execute(pool).await.unwrap_or_else(|e| panic!("{e}\n{sql}"));
}

/// The report fails exactly `invariant`, and names `culprit` there.
fn assert_fails_only(report: &Report, invariant: Invariant, culprit: &str) {
    assert_eq!(report.failed_invariants(), [invariant], "{report}");
    let check = report.get(invariant).expect("every invariant is reported");
    assert!(check.names(culprit), "{invariant:?} should name {culprit}:\n{report}");
}

#[tokio::test]
async fn a_consistent_world_passes_every_check() {
    let world = World::new().await;
    let report = world.check_with(world.accepted(&[world.completed, world.cancelled])).await;
    assert!(report.passed(), "{report}");
    let orders = report.get(Invariant::OrdersFinal).unwrap();
    assert_eq!((orders.counts["completed"], orders.counts["cancelled"], orders.counts["accepted"]), (1, 1, 2));
    assert_eq!(report.get(Invariant::Email).unwrap().counts["emails"], 3);
    // No broker given: reported as skipped, not as passed.
    assert_eq!(report.skipped().len(), 3, "{report}");
    assert!(!report.get(Invariant::AmqpDeadLettersEmpty).unwrap().passed());
    assert!(!report.get(Invariant::NothingInFlight).unwrap().passed());
}

#[tokio::test]
async fn a_second_charge_for_a_completed_order_fails_payment() {
    let world = World::new().await;
    // The schema forbids it; a broken service without that constraint must still be caught.
    run(
        &world.db.payment,
        &format!(
            "ALTER TABLE payments DROP CONSTRAINT payments_order_id_key;
         INSERT INTO payments (id, order_id, customer_id, amount_cents, payment_method, status, request_message_id)
         VALUES ('{}', '{}', 'c-1', 1798, 'card', 'succeeded', '{}');",
            Uuid::now_v7(),
            world.completed,
            Uuid::now_v7()
        ),
    )
    .await;
    assert_fails_only(&world.check().await, Invariant::Payment, &world.completed.to_string());
}

#[tokio::test]
async fn a_charge_standing_for_a_cancelled_order_fails_payment_until_refunded() {
    let world = World::new().await;
    let charge = Uuid::now_v7();
    run(
        &world.db.payment,
        &format!(
            "UPDATE payments SET status = 'succeeded', decline_reason = NULL, id = '{charge}' WHERE order_id = '{}';",
            world.cancelled
        ),
    )
    .await;
    assert_fails_only(&world.check().await, Invariant::Payment, &world.cancelled.to_string());
    run(
        &world.db.payment,
        &format!(
            "INSERT INTO refunds (id, payment_id, order_id, amount_cents, reason, request_message_id)
         VALUES ('{}', '{charge}', '{}', 4599, 'order already cancelled', '{}');",
            Uuid::now_v7(),
            world.cancelled,
            Uuid::now_v7()
        ),
    )
    .await;
    assert!(world.check().await.passed());
}

#[tokio::test]
async fn a_missing_email_fails_email() {
    let world = World::new().await;
    run(
        &world.db.email,
        &format!("DELETE FROM sent_emails WHERE order_id = '{}' AND kind = 'shipment_notice'", world.completed),
    )
    .await;
    assert_fails_only(&world.check().await, Invariant::Email, &world.completed.to_string());
}

#[tokio::test]
async fn a_duplicate_email_fails_email() {
    let world = World::new().await;
    run(&world.db.email, "ALTER TABLE sent_emails DROP CONSTRAINT sent_emails_order_id_kind_key").await;
    world.email(world.cancelled, "cancellation_notice").await;
    assert_fails_only(&world.check().await, Invariant::Email, &world.cancelled.to_string());
}

#[tokio::test]
async fn an_accepted_order_that_was_lost_fails_orders() {
    let world = World::new().await;
    let lost = Uuid::now_v7();
    let report = world.check_with(world.accepted(&[world.completed, world.cancelled, lost])).await;
    assert_fails_only(&report, Invariant::OrdersFinal, &lost.to_string());
    assert_eq!(report.get(Invariant::OrdersFinal).unwrap().counts["accepted_missing"], 1);
}

#[tokio::test]
async fn an_order_no_request_created_fails_orders() {
    let world = World::new().await;
    let report = world.check_with(world.accepted(&[world.completed])).await;
    assert_fails_only(&report, Invariant::OrdersFinal, &world.cancelled.to_string());
}

#[tokio::test]
async fn an_order_still_in_progress_fails_orders() {
    let world = World::new().await;
    let stuck = world.paid_order().await;
    assert_fails_only(&world.check().await, Invariant::OrdersFinal, &stuck.to_string());
}

#[tokio::test]
async fn a_shipment_for_a_cancelled_order_fails_shipping() {
    let world = World::new().await;
    run(
        &world.db.shipping,
        &format!(
            "INSERT INTO shipments (id, order_id, customer_id, payment_id, carrier, cause_message_id)
         VALUES ('{}', '{}', 'c-2', '{}', 'test-carrier', '{}');",
            Uuid::now_v7(),
            world.cancelled,
            Uuid::now_v7(),
            Uuid::now_v7()
        ),
    )
    .await;
    assert_fails_only(&world.check().await, Invariant::Shipping, &world.cancelled.to_string());
}

#[tokio::test]
async fn stock_taken_that_no_order_holds_fails_stock() {
    let world = World::new().await;
    run(&world.db.stock, "UPDATE products SET on_hand = on_hand - 1 WHERE sku = 'SKU-001'").await;
    assert_fails_only(&world.check().await, Invariant::Stock, "SKU-001");
}

#[tokio::test]
async fn a_reservation_left_by_a_cancelled_order_fails_stock() {
    let world = World::new().await;
    run(
        &world.db.stock,
        &format!(
            "UPDATE reservations SET status = 'reserved', released_at = NULL WHERE order_id = '{}';
         UPDATE products SET on_hand = on_hand - 1 WHERE sku = 'SKU-002';",
            world.cancelled
        ),
    )
    .await;
    let report = world.check().await;
    assert_fails_only(&report, Invariant::Stock, &world.cancelled.to_string());
    assert!(report.get(Invariant::Stock).unwrap().names("SKU-002"), "{report}");
}

/// Stock's books disagree with themselves though every order looks right:
/// a reservation row of a SKU the order never had, on hand untouched.
#[tokio::test]
async fn a_reservation_row_that_on_hand_does_not_show_fails_stock() {
    let world = World::new().await;
    run(
        &world.db.stock,
        &format!(
            "INSERT INTO reservations (order_id, sku, quantity, status) VALUES ('{}', 'SKU-003', 1, 'reserved')",
            world.completed
        ),
    )
    .await;
    assert_fails_only(&world.check().await, Invariant::Stock, "SKU-003");
}

#[tokio::test]
async fn a_lost_credit_fails_loyalty() {
    let world = World::new().await;
    run(&world.db.loyalty, "DELETE FROM loyalty_ledger; UPDATE loyalty_accounts SET balance = 0;").await;
    let report = world.check().await;
    assert_fails_only(&report, Invariant::Loyalty, &world.completed.to_string());
    assert!(report.get(Invariant::Loyalty).unwrap().names("c-1"), "{report}");
    assert_eq!(report.get(Invariant::Loyalty).unwrap().counts["orders_over_credited"], 0, "too few, not too many");
}

/// What skipping the inbox does: the same credit applied a second time.
#[tokio::test]
async fn a_credit_applied_twice_fails_loyalty_as_over_credited() {
    let world = World::new().await;
    run(
        &world.db.loyalty,
        &format!(
            "INSERT INTO loyalty_ledger (customer_id, order_id, kind, points, cause_message_id)
             VALUES ('c-1', '{}', 'credit', 17, '{}');
             UPDATE loyalty_accounts SET balance = 34 WHERE customer_id = 'c-1';",
            world.completed,
            Uuid::now_v7()
        ),
    )
    .await;
    let report = world.check().await;
    assert_fails_only(&report, Invariant::Loyalty, &world.completed.to_string());
    assert_eq!(report.get(Invariant::Loyalty).unwrap().counts["orders_over_credited"], 1, "{report}");
}

#[tokio::test]
async fn a_balance_that_disagrees_with_the_ledger_fails_loyalty() {
    let world = World::new().await;
    run(&world.db.loyalty, "UPDATE loyalty_accounts SET balance = 18 WHERE customer_id = 'c-1'").await;
    assert_fails_only(&world.check().await, Invariant::Loyalty, "c-1");
}

#[tokio::test]
async fn an_unsent_outbox_row_fails_outboxes_drained() {
    let world = World::new().await;
    world.outbox_row(&world.db.shipping, "shipments.ShipmentScheduled", world.completed, false).await;
    let report = world.check().await;
    assert_fails_only(&report, Invariant::OutboxesDrained, &world.completed.to_string());
    assert_eq!(report.get(Invariant::OutboxesDrained).unwrap().counts["shipping_unsent"], 1);
}

#[tokio::test]
async fn the_command_exits_0_when_passing_1_when_failing_and_2_without_a_database() {
    let world = World::new().await;
    let command_on = |urls: DatabaseUrls, extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_check-invariants"));
        for (service, url) in urls.iter() {
            cmd.arg(format!("--{service}-db")).arg(url);
        }
        // The brokers default to the dev stack's, which need not be up here.
        cmd.env_remove("AMQP_URL").env_remove("KAFKA_BROKERS").arg("--no-brokers").args(extra);
        cmd.output().expect("run check-invariants")
    };
    let command = |extra: &[&str]| command_on(world.urls(), extra);
    let passing = command(&["--json"]);
    assert_eq!(passing.status.code(), Some(0), "{}", String::from_utf8_lossy(&passing.stderr));
    let json: serde_json::Value = serde_json::from_slice(&passing.stdout).expect("--json prints JSON");
    assert_eq!(json["passed"], true);

    let accepted = std::env::temp_dir().join(format!("invariants_test_{}-accepted.txt", world.completed));
    std::fs::write(&accepted, format!("{}\n", world.completed)).unwrap();
    let failing = command(&["--accepted", accepted.to_str().unwrap()]);
    std::fs::remove_file(&accepted).ok();
    assert_eq!(failing.status.code(), Some(1));
    let text = String::from_utf8_lossy(&failing.stdout);
    assert!(text.contains("FAIL 1") && text.contains(&world.cancelled.to_string()), "{text}");

    let unreachable =
        command_on(DatabaseUrls { order: "postgres://postgres@127.0.0.1:1/none".into(), ..world.urls() }, &[]);
    assert_eq!(unreachable.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains("connecting to the order database"), "{stderr}");
}

#[tokio::test]
async fn pending_work_names_orders_in_flight_missing_ones_and_unsent_messages() {
    let world = World::new().await;
    let lost = Uuid::now_v7();
    let accepted: BTreeSet<Uuid> = [world.completed, world.cancelled].into_iter().collect();
    let pending = invariants::pending_work(&world.db, &accepted).await.unwrap();
    assert!(pending.is_drained(), "{pending:?}");
    assert_eq!(pending.unsent.len(), 6);

    let stuck = world.paid_order().await;
    world.outbox_row(&world.db.shipping, "shipments.ShipmentScheduled", stuck, false).await;
    let accepted: BTreeSet<Uuid> = [world.completed, world.cancelled, stuck, lost].into_iter().collect();
    let pending = invariants::pending_work(&world.db, &accepted).await.unwrap();
    assert!(!pending.is_drained());
    assert_eq!(pending.not_final, [stuck].into_iter().collect());
    assert_eq!(pending.missing, [lost].into_iter().collect());
    assert_eq!((pending.unsent["shipping"], pending.unsent_total()), (1, 1));
    assert_eq!(pending.unfinished(), [stuck, lost].into_iter().collect());
}

//! The whole order flow across the six services: every path of the saga,
//! idempotent placement, 200 concurrent mixed orders checked by the
//! invariant checker, and the flow with Kafka consumer groups. The saga and
//! the 200 orders also hold every message they put on RabbitMQ and Kafka to
//! the AsyncAPI document (docs/api/asyncapi.json).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::{Duration, Instant};
use system_tests::brokers::{FirehoseTap, read_topics};
use system_tests::checker::settle_and_check;
use system_tests::flow::order_id_of;
use system_tests::message_contract::{Broker, Contract, Report};
use system_tests::system::ALL_SERVICES;
use system_tests::{TestSystem, order_request};
use uuid::Uuid;

async fn place(system: &TestSystem, body: &Value) -> Uuid {
    let (status, response) = system.place_order(body, None).await.unwrap();
    assert_eq!(status, 202, "{response}");
    order_id_of(&response)
}

fn history(order: &Value) -> Vec<String> {
    order["history"].as_array().unwrap().iter().map(|h| h["to_status"].as_str().unwrap().to_owned()).collect()
}

/// Every message of `system` that RabbitMQ carried since `tap` started and
/// every record of its topics, checked against the AsyncAPI document.
async fn check_the_wire(system: &TestSystem, tap: FirehoseTap) -> Report {
    let topology = system.topology();
    let mut captured = tap.collect(topology.namespace(), Duration::from_secs(30)).await.unwrap();
    captured
        .extend(read_topics(system.kafka_brokers(), &topology.all_topics(), Duration::from_secs(60)).await.unwrap());
    let report = Contract::load(&topology).unwrap().check_all(&captured);
    println!("{report}");
    report
}

/// The commands, replies and events of the completing and declined paths
/// (the out-of-stock path's are among them): a capture missing any of them,
/// or an empty one, fails.
const SEEN_ON_RABBITMQ: [&str; 8] = [
    "stock.ReserveStock",
    "stock.StockReserved",
    "stock.StockRejected",
    "payment.ProcessPayment",
    "payment.PaymentSucceeded",
    "payment.PaymentDeclined",
    "stock.ReleaseStock",
    "stock.StockReleased",
];
const SEEN_ON_KAFKA: [&str; 5] = [
    "orders.OrderPlaced",
    "orders.OrderPaid",
    "orders.OrderCancelled",
    "orders.OrderCompleted",
    "shipments.ShipmentScheduled",
];

fn assert_the_wire_matches_the_document(report: &Report) {
    assert!(report.passed(), "messages on the wire that the AsyncAPI document does not describe:\n{report}");
    for (broker, expected) in [(Broker::RabbitMq, &SEEN_ON_RABBITMQ[..]), (Broker::Kafka, &SEEN_ON_KAFKA[..])] {
        let missing = report.missing(broker, expected);
        assert!(missing.is_empty(), "never captured on {broker}: {missing:?}\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_of_the_saga_ends_where_it_should() {
    let system = TestSystem::start("saga", &ALL_SERVICES, &[]).await.unwrap();
    // Before the first order: nothing is published until one is placed.
    let tap = FirehoseTap::start(system.stack()).await.unwrap();
    let happy = place(&system, &order_request("c-happy", &[("SKU-002", 1), ("SKU-004", 3)], "card")).await;
    let out_of_stock = place(&system, &order_request("c-oos", &[("SKU-001", 1), ("SKU-EMPTY", 1)], "card")).await;
    let declined = place(&system, &order_request("c-declined", &[("SKU-006", 2)], "card_declined")).await;
    let ids = [happy, out_of_stock, declined];
    system.wait_for_statuses(&ids, &["COMPLETED", "CANCELLED"], Duration::from_secs(30)).await.unwrap();

    // Happy path: reserved, paid, shipped, e-mailed twice, points credited.
    let (_, order) = system.get_json("order", &format!("/orders/{happy}")).await.unwrap();
    assert_eq!(order["status"], "COMPLETED");
    assert_eq!(history(&order), ["PLACED", "STOCK_RESERVED", "PAID", "COMPLETED"]);
    let total = 4599 + 3 * 499;
    assert_eq!(order["total_cents"], total);
    let (_, payments) = system.get_json("payment", &format!("/payments?order_id={happy}")).await.unwrap();
    assert_eq!(payments["payments"].as_array().unwrap().len(), 1, "{payments}");
    let (_, shipments) = system.get_json("shipping", &format!("/shipments?order_id={happy}")).await.unwrap();
    assert_eq!(shipments["shipments"].as_array().unwrap().len(), 1, "{shipments}");
    // Loyalty credits from the order's events, after it turned COMPLETED:
    // its balance is read until it arrives, not at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, loyalty) = system.get_json("loyalty", "/customers/c-happy/loyalty").await.unwrap();
        if loyalty["balance"] == total / 100 || Instant::now() >= deadline {
            assert_eq!(loyalty["balance"], total / 100, "{loyalty}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Out of stock: cancelled at once, nothing reserved, never charged.
    let (_, order) = system.get_json("order", &format!("/orders/{out_of_stock}")).await.unwrap();
    assert_eq!(history(&order), ["PLACED", "CANCELLED"]);
    let (_, reservations) = system.get_json("stock", &format!("/reservations?order_id={out_of_stock}")).await.unwrap();
    assert!(reservations["reservations"].as_array().unwrap().is_empty());

    // Declined: stock reserved, then released; the customer told once.
    let (_, order) = system.get_json("order", &format!("/orders/{declined}")).await.unwrap();
    assert_eq!(order["status"], "CANCELLED");
    let (_, reservations) = system.get_json("stock", &format!("/reservations?order_id={declined}")).await.unwrap();
    let statuses: Vec<&str> =
        reservations["reservations"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["released"]);
    let (_, sku) = system.get_json("stock", "/stock/SKU-006").await.unwrap();
    assert_eq!(sku["on_hand"], 100_000, "the declined order's stock came back");

    let report = settle_and_check(&system, &ids, Duration::from_secs(20)).await;
    assert!(report.passed(), "{report}");
    let (_, emails) = system.get_json("email", &format!("/emails?order_id={declined}")).await.unwrap();
    assert_eq!(emails["emails"].as_array().unwrap().len(), 1, "one cancellation notice: {emails}");
    let notice = &emails["emails"][0];
    let (_, one) = system.get_json("email", &format!("/emails/{}", notice["id"].as_str().unwrap())).await.unwrap();
    assert_eq!(&one, notice, "GET /emails/{{id}} answers the e-mail the order's list shows");

    // The outbox and inbox show up in the metrics of every service involved.
    for (service, series) in [
        ("order", "outbox_published_total"),
        ("order", "messages_consumed_total"),
        ("stock", "outbox_commit_to_confirm_seconds_count"),
        ("shipping", "messages_consumed_total"),
        ("order", "http_requests_total"),
    ] {
        let (_, metrics) = system.get_text(service, "/metrics").await.unwrap();
        let total: f64 = metrics
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum();
        assert!(total > 0.0, "{service} /metrics has no {series}:\n{metrics}");
    }

    // Every message the three orders put on either broker, headers
    // included, is one the AsyncAPI document describes.
    let report = check_the_wire(&system, tap).await;
    assert_the_wire_matches_the_document(&report);
    system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_gives_the_same_order() {
    let system = TestSystem::start("idempotency", &["order", "stock"], &[]).await.unwrap();
    let body = order_request("c-key", &[("SKU-001", 1)], "card");
    let (first_status, first) = system.place_order(&body, Some("key-123")).await.unwrap();
    assert_eq!(first_status, 202);
    // Concurrent and sequential repeats.
    let repeats = futures::future::join_all((0..5).map(|_| system.place_order(&body, Some("key-123")))).await;
    for repeat in repeats {
        let (status, response) = repeat.unwrap();
        assert_eq!(status, 202, "{response}");
        assert_eq!(order_id_of(&response), order_id_of(&first));
    }
    let (status, other) = system.place_order(&body, Some("key-456")).await.unwrap();
    assert_eq!(status, 202);
    assert_ne!(order_id_of(&other), order_id_of(&first), "another key is another order");
    let changed = order_request("c-key", &[("SKU-001", 2)], "card");
    let (status, error) = system.place_order(&changed, Some("key-123")).await.unwrap();
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "Idempotency-Key");
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders").fetch_one(system.db("order")).await.unwrap();
    assert_eq!(count, 2);
    let (commands,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox WHERE message_type = 'stock.ReserveStock'")
        .fetch_one(system.db("order"))
        .await
        .unwrap();
    assert_eq!(commands, 2, "one command per order, not per request");
    system.shutdown().await;
}

/// 200 mixed orders placed concurrently (completing, declined, out of stock,
/// scarce) all reach a final state and the checker finds no difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_mixed_orders_settle_with_every_invariant_holding() {
    let system = TestSystem::start("mixed200", &ALL_SERVICES, &[]).await.unwrap();
    let tap = FirehoseTap::start(system.stack()).await.unwrap();
    let started = Instant::now();
    let bodies: Vec<Value> = (0..200).map(|i| xtask::chaos::load::order_body(42, i)).collect();
    let placed = futures::future::join_all(bodies.iter().map(|b| system.place_order(b, None))).await;
    let ids: Vec<Uuid> = placed
        .into_iter()
        .map(|r| {
            let (status, body) = r.unwrap();
            assert_eq!(status, 202, "{body}");
            order_id_of(&body)
        })
        .collect();
    let placed_in = started.elapsed();
    let statuses = system.wait_for_statuses(&ids, &["COMPLETED", "CANCELLED"], Duration::from_secs(120)).await.unwrap();
    let settled_in = started.elapsed();
    let report = settle_and_check(&system, &ids, Duration::from_secs(30)).await;
    let completed = statuses.values().filter(|s| *s == "COMPLETED").count();
    println!(
        "200 orders placed in {:.2}s, all final after {:.2}s ({completed} completed, {} cancelled)",
        placed_in.as_secs_f64(),
        settled_in.as_secs_f64(),
        200 - completed
    );
    for service in ALL_SERVICES {
        let (_, metrics) = system.get_text(service, "/metrics").await.unwrap();
        let rss = metrics.lines().find(|l| l.starts_with("process_resident_memory_bytes")).unwrap_or("?");
        println!("{service:<9} {rss}");
    }
    assert!(report.passed(), "{report}");
    assert!(completed > 100 && completed < 200, "a mix of outcomes: {completed} completed");
    // Under concurrency too, every message matches the document.
    let report = check_the_wire(&system, tap).await;
    assert_the_wire_matches_the_document(&report);
    system.shutdown().await;
}

/// 20 mixed orders of the chaos load's `seed`, placed one after another.
async fn place_mixed(system: &TestSystem, seed: u64) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(place(system, &xtask::chaos::load::order_body(seed, i)).await);
    }
    ids
}

/// The deployment's Kafka mode (docker-compose.yml: `KAFKA_ASSIGNMENT=group`,
/// static membership), which the runner and the other tests replace with
/// `all-partitions` because Tansu never evicts a member killed with
/// SIGKILL. Without kills, Tansu's group coordinator is enough to show the
/// subscribe path: mixed orders complete, a consumer stopped with SIGTERM
/// and started again takes its partitions back, and the checker passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_completes_with_kafka_consumer_groups_across_a_consumer_restart() {
    let mut system = TestSystem::start("groups", &ALL_SERVICES, &[("KAFKA_ASSIGNMENT", "group")]).await.unwrap();
    let mut ids = place_mixed(&system, 7).await;
    system.wait_for_statuses(&ids, &["COMPLETED", "CANCELLED"], Duration::from_secs(90)).await.unwrap();

    // A graceful restart of a group member (static membership: it comes
    // back under the same instance id).
    let status = system.terminate("loyalty", Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "loyalty exited with {status}");
    ids.extend(place_mixed(&system, 8).await);
    system.restart("loyalty").await.unwrap();
    system.wait_for_statuses(&ids, &["COMPLETED", "CANCELLED"], Duration::from_secs(90)).await.unwrap();

    let report = settle_and_check(&system, &ids, Duration::from_secs(90)).await;
    assert!(report.passed(), "{report}");
    for service in ["order", "shipping", "email", "loyalty"] {
        let log = system.log_text(service);
        assert!(log.contains("group assigned partitions"), "{service} got no partitions from its group:\n{log}");
    }
    // At least once per start, and assigned at the end. Tansu may take the
    // partitions back once more after the restart: it expires the stopped
    // member's session (10 s) by member id, whatever its instance id, and
    // rebalances then if the new member joined before (seen in CI).
    let loyalty = system.log_text("loyalty");
    let assignments = loyalty.matches("group assigned partitions").count();
    assert!(assignments >= 2, "loyalty's partitions, at least once per start: {assignments}");
    let last_event = loyalty
        .lines()
        .rev()
        .find(|l| l.contains("group assigned partitions") || l.contains("group revoked partitions"));
    assert!(
        last_event.is_some_and(|l| l.contains("group assigned partitions")),
        "loyalty ended without its partitions: {last_event:?}"
    );
    system.shutdown().await;
}

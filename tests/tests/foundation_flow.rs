//! Order and stock as processes on the real brokers: the first half of the
//! saga, and a SIGKILL of stock while orders flow.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use system_tests::flow::order_id_of;
use system_tests::{TestSystem, order_request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_in_stock_is_reserved_and_one_out_of_stock_is_cancelled() {
    let system = TestSystem::start("foundation", &["order", "stock"], &[]).await.unwrap();

    let started = Instant::now();
    let (status, body) =
        system.place_order(&order_request("c-1", &[("SKU-001", 2), ("SKU-002", 1)], "card"), None).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let in_stock = order_id_of(&body);
    assert_eq!(body["location"], format!("/orders/{in_stock}"));
    let (_, body) = system.place_order(&order_request("c-1", &[("SKU-EMPTY", 1)], "card"), None).await.unwrap();
    let out_of_stock = order_id_of(&body);

    let statuses = system
        .wait_for_statuses(&[in_stock, out_of_stock], &["STOCK_RESERVED", "CANCELLED"], Duration::from_secs(20))
        .await
        .unwrap();
    println!("both orders settled in {:?}", started.elapsed());
    assert_eq!(statuses[&in_stock], "STOCK_RESERVED");
    assert_eq!(statuses[&out_of_stock], "CANCELLED");

    let (_, order) = system.get_json("order", &format!("/orders/{in_stock}")).await.unwrap();
    assert_eq!(order["total_cents"], 2 * 899 + 4599, "priced by stock");
    let history: Vec<&str> =
        order["history"].as_array().unwrap().iter().map(|h| h["to_status"].as_str().unwrap()).collect();
    assert_eq!(history, ["PLACED", "STOCK_RESERVED"]);
    let (_, sku) = system.get_json("stock", "/stock/SKU-001").await.unwrap();
    assert_eq!(sku["on_hand"], 100_000 - 2);
    assert_eq!(sku["reserved"], 2);
    system.shutdown().await;
}

/// Orders keep coming while stock is SIGKILLed and restarted: every order
/// still reaches a decision, and no order is reserved twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_stock_while_orders_flow_loses_no_order() {
    let mut system = TestSystem::start("killstock", &["order", "stock"], &[]).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..60 {
        if i == 20 {
            system.kill("stock").await.unwrap();
        }
        if i == 40 {
            system.restart("stock").await.unwrap();
        }
        let sku = if i % 5 == 0 { "SKU-EMPTY" } else { "SKU-003" };
        let (status, body) =
            system.place_order(&order_request(&format!("c-{i}"), &[(sku, 1)], "card"), None).await.unwrap();
        assert_eq!(status, 202, "{body}");
        ids.push(order_id_of(&body));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let statuses =
        system.wait_for_statuses(&ids, &["STOCK_RESERVED", "CANCELLED"], Duration::from_secs(60)).await.unwrap();
    let undecided: Vec<_> = ids
        .iter()
        .filter(|id| !matches!(statuses.get(id).map(String::as_str), Some("STOCK_RESERVED" | "CANCELLED")))
        .collect();
    assert!(undecided.is_empty(), "orders lost: {undecided:?}");

    let reserved_orders = ids.iter().filter(|id| statuses[id] == "STOCK_RESERVED").count() as i64;
    let (reservations, units): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(quantity) FROM reservations WHERE status = 'reserved'")
            .fetch_one(system.db("stock"))
            .await
            .unwrap();
    assert_eq!(reservations, reserved_orders, "one reservation per reserved order");
    let (on_hand,): (i32,) = sqlx::query_as("SELECT on_hand FROM products WHERE sku = 'SKU-003'")
        .fetch_one(system.db("stock"))
        .await
        .unwrap();
    assert_eq!(i64::from(100_000 - on_hand), units.unwrap_or(0), "stock moved exactly once per reservation");
    system.shutdown().await;
}

/// A service waiting for its database at start-up is live (its process
/// works) but not ready, and says why; its API answers 503, not a refused
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_starting_without_its_database_is_live_but_not_ready() {
    let mut system = TestSystem::start("livestart", &["order", "stock"], &[]).await.unwrap();
    system.kill("order").await.unwrap();
    system.spawn_with("order", &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")]).unwrap();
    let mut live = 0;
    for _ in 0..100 {
        if let Ok((status, _)) = system.get_json("order", "/health/live").await {
            live = status;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live, 200, "live while waiting for the database");
    let (status, ready) = system.get_json("order", "/health/ready").await.unwrap();
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["components"]["startup"]["ready"], false, "{ready}");
    let (status, body) = system.place_order(&order_request("c-1", &[("SKU-001", 1)], "card"), None).await.unwrap();
    assert_eq!(status, 503, "{body}");
    system.shutdown().await;
}

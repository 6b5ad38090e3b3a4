//! The synchronous twin (`POST /orders/sync`, the course's phone call)
//! beside the reliable path: the same effects, checked by the invariant
//! checker in a mixed run; and a service down fails exactly the synchronous
//! orders that needed it, each reporting what was done, while the
//! asynchronous orders placed meanwhile are accepted and caught up.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::Duration;
use system_tests::checker::settle_and_check;
use system_tests::flow::order_id_of;
use system_tests::system::ALL_SERVICES;
use system_tests::{TestSystem, order_request};
use uuid::Uuid;

async fn place_sync(system: &TestSystem, body: &Value) -> (u16, Value) {
    let response = system.http.post(format!("{}/orders/sync", system.url("order"))).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn id_in(body: &Value) -> Uuid {
    Uuid::parse_str(body["order_id"].as_str().unwrap_or_default()).unwrap()
}

fn services_called(body: &Value) -> Vec<String> {
    body["steps"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap().to_owned()).collect()
}

async fn count(system: &TestSystem, service: &str, path: &str, field: &str) -> usize {
    let (status, body) = system.get_json(service, path).await.unwrap();
    assert_eq!(status, 200, "GET {service}{path}: {body}");
    body[field].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn sync_and_async_orders_together_pass_the_invariant_checker() {
    let system = TestSystem::start("syncmixed", &ALL_SERVICES, &[]).await.unwrap();
    let mut ids = Vec::new();
    let mut sync_calls = Vec::new();
    for i in 0..6 {
        let method = if i == 2 { "card_declined" } else { "card" };
        let async_body = order_request(&format!("mixed-a{i}"), &[("SKU-001", 1), ("SKU-004", 2)], method);
        let sync_body = order_request(&format!("mixed-s{i}"), &[("SKU-002", 1), ("SKU-004", 1)], method);
        let (placed, synced) = tokio::join!(system.place_order(&async_body, None), place_sync(&system, &sync_body));
        let (status, body) = placed.unwrap();
        assert_eq!(status, 202, "{body}");
        ids.push(order_id_of(&body));
        let (status, body) = synced;
        assert_eq!(status, 200, "{body}");
        ids.push(id_in(&body));
        sync_calls.push((method, body));
    }
    for (method, body) in &sync_calls {
        if *method == "card" {
            assert_eq!(body["status"], "COMPLETED", "{body}");
            assert_eq!(services_called(body), ["stock", "payment", "shipping", "email", "loyalty"]);
        } else {
            // Declined: the stock goes back and the customer is told, as the saga does.
            assert_eq!(body["status"], "CANCELLED", "{body}");
            assert_eq!(services_called(body), ["stock", "payment", "stock", "email"]);
        }
        let blocked = body["blocked_ms"].as_f64().unwrap();
        let last = body["steps"].as_array().unwrap().last().unwrap()["answered_after_ms"].as_f64().unwrap();
        assert!(blocked >= last, "the caller is blocked at least until the last answer: {body}");
    }
    let statuses = system.wait_for_statuses(&ids, &["COMPLETED", "CANCELLED"], Duration::from_secs(60)).await.unwrap();
    assert_eq!(statuses.values().filter(|s| *s == "CANCELLED").count(), 2, "{statuses:?}");
    let report = settle_and_check(&system, &ids, Duration::from_secs(30)).await;
    assert!(report.passed(), "{report}");
    system.shutdown().await;
}

#[tokio::test]
async fn a_service_down_fails_exactly_the_sync_orders_that_need_it() {
    let mut system = TestSystem::start("syncdown", &ALL_SERVICES, &[]).await.unwrap();
    let (status, before) = place_sync(&system, &order_request("down-0", &[("SKU-001", 1)], "card")).await;
    assert_eq!((status, before["status"].as_str()), (200, Some("COMPLETED")), "{before}");

    system.kill("email").await.unwrap();
    let mut failed = Vec::new();
    for i in 1..=3 {
        let (status, body) = place_sync(&system, &order_request(&format!("down-{i}"), &[("SKU-003", 1)], "card")).await;
        assert_eq!(status, 503, "email is not reachable: {body}");
        assert_eq!(body["error"]["service"], "email", "{body}");
        assert_eq!(body["done"], serde_json::json!(["stock", "payment", "shipping"]), "{body}");
        assert_eq!(body["not_reached"], serde_json::json!(["loyalty"]), "{body}");
        assert_eq!(body["status"], "PAID", "{body}");
        failed.push(id_in(&body));
    }
    // The mailbox meanwhile: accepted at once, whatever email's state.
    let (status, accepted) =
        system.place_order(&order_request("down-async", &[("SKU-003", 1)], "card"), None).await.unwrap();
    assert_eq!(status, 202, "{accepted}");
    let async_order = order_id_of(&accepted);

    // What each failed order reported done is what was done, and nothing more.
    for order in &failed {
        let q = format!("order_id={order}");
        assert_eq!(count(&system, "stock", &format!("/reservations?{q}"), "reservations").await, 1, "{order}");
        assert_eq!(count(&system, "payment", &format!("/payments?{q}"), "payments").await, 1, "{order}");
        assert_eq!(count(&system, "shipping", &format!("/shipments?{q}"), "shipments").await, 1, "{order}");
        let (_, view) = system.get_json("order", &format!("/orders/{order}")).await.unwrap();
        let notes: Vec<&str> = view["history"].as_array().unwrap().iter().filter_map(|h| h["note"].as_str()).collect();
        assert!(notes.iter().any(|n| n.contains("stopped") && n.contains("email")), "the history says why: {view}");
    }

    system.restart("email").await.unwrap();
    let (status, after) = place_sync(&system, &order_request("down-4", &[("SKU-001", 1)], "card")).await;
    assert_eq!((status, after["status"].as_str()), (200, Some("COMPLETED")), "{after}");
    // The asynchronous order catches up: its e-mails, once each.
    let statuses = system.wait_for_statuses(&[async_order], &["COMPLETED"], Duration::from_secs(60)).await.unwrap();
    assert_eq!(statuses.get(&async_order).map(String::as_str), Some("COMPLETED"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(&system, "email", &format!("/emails?order_id={async_order}"), "emails").await < 2 {
        assert!(std::time::Instant::now() < deadline, "the accepted order's e-mails never came");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The phone calls that failed have nothing to catch up: no e-mail, no points.
    for order in &failed {
        assert_eq!(count(&system, "email", &format!("/emails?order_id={order}"), "emails").await, 0, "{order}");
        let (_, view) = system.get_json("order", &format!("/orders/{order}")).await.unwrap();
        assert_eq!(view["status"], "PAID", "a failed synchronous order stays where it stopped: {view}");
    }
    assert_eq!(count(&system, "email", &format!("/emails?order_id={async_order}"), "emails").await, 2);
    system.shutdown().await;
}

//! Orders through a running [`TestSystem`]: placing them (retrying safely),
//! waiting for their outcome, readiness, and the invariants at the end.

use crate::checker::settle_and_check;
use crate::{TestSystem, order_request};
use serde_json::Value;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The order id of a `POST /orders` answer.
pub fn order_id_of(body: &Value) -> Uuid {
    body["order_id"].as_str().and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("no order id in {body}"))
}

/// An order that completes: in stock, paid by card.
pub fn completing(customer: &str) -> Value {
    order_request(customer, &[("SKU-001", 1), ("SKU-005", 2)], "card")
}

/// `POST /orders` with `key` until it is answered 202 (the same key makes
/// retries safe), for at most `timeout`.
pub async fn place(system: &TestSystem, body: &Value, key: &str, timeout: Duration) -> Uuid {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match system.place_order(body, Some(key)).await {
            Ok((202, response)) => return order_id_of(&response),
            other => format!("{other:?}"),
        };
        assert!(Instant::now() < deadline, "POST /orders ({key}) not accepted within {timeout:?}: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn wait_completed(system: &TestSystem, ids: &[Uuid], timeout: Duration) {
    let statuses = system.wait_for_statuses(ids, &["COMPLETED"], timeout).await.unwrap();
    let unfinished: Vec<String> = ids
        .iter()
        .filter(|id| statuses.get(id).map(String::as_str) != Some("COMPLETED"))
        .map(|id| format!("{id}: {:?}", statuses.get(id)))
        .collect();
    assert!(unfinished.is_empty(), "not COMPLETED within {timeout:?}: {unfinished:?}");
}

/// Every invariant of docs/design.md on the system, given the accepted orders.
pub async fn assert_invariants(system: &TestSystem, accepted: &[Uuid]) {
    assert_invariants_within(system, accepted, Duration::from_secs(30)).await;
}

/// Like [`assert_invariants`], allowing the system up to `bound` to settle.
pub async fn assert_invariants_within(system: &TestSystem, accepted: &[Uuid], bound: Duration) {
    let report = settle_and_check(system, accepted, bound).await;
    assert!(report.passed(), "{report}");
}

/// The status of `GET /health/ready`, `None` if there is no answer.
pub async fn readiness(system: &TestSystem, service: &str) -> Option<u16> {
    let url = format!("{}/health/ready", system.url(service));
    let response = system.http.get(url).timeout(Duration::from_secs(3)).send().await.ok()?;
    Some(response.status().as_u16())
}

/// Polls until every one of `services` answers `/health/ready` with `status`;
/// returns how long that took.
pub async fn wait_readiness(system: &TestSystem, services: &[&str], status: u16, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let mut pending = Vec::new();
        for service in services {
            let answer = readiness(system, service).await;
            if answer != Some(status) {
                pending.push(format!("{service}: {answer:?}"));
            }
        }
        if pending.is_empty() {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "/health/ready not {status} within {timeout:?}: {}", pending.join(", "));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

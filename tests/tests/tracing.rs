//! One order is one trace: the HTTP request, each outbox publish, each broker
//! hop and each consumer, across all six services, with no broken parent link.

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use system_tests::otlp::{OtlpReceiver, TraceReport};
use system_tests::system::ALL_SERVICES;
use system_tests::{TestSystem, order_request};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_unbroken_trace_across_all_six_services() {
    let (receiver, endpoint) = OtlpReceiver::start().await;
    let system = TestSystem::start(
        "tracing",
        &ALL_SERVICES,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .await
    .unwrap();

    let (status, body) = system.place_order(&order_request("c-trace", &[("SKU-005", 3)], "card"), None).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let id: Uuid = body["order_id"].as_str().unwrap().parse().unwrap();
    let statuses = system.wait_for_statuses(&[id], &["COMPLETED"], Duration::from_secs(30)).await.unwrap();
    assert_eq!(statuses[&id], "COMPLETED");
    let (_, order) = system.get_json("order", &format!("/orders/{id}")).await.unwrap();
    let trace_id = order["trace_id"].as_str().expect("the order records its trace id").to_owned();

    // Email and loyalty finish after the order completes; give every
    // service time to export its last spans.
    let mut report = TraceReport::default();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        report = TraceReport::of(&receiver.trace(&trace_id));
        if report.services.len() == ALL_SERVICES.len() && report.orphans.is_empty() {
            break;
        }
    }
    let spans = receiver.trace(&trace_id);
    for span in &spans {
        println!("{:<9} {:<40} kind={} parent={}", span.service, span.name, span.kind, span.parent_span_id);
    }
    let expected: std::collections::BTreeSet<String> = ALL_SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(report.services, expected, "spans of every service in the trace");
    assert!(report.is_one_unbroken_trace(), "{report:#?}");
    assert!(spans.iter().any(|s| s.name == "POST /orders" && s.kind == 2), "the HTTP server span");
    assert!(spans.iter().any(|s| s.name == "send order.replies" || s.name.ends_with(".order.replies")));
    system.shutdown().await;
}

//! One order is one trace: the HTTP request, each outbox publish, each broker
//! hop and each consumer, across all six services, with no broken parent link.

#![allow(clippy::unwrap_used)]

use std::time::Duration;
use system_tests::otlp::{OtlpReceiver, TraceReport, consumer_spans_per_service, stray_spans};
use system_tests::system::ALL_SERVICES;
use system_tests::{TestSystem, order_request};
use uuid::Uuid;

/// Each hop of a completed order, consumed inside the trace: order takes two
/// replies and ShipmentScheduled, email OrderPlaced and ShipmentScheduled;
/// each other service at least one.
const CONSUMER_SPANS: [(&str, usize); 6] =
    [("order", 3), ("stock", 1), ("payment", 1), ("shipping", 1), ("email", 2), ("loyalty", 1)];

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

    // Email and loyalty finish after the order completes, and each service
    // exports in batches of its own: wait until every hop is in (or 10 s).
    let mut report = TraceReport::default();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let spans = receiver.trace(&trace_id);
        report = TraceReport::of(&spans);
        let consumers = consumer_spans_per_service(&spans);
        let every_hop = CONSUMER_SPANS.iter().all(|(service, n)| consumers.get(*service).copied().unwrap_or(0) >= *n);
        if report.services.len() == ALL_SERVICES.len() && report.orphans.is_empty() && every_hop {
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
    // A hop that began a trace of its own would not show above if its
    // service has other spans in the trace.
    let strays = stray_spans(&receiver.spans(), &trace_id, &id.to_string());
    assert!(strays.is_empty(), "spans of this order outside its trace: {strays:#?}");
    let consumers = consumer_spans_per_service(&spans);
    for (service, at_least) in CONSUMER_SPANS {
        let seen = consumers.get(service).copied().unwrap_or(0);
        assert!(seen >= at_least, "{service}: {seen} consumer spans in the trace, expected at least {at_least}");
    }
    let server = spans.iter().find(|s| s.name == "POST /orders" && s.kind == 2).expect("the HTTP server span");
    for (key, value) in [
        ("http.request.method", "POST"),
        ("http.route", "/orders"),
        ("url.path", "/orders"),
        ("url.scheme", "http"),
        ("http.response.status_code", "202"),
    ] {
        assert_eq!(server.attributes.get(key).map(String::as_str), Some(value), "{key} of {server:#?}");
    }
    assert!(spans.iter().any(|s| s.name == "send order.replies" || s.name.ends_with(".order.replies")));
    system.shutdown().await;
}

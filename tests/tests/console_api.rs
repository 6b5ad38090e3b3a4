//! The console's receiver and API on bad input, its retention, and the
//! promise that a console that hangs never slows a service down.

#![allow(clippy::unwrap_used)]

use anyhow::Result;

use console::span_store::SpanStore;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use system_tests::console::InProcessConsole;
use system_tests::{TestSystem, order_request};

use uuid::Uuid;

/// The exporter's own deadline in the test below: if exporting were on a
/// request's path, a request would wait this long for a console that hangs.
const EXPORT_TIMEOUT_MS: u64 = 2_000;

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

fn export(service: &str, order: Uuid, spans: usize) -> Vec<u8> {
    let trace_id: [u8; 16] = rand::random();
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: rand::random::<[u8; 8]>().to_vec(),
            name: format!("span {i}"),
            kind: 2,
            start_time_unix_nano: 1_000 + i as u64,
            end_time_unix_nano: 2_000 + i as u64,
            attributes: vec![text("order_id", &order.to_string())],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A stand-in order service that knows no order.
async fn order_service_knowing_nothing() -> String {
    let app = axum::Router::new().fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "{}") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn start_console(test: &str, admin_token: Option<&str>) -> InProcessConsole {
    let order = order_service_knowing_nothing().await;
    InProcessConsole::start(test, |config| {
        config.admin_token = admin_token.map(service_kit::config::Secret::new);
        for (_, url) in &mut config.service_urls {
            *url = order.clone();
        }
    })
    .await
    .unwrap()
}

async fn status_and_body(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn bad_input_gets_a_clear_answer_and_the_console_keeps_serving() {
    let console = start_console("consolebad", None).await;
    let http = reqwest::Client::new();
    let url = &console.url;

    let garbage = http
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff, 0x01, 0x02])
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_body(garbage).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not an OTLP trace export"), "{body}");
    let json = http.post(format!("{url}/v1/traces")).header("content-type", "application/json").body("{").send();
    assert_eq!(json.await.unwrap().status(), 400);
    assert_eq!(http.get(format!("{url}/health/live")).send().await.unwrap().status(), 200);

    // A good export after the bad ones is stored and shown.
    let order = Uuid::now_v7();
    let good = http
        .post(format!("{url}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(export("stock", order, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = http.get(format!("{url}/api/orders/{order}")).send().await.unwrap();
        if response.status() == 200 {
            let journey: Value = response.json().await.unwrap();
            if journey["services"][0]["spans"].as_array().map(Vec::len) == Some(3) {
                assert_eq!(journey["services"][0]["name"], "stock");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the exported spans never showed in the journey");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http.get(format!("{url}/orders/{order}")).send().await.unwrap().status(), 200);

    let (status, page) =
        status_and_body(http.get(format!("{url}/orders/{}", Uuid::now_v7())).send().await.unwrap()).await;
    assert_eq!(status, 404, "an order nobody knows: {page}");
    assert!(page.contains("<html") && page.contains("No order"), "{page}");
    let (status, page) = status_and_body(http.get(format!("{url}/orders/12%3Cb%3E")).send().await.unwrap()).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("is not an order id") && !page.contains("<b>"), "{page}");
    assert_eq!(http.get(format!("{url}/api/orders/nope")).send().await.unwrap().status(), 400);
    assert_eq!(http.get(format!("{url}/api/orders?limit=0")).send().await.unwrap().status(), 400);

    let act = |path: &str| http.post(format!("{url}/api/components/{path}")).send();
    let (status, body) = status_and_body(act("mysql/kill").await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no component"), "{body}");
    assert_eq!(act("email/explode").await.unwrap().status(), 400);
    let (status, body) = status_and_body(act("email/kill").await.unwrap()).await;
    assert_eq!(status, 409, "a kill on a stack the console does not own: {body}");
    assert!(body.contains("does not own"), "{body}");
    let map: Value = http.get(format!("{url}/api/map")).send().await.unwrap().json().await.unwrap();
    assert_eq!(map["control"]["enabled"], false);

    let traffic = http.post(format!("{url}/api/traffic")).json(&serde_json::json!({"per_second": 1000, "seconds": 5}));
    let (status, body) = status_and_body(traffic.send().await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("per_second"), "{body}");
    assert_eq!(http.get(format!("{url}/no/such/page")).send().await.unwrap().status(), 404);
    assert_eq!(http.get(format!("{url}/health/live")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn actions_need_the_admin_token_when_one_is_set() {
    let console = start_console("consoletoken", Some("s3cret")).await;
    let http = reqwest::Client::new();
    let kill = format!("{}/api/components/email/kill", console.url);
    assert_eq!(http.post(&kill).send().await.unwrap().status(), 401);
    assert_eq!(http.post(&kill).bearer_auth("wrong").send().await.unwrap().status(), 401);
    // With the token, the request gets as far as the missing runner.
    assert_eq!(http.post(&kill).bearer_auth("s3cret").send().await.unwrap().status(), 409);
    assert_eq!(http.post(format!("{}/api/orders", console.url)).send().await.unwrap().status(), 401);
    let map: Value = http.get(format!("{}/api/map", console.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(map["control"]["token_required"], true);
}

#[tokio::test]
async fn retention_keeps_the_newest_spans_up_to_the_bound() {
    let console = start_console("consoleretain", None).await;
    let http = reqwest::Client::new();
    for _ in 0..4 {
        let body = export("email", Uuid::now_v7(), 5);
        let response = http.post(format!("{}/v1/traces", console.url)).body(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let pool = sqlx::PgPool::connect(&console.database_url).await.unwrap();
    let count = || sqlx::query_scalar::<_, i64>("SELECT count(*) FROM spans").fetch_one(&pool);
    let deadline = Instant::now() + Duration::from_secs(10);
    while count().await.unwrap() < 20 {
        assert!(Instant::now() < deadline, "the spans were not stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = SpanStore::new(pool.clone());
    assert_eq!(store.enforce_retention(Duration::from_secs(3600), 7).await.unwrap(), 13);
    assert_eq!(count().await.unwrap(), 7);
    let orders = store.recent_orders(10).await.unwrap();
    assert_eq!(orders.len(), 2, "the orders whose spans all went are forgotten: {orders:?}");
    assert_eq!(store.enforce_retention(Duration::ZERO, 100).await.unwrap(), 7, "and by age");
}

/// A collector that accepts connections and never answers: the worst a
/// console can do to an exporter.
async fn hanging_collector() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            held.push(socket);
        }
    });
    (url, connections)
}

#[tokio::test]
async fn a_console_that_hangs_never_slows_a_service() -> Result<()> {
    let (collector, connections) = hanging_collector().await;
    let timeout = EXPORT_TIMEOUT_MS.to_string();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", timeout.as_str()),
    ];
    let system = TestSystem::start("consolehang", &system_tests::system::ALL_SERVICES, &env).await?;
    let mut orders = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let (status, body) =
            system.place_order(&order_request(&format!("hang-{i}"), &[("SKU-001", 1)], "card"), None).await?;
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 202, "{body}");
        orders.push(Uuid::parse_str(body["order_id"].as_str().unwrap_or_default())?);
        // Spread over several export batches.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let statuses = system.wait_for_statuses(&orders, &["COMPLETED"], Duration::from_secs(90)).await?;
    let done = statuses.values().filter(|s| *s == "COMPLETED").count();
    let exported = connections.load(Ordering::Relaxed);
    system.shutdown().await;
    assert!(exported > 0, "no service tried to export: the test proves nothing");
    assert_eq!(done, orders.len(), "orders stuck while the collector hangs: {statuses:?}");
    assert!(
        slowest < Duration::from_millis(EXPORT_TIMEOUT_MS),
        "a POST /orders took {slowest:?}, as long as an export to the hanging collector: exporting is on the request path"
    );
    Ok(())
}

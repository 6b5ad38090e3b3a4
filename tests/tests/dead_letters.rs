//! Dead letters on the real brokers: what lands in a dead-letter queue or
//! topic and why, the admin routes and the `dead-letters` CLI that list,
//! replay and purge them, that a replay has one effect however often it
//! is done, that a replay sends at most 1000 and says how many remain, that
//! dead-letter topics keep their records until purged, and the consumer lag
//! gauge.
//!
//! Needs the service binaries and the CLI built first:
//! `cargo build -p order-service -p stock-service -p dead-letters`, then
//! `ORDERMESH_SKIP_BUILD=1 cargo test -p system-tests --test dead_letters`
//! (without `ORDERMESH_SKIP_BUILD` the tests build them).

#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result, bail};
use contracts::catalogue::{OrderLine, OrderPaid, ReserveStock};
use contracts::{Envelope, MessageContract, Topology};
use health::Readiness;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use messaging::consumer::{MessageProcessor, RetryPolicy};
use messaging::kafka::KafkaPublisher;
use messaging::kafka_consumer::KafkaConsumer;
use messaging::{HandlerError, IncomingMessage, MessageHandler, wire};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use system_tests::flow::order_id_of;
use system_tests::{TestSystem, fresh_database, order_request, test_stack, unique_namespace};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const TOKEN: &str = "secret";

// ---- the CLI ----

/// The `dead-letters` binary, built once per test process unless the test
/// command already did (`ORDERMESH_SKIP_BUILD=1`).
async fn cli_binary() -> &'static PathBuf {
    static BINARY: OnceCell<PathBuf> = OnceCell::const_new();
    BINARY
        .get_or_init(|| async {
            let root = xtask::repo_root();
            if !std::env::var("ORDERMESH_SKIP_BUILD").is_ok_and(|v| v == "1") {
                let status = tokio::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                    .args(["build", "-p", "dead-letters", "--bin", "dead-letters"])
                    .current_dir(&root)
                    .status()
                    .await
                    .expect("running cargo build -p dead-letters");
                assert!(status.success(), "cargo build -p dead-letters failed: {status}");
            }
            let binary = xtask::services::target_dir(&root).join("debug").join("dead-letters");
            assert!(binary.exists(), "{} is missing: cargo build -p dead-letters", binary.display());
            binary
        })
        .await
}

struct CliOutput {
    success: bool,
    json: Value,
    stderr: String,
}

/// Runs `dead-letters --json <args>` against the test stack under `namespace`.
async fn cli(namespace: &str, args: &[&str]) -> Result<CliOutput> {
    let stack = test_stack().await;
    let output = tokio::process::Command::new(cli_binary().await)
        .env_remove("AMQP_URL")
        .env_remove("KAFKA_BROKERS")
        .env_remove("MESSAGING_NAMESPACE")
        .args(["--amqp-url", &stack.amqp_url(), "--kafka-brokers", &stack.kafka_brokers()])
        .args(["--namespace", namespace, "--json"])
        .args(args)
        .output()
        .await
        .context("running dead-letters")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(CliOutput {
        success: output.status.success(),
        json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

async fn cli_ok(namespace: &str, args: &[&str]) -> Value {
    let out = cli(namespace, args).await.unwrap();
    assert!(out.success, "dead-letters {args:?} failed: {}", out.stderr);
    out.json
}

/// Pending letters of `dlq` according to `dead-letters summary`.
async fn cli_pending(namespace: &str, dlq: &str) -> u64 {
    let summary = cli_ok(namespace, &["summary"]).await;
    let entry = summary.as_array().unwrap().iter().find(|d| d["name"] == dlq);
    entry.unwrap_or_else(|| panic!("{dlq} not in the summary: {summary}"))["pending"].as_u64().unwrap()
}

async fn wait_for_cli_pending(namespace: &str, dlq: &str, expected: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let pending = cli_pending(namespace, dlq).await;
        if pending == expected || Instant::now() > deadline {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// ---- the admin routes ----

async fn admin(
    system: &TestSystem,
    service: &str,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = system.http.request(method, format!("{}{path}", system.url(service)));
    if let Some(auth) = auth {
        request = request.header("Authorization", auth);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let (status, text) = system.send_documented(service, request).await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn admin_get(system: &TestSystem, service: &str, path: &str) -> (u16, Value) {
    admin(system, service, reqwest::Method::GET, path, Some(&format!("Bearer {TOKEN}")), None).await
}

async fn admin_post(system: &TestSystem, service: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    admin(system, service, reqwest::Method::POST, path, Some(&format!("Bearer {TOKEN}")), body).await
}

/// Like [`admin_post`] (or a GET without a body), asking again while the
/// answer is 503, as a client honouring Retry-After would, for at most a
/// minute: a Tansu whose store has grown can take longer than an admin
/// request's budget to commit or list, and answers the next one in time.
/// Also says whether it had to ask again (an attempt that timed out may
/// still have done its work).
async fn admin_answered(
    system: &TestSystem,
    service: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut asked_again = false;
    loop {
        let auth = format!("Bearer {TOKEN}");
        let (status, answer) = admin(system, service, method.clone(), path, Some(&auth), body.clone()).await;
        if status != 503 || Instant::now() >= deadline {
            return (status, answer, asked_again);
        }
        asked_again = true;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Purges `dlq` through `service`'s admin route and checks that `expected`
/// letters went (fewer if a timed-out attempt purged some) and none is left.
async fn admin_purge(system: &TestSystem, service: &str, dlq: &str, expected: u64) {
    let path = format!("/admin/dead-letters/{dlq}/purge");
    let (status, purged, asked_again) = admin_answered(system, service, reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 200, "{purged}");
    let count = purged["purged"].as_u64().unwrap();
    if asked_again {
        assert!(count <= expected, "{purged}");
    } else {
        assert_eq!(count, expected, "{purged}");
    }
    assert_eq!(admin_pending(system, service, dlq).await, 0);
}

async fn admin_pending(system: &TestSystem, service: &str, dlq: &str) -> u64 {
    let (status, body, _) = admin_answered(system, service, reqwest::Method::GET, "/admin/dead-letters", None).await;
    assert_eq!(status, 200, "{body}");
    let entry = body["dead_letter_destinations"].as_array().unwrap().iter().find(|d| d["name"] == dlq);
    entry.unwrap_or_else(|| panic!("{dlq} not listed: {body}"))["pending"].as_u64().unwrap()
}

// ---- RabbitMQ ----

async fn confirm_channel(amqp_url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    (connection, channel)
}

/// Publishes through the default exchange and waits for the broker's confirm.
async fn publish(channel: &Channel, queue: &str, props: BasicProperties, body: &[u8]) {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel.basic_publish("".into(), queue.into(), options, body, props).await.unwrap();
    assert_eq!(confirm.await.unwrap(), Confirmation::Ack(None), "{queue} did not take the message");
}

/// `props` plus the headers the consumer adds when it dead-letters.
fn as_dead_letter(props: &BasicProperties, reason: &str, attempts: u32, queue: &str) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    for (name, value) in messaging::dead_letter::headers(reason, attempts, queue, "stock") {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    props.clone().with_headers(headers)
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// (a) + (e): every kind of poison command lands in `stock.commands.dlq` with
/// its reason after one attempt, stock goes on consuming, and the CLI counts,
/// lists and purges them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_commands_are_dead_lettered_with_their_reason_and_stock_keeps_consuming() {
    let system = TestSystem::start("dlpoison", &["order", "stock"], &[("ADMIN_TOKEN", TOKEN)]).await.unwrap();
    let topology = system.topology();
    let namespace = topology.namespace().to_owned();
    let queue = topology.stock_commands();
    let dlq = Topology::dead_letter_queue(&queue);
    let order_id = Uuid::now_v7();
    let command = ReserveStock { order_id, lines: vec![OrderLine { sku: "SKU-001".into(), quantity: 1 }] };
    let good_body = serde_json::to_vec(&command).unwrap();
    let envelope = |message_type: &str| {
        let mut e = Envelope::new(message_type, order_id.to_string(), "test");
        e.reply_to = Some(topology.order_replies());
        e
    };
    let reserve = envelope(ReserveStock::MESSAGE_TYPE);
    let unknown = envelope("stock.Frobnicate");
    let mut newer = envelope(ReserveStock::MESSAGE_TYPE);
    newer.schema_version = 99;
    let no_envelope = BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2);
    // (message id as the DLQ shows it, properties, body, expected reason)
    let poison: Vec<(Option<String>, BasicProperties, Vec<u8>, String)> = vec![
        (
            Some(reserve.message_id.to_string()),
            wire::amqp_properties(&reserve, &[]),
            br#"{"order_id": not json"#.to_vec(),
            "malformed stock.ReserveStock payload".into(),
        ),
        (None, no_envelope, good_body.clone(), "malformed envelope: envelope header `message_id` is missing".into()),
        (
            Some("not-a-uuid".into()),
            wire::amqp_properties(&envelope(ReserveStock::MESSAGE_TYPE), &[]).with_message_id("not-a-uuid".into()),
            good_body.clone(),
            "malformed envelope: envelope header `message_id` is invalid".into(),
        ),
        (
            Some(unknown.message_id.to_string()),
            wire::amqp_properties(&unknown, &[]),
            good_body.clone(),
            "unknown message type `stock.Frobnicate`".into(),
        ),
        (
            Some(newer.message_id.to_string()),
            wire::amqp_properties(&newer, &[]),
            good_body.clone(),
            "stock.ReserveStock schema version 99 is newer than the supported 1".into(),
        ),
    ];
    let (connection, channel) = confirm_channel(&system.stack().amqp_url()).await;
    for (_, props, body, _) in &poison {
        publish(&channel, &queue, props.clone(), body).await;
    }
    let _ = connection.close(200, "published".into()).await;

    // The consumer goes on: an order placed after the poison is reserved.
    let (status, body) = system.place_order(&order_request("c-1", &[("SKU-001", 1)], "card"), None).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let placed = order_id_of(&body);
    let statuses = system.wait_for_statuses(&[placed], &["STOCK_RESERVED"], Duration::from_secs(30)).await.unwrap();
    assert_eq!(statuses.get(&placed).map(String::as_str), Some("STOCK_RESERVED"));

    let deadline = Instant::now() + Duration::from_secs(20);
    while admin_pending(&system, "stock", &dlq).await < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(admin_pending(&system, "stock", &dlq).await, 5);
    let (status, listed) = admin_get(&system, "stock", &format!("/admin/dead-letters/{dlq}?limit=50")).await;
    assert_eq!(status, 200, "{listed}");
    let letters = listed["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 5, "{listed}");
    for (message_id, _, body, reason) in &poison {
        let letter = letters
            .iter()
            .find(|l| l["message_id"].as_str().map(str::to_owned) == *message_id)
            .unwrap_or_else(|| panic!("no letter with id {message_id:?}: {listed}"));
        println!("dead-lettered {message_id:?}: attempts {} reason {}", letter["attempts"], letter["reason"]);
        assert!(text(&letter["reason"]).starts_with(reason.as_str()), "{message_id:?}: {}", letter["reason"]);
        assert_eq!(letter["attempts"], 1, "{message_id:?}");
        assert_eq!(letter["original_destination"], queue.as_str());
        assert_eq!(letter["dead_lettered_by"], "stock");
        assert!(letter["dead_lettered_at"].is_string());
        assert_eq!(text(&letter["payload"]).as_bytes(), body.as_slice(), "the body is untouched");
    }
    // Listing left them where they were.
    assert_eq!(admin_pending(&system, "stock", &dlq).await, 5);
    let (status, shown) =
        admin_get(&system, "stock", &format!("/admin/dead-letters/{dlq}/{}", unknown.message_id)).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["message_type"], "stock.Frobnicate");
    assert_eq!(shown["properties"]["reply_to"], topology.order_replies().as_str());
    assert_eq!(shown["headers"]["x-attempts"], "1");

    // (e) The CLI sees the same, and purges.
    let summary = cli_ok(&namespace, &["summary"]).await;
    let names: Vec<&str> = summary.as_array().unwrap().iter().map(|d| text(&d["name"])).collect();
    assert_eq!(names.len(), 8, "3 queues and 5 group topics: {summary}");
    for entry in summary.as_array().unwrap() {
        let expected = if entry["name"] == dlq.as_str() { 5 } else { 0 };
        assert_eq!(entry["pending"], expected, "{entry}");
    }
    let listed = cli_ok(&namespace, &["list", &dlq, "--limit", "2"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let refused = cli(&namespace, &["purge", &dlq]).await.unwrap();
    assert!(!refused.success && refused.stderr.contains("--yes"), "{}", refused.stderr);
    let unknown_name = cli(&namespace, &["list", &queue]).await.unwrap();
    assert!(!unknown_name.success && unknown_name.stderr.contains(&dlq), "{}", unknown_name.stderr);
    assert_eq!(cli_pending(&namespace, &dlq).await, 5, "a refused purge purges nothing");
    let purged = cli_ok(&namespace, &["purge", &dlq, "--yes"]).await;
    assert_eq!(purged["purged"], 5, "{purged}");
    assert_eq!(cli_pending(&namespace, &dlq).await, 0);
    system.shutdown().await;
}

/// (c) + order's routes: a `ReserveStock` that was dead-lettered is replayed
/// through stock's admin route and reserves once; the same letter replayed
/// again changes nothing (the inbox knows its message id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_reserve_stock_reserves_once_however_often_it_is_replayed() {
    let mut system = TestSystem::start("dlreplay", &["order", "stock"], &[("ADMIN_TOKEN", TOKEN)]).await.unwrap();
    let topology = system.topology();
    let queue = topology.stock_commands();
    let dlq = Topology::dead_letter_queue(&queue);

    // order's admin routes cover both of its consumers.
    let (status, body) = admin_get(&system, "order", "/admin/dead-letters").await;
    assert_eq!(status, 200, "{body}");
    let mut names: Vec<&str> =
        body["dead_letter_destinations"].as_array().unwrap().iter().map(|d| text(&d["name"])).collect();
    names.sort_unstable();
    let order_group = topology.consumer_group("order");
    let mut expected = vec![
        Topology::dead_letter_queue(&topology.order_replies()),
        Topology::dead_letter_topic(&topology.shipments_topic(), &order_group),
    ];
    expected.sort_unstable();
    assert_eq!(names, expected);

    // With stock down, the order's command waits in the queue: take it and
    // dead-letter it as stock's consumer would have.
    system.terminate("stock", Duration::from_secs(20)).await.unwrap();
    let (status, body) = system.place_order(&order_request("c-2", &[("SKU-002", 2)], "card"), None).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let order_id = order_id_of(&body);
    let (connection, channel) = confirm_channel(&system.stack().amqp_url()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let command = loop {
        match channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap() {
            Some(got)
                if wire::envelope_from_amqp(&got.delivery.properties).unwrap().correlation_id
                    == order_id.to_string() =>
            {
                break got.delivery;
            }
            Some(other) => {
                let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                other.acker.nack(requeue).await.unwrap();
            }
            None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            None => panic!("the order's ReserveStock never reached {queue}"),
        }
    };
    let envelope = wire::envelope_from_amqp(&command.properties).unwrap();
    assert_eq!(envelope.message_type, ReserveStock::MESSAGE_TYPE);
    let message_id = envelope.message_id.to_string();
    let letter_props = as_dead_letter(&command.properties, "handler failed: simulated outage", 5, &queue);
    publish(&channel, &dlq, letter_props.clone(), &command.data).await;
    command.acker.ack(BasicAckOptions::default()).await.unwrap();

    system.restart("stock").await.unwrap();
    assert_eq!(system.order_status(order_id).await.unwrap(), "PLACED", "nothing reached stock yet");
    let (status, shown) = admin_get(&system, "stock", &format!("/admin/dead-letters/{dlq}/{message_id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["reason"], "handler failed: simulated outage");
    assert_eq!(shown["attempts"], 5);

    let (status, report) = admin_post(
        &system,
        "stock",
        &format!("/admin/dead-letters/{dlq}/replay"),
        Some(json!({"message_id": message_id})),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["replayed"], 1, "{report}");
    assert_eq!(report["sent_to"], queue.as_str());
    let statuses = system.wait_for_statuses(&[order_id], &["STOCK_RESERVED"], Duration::from_secs(30)).await.unwrap();
    assert_eq!(statuses.get(&order_id).map(String::as_str), Some("STOCK_RESERVED"));
    assert_eq!(admin_pending(&system, "stock", &dlq).await, 0);
    let effects = stock_effects(system.db("stock"), order_id, &message_id).await;
    assert_eq!(effects, StockEffects { reservations: 1, reserved_units: 2, inbox_rows: 1, replies: 1 });

    // The same letter again: delivered, recognised, no second effect.
    let duplicates_before = inbox_duplicates(&system, "stock").await;
    publish(&channel, &dlq, letter_props, &command.data).await;
    let _ = connection.close(200, "done".into()).await;
    let (status, report) = admin_post(&system, "stock", &format!("/admin/dead-letters/{dlq}/replay"), None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["replayed"], 1, "{report}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while inbox_duplicates(&system, "stock").await <= duplicates_before {
        assert!(Instant::now() < deadline, "stock never received the second replay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("second replay of {message_id}: recorded as a duplicate by stock's inbox");
    let again = stock_effects(system.db("stock"), order_id, &message_id).await;
    assert_eq!(again, effects, "the second replay had an effect");
    let (_, order) = system.get_json("order", &format!("/orders/{order_id}")).await.unwrap();
    let history: Vec<&str> = order["history"].as_array().unwrap().iter().map(|h| text(&h["to_status"])).collect();
    assert_eq!(history, ["PLACED", "STOCK_RESERVED"]);
    assert_eq!(admin_pending(&system, "stock", &dlq).await, 0);
    system.shutdown().await;
}

#[derive(Debug, PartialEq, Eq)]
struct StockEffects {
    reservations: i64,
    reserved_units: i64,
    inbox_rows: i64,
    replies: i64,
}

async fn stock_effects(pool: &PgPool, order_id: Uuid, message_id: &str) -> StockEffects {
    let (reservations, units): (i64, Option<i64>) =
        sqlx::query_as("SELECT count(*), sum(quantity) FROM reservations WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(pool)
            .await
            .unwrap();
    let (inbox_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM inbox WHERE message_id = $1::uuid")
        .bind(message_id)
        .fetch_one(pool)
        .await
        .unwrap();
    let (replies,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM outbox WHERE envelope->>'correlation_id' = $1 AND message_type LIKE 'stock.%'",
    )
    .bind(order_id.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    StockEffects { reservations, reserved_units: units.unwrap_or(0), inbox_rows, replies }
}

/// `inbox_duplicates_total{consumer="<consumer>"}` from the service's /metrics.
async fn inbox_duplicates(system: &TestSystem, service: &str) -> f64 {
    let text = system.http.get(format!("{}/metrics", system.url(service))).send().await.unwrap().text().await.unwrap();
    let label = format!("consumer=\"{service}\"");
    text.lines()
        .filter(|l| l.starts_with("inbox_duplicates_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// (d) The admin routes: a token or nothing, only this service's
/// destinations, and no routes at all without `ADMIN_TOKEN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_want_the_token_and_exist_only_when_one_is_configured() {
    let with = TestSystem::start("dladmin", &["stock"], &[("ADMIN_TOKEN", TOKEN)]).await.unwrap();
    let without = TestSystem::start("dlnoadmin", &["stock"], &[]).await.unwrap();
    let topology = with.topology();
    let dlq = Topology::dead_letter_queue(&topology.stock_commands());
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    for auth in [None, Some("Bearer wrong"), Some(TOKEN), Some("Basic c2VjcmV0"), Some("Bearer secret2")] {
        let (status, body) = admin(&with, "stock", get.clone(), "/admin/dead-letters", auth, None).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    for (method, path) in [
        (get.clone(), format!("/admin/dead-letters/{dlq}")),
        (get.clone(), format!("/admin/dead-letters/{dlq}/{}", Uuid::now_v7())),
        (post.clone(), format!("/admin/dead-letters/{dlq}/replay")),
        (post.clone(), format!("/admin/dead-letters/{dlq}/purge")),
        // Unauthenticated callers do not learn which destinations exist.
        (get.clone(), "/admin/dead-letters/nonsense.dlq".to_owned()),
    ] {
        let (status, body) = admin(&with, "stock", method.clone(), &path, Some("Bearer nope"), None).await;
        assert_eq!(status, 401, "{method} {path}: {body}");
    }

    let (status, body) = admin_get(&with, "stock", "/admin/dead-letters").await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> =
        body["dead_letter_destinations"].as_array().unwrap().iter().map(|d| text(&d["name"])).collect();
    assert_eq!(names, [dlq.as_str()], "stock consumes one queue");
    assert_eq!(body["dead_letter_destinations"][0]["broker"], "rabbitmq");
    assert_eq!(body["dead_letter_destinations"][0]["pending"], 0);

    let payment_dlq = Topology::dead_letter_queue(&topology.payment_commands());
    let orders_dlq = Topology::dead_letter_topic(&topology.orders_topic(), &topology.consumer_group("shipping"));
    for path in [
        format!("/admin/dead-letters/{payment_dlq}"),
        format!("/admin/dead-letters/{orders_dlq}"),
        "/admin/dead-letters/nonsense.dlq".to_owned(),
        format!("/admin/dead-letters/{dlq}/{}", Uuid::now_v7()),
    ] {
        let (status, body) = admin_get(&with, "stock", &path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (status, body) = admin_post(&with, "stock", &format!("/admin/dead-letters/{payment_dlq}/purge"), None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin_post(&with, "stock", &format!("/admin/dead-letters/{dlq}/purge"), None).await;
    assert_eq!((status, &body["purged"]), (200, &json!(0)), "{body}");
    let (status, body) = admin_post(
        &with,
        "stock",
        &format!("/admin/dead-letters/{dlq}/replay"),
        Some(json!({"up_to": {"partition": 0, "offset": 3}})),
    )
    .await;
    assert_eq!(status, 409, "an offset means nothing on a queue: {body}");

    // No token configured: the routes do not exist, whatever the caller sends.
    let (status, _) = admin_get(&without, "stock", "/admin/dead-letters").await;
    assert_eq!(status, 404);
    let (status, _) = admin_post(&without, "stock", &format!("/admin/dead-letters/{dlq}/purge"), None).await;
    assert_eq!(status, 404);
    with.shutdown().await;
    without.shutdown().await;
}

/// A message RabbitMQ dead-lettered itself (past the delivery limit) carries
/// no headers of ours: the CLI reads its reason and source from `x-death`,
/// and a replay sends it back without them, under its own message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_rabbitmq_dead_lettered_itself_is_shown_and_replayed() {
    let stack = test_stack().await;
    let namespace = format!("{}.", unique_namespace("dlbroker"));
    let topology = Topology::new(namespace.clone());
    let queue = topology.payment_commands();
    let dlq = Topology::dead_letter_queue(&queue);
    let (connection, channel) = confirm_channel(&stack.amqp_url()).await;
    messaging::amqp::declare_topology(&channel, &topology).await.unwrap();
    let mut envelope = Envelope::new("payment.ProcessPayment", Uuid::now_v7().to_string(), "test");
    envelope.reply_to = Some(topology.order_replies());
    publish(&channel, &queue, wire::amqp_properties(&envelope, &[]), b"{}").await;

    // A consumer that dies on it every time, as far as the broker can tell.
    let mut deliveries = 0;
    while let Some(got) = channel.basic_get(queue.as_str().into(), BasicGetOptions::default()).await.unwrap() {
        deliveries += 1;
        assert!(deliveries <= 3 * messaging::amqp::DELIVERY_LIMIT, "never dead-lettered");
        let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
        got.delivery.acker.nack(requeue).await.unwrap();
    }
    println!("dead-lettered by RabbitMQ after {deliveries} deliveries");
    assert_eq!(wait_for_cli_pending(&namespace, &dlq, 1, Duration::from_secs(10)).await, 1);

    let message_id = envelope.message_id.to_string();
    let shown = cli_ok(&namespace, &["show", &dlq, &message_id]).await;
    println!("reason {} attempts {} by {}", shown["reason"], shown["attempts"], shown["dead_lettered_by"]);
    assert_eq!(shown["reason"], "rabbitmq: delivery_limit");
    assert_eq!(shown["original_destination"], queue.as_str());
    assert_eq!(shown["dead_lettered_by"], "rabbitmq");
    assert!(shown["attempts"].is_null(), "the broker does not say how many: {shown}");
    assert!(shown["headers"]["x-death"].is_array(), "{shown}");

    let report = cli_ok(&namespace, &["replay", &dlq, "--message-id", &message_id]).await;
    assert_eq!((&report["replayed"], &report["sent_to"]), (&json!(1), &json!(queue)), "{report}");
    assert_eq!(cli_pending(&namespace, &dlq).await, 0);
    let back = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the replayed message is back in its queue");
    assert_eq!(wire::envelope_from_amqp(&back.delivery.properties).unwrap(), envelope, "same envelope, same id");
    let headers = wire::amqp_headers_text(&back.delivery.properties);
    assert!(headers.iter().all(|(h, _)| !dead_letter_header(h)), "dead-letter headers left: {headers:?}");
    // The queue counts its own deliveries afresh: the replay has a full budget.
    let count = headers.iter().find(|(h, _)| h == "x-delivery-count").map(|(_, v)| v.as_str());
    assert!(matches!(count, None | Some("0")), "{headers:?}");
    let _ = connection.close(200, "done".into()).await;
}

fn dead_letter_header(name: &str) -> bool {
    name.starts_with("x-death") || name.starts_with("x-first-death") || name.starts_with("x-last-death")
}

// ---- Kafka ----

/// Applies `OrderPaid` into `effects`; fails (as a handler whose downstream is
/// down would) while `broken` is set.
struct PaidHandler {
    broken: Arc<AtomicBool>,
}

impl MessageHandler for PaidHandler {
    fn message_types(&self) -> &'static [&'static str] {
        &[OrderPaid::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let paid: OrderPaid = message.decode()?;
        if self.broken.load(Ordering::SeqCst) {
            return Err(HandlerError::Failed("downstream unavailable".into()));
        }
        sqlx::query("INSERT INTO effects (order_id, message_id) VALUES ($1, $2)")
            .bind(paid.order_id)
            .bind(message.envelope.message_id)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn effects_of(pool: &PgPool, message_id: Option<Uuid>) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM effects WHERE $1::uuid IS NULL OR message_id = $1")
        .bind(message_id)
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

async fn wait_for_effects(pool: &PgPool, n: i64, timeout: Duration) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let found = effects_of(pool, None).await;
        if found >= n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A namespace with a database holding the inbox, outbox and an `effects`
/// table, its topics created with `partitions` each, and the orders topic as
/// the shipping group reads it: a subscriber the topology knows, so its
/// dead-letter topic is one the CLI knows.
struct KafkaShipping {
    namespace: String,
    pool: PgPool,
    brokers: String,
    group: String,
    topic: String,
    dlq: String,
}

impl KafkaShipping {
    async fn new(test: &str, partitions: i32) -> Self {
        let stack = test_stack().await;
        let namespace = format!("{}.", unique_namespace(test));
        let pool = fresh_database(stack, &format!("{}_db", namespace.trim_end_matches('.'))).await;
        messaging::migrations::run_messaging(&pool).await.unwrap();
        sqlx::query("CREATE TABLE effects (order_id UUID NOT NULL, message_id UUID NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let topology = Topology::new(namespace.clone());
        let brokers = stack.kafka_brokers();
        messaging::kafka::ensure_topics(&brokers, &topology.all_topics(), partitions).await.unwrap();
        let group = topology.consumer_group("shipping");
        let topic = topology.orders_topic();
        let dlq = Topology::dead_letter_topic(&topic, &group);
        Self { namespace, pool, brokers, group, topic, dlq }
    }
}

/// (b) + (e) on Kafka: poison records and a record whose handler fails
/// `max_attempts` times land in `<topic>.<group>.dlq`; the consumer goes on;
/// the CLI lists them, refuses to replay one behind others, replays all (the
/// fixed one applies, the poison comes back), purges, and a record replayed a
/// second time has no second effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dead_letters_are_listed_replayed_and_purged_through_the_cli() {
    let KafkaShipping { namespace, pool, brokers, group, topic, dlq } = KafkaShipping::new("dlkafka", 4).await;
    assert_eq!(retention_ms(&brokers, &dlq).await.as_deref(), Some("-1"), "{dlq} keeps its records until purged");

    let broken = Arc::new(AtomicBool::new(true));
    let policy = RetryPolicy::default();
    let processor =
        MessageProcessor::new(pool.clone(), "test-shipping", PaidHandler { broken: broken.clone() }, policy);
    let kafka = Arc::new(KafkaPublisher::new(&brokers, "test-dead-letters").unwrap());
    let shutdown = CancellationToken::new();
    let consumer =
        KafkaConsumer::new(&brokers, &group, vec![topic.clone()], processor, kafka.clone(), Readiness::new());
    let consumer_task = tokio::spawn(consumer.run(shutdown.clone()));

    // One key: one partition, so the records keep their order here and in the DLQ.
    let key = Uuid::now_v7().to_string();
    let paid = |order_id: Uuid| {
        let body = OrderPaid { order_id, customer_id: "c-k".into(), amount_cents: 1000, payment_id: Uuid::now_v7() };
        serde_json::to_vec(&body).unwrap()
    };
    let envelope = |message_type: &str| Envelope::new(message_type, key.clone(), "test");
    let malformed = envelope(OrderPaid::MESSAGE_TYPE);
    let unknown = envelope("orders.OrderFrobnicated");
    let mut newer = envelope(OrderPaid::MESSAGE_TYPE);
    newer.schema_version = 7;
    let failing = envelope(OrderPaid::MESSAGE_TYPE);
    let failing_body = paid(Uuid::now_v7());
    let expected: Vec<(Option<String>, &str, u32)> = vec![
        (Some(malformed.message_id.to_string()), "malformed orders.OrderPaid payload", 1),
        (None, "malformed envelope: envelope header `message_id` is missing", 1),
        (Some(unknown.message_id.to_string()), "unknown message type `orders.OrderFrobnicated`", 1),
        (Some(newer.message_id.to_string()), "orders.OrderPaid schema version 7 is newer than the supported 1", 1),
        (Some(failing.message_id.to_string()), "downstream unavailable", policy.max_attempts),
    ];
    let send = |envelope: Option<Envelope>, body: Vec<u8>| send_record(&kafka, &topic, &key, envelope, body);
    send(Some(malformed.clone()), b"{\"order_id\": oops".to_vec()).await;
    send(None, paid(Uuid::now_v7())).await;
    send(Some(unknown.clone()), paid(Uuid::now_v7())).await;
    send(Some(newer.clone()), paid(Uuid::now_v7())).await;
    send(Some(failing.clone()), failing_body.clone()).await;

    let pending = wait_for_cli_pending(&namespace, &dlq, 5, Duration::from_secs(90)).await;
    assert_eq!(pending, 5, "every poison record in {dlq}");
    broken.store(false, Ordering::SeqCst);
    send(Some(envelope(OrderPaid::MESSAGE_TYPE)), paid(Uuid::now_v7())).await;
    assert_eq!(wait_for_effects(&pool, 1, Duration::from_secs(30)).await, 1, "the consumer goes on after poison");

    let listed = cli_ok(&namespace, &["list", &dlq, "--limit", "50"]).await;
    let letters = listed.as_array().unwrap();
    assert_eq!(letters.len(), 5, "{listed}");
    for (letter, (message_id, reason, attempts)) in letters.iter().zip(&expected) {
        println!("dead-lettered {message_id:?}: attempts {} reason {}", letter["attempts"], letter["reason"]);
        assert_eq!(letter["message_id"].as_str().map(str::to_owned), *message_id, "in order: {listed}");
        assert!(text(&letter["reason"]).starts_with(reason), "{message_id:?}: {}", letter["reason"]);
        assert_eq!(letter["attempts"], *attempts, "{message_id:?}");
        assert_eq!(letter["original_destination"], topic.as_str());
        assert_eq!(letter["dead_lettered_by"], "test-shipping");
        assert_eq!(letter["key"], key.as_str());
    }
    let failing_id = failing.message_id.to_string();
    let shown = cli_ok(&namespace, &["show", &dlq, &failing_id]).await;
    assert_eq!(text(&shown["payload"]).as_bytes(), failing_body.as_slice());
    assert_eq!(cli_pending(&namespace, &dlq).await, 5, "listing and showing moved nothing");

    // One record behind others of its partition cannot be replayed alone.
    let refused = cli(&namespace, &["replay", &dlq, "--message-id", &failing_id]).await.unwrap();
    assert!(!refused.success && refused.stderr.contains("behind 4 older"), "{}", refused.stderr);

    // All: the fixed one applies; the poison comes straight back.
    let report = cli_ok(&namespace, &["replay", &dlq, "--all"]).await;
    assert_eq!(report["replayed"], 5, "{report}");
    assert_eq!(wait_for_effects(&pool, 2, Duration::from_secs(30)).await, 2);
    assert_eq!(effects_of(&pool, Some(failing.message_id)).await, 1);
    let pending = wait_for_cli_pending(&namespace, &dlq, 4, Duration::from_secs(30)).await;
    assert_eq!(pending, 4, "the four poison records are dead-lettered again");

    let purged = cli_ok(&namespace, &["purge", &dlq, "--yes"]).await;
    assert_eq!(purged["purged"], 4, "{purged}");
    assert_eq!(cli_pending(&namespace, &dlq).await, 0);

    // The replayed record dead-lettered again (as if by a redelivery) and
    // replayed again: it is now the oldest pending record, and the inbox
    // drops it.
    let letter_headers: Vec<(String, String)> =
        failing.to_headers().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let extra = messaging::dead_letter::headers("downstream unavailable", 5, &topic, "test-shipping");
    kafka.send_raw(&dlq, &key, &failing_body, &letter_headers, &extra).await.unwrap().delivered().await.unwrap();
    assert_eq!(cli_pending(&namespace, &dlq).await, 1);
    let report = cli_ok(&namespace, &["replay", &dlq, "--message-id", &failing_id]).await;
    assert_eq!(report["replayed"], 1, "{report}");
    assert_eq!(cli_pending(&namespace, &dlq).await, 0);
    // A later record on the same partition is applied after the replayed one.
    send(Some(envelope(OrderPaid::MESSAGE_TYPE)), paid(Uuid::now_v7())).await;
    assert_eq!(wait_for_effects(&pool, 3, Duration::from_secs(30)).await, 3);
    assert_eq!(effects_of(&pool, Some(failing.message_id)).await, 1, "the second replay had no effect");
    let (inbox,): (i64,) = sqlx::query_as("SELECT count(*) FROM inbox WHERE message_id = $1")
        .bind(failing.message_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(inbox, 1);

    shutdown.cancel();
    consumer_task.await.unwrap();
    if let Err(e) = check_no_leftover(&namespace, &dlq).await {
        panic!("{e:#}");
    }
}

/// Produces one record and waits for its delivery; `None`: no headers at all.
async fn send_record(kafka: &KafkaPublisher, topic: &str, key: &str, envelope: Option<Envelope>, body: Vec<u8>) {
    let pending = match envelope {
        Some(e) => kafka.send(topic, key, &e, &body, &[]).await.unwrap(),
        None => kafka.send_raw(topic, key, &body, &[], &[]).await.unwrap(),
    };
    pending.delivered().await.unwrap();
}

/// Nothing pending anywhere in the namespace once the test is done.
async fn check_no_leftover(namespace: &str, dlq: &str) -> Result<()> {
    let summary = cli_ok(namespace, &["summary"]).await;
    for entry in summary.as_array().context("summary is a list")? {
        if entry["pending"] != 0 {
            bail!("{} still has {} pending (after {dlq} was emptied)", entry["name"], entry["pending"]);
        }
    }
    Ok(())
}

/// `retention.ms` of `topic` as the broker describes it (`None`: not set).
async fn retention_ms(brokers: &str, topic: &str) -> Option<String> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    let described = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new()).await.unwrap();
    let resource = described.into_iter().next().expect("one resource described").unwrap();
    resource.get("retention.ms").and_then(|entry| entry.value.clone())
}

/// Polls `service`'s pending count of `dlq` until it is `expected`.
async fn wait_for_admin_pending(
    system: &TestSystem,
    service: &str,
    dlq: &str,
    expected: u64,
    timeout: Duration,
) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let pending = admin_pending(system, service, dlq).await;
        if pending == expected || Instant::now() > deadline {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `kafka_consumer_lag` of `topic` in `service`'s /metrics: (labels, value) per series.
async fn consumer_lag(system: &TestSystem, service: &str, topic: &str) -> Vec<(String, f64)> {
    let text = system.http.get(format!("{}/metrics", system.url(service))).send().await.unwrap().text().await.unwrap();
    let label = format!("topic=\"{topic}\"");
    text.lines()
        .filter(|l| l.starts_with("kafka_consumer_lag{") && l.contains(&label))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A Kafka dead-letter topic through a service's admin routes: the service
/// created it to keep its records until purged; a poison event lands there,
/// is listed, replayed (it comes straight back) and purged; and the
/// consumer's lag gauge shows the partition it consumed, caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_dead_letter_topic_through_the_admin_routes_and_the_lag_gauge() {
    let system = TestSystem::start("dlkafkaadmin", &["order"], &[("ADMIN_TOKEN", TOKEN)]).await.unwrap();
    let topology = system.topology();
    let brokers = system.stack().kafka_brokers();
    let topic = topology.shipments_topic();
    let dlq = Topology::dead_letter_topic(&topic, &topology.consumer_group("order"));
    assert_eq!(retention_ms(&brokers, &dlq).await.as_deref(), Some("-1"), "created by order to keep its records");

    // An event without an envelope: dead-lettered at once.
    let kafka = KafkaPublisher::new(&brokers, "test-dead-letters-admin").unwrap();
    let key = Uuid::now_v7().to_string();
    kafka.send_raw(&topic, &key, b"{}", &[], &[]).await.unwrap().delivered().await.unwrap();
    assert_eq!(wait_for_admin_pending(&system, "order", &dlq, 1, Duration::from_secs(30)).await, 1);
    let (status, listed) = admin_get(&system, "order", &format!("/admin/dead-letters/{dlq}?limit=10")).await;
    assert_eq!(status, 200, "{listed}");
    let letter = &listed["dead_letters"][0];
    assert!(text(&letter["reason"]).starts_with("malformed envelope"), "{listed}");
    assert_eq!(letter["key"], key.as_str());
    assert_eq!(letter["position"]["offset"], 0, "{listed}");

    // Replayed, it is sent back, and dead-lettered again.
    let (status, report) = admin_post(&system, "order", &format!("/admin/dead-letters/{dlq}/replay"), None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((&report["replayed"], &report["remaining"]), (&json!(1), &json!(0)), "{report}");
    assert_eq!(report["sent_to"], topic.as_str());
    assert_eq!(wait_for_admin_pending(&system, "order", &dlq, 1, Duration::from_secs(30)).await, 1, "back again");
    let (status, listed) = admin_get(&system, "order", &format!("/admin/dead-letters/{dlq}")).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["dead_letters"][0]["position"]["offset"], 1, "the second copy: {listed}");

    // Both records of the partition handled and committed: lag 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    let lag = loop {
        let lag = consumer_lag(&system, "order", &topic).await;
        if !lag.is_empty() && lag.iter().all(|(_, v)| *v == 0.0) || Instant::now() > deadline {
            break lag;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("consumer lag of {topic}: {lag:?}");
    assert_eq!(lag.len(), 1, "one partition consumed (the others have no committed offset yet): {lag:?}");
    assert!(lag[0].0.contains(&format!("group=\"{}\"", topology.consumer_group("order"))), "{lag:?}");
    assert_eq!(lag[0].1, 0.0, "{lag:?}");

    admin_purge(&system, "order", &dlq, 1).await;

    // More than one replay's worth, and a broker (Tansu) that may take
    // longer than the request to read them: either way an answer well
    // before the 10 s request timeout, a report of what was sent or a 503
    // with Retry-After, never a 408. (The events are of a type order
    // ignores, so nothing comes back.)
    let total = MAX_REPLAY_PER_CALL as u64 + 5;
    fill_dead_letter_topic(&kafka, &dlq, &topic, "order", total as usize).await;
    assert_eq!(admin_pending(&system, "order", &dlq).await, total);
    let started = Instant::now();
    let response = system
        .http
        .post(format!("{}/admin/dead-letters/{dlq}/replay", system.url("order")))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let report: Value = response.json().await.unwrap();
    println!(
        "admin replay of {total}: {status} in {elapsed:?}: {}",
        report.to_string().chars().take(300).collect::<String>()
    );
    assert!(elapsed < Duration::from_secs(8), "the request timeout is 10 s: {elapsed:?}");
    match status {
        200 => {
            let sent = report["replayed"].as_u64().unwrap();
            assert!(sent > 0 && sent <= MAX_REPLAY_PER_CALL as u64, "{sent}");
            assert_eq!(report["remaining"], total - sent);
        }
        503 => {
            assert_eq!(retry_after.as_deref(), Some("5"));
            assert_eq!(report["error"]["code"], "unavailable", "{report}");
        }
        other => panic!("{other}: {report}"),
    }
    // Tansu goes on serving the read the replay gave up on: until it is
    // done, other admin requests may get a 503 too. As a client would, retry.
    let pending = admin_pending(&system, "order", &dlq).await;
    admin_purge(&system, "order", &dlq, pending).await;
    system.shutdown().await;
}

/// Puts `n` dead letters (`orders.OrderPaid` events, as if dead-lettered
/// by `consumer` from `topic`) straight into `dlq`, on one partition.
async fn fill_dead_letter_topic(kafka: &KafkaPublisher, dlq: &str, topic: &str, consumer: &str, n: usize) {
    let extra = messaging::dead_letter::headers("poison", 1, topic, consumer);
    let mut deliveries = Vec::with_capacity(n);
    for i in 0..n {
        let envelope = Envelope::new(OrderPaid::MESSAGE_TYPE, format!("k-{i}"), "test");
        let headers: Vec<(String, String)> =
            envelope.to_headers().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        deliveries.push(kafka.send_raw(dlq, "k", b"{}", &headers, &extra).await.unwrap());
    }
    for delivery in deliveries {
        delivery.delivered().await.unwrap();
    }
}

/// `dead_letters::MAX_REPLAY_PER_CALL` (this crate does not depend on that one).
const MAX_REPLAY_PER_CALL: usize = 1000;

/// One replay sends at most 1000 letters and says how many remain; the next
/// one sends the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_replay_sends_at_most_1000_and_says_how_many_remain() {
    let stack = test_stack().await;
    let namespace = format!("{}.", unique_namespace("dlcap"));
    let topology = Topology::new(namespace.clone());
    let brokers = stack.kafka_brokers();
    messaging::kafka::ensure_topics(&brokers, &topology.all_topics(), 1).await.unwrap();
    // Nobody consumes the topic here: what is replayed stays replayed.
    let topic = topology.orders_topic();
    let dlq = Topology::dead_letter_topic(&topic, &topology.consumer_group("loyalty"));
    let kafka = KafkaPublisher::new(&brokers, "test-dead-letters-cap").unwrap();
    let total = MAX_REPLAY_PER_CALL + 5;
    fill_dead_letter_topic(&kafka, &dlq, &topic, "loyalty", total).await;
    assert_eq!(cli_pending(&namespace, &dlq).await, total as u64);

    let started = Instant::now();
    // Tansu can take well over the default 30 s to read a thousand records on a busy machine.
    let report = cli_ok(&namespace, &["replay", &dlq, "--all", "--timeout-secs", "60"]).await;
    println!("replayed {} in {:?}, {} remaining", report["replayed"], started.elapsed(), report["remaining"]);
    assert_eq!(report["replayed"], MAX_REPLAY_PER_CALL, "{}", report["remaining"]);
    assert_eq!(report["remaining"], 5);
    assert_eq!(report["messages"][999]["position"]["offset"], 999, "the oldest first");
    assert_eq!(cli_pending(&namespace, &dlq).await, 5);
    let report = cli_ok(&namespace, &["replay", &dlq, "--all"]).await;
    assert_eq!((&report["replayed"], &report["remaining"]), (&json!(5), &json!(0)), "{report}");
    assert_eq!(cli_pending(&namespace, &dlq).await, 0);
}

/// A dead-letter copy the broker refuses (here: over the dead-letter
/// publisher's size limit) must not stall the consumer: the copy goes with
/// its headers only, saying where the original still is, and the records
/// behind it are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_copy_the_broker_refuses_leaves_its_headers_and_the_consumer_goes_on() {
    let KafkaShipping { namespace, pool, brokers, group, topic, dlq } = KafkaShipping::new("dlrefused", 1).await;

    let processor = MessageProcessor::new(
        pool.clone(),
        "test-shipping",
        PaidHandler { broken: Arc::new(AtomicBool::new(false)) },
        RetryPolicy::default(),
    );
    let mut small = messaging::kafka::producer_config(&brokers, "test-small-dead-letters");
    small.set("message.max.bytes", "2000");
    let dead_letters = Arc::new(KafkaPublisher::with_config(small).unwrap());
    let shutdown = CancellationToken::new();
    let consumer = KafkaConsumer::new(&brokers, &group, vec![topic.clone()], processor, dead_letters, Readiness::new());
    let consumer_task = tokio::spawn(consumer.run(shutdown.clone()));

    let kafka = KafkaPublisher::new(&brokers, "test-big-records").unwrap();
    let key = Uuid::now_v7().to_string();
    let unknown = Envelope::new("orders.OrderFrobnicated", key.clone(), "test");
    let big = serde_json::to_vec(&serde_json::json!({ "padding": "x".repeat(5000) })).unwrap();
    send_record(&kafka, &topic, &key, Some(unknown.clone()), big).await;
    let body =
        OrderPaid { order_id: Uuid::now_v7(), customer_id: "c-r".into(), amount_cents: 1, payment_id: Uuid::now_v7() };
    send_record(
        &kafka,
        &topic,
        &key,
        Some(Envelope::new(OrderPaid::MESSAGE_TYPE, key.clone(), "test")),
        serde_json::to_vec(&body).unwrap(),
    )
    .await;

    assert_eq!(wait_for_effects(&pool, 1, Duration::from_secs(60)).await, 1, "the consumer went on");
    assert_eq!(wait_for_cli_pending(&namespace, &dlq, 1, Duration::from_secs(30)).await, 1);
    let listed = cli_ok(&namespace, &["list", &dlq]).await;
    let letter = &listed[0];
    assert_eq!(letter["message_id"], unknown.message_id.to_string().as_str(), "{listed}");
    assert_eq!(letter["payload_bytes"], 0, "{listed}");
    let left_at = text(&letter["headers"][messaging::dead_letter::PAYLOAD_LEFT_AT]);
    assert!(left_at.starts_with("0:0 ") && left_at.contains("too large"), "{left_at}");
    assert!(text(&letter["reason"]).starts_with("unknown message type"), "{listed}");
    // Replaying it would send an empty body: refused, saying where the original is.
    let replay = cli(&namespace, &["replay", &dlq, "--all"]).await.unwrap();
    assert!(!replay.success && replay.stderr.contains("carries no payload"), "{}", replay.stderr);
    assert_eq!(cli_pending(&namespace, &dlq).await, 1, "still pending");

    cli_ok(&namespace, &["purge", &dlq, "--yes"]).await;
    shutdown.cancel();
    consumer_task.await.unwrap();
}

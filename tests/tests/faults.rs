//! Faults on the `chaos` stack: PostgreSQL, RabbitMQ and Kafka killed and
//! restarted under running services, SIGTERM under load, every named crash
//! point of `messaging::crash`, and the chaos runner's negative controls.
//!
//! Every test here kills infrastructure or runs the chaos runner, so all of
//! them run on the chaos stack (its own PostgreSQL/RabbitMQ/Kafka, ports
//! 23432/23672/23092), one at a time ([`CHAOS_LOCK`]), and each leaves the
//! stack's infrastructure running and ready whatever happens
//! ([`on_chaos_stack`]).

#![allow(clippy::unwrap_used)]

use futures::FutureExt as _;
use invariants::Invariant;
use messaging::log_tailing::RelayMode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use system_tests::flow::{
    assert_invariants, completing, order_id_of, place, readiness, wait_completed, wait_readiness,
};
use system_tests::system::ALL_SERVICES;
use system_tests::{TestSystem, chaos_stack};
use tokio::sync::Mutex;
use uuid::Uuid;
use xtask::chaos::backend::Backend;
use xtask::chaos::{ChaosOptions, ChaosReport, UnsafeMode};
use xtask::{Component, Stack};

/// One test on the chaos stack at a time: they kill its shared components.
static CHAOS_LOCK: Mutex<()> = Mutex::const_new(());

/// Runs `test` alone on the chaos stack, with its infrastructure up before
/// and, whatever the test did (a panic included), up again afterwards.
async fn on_chaos_stack<F, Fut>(test: F)
where
    F: FnOnce(&'static Stack) -> Fut,
    Fut: Future<Output = ()>,
{
    let _alone = CHAOS_LOCK.lock().await;
    let stack = chaos_stack().await;
    // A previous test, or an earlier run of this file, may have left a component down.
    stack.start_infra().await.unwrap_or_else(|e| panic!("the chaos infrastructure is not up: {e:#}"));
    let outcome = AssertUnwindSafe(test(stack)).catch_unwind().await;
    // Restarts whatever the test killed and waits until all three are ready.
    let restored = stack.start_infra().await;
    match (outcome, restored) {
        (Err(panic), restored) => {
            if let Err(e) = restored {
                eprintln!("restoring the chaos infrastructure after a failure also failed: {e:#}");
            }
            std::panic::resume_unwind(panic)
        }
        (Ok(()), Err(e)) => panic!("the test left the chaos infrastructure broken: {e:#}"),
        (Ok(()), Ok(())) => {}
    }
}

// ---------------------------------------------------------------------------
// 1. Reconnection: a component dies under running services and comes back;
//    the services follow without being restarted.
// ---------------------------------------------------------------------------

async fn services_ride_out_a_restart_of(component: Component, users: &'static [&'static str]) {
    on_chaos_stack(|stack| async move {
        let mut system = TestSystem::start_on(stack, &format!("re{component}"), &ALL_SERVICES, &[]).await.unwrap();
        let mut accepted = Vec::new();
        for i in 0..3 {
            let key = format!("before-{i}");
            accepted.push(place(&system, &completing(&format!("c-before-{i}")), &key, Duration::from_secs(30)).await);
        }
        wait_completed(&system, &accepted, Duration::from_secs(60)).await;

        let killed = Instant::now();
        assert!(stack.kill_component(component).await.unwrap(), "{component} was not running: nothing killed");
        let red = wait_readiness(&system, users, 503, Duration::from_secs(30)).await;
        // The others do not use it: they stay ready.
        for service in ALL_SERVICES.iter().filter(|s| !users.contains(s)) {
            assert_eq!(readiness(&system, service).await, Some(200), "{service} does not use {component}");
        }
        println!("{component} SIGKILLed: {users:?} not ready after {:.1}s", red.as_secs_f64());

        let restarted = Instant::now();
        start_component_with_retries(stack, component).await;
        let component_ready = restarted.elapsed();
        wait_readiness(&system, &ALL_SERVICES, 200, Duration::from_secs(90)).await;
        let all_green = restarted.elapsed();
        for service in ALL_SERVICES {
            assert_eq!(system.try_exit_status(service).unwrap(), None, "{service} exited");
            assert_eq!(system.starts(service), 1, "{service} was restarted");
        }

        let mut after = Vec::new();
        for i in 0..3 {
            let key = format!("after-{i}");
            after.push(place(&system, &completing(&format!("c-after-{i}")), &key, Duration::from_secs(30)).await);
        }
        let first_completed = loop {
            let statuses = system.wait_for_statuses(&after, &["COMPLETED"], Duration::ZERO).await.unwrap();
            if statuses.values().any(|s| s == "COMPLETED") {
                break restarted.elapsed();
            }
            assert!(restarted.elapsed() < Duration::from_secs(120), "no order completed after the restart");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        wait_completed(&system, &after, Duration::from_secs(90)).await;
        accepted.extend(after);
        assert_invariants(&system, &accepted).await;
        println!(
            "RECOVERY {component}: down {:.1}s; from restart: {component} ready {:.1}s, all six services ready {:.1}s, \
             first new order completed {:.1}s",
            (restarted - killed).as_secs_f64(),
            component_ready.as_secs_f64(),
            all_green.as_secs_f64(),
            first_completed.as_secs_f64()
        );
        system.shutdown().await;
    })
    .await;
}

/// Starts `component` and waits until it is ready, trying again (loudly)
/// if it dies during start-up: what is tested is the services' recovery,
/// and a fresh Tansu was twice seen SIGKILLed within milliseconds of its
/// start here, by a sender not found.
async fn start_component_with_retries(stack: &Stack, component: Component) {
    for attempt in 1..=3 {
        stack.start_component(component).await.unwrap();
        match stack.wait_component_ready(component).await {
            Ok(()) => return,
            Err(e) if attempt < 3 => eprintln!("WARNING: {component} did not come up (attempt {attempt}): {e:#}"),
            Err(e) => panic!("{component} did not come up in 3 attempts: {e:#}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reconnect_after_postgres_is_killed() {
    services_ride_out_a_restart_of(Component::Postgres, &ALL_SERVICES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reconnect_after_rabbitmq_is_killed() {
    // Commands and replies: order sends and receives, stock and payment receive and reply.
    services_ride_out_a_restart_of(Component::RabbitMq, &["order", "stock", "payment"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reconnect_after_kafka_is_killed() {
    // Events: order publishes and reads shipments; the others read orders.
    services_ride_out_a_restart_of(Component::Kafka, &["order", "shipping", "email", "loyalty"]).await;
}

// ---------------------------------------------------------------------------
// 2. Graceful shutdown under load.
// ---------------------------------------------------------------------------

/// SIGTERM to order, then stock, shipping and loyalty while 80 orders flow
/// at 20/s: each exits 0 within its deadline after stopping its consumers
/// and finishing what it had started; restarted, the system settles with
/// every invariant holding. Loyalty is the one handler that only its inbox
/// keeps from applying a redelivery twice (no business key), so an offset
/// committed wrongly at shutdown shows there, as invariant 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_nothing_and_applies_nothing_twice() {
    on_chaos_stack(|stack| async move {
        const DEADLINE_SECS: u64 = 5;
        let deadline = Duration::from_secs(DEADLINE_SECS);
        let mut system = TestSystem::start_on(
            stack,
            "sigterm",
            &ALL_SERVICES,
            &[("SHUTDOWN_DEADLINE_SECS", &DEADLINE_SECS.to_string())],
        )
        .await
        .unwrap();
        let mut accepted: Vec<Uuid> = Vec::new();
        for (round, service) in ["order", "stock", "shipping", "loyalty"].into_iter().enumerate() {
            let log_start = system.log_text(service).len();
            let order_url = system.url("order");
            let seed = 500 + round as u64;
            let load = tokio::spawn(async move {
                xtask::chaos::load::place_orders(&order_url, seed, 80, 4, 20.0, Duration::from_secs(60)).await
            });
            // Mid-flow: about 30 of the 80 orders are in.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let signalled = Instant::now();
            let status = system.terminate(service, deadline * 3).await.unwrap();
            let took = signalled.elapsed();
            println!("SHUTDOWN {service}: exited {status} {:.2}s after SIGTERM", took.as_secs_f64());
            assert!(status.success(), "{service} exited with {status}");
            assert!(took <= deadline, "{service} took {took:?} to stop (deadline {deadline:?})");

            let log = system.log_text(service)[log_start..].to_owned();
            let mut expected = vec!["shutdown signal received"];
            if service != "loyalty" {
                // Loyalty publishes nothing: it has no relay.
                expected.push("outbox relay stopped");
            }
            expected.push(match service {
                "order" | "stock" => "AMQP consumer stopped",
                _ => "Kafka consumer stopped",
            });
            if service == "order" {
                expected.push("Kafka consumer stopped");
            }
            expected.push("stopped");
            for line in expected {
                assert!(log.contains(&format!("\"message\":\"{line}\"")), "{service} did not log `{line}`:\n{log}");
            }
            for warning in ["background tasks still running at the shutdown deadline", "HTTP requests still open"] {
                assert!(!log.contains(warning), "{service}: {warning}");
            }

            system.restart(service).await.unwrap();
            let load = load.await.unwrap();
            let failed: Vec<_> =
                load.outcomes.values().filter(|o| !matches!(o, xtask::chaos::load::Outcome::Accepted(_))).collect();
            assert!(failed.is_empty(), "orders not accepted around the SIGTERM of {service}: {failed:?}");
            let ids: Vec<Uuid> = load.accepted_ids().iter().map(|id| id.parse().unwrap()).collect();
            assert_eq!(ids.len(), 80);
            accepted.extend(ids);
            let statuses = system
                .wait_for_statuses(&accepted, &["COMPLETED", "CANCELLED"], Duration::from_secs(120))
                .await
                .unwrap();
            assert_eq!(statuses.len(), accepted.len());
            assert_invariants(&system, &accepted).await;
            println!("SHUTDOWN {service}: {} orders so far all final, invariants hold", accepted.len());
        }
        system.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 3. Crash points: the process dies exactly there, is restarted without the
//    point, and nothing is lost or applied twice.
// ---------------------------------------------------------------------------

/// `inbox_duplicates_total{consumer="<consumer>"}` in `service`'s /metrics.
async fn inbox_duplicates(system: &TestSystem, service: &str, consumer: &str) -> u64 {
    let (_, metrics) = system.get_text(service, "/metrics").await.unwrap();
    let series = format!("inbox_duplicates_total{{consumer=\"{consumer}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

/// What a crash point is expected to leave behind for the inbox.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Redelivery {
    /// Nothing reached a consumer twice.
    None,
    /// The broker delivers the message again; `consumer` (in its own
    /// service) must see it as a duplicate.
    Duplicate(&'static str),
    /// A duplicate may or may not happen (the crash races the socket
    /// write); if it does, it must be absorbed.
    Maybe(&'static str),
}

/// Arms `point` in `service`, triggers it with one order, checks that the
/// process died there, restarts it without the point and checks the order
/// completes once with every invariant holding.
async fn crash_and_recover(point: &'static str, service: &'static str, redelivery: Redelivery) {
    on_chaos_stack(|stack| async move {
        let armed = format!("{point}=return");
        let name = format!("cp{}", point.replace(['.', '_'], ""));
        let mut service_env = vec![(service, "FAILPOINTS", armed.as_str())];
        // The log-tailing relay's own crash points need that relay.
        if point.starts_with("log_tailing.") {
            service_env.push((service, "OUTBOX_RELAY", "log-tailing"));
        }
        let mut system = TestSystem::start_on_with(stack, &name, &ALL_SERVICES, &[], &service_env).await.unwrap();
        let key = "crash-order-1";
        let body = completing("c-crash");
        // The relay may die before the 202 is written: then the answer is
        // lost, and the retry below with the same key recovers it.
        let first = system.place_order(&body, Some(key)).await;
        let status = system.wait_exit(service, Duration::from_secs(60)).await.unwrap();
        assert!(!status.success(), "{service} exited with {status}, expected an abort");
        let log = system.log_text(service);
        assert!(log.contains(&format!("crash point `{point}` reached")), "{service} did not die at {point}");
        println!("CRASH {point}: {service} died there ({status}); first POST: {first:?}");

        system.unset_env(service, "FAILPOINTS").unwrap();
        system.restart(service).await.unwrap();
        let id = match first {
            Ok((202, response)) => order_id_of(&response),
            _ => place(&system, &body, key, Duration::from_secs(30)).await,
        };
        wait_completed(&system, &[id], Duration::from_secs(60)).await;
        assert_invariants(&system, &[id]).await;
        match redelivery {
            Redelivery::None => {}
            Redelivery::Duplicate(consumer) | Redelivery::Maybe(consumer) => {
                // Consumers are named after their service.
                let mut duplicates = inbox_duplicates(&system, consumer, consumer).await;
                let deadline = Instant::now() + Duration::from_secs(20);
                while matches!(redelivery, Redelivery::Duplicate(_)) && duplicates == 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    duplicates = inbox_duplicates(&system, consumer, consumer).await;
                }
                println!("CRASH {point}: the {consumer} inbox absorbed {duplicates} duplicate(s)");
                if matches!(redelivery, Redelivery::Duplicate(_)) {
                    assert!(duplicates >= 1, "the redelivery after the crash did not reach the {consumer} inbox");
                }
            }
        }
        system.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_relay_before_publish() {
    crash_and_recover(messaging::crash::RELAY_BEFORE_PUBLISH, "order", Redelivery::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_relay_after_confirm_before_mark() {
    // ReserveStock was confirmed, then published again after the restart.
    crash_and_recover(messaging::crash::RELAY_AFTER_CONFIRM_BEFORE_MARK, "order", Redelivery::Duplicate("stock")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_relay_mid_batch() {
    // ReserveStock was handed to the broker (unconfirmed) when the process died.
    crash_and_recover(messaging::crash::RELAY_MID_BATCH, "order", Redelivery::Maybe("stock")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_log_tailing_after_confirm_before_report() {
    // ReserveStock was confirmed and marked sent, its position not reported:
    // the log gives it again after the restart.
    crash_and_recover(
        messaging::crash::LOG_TAILING_AFTER_CONFIRM_BEFORE_REPORT,
        "order",
        Redelivery::Duplicate("stock"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_log_tailing_after_report() {
    // The server was told: nothing comes again, nothing is missing.
    crash_and_recover(messaging::crash::LOG_TAILING_AFTER_REPORT, "order", Redelivery::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_inbox_after_record_before_effect() {
    // The inbox row rolled back with the transaction: the redelivery is new, not a duplicate.
    crash_and_recover(messaging::crash::INBOX_AFTER_RECORD_BEFORE_EFFECT, "stock", Redelivery::None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_consumer_after_commit_before_ack_on_rabbitmq() {
    crash_and_recover(messaging::crash::CONSUMER_AFTER_COMMIT_BEFORE_ACK, "stock", Redelivery::Duplicate("stock"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_consumer_after_commit_before_ack_on_kafka() {
    crash_and_recover(
        messaging::crash::CONSUMER_AFTER_COMMIT_BEFORE_ACK,
        "shipping",
        Redelivery::Duplicate("shipping"),
    )
    .await;
}

/// The order committed, then the process died before answering: the client
/// retries with the same Idempotency-Key and gets the same order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_point_after_business_commit() {
    let point = messaging::crash::AFTER_BUSINESS_COMMIT;
    on_chaos_stack(|stack| async move {
        let armed = format!("{point}=return");
        let mut system =
            TestSystem::start_on_with(stack, "cpbusiness", &ALL_SERVICES, &[], &[("order", "FAILPOINTS", &armed)])
                .await
                .unwrap();
        let key = "business-commit-1";
        let body = completing("c-business");
        let first = system.place_order(&body, Some(key)).await;
        assert!(first.is_err(), "the client got an answer from a process that died before answering: {first:?}");
        let status = system.wait_exit("order", Duration::from_secs(30)).await.unwrap();
        assert!(!status.success(), "order exited with {status}");
        assert!(system.log_text("order").contains(&format!("crash point `{point}` reached")));

        system.unset_env("order", "FAILPOINTS").unwrap();
        system.restart("order").await.unwrap();
        let url = format!("{}/orders", system.url("order"));
        let mut ids = Vec::new();
        for _ in 0..2 {
            let response = system.http.post(&url).header("Idempotency-Key", key).json(&body).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 202);
            let replayed = response.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap_or("").to_owned());
            // The order was committed before the crash: even the first retry is a replay.
            assert_eq!(replayed.as_deref(), Some("true"), "the retry created a new order");
            ids.push(order_id_of(&response.json().await.unwrap()));
        }
        assert_eq!(ids[0], ids[1]);
        let (orders, with_key): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE idempotency_key = $1) FROM orders")
                .bind(key)
                .fetch_one(system.db("order"))
                .await
                .unwrap();
        assert_eq!((orders, with_key), (1, 1), "exactly one order exists");
        wait_completed(&system, &ids[..1], Duration::from_secs(60)).await;
        assert_invariants(&system, &ids[..1]).await;
        println!("CRASH {point}: the retry with the same key returned order {} (replayed), one order exists", ids[0]);
        system.shutdown().await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// 4. Negative controls: the chaos runner with each UNSAFE mode must break
//    the invariant that mode threatens; its safe twin, the same run (same
//    orders, seed, kill targets and count) without the mode, must pass.
// ---------------------------------------------------------------------------

/// The small run of the negative control for `control`, with the mode on
/// or (the safe twin) off: 180 mixed orders over ~12 s, 4 kills (8 for
/// ack-before-commit and flush-before-confirm), up to a minute to drain.
/// Only `unsafe_mode` differs between a control and its twin.
fn small_run(control: UnsafeMode, unsafe_on: bool) -> ChaosOptions {
    ChaosOptions {
        orders: 180,
        // Losing a delivery acknowledged early needs a kill while one is
        // being handled, which four kills of the order service sometimes
        // miss; eight almost never do.
        kills: if matches!(control, UnsafeMode::AckBeforeCommit | UnsafeMode::FlushBeforeConfirm) { 8 } else { 4 },
        partitions: 0,
        seed: 46509,
        rate: 15.0,
        concurrency: 6,
        // A Kafka consumer started while Kafka is being killed can hear
        // nothing but errors until it replaces itself, 30 s later
        // (messaging::kafka_consumer::DEFAULT_REPLACE_AFTER): a safe twin
        // whose order service restarted just then (CI, 2026-12-06) caught
        // up 34 s after its restart. The bound leaves room for that.
        drain_timeout: messaging::kafka_consumer::DEFAULT_REPLACE_AFTER * 2,
        unsafe_mode: unsafe_on.then_some(control),
        targets: targets_for(control),
        // The twin of a log-tailing control runs the same relay, safely.
        relay: match control {
            UnsafeMode::FlushBeforeConfirm => RelayMode::LogTailing,
            _ => RelayMode::Polling,
        },
    }
}

/// Kill targets that expose each unsafe mode within a short run. Drawn
/// from all nine, a short schedule often spends its few kills where the
/// mode is harmless, and the control then passes by luck:
fn targets_for(control: UnsafeMode) -> Vec<&'static str> {
    match control {
        // A message published from memory while its broker is down is gone
        // (no row to retry from), and so is whatever the order service held
        // in memory when it died: kill both brokers (the plan kills every
        // infrastructure target at least once) and the main producer.
        UnsafeMode::PublishWithoutOutbox => vec!["rabbitmq", "kafka", "order"],
        // A delivery acknowledged before its transaction commits is lost
        // only if its consumer dies in between, so kill the busiest
        // consumer, every time: the order service handles about three
        // messages per order (two replies on RabbitMQ, where it takes up to
        // 16 deliveries at once and acknowledges each on arrival, and
        // ShipmentScheduled on Kafka), and each one lost leaves an order
        // stuck. Stock and payment are idle most of the time at this rate,
        // the Kafka consumers hold one record at a time, and a database or
        // broker outage only delays handlers (they retry in memory): kills
        // spent there usually lose nothing, and the control then passes by
        // luck.
        UnsafeMode::AckBeforeCommit => vec!["order"],
        // Only loyalty lacks a guard of its own, so the redeliveries that
        // count are of order events to loyalty: killed, it gets again what
        // it handled since its last offset commit (up to one
        // OFFSET_COMMIT_INTERVAL), and without the inbox credits it twice.
        UnsafeMode::SkipInbox => vec!["loyalty"],
        // A position reported before the broker confirmed loses what the
        // relay held when it died: most while a broker is down (it keeps
        // reading and reporting, and cannot publish), so kill both brokers
        // and the main producer.
        UnsafeMode::FlushBeforeConfirm => vec!["rabbitmq", "kafka", "order"],
    }
}

/// The invariant each mode must break: the loss modes leave accepted orders
/// that never become final; a missing inbox lets loyalty credit twice.
fn threatened_invariant(control: UnsafeMode) -> Invariant {
    match control {
        UnsafeMode::PublishWithoutOutbox | UnsafeMode::AckBeforeCommit | UnsafeMode::FlushBeforeConfirm => {
            Invariant::OrdersFinal
        }
        UnsafeMode::SkipInbox => Invariant::Loyalty,
    }
}

/// How long stuck orders must stay stuck, with nothing left in any outbox or
/// broker, for their loss to count as real and not as slowness.
const STILL_STUCK_AFTER: Duration = Duration::from_secs(5);

/// Log lines of the business handlers' own guards against a repeated
/// message (a second reservation, charge, shipment, e-mail or credit for the
/// same order, or a reply the saga is not waiting for).
const DOMAIN_GUARDS: [&str; 5] = [
    "already handled for this order",
    "order already charged or declined",
    "order already has a shipment",
    "e-mail already recorded",
    "stale, repeated or out of order",
];

/// Accepted orders not final (in progress or missing) at one look.
struct Stuck {
    orders: BTreeSet<Uuid>,
    unsent: i64,
}

/// What one chaos run left behind, read before its services were stopped.
struct ChaosRun {
    report: ChaosReport,
    /// Per service, the `unsafe_modes` its `/health/ready` reported right
    /// after the run (an error text if it did not answer).
    unsafe_modes: Vec<(&'static str, Result<Vec<String>, String>)>,
    /// When accepted orders were not final after the drain: the stuck ones
    /// then, and again [`STILL_STUCK_AFTER`] later.
    stuck: Option<(Stuck, Stuck)>,
    /// Repeated messages stopped by a business handler's own guard.
    domain_guard_hits: usize,
    /// Repeated messages stopped by the inbox.
    inbox_duplicates: usize,
}

/// `unsafe_modes` of `GET /health/ready` (answered 200 or 503 alike).
async fn reported_unsafe_modes(client: &reqwest::Client, base_url: &str) -> Result<Vec<String>, String> {
    let response = client
        .get(format!("{base_url}/health/ready"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let body: Value = response.json().await.map_err(|e| format!("not JSON: {e}"))?;
    let modes = body["unsafe_modes"].as_array().ok_or_else(|| format!("no unsafe_modes in {body}"))?;
    Ok(modes.iter().map(|m| m.as_str().unwrap_or_default().to_owned()).collect())
}

async fn stuck_now(backend: &Backend<'_>, accepted: &BTreeSet<Uuid>) -> Stuck {
    let pending = backend.pending_work(accepted).await.unwrap();
    Stuck { orders: pending.unfinished().intersection(accepted).copied().collect(), unsent: pending.unsent_total() }
}

async fn chaos_run(stack: &'static Stack, options: ChaosOptions) -> ChaosRun {
    let log_sizes: Vec<usize> = xtask::SERVICES
        .iter()
        .map(|s| std::fs::metadata(stack.service(s).log_path()).map_or(0, |m| m.len() as usize))
        .collect();
    let started = Instant::now();
    let backend = Backend::Local(stack);
    let result = xtask::chaos::run(&backend, options).await;
    // Read what needs the services running before stopping them: what they
    // say about their modes, and whether stuck orders still move.
    let client = reqwest::Client::new();
    let mut unsafe_modes = Vec::new();
    for spec in &xtask::SERVICES {
        unsafe_modes.push((spec.name, reported_unsafe_modes(&client, &stack.service(spec).url()).await));
    }
    let mut stuck = None;
    if let Ok(report) = &result {
        let first = stuck_now(&backend, &report.accepted_ids).await;
        if !first.orders.is_empty() {
            tokio::time::sleep(STILL_STUCK_AFTER).await;
            stuck = Some((first, stuck_now(&backend, &report.accepted_ids).await));
        }
    }
    // The runner leaves the six services it started running: stop them.
    for spec in &xtask::SERVICES {
        if let Err(e) = stack.service(spec).kill().await {
            eprintln!("stopping {spec} after the chaos run: {e:#}");
        }
    }
    let report = result.unwrap();
    println!("{report}");
    let (mut domain_guard_hits, mut inbox_duplicates) = (0, 0);
    for (spec, from) in xtask::SERVICES.iter().zip(log_sizes) {
        let log = std::fs::read(stack.service(spec).log_path()).unwrap_or_default();
        let log = String::from_utf8_lossy(log.get(from..).unwrap_or_default());
        let guards = log.lines().filter(|l| DOMAIN_GUARDS.iter().any(|g| l.contains(g))).count();
        let inbox = log.lines().filter(|l| l.contains("duplicate message: already handled")).count();
        println!("  {spec}: {inbox} duplicates stopped by the inbox, {guards} by the handler's own guard");
        domain_guard_hits += guards;
        inbox_duplicates += inbox;
    }
    println!("chaos run took {:.1}s", started.elapsed().as_secs_f64());
    ChaosRun { report, unsafe_modes, stuck, domain_guard_hits, inbox_duplicates }
}

fn failed_invariants(report: &ChaosReport) -> Vec<String> {
    report
        .invariants
        .failed()
        .iter()
        .map(|c| format!("{} {} ({} offenders)", c.number, c.title, c.offender_count))
        .collect()
}

/// The negative control for `control` (`unsafe_on`) or its safe twin.
async fn control_run(control: UnsafeMode, unsafe_on: bool) {
    on_chaos_stack(|stack| async move {
        let options = small_run(control, unsafe_on);
        let name = if unsafe_on {
            format!("NEGATIVE CONTROL {}", control.env_var())
        } else {
            format!("SAFE TWIN of {}", control.env_var())
        };
        let run = chaos_run(stack, options).await;
        let report = &run.report;
        println!(
            "{name}: violated {:?}; {} duplicates stopped by the inbox, {} by a handler's own guard",
            failed_invariants(report),
            run.inbox_duplicates,
            run.domain_guard_hits
        );

        // The mode was really on (or off) in every service, restarted ones included.
        let expected_modes: Vec<String> = if unsafe_on { vec![control.env_var().to_owned()] } else { Vec::new() };
        for (service, modes) in &run.unsafe_modes {
            assert_eq!(modes.as_ref(), Ok(&expected_modes), "{name}: unsafe modes reported by {service}");
        }

        if !unsafe_on {
            assert!(report.passed(), "{name} failed:\n{report}");
            return;
        }

        // The faults happened as planned, so what broke was the mode's doing.
        assert!(report.fault_errors.is_empty(), "{name}: fault injection failed: {:?}", report.fault_errors);
        assert!(
            report.unconfirmed_infrastructure().is_empty(),
            "{name}: planned infrastructure kills not confirmed: {:?}",
            report.unconfirmed_infrastructure()
        );
        assert!(report.kills.values().sum::<usize>() > 0, "{name}: nothing was killed");
        assert!(!report.passed(), "{name} passed the chaos run");
        let threatened = threatened_invariant(control);
        assert!(
            report.invariants.failed_invariants().contains(&threatened),
            "{name}: invariant {} ({}) held; violated instead: {:?}",
            threatened.number(),
            threatened.title(),
            failed_invariants(report)
        );
        if threatened == Invariant::Loyalty {
            // Credited twice, not merely behind: the run drained, and some
            // order holds more points than it earned.
            assert!(report.time_to_drain.is_some(), "{name}: did not drain, loyalty may only be behind:\n{report}");
            let over = report.invariants.get(Invariant::Loyalty).map_or(0, |c| c.counts["orders_over_credited"]);
            assert!(over > 0, "{name}: no order credited more than it earned:\n{report}");
        }
        if threatened == Invariant::OrdersFinal {
            // Lost, not slow: past the drain bound, accepted orders are
            // stuck with nothing left to publish, and stay so. (With the
            // slot moved past them, the lost messages stay in the outbox
            // unsent, and nothing will ever send them: checked below.)
            let slot_skipped = control == UnsafeMode::FlushBeforeConfirm;
            let drained = report.invariants.get(Invariant::OutboxesDrained).is_some_and(|c| c.passed());
            assert!(drained || slot_skipped, "{name}: outboxes not drained, the orders may only be slow:\n{report}");
            // Nor waiting in a queue or behind a consumer group's offsets:
            // the stuck orders' messages are nowhere.
            let settled = report.invariants.get(Invariant::NothingInFlight).is_some_and(|c| c.passed());
            assert!(settled, "{name}: messages still in flight, the orders may only be slow:\n{report}");
            let (first, later) = run.stuck.as_ref().expect("accepted orders not final after the run");
            let progressed: Vec<&Uuid> = first.orders.difference(&later.orders).collect();
            println!(
                "{name}: {} accepted orders stuck, {} of them still {:?} later, {} progressed; unsent {} then {}",
                first.orders.len(),
                first.orders.intersection(&later.orders).count(),
                STILL_STUCK_AFTER,
                progressed.len(),
                first.unsent,
                later.unsent
            );
            if slot_skipped {
                assert!(first.unsent > 0, "{name}: the lost messages should be left unsent in an outbox");
                assert_eq!(later.unsent, first.unsent, "{name}: unsent messages went out, so they were not lost");
            } else {
                assert_eq!((first.unsent, later.unsent), (0, 0), "{name}: messages still waiting in an outbox");
            }
            assert!(
                progressed.is_empty(),
                "{name}: stuck orders progressed within {STILL_STUCK_AFTER:?}, so the system was still moving: \
                 {progressed:?}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_publish_without_outbox_is_caught() {
    control_run(UnsafeMode::PublishWithoutOutbox, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_publish_without_outbox_safe_twin_passes() {
    control_run(UnsafeMode::PublishWithoutOutbox, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_ack_before_commit_is_caught() {
    control_run(UnsafeMode::AckBeforeCommit, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_ack_before_commit_safe_twin_passes() {
    control_run(UnsafeMode::AckBeforeCommit, false).await;
}

/// The loyalty ledger is append-only: it relies on the inbox alone (the
/// other handlers also guard on their business key), so a redelivered
/// `OrderPaid` or `OrderCancelled` credits or reverses twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_skip_inbox_is_caught() {
    control_run(UnsafeMode::SkipInbox, true).await;
}

/// The log-tailing relay reporting each position on receipt, before the
/// broker confirmed (what Eventuate's CDC does): what it held when it died
/// is never published, and the checker sees the orders it belonged to stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_flush_before_confirm_is_caught() {
    control_run(UnsafeMode::FlushBeforeConfirm, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_flush_before_confirm_safe_twin_passes() {
    control_run(UnsafeMode::FlushBeforeConfirm, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_skip_inbox_safe_twin_passes() {
    control_run(UnsafeMode::SkipInbox, false).await;
}

// ---------------------------------------------------------------------------
// 5. A Kafka producer after a failed delivery. librdkafka's idempotent
//    producer bumps its epoch by itself once a record times out; Tansu 0.6
//    never handed that epoch out and its storage task panics on it
//    (`more or less than one row`), leaving the broker listening but deaf.
//    The long chaos run met this; `KafkaPublisher` replaces its producer
//    after such a failure, so the bumped epoch is never sent.
// ---------------------------------------------------------------------------

/// Long enough for a record to time out while the broker is frozen, short
/// enough for a test.
const FROZEN_MESSAGE_TIMEOUT_MS: &str = "3000";

fn short_timeout_producer_config(brokers: &str, client_id: &str) -> rdkafka::ClientConfig {
    let mut config = messaging::kafka::producer_config(brokers, client_id);
    config.set("message.timeout.ms", FROZEN_MESSAGE_TIMEOUT_MS).set("request.timeout.ms", "2000");
    config
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Freezes the broker (SIGSTOP) for longer than a record may wait, around
/// one send, then thaws it (SIGCONT): `send` is called before the freeze
/// (must succeed), during it (must fail) and after it; returns what the
/// broker logged as panics after the freeze and the result of that last
/// send.
async fn freeze_broker_around<F, Fut>(stack: &Stack, topic: &str, send: F) -> (Vec<String>, Result<(), String>)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let brokers = stack.kafka_brokers();
    messaging::kafka::ensure_topics(&brokers, &[topic.to_owned()], 1).await.unwrap();
    send("before".into()).await.unwrap_or_else(|e| panic!("the broker did not take a record before the freeze: {e}"));

    let backend = Backend::Local(stack);
    let log_offset = backend.broker_log_lens();
    let pid = stack.component_pid(Component::Kafka).unwrap();
    signal(pid, "STOP");
    let during = tokio::time::timeout(Duration::from_secs(20), send("during".into())).await;
    signal(pid, "CONT");
    assert!(matches!(during, Ok(Err(_))), "a record sent to a frozen broker did not fail in time: {during:?}");

    let after = tokio::time::timeout(Duration::from_secs(20), send("after".into()))
        .await
        .unwrap_or_else(|_| Err("no answer in 20 s".into()));
    // A panic is logged by the broker's storage task as it handles the send.
    tokio::time::sleep(Duration::from_secs(1)).await;
    (backend.broker_panics_since(log_offset), after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_publisher_replaces_its_producer_after_a_timeout_and_the_broker_keeps_serving() {
    on_chaos_stack(|stack| async move {
        let topic = format!("producer-timeout-{}", Uuid::now_v7().simple());
        let config = short_timeout_producer_config(&stack.kafka_brokers(), "test-producer-timeout");
        let publisher = messaging::kafka::KafkaPublisher::with_config(config).unwrap();
        let envelope = contracts::Envelope::new("test.Probe", "producer-timeout", "test");
        let (panics, after) = freeze_broker_around(stack, &topic, |step| {
            let (publisher, topic, envelope) = (&publisher, &topic, &envelope);
            async move {
                let pending =
                    publisher.send(topic, "k", envelope, step.as_bytes(), &[]).await.map_err(|e| e.to_string())?;
                pending.delivered().await.map(|_| ()).map_err(|e| e.to_string())
            }
        })
        .await;
        assert!(panics.is_empty(), "the broker panicked: {panics:?}");
        after.unwrap_or_else(|e| panic!("the broker did not take a record after the freeze: {e}"));
        assert_eq!(publisher.replacements(), 1, "one failed generation, one replacement");
        println!("PRODUCER: timed out while the broker was frozen, replaced once, next record delivered");
    })
    .await;
}

/// The negative control: a producer kept after its timeout (as
/// `KafkaPublisher` did before) sends the epoch it bumped, and Tansu
/// panics on it. If this stops failing, Tansu was fixed and the test above
/// proves less than it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_control_a_producer_kept_after_its_timeout_crashes_tansu() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    on_chaos_stack(|stack| async move {
        let topic = format!("producer-kept-{}", Uuid::now_v7().simple());
        let producer: FutureProducer =
            short_timeout_producer_config(&stack.kafka_brokers(), "test-producer-kept").create().unwrap();
        let (panics, after) = freeze_broker_around(stack, &topic, |step| {
            let (producer, topic) = (&producer, &topic);
            async move {
                let record = FutureRecord::to(topic).key("k").payload(step.as_bytes());
                producer.send(record, Duration::from_secs(10)).await.map(|_| ()).map_err(|(e, _)| e.to_string())
            }
        })
        .await;
        drop(producer);
        // A deaf broker is restarted for the tests that follow.
        stack.restart_component(Component::Kafka).await.unwrap();
        start_component_with_retries(stack, Component::Kafka).await;
        assert!(
            panics.iter().any(|p| p.contains("more or less than one row")),
            "the kept producer did not crash Tansu (panics: {panics:?}, last send: {after:?})"
        );
        println!("PRODUCER KEPT: Tansu panicked: {panics:?}");
    })
    .await;
}

//! The console in a real browser (headless Chromium over WebDriver), on
//! the test stack with the six services and the console started by the
//! local runner's own process control, as `cargo xtask up` starts them:
//! place an order from the page and follow its journey across the six
//! services; kill `email` from the map and watch its lag grow while orders
//! still complete, restart it and watch the lag drain with every e-mail
//! sent once; and (the negative control) a journey whose shipping spans are
//! missing names shipping. Screenshots go to `target/console-screenshots/`.

#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use system_tests::browser::Browser;
use system_tests::test_stack;
use uuid::Uuid;
use xtask::Stack;
use xtask::services::{CONSOLE, SERVICE_STOP_TIMEOUT, SERVICES};

/// An order goes through five services in a second or two; this bounds
/// a slow CI machine, a Kafka restart and the spans' half-second batches.
const ORDER_COMPLETES_WITHIN: Duration = Duration::from_secs(90);
/// A restart waits until the service is ready (60 s at most), and its
/// consumer then catches up.
const RESTART_AND_DRAIN_WITHIN: Duration = Duration::from_secs(120);
/// The map is sampled every half second in this test.
const MAP_SHOWS_WITHIN: Duration = Duration::from_secs(30);

const SIX: [&str; 6] = ["order", "stock", "payment", "shipping", "email", "loyalty"];

fn screenshots() -> PathBuf {
    xtask::services::target_dir(&xtask::repo_root()).join("console-screenshots")
}

/// The services and the console on the test stack, as the runner runs them.
struct RunnerStack {
    stack: &'static Stack,
}

impl RunnerStack {
    async fn start() -> Result<Self> {
        let stack = test_stack().await;
        let runner = xtask::services::target_dir(&xtask::repo_root()).join("debug/xtask");
        ensure!(runner.is_file(), "{} is missing (`cargo xtask test` builds it)", runner.display());
        let this = RunnerStack { stack };
        this.stop().await;
        // A clean slate: what an earlier run left must not count here.
        for name in SERVICES.iter().map(|s| s.name).chain([CONSOLE.name]) {
            stack.drop_database(name).await?;
            stack.create_database(name).await?;
        }
        let runner = runner.display().to_string();
        stack
            .service(&CONSOLE)
            .start(&[("CONSOLE_RUNNER", runner.as_str()), ("CONSOLE_SAMPLE_INTERVAL_MS", "500")])
            .await
            .context("starting the console")?;
        for spec in &SERVICES {
            stack.service(spec).start(&[]).await.with_context(|| format!("starting {}", spec.name))?;
        }
        Ok(this)
    }

    fn console_url(&self) -> String {
        self.stack.service(&CONSOLE).url()
    }

    async fn stop(&self) {
        for spec in SERVICES.iter().chain([&CONSOLE]) {
            let _ = self.stack.service(spec).stop(SERVICE_STOP_TIMEOUT).await;
        }
    }
}

#[tokio::test]
async fn a_newcomer_follows_an_order_breaks_email_and_watches_it_recover() {
    let stack = RunnerStack::start().await.expect("starting the runner's stack");
    let browser = Browser::start().await.expect("starting headless Chromium");
    let result = tour(&stack, &browser).await;
    if result.is_err() {
        let _ = browser.screenshot(&screenshots(), "failure").await;
    }
    browser.close().await;
    stack.stop().await;
    result.unwrap();
}

async fn tour(stack: &RunnerStack, browser: &Browser) -> Result<()> {
    let console = stack.console_url();
    browser.open(&format!("{console}/")).await?;
    browser
        .wait_for(
            "the map to show all nine components ready",
            "return document.querySelectorAll('[data-component][data-state=\"ready\"]').length >= 9",
            vec![],
            MAP_SHOWS_WITHIN,
        )
        .await?;
    browser.screenshot(&screenshots(), "map").await?;

    // 1. An order placed from the page, followed across the six services.
    let first = place_order_from_page(browser, None).await?;
    let mut placed = BTreeSet::from([first]);
    browser.open(&format!("{console}/orders/{first}")).await?;
    wait_complete(browser, first).await?;
    let lanes = browser
        .eval(
            "return arguments[0].filter(s => document.querySelector(`#journey [data-service=\"${s}\"] [data-span-id]`))",
            vec![json!(SIX)],
        )
        .await?;
    ensure!(lanes == json!(SIX), "the journey shows spans of {lanes}, not of all six services");
    let hops = browser
        .eval(
            "return [...document.querySelectorAll('#hops tr[data-message-id]')].map(r => [
                 r.querySelector('[data-field=\"outbox-wait\"]')?.textContent ?? '',
                 r.querySelector('[data-field=\"broker-wait\"]')?.textContent ?? ''])",
            vec![],
        )
        .await?;
    let hops = hops.as_array().cloned().unwrap_or_default();
    // ReserveStock, StockReserved, ProcessPayment, PaymentSucceeded, the
    // order's events and ShipmentScheduled: a dozen hops at least.
    ensure!(hops.len() >= 8, "only {} hops shown: {hops:?}", hops.len());
    for hop in &hops {
        ensure!(
            hop.as_array().is_some_and(|cells| cells.iter().all(|c| c.as_str().is_some_and(|t| t.contains("ms")))),
            "a hop without both waiting times: {hop}"
        );
    }
    let missing = browser.eval("return document.querySelectorAll('#missing li').length", vec![]).await?;
    ensure!(missing == json!(0), "a complete journey names {missing} missing services");
    browser.screenshot(&screenshots(), "journey").await?;

    // 2. Email killed from the map: its lag grows, orders still complete.
    browser.open(&format!("{console}/")).await?;
    wait_state(browser, "email", "ready").await?;
    browser.click("button[data-action=\"kill\"][data-target=\"email\"]").await?;
    wait_state(browser, "email", "down").await?;
    let mut while_down = Vec::new();
    for _ in 0..3 {
        let previous = while_down.last().copied();
        let order = place_order_from_page(browser, previous.or(Some(first))).await?;
        while_down.push(order);
        placed.insert(order);
    }
    browser
        .wait_for(
            "email's consumer lag on orders to rise above 0",
            "return Number(document.querySelector('[data-edge=\"orders:email\"] [data-field=\"waiting\"]')?.textContent) > 0",
            vec![],
            ORDER_COMPLETES_WITHIN,
        )
        .await?;
    for order in &while_down {
        browser
            .wait_for(
                &format!("order {order} COMPLETED in the recent orders while email is down"),
                "return document.querySelector(`#recent-orders tr[data-order-id=\"${arguments[0]}\"] [data-field=\"status\"]`)?.textContent?.trim() === 'COMPLETED'",
                vec![json!(order.to_string())],
                ORDER_COMPLETES_WITHIN,
            )
            .await?;
    }
    browser.screenshot(&screenshots(), "map-email-down").await?;

    // 3. Restarted from the map: the lag drains to 0, each e-mail once.
    browser.click("button[data-action=\"restart\"][data-target=\"email\"]").await?;
    wait_state(browser, "email", "ready").await?;
    for edge in ["orders:email", "shipments:email"] {
        browser
            .wait_for(
                &format!("{edge} to drain to 0"),
                "return document.querySelector(`[data-edge=\"${arguments[0]}\"] [data-field=\"waiting\"]`)?.textContent?.trim() === '0'",
                vec![json!(edge)],
                RESTART_AND_DRAIN_WITHIN,
            )
            .await?;
    }
    browser.screenshot(&screenshots(), "map-email-recovered").await?;
    every_effect_once(stack.stack, &placed).await?;

    // 4. The negative control: shipping without tracing; its order's
    // journey must name shipping as missing.
    stack
        .stack
        .service_named("shipping")?
        .restart(&[("OTEL_SDK_DISABLED", "true")])
        .await
        .context("restarting shipping without tracing")?;
    browser.open(&format!("{console}/")).await?;
    let untraced = place_order_from_page(browser, while_down.last().copied()).await?;
    browser.open(&format!("{console}/orders/{untraced}")).await?;
    browser
        .wait_for(
            "the journey of an order shipped without tracing to name shipping missing",
            "const j = document.querySelector('#journey');
             return j?.dataset.status === 'COMPLETED' && j.dataset.complete === 'false'
                 && !!document.querySelector('#missing li[data-service=\"shipping\"]')",
            vec![],
            ORDER_COMPLETES_WITHIN,
        )
        .await?;
    browser.screenshot(&screenshots(), "journey-shipping-missing").await?;
    stack.stack.service_named("shipping")?.restart(&[]).await?;
    Ok(())
}

/// Clicks "Place an order" and returns the new order's id (different from
/// `previous`, the one shown before).
async fn place_order_from_page(browser: &Browser, previous: Option<Uuid>) -> Result<Uuid> {
    browser.click("#place-order").await?;
    let href = browser
        .wait_for(
            "the placed order's link",
            "const a = document.querySelector('#placed-order a');
             return a && !a.href.endsWith(arguments[0]) ? a.href : null",
            vec![json!(previous.map(|p| p.to_string()).unwrap_or_else(|| "-".into()))],
            Duration::from_secs(15),
        )
        .await?;
    let href = href.as_str().unwrap_or_default();
    let id = href.rsplit('/').next().unwrap_or_default();
    Uuid::parse_str(id).with_context(|| format!("the placed order's link {href} does not end in an order id"))
}

async fn wait_state(browser: &Browser, component: &str, state: &str) -> Result<Value> {
    browser
        .wait_for(
            &format!("{component} to be shown {state}"),
            "return document.querySelector(`[data-component=\"${arguments[0]}\"]`)?.dataset.state === arguments[1]",
            vec![json!(component), json!(state)],
            RESTART_AND_DRAIN_WITHIN,
        )
        .await
}

async fn wait_complete(browser: &Browser, order: Uuid) -> Result<Value> {
    browser
        .wait_for(
            &format!("the journey of {order} to be complete and COMPLETED"),
            "const j = document.querySelector('#journey');
             return j?.dataset.complete === 'true' && j.dataset.status === 'COMPLETED'",
            vec![],
            ORDER_COMPLETES_WITHIN,
        )
        .await
}

/// The invariant checker on the stack's six databases and brokers: every
/// placed order final, every effect once, nothing left in flight.
async fn every_effect_once(stack: &Stack, placed: &BTreeSet<Uuid>) -> Result<()> {
    let urls = invariants::DatabaseUrls::on_server(&stack.postgres_server_url(), str::to_owned);
    let options = invariants::CheckOptions {
        accepted: Some(placed.clone()),
        brokers: invariants::brokers::Brokers {
            amqp_url: Some(stack.amqp_url()),
            kafka_brokers: Some(stack.kafka_brokers()),
            topology: contracts::Topology::default(),
        },
        ..Default::default()
    };
    // The map shows lag from committed offsets; the other groups commit
    // their last records a moment later: asked again until it holds.
    let deadline = std::time::Instant::now() + RESTART_AND_DRAIN_WITHIN;
    loop {
        let checked = invariants::check_what_answers(&urls, &options).await;
        if checked.report.passed() {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the invariants do not hold after email caught up:\n{}",
            checked.report
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

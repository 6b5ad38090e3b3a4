//! Order throughput, latency, settle time and memory of the whole system, with
//! tracing off and on: figures, not pass/fail. Each scenario starts a fresh
//! system of the six services on the local runner's test stack.
//!
//! ```text
//! cargo run -p load-tests -- --orders 500 --concurrency 16
//! ORDERMESH_SERVICE_PROFILE=release cargo run --release -p load-tests -- --orders 500
//! ```
//!
//! The second form measures release builds of the services (what the
//! figures in the README are for); debug builds exaggerate CPU costs such
//! as span export.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::time::{Duration, Instant};
use system_tests::TestSystem;
use system_tests::otlp::OtlpReceiver;
use system_tests::system::ALL_SERVICES;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Orders per scenario.
    #[arg(long, default_value_t = 300)]
    orders: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seed of the order mix (the chaos suite's mix).
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

struct Figures {
    placed_per_second: f64,
    latency_ms: [f64; 3],
    settled_after: Duration,
    settled_per_second: f64,
    spans: usize,
    rss_mb: Vec<(&'static str, f64)>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    println!(
        "{} mixed orders per scenario, {} in flight; {} builds of the services",
        args.orders,
        args.concurrency,
        xtask::services::service_profile()
    );
    let off = scenario(&args, false).await.context("tracing off")?;
    let on = scenario(&args, true).await.context("tracing on")?;
    println!();
    println!("{:<28} {:>14} {:>14}", "", "tracing off", "tracing on");
    println!("{:<28} {:>14.1} {:>14.1}", "POST /orders per second", off.placed_per_second, on.placed_per_second);
    for (i, p) in ["p50", "p95", "p99"].iter().enumerate() {
        println!("{:<28} {:>14.1} {:>14.1}", format!("POST latency {p} (ms)"), off.latency_ms[i], on.latency_ms[i]);
    }
    println!(
        "{:<28} {:>14.2} {:>14.2}",
        "all final after (s)",
        off.settled_after.as_secs_f64(),
        on.settled_after.as_secs_f64()
    );
    println!("{:<28} {:>14.1} {:>14.1}", "orders settled per second", off.settled_per_second, on.settled_per_second);
    println!("{:<28} {:>14} {:>14}", "spans exported", off.spans, on.spans);
    for ((service, a), (_, b)) in off.rss_mb.iter().zip(&on.rss_mb) {
        println!("{:<28} {:>14.1} {:>14.1}", format!("{service} RSS (MB)"), a, b);
    }
    let overhead = (off.settled_per_second - on.settled_per_second) / off.settled_per_second * 100.0;
    println!("\ntracing overhead on settled-order throughput: {overhead:.1}%");
    Ok(())
}

async fn scenario(args: &Args, tracing: bool) -> Result<Figures> {
    // Tansu slows down as its storage file grows: each scenario starts from
    // an empty broker, so the two are compared on equal terms and neither
    // measures what earlier test runs left behind.
    system_tests::test_stack().await.kafka().restart_empty().await.context("emptying Kafka")?;
    let (receiver, endpoint) = OtlpReceiver::start().await;
    let env: Vec<(&str, &str)> =
        if tracing { vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())] } else { vec![] };
    let system = TestSystem::start(if tracing { "loadon" } else { "loadoff" }, &ALL_SERVICES, &env).await?;
    let started = Instant::now();
    let mut latencies = Vec::with_capacity(args.orders);
    let mut ids: Vec<Uuid> = Vec::with_capacity(args.orders);
    let bodies: Vec<serde_json::Value> =
        (0..args.orders).map(|i| xtask::chaos::load::order_body(args.seed, i)).collect();
    for chunk in bodies.chunks(args.concurrency.max(1)) {
        let timed = futures::future::join_all(chunk.iter().map(|body| async {
            let t = Instant::now();
            let result = system.place_order(body, None).await;
            (t.elapsed(), result)
        }))
        .await;
        for (latency, result) in timed {
            let (status, body) = result?;
            if status != 202 {
                bail!("POST /orders answered {status}: {body}");
            }
            latencies.push(latency.as_secs_f64() * 1000.0);
            ids.push(body["order_id"].as_str().context("order id")?.parse()?);
        }
    }
    let placed = started.elapsed();
    let statuses = system.wait_for_statuses(&ids, &["COMPLETED", "CANCELLED"], Duration::from_secs(300)).await?;
    let settled_after = started.elapsed();
    if statuses.len() < ids.len() || statuses.values().any(|s| s != "COMPLETED" && s != "CANCELLED") {
        bail!("not every order settled within 300 s");
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let mut rss_mb = Vec::new();
    for service in ALL_SERVICES {
        let (_, metrics) = system.get_text(service, "/metrics").await?;
        let bytes: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        rss_mb.push((service, bytes / 1e6));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spans = receiver.spans().len();
    system.shutdown().await;
    println!(
        "tracing {}: placed in {:.2}s, all final after {:.2}s",
        if tracing { "on " } else { "off" },
        placed.as_secs_f64(),
        settled_after.as_secs_f64()
    );
    Ok(Figures {
        placed_per_second: args.orders as f64 / placed.as_secs_f64(),
        latency_ms: [pct(0.5), pct(0.95), pct(0.99)],
        settled_after,
        settled_per_second: args.orders as f64 / settled_after.as_secs_f64(),
        spans,
        rss_mb,
    })
}

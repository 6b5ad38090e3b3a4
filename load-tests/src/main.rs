//! Order throughput, latency, settle time and memory of the whole system, with
//! tracing off, on (spans to an in-memory receiver) and on with the console
//! receiving and storing them: figures, not pass/fail. Each scenario starts
//! a fresh system of the six services on the local runner's test stack.
//!
//! ```text
//! cargo run -p load-tests -- --orders 500 --concurrency 16
//! ORDERMESH_SERVICE_PROFILE=release cargo run --release -p load-tests -- --orders 500
//! ```
//!
//! The second form measures release builds of the services (what the
//! figures in docs/benchmarks.md are for); debug builds exaggerate CPU costs such
//! as span export.

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::time::{Duration, Instant};
use system_tests::TestSystem;
use system_tests::console::InProcessConsole;
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

/// Where the spans go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tracing {
    Off,
    /// An OTLP receiver that keeps them in memory: the cost of exporting.
    Receiver,
    /// The console, storing them in its PostgreSQL database: the cost of
    /// the console on the same machine.
    Console,
}

impl Tracing {
    fn name(self) -> &'static str {
        match self {
            Tracing::Off => "tracing off",
            Tracing::Receiver => "tracing on",
            Tracing::Console => "to the console",
        }
    }
}

struct Figures {
    name: &'static str,
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
    let mut all = Vec::new();
    for tracing in [Tracing::Off, Tracing::Receiver, Tracing::Console] {
        all.push(scenario(&args, tracing).await.context(tracing.name())?);
    }
    println!();
    let row = |label: &str, cells: Vec<String>| {
        println!("{label:<28} {}", cells.iter().map(|c| format!("{c:>15}")).collect::<String>());
    };
    row("", [Tracing::Off, Tracing::Receiver, Tracing::Console].iter().map(|t| t.name().to_owned()).collect());
    row("POST /orders per second", all.iter().map(|f| format!("{:.1}", f.placed_per_second)).collect());
    for (i, p) in ["p50", "p95", "p99"].iter().enumerate() {
        row(&format!("POST latency {p} (ms)"), all.iter().map(|f| format!("{:.1}", f.latency_ms[i])).collect());
    }
    row("all final after (s)", all.iter().map(|f| format!("{:.2}", f.settled_after.as_secs_f64())).collect());
    row("orders settled per second", all.iter().map(|f| format!("{:.1}", f.settled_per_second)).collect());
    row("spans received", all.iter().map(|f| f.spans.to_string()).collect());
    for (i, (service, _)) in all[0].rss_mb.iter().enumerate() {
        row(&format!("{service} RSS (MB)"), all.iter().map(|f| format!("{:.1}", f.rss_mb[i].1)).collect());
    }
    let off = &all[0];
    for figures in &all[1..] {
        let overhead = (off.settled_per_second - figures.settled_per_second) / off.settled_per_second * 100.0;
        let post = (off.placed_per_second - figures.placed_per_second) / off.placed_per_second * 100.0;
        println!(
            "{}: {overhead:.1}% fewer orders settled per second, {post:.1}% fewer POSTs per second than tracing off",
            figures.name
        );
    }
    Ok(())
}

async fn scenario(args: &Args, tracing: Tracing) -> Result<Figures> {
    // Tansu slows down as its storage file grows: each scenario starts from
    // an empty broker, so the two are compared on equal terms and neither
    // measures what earlier test runs left behind.
    system_tests::test_stack().await.kafka().restart_empty().await.context("emptying Kafka")?;
    let (receiver, receiver_endpoint) = OtlpReceiver::start().await;
    let console = match tracing {
        Tracing::Console => Some(InProcessConsole::start("loadconsole", |_| {}).await?),
        _ => None,
    };
    let endpoint = match (&console, tracing) {
        (Some(console), _) => Some(console.url.clone()),
        (None, Tracing::Receiver) => Some(receiver_endpoint),
        _ => None,
    };
    // The runner's setting for a console: spans every half second.
    let env: Vec<(&str, &str)> = match &endpoint {
        Some(endpoint) => vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "500")],
        None => vec![],
    };
    let name = match tracing {
        Tracing::Off => "loadoff",
        Tracing::Receiver => "loadon",
        Tracing::Console => "loadconsole",
    };
    let system = TestSystem::start(name, &ALL_SERVICES, &env).await?;
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
    let spans = match &console {
        Some(console) => console.stored_spans().await?,
        None => receiver.spans().len(),
    };
    system.shutdown().await;
    println!(
        "{}: placed in {:.2}s, all final after {:.2}s",
        tracing.name(),
        placed.as_secs_f64(),
        settled_after.as_secs_f64()
    );
    Ok(Figures {
        name: tracing.name(),
        placed_per_second: args.orders as f64 / placed.as_secs_f64(),
        latency_ms: [pct(0.5), pct(0.95), pct(0.99)],
        settled_after,
        settled_per_second: args.orders as f64 / settled_after.as_secs_f64(),
        spans,
        rss_mb,
    })
}

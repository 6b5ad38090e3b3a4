//! The whole system under an open loop: orders arrive at a fixed rate
//! (each request sent at its scheduled time whether or not the earlier ones
//! were answered, its latency counted from that time, so a stalled server
//! cannot hide its queue: no coordinated omission), stepped up until the
//! system falls behind. Once with every guarantee, once with the unsafe
//! modes (no outbox, no inbox), on fresh systems of release builds; beside
//! the commit ceiling of the same PostgreSQL (pgbench) and the commits one
//! order costs across the six databases. A report (HTML and JSON) under
//! `--report`. Figures, not pass/fail.
//!
//! ```text
//! cargo xtask bench
//! ORDERMESH_SERVICE_PROFILE=release cargo run --release -p load-tests --bin e2e -- --rates 10,20,40,80
//! ```

use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use load_tests::report::{Chart, Report, Table, figure};
use std::path::PathBuf;
use std::time::Duration;
use system_tests::TestSystem;
use system_tests::system::ALL_SERVICES;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Arrival rates to step through, orders per second.
    #[arg(long, value_delimiter = ',', default_values_t = [10.0, 20.0, 40.0, 80.0, 160.0])]
    rates: Vec<f64>,
    /// How long each rate lasts, seconds.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// A step is sustained when every order placed in it is final this long
    /// after the step ends, and at least 95 % of the asked rate was sent.
    #[arg(long, default_value_t = 20)]
    drain_seconds: u64,
    /// Seed of the order mix (the chaos suite's mix: some cancelled).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the report goes (e2e.html, e2e.json).
    #[arg(long, default_value = "target/bench")]
    report: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Safe,
    Unsafe,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Safe => "safe (outbox and inbox)",
            Mode::Unsafe => "unsafe (no outbox, no inbox)",
        }
    }

    fn env(self) -> Vec<(&'static str, &'static str)> {
        match self {
            Mode::Safe => vec![],
            Mode::Unsafe => {
                vec![(messaging::safety::PUBLISH_WITHOUT_OUTBOX, "1"), (messaging::safety::SKIP_INBOX, "1")]
            }
        }
    }
}

/// One rate's figures.
struct Step {
    asked: f64,
    achieved: f64,
    /// `POST /orders` from its scheduled time to its answer: p50, p99, p99.9 (ms).
    post_ms: [f64; 3],
    /// Commit of the order to its final status (server clock): p50, p99, p99.9 (ms).
    final_ms: [f64; 3],
    refused: usize,
    all_final: bool,
    /// Commits on the six databases per order placed in the step.
    commits_per_order: f64,
    rss_mb: Vec<(&'static str, f64)>,
}

impl Step {
    fn sustained(&self) -> bool {
        self.all_final && self.refused == 0 && self.achieved >= 0.95 * self.asked
    }
}

struct Run {
    mode: Mode,
    idle_rss_mb: Vec<(&'static str, f64)>,
    steps: Vec<Step>,
}

impl Run {
    fn highest_sustained(&self) -> Option<&Step> {
        self.steps.iter().filter(|s| s.sustained()).max_by(|a, b| a.asked.total_cmp(&b.asked))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let stack = system_tests::test_stack().await;
    stack.start_infra().await.context("starting the test stack")?;
    let mut runs = vec![];
    for mode in [Mode::Safe, Mode::Unsafe] {
        runs.push(run(&args, mode, &args.rates).await.with_context(|| mode.name())?);
    }
    // The latency target is set at half the highest rate sustained.
    let half = runs[0].highest_sustained().map(|s| (s.asked / 2.0).round().max(1.0));
    let half_step = match half {
        Some(rate) => run(&args, Mode::Safe, &[rate]).await?.steps.pop(),
        None => None,
    };
    println!("PostgreSQL's commit ceiling (pgbench -N, 4 clients, {} s)", args.seconds);
    let ceiling = load_tests::commit_ceiling::measure(stack, &[4], Duration::from_secs(args.seconds)).await?;
    let ceiling_tps = ceiling.first().map_or(f64::NAN, |c| c.transactions_per_second);
    let report = report(&args, &runs, half_step.as_ref(), ceiling_tps, load_tests::report::environment(stack).await);
    report.print();
    let html = report.write(&args.report, "e2e").context("writing the report")?;
    println!("report: {}", html.display());
    Ok(())
}

/// A fresh system in `mode`, stepped through `rates` until one is not sustained.
async fn run(args: &Args, mode: Mode, rates: &[f64]) -> Result<Run> {
    // Tansu slows as its file grows: every run starts from an empty one.
    system_tests::test_stack().await.kafka().restart_empty().await.context("emptying Kafka")?;
    let name = if mode == Mode::Safe { "e2esafe" } else { "e2eunsafe" };
    let system = TestSystem::start(name, &ALL_SERVICES, &mode.env()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_mb = rss(&system);
    let mut steps = vec![];
    let mut index = 0;
    for &rate in rates {
        let step = step(args, &system, rate, &mut index).await?;
        println!(
            "{}: {rate} orders/s asked, {:.1} sent; POST p99 {:.1} ms; final p99 {:.0} ms; {}",
            mode.name(),
            step.achieved,
            step.post_ms[1],
            step.final_ms[1],
            if step.sustained() { "sustained" } else { "fell behind" }
        );
        let sustained = step.sustained();
        steps.push(step);
        if !sustained {
            break;
        }
    }
    system.shutdown().await;
    Ok(Run { mode, idle_rss_mb, steps })
}

async fn step(args: &Args, system: &TestSystem, rate: f64, index: &mut usize) -> Result<Step> {
    let count = (rate * args.seconds as f64).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let url = format!("{}/orders", system.url("order"));
    let commits_before = commits(system).await?;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due).await;
        let body = xtask::chaos::load::order_body(args.seed, *index + i);
        let request = system.http.post(&url).json(&body);
        // Spawned: a slow answer never delays the next request's send.
        tasks.push(tokio::spawn(async move {
            let answer = request.send().await;
            let latency = due.elapsed();
            let id = match answer {
                Ok(response) if response.status().as_u16() == 202 => response
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|b| b["order_id"].as_str()?.parse::<Uuid>().ok()),
                _ => None,
            };
            (latency, id)
        }));
    }
    let sent_for = start.elapsed();
    *index += count;
    let mut post = Histogram::<u64>::new(3)?;
    let mut ids = vec![];
    let mut refused = 0;
    for task in tasks {
        let (latency, id) = task.await?;
        post.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX))?;
        match id {
            Some(id) => ids.push(id),
            None => refused += 1,
        }
    }
    let achieved = count as f64 / sent_for.as_secs_f64().max(f64::EPSILON);
    let rss_mb = rss(system);
    let all_final = system
        .wait_for_statuses(&ids, &["COMPLETED", "CANCELLED"], Duration::from_secs(args.drain_seconds))
        .await
        .map(|statuses| statuses.values().all(|s| s == "COMPLETED" || s == "CANCELLED"))
        .unwrap_or(false);
    let commits_per_order = (commits(system).await? - commits_before) as f64 / ids.len().max(1) as f64;
    let finals: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM h.at - o.created_at) * 1000)::float8
         FROM orders o JOIN order_history h ON h.order_id = o.id AND h.to_status IN ('COMPLETED', 'CANCELLED')
         WHERE o.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(system.db("order"))
    .await?;
    let mut final_histogram = Histogram::<u64>::new(3)?;
    for ms in finals {
        final_histogram.record((ms * 1000.0).max(0.0) as u64)?;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Step {
        asked: rate,
        achieved,
        post_ms: [ms(&post, 0.5), ms(&post, 0.99), ms(&post, 0.999)],
        final_ms: [ms(&final_histogram, 0.5), ms(&final_histogram, 0.99), ms(&final_histogram, 0.999)],
        refused,
        all_final,
        commits_per_order,
        rss_mb,
    })
}

/// Commits so far on the system's six databases.
async fn commits(system: &TestSystem) -> Result<i64> {
    let names: Vec<String> = ALL_SERVICES.iter().map(|s| format!("{}_{s}", system.namespace)).collect();
    Ok(sqlx::query_scalar("SELECT coalesce(sum(xact_commit), 0)::int8 FROM pg_stat_database WHERE datname = ANY($1)")
        .bind(&names)
        .fetch_one(system.db("order"))
        .await?)
}

/// Resident memory of each service process (MB), from /proc.
fn rss(system: &TestSystem) -> Vec<(&'static str, f64)> {
    ALL_SERVICES
        .iter()
        .map(|service| {
            let kib = system
                .pid(service)
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
                .and_then(|status| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse::<f64>().ok())
                })
                .unwrap_or(f64::NAN);
            (*service, kib / 1024.0)
        })
        .collect()
}

fn report(
    args: &Args,
    runs: &[Run],
    half: Option<&Step>,
    ceiling_tps: f64,
    environment: Vec<(String, String)>,
) -> Report {
    let mut tables = vec![];
    let mut charts = vec![];
    let mut findings = vec![];
    for run in runs {
        let header = [
            "orders/s asked",
            "sent",
            "POST p50 / p99 / p99.9 (ms)",
            "final p50 / p99 / p99.9 (ms)",
            "refused",
            "commits per order",
            "sustained",
        ];
        let rows = run
            .steps
            .iter()
            .map(|s| {
                vec![
                    figure(s.asked),
                    figure(s.achieved),
                    format!("{:.1} / {:.1} / {:.1}", s.post_ms[0], s.post_ms[1], s.post_ms[2]),
                    format!("{:.0} / {:.0} / {:.0}", s.final_ms[0], s.final_ms[1], s.final_ms[2]),
                    s.refused.to_string(),
                    format!("{:.1}", s.commits_per_order),
                    if s.sustained() { "yes".into() } else { "no".into() },
                ]
            })
            .collect();
        tables.push(Table {
            title: format!("{}: open loop, stepped", run.mode.name()),
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows,
        });
    }
    // One chart for both modes: bars drawn to one scale, so safe and unsafe
    // compare by length (two charts were each scaled to their own longest).
    charts.push(Chart {
        title: "POST /orders p99 by arrival rate, safe and unsafe (ms)".into(),
        unit: "ms".into(),
        bars: runs
            .iter()
            .flat_map(|run| {
                let mode = if run.mode == Mode::Safe { "safe" } else { "unsafe" };
                run.steps.iter().map(move |s| (format!("{mode}, {} orders/s", figure(s.asked)), s.post_ms[1]))
            })
            .collect(),
    });
    let (safe, unsafe_) = (&runs[0], &runs[1]);
    let mut memory = vec![];
    for (i, service) in ALL_SERVICES.iter().enumerate() {
        let at_load = safe.highest_sustained().and_then(|s| s.rss_mb.get(i)).map_or(f64::NAN, |(_, mb)| *mb);
        let idle = safe.idle_rss_mb.get(i).map_or(f64::NAN, |(_, mb)| *mb);
        memory.push(vec![(*service).to_owned(), format!("{idle:.1}"), format!("{at_load:.1}")]);
        findings.push(format!(
            "{service}: {idle:.1} MB RSS idle (target ≤ 30 MB: {})",
            if idle <= 30.0 { "met" } else { "missed" }
        ));
    }
    tables.push(Table {
        title: "Memory (RSS, MB), safe mode: idle, and at the highest sustained rate".into(),
        header: vec!["service".into(), "idle".into(), "at the highest sustained rate".into()],
        rows: memory,
    });
    match (safe.highest_sustained(), unsafe_.highest_sustained()) {
        (Some(s), Some(u)) => {
            findings.push(format!(
                "highest sustained: {} orders/s safe, {} unsafe; safe ÷ unsafe = {:.2} (target ≥ 0.70: {})",
                figure(s.asked),
                figure(u.asked),
                s.asked / u.asked,
                if s.asked / u.asked >= 0.7 { "met" } else { "missed" }
            ));
            let ceiling_orders = ceiling_tps / s.commits_per_order;
            findings.push(format!(
                "commit ceiling {} tx/s (pgbench, 4 clients) ÷ {:.1} commits per order = {} orders/s; sustained {} = {:.2} of it (target ≥ 0.50: {})",
                figure(ceiling_tps),
                s.commits_per_order,
                figure(ceiling_orders),
                figure(s.asked),
                s.asked / ceiling_orders,
                if s.asked / ceiling_orders >= 0.5 { "met" } else { "missed" }
            ));
        }
        _ => findings.push("no rate was sustained in one of the modes: lower --rates".into()),
    }
    if let Some(half) = half {
        findings.push(format!(
            "POST /orders p99 {:.1} ms at {} orders/s, half the highest sustained rate (target ≤ 15 ms: {})",
            half.post_ms[1],
            figure(half.asked),
            if half.post_ms[1] <= 15.0 { "met" } else { "missed" }
        ));
    }
    let step_json = |s: &Step| {
        serde_json::json!({
            "asked_per_second": s.asked, "sent_per_second": s.achieved,
            "post_ms": {"p50": s.post_ms[0], "p99": s.post_ms[1], "p99.9": s.post_ms[2]},
            "final_ms": {"p50": s.final_ms[0], "p99": s.final_ms[1], "p99.9": s.final_ms[2]},
            "refused": s.refused, "all_final": s.all_final, "sustained": s.sustained(),
            "commits_per_order": s.commits_per_order,
            "rss_mb": s.rss_mb.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        })
    };
    let figures = serde_json::json!({
        "runs": runs.iter().map(|r| serde_json::json!({
            "mode": r.mode.name(),
            "idle_rss_mb": r.idle_rss_mb.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "steps": r.steps.iter().map(step_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "half_of_highest_sustained": half.map(step_json),
        "postgres_commit_ceiling_tps": ceiling_tps,
    });
    Report {
        title: "ordermesh: the whole system under an open loop, safe and unsafe".into(),
        environment,
        settings: vec![
            ("arrival rates".into(), format!("{:?} orders/s, stopping at the first not sustained", args.rates)),
            ("each rate".into(), format!("{} s", args.seconds)),
            (
                "sustained".into(),
                format!(
                    "≥ 95 % of the rate sent, none refused, every order final within {} s of the step's end",
                    args.drain_seconds
                ),
            ),
            ("order mix".into(), format!("the chaos suite's, seed {}", args.seed)),
            (
                "services".into(),
                format!("profile {}", std::env::var("ORDERMESH_SERVICE_PROFILE").unwrap_or_else(|_| "debug".into())),
            ),
        ],
        tables,
        charts,
        findings,
        figures,
    }
}

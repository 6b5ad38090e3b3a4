//! The two outbox relays side by side, and beside RabbitMQ's own speed, on
//! the same PostgreSQL and RabbitMQ in one run (the test stack's): messages
//! per second at saturation, the time from a row's commit to its broker
//! confirmation at fixed rates (p50, p99, p99.9), and what each relay costs
//! the database, idle and busy (transactions per second on its database, CPU
//! of the server processes serving it, the WAL sender included). The
//! baseline is raw publishing with confirmation: the same messages through
//! the same publisher (`AmqpPublisher`, the same confirm window as the
//! relay's batches and lanes) with no database at all. Figures, not
//! pass/fail: a report (HTML with charts, and JSON) under `--report`.
//!
//! ```text
//! cargo xtask bench
//! cargo run --release -p load-tests --bin relays -- --messages 20000 --rates 100,1000
//! ```

use anyhow::{Context, Result};
use clap::Parser;
use contracts::catalogue::{OrderLine, OrderPlaced, ReserveStock};
use contracts::topology::EVENT_TOPIC_PARTITIONS;
use futures::StreamExt;
use health::Readiness;
use load_tests::report::{Chart, Report, Table, figure};
use messaging::amqp::{AmqpConnector, AmqpPublisher};
use messaging::kafka::KafkaPublisher;
use messaging::log_tailing::{LogTailingConfig, LogTailingRelay, RelayMode, slot};
use messaging::relay::{OutboxRelay, RelayConfig};
use messaging::{MessageFactory, Outbox, OutboxMessage};
use sqlx::PgPool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use system_tests::{fresh_database, test_stack, unique_namespace};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `application_name` of the relay's pool.
const RELAY_APPLICATION: &str = "bench-relay";

#[derive(Parser)]
struct Args {
    /// Messages written at once for the saturation figure.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Messages per transaction when saturating.
    #[arg(long, default_value_t = 10)]
    per_transaction: usize,
    /// Fixed rates (messages per second, one per transaction) for the
    /// latency figures; 50 % of each one's saturation rate is added.
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 1000.0])]
    rates: Vec<f64>,
    /// How long each fixed rate and the idle measurement last, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The brokers to measure, each on its own: `rabbitmq`, `kafka`.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["rabbitmq", "kafka"])]
    brokers: Vec<Broker>,
    /// Kafka: messages at saturation.
    #[arg(long, default_value_t = 10_000)]
    kafka_messages: usize,
    /// Kafka: the fixed rates (50 % of saturation is added).
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 1000.0])]
    kafka_rates: Vec<f64>,
    /// The polling relay's groups of lanes published at once
    /// (`RelayConfig::lane_groups`), one measurement each: a list compares
    /// settings in the same run.
    #[arg(long, value_delimiter = ',', default_values_t = [RelayConfig::default().lane_groups])]
    lane_groups: Vec<usize>,
    /// Where the report goes (relays.html, relays.json).
    #[arg(long, default_value = "target/bench")]
    report: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Broker {
    Rabbitmq,
    Kafka,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Rabbitmq => "RabbitMQ",
            Broker::Kafka => "Kafka",
        }
    }
}

/// What one broker's runs are asked to do.
struct Plan {
    broker: Broker,
    messages: usize,
    per_transaction: usize,
    rates: Vec<f64>,
    seconds: u64,
}

impl Plan {
    fn of(args: &Args, broker: Broker) -> Plan {
        let (messages, rates) = match broker {
            Broker::Rabbitmq => (args.messages, args.rates.clone()),
            Broker::Kafka => (args.kafka_messages, args.kafka_rates.clone()),
        };
        Plan { broker, messages, per_transaction: args.per_transaction, rates, seconds: args.seconds }
    }

    /// The asked rates, then half of the saturation rate.
    fn fixed_rates(&self, saturated_per_second: f64) -> Vec<f64> {
        let mut rates = self.rates.clone();
        rates.push((saturated_per_second / 2.0).round().max(1.0));
        rates
    }
}

/// The publishers of one run: the broker's, connected.
struct Publishers {
    amqp: Option<Arc<AmqpPublisher>>,
    kafka: Option<Arc<KafkaPublisher>>,
    /// The queue or topic the run publishes to.
    destination: String,
}

impl Publishers {
    async fn start(
        broker: Broker,
        topology: &contracts::Topology,
        client: &str,
        shutdown: &CancellationToken,
    ) -> Result<Publishers> {
        let stack = test_stack().await;
        Ok(match broker {
            Broker::Rabbitmq => {
                let connector = AmqpConnector::new(stack.amqp_url(), client, Readiness::new());
                let amqp = Arc::new(AmqpPublisher::new(connector, topology.clone()));
                tokio::spawn(amqp.clone().keep_connected(shutdown.clone()));
                Publishers { amqp: Some(amqp), kafka: None, destination: topology.stock_commands() }
            }
            Broker::Kafka => {
                let topic = topology.orders_topic();
                let brokers = stack.kafka_brokers();
                messaging::kafka::ensure_topics(&brokers, std::slice::from_ref(&topic), EVENT_TOPIC_PARTITIONS)
                    .await
                    .context("creating the benchmark's topic")?;
                let kafka = Arc::new(KafkaPublisher::new(&brokers, client)?);
                Publishers { amqp: None, kafka: Some(kafka), destination: topic }
            }
        })
    }

    /// Message `i`, as the services write them: a command to stock on
    /// RabbitMQ, an order's event on Kafka (keyed by one of 64 orders).
    fn message(&self, factory: &MessageFactory, topology: &contracts::Topology, i: usize) -> Result<OutboxMessage> {
        let order_id = Uuid::now_v7();
        let aggregate = format!("agg-{}", i % 64);
        let lines = vec![OrderLine { sku: format!("SKU-{i}"), quantity: 1 }];
        Ok(if self.amqp.is_some() {
            factory.command(
                &self.destination,
                &aggregate,
                &topology.order_replies(),
                None,
                &ReserveStock { order_id, lines },
            )?
        } else {
            let placed = OrderPlaced { order_id, customer_id: "c-bench".into(), lines, payment_method: "card".into() };
            factory.event(&self.destination, &aggregate, i as i64, None, &placed)?
        })
    }

    /// One message as the relay sends a row: its payload serialized, then
    /// published; what comes back is the broker's answer, later.
    async fn send(&self, message: &OutboxMessage) -> Result<Pending> {
        let payload = serde_json::to_vec(&message.payload)?;
        match (&message.destination, &self.amqp, &self.kafka) {
            (messaging::Destination::Queue(queue), Some(amqp), _) => {
                Ok(Pending::Amqp(amqp.send(queue, &message.envelope, &payload, &[]).await?))
            }
            (messaging::Destination::Topic(topic), _, Some(kafka)) => {
                Ok(Pending::Kafka(kafka.send(topic, &message.partition_key, &message.envelope, &payload, &[]).await?))
            }
            (destination, ..) => anyhow::bail!("no publisher for {destination:?}"),
        }
    }

    async fn clean_up(&self) {
        if self.amqp.is_some() {
            let _ = system_tests::brokers::delete_queue(&test_stack().await.amqp_url(), &self.destination).await;
        }
    }
}

/// A message the broker has, not yet confirmed.
enum Pending {
    Amqp(messaging::amqp::PendingConfirm),
    Kafka(messaging::kafka::PendingDelivery),
}

impl Pending {
    async fn settled(self) -> Result<()> {
        match self {
            Pending::Amqp(confirm) => confirm.confirmed().await?,
            Pending::Kafka(delivery) => {
                delivery.delivered().await?;
            }
        }
        Ok(())
    }
}

/// The figures of one way of getting messages to the broker.
struct Figures {
    name: String,
    saturated_per_second: f64,
    /// One per fixed rate: (asked rate, achieved rate, latency percentiles).
    at_rates: Vec<AtRate>,
    /// The relays' cost to their database; none for raw publishing.
    idle: Option<DatabaseCost>,
    busy: Option<DatabaseCost>,
    /// How it was set up, for the report (the peer's).
    settings: Vec<(String, String)>,
}

struct AtRate {
    asked: f64,
    achieved: f64,
    /// p50, p99, p99.9, max (ms).
    latency_ms: [f64; 4],
}

const PERCENTILES: [(&str, f64); 4] = [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)];

/// What one relay costs its database over a window.
#[derive(Clone, Copy)]
struct DatabaseCost {
    transactions_per_second: f64,
    /// CPU of the server processes serving the relay, ms per second.
    cpu_ms_per_second: f64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let stack = test_stack().await;
    stack.start_infra().await.context("starting the test stack")?;
    let mut sections = vec![];
    for broker in &args.brokers {
        let plan = Plan::of(&args, *broker);
        println!(
            "{}: {} messages in transactions of {} at saturation; {:?} msg/s and 50 % of saturation, {} s each",
            broker.name(),
            plan.messages,
            plan.per_transaction,
            plan.rates,
            plan.seconds
        );
        let mut all = vec![raw_publish(&plan).await.with_context(|| format!("raw publishing to {}", broker.name()))?];
        for &lanes in &args.lane_groups {
            let measured = measure(&plan, RelayMode::Polling, lanes, args.lane_groups.len() > 1).await;
            all.push(
                measured
                    .with_context(|| format!("polling relay ({lanes} lane groups at once) to {}", broker.name()))?,
            );
        }
        let measured = measure(&plan, RelayMode::LogTailing, 0, false).await;
        all.push(measured.with_context(|| format!("log-tailing relay to {}", broker.name()))?);
        if plan.broker == Broker::Rabbitmq {
            all.push(hexeract(&plan).await.context("Hexeract's relay")?);
        }
        sections.push((plan, all));
    }
    println!("PostgreSQL's commit ceiling (pgbench -N, 1 and 4 clients, {} s each)", args.seconds);
    let ceiling = load_tests::commit_ceiling::measure(stack, &[1, 4], Duration::from_secs(args.seconds))
        .await
        .context("measuring the commit ceiling")?;
    let mut report = report(&args, &sections, xtask_stack_environment(stack).await);
    report.tables.push(Table {
        title: "PostgreSQL's commit ceiling, same server, same run (pgbench -N: one UPDATE, SELECT, INSERT per transaction)"
            .into(),
        header: vec!["clients".into(), "transactions per second".into(), "average latency (ms)".into()],
        rows: ceiling
            .iter()
            .map(|c| vec![c.clients.to_string(), figure(c.transactions_per_second), format!("{:.2}", c.latency_ms)])
            .collect(),
    });
    report.figures["postgres_commit_ceiling"] = serde_json::json!(ceiling
        .iter()
        .map(|c| serde_json::json!({"clients": c.clients, "transactions_per_second": c.transactions_per_second, "latency_ms": c.latency_ms}))
        .collect::<Vec<_>>());
    report.print();
    let html = report.write(&args.report, "relays").context("writing the report")?;
    println!("report: {}", html.display());
    Ok(())
}

async fn xtask_stack_environment(stack: &xtask::Stack) -> Vec<(String, String)> {
    load_tests::report::environment(stack).await
}

/// The report: tables, charts, ratios to raw publishing, the targets of
/// issue 21 for the relay (≥ 0.8 × raw at saturation; p99 ≤ 20 ms at 1,000 msg/s).
fn report(args: &Args, sections: &[(Plan, Vec<Figures>)], environment: Vec<(String, String)>) -> Report {
    let mut report = Report {
        title: "ordermesh: the outbox relays against raw publishing".into(),
        environment,
        settings: vec![
            ("messages at saturation".into(), format!("RabbitMQ {}, Kafka {}", args.messages, args.kafka_messages)),
            ("messages per transaction at saturation".into(), args.per_transaction.to_string()),
            (
                "fixed rates".into(),
                format!(
                    "RabbitMQ {:?}, Kafka {:?} msg/s, and 50 % of each saturation rate; one message per transaction",
                    args.rates, args.kafka_rates
                ),
            ),
            ("each fixed rate and the idle window".into(), format!("{} s", args.seconds)),
            ("relay".into(), format!("{:?}", RelayConfig::default())),
            ("polling relay's lane groups at once, measured".into(), format!("{:?}", args.lane_groups)),
            (
                "raw publishing".into(),
                format!(
                    "the same messages through the same publisher, {CONFIRM_WINDOW} in flight per batch, {LANES} batches at once, as the relay's"
                ),
            ),
        ],
        tables: vec![],
        charts: vec![],
        findings: vec![],
        figures: serde_json::json!({}),
    };
    for (plan, all) in sections {
        section(&mut report, plan, all);
        report.settings.extend(all.iter().flat_map(|f| f.settings.iter().cloned()));
    }
    report
}

/// One broker's table, charts, findings and figures.
fn section(report: &mut Report, plan: &Plan, all: &[Figures]) {
    let broker = plan.broker.name();
    let raw = &all[0];
    let mut header = vec![String::new()];
    header.extend(all.iter().map(|f| f.name.to_owned()));
    let mut rows = vec![];
    let mut row = |label: String, value: &dyn Fn(&Figures) -> String| {
        let mut cells = vec![label];
        cells.extend(all.iter().map(value));
        rows.push(cells);
    };
    row("messages per second at saturation".into(), &|f| figure(f.saturated_per_second));
    row("÷ raw publishing".into(), &|f| format!("{:.2}", f.saturated_per_second / raw.saturated_per_second));
    for i in 0..raw.at_rates.len() {
        let asked = |f: &Figures| f.at_rates.get(i).map(|r| r.asked);
        row(format!("fixed rate {} (msg/s asked)", i + 1), &|f| asked(f).map_or("–".into(), figure));
        row("  achieved (msg/s)".into(), &|f| f.at_rates.get(i).map_or("–".into(), |r| figure(r.achieved)));
        for (p, (name, _)) in PERCENTILES.iter().enumerate() {
            row(format!("  commit → confirmed, {name} (ms)"), &|f| {
                f.at_rates.get(i).map_or("–".into(), |r| format!("{:.2}", r.latency_ms[p]))
            });
        }
    }
    let cost = |c: Option<DatabaseCost>, v: fn(DatabaseCost) -> f64| c.map_or("–".into(), |c| format!("{:.2}", v(c)));
    row("idle: database transactions per second (net)".into(), &|f| cost(f.idle, |c| c.transactions_per_second));
    row("idle: database CPU (ms per second)".into(), &|f| cost(f.idle, |c| c.cpu_ms_per_second));
    row("busy: database transactions per second".into(), &|f| cost(f.busy, |c| c.transactions_per_second));
    row("busy: database CPU (ms per second)".into(), &|f| cost(f.busy, |c| c.cpu_ms_per_second));

    let findings = &mut report.findings;
    for relay in all[1..].iter().filter(|f| !f.name.starts_with("Hexeract")) {
        let ratio = relay.saturated_per_second / raw.saturated_per_second;
        findings.push(format!(
            "{broker}, {}: {:.2} × raw publishing with confirmation at saturation (target ≥ 0.80: {})",
            relay.name,
            ratio,
            if ratio >= 0.8 { "met" } else { "missed" }
        ));
        if let Some(at_1000) = relay.at_rates.iter().find(|r| (r.asked - 1000.0).abs() < 0.5) {
            let p99 = at_1000.latency_ms[1];
            findings.push(format!(
                "{broker}, {}: commit → confirmed p99 {:.1} ms at 1,000 msg/s asked ({} achieved; target ≤ 20 ms: {})",
                relay.name,
                p99,
                figure(at_1000.achieved),
                if p99 <= 20.0 { "met" } else { "missed" }
            ));
        }
    }
    if let Some(peer) = all.iter().find(|f| f.name.starts_with("Hexeract")) {
        for relay in all[1..].iter().filter(|f| !f.name.starts_with("Hexeract")) {
            let ratio = relay.saturated_per_second / peer.saturated_per_second;
            findings.push(format!(
                "{broker}, {}: {ratio:.2} × Hexeract 0.6's relay at saturation (target ≥ 2: {})",
                relay.name,
                if ratio >= 2.0 { "met" } else { "missed" }
            ));
        }
    }
    if let Some(tailing) = all.iter().find(|f| f.name.starts_with("log-tailing")) {
        for polling in all.iter().filter(|f| f.name.starts_with("polling")) {
            findings.push(format!(
                "{broker}, log tailing ÷ {}: {:.2} × the saturation rate",
                polling.name,
                tailing.saturated_per_second / polling.saturated_per_second
            ));
        }
    }
    let charts: Vec<Chart> = vec![Chart {
        title: format!("{broker}: messages per second at saturation (confirmed)"),
        unit: "msg/s".into(),
        bars: all.iter().map(|f| (f.name.to_owned(), f.saturated_per_second)).collect(),
    }]
    .into_iter()
    .chain((0..raw.at_rates.len()).map(|i| {
        Chart {
            title: format!("{broker}: p99 commit → confirmed at fixed rate {} (ms)", i + 1),
            unit: "ms".into(),
            bars: all
                .iter()
                .filter_map(|f| {
                    let r = f.at_rates.get(i)?;
                    Some((format!("{} @ {} msg/s", f.name, figure(r.asked)), r.latency_ms[1]))
                })
                .collect(),
        }
    }))
    .collect();
    let figures = serde_json::json!(all
        .iter()
        .map(|f| serde_json::json!({
            "name": f.name,
            "saturated_per_second": f.saturated_per_second,
            "at_rates": f.at_rates.iter().map(|r| serde_json::json!({
                "asked_per_second": r.asked,
                "achieved_per_second": r.achieved,
                "latency_ms": PERCENTILES.iter().zip(r.latency_ms).map(|((n, _), v)| (n.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
            "idle": f.idle.map(|c| serde_json::json!({"transactions_per_second": c.transactions_per_second, "cpu_ms_per_second": c.cpu_ms_per_second})),
            "busy": f.busy.map(|c| serde_json::json!({"transactions_per_second": c.transactions_per_second, "cpu_ms_per_second": c.cpu_ms_per_second})),
        }))
        .collect::<Vec<_>>());
    report.charts.extend(charts);
    report.tables.push(Table {
        title: format!("{broker}: relays and raw publishing, same broker, same run"),
        header,
        rows,
    });
    report.figures[broker] = figures;
}

/// The polling relay's confirm window (a batch of this many rows per
/// transaction) and its transactions at once: raw publishing goes out in
/// the same shape.
const CONFIRM_WINDOW: usize = RelayConfig::default_batch_size();
const LANES: usize = RelayConfig::default_lane_groups();

/// Raw publishing with confirmation: the messages the relays publish, through
/// the same publisher, without a database.
async fn raw_publish(plan: &Plan) -> Result<Figures> {
    let namespace = unique_namespace("benchraw");
    let topology = contracts::Topology::new(format!("{namespace}."));
    let shutdown = CancellationToken::new();
    let publishers = Publishers::start(plan.broker, &topology, "bench-raw", &shutdown).await?;
    let factory = MessageFactory::new("bench");
    let message = |i: usize| publishers.message(&factory, &topology, i);
    // Settled in: the channel is open and the queue declared.
    publish_all(&publishers, &[message(0)?]).await?;

    let messages: Vec<OutboxMessage> = (1..=plan.messages).map(message).collect::<Result<_>>()?;
    let started = Instant::now();
    let lanes: Vec<&[OutboxMessage]> = messages.chunks(CONFIRM_WINDOW).collect();
    futures::stream::iter(lanes.into_iter().map(|chunk| publish_all(&publishers, chunk)))
        .buffer_unordered(LANES)
        .collect::<Vec<Result<()>>>()
        .await
        .into_iter()
        .collect::<Result<()>>()?;
    let saturated_per_second = plan.messages as f64 / started.elapsed().as_secs_f64();

    let mut at_rates = vec![];
    let mut next = plan.messages + 1;
    for rate in plan.fixed_rates(saturated_per_second) {
        let count = (rate * plan.seconds as f64) as usize;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut latencies = Vec::with_capacity(count);
        // Open loop: each message at its time, confirms awaited aside.
        for i in 0..count {
            let due = start + interval * i as u32;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    Some(done) = pending.next(), if !pending.is_empty() => latencies.push(done?),
                }
            }
            let one = message(next + i)?;
            let sent = Instant::now();
            let confirm = publishers.send(&one).await?;
            pending.push(async move {
                confirm.settled().await?;
                Ok::<f64, anyhow::Error>(sent.elapsed().as_secs_f64() * 1000.0)
            });
        }
        while let Some(done) = pending.next().await {
            latencies.push(done?);
        }
        let achieved = count as f64 / start.elapsed().as_secs_f64();
        next += count;
        at_rates.push(AtRate { asked: rate, achieved, latency_ms: percentiles(latencies) });
    }
    shutdown.cancel();
    publishers.clean_up().await;
    println!("{}, raw publishing: {saturated_per_second:.0} msg/s saturated", plan.broker.name());
    Ok(Figures {
        name: "raw publish + confirm".to_owned(),
        saturated_per_second,
        at_rates,
        idle: None,
        busy: None,
        settings: vec![],
    })
}

/// The peer: Hexeract 0.6's outbox relay (its worker's defaults, its
/// RabbitMQ transport), on a fresh database of the same PostgreSQL and the
/// same RabbitMQ, the same messages and rates.
/// The peer: Hexeract 0.6's outbox relay (its worker's defaults, its
/// RabbitMQ transport), on a fresh database of the same PostgreSQL and the
/// same RabbitMQ, the same messages and rates: `load-tests/hexeract-peer`,
/// built and run as a program of its own (see its Cargo.toml for why).
async fn hexeract(plan: &Plan) -> Result<Figures> {
    let stack = test_stack().await;
    let namespace = unique_namespace("benchhexeract");
    let database = format!("{namespace}_db");
    stack.create_database(&database).await?;
    let root = xtask::repo_root();
    let rates: Vec<String> = plan.rates.iter().map(|r| r.to_string()).collect();
    let output = tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(root.join("load-tests/hexeract-peer/Cargo.toml"))
        .arg("--")
        .args(["--postgres-url", &stack.postgres_url(&database), "--amqp-url", &stack.amqp_url()])
        .args(["--queue-prefix", &format!("{namespace}.")])
        .args(["--messages", &plan.messages.to_string(), "--per-transaction", &plan.per_transaction.to_string()])
        .args(["--rates", &rates.join(","), "--seconds", &plan.seconds.to_string()])
        // Its own target directory: its dependencies' features differ.
        .env("CARGO_TARGET_DIR", xtask::services::target_dir(&root).join("hexeract-peer"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("running load-tests/hexeract-peer")?;
    stack.drop_database(&database).await?;
    anyhow::ensure!(output.status.success(), "load-tests/hexeract-peer failed ({})", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let peer: PeerFigures = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("reading hexeract-peer's figures from {stdout:?}"))?;
    println!("RabbitMQ, Hexeract 0.6 relay: {:.0} msg/s saturated", peer.saturated_per_second);
    let at_rates =
        peer.at_rates.iter().map(|&(asked, achieved, latency_ms)| AtRate { asked, achieved, latency_ms }).collect();
    Ok(Figures {
        name: "Hexeract 0.6 relay".to_owned(),
        saturated_per_second: peer.saturated_per_second,
        at_rates,
        idle: None,
        busy: None,
        settings: peer.settings,
    })
}

/// What `hexeract-peer` prints.
#[derive(serde::Deserialize)]
struct PeerFigures {
    saturated_per_second: f64,
    at_rates: Vec<(f64, f64, [f64; 4])>,
    settings: Vec<(String, String)>,
}

/// Sends every message, then waits for every confirm.
async fn publish_all(publishers: &Publishers, messages: &[OutboxMessage]) -> Result<()> {
    let mut confirms = Vec::with_capacity(messages.len());
    for m in messages {
        confirms.push(publishers.send(m).await?);
    }
    for confirm in confirms {
        confirm.settled().await?;
    }
    Ok(())
}

fn percentiles(mut latencies: Vec<f64>) -> [f64; 4] {
    if latencies.is_empty() {
        return [f64::NAN; 4];
    }
    latencies.sort_by(f64::total_cmp);
    PERCENTILES.map(|(_, p)| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize])
}

/// One relay's figures; `lanes` is the polling relay's lanes at once,
/// named in its figures' name when `name_lanes` (several compared).
async fn measure(plan: &Plan, mode: RelayMode, lanes: usize, name_lanes: bool) -> Result<Figures> {
    let stack = test_stack().await;
    let namespace = unique_namespace(&format!("bench{mode:?}"));
    let database = format!("{namespace}_db");
    let pool = fresh_database(stack, &database).await;
    messaging::migrations::run_messaging(&pool).await?;
    let topology = contracts::Topology::new(format!("{namespace}."));
    // The relay's own connections, told apart from the writer's.
    let options: sqlx::postgres::PgConnectOptions = stack.postgres_url(&database).parse()?;
    let relay_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options.application_name(RELAY_APPLICATION))
        .await?;
    // What the database does with no relay at all (autovacuum, the
    // statistics this measurement reads): subtracted from the idle figures.
    let baseline = cost_over(&pool, &database, Duration::from_secs(plan.seconds), async {}).await?;
    let shutdown = CancellationToken::new();
    let publishers = Publishers::start(plan.broker, &topology, "bench", &shutdown).await?;
    let start_relay = |stop: CancellationToken| -> Result<tokio::task::JoinHandle<()>> {
        let (amqp, kafka) = (publishers.amqp.clone(), publishers.kafka.clone());
        Ok(match mode {
            RelayMode::Polling => {
                let config = RelayConfig { lane_groups: lanes, ..RelayConfig::default() };
                let relay = OutboxRelay::new(relay_pool.clone(), amqp, kafka, config);
                tokio::spawn(relay.run(stop))
            }
            RelayMode::LogTailing => {
                let config = LogTailingConfig::for_slot(slot::slot_name_for(&database));
                let relay =
                    LogTailingRelay::new(relay_pool.clone(), &stack.postgres_url(&database), amqp, kafka, config)?;
                tokio::spawn(relay.run(stop))
            }
        })
    };
    let mut relay_stop = CancellationToken::new();
    let mut task = start_relay(relay_stop.clone())?;
    let factory = MessageFactory::new("bench");
    let message = |i: usize| publishers.message(&factory, &topology, i);
    // Settled in: the slot exists and streams, the first connections are open.
    write(&pool, &[message(0)?]).await?;
    wait_all_sent(&pool, Duration::from_secs(60)).await?;

    let idle = cost_over(&pool, &database, Duration::from_secs(plan.seconds), async {}).await?;
    let idle = DatabaseCost {
        transactions_per_second: idle.transactions_per_second - baseline.transactions_per_second,
        cpu_ms_per_second: idle.cpu_ms_per_second,
    };

    // Saturation is the drain of a committed backlog: the relay stops (a
    // slot stays, holding its place in the log), writers that do not compete
    // with it write the backlog, and a new relay publishes it all.
    relay_stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), task).await.context("the relay did not stop")??;
    let messages: Vec<OutboxMessage> = (1..=plan.messages).map(message).collect::<Result<_>>()?;
    futures::stream::iter(messages.chunks(plan.per_transaction.max(1)))
        .map(|chunk| write(&pool, chunk))
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    relay_stop = CancellationToken::new();
    let started: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT clock_timestamp()").fetch_one(&pool).await?;
    task = start_relay(relay_stop.clone())?;
    let (busy, written) = {
        let draining = wait_all_sent(&pool, Duration::from_secs(600));
        let mut result = Ok(());
        let cost = cost_over(&pool, &database, Duration::ZERO, async { result = draining.await }).await?;
        (cost, result)
    };
    written?;
    // From the database's clock: when the last row was marked, not when
    // this loop noticed.
    let drained_in: f64 = sqlx::query_scalar("SELECT extract(epoch FROM max(sent_at) - $1)::float8 FROM outbox")
        .bind(started)
        .fetch_one(&pool)
        .await?;
    let saturated_per_second = plan.messages as f64 / drained_in;

    let mut at_rates = vec![];
    let mut next = plan.messages + 1;
    for rate in plan.fixed_rates(saturated_per_second) {
        let first_id: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox").fetch_one(&pool).await?;
        let count = (rate * plan.seconds as f64) as usize;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        // Open loop: each message at its scheduled time, whether or not the
        // relay kept up with the ones before.
        // Each write spawned: a slow commit never delays the next one.
        let mut writes = Vec::with_capacity(count);
        for i in 0..count {
            tokio::time::sleep_until(start + interval * i as u32).await;
            let (pool, one) = (pool.clone(), [message(next + i)?]);
            writes.push(tokio::spawn(async move { write(&pool, &one).await }));
        }
        let achieved = count as f64 / start.elapsed().as_secs_f64();
        for written in writes {
            written.await??;
        }
        next += count;
        wait_all_sent(&pool, Duration::from_secs(120)).await?;
        let latencies: Vec<f64> = sqlx::query_scalar(
            "SELECT (extract(epoch FROM sent_at - created_at) * 1000)::float8 FROM outbox WHERE id > $1",
        )
        .bind(first_id)
        .fetch_all(&pool)
        .await?;
        at_rates.push(AtRate { asked: rate, achieved, latency_ms: percentiles(latencies) });
    }

    relay_stop.cancel();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    relay_pool.close().await;
    pool.close().await;
    stack.drop_database(&database).await?;
    publishers.clean_up().await;
    let name = match mode {
        RelayMode::Polling if name_lanes => format!("polling relay, {lanes} lane groups at once"),
        RelayMode::Polling => "polling relay".to_owned(),
        RelayMode::LogTailing => "log-tailing relay".to_owned(),
    };
    println!("{}, {name}: {saturated_per_second:.0} msg/s saturated", plan.broker.name());
    let figures =
        Figures { name, saturated_per_second, at_rates, idle: Some(idle), busy: Some(busy), settings: vec![] };
    Ok(figures)
}

async fn write(pool: &PgPool, messages: &[OutboxMessage]) -> Result<()> {
    let mut tx = pool.begin().await?;
    Outbox::add_all(&mut tx, messages).await?;
    tx.commit().await?;
    Ok(())
}

/// Until no row is left unsent. Asked of the index of unsent rows, which
/// answers at its first live entry: counting the sent rows instead, every
/// 20 ms, took a share of the database's CPU from the relay being measured
/// (seen in a profile: PostgreSQL 72 % of the machine while draining).
async fn wait_all_sent(pool: &PgPool, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let pending: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL AND parked_at IS NULL)")
                .fetch_one(pool)
                .await?;
        if !pending {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "rows still unsent after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The relay's cost to its database while `work` runs (and at least `at_least`). The
/// statements measuring it run on the same database: two per window.
async fn cost_over(
    pool: &PgPool,
    database: &str,
    at_least: Duration,
    work: impl std::future::Future<Output = ()>,
) -> Result<DatabaseCost> {
    let (tx_before, cpu_before) = (transactions(pool, database).await?, server_cpu(pool, database).await?);
    let started = Instant::now();
    tokio::join!(work, tokio::time::sleep(at_least));
    let elapsed = started.elapsed().as_secs_f64();
    let (tx_after, cpu_after) = (transactions(pool, database).await?, server_cpu(pool, database).await?);
    let cpu_ms: f64 = cpu_after.iter().map(|(pid, after)| after - cpu_before.get(pid).copied().unwrap_or(0.0)).sum();
    Ok(DatabaseCost {
        transactions_per_second: (tx_after - tx_before) as f64 / elapsed,
        cpu_ms_per_second: cpu_ms / elapsed,
    })
}

/// Committed and rolled-back transactions on `database` so far. The
/// statistics are flushed at most once a second: the windows are longer.
async fn transactions(pool: &PgPool, database: &str) -> Result<i64> {
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(pool).await?;
    Ok(sqlx::query_scalar("SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = $1")
        .bind(database)
        .fetch_one(pool)
        .await?)
}

/// CPU time (ms) of the server processes serving the relay on `database`,
/// its WAL sender included, by pid (from /proc: the server runs here).
async fn server_cpu(pool: &PgPool, database: &str) -> Result<HashMap<i32, f64>> {
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = $1 AND (application_name = $2 OR application_name LIKE 'outbox-relay:%')",
    )
    .bind(database)
    .bind(RELAY_APPLICATION)
    .fetch_all(pool)
    .await?;
    let ticks_per_ms = 100.0 / 1000.0; // USER_HZ is 100 on Linux.
    Ok(pids
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
            let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some((pid, ticks / ticks_per_ms))
        })
        .collect())
}

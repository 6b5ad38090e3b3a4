//! The local Kafka's storage engines side by side: Tansu 0.6 started on each
//! engine this machine can build, the same records produced through the
//! system's own publisher (`KafkaPublisher`: idempotent, `acks=all`, a window
//! of sends in flight), then the broker SIGKILLed and restarted on the same
//! storage and every acknowledged record read back. Per engine: produce rate
//! at the start and at the end (the SQLite engine is known to slow down as
//! its file grows), acknowledgement latency, fetch rate, and whether what was
//! acknowledged survived the kill. The in-memory engine is there as the
//! upper bound of speed and as the durability check's negative control: it
//! must lose everything. A report (HTML and JSON) under `--report`.
//!
//! ```text
//! cargo xtask bench kafka-storage
//! cargo run --release -p load-tests --bin kafka_storage -- --messages 5000
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use load_tests::report::{Chart, Report, Table, figure};
use load_tests::tansu_engine::{Engine, TansuBroker};
use messaging::kafka::KafkaPublisher;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use system_tests::test_stack;

#[derive(Parser)]
struct Args {
    /// Records produced per engine (fewer if `--seconds` runs out first).
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Longest time spent producing on one engine, seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Sends in flight at once.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Records per block of the produce-rate curve.
    #[arg(long, default_value_t = 1_000)]
    block: usize,
    /// Payload bytes per record (an order event is about this size).
    #[arg(long, default_value_t = 400)]
    payload_bytes: usize,
    /// The engines to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_values = ["sqlite", "postgres", "memory"])]
    engines: Vec<Engine>,
    /// Where the report goes (kafka-storage.html, kafka-storage.json).
    #[arg(long, default_value = "target/bench")]
    report: PathBuf,
}

/// One engine's figures, or why it could not be measured.
enum Outcome {
    Measured(Figures),
    Unavailable(String),
}

struct Figures {
    acknowledged: usize,
    produce_seconds: f64,
    /// Records per second of each block, in order.
    blocks: Vec<f64>,
    /// Acknowledgement latency p50, p99, max (ms).
    ack_ms: [f64; 3],
    /// Records read back after the kill and restart, and how fast.
    survived: usize,
    fetch_per_second: f64,
    storage_bytes: Option<u64>,
}

const TOPIC: &str = "bench-storage";
const PARTITIONS: i32 = 3;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let stack = test_stack().await;
    stack.start_infra().await.context("starting the test stack (its PostgreSQL holds the postgres engine)")?;
    let mut outcomes = vec![];
    for &engine in &args.engines {
        println!("{}: producing up to {} records for at most {} s", engine.name(), args.messages, args.seconds);
        let outcome = match measure(&args, stack, engine).await {
            Ok(outcome) => outcome,
            Err(error) => Outcome::Unavailable(format!("{error:#}")),
        };
        match &outcome {
            Outcome::Measured(f) => println!(
                "{}: {} acknowledged in {:.1} s, {} survived the kill",
                engine.name(),
                f.acknowledged,
                f.produce_seconds,
                f.survived
            ),
            Outcome::Unavailable(why) => println!("{}: not measured: {why}", engine.name()),
        }
        outcomes.push((engine, outcome));
    }
    let report = report(&args, &outcomes, load_tests::report::environment(stack).await);
    report.print();
    let html = report.write(&args.report, "kafka-storage").context("writing the report")?;
    println!("report: {}", html.display());
    Ok(())
}

async fn measure(args: &Args, stack: &xtask::Stack, engine: Engine) -> Result<Outcome> {
    let broker = match TansuBroker::start(stack, engine).await? {
        Ok(broker) => broker,
        Err(unavailable) => return Ok(Outcome::Unavailable(unavailable)),
    };
    async {
        messaging::kafka::ensure_topics(&broker.brokers(), &[TOPIC.to_owned()], PARTITIONS)
            .await
            .context("creating the topic")?;
        let produced = produce(args, &broker.brokers()).await?;
        let mut broker = broker.kill_and_restart().await.context("restarting after SIGKILL")?;
        let read_started = Instant::now();
        let survived = read_back(&broker.brokers(), produced.acknowledged).await?;
        let fetch_per_second = survived as f64 / read_started.elapsed().as_secs_f64();
        let storage_bytes = broker.storage_bytes().await;
        broker.stop().await;
        Ok(Outcome::Measured(Figures { survived, fetch_per_second, storage_bytes, ..produced }))
    }
    .await
}

/// Produces with `window` sends in flight until `messages` are acknowledged
/// or `seconds` run out; a refused or failed send is an error (the engines
/// are compared on a healthy broker).
async fn produce(args: &Args, brokers: &str) -> Result<Figures> {
    let publisher = KafkaPublisher::new(brokers, "bench-kafka-storage")?;
    let payload = vec![b'x'; args.payload_bytes];
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut latency = Histogram::<u64>::new(3)?;
    let mut blocks = vec![];
    let mut block_started = Instant::now();
    let mut acknowledged = 0;
    let sends = futures::stream::iter(0..args.messages)
        .take_while(|_| std::future::ready(Instant::now() < deadline))
        .map(|i| {
            let publisher = &publisher;
            let payload = &payload;
            async move {
                let sent = Instant::now();
                let key = format!("order-{}", i % 64);
                let delivery = publisher.send_raw(TOPIC, &key, payload, &[], &[]).await?;
                delivery.delivered().await?;
                Ok::<_, anyhow::Error>(sent.elapsed())
            }
        })
        .buffer_unordered(args.window);
    futures::pin_mut!(sends);
    while let Some(result) = sends.next().await {
        let took = result.context("a send failed")?;
        latency.record(took.as_micros().max(1) as u64)?;
        acknowledged += 1;
        if acknowledged % args.block == 0 {
            blocks.push(args.block as f64 / block_started.elapsed().as_secs_f64());
            block_started = Instant::now();
        }
    }
    if acknowledged == 0 {
        bail!("no record was acknowledged in {} s", args.seconds);
    }
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(Figures {
        acknowledged,
        produce_seconds: started.elapsed().as_secs_f64(),
        blocks,
        ack_ms: [ms(0.5), ms(0.99), latency.max() as f64 / 1000.0],
        survived: 0,
        fetch_per_second: 0.0,
        storage_bytes: None,
    })
}

/// Reads the topic from the start until `expected` records arrived or no
/// record came for 15 s; returns how many arrived.
async fn read_back(brokers: &str, expected: usize) -> Result<usize> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-kafka-storage")
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the read-back consumer")?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(TOPIC, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut read = 0;
    while read < expected {
        match tokio::time::timeout(Duration::from_secs(15), consumer.recv()).await {
            Ok(Ok(_)) => read += 1,
            // Transient right after the restart; 15 s of silence ends the read.
            Ok(Err(error)) => eprintln!("read-back: {error}"),
            Err(_) => break,
        }
    }
    Ok(read)
}

fn report(args: &Args, outcomes: &[(Engine, Outcome)], environment: Vec<(String, String)>) -> Report {
    let mut report = Report {
        title: "ordermesh: the local Kafka's storage engines (Tansu 0.6)".into(),
        environment,
        settings: vec![
            ("records per engine".into(), format!("up to {} in at most {} s", args.messages, args.seconds)),
            ("in flight".into(), format!("{} sends (KafkaPublisher: idempotent, acks=all)", args.window)),
            ("payload".into(), format!("{} bytes, keyed by one of 64 orders", args.payload_bytes)),
            ("topic".into(), format!("{PARTITIONS} partitions")),
            (
                "durability".into(),
                "SIGKILL after the last acknowledgement, restart on the same storage, read all back".into(),
            ),
        ],
        tables: vec![],
        charts: vec![],
        findings: vec![],
        figures: serde_json::json!({}),
    };
    let header = [
        "engine",
        "durable by design",
        "acknowledged",
        "produce (rec/s)",
        "first block (rec/s)",
        "last block (rec/s)",
        "ack p50 (ms)",
        "ack p99 (ms)",
        "fetch (rec/s)",
        "survived SIGKILL",
        "storage (MB)",
    ];
    let mut rows = vec![];
    let mut figures = serde_json::Map::new();
    for (engine, outcome) in outcomes {
        match outcome {
            Outcome::Measured(f) => {
                let overall = f.acknowledged as f64 / f.produce_seconds;
                rows.push(vec![
                    engine.name().into(),
                    if engine.durable() { "yes" } else { "no" }.into(),
                    f.acknowledged.to_string(),
                    figure(overall),
                    f.blocks.first().map_or("–".into(), |r| figure(*r)),
                    f.blocks.last().map_or("–".into(), |r| figure(*r)),
                    format!("{:.1}", f.ack_ms[0]),
                    format!("{:.1}", f.ack_ms[1]),
                    figure(f.fetch_per_second),
                    format!("{} of {}", f.survived, f.acknowledged),
                    f.storage_bytes.map_or("–".into(), |b| format!("{:.1}", b as f64 / 1e6)),
                ]);
                report.charts.push(Chart {
                    title: format!("{}: produce rate per block of {} records", engine.name(), args.block),
                    unit: "records/s".into(),
                    bars: f.blocks.iter().enumerate().map(|(i, r)| (format!("{}", (i + 1) * args.block), *r)).collect(),
                });
                let kept = f.survived >= f.acknowledged;
                report.findings.push(format!(
                    "{}: {} records/s overall ({} → {} records/s from the first block to the last); {} of {} acknowledged records read back after SIGKILL: {}",
                    engine.name(),
                    figure(overall),
                    f.blocks.first().map_or("–".into(), |r| figure(*r)),
                    f.blocks.last().map_or("–".into(), |r| figure(*r)),
                    f.survived,
                    f.acknowledged,
                    match (kept, engine.durable()) {
                        (true, true) => "durable, as it must be",
                        (false, true) => "LOST ACKNOWLEDGED RECORDS",
                        (true, false) => "kept although in memory (the check did not kill it?)",
                        (false, false) => "lost, as an in-memory engine must (the check works)",
                    }
                ));
                figures.insert(
                    engine.name().into(),
                    serde_json::json!({
                        "acknowledged": f.acknowledged,
                        "produce_seconds": f.produce_seconds,
                        "records_per_second": overall,
                        "blocks_records_per_second": f.blocks,
                        "ack_ms": { "p50": f.ack_ms[0], "p99": f.ack_ms[1], "max": f.ack_ms[2] },
                        "survived": f.survived,
                        "fetch_records_per_second": f.fetch_per_second,
                        "storage_bytes": f.storage_bytes,
                    }),
                );
            }
            Outcome::Unavailable(why) => {
                let mut row = vec![engine.name().to_owned(), if engine.durable() { "yes" } else { "no" }.into()];
                row.push(format!("not measured: {why}"));
                row.resize(header.len(), "–".into());
                rows.push(row);
                report.findings.push(format!("{}: not measured: {why}", engine.name()));
                figures.insert(engine.name().into(), serde_json::json!({ "unavailable": why }));
            }
        }
    }
    report.findings.push(
        "Not measured: S3 (dynostore) and SlateDB need an object store (none runs here); Turso is feature-locked (alpha) in Tansu 0.6."
            .into(),
    );
    report.tables.push(Table {
        title: "Tansu 0.6 storage engines, same records, same publisher".into(),
        header: header.iter().map(|h| (*h).to_owned()).collect(),
        rows,
    });
    report.figures = serde_json::Value::Object(figures);
    report
}

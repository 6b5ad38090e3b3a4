//! A peer baseline for the relay benchmark: Hexeract 0.6's transactional
//! outbox (crates.io `hexeract`, github.com/nubster-opensources/hexeract)
//! relaying to RabbitMQ, driven on the PostgreSQL and RabbitMQ the caller
//! measures its own relays on, the way relays.rs measures them: saturation
//! (N rows in transactions of k, time until all are delivered) and the time
//! from a row's commit to its delivery at fixed rates, one row per
//! transaction, open loop.
//!
//! Hexeract has no RabbitMQ relay of its own: its outbox worker dispatches
//! each row to an in-process handler, and its documented outbox → bus wiring
//! (example `05_orders_to_payments`) is a handler publishing through
//! `RabbitMqTransport`. That is what runs here, with the worker's defaults.

use anyhow::{Context, Result};
use contracts::catalogue::{OrderLine, ReserveStock};
use hexeract::bus::Transport;
use hexeract::bus_rabbitmq::RabbitMqTransport;
use hexeract::core::HandlerContext;
use hexeract::outbox::{Handler, OutboxError, OutboxPublisher, OutboxWorkerConfig};
use hexeract::outbox_sql::{PgOutboxPublisher, PgOutboxWorkerBuilder};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `application_name` of the worker's connections, to tell them apart from the writer's.
pub const APPLICATION_NAME: &str = "bench-hexeract";

/// Hexeract's outbox table, created with its own DDL (`ensure_schema`).
const TABLE: &str = "hexeract_outbox";

/// A delivery that makes no progress for this long fails the measurement.
const STALL: Duration = Duration::from_secs(60);

/// What the peer achieved, in the shape of relays.rs's figures.
#[derive(Serialize)]
pub struct PeerFigures {
    pub saturated_per_second: f64,
    /// One per fixed rate: (asked msg/s, achieved msg/s, [p50, p99, p99.9, max] ms).
    pub at_rates: Vec<(f64, f64, [f64; 4])>,
    /// How Hexeract was set up and what it guarantees, for the report.
    pub settings: Vec<(String, String)>,
}

/// The benchmark's message. A newtype: Hexeract's traits and
/// `ReserveStock` are both foreign here. Transparent, so the body is
/// byte-for-byte the JSON ordermesh's relays publish.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Reserve(ReserveStock);

impl hexeract::outbox::Event for Reserve {
    const EVENT_TYPE: &'static str = "stock.ReserveStock";
}

impl hexeract::bus::Message for Reserve {
    const MESSAGE_TYPE: &'static str = "stock.ReserveStock";
}

/// The outbox handler of Hexeract's outbox → bus example: publish the event
/// on the bus; the row is marked delivered when this returns Ok.
struct BusForwarder {
    transport: Arc<RabbitMqTransport>,
    routing_key: String,
}

impl Handler<Reserve> for BusForwarder {
    type Error = OutboxError;

    async fn handle(&self, event: Reserve, _ctx: &HandlerContext) -> Result<(), OutboxError> {
        self.transport
            .publish(&self.routing_key, &event)
            .await
            .map(drop)
            .map_err(|e| OutboxError::Internal(e.to_string()))
    }
}

/// Runs Hexeract's outbox worker on `postgres_url` (a fresh database the
/// caller created and drops) publishing to the queue `{queue_prefix}hexeract`
/// on `amqp_url`: saturation with `messages` rows in transactions of
/// `per_transaction`, then each rate of `rates(saturated_per_second)` for
/// `seconds`. The queue is deleted at the end, whatever the outcome.
pub async fn measure(
    postgres_url: &str,
    amqp_url: &str,
    queue_prefix: &str,
    messages: usize,
    per_transaction: usize,
    rates: impl FnOnce(f64) -> Vec<f64>,
    seconds: u64,
) -> Result<PeerFigures> {
    let queue = format!("{queue_prefix}hexeract");
    declare_queue(amqp_url, &queue).await.with_context(|| format!("declaring {queue}"))?;
    let result = run(postgres_url, amqp_url, &queue, messages, per_transaction, rates, seconds).await;
    let _ = delete_queue(amqp_url, &queue).await;
    result
}

async fn run(
    postgres_url: &str,
    amqp_url: &str,
    queue: &str,
    messages: usize,
    per_transaction: usize,
    rates: impl FnOnce(f64) -> Vec<f64>,
    seconds: u64,
) -> Result<PeerFigures> {
    let pool = PgPoolOptions::new().max_connections(4).connect(postgres_url).await.context("connecting the writer")?;
    hexeract::outbox_sql::postgres::ensure_schema(&pool, TABLE).await.context("Hexeract's outbox schema")?;
    // Sized and bounded as Hexeract's builder documentation recommends.
    let options: PgConnectOptions = postgres_url.parse()?;
    let relay_pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.application_name(APPLICATION_NAME))
        .await
        .context("connecting the worker")?;
    let transport = Arc::new(RabbitMqTransport::new(amqp_url).await.context("Hexeract's RabbitMQ transport")?);
    // Hexeract's defaults: nothing tuned.
    let worker = PgOutboxWorkerBuilder::new(relay_pool.clone())
        .table_name(TABLE)
        .register_handler::<Reserve, _>(BusForwarder { transport: transport.clone(), routing_key: queue.to_owned() })
        .build()?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let publisher = PgOutboxPublisher::new(pool.clone(), TABLE)?;

    let figures = drive(&pool, &publisher, messages, per_transaction, rates, seconds).await;

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), task).await;
    let _ = transport.pool().connection().inner().close(200, "done".into()).await;
    let retried: Option<i64> =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {TABLE} WHERE attempts > 1")).fetch_one(&pool).await.ok();
    relay_pool.close().await;
    pool.close().await;
    let (saturated_per_second, at_rates, payload_bytes) = figures?;
    match stopped {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e).context("Hexeract's worker"),
        Ok(Err(e)) => return Err(e).context("Hexeract's worker task"),
        Err(_) => anyhow::bail!("Hexeract's worker did not stop within 30 s"),
    }
    eprintln!("Hexeract outbox worker: {saturated_per_second:.0} msg/s saturated");
    Ok(PeerFigures {
        saturated_per_second,
        at_rates,
        settings: settings(payload_bytes, retried.map_or_else(|| "unknown".into(), |n| n.to_string())),
    })
}

type Driven = (f64, Vec<(f64, f64, [f64; 4])>, usize);

/// The measurements proper, as relays.rs makes them on ordermesh's relays.
async fn drive(
    pool: &PgPool,
    publisher: &PgOutboxPublisher,
    messages: usize,
    per_transaction: usize,
    rates: impl FnOnce(f64) -> Vec<f64>,
    seconds: u64,
) -> Result<Driven> {
    let payload_bytes = serde_json::to_vec(&event(0))?.len();
    // Settled in: the worker polls, the channel is open and in confirm mode.
    write(pool, publisher, &[event(0)]).await?;
    wait_delivered(pool, 1).await.context("the first message")?;

    let batch: Vec<Reserve> = (1..=messages).map(event).collect();
    let started = Instant::now();
    for chunk in batch.chunks(per_transaction.max(1)) {
        write(pool, publisher, chunk).await?;
    }
    wait_delivered(pool, 1 + messages as i64).await.context("saturation")?;
    let saturated_per_second = messages as f64 / started.elapsed().as_secs_f64();

    let mut at_rates = vec![];
    let mut written = 1 + messages;
    for rate in rates(saturated_per_second) {
        anyhow::ensure!(rate.is_finite() && rate > 0.0, "a fixed rate of {rate} msg/s");
        let first_id: i64 = sqlx::query_scalar(&format!("SELECT max(id) FROM {TABLE}")).fetch_one(pool).await?;
        let count = (rate * seconds as f64) as usize;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        // Open loop: each message at its scheduled time, whether or not the
        // worker kept up with the ones before.
        // Each write spawned: a slow commit never delays the next one.
        let mut writes = Vec::with_capacity(count);
        for i in 0..count {
            tokio::time::sleep_until(start + interval * i as u32).await;
            let (pool, publisher, one) = (pool.clone(), publisher.clone(), [event(written + i)]);
            writes.push(tokio::spawn(async move { write(&pool, &publisher, &one).await }));
        }
        let achieved = count as f64 / start.elapsed().as_secs_f64();
        for write in writes {
            write.await??;
        }
        written += count;
        wait_delivered(pool, written as i64).await.with_context(|| format!("{rate} msg/s"))?;
        let latencies: Vec<f64> = sqlx::query_scalar(&format!(
            "SELECT (extract(epoch FROM delivered_at - created_at) * 1000)::float8 FROM {TABLE} WHERE id > $1"
        ))
        .bind(first_id)
        .fetch_all(pool)
        .await?;
        at_rates.push((rate, achieved, percentiles(latencies)));
    }
    Ok((saturated_per_second, at_rates, payload_bytes))
}

/// The payload relays.rs gives ordermesh's relays.
fn event(i: usize) -> Reserve {
    Reserve(ReserveStock { order_id: Uuid::now_v7(), lines: vec![OrderLine { sku: format!("SKU-{i}"), quantity: 1 }] })
}

/// One transaction, each event written with Hexeract's own insert.
async fn write(pool: &PgPool, publisher: &PgOutboxPublisher, events: &[Reserve]) -> Result<()> {
    let mut tx = pool.begin().await?;
    for e in events {
        publisher.publish_in_tx(&mut tx, e).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Waits until `expected` rows are delivered; fails once none has been for
/// [`STALL`] (a failing publish is retried with backoff, then given up on),
/// with the last error Hexeract recorded.
async fn wait_delivered(pool: &PgPool, expected: i64) -> Result<()> {
    let (mut last, mut since) = (-1, Instant::now());
    loop {
        let delivered: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {TABLE} WHERE delivered_at IS NOT NULL"))
                .fetch_one(pool)
                .await?;
        if delivered >= expected {
            return Ok(());
        }
        if delivered > last {
            (last, since) = (delivered, Instant::now());
        } else if since.elapsed() > STALL {
            let error: Option<String> = sqlx::query_scalar(&format!(
                "SELECT last_error FROM {TABLE} WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 1"
            ))
            .fetch_optional(pool)
            .await?
            .flatten();
            anyhow::bail!(
                "{delivered} of {expected} delivered, none in the last {STALL:?}; last error: {}",
                error.as_deref().unwrap_or("none")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A durable quorum queue, as ordermesh's command queues are, so the broker
/// does the same work per message for both (Hexeract's `declare_queue`
/// declares classic queues only).
async fn declare_queue(amqp_url: &str, queue: &str) -> Result<(), lapin::Error> {
    let connection = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, args).await?;
    connection.close(200, "done".into()).await
}

async fn delete_queue(amqp_url: &str, queue: &str) -> Result<(), lapin::Error> {
    let connection = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default()).await?;
    connection.close(200, "done".into()).await
}

fn percentiles(mut latencies: Vec<f64>) -> [f64; 4] {
    if latencies.is_empty() {
        return [f64::NAN; 4];
    }
    latencies.sort_by(f64::total_cmp);
    [0.5, 0.99, 0.999, 1.0].map(|p| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize])
}

fn settings(payload_bytes: usize, retried: String) -> Vec<(String, String)> {
    let c = OutboxWorkerConfig::default();
    vec![
        (
            "peer".into(),
            "Hexeract 0.6 (crates.io hexeract with outbox-sql-postgres and bus-rabbitmq; github.com/nubster-opensources/hexeract)".into(),
        ),
        (
            "peer relay".into(),
            format!(
                "its OutboxWorker (PgOutboxWorkerBuilder) with the defaults: poll every {:?} when idle, batches of {}, {:?} between non-empty batches, {} attempts, {:?} dispatch timeout",
                c.poll_interval, c.batch_size, c.min_cycle_delay, c.max_attempts, c.dispatch_timeout
            ),
        ),
        (
            "peer claiming and marking".into(),
            "SELECT … FOR UPDATE SKIP LOCKED LIMIT batch, leased (next_retry_at, attempts + 1) and committed; then each row of the batch in turn: published, then delivered_at = now() in a transaction of its own".into(),
        ),
        (
            "peer delivery guarantee".into(),
            "at least once: publisher confirms (mandatory, persistent), each message's confirm awaited before the next row is published (one in flight); a nack or return is retried with backoff. Its documented outbox → bus wiring: an outbox handler calling RabbitMqTransport::publish, default exchange, routing key = the queue".into(),
        ),
        ("peer queue".into(), "durable quorum queue, as ordermesh's command queues".into()),
        (
            "peer payload".into(),
            format!("the same ReserveStock (one line) as JSON, {payload_bytes} bytes, written with PgOutboxPublisher::publish_in_tx in the caller's sqlx transaction"),
        ),
        (
            "peer latency".into(),
            "delivered_at − created_at per row (database clock; delivered_at is set after the confirm)".into(),
        ),
        ("peer rows claimed more than once (retries)".into(), retried),
    ]
}

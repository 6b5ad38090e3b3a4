//! The two outbox relays side by side, on the same PostgreSQL and RabbitMQ
//! in one run (the test stack's): messages per second at saturation, the
//! time from a row's commit to its broker confirmation at a fixed rate, and
//! what each relay costs the database, idle and busy (transactions per
//! second on its database, CPU of the server processes serving it, the
//! WAL sender included). Figures, not pass/fail.
//!
//! ```text
//! cargo run --release -p load-tests --bin relays
//! cargo run --release -p load-tests --bin relays -- --messages 20000 --rate 200
//! ```

use anyhow::{Context, Result};
use clap::Parser;
use contracts::catalogue::{OrderLine, ReserveStock};
use health::Readiness;
use messaging::amqp::{AmqpConnector, AmqpPublisher};
use messaging::log_tailing::{LogTailingConfig, LogTailingRelay, RelayMode, slot};
use messaging::relay::{OutboxRelay, RelayConfig};
use messaging::{MessageFactory, Outbox, OutboxMessage};
use sqlx::PgPool;
use std::collections::HashMap;
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
    /// Messages per second, one per transaction, for the latency figure.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long the fixed rate and the idle measurement each last, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

struct Figures {
    relay: RelayMode,
    saturated_per_second: f64,
    latency_ms: [f64; 3],
    idle: DatabaseCost,
    busy: DatabaseCost,
}

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
    println!(
        "outbox relays: {} messages in transactions of {} at saturation; {} msg/s for {} s for latency; RabbitMQ",
        args.messages, args.per_transaction, args.rate, args.seconds
    );
    let mut all = Vec::new();
    for relay in [RelayMode::Polling, RelayMode::LogTailing] {
        all.push(measure(&args, relay).await.with_context(|| format!("{relay:?}"))?);
    }
    println!();
    println!("{:<44} {:>14} {:>14}", "", "polling", "log tailing");
    let row = |label: &str, value: &dyn Fn(&Figures) -> String| {
        println!("{label:<44} {:>14} {:>14}", value(&all[0]), value(&all[1]));
    };
    row("messages per second at saturation", &|f| format!("{:.0}", f.saturated_per_second));
    for (i, p) in ["p50", "p99", "max"].iter().enumerate() {
        row(&format!("commit → confirmed and marked, {p} (ms)"), &|f| format!("{:.1}", f.latency_ms[i]));
    }
    row("idle: database transactions per second (net)", &|f| format!("{:.2}", f.idle.transactions_per_second));
    row("idle: database CPU (ms per second)", &|f| format!("{:.2}", f.idle.cpu_ms_per_second));
    row("busy: database transactions per second", &|f| format!("{:.1}", f.busy.transactions_per_second));
    row("busy: database CPU (ms per second)", &|f| format!("{:.1}", f.busy.cpu_ms_per_second));
    println!(
        "log tailing ÷ polling: {:.2}× the saturation rate, {:.2}× the p50 latency",
        all[1].saturated_per_second / all[0].saturated_per_second,
        all[1].latency_ms[0] / all[0].latency_ms[0]
    );
    Ok(())
}

async fn measure(args: &Args, mode: RelayMode) -> Result<Figures> {
    let stack = test_stack().await;
    let namespace = unique_namespace(&format!("bench{mode:?}"));
    let database = format!("{namespace}_db");
    let pool = fresh_database(stack, &database).await;
    messaging::migrations::run_messaging(&pool).await?;
    let topology = contracts::Topology::new(format!("{namespace}."));
    let amqp_url = stack.amqp_url();
    // The relay's own connections, told apart from the writer's.
    let options: sqlx::postgres::PgConnectOptions = stack.postgres_url(&database).parse()?;
    let relay_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options.application_name(RELAY_APPLICATION))
        .await?;
    // What the database does with no relay at all (autovacuum, the
    // statistics this measurement reads): subtracted from the idle figures.
    let baseline = cost_over(&pool, &database, Duration::from_secs(args.seconds), async {}).await?;
    let shutdown = CancellationToken::new();
    let amqp = Arc::new(AmqpPublisher::new(AmqpConnector::new(&amqp_url, "bench", Readiness::new()), topology.clone()));
    tokio::spawn(amqp.clone().keep_connected(shutdown.clone()));
    let task = match mode {
        RelayMode::Polling => {
            let relay = OutboxRelay::new(relay_pool.clone(), Some(amqp), None, RelayConfig::default());
            tokio::spawn(relay.run(shutdown.clone()))
        }
        RelayMode::LogTailing => {
            let config = LogTailingConfig::for_slot(slot::slot_name_for(&database));
            let relay =
                LogTailingRelay::new(relay_pool.clone(), &stack.postgres_url(&database), Some(amqp), None, config)?;
            tokio::spawn(relay.run(shutdown.clone()))
        }
    };
    let queue = topology.stock_commands();
    let factory = MessageFactory::new("bench");
    let message = |i: usize| -> Result<OutboxMessage> {
        let payload =
            ReserveStock { order_id: Uuid::now_v7(), lines: vec![OrderLine { sku: format!("SKU-{i}"), quantity: 1 }] };
        Ok(factory.command(&queue, &format!("agg-{}", i % 64), &topology.order_replies(), None, &payload)?)
    };
    // Settled in: the slot exists and streams, the first connections are open.
    write(&pool, &[message(0)?]).await?;
    wait_sent(&pool, 1, Duration::from_secs(60)).await?;

    let idle = cost_over(&pool, &database, Duration::from_secs(args.seconds), async {}).await?;
    let idle = DatabaseCost {
        transactions_per_second: idle.transactions_per_second - baseline.transactions_per_second,
        cpu_ms_per_second: idle.cpu_ms_per_second,
    };

    let messages: Vec<OutboxMessage> = (1..=args.messages).map(message).collect::<Result<_>>()?;
    let started = Instant::now();
    let (busy, written) = {
        let writing = async {
            for chunk in messages.chunks(args.per_transaction.max(1)) {
                write(&pool, chunk).await?;
            }
            wait_sent(&pool, 1 + args.messages as i64, Duration::from_secs(600)).await
        };
        let mut result = Ok(());
        let cost = cost_over(&pool, &database, Duration::ZERO, async { result = writing.await }).await?;
        (cost, result)
    };
    written?;
    let saturated_per_second = args.messages as f64 / started.elapsed().as_secs_f64();

    let first_id: i64 = sqlx::query_scalar("SELECT max(id) FROM outbox").fetch_one(&pool).await?;
    let count = (args.rate * args.seconds as f64) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = tokio::time::Instant::now();
    // Open loop: each message at its scheduled time, whether or not the
    // relay kept up with the ones before.
    for i in 0..count {
        tokio::time::sleep_until(start + interval * i as u32).await;
        write(&pool, &[message(args.messages + 1 + i)?]).await?;
    }
    wait_sent(&pool, 1 + (args.messages + count) as i64, Duration::from_secs(120)).await?;
    let mut latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM sent_at - created_at) * 1000)::float8 FROM outbox WHERE id > $1",
    )
    .bind(first_id)
    .fetch_all(&pool)
    .await?;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    relay_pool.close().await;
    pool.close().await;
    stack.drop_database(&database).await?;
    let _ = system_tests::brokers::delete_queue(&amqp_url, &queue).await;
    let figures =
        Figures { relay: mode, saturated_per_second, latency_ms: [pct(0.5), pct(0.99), pct(1.0)], idle, busy };
    println!(
        "{:?}: {:.0} msg/s saturated, p50 {:.1} ms at {} msg/s; idle {:.2} tx/s",
        figures.relay,
        figures.saturated_per_second,
        figures.latency_ms[0],
        args.rate,
        figures.idle.transactions_per_second
    );
    Ok(figures)
}

async fn write(pool: &PgPool, messages: &[OutboxMessage]) -> Result<()> {
    let mut tx = pool.begin().await?;
    Outbox::add_all(&mut tx, messages).await?;
    tx.commit().await?;
    Ok(())
}

async fn wait_sent(pool: &PgPool, expected: i64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL").fetch_one(pool).await?;
        if sent >= expected {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{sent} of {expected} sent after {within:?}");
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

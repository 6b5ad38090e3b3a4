//! A log-tailing relay away longer than `max_slot_wal_keep_size` allows
//! finds its slot invalidated (the WAL it needed is gone); it must say so,
//! create the slot again and sweep what the lost slot would have
//! delivered, losing nothing.
//!
//! Its own test binary: it lowers `max_slot_wal_keep_size` on the test
//! stack's server for a moment, which would invalidate the slots of tests
//! running beside it (cargo runs test binaries one at a time).

#![allow(clippy::unwrap_used)]

use contracts::catalogue::{OrderLine, ReserveStock};
use health::Readiness;
use messaging::amqp::{AmqpConnector, AmqpPublisher};
use messaging::log_tailing::{LogTailingConfig, LogTailingRelay, slot};
use messaging::{MessageFactory, Outbox};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use system_tests::brokers::drain_queue;
use system_tests::{fresh_database, test_stack, unique_namespace};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

async fn slot_status(pool: &PgPool, slot: &str) -> Option<String> {
    sqlx::query_scalar("SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1")
        .bind(slot)
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
}

/// Starts a relay, waits until it streams (or `lost` is seen), stops it.
async fn run_relay_until_streaming(
    pool: &PgPool,
    url: &str,
    amqp_url: &str,
    topology: &contracts::Topology,
    slot: &str,
) {
    let amqp =
        Arc::new(AmqpPublisher::new(AmqpConnector::new(amqp_url, "test-lost", Readiness::new()), topology.clone()));
    let shutdown = CancellationToken::new();
    tokio::spawn(amqp.clone().keep_connected(shutdown.clone()));
    let relay = LogTailingRelay::new(pool.clone(), url, Some(amqp), None, LogTailingConfig::for_slot(slot)).unwrap();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active: Option<bool> = sqlx::query_scalar("SELECT active FROM pg_replication_slots WHERE slot_name = $1")
            .bind(slot)
            .fetch_optional(pool)
            .await
            .unwrap();
        if active == Some(true) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the relay never streamed {slot}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_is_created_again_and_what_it_missed_is_swept() {
    let stack = test_stack().await;
    let namespace = unique_namespace("tailost");
    let database = format!("{namespace}_db");
    let pool = fresh_database(stack, &database).await;
    messaging::migrations::run_messaging(&pool).await.unwrap();
    let topology = contracts::Topology::new(format!("{namespace}."));
    let (url, amqp_url) = (stack.postgres_url(&database), stack.amqp_url());
    let slot = slot::slot_name_for(&database);
    run_relay_until_streaming(&pool, &url, &amqp_url, &topology, &slot).await;

    // Written while the relay is away.
    let factory = MessageFactory::new("test");
    let mut written = Vec::new();
    let mut tx = pool.begin().await.unwrap();
    for i in 0..3 {
        let payload =
            ReserveStock { order_id: Uuid::now_v7(), lines: vec![OrderLine { sku: format!("SKU-{i}"), quantity: 1 }] };
        let command =
            factory.command(&topology.stock_commands(), "agg-away", &topology.order_replies(), None, &payload).unwrap();
        written.push(command.envelope.message_id);
        Outbox::add(&mut tx, &command).await.unwrap();
    }
    tx.commit().await.unwrap();

    // Away too long: more WAL than the server may keep for a slot.
    sqlx::query("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'").execute(&pool).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()").execute(&pool).await.unwrap();
    sqlx::query("CREATE TABLE filler (payload text)").execute(&pool).await.unwrap();
    let mut status = slot_status(&pool, &slot).await;
    for _ in 0..20 {
        if status.as_deref() == Some("lost") {
            break;
        }
        sqlx::query("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 5000)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("SELECT pg_switch_wal()").execute(&pool).await.unwrap();
        sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
        status = slot_status(&pool, &slot).await;
    }
    sqlx::query("ALTER SYSTEM RESET max_slot_wal_keep_size").execute(&pool).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()").execute(&pool).await.unwrap();
    assert_eq!(status.as_deref(), Some("lost"), "the slot was not invalidated; the test proves nothing");

    // Back: the slot is created again and the sweep publishes what it missed.
    run_relay_until_streaming(&pool, &url, &amqp_url, &topology, &slot).await;
    assert_ne!(slot_status(&pool, &slot).await.as_deref(), Some("lost"), "the slot was not created again");
    let unsent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetch_one(&pool).await.unwrap();
    assert_eq!(unsent, 0, "rows the lost slot would have delivered are still unsent");
    let queued =
        drain_queue(&amqp_url, &topology.stock_commands(), Duration::from_secs(2), Duration::from_secs(20)).await;
    let mut received: Vec<Uuid> = queued.iter().map(|r| r.envelope.message_id).collect();
    received.dedup();
    assert_eq!(received, written, "every message written while away, in order");
    pool.close().await;
    stack.drop_database(&database).await.unwrap();
}

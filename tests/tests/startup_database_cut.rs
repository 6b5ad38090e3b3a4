//! A service's start-up (the database probe, then the migrations) waits out
//! a silent cut of its database's network however the cut finds it. A
//! chaos run (2026-12-07) saw a shipping service restarted during such a
//! cut stay "starting" for good: its probe had taken a connection made just
//! before the cut, sent its query into the black hole and waited for an
//! answer that could never come.

#![allow(clippy::unwrap_used)]

use chaos_proxy::ChaosProxy;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use system_tests::{test_stack, unique_namespace};
use tokio_util::sync::CancellationToken;

/// How long the cut lasts: the probe's query is sent into it.
const CUT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_out_a_silent_database_cut_that_strands_a_pooled_connection() {
    let stack = test_stack().await;
    stack.start_infra().await.unwrap();
    let name = unique_namespace("startcut");
    stack.create_database(&name).await.unwrap();
    let proxy = ChaosProxy::start(SocketAddr::from(([127, 0, 0, 1], stack.ports().postgres))).await.unwrap();
    let url = xtask::infra::postgres_url_at(proxy.port(), &name);
    // The services' pool, with one connection, made before the cut, handed
    // out as it is: the services' pools ping a pooled connection within their acquire
    // timeout first, so for them the cut must fall between a connection's
    // acquisition and its query, as in the chaos run; without the ping the
    // test makes that moment every time.
    let pool = service_kit::db::pool_options(1).test_before_acquire(false).connect_lazy(&url).unwrap();
    sqlx::query("SELECT 1").execute(&pool).await.unwrap();
    // Its release (and the pool's check on release) happens after the
    // query returns, on a task of its own: before the cut.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pool.num_idle(), 1, "the connection is not back in the pool");

    proxy.partition();
    let heal = tokio::spawn(async move {
        tokio::time::sleep(CUT).await;
        proxy.heal();
        proxy
    });
    let started = Instant::now();
    let shutdown = CancellationToken::new();
    let migrator = sqlx::migrate!("../migrations/stock");
    let migrated = tokio::time::timeout(
        Duration::from_secs(60),
        service_kit::db::migrate_when_reachable(&pool, migrator, &shutdown),
    )
    .await;
    let _proxy = heal.await.unwrap();
    println!("start-up after a {CUT:?} cut: {migrated:?} after {:?}", started.elapsed());
    assert!(
        matches!(migrated, Ok(Ok(true))),
        "start-up did not get past a {CUT:?} cut of its database within 60 s: {migrated:?}"
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
    assert!(applied > 0, "no migration applied");
}

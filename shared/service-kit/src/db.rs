//! The service's PostgreSQL pool: lazy, bounded, waiting out a database that
//! is not up yet, and reporting readiness.

use crate::config::CommonConfig;
use health::Readiness;
use messaging::retry::Backoff;
use sqlx::Connection;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const COMPONENT: &str = "database";

/// How long a released connection may take to prove itself reusable.
const RELEASE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The server ends a session left idle inside a transaction this long, so
/// a client cut off mid-transaction (see [`messaging::deadline`]) does not
/// hold its row locks, and block its own retry, for long. Transactions here
/// run statement after statement; the one exception, the relay's lane
/// transaction waiting on broker confirms, raises it for itself.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "15s";

/// A pool that connects on first use. `acquire_timeout` is short so an
/// exhausted pool turns into a quick 503, not a hung request.
///
/// A connection released mid-call (its caller timed out) is pinged before
/// it is pooled again. sqlx's own ping has no bound: on a connection the
/// network black-holed it would wait forever, holding a pool slot. This
/// one gives up after [`RELEASE_PING_TIMEOUT`] and the connection is closed.
pub fn pool(config: &CommonConfig) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(config.database_url.expose())?
        .options([("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT)]);
    Ok(PgPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(60))
        .after_release(|connection, _| {
            Box::pin(async move {
                messaging::deadline::within(RELEASE_PING_TIMEOUT, connection.ping()).await.map(|()| true)
            })
        })
        .connect_lazy_with(options))
}

/// Applies the messaging and service migrations, retrying while the
/// database is unreachable. Returns `Ok(false)` if shut down meanwhile.
pub async fn migrate_when_reachable(
    pool: &PgPool,
    migrator: Migrator,
    shutdown: &CancellationToken,
) -> Result<bool, sqlx::migrate::MigrateError> {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sqlx::query_scalar!("SELECT 1 AS probe").fetch_one(pool).await {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "database not reachable yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(backoff.delay(attempt)) => {}
                }
            }
        }
    }
    messaging::migrations::run(pool, migrator).await?;
    Ok(true)
}

/// Reports [`COMPONENT`] readiness every 2 s from a trivial query.
pub fn spawn_readiness_probe(pool: PgPool, readiness: Readiness, shutdown: CancellationToken) {
    readiness.register(COMPONENT);
    tokio::spawn(async move {
        loop {
            let probe =
                tokio::time::timeout(Duration::from_secs(2), sqlx::query_scalar!("SELECT 1 AS probe").fetch_one(&pool))
                    .await;
            match probe {
                Ok(Ok(_)) => readiness.ready(COMPONENT),
                Ok(Err(e)) => readiness.not_ready(COMPONENT, e.to_string()),
                Err(_) => readiness.not_ready(COMPONENT, "no answer within 2s"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
}

//! The service's PostgreSQL pool: lazy, bounded, waiting out a database that
//! is not up yet, and reporting readiness.

use crate::config::CommonConfig;
use health::Readiness;
use messaging::db_errors::is_transient_db_error;
use messaging::deadline;
use messaging::retry::Backoff;
use sqlx::Connection;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
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
    Ok(pool_options(config.database_max_connections).connect_lazy_with(options))
}

/// The bounds and the release check of [`pool`], without a database.
pub fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(60))
        .after_release(|connection, _| {
            Box::pin(async move {
                messaging::deadline::within(RELEASE_PING_TIMEOUT, connection.ping()).await.map(|()| true)
            })
        })
}

/// Bound on applying the migrations. A connection the network black-holes
/// mid-migration would hold start-up for ever; the server ends its session,
/// idle in the migration's transaction, after [`IDLE_IN_TRANSACTION_TIMEOUT`]
/// and so frees the migration lock for the next attempt.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Applies the messaging and service migrations, retrying while the
/// database is unreachable. Returns `Ok(false)` if shut down meanwhile.
///
/// Every attempt is bounded: a probe or a migration on a connection whose
/// peer went silent never returns (seen in a chaos run: a service restarted
/// during a silent cut of its database's network stayed "starting" for
/// good, its probe waiting on a connection made just before the cut).
pub async fn migrate_when_reachable(
    pool: &PgPool,
    mut migrator: Migrator,
    shutdown: &CancellationToken,
) -> Result<bool, sqlx::migrate::MigrateError> {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let probe = sqlx::query_scalar!("SELECT 1 AS probe").fetch_one(pool);
        let failure = match deadline::within(deadline::QUERY_TIMEOUT, probe).await {
            Err(e) => e,
            Ok(_) => match deadline::within(MIGRATION_TIMEOUT, messaging::migrations::run(pool, &mut migrator)).await {
                Ok(()) => return Ok(true),
                Err(MigrateError::Execute(e)) if is_transient_db_error(&e) => e,
                Err(e) => return Err(e),
            },
        };
        tracing::warn!(error = %failure, attempt, "database not reachable yet");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(backoff.delay(attempt)) => {}
        }
    }
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

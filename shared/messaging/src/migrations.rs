//! The messaging tables' migrations, applied to every service database
//! before the service's own (which start at version 1000).

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Applies the messaging migrations, then `service`'s (build it with
/// `sqlx::migrate!("../../migrations/<service>")`). Both share sqlx's
/// bookkeeping table, so each is told to ignore the other's versions.
pub async fn run(pool: &PgPool, service: &mut Migrator) -> Result<(), MigrateError> {
    run_messaging(pool).await?;
    service.set_ignore_missing(true);
    service.run(pool).await
}

/// Applies only the messaging tables (outbox, inbox).
pub async fn run_messaging(pool: &PgPool) -> Result<(), MigrateError> {
    let mut messaging = sqlx::migrate!("../../migrations/messaging");
    messaging.set_ignore_missing(true);
    messaging.run(pool).await
}

//! Retention: sent outbox rows and old inbox rows are deleted in the
//! background, in small batches so the job never holds long locks.
//!
//! The inbox window must be longer than the longest time a message can take
//! to be redelivered (broker retention of unacknowledged messages, a consumer
//! down for a weekend, a dead letter replayed days later): a message whose
//! inbox row is gone would be applied again. Sent outbox rows are kept for
//! inspection only; nothing depends on them.

use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Bound on one batch delete (see [`crate::deadline`]).
const DELETE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// How long sent outbox rows are kept (`OUTBOX_RETENTION_SECS`).
    pub sent_outbox: Duration,
    /// How long inbox rows are kept (`INBOX_RETENTION_SECS`).
    pub inbox: Duration,
    /// How often the job runs.
    pub interval: Duration,
    /// Rows deleted per statement.
    pub batch: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            sent_outbox: Duration::from_secs(24 * 3600),
            inbox: Duration::from_secs(14 * 24 * 3600),
            interval: Duration::from_secs(60),
            batch: 5_000,
        }
    }
}

/// Rows deleted by one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub outbox: u64,
    pub inbox: u64,
}

/// The tables retention trims, each with its own window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetainedTable {
    Outbox,
    Inbox,
    InboxSequence,
}

/// Deletes one batch of `table`'s rows older than `window`; returns how many.
async fn delete_batch(pool: &PgPool, table: RetainedTable, window: Duration, batch: i64) -> Result<u64, sqlx::Error> {
    // `window` is bound as the interval it always was (`as _`: the macros
    // would otherwise ask for sqlx's own interval type).
    let delete = match table {
        RetainedTable::Outbox => sqlx::query!(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE sent_at < now() - $1::interval LIMIT $2)",
            window as _,
            batch,
        )
        .execute(pool),
        RetainedTable::Inbox => sqlx::query!(
            "DELETE FROM inbox WHERE (consumer, message_id) IN
                (SELECT consumer, message_id FROM inbox WHERE received_at < now() - $1::interval LIMIT $2)",
            window as _,
            batch,
        )
        .execute(pool),
        RetainedTable::InboxSequence => sqlx::query!(
            "DELETE FROM inbox_sequence WHERE (consumer, producer, aggregate_id) IN
                (SELECT consumer, producer, aggregate_id FROM inbox_sequence WHERE updated_at < now() - $1::interval LIMIT $2)",
            window as _,
            batch,
        )
        .execute(pool),
    };
    Ok(crate::deadline::within(DELETE_TIMEOUT, delete).await?.rows_affected())
}

/// Deletes what is past its window, batch by batch, until nothing is left.
pub async fn purge_expired(pool: &PgPool, config: &RetentionConfig) -> Result<Purged, sqlx::Error> {
    let mut purged = Purged::default();
    for table in [RetainedTable::Outbox, RetainedTable::Inbox, RetainedTable::InboxSequence] {
        let window = if table == RetainedTable::Outbox { config.sent_outbox } else { config.inbox };
        loop {
            let deleted = delete_batch(pool, table, window, config.batch).await?;
            match table {
                RetainedTable::Outbox => purged.outbox += deleted,
                RetainedTable::Inbox => purged.inbox += deleted,
                RetainedTable::InboxSequence => {}
            }
            if deleted < config.batch.unsigned_abs() {
                break;
            }
        }
    }
    Ok(purged)
}

/// Runs [`purge_expired`] every `interval` until `shutdown`.
pub async fn run(pool: PgPool, config: RetentionConfig, shutdown: CancellationToken) {
    loop {
        match purge_expired(&pool, &config).await {
            Ok(purged) if purged != Purged::default() => {
                tracing::info!(outbox = purged.outbox, inbox = purged.inbox, "retention purged old rows");
                metrics::counter!("retention_deleted_rows_total", "table" => "outbox").increment(purged.outbox);
                metrics::counter!("retention_deleted_rows_total", "table" => "inbox").increment(purged.inbox);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
    }
}

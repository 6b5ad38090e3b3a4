//! What the log-tailing relay writes back to the outbox table: rows the
//! broker confirmed are marked sent, rows it keeps refusing are parked, as
//! the polling relay does, so that "outbox drained" (invariant 7a) means
//! the same with either relay.

use crate::deadline;
use sqlx::PgPool;
use std::time::{Duration, Instant};

/// The highest outbox id committed so far: the sweep that precedes
/// streaming covers the rows up to it.
pub async fn highest_outbox_id(pool: &PgPool) -> Result<i64, sqlx::Error> {
    deadline::within(deadline::QUERY_TIMEOUT, sqlx::query_scalar!("SELECT max(id) FROM outbox").fetch_one(pool))
        .await
        .map(|id| id.unwrap_or(0))
}

/// How long a row the log delivered may stay invisible to other sessions.
/// The WAL sender sends a transaction once its commit record is flushed,
/// and the committing session makes it visible a moment later: an UPDATE
/// in between finds no row. Found in CI: a reply published, consumed, and
/// its row left unsent for good, the slot already past it.
const VISIBILITY_WAIT: Duration = Duration::from_secs(10);

/// Pause between looks at rows not yet visible.
const VISIBILITY_POLL: Duration = Duration::from_millis(5);

/// Marks rows the broker confirmed as sent, waiting for any not yet visible
/// (see [`VISIBILITY_WAIT`]). A row still missing after that was deleted
/// by hand: said, and passed over.
pub async fn mark_sent(pool: &PgPool, ids: &[i64]) -> Result<(), sqlx::Error> {
    let deadline = Instant::now() + VISIBILITY_WAIT;
    let mut left: Vec<i64> = ids.to_vec();
    loop {
        let update = sqlx::query_scalar!(
            "UPDATE outbox SET sent_at = clock_timestamp(), attempts = attempts + 1 WHERE id = ANY($1) RETURNING id",
            &left,
        )
        .fetch_all(pool);
        let marked = deadline::within(deadline::QUERY_TIMEOUT, update).await?;
        left.retain(|id| !marked.contains(id));
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(ids = ?left, "published outbox rows not found to mark sent (deleted?)");
            return Ok(());
        }
        tokio::time::sleep(VISIBILITY_POLL).await;
    }
}

/// Counts a refusal of row `id`; parks it once it reached `park_after`.
/// Returns whether it is parked. The count lives in the row: the log
/// delivers the row as inserted, with none. Waits for the row to be
/// visible, as [`mark_sent`] does.
pub async fn record_refusal(pool: &PgPool, id: i64, error: &str, park_after: i32) -> Result<bool, sqlx::Error> {
    let deadline = Instant::now() + VISIBILITY_WAIT;
    loop {
        let update = sqlx::query_scalar!(
            r#"UPDATE outbox SET attempts = attempts + 1, refusals = refusals + 1, last_error = $2,
                    parked_at = CASE WHEN refusals + 1 >= $3 THEN coalesce(parked_at, clock_timestamp()) END
             WHERE id = $1 RETURNING parked_at IS NOT NULL AS "parked!""#,
            id,
            error,
            park_after,
        )
        .fetch_optional(pool);
        match deadline::within(deadline::QUERY_TIMEOUT, update).await? {
            Some(parked) => return Ok(parked),
            // Deleted by hand: nothing left to park; the log moves on.
            None if Instant::now() >= deadline => return Ok(true),
            None => tokio::time::sleep(VISIBILITY_POLL).await,
        }
    }
}

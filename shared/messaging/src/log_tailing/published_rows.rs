//! What the log-tailing relay writes back to the outbox table: rows the
//! broker confirmed are marked sent, rows it keeps refusing are parked, as
//! the polling relay does, so that "outbox drained" (invariant 7a) means
//! the same with either relay.

use crate::deadline;
use sqlx::PgPool;

/// The highest outbox id committed so far: the sweep that precedes
/// streaming covers the rows up to it.
pub async fn highest_outbox_id(pool: &PgPool) -> Result<i64, sqlx::Error> {
    deadline::within(
        deadline::QUERY_TIMEOUT,
        sqlx::query_scalar::<_, Option<i64>>("SELECT max(id) FROM outbox").fetch_one(pool),
    )
    .await
    .map(|id| id.unwrap_or(0))
}

/// Marks rows the broker confirmed as sent.
pub async fn mark_sent(pool: &PgPool, ids: &[i64]) -> Result<(), sqlx::Error> {
    let update =
        sqlx::query("UPDATE outbox SET sent_at = clock_timestamp(), attempts = attempts + 1 WHERE id = ANY($1)")
            .bind(ids)
            .execute(pool);
    deadline::within(deadline::QUERY_TIMEOUT, update).await.map(drop)
}

/// Counts a refusal of row `id`; parks it once it reached `park_after`.
/// Returns whether it is parked. The count lives in the row: the log
/// delivers the row as inserted, with none.
pub async fn record_refusal(pool: &PgPool, id: i64, error: &str, park_after: i32) -> Result<bool, sqlx::Error> {
    let update = sqlx::query_scalar::<_, bool>(
        "UPDATE outbox SET attempts = attempts + 1, refusals = refusals + 1, last_error = $2,
                parked_at = CASE WHEN refusals + 1 >= $3 THEN coalesce(parked_at, clock_timestamp()) END
         WHERE id = $1 RETURNING parked_at IS NOT NULL",
    )
    .bind(id)
    .bind(error)
    .bind(park_after)
    .fetch_optional(pool);
    // A row deleted meanwhile (retention) has nothing left to park.
    deadline::within(deadline::QUERY_TIMEOUT, update).await.map(|parked| parked.unwrap_or(true))
}

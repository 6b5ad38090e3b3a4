//! The publication and the replication slot of a service's outbox: created
//! when missing, checked for invalidation, measured, and kept moving.
//! The SQL of the log-tailing relay lives here.

use crate::deadline;
use sqlx::PgPool;
use std::time::Duration;

/// The publication: inserts into the outbox table, nothing else. Updates
/// (marking rows sent) and other tables never reach the relay.
pub const PUBLICATION: &str = "ordermesh_outbox";

/// Prefix of the logical messages that keep an idle slot moving.
pub const HEARTBEAT_PREFIX: &str = "ordermesh.outbox.heartbeat";

/// Creating a slot waits for the transactions running at that moment to end.
const CREATE_SLOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A slot name for `database`: slots are per server, not per database, so
/// the database's name is in it; only `[a-z0-9_]`, at most 63 bytes (a
/// longer name keeps its start and a hash of the whole).
pub fn slot_name_for(database: &str) -> String {
    let clean: String =
        database.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let name = format!("outbox_{clean}");
    if name.len() <= 63 {
        return name;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash =
        database.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{}_{:016x}", &name[..46], hash)
}

/// What became of the slot when the relay made sure of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotCheck {
    /// It was there and usable.
    Existing,
    /// It was missing and was created.
    Created,
    /// It had been invalidated (its WAL removed: the relay was away longer
    /// than `max_slot_wal_keep_size` allows); it was dropped and created again.
    Recreated,
}

/// The slot's state as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// `reserved`, `extended`, `unreserved` or `lost` (invalidated).
    pub wal_status: Option<String>,
    pub active: bool,
    /// WAL written since the position last reported as flushed.
    pub lag_bytes: i64,
}

impl SlotStatus {
    /// Invalidated: the WAL it needed is gone.
    pub fn is_lost(&self) -> bool {
        self.wal_status.as_deref() == Some("lost")
    }
}

/// Creates the publication if it is missing (several instances may race:
/// the loser's "already exists" is success).
pub async fn ensure_publication(pool: &PgPool) -> Result<(), sqlx::Error> {
    let exists: bool = deadline::within(
        deadline::QUERY_TIMEOUT,
        sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1) AS "exists!""#,
            PUBLICATION
        )
        .fetch_one(pool),
    )
    .await?;
    if exists {
        return Ok(());
    }
    // An identifier cannot be a bind parameter; PUBLICATION is a constant.
    let create = format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE outbox WITH (publish = 'insert')");
    match deadline::within(deadline::QUERY_TIMEOUT, sqlx::query(&create).execute(pool)).await {
        Err(e) if is_duplicate(&e) => Ok(()),
        other => other.map(drop),
    }
}

/// Makes sure `slot` exists and is usable, creating it (again) if not.
pub async fn ensure_slot(pool: &PgPool, slot: &str) -> Result<SlotCheck, sqlx::Error> {
    let check = match status(pool, slot).await? {
        Some(status) if status.is_lost() => {
            tracing::error!(
                slot,
                "the outbox replication slot was invalidated (the relay was away longer than max_slot_wal_keep_size \
                 allows); creating it again: the outbox is swept for what it missed"
            );
            metrics::counter!("outbox_slot_invalidations_total").increment(1);
            drop_slot(pool, slot).await?;
            SlotCheck::Recreated
        }
        Some(_) => return Ok(SlotCheck::Existing),
        None => SlotCheck::Created,
    };
    let create =
        sqlx::query!("SELECT pg_create_logical_replication_slot($1, 'pgoutput') AS created", slot).fetch_one(pool);
    match deadline::within(CREATE_SLOT_TIMEOUT, create).await {
        Err(e) if is_duplicate(&e) => Ok(SlotCheck::Existing),
        Err(e) => Err(e),
        Ok(_) => Ok(check),
    }
}

/// The slot's state, or `None` if there is no such slot.
pub async fn status(pool: &PgPool, slot: &str) -> Result<Option<SlotStatus>, sqlx::Error> {
    let row = deadline::within(
        deadline::QUERY_TIMEOUT,
        sqlx::query!(
            r#"SELECT wal_status, active AS "active!",
                      pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 AS lag_bytes
               FROM pg_replication_slots WHERE slot_name = $1"#,
            slot,
        )
        .fetch_optional(pool),
    )
    .await?;
    Ok(row.map(|row| SlotStatus {
        wal_status: row.wal_status,
        active: row.active,
        lag_bytes: row.lag_bytes.unwrap_or(0),
    }))
}

/// Writes a heartbeat into the log (a non-transactional logical message,
/// no table) and reads the slot's state in the same round trip. An outbox
/// with nothing to publish otherwise gives the relay no position to report,
/// and the slot would hold back WAL written by everything else.
pub async fn heartbeat(pool: &PgPool, slot: &str) -> Result<Option<SlotStatus>, sqlx::Error> {
    let row = deadline::within(
        deadline::QUERY_TIMEOUT,
        sqlx::query!(
            // `active?`: the LEFT JOIN gives NULL when the slot is missing.
            r#"SELECT s.wal_status, s.active AS "active?",
                      pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::int8 AS lag_bytes
               FROM (SELECT pg_logical_emit_message(false, $2, '')) AS heartbeat
               LEFT JOIN pg_replication_slots s ON s.slot_name = $1"#,
            slot,
            HEARTBEAT_PREFIX,
        )
        .fetch_optional(pool),
    )
    .await?;
    Ok(row.and_then(|row| {
        row.wal_status.is_some().then_some(SlotStatus {
            wal_status: row.wal_status,
            active: row.active.unwrap_or(false),
            lag_bytes: row.lag_bytes.unwrap_or(0),
        })
    }))
}

/// Drops `slot` if it exists and no session holds it. A service that runs
/// the polling relay drops the slot a log-tailing run left behind: nobody
/// would read it, and it would hold back WAL until invalidated.
pub async fn drop_slot(pool: &PgPool, slot: &str) -> Result<bool, sqlx::Error> {
    deadline::within(
        deadline::QUERY_TIMEOUT,
        sqlx::query_scalar!(
            r#"SELECT count(pg_drop_replication_slot(slot_name)) > 0 AS "dropped!"
               FROM pg_replication_slots WHERE slot_name = $1 AND NOT active"#,
            slot,
        )
        .fetch_one(pool),
    )
    .await
}

fn is_duplicate(error: &sqlx::Error) -> bool {
    // 42710 duplicate_object; 23505 when two creations race in the catalog.
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "42710" || code == "23505")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_valid_and_distinct_per_database() {
        assert_eq!(slot_name_for("order"), "outbox_order");
        assert_eq!(slot_name_for("T-1.order"), "outbox_t_1_order");
        let long_a = slot_name_for(&format!("{}_a", "x".repeat(80)));
        let long_b = slot_name_for(&format!("{}_b", "x".repeat(80)));
        assert!(long_a.len() <= 63 && long_b.len() <= 63);
        assert_ne!(long_a, long_b);
    }
}

//! SQL of the loyalty service's tables. A ledger entry and the balance it
//! changes are written in the same (the consumer's) transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

// Stored as the text `as_str` gives (the `loyalty_ledger.kind` CHECK
// constraint); sqlx decodes it by the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum EntryKind {
    Credit,
    Reversal,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::Reversal => "reversal",
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub customer_id: String,
    pub order_id: Uuid,
    pub kind: EntryKind,
    pub points: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Account {
    pub customer_id: String,
    pub balance: i64,
    pub updated_at: DateTime<Utc>,
}

/// Creates the customer's account if needed and locks it for the rest of
/// the transaction, so entries and balance of one customer change together.
pub async fn lock_account(conn: &mut PgConnection, customer_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("INSERT INTO loyalty_accounts (customer_id) VALUES ($1) ON CONFLICT DO NOTHING", customer_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar!("SELECT 1 AS locked FROM loyalty_accounts WHERE customer_id = $1 FOR UPDATE", customer_id)
        .fetch_optional(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct NewEntry {
    pub customer_id: String,
    pub order_id: Uuid,
    pub kind: EntryKind,
    pub points: i64,
    pub cause_message_id: Uuid,
}

/// Appends the entry and moves the balance by its points. The caller holds
/// the account lock. Not idempotent by itself: the consumer's inbox makes
/// sure one event is applied once.
pub async fn append_entry(conn: &mut PgConnection, entry: &NewEntry) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO loyalty_ledger (customer_id, order_id, kind, points, cause_message_id)
         VALUES ($1, $2, $3, $4, $5)",
        entry.customer_id,
        entry.order_id,
        entry.kind.as_str(),
        entry.points,
        entry.cause_message_id,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE loyalty_accounts SET balance = balance + $2, updated_at = now() WHERE customer_id = $1",
        entry.customer_id,
        entry.points,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Points the order holds now (its credits minus its reversals) and the
/// customer they belong to; `None` if the order has no entry.
pub async fn net_points_of_order(
    conn: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let net = sqlx::query!(
        r#"SELECT customer_id, sum(points)::int8 AS "points!" FROM loyalty_ledger
           WHERE order_id = $1 GROUP BY customer_id"#,
        order_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(net.map(|row| (row.customer_id, row.points)))
}

pub async fn account(pool: &PgPool, customer_id: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as!(
        Account,
        "SELECT customer_id, balance, updated_at FROM loyalty_accounts WHERE customer_id = $1",
        customer_id,
    )
    .fetch_optional(pool)
    .await
}

pub async fn ledger_of(pool: &PgPool, customer_id: &str) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    sqlx::query_as!(
        LedgerEntry,
        r#"SELECT customer_id, order_id, kind AS "kind: EntryKind", points, created_at FROM loyalty_ledger
           WHERE customer_id = $1 ORDER BY id"#,
        customer_id,
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are written with `as_str` and read back by sqlx's derived names.
    #[test]
    fn kinds_are_stored_as_the_text_sqlx_reads() {
        use sqlx::Encode;
        for value in [EntryKind::Credit, EntryKind::Reversal] {
            let mut buf = sqlx::postgres::PgArgumentBuffer::default();
            let _ = Encode::<sqlx::Postgres>::encode_by_ref(&value, &mut buf).unwrap();
            assert_eq!(buf.as_slice(), value.as_str().as_bytes());
        }
    }
}

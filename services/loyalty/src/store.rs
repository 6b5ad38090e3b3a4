//! SQL of the loyalty service's tables. A ledger entry and the balance it
//! changes are written in the same (the consumer's) transaction.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
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

impl TryFrom<String> for EntryKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "credit" => Ok(EntryKind::Credit),
            "reversal" => Ok(EntryKind::Reversal),
            _ => Err(format!("unknown ledger entry kind `{s}`")),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LedgerEntry {
    pub customer_id: String,
    pub order_id: Uuid,
    #[sqlx(try_from = "String")]
    pub kind: EntryKind,
    pub points: i64,
    pub created_at: DateTime<Utc>,
}

const ENTRY_COLUMNS: &str = "customer_id, order_id, kind, points, created_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Account {
    pub customer_id: String,
    pub balance: i64,
    pub updated_at: DateTime<Utc>,
}

/// Creates the customer's account if needed and locks it for the rest of
/// the transaction, so entries and balance of one customer change together.
pub async fn lock_account(conn: &mut PgConnection, customer_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO loyalty_accounts (customer_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT 1 FROM loyalty_accounts WHERE customer_id = $1 FOR UPDATE")
        .bind(customer_id)
        .execute(conn)
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
    sqlx::query(
        "INSERT INTO loyalty_ledger (customer_id, order_id, kind, points, cause_message_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&entry.customer_id)
    .bind(entry.order_id)
    .bind(entry.kind.as_str())
    .bind(entry.points)
    .bind(entry.cause_message_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE loyalty_accounts SET balance = balance + $2, updated_at = now() WHERE customer_id = $1")
        .bind(&entry.customer_id)
        .bind(entry.points)
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
    sqlx::query_as("SELECT customer_id, sum(points)::int8 FROM loyalty_ledger WHERE order_id = $1 GROUP BY customer_id")
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

pub async fn account(pool: &PgPool, customer_id: &str) -> Result<Option<Account>, sqlx::Error> {
    sqlx::query_as("SELECT customer_id, balance, updated_at FROM loyalty_accounts WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(pool)
        .await
}

pub async fn ledger_of(pool: &PgPool, customer_id: &str) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {ENTRY_COLUMNS} FROM loyalty_ledger WHERE customer_id = $1 ORDER BY id"))
        .bind(customer_id)
        .fetch_all(pool)
        .await
}

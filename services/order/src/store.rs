//! SQL of the order service's tables. Functions that change an order take
//! the caller's transaction so the change and its outbox rows commit together.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

// Stored as the text `as_str` gives (the `orders.status` CHECK constraint);
// sqlx decodes it by the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Placed,
    StockReserved,
    Paid,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "PLACED",
            OrderStatus::StockReserved => "STOCK_RESERVED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }
}

#[derive(Debug, Clone)]
pub struct NewOrder {
    pub id: Uuid,
    pub customer_id: String,
    pub payment_method: String,
    pub lines: Vec<(String, i32)>,
    pub idempotency_key: Option<String>,
    pub request_fingerprint: String,
    pub trace_id: Option<String>,
    /// The `ReserveStock` command the saga now waits a reply to (none for
    /// the synchronous twin's orders: no saga runs them).
    pub awaiting_message_id: Option<Uuid>,
}

pub enum InsertOutcome {
    Created,
    /// An order with the same idempotency key exists.
    Existing(KeyedOrder),
}

/// The order an idempotency key made, and what the request that made it asked.
#[derive(Debug)]
pub struct KeyedOrder {
    pub id: Uuid,
    pub request_fingerprint: Option<String>,
}

pub async fn find_by_idempotency_key(
    conn: impl sqlx::PgExecutor<'_>,
    key: &str,
) -> Result<Option<KeyedOrder>, sqlx::Error> {
    sqlx::query_as!(KeyedOrder, "SELECT id, request_fingerprint FROM orders WHERE idempotency_key = $1", key)
        .fetch_optional(conn)
        .await
}

/// Inserts the order in `PLACED` with its lines and first history entry.
/// With an idempotency key already used, inserts nothing.
pub async fn insert_order(conn: &mut PgConnection, order: &NewOrder) -> Result<InsertOutcome, sqlx::Error> {
    let inserted: Option<Uuid> = sqlx::query_scalar!(
        "INSERT INTO orders (id, customer_id, payment_method, status, idempotency_key, request_fingerprint,
                             trace_id, awaiting_message_id, event_sequence)
         VALUES ($1, $2, $3, 'PLACED', $4, $5, $6, $7, 1)
         ON CONFLICT (idempotency_key) DO NOTHING
         RETURNING id",
        order.id,
        order.customer_id,
        order.payment_method,
        order.idempotency_key,
        order.request_fingerprint,
        order.trace_id,
        order.awaiting_message_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        // Only a key conflict makes the insert do nothing.
        let key = order.idempotency_key.as_deref().unwrap_or_default();
        return match find_by_idempotency_key(&mut *conn, key).await? {
            Some(existing) => Ok(InsertOutcome::Existing(existing)),
            None => Err(sqlx::Error::RowNotFound),
        };
    }
    for (line_no, (sku, quantity)) in order.lines.iter().enumerate() {
        sqlx::query!(
            "INSERT INTO order_lines (order_id, line_no, sku, quantity) VALUES ($1, $2, $3, $4)",
            order.id,
            i32::try_from(line_no).unwrap_or(i32::MAX),
            sku,
            quantity,
        )
        .execute(&mut *conn)
        .await?;
    }
    record_history(&mut *conn, order.id, None, OrderStatus::Placed, None, Some("order placed")).await?;
    Ok(InsertOutcome::Created)
}

/// The saga's view of an order, locked for the rest of the transaction so
/// that messages about one order are applied one at a time.
#[derive(Debug, Clone)]
pub struct LockedOrder {
    pub id: Uuid,
    pub customer_id: String,
    pub payment_method: String,
    pub status: OrderStatus,
    pub total_cents: Option<i64>,
    pub payment_id: Option<Uuid>,
    pub awaiting_message_id: Option<Uuid>,
    pub event_sequence: i64,
}

pub async fn lock_order(conn: &mut PgConnection, id: Uuid) -> Result<Option<LockedOrder>, sqlx::Error> {
    sqlx::query_as!(
        LockedOrder,
        r#"SELECT id, customer_id, payment_method, status AS "status: OrderStatus", total_cents, payment_id,
                  awaiting_message_id, event_sequence
           FROM orders WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// What a transition changes besides the status.
#[derive(Debug, Default)]
pub struct TransitionFields {
    pub total_cents: Option<i64>,
    pub payment_id: Option<Uuid>,
    pub cancel_reason: Option<String>,
    /// The next command awaited (None clears it).
    pub awaiting_message_id: Option<Uuid>,
    /// The new event sequence, if this transition publishes an event.
    pub event_sequence: Option<i64>,
}

pub async fn transition(
    conn: &mut PgConnection,
    order: &LockedOrder,
    to: OrderStatus,
    fields: &TransitionFields,
    cause: &contracts::Envelope,
) -> Result<(), sqlx::Error> {
    set_status(conn, order.id, to, fields).await?;
    record_history(conn, order.id, Some(order.status), to, Some(cause), fields.cancel_reason.as_deref()).await
}

/// The columns a transition changes.
async fn set_status(
    conn: &mut PgConnection,
    order_id: Uuid,
    to: OrderStatus,
    fields: &TransitionFields,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE orders SET status = $2,
                total_cents = COALESCE($3, total_cents),
                payment_id = COALESCE($4, payment_id),
                cancel_reason = COALESCE($5, cancel_reason),
                awaiting_message_id = $6,
                event_sequence = COALESCE($7, event_sequence),
                updated_at = now()
         WHERE id = $1",
        order_id,
        to.as_str(),
        fields.total_cents,
        fields.payment_id,
        fields.cancel_reason,
        fields.awaiting_message_id,
        fields.event_sequence,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The synchronous twin's transition (services/order/src/sync_order.rs):
/// the same columns as [`transition`], caused by a call, not a message.
pub async fn advance_sync(
    conn: &mut PgConnection,
    order_id: Uuid,
    from: OrderStatus,
    to: OrderStatus,
    fields: &TransitionFields,
    note: &str,
) -> Result<(), sqlx::Error> {
    set_status(conn, order_id, to, fields).await?;
    record_history(conn, order_id, Some(from), to, None, Some(note)).await
}

pub async fn set_line_prices(
    conn: &mut PgConnection,
    order_id: Uuid,
    prices: &[(String, i64)],
) -> Result<(), sqlx::Error> {
    for (sku, price) in prices {
        sqlx::query!(
            "UPDATE order_lines SET unit_price_cents = $3 WHERE order_id = $1 AND sku = $2",
            order_id,
            sku,
            price,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn record_history(
    conn: &mut PgConnection,
    order_id: Uuid,
    from: Option<OrderStatus>,
    to: OrderStatus,
    cause: Option<&contracts::Envelope>,
    note: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO order_history (order_id, from_status, to_status, message_id, message_type, note)
         VALUES ($1, $2, $3, $4, $5, $6)",
        order_id,
        from.map(OrderStatus::as_str),
        to.as_str(),
        cause.map(|c| c.message_id),
        cause.map(|c| c.message_type.as_str()),
        note,
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub id: Uuid,
    pub customer_id: String,
    #[schema(value_type = contracts::catalogue::PaymentMethod)]
    pub payment_method: String,
    #[schema(value_type = OrderStatus)]
    pub status: String,
    pub total_cents: Option<i64>,
    pub payment_id: Option<Uuid>,
    pub cancel_reason: Option<String>,
    pub trace_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub lines: Vec<LineView>,
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineView {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[schema(value_type = Option<OrderStatus>)]
    pub from_status: Option<String>,
    #[schema(value_type = OrderStatus)]
    pub to_status: String,
    pub message_type: Option<String>,
    pub message_id: Option<Uuid>,
    pub note: Option<String>,
    pub at: DateTime<Utc>,
}

struct OrderRow {
    id: Uuid,
    customer_id: String,
    payment_method: String,
    status: String,
    total_cents: Option<i64>,
    payment_id: Option<Uuid>,
    cancel_reason: Option<String>,
    trace_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

pub async fn fetch_order(pool: &PgPool, id: Uuid) -> Result<Option<OrderView>, sqlx::Error> {
    let Some(row) = sqlx::query_as!(
        OrderRow,
        "SELECT id, customer_id, payment_method, status, total_cents, payment_id, cancel_reason, trace_id,
                created_at, updated_at
         FROM orders WHERE id = $1",
        id,
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let lines = sqlx::query_as!(
        LineView,
        "SELECT sku, quantity, unit_price_cents FROM order_lines WHERE order_id = $1 ORDER BY line_no",
        id,
    )
    .fetch_all(pool)
    .await?;
    let history = sqlx::query_as!(
        HistoryEntry,
        "SELECT from_status, to_status, message_type, message_id, note, at FROM order_history
         WHERE order_id = $1 ORDER BY id",
        id,
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(OrderView {
        id: row.id,
        customer_id: row.customer_id,
        payment_method: row.payment_method,
        status: row.status,
        total_cents: row.total_cents,
        payment_id: row.payment_id,
        cancel_reason: row.cancel_reason,
        trace_id: row.trace_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
        lines,
        history,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderSummary {
    pub id: Uuid,
    #[schema(value_type = OrderStatus)]
    pub status: String,
    pub total_cents: Option<i64>,
    pub created_at: DateTime<Utc>,
}

pub async fn orders_of_customer(
    pool: &PgPool,
    customer_id: &str,
    limit: i64,
) -> Result<Vec<OrderSummary>, sqlx::Error> {
    sqlx::query_as!(
        OrderSummary,
        "SELECT id, status, total_cents, created_at FROM orders WHERE customer_id = $1
         ORDER BY created_at DESC LIMIT $2",
        customer_id,
        limit,
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are written with `as_str` and read back by sqlx's derived names.
    #[test]
    fn statuses_are_stored_as_the_text_sqlx_reads() {
        use sqlx::Encode;
        for value in [
            OrderStatus::Placed,
            OrderStatus::StockReserved,
            OrderStatus::Paid,
            OrderStatus::Completed,
            OrderStatus::Cancelled,
        ] {
            let mut buf = sqlx::postgres::PgArgumentBuffer::default();
            let _ = Encode::<sqlx::Postgres>::encode_by_ref(&value, &mut buf).unwrap();
            assert_eq!(buf.as_slice(), value.as_str().as_bytes());
        }
    }
}

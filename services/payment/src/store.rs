//! SQL of the payment service's tables. Functions that change a payment take
//! the consumer's transaction so the change, the inbox row and the reply in
//! the outbox commit together.

use chrono::{DateTime, Utc};
use contracts::catalogue::Cents;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    Succeeded,
    Declined,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Declined => "declined",
        }
    }
}

impl TryFrom<String> for PaymentStatus {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "succeeded" => Ok(PaymentStatus::Succeeded),
            "declined" => Ok(PaymentStatus::Declined),
            _ => Err(format!("unknown payment status `{s}`")),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: Cents,
    #[schema(value_type = contracts::catalogue::PaymentMethod)]
    pub payment_method: String,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub decline_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

const PAYMENT_COLUMNS: &str =
    "id, order_id, customer_id, amount_cents, payment_method, status, decline_reason, created_at";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Refund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub amount_cents: Cents,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

const REFUND_COLUMNS: &str = "id, payment_id, order_id, amount_cents, reason, created_at";

/// The customer's own limit, if one is set.
pub async fn customer_limit(conn: &mut PgConnection, customer_id: &str) -> Result<Option<Cents>, sqlx::Error> {
    let limit: Option<(Cents,)> = sqlx::query_as("SELECT limit_cents FROM customer_limits WHERE customer_id = $1")
        .bind(customer_id)
        .fetch_optional(conn)
        .await?;
    Ok(limit.map(|(l,)| l))
}

#[derive(Debug, Clone)]
pub struct NewPayment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: Cents,
    pub payment_method: String,
    pub status: PaymentStatus,
    pub decline_reason: Option<String>,
    pub request_message_id: Uuid,
}

/// Records the outcome of the order's charge, unless the order already has
/// one: then nothing is written and `None` comes back. A concurrent insert
/// for the same order waits for the other transaction and then yields.
pub async fn insert_payment(conn: &mut PgConnection, payment: &NewPayment) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO payments (id, order_id, customer_id, amount_cents, payment_method, status, decline_reason,
                               request_message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id) DO NOTHING
         RETURNING {PAYMENT_COLUMNS}"
    ))
    .bind(payment.id)
    .bind(payment.order_id)
    .bind(&payment.customer_id)
    .bind(payment.amount_cents)
    .bind(&payment.payment_method)
    .bind(payment.status.as_str())
    .bind(&payment.decline_reason)
    .bind(payment.request_message_id)
    .fetch_optional(conn)
    .await
}

/// The order's payment, locked until the transaction ends so that refunds
/// of one payment happen one at a time.
pub async fn lock_payment_of_order(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 FOR UPDATE"))
        .bind(order_id)
        .fetch_optional(conn)
        .await
}

#[derive(Debug, Clone)]
pub struct NewRefund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub amount_cents: Cents,
    pub reason: String,
    pub request_message_id: Uuid,
}

/// Records the refund of a payment, unless it was already refunded: then
/// the existing refund comes back.
pub async fn refund_once(conn: &mut PgConnection, refund: &NewRefund) -> Result<Refund, sqlx::Error> {
    let inserted: Option<Refund> = sqlx::query_as(&format!(
        "INSERT INTO refunds (id, payment_id, order_id, amount_cents, reason, request_message_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (payment_id) DO NOTHING
         RETURNING {REFUND_COLUMNS}"
    ))
    .bind(refund.id)
    .bind(refund.payment_id)
    .bind(refund.order_id)
    .bind(refund.amount_cents)
    .bind(&refund.reason)
    .bind(refund.request_message_id)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(refund) => Ok(refund),
        None => {
            sqlx::query_as(&format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1"))
                .bind(refund.payment_id)
                .fetch_one(conn)
                .await
        }
    }
}

pub async fn payments_of_order(pool: &PgPool, order_id: Uuid) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1 ORDER BY created_at"))
        .bind(order_id)
        .fetch_all(pool)
        .await
}

pub async fn refunds_of_order(pool: &PgPool, order_id: Uuid) -> Result<Vec<Refund>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE order_id = $1 ORDER BY created_at"))
        .bind(order_id)
        .fetch_all(pool)
        .await
}

pub async fn payment(pool: &PgPool, id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1")).bind(id).fetch_optional(pool).await
}

pub async fn refund_of_payment(pool: &PgPool, payment_id: Uuid) -> Result<Option<Refund>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1"))
        .bind(payment_id)
        .fetch_optional(pool)
        .await
}

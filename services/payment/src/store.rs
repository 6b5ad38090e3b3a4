//! SQL of the payment service's tables. Functions that change a payment take
//! the consumer's transaction so the change, the inbox row and the reply in
//! the outbox commit together.

use chrono::{DateTime, Utc};
use contracts::catalogue::Cents;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

// Stored as the text `as_str` gives (the `payments.status` CHECK
// constraint); sqlx decodes it by the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: Cents,
    #[schema(value_type = contracts::catalogue::PaymentMethod)]
    pub payment_method: String,
    pub status: PaymentStatus,
    pub decline_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Refund {
    pub id: Uuid,
    pub payment_id: Uuid,
    pub order_id: Uuid,
    pub amount_cents: Cents,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// The customer's own limit, if one is set.
pub async fn customer_limit(conn: &mut PgConnection, customer_id: &str) -> Result<Option<Cents>, sqlx::Error> {
    sqlx::query_scalar!("SELECT limit_cents FROM customer_limits WHERE customer_id = $1", customer_id)
        .fetch_optional(conn)
        .await
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
    sqlx::query_as!(
        Payment,
        r#"INSERT INTO payments (id, order_id, customer_id, amount_cents, payment_method, status, decline_reason,
                                request_message_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (order_id) DO NOTHING
           RETURNING id, order_id, customer_id, amount_cents, payment_method, status AS "status: PaymentStatus",
                     decline_reason, created_at"#,
        payment.id,
        payment.order_id,
        payment.customer_id,
        payment.amount_cents,
        payment.payment_method,
        payment.status.as_str(),
        payment.decline_reason,
        payment.request_message_id,
    )
    .fetch_optional(conn)
    .await
}

/// The order's payment, locked until the transaction ends so that refunds
/// of one payment happen one at a time.
pub async fn lock_payment_of_order(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as!(
        Payment,
        r#"SELECT id, order_id, customer_id, amount_cents, payment_method, status AS "status: PaymentStatus",
                  decline_reason, created_at
           FROM payments WHERE order_id = $1 FOR UPDATE"#,
        order_id,
    )
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
    let inserted = sqlx::query_as!(
        Refund,
        "INSERT INTO refunds (id, payment_id, order_id, amount_cents, reason, request_message_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (payment_id) DO NOTHING
         RETURNING id, payment_id, order_id, amount_cents, reason, created_at",
        refund.id,
        refund.payment_id,
        refund.order_id,
        refund.amount_cents,
        refund.reason,
        refund.request_message_id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(refund) => Ok(refund),
        None => {
            sqlx::query_as!(
                Refund,
                "SELECT id, payment_id, order_id, amount_cents, reason, created_at FROM refunds WHERE payment_id = $1",
                refund.payment_id,
            )
            .fetch_one(conn)
            .await
        }
    }
}

pub async fn payments_of_order(pool: &PgPool, order_id: Uuid) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as!(
        Payment,
        r#"SELECT id, order_id, customer_id, amount_cents, payment_method, status AS "status: PaymentStatus",
                  decline_reason, created_at
           FROM payments WHERE order_id = $1 ORDER BY created_at"#,
        order_id,
    )
    .fetch_all(pool)
    .await
}

pub async fn refunds_of_order(pool: &PgPool, order_id: Uuid) -> Result<Vec<Refund>, sqlx::Error> {
    sqlx::query_as!(
        Refund,
        "SELECT id, payment_id, order_id, amount_cents, reason, created_at FROM refunds
         WHERE order_id = $1 ORDER BY created_at",
        order_id,
    )
    .fetch_all(pool)
    .await
}

pub async fn payment(pool: &PgPool, id: Uuid) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query_as!(
        Payment,
        r#"SELECT id, order_id, customer_id, amount_cents, payment_method, status AS "status: PaymentStatus",
                  decline_reason, created_at
           FROM payments WHERE id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await
}

pub async fn refund_of_payment(pool: &PgPool, payment_id: Uuid) -> Result<Option<Refund>, sqlx::Error> {
    sqlx::query_as!(
        Refund,
        "SELECT id, payment_id, order_id, amount_cents, reason, created_at FROM refunds WHERE payment_id = $1",
        payment_id,
    )
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are written with `as_str` and read back by sqlx's derived names.
    #[test]
    fn statuses_are_stored_as_the_text_sqlx_reads() {
        use sqlx::Encode;
        for value in [PaymentStatus::Succeeded, PaymentStatus::Declined] {
            let mut buf = sqlx::postgres::PgArgumentBuffer::default();
            let _ = Encode::<sqlx::Postgres>::encode_by_ref(&value, &mut buf).unwrap();
            assert_eq!(buf.as_slice(), value.as_str().as_bytes());
        }
    }
}

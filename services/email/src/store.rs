//! SQL of the email service's table: the record of every e-mail (written
//! in the consumer's transaction) and its SMTP delivery state (written by
//! the sender afterwards).

use crate::compose::{ComposedEmail, EmailKind};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SentEmail {
    pub id: Uuid,
    pub order_id: Uuid,
    pub kind: EmailKind,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub message_id_header: String,
    pub created_at: DateTime<Utc>,
    pub smtp_delivered_at: Option<DateTime<Utc>>,
    pub smtp_rejected_at: Option<DateTime<Utc>>,
    pub smtp_attempts: i32,
    pub smtp_last_error: Option<String>,
}

/// Records the e-mail, unless the order already has one of its kind: then
/// nothing is written and `false` comes back.
pub async fn record(
    conn: &mut PgConnection,
    email: &ComposedEmail,
    cause_message_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO sent_emails (id, order_id, kind, recipient, subject, body, message_id_header, cause_message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (order_id, kind) DO NOTHING",
        Uuid::now_v7(),
        email.order_id,
        email.kind.as_str(),
        email.recipient,
        email.subject,
        email.body,
        email.message_id_header,
        cause_message_id,
    )
    .execute(conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn emails_of_order(pool: &PgPool, order_id: Uuid) -> Result<Vec<SentEmail>, sqlx::Error> {
    sqlx::query_as!(
        SentEmail,
        r#"SELECT id, order_id, kind AS "kind: EmailKind", recipient, subject, body, message_id_header, created_at,
                  smtp_delivered_at, smtp_rejected_at, smtp_attempts, smtp_last_error
           FROM sent_emails WHERE order_id = $1 ORDER BY created_at, id"#,
        order_id,
    )
    .fetch_all(pool)
    .await
}

pub async fn email(pool: &PgPool, id: Uuid) -> Result<Option<SentEmail>, sqlx::Error> {
    sqlx::query_as!(
        SentEmail,
        r#"SELECT id, order_id, kind AS "kind: EmailKind", recipient, subject, body, message_id_header, created_at,
                  smtp_delivered_at, smtp_rejected_at, smtp_attempts, smtp_last_error
           FROM sent_emails WHERE id = $1"#,
        id,
    )
    .fetch_optional(pool)
    .await
}

/// An e-mail the sender has claimed for one delivery attempt.
#[derive(Debug, Clone)]
pub struct ClaimedEmail {
    pub id: Uuid,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub message_id_header: String,
    /// Attempts so far, this one included.
    pub smtp_attempts: i32,
}

/// Claims up to `limit` undelivered e-mails that are due, for `lease`: no
/// other sender takes them meanwhile, and if this one dies they fall due
/// again when the lease runs out.
pub async fn claim_due(pool: &PgPool, limit: i64, lease: Duration) -> Result<Vec<ClaimedEmail>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedEmail,
        "UPDATE sent_emails
         SET smtp_next_attempt_at = now() + make_interval(secs => $2), smtp_attempts = smtp_attempts + 1
         WHERE id IN (
             SELECT id FROM sent_emails
             WHERE smtp_delivered_at IS NULL AND smtp_rejected_at IS NULL AND smtp_next_attempt_at <= now()
             ORDER BY smtp_next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING id, recipient, subject, body, message_id_header, smtp_attempts",
        limit,
        lease.as_secs_f64(),
    )
    .fetch_all(pool)
    .await
}

pub async fn mark_delivered(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE sent_emails SET smtp_delivered_at = now(), smtp_last_error = NULL WHERE id = $1", id)
        .execute(pool)
        .await?;
    Ok(())
}

/// A failure that may pass: due again after `retry_in`.
pub async fn mark_failed(pool: &PgPool, id: Uuid, error: &str, retry_in: Duration) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE sent_emails SET smtp_last_error = $2, smtp_next_attempt_at = now() + make_interval(secs => $3)
         WHERE id = $1",
        id,
        error,
        retry_in.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A refusal for good (bad address, permanent SMTP error): never retried.
pub async fn mark_rejected(pool: &PgPool, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE sent_emails SET smtp_rejected_at = now(), smtp_last_error = $2 WHERE id = $1", id, error)
        .execute(pool)
        .await?;
    Ok(())
}

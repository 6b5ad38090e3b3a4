//! SQL of the shipping service's table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub payment_id: Uuid,
    pub carrier: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewShipment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: String,
    pub payment_id: Uuid,
    pub carrier: String,
    pub cause_message_id: Uuid,
}

/// Schedules the order's shipment, unless it already has one: then nothing
/// is written and `None` comes back.
pub async fn insert_shipment(conn: &mut PgConnection, shipment: &NewShipment) -> Result<Option<Shipment>, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        "INSERT INTO shipments (id, order_id, customer_id, payment_id, carrier, cause_message_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (order_id) DO NOTHING
         RETURNING id, order_id, customer_id, payment_id, carrier, status, created_at",
        shipment.id,
        shipment.order_id,
        shipment.customer_id,
        shipment.payment_id,
        shipment.carrier,
        shipment.cause_message_id,
    )
    .fetch_optional(conn)
    .await
}

pub async fn shipments_of_order(pool: &PgPool, order_id: Uuid) -> Result<Vec<Shipment>, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        "SELECT id, order_id, customer_id, payment_id, carrier, status, created_at FROM shipments
         WHERE order_id = $1 ORDER BY created_at",
        order_id,
    )
    .fetch_all(pool)
    .await
}

pub async fn shipment(pool: &PgPool, id: Uuid) -> Result<Option<Shipment>, sqlx::Error> {
    sqlx::query_as!(
        Shipment,
        "SELECT id, order_id, customer_id, payment_id, carrier, status, created_at FROM shipments WHERE id = $1",
        id,
    )
    .fetch_optional(pool)
    .await
}

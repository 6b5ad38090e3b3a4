//! SQL of the stock service's tables.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub price_cents: i64,
    pub on_hand: i32,
    /// Quantity held by reservations of orders still going.
    pub reserved: i64,
}

pub async fn products(pool: &PgPool) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as!(
        Product,
        r#"SELECT p.sku, p.name, p.price_cents, p.on_hand,
                  COALESCE((SELECT sum(r.quantity) FROM reservations r
                            WHERE r.sku = p.sku AND r.status = 'reserved'), 0)::int8 AS "reserved!"
           FROM products p ORDER BY p.sku"#,
    )
    .fetch_all(pool)
    .await
}

pub async fn product(pool: &PgPool, sku: &str) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as!(
        Product,
        r#"SELECT p.sku, p.name, p.price_cents, p.on_hand,
                  COALESCE((SELECT sum(r.quantity) FROM reservations r
                            WHERE r.sku = p.sku AND r.status = 'reserved'), 0)::int8 AS "reserved!"
           FROM products p WHERE p.sku = $1"#,
        sku,
    )
    .fetch_optional(pool)
    .await
}

#[derive(Debug, Clone)]
pub struct LockedProduct {
    pub sku: String,
    pub price_cents: i64,
    pub on_hand: i32,
}

/// Locks the products of `skus`, in SKU order so that two reservations
/// sharing products never deadlock.
/// Serialises the commands of one order (until the transaction ends), taken
/// before any product lock: a release reads the order's reservations before
/// it knows which products to lock, and a reservation of the same order must
/// not slip in between.
pub async fn lock_order(conn: &mut PgConnection, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 0))", order_id)
        .fetch_one(conn)
        .await?;
    Ok(())
}

pub async fn lock_products(conn: &mut PgConnection, skus: &[String]) -> Result<Vec<LockedProduct>, sqlx::Error> {
    sqlx::query_as!(
        LockedProduct,
        "SELECT sku, price_cents, on_hand FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE",
        skus,
    )
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reservation {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i32,
    #[schema(value_type = ReservationStatus)]
    pub status: String,
}

/// The `status` of a reservation line (a CHECK constraint of the table).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Documentation only: the column is read as text.
pub enum ReservationStatus {
    Reserved,
    Released,
}

pub async fn reservations_of(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<Reservation>, sqlx::Error> {
    sqlx::query_as!(
        Reservation,
        "SELECT order_id, sku, quantity, status FROM reservations WHERE order_id = $1 ORDER BY sku",
        order_id,
    )
    .fetch_all(conn)
    .await
}

pub async fn reserve(conn: &mut PgConnection, order_id: Uuid, sku: &str, quantity: i32) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE products SET on_hand = on_hand - $2 WHERE sku = $1", sku, quantity)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "INSERT INTO reservations (order_id, sku, quantity, status) VALUES ($1, $2, $3, 'reserved')",
        order_id,
        sku,
        quantity,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Returns the order's reserved quantities to stock; returns how many lines
/// were released (0 when nothing was reserved or all was already released).
pub async fn release(conn: &mut PgConnection, order_id: Uuid) -> Result<u64, sqlx::Error> {
    let released: Vec<(String, i32)> = sqlx::query!(
        "UPDATE reservations SET status = 'released', released_at = now()
         WHERE order_id = $1 AND status = 'reserved' RETURNING sku, quantity",
        order_id,
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| (row.sku, row.quantity))
    .collect();
    let mut skus: Vec<&(String, i32)> = released.iter().collect();
    skus.sort();
    for (sku, quantity) in &skus {
        sqlx::query!("UPDATE products SET on_hand = on_hand + $2 WHERE sku = $1", sku, quantity)
            .execute(&mut *conn)
            .await?;
    }
    Ok(released.len() as u64)
}

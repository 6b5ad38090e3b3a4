//! Reserving and releasing an order's stock: the domain logic behind both
//! the `ReserveStock`/`ReleaseStock` commands and the synchronous twin's
//! calls, so the two paths have the same effects.

use crate::store;
use contracts::catalogue::{Cents, OrderLine, PricedLine};
use messaging::HandlerError;
use serde::Serialize;
use sqlx::PgConnection;
use std::collections::HashMap;
use uuid::Uuid;

/// What a reservation request comes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
// Not `Reservation`: the stored line (store::Reservation) has that name in the document.
#[schema(as = ReservationOutcome)]
pub enum Reservation {
    Reserved { lines: Vec<PricedLine>, total_cents: Cents },
    Rejected { reason: String, unavailable: Vec<String> },
}

/// Reserves every line or none. An order already reserved (the request
/// again, under a new message id or over HTTP) gets the same answer again.
pub async fn reserve(
    conn: &mut PgConnection,
    order_id: Uuid,
    lines: &[OrderLine],
) -> Result<Reservation, HandlerError> {
    let mut skus: Vec<String> = lines.iter().map(|l| l.sku.clone()).collect();
    skus.sort();
    skus.dedup();
    if lines.is_empty() || skus.len() != lines.len() || lines.iter().any(|l| l.quantity <= 0) {
        return Err(HandlerError::Poison(
            "a reservation needs lines with distinct SKUs and positive quantities".into(),
        ));
    }
    store::lock_order(conn, order_id).await?;
    let products: HashMap<String, store::LockedProduct> =
        store::lock_products(conn, &skus).await?.into_iter().map(|p| (p.sku.clone(), p)).collect();
    // Read under the product locks: a second request for the same order
    // (same SKUs) waits for the first to commit and then sees its rows.
    let existing = store::reservations_of(conn, order_id).await?;
    if !existing.is_empty() {
        tracing::info!(%order_id, "already handled for this order; answering the same");
        return Ok(if existing.iter().all(|r| r.status == "reserved") {
            reserved(lines, &products)
        } else {
            Reservation::Rejected { reason: "reservation already released".into(), unavailable: vec![] }
        });
    }
    let unavailable: Vec<String> = lines
        .iter()
        .filter(|l| products.get(&l.sku).is_none_or(|p| p.on_hand < l.quantity))
        .map(|l| l.sku.clone())
        .collect();
    if !unavailable.is_empty() {
        let unknown = unavailable.iter().any(|s| !products.contains_key(s));
        let reason = if unknown { "unknown SKU" } else { "insufficient stock" };
        metrics::counter!("stock_reservations_total", "outcome" => "rejected").increment(1);
        return Ok(Reservation::Rejected { reason: reason.into(), unavailable });
    }
    for line in lines {
        store::reserve(conn, order_id, &line.sku, line.quantity).await?;
    }
    metrics::counter!("stock_reservations_total", "outcome" => "reserved").increment(1);
    Ok(reserved(lines, &products))
}

fn reserved(lines: &[OrderLine], products: &HashMap<String, store::LockedProduct>) -> Reservation {
    let lines: Vec<PricedLine> = lines
        .iter()
        .map(|l| PricedLine {
            sku: l.sku.clone(),
            quantity: l.quantity,
            unit_price_cents: products.get(&l.sku).map(|p| p.price_cents).unwrap_or(0),
        })
        .collect();
    let total_cents = lines.iter().map(|l| l.unit_price_cents * i64::from(l.quantity)).sum();
    Reservation::Reserved { lines, total_cents }
}

/// Returns the order's reservation to stock; idempotent. Returns how many
/// lines were released now.
pub async fn release(conn: &mut PgConnection, order_id: Uuid) -> Result<u64, HandlerError> {
    // Lock in the same order as reservations do (the order, then its
    // products by SKU).
    store::lock_order(conn, order_id).await?;
    let reserved = store::reservations_of(conn, order_id).await?;
    let skus: Vec<String> = reserved.iter().map(|r| r.sku.clone()).collect();
    store::lock_products(conn, &skus).await?;
    Ok(store::release(conn, order_id).await?)
}

//! The synchronous twin's calls to stock (`POST /orders/sync` on the order
//! service makes them): reserve and release over HTTP, with the same
//! effects as the commands, idempotent by order id.

use crate::reservations::{self, Reservation};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use contracts::catalogue::OrderLine;
use serde::Deserialize;
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use uuid::Uuid;

pub fn router(state: SyncState) -> Router {
    Router::new().route("/sync/reservations", post(reserve)).route("/sync/releases", post(release)).with_state(state)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    order_id: Uuid,
    lines: Vec<OrderLine>,
}

/// `POST /sync/reservations`: 200 with `reserved` (priced lines) or `rejected`.
async fn reserve(
    State(state): State<SyncState>,
    ApiJson(request): ApiJson<ReserveRequest>,
) -> Result<Json<Reservation>, ApiError> {
    state.process().await;
    let mut tx = state.pool.begin().await?;
    let reservation = reservations::reserve(&mut tx, request.order_id, &request.lines).await?;
    tx.commit().await?;
    Ok(Json(reservation))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    order_id: Uuid,
}

/// `POST /sync/releases`: the order's stock back; idempotent.
async fn release(
    State(state): State<SyncState>,
    ApiJson(request): ApiJson<ReleaseRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.process().await;
    let mut tx = state.pool.begin().await?;
    let released = reservations::release(&mut tx, request.order_id).await?;
    tx.commit().await?;
    Ok(Json(serde_json::json!({ "order_id": request.order_id, "released_lines": released })))
}

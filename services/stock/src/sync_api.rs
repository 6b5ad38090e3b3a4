//! The synchronous twin's calls to stock (`POST /orders/sync` on the order
//! service makes them): reserve and release over HTTP, with the same
//! effects as the commands, idempotent by order id.

use crate::reservations::{self, Reservation};
use axum::extract::State;
use axum::{Json, Router};
use contracts::catalogue::OrderLine;
use serde::Deserialize;
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<SyncState> {
    OpenApiRouter::new().routes(routes!(reserve)).routes(routes!(release))
}

pub fn router(state: SyncState) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(state)
}

/// The `ReserveStock` command's fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReserveRequest {
    order_id: Uuid,
    /// At least one line, each SKU once.
    #[schema(min_items = 1)]
    lines: Vec<OrderLine>,
}

/// The lines' shape, as `POST /orders` checks it: a 422 naming the field
/// rather than the command path's poison message.
fn check_lines(lines: &[OrderLine]) -> Result<(), ApiError> {
    if lines.is_empty() {
        return Err(ApiError::validation("lines", "at least one line"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines.iter().enumerate() {
        if line.quantity < 1 {
            return Err(ApiError::validation(format!("lines[{i}].quantity"), "must be at least 1"));
        }
        if !seen.insert(line.sku.as_str()) {
            return Err(ApiError::validation(format!("lines[{i}].sku"), "the same SKU appears on two lines"));
        }
    }
    Ok(())
}

#[derive(serde::Serialize, ToSchema)]
struct Released {
    order_id: Uuid,
    /// Lines released by this call (0 when already released or never reserved).
    released_lines: u64,
}

/// `POST /sync/reservations`: 200 with `reserved` (priced lines) or `rejected`.
#[utoipa::path(
    post,
    path = "/sync/reservations",
    operation_id = "sync_reserve_stock",
    tag = "stock",
    request_body = ReserveRequest,
    responses(
        (status = 200, description = "`reserved` with the priced lines, or `rejected` with the SKUs short.", body = Reservation),
    )
)]
async fn reserve(
    State(state): State<SyncState>,
    ApiJson(request): ApiJson<ReserveRequest>,
) -> Result<Json<Reservation>, ApiError> {
    check_lines(&request.lines)?;
    state.process().await;
    let mut tx = state.pool.begin().await?;
    let reservation = reservations::reserve(&mut tx, request.order_id, &request.lines).await?;
    tx.commit().await?;
    Ok(Json(reservation))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReleaseRequest {
    order_id: Uuid,
}

/// `POST /sync/releases`: the order's stock back; idempotent.
#[utoipa::path(post, path = "/sync/releases", operation_id = "sync_release_stock", tag = "stock", request_body = ReleaseRequest, responses((status = 200, body = Released)))]
async fn release(
    State(state): State<SyncState>,
    ApiJson(request): ApiJson<ReleaseRequest>,
) -> Result<Json<Released>, ApiError> {
    state.process().await;
    let mut tx = state.pool.begin().await?;
    let released = reservations::release(&mut tx, request.order_id).await?;
    tx.commit().await?;
    Ok(Json(Released { order_id: request.order_id, released_lines: released }))
}

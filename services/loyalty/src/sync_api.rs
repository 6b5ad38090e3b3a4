//! The synchronous twin's call to loyalty (`POST /orders/sync` on the order
//! service makes it): credit the order's points over HTTP, as `OrderPaid`
//! does. The ledger has no business key (the inbox protects the events),
//! so this call is made idempotent by order id: an order that already has
//! ledger entries is not credited again.

use crate::events::{self, points_for};
use crate::store;
use axum::extract::State;
use axum::{Json, Router};
use contracts::catalogue::OrderPaid;
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<SyncState> {
    OpenApiRouter::new().routes(routes!(credit))
}

pub fn router(state: SyncState) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(state)
}

#[derive(serde::Serialize, ToSchema)]
struct Credited {
    order_id: Uuid,
    /// The order's points (one per whole currency unit).
    points: i64,
    /// False when the order was already credited (the call repeated).
    credited_now: bool,
}

/// `POST /sync/credits` (the `OrderPaid` fields): 200 with the points the
/// order earned (credited now, or before).
#[utoipa::path(post, path = "/sync/credits", operation_id = "sync_credit_points", tag = "loyalty", request_body = OrderPaid, responses((status = 200, body = Credited)))]
async fn credit(State(state): State<SyncState>, ApiJson(paid): ApiJson<OrderPaid>) -> Result<Json<Credited>, ApiError> {
    if paid.amount_cents < 0 {
        return Err(ApiError::validation("amount_cents", "must not be negative"));
    }
    state.process().await;
    let points = points_for(paid.amount_cents);
    let mut tx = state.pool.begin().await?;
    // Under the account lock: two calls for one order must not both credit.
    store::lock_account(&mut tx, &paid.customer_id).await?;
    let credited_now = store::net_points_of_order(&mut tx, paid.order_id).await?.is_none();
    if credited_now {
        events::credit(&mut tx, &paid, Uuid::now_v7()).await?;
    }
    tx.commit().await?;
    Ok(Json(Credited { order_id: paid.order_id, points, credited_now }))
}

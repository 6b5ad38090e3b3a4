//! The synchronous twin's call to shipping (`POST /orders/sync` on the
//! order service makes it): schedule the order's shipment over HTTP, with
//! the same row as `OrderPaid` makes, once per order. Nothing is published:
//! the caller waits for the answer instead of a `ShipmentScheduled`.

use crate::store::{self, NewShipment};
use axum::extract::State;
use axum::{Json, Router};
use serde::Deserialize;
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(Clone)]
pub struct ShippingSync {
    sync: SyncState,
    carrier: String,
}

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<ShippingSync> {
    OpenApiRouter::new().routes(routes!(schedule))
}

pub fn router(sync: SyncState, carrier: String) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(ShippingSync { sync, carrier })
}

/// The fields of the paid order to ship.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShipRequest {
    order_id: Uuid,
    customer_id: String,
    payment_id: Uuid,
}

/// `POST /sync/shipments`: 200 with the order's shipment (the one it
/// already has, when asked again).
#[utoipa::path(post, path = "/sync/shipments", operation_id = "sync_schedule_shipment", tag = "shipping", request_body = ShipRequest, responses((status = 200, body = store::Shipment)))]
async fn schedule(
    State(state): State<ShippingSync>,
    ApiJson(request): ApiJson<ShipRequest>,
) -> Result<Json<store::Shipment>, ApiError> {
    state.sync.process().await;
    let new_shipment = NewShipment {
        id: Uuid::now_v7(),
        order_id: request.order_id,
        customer_id: request.customer_id,
        payment_id: request.payment_id,
        carrier: state.carrier.clone(),
        cause_message_id: Uuid::now_v7(),
    };
    let mut tx = state.sync.pool.begin().await?;
    let inserted = store::insert_shipment(&mut tx, &new_shipment).await?;
    tx.commit().await?;
    let shipment = match inserted {
        Some(shipment) => {
            metrics::counter!("shipments_scheduled_total").increment(1);
            shipment
        }
        None => store::shipments_of_order(&state.sync.pool, request.order_id)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal(std::io::Error::other("a shipment conflicted but cannot be read")))?,
    };
    Ok(Json(shipment))
}

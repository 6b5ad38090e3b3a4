//! Queries: an order's shipments, one shipment.

use crate::store;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use service_kit::openapi::NotFound;
use service_kit::{ApiError, OrderIdQuery, PathParam, ValidQuery};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(of_order)).routes(routes!(one))
}

pub fn router(pool: PgPool) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(pool)
}

#[derive(serde::Serialize, ToSchema)]
struct OrderShipments {
    order_id: uuid::Uuid,
    /// Empty when shipping never heard of the order.
    shipments: Vec<store::Shipment>,
}

/// `GET /shipments?order_id=`: the order's shipment, in a list (empty until
/// the order is paid).
#[utoipa::path(get, path = "/shipments", operation_id = "shipments_of_order", tag = "shipping", params(OrderIdQuery), responses((status = 200, body = OrderShipments)))]
async fn of_order(
    State(pool): State<PgPool>,
    ValidQuery(OrderIdQuery { order_id }): ValidQuery<OrderIdQuery>,
) -> Result<Response, ApiError> {
    let shipments = store::shipments_of_order(&pool, order_id).await?;
    Ok(Json(OrderShipments { order_id, shipments }).into_response())
}

/// `GET /shipments/{id}`
#[utoipa::path(
    get,
    path = "/shipments/{id}",
    operation_id = "get_shipment",
    tag = "shipping",
    params(("id" = uuid::Uuid, Path, description = "The shipment id.")),
    responses((status = 200, body = store::Shipment), (status = 404, response = NotFound))
)]
async fn one(State(pool): State<PgPool>, PathParam(id): PathParam<uuid::Uuid>) -> Result<Response, ApiError> {
    match store::shipment(&pool, id).await? {
        Some(shipment) => Ok(Json(shipment).into_response()),
        None => Err(ApiError::NotFound(format!("no shipment {id}"))),
    }
}

//! Queries: the catalogue with quantities, one SKU, an order's reservations.

use crate::store;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use service_kit::openapi::NotFound;
use service_kit::{ApiError, Identifier, OrderIdQuery, PathParam, ValidQuery};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(one)).routes(routes!(reservations))
}

pub fn router(pool: PgPool) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(pool)
}

#[derive(serde::Serialize, ToSchema)]
struct Products {
    products: Vec<store::Product>,
}

#[derive(serde::Serialize, ToSchema)]
struct OrderReservations {
    order_id: uuid::Uuid,
    /// One per line; empty when stock never heard of the order.
    reservations: Vec<store::Reservation>,
}

/// `GET /stock`: every product, its price and its stock.
#[utoipa::path(get, path = "/stock", operation_id = "list_stock", tag = "stock", responses((status = 200, body = Products)))]
async fn list(State(pool): State<PgPool>) -> Result<Response, ApiError> {
    let products = store::products(&pool).await?;
    Ok(Json(Products { products }).into_response())
}

/// `GET /stock/{sku}`.
#[utoipa::path(
    get,
    path = "/stock/{sku}",
    operation_id = "get_stock_item",
    tag = "stock",
    params(("sku" = String, Path, min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")),
    responses((status = 200, body = store::Product), (status = 404, response = NotFound))
)]
async fn one(State(pool): State<PgPool>, PathParam(sku): PathParam<Identifier>) -> Result<Response, ApiError> {
    match store::product(&pool, sku.as_str()).await? {
        Some(product) => Ok(Json(product).into_response()),
        None => Err(ApiError::NotFound(format!("no SKU `{sku}`"))),
    }
}

/// `GET /reservations?order_id=`: the order's reservation lines.
#[utoipa::path(get, path = "/reservations", operation_id = "reservations_of_order", tag = "stock", params(OrderIdQuery), responses((status = 200, body = OrderReservations)))]
async fn reservations(
    State(pool): State<PgPool>,
    ValidQuery(OrderIdQuery { order_id }): ValidQuery<OrderIdQuery>,
) -> Result<Response, ApiError> {
    let mut conn = pool.acquire().await?;
    let reservations = store::reservations_of(&mut conn, order_id).await?;
    Ok(Json(OrderReservations { order_id, reservations }).into_response())
}

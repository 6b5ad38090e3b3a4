//! Queries: the catalogue with quantities, one SKU, an order's reservations.

use crate::store;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use service_kit::ApiError;
use service_kit::openapi::NotFound;
use sqlx::PgPool;
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};
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

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only: the handler reads the query itself, to answer 400 as ApiError.
struct OrderQuery {
    order_id: uuid::Uuid,
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
async fn one(State(pool): State<PgPool>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(sku) = path?;
    let sku = ApiError::parse_identifier("sku", &sku)?;
    match store::product(&pool, sku).await? {
        Some(product) => Ok(Json(product).into_response()),
        None => Err(ApiError::NotFound(format!("no SKU `{sku}`"))),
    }
}

/// `GET /reservations?order_id=`: the order's reservation lines.
#[utoipa::path(get, path = "/reservations", operation_id = "reservations_of_order", tag = "stock", params(OrderQuery), responses((status = 200, body = OrderReservations)))]
async fn reservations(
    State(pool): State<PgPool>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let order_id = ApiError::required_uuid(&params, "order_id")?;
    let mut conn = pool.acquire().await?;
    let reservations = store::reservations_of(&mut conn, order_id).await?;
    Ok(Json(OrderReservations { order_id, reservations }).into_response())
}

//! Queries: the catalogue with quantities, one SKU, an order's reservations.

use crate::store;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use service_kit::ApiError;
use sqlx::PgPool;
use std::collections::HashMap;

pub fn router(pool: PgPool) -> Router {
    Router::new()
        .route("/stock", get(list))
        .route("/stock/{sku}", get(one))
        .route("/reservations", get(reservations))
        .with_state(pool)
}

async fn list(State(pool): State<PgPool>) -> Result<Response, ApiError> {
    let products = store::products(&pool).await?;
    Ok(Json(serde_json::json!({ "products": products })).into_response())
}

async fn one(State(pool): State<PgPool>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(sku) = path?;
    let sku = ApiError::parse_identifier("sku", &sku)?;
    match store::product(&pool, sku).await? {
        Some(product) => Ok(Json(product).into_response()),
        None => Err(ApiError::NotFound(format!("no SKU `{sku}`"))),
    }
}

async fn reservations(
    State(pool): State<PgPool>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let order_id = ApiError::required_uuid(&params, "order_id")?;
    let mut conn = pool.acquire().await?;
    let reservations = store::reservations_of(&mut conn, order_id).await?;
    Ok(Json(serde_json::json!({ "order_id": order_id, "reservations": reservations })).into_response())
}

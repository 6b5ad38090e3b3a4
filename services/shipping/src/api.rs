//! Queries: an order's shipments, one shipment.

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
    Router::new().route("/shipments", get(of_order)).route("/shipments/{id}", get(one)).with_state(pool)
}

/// `GET /shipments?order_id=`: the order's shipment, in a list (empty until
/// the order is paid).
async fn of_order(
    State(pool): State<PgPool>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let order_id = ApiError::required_uuid(&params, "order_id")?;
    let shipments = store::shipments_of_order(&pool, order_id).await?;
    Ok(Json(serde_json::json!({ "order_id": order_id, "shipments": shipments })).into_response())
}

/// `GET /shipments/{id}`
async fn one(State(pool): State<PgPool>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let id = ApiError::parse_uuid("id", &id)?;
    match store::shipment(&pool, id).await? {
        Some(shipment) => Ok(Json(shipment).into_response()),
        None => Err(ApiError::NotFound(format!("no shipment {id}"))),
    }
}

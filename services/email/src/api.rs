//! Queries: an order's e-mails.

use crate::store;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use service_kit::ApiError;
use sqlx::PgPool;
use std::collections::HashMap;

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/emails", get(of_order)).with_state(pool)
}

/// `GET /emails?order_id=`: every e-mail recorded for the order, with its
/// delivery state.
async fn of_order(
    State(pool): State<PgPool>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let order_id = ApiError::required_uuid(&params, "order_id")?;
    let emails = store::emails_of_order(&pool, order_id).await?;
    Ok(Json(serde_json::json!({ "order_id": order_id, "emails": emails })).into_response())
}

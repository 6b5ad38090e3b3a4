//! Queries: an order's e-mails, one e-mail.

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
    Router::new().route("/emails", get(of_order)).route("/emails/{id}", get(one)).with_state(pool)
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

/// `GET /emails/{id}`: one recorded e-mail with its delivery state.
async fn one(State(pool): State<PgPool>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let id = ApiError::parse_uuid("id", &id)?;
    match store::email(&pool, id).await? {
        Some(email) => Ok(Json(email).into_response()),
        None => Err(ApiError::NotFound(format!("no e-mail {id}"))),
    }
}

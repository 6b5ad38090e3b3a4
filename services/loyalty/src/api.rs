//! Queries: a customer's points.

use crate::store;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use service_kit::ApiError;
use sqlx::PgPool;

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/customers/{id}/loyalty", get(loyalty)).with_state(pool)
}

/// `GET /customers/{id}/loyalty`: balance and ledger; 404 for a customer
/// who never earned points.
async fn loyalty(State(pool): State<PgPool>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(customer_id) = path?;
    // Customer ids are what the order API accepts; anything else names no one.
    let customer_id = ApiError::parse_identifier("id", &customer_id)?;
    let account = store::account(&pool, customer_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no loyalty account for customer `{customer_id}`")))?;
    let ledger = store::ledger_of(&pool, customer_id).await?;
    Ok(Json(serde_json::json!({
        "customer_id": account.customer_id,
        "balance": account.balance,
        "updated_at": account.updated_at,
        "ledger": ledger,
    }))
    .into_response())
}

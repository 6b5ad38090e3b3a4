//! Queries: a customer's points.

use crate::store;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use service_kit::ApiError;
use sqlx::PgPool;

/// Customer ids are at most this long (the order API's limit).
const MAX_CUSTOMER_ID_LEN: usize = 64;

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/customers/{id}/loyalty", get(loyalty)).with_state(pool)
}

/// `GET /customers/{id}/loyalty`: balance and ledger; 404 for a customer
/// who never earned points.
async fn loyalty(State(pool): State<PgPool>, Path(customer_id): Path<String>) -> Result<Response, ApiError> {
    if customer_id.is_empty() || customer_id.len() > MAX_CUSTOMER_ID_LEN {
        return Err(ApiError::invalid_parameter("id", format!("must be 1 to {MAX_CUSTOMER_ID_LEN} characters")));
    }
    let account = store::account(&pool, &customer_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no loyalty account for customer `{customer_id}`")))?;
    let ledger = store::ledger_of(&pool, &customer_id).await?;
    Ok(Json(serde_json::json!({
        "customer_id": account.customer_id,
        "balance": account.balance,
        "updated_at": account.updated_at,
        "ledger": ledger,
    }))
    .into_response())
}

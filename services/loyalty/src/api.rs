//! Queries: a customer's points.

use crate::store;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use service_kit::openapi::NotFound;
use service_kit::{ApiError, Identifier, PathParam};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(loyalty))
}

pub fn router(pool: PgPool) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(pool)
}

#[derive(serde::Serialize, ToSchema)]
struct LoyaltyAccount {
    customer_id: String,
    /// Points: credits less reversals.
    balance: i64,
    updated_at: chrono::DateTime<chrono::Utc>,
    /// Every credit and reversal, oldest first.
    ledger: Vec<store::LedgerEntry>,
}

/// `GET /customers/{id}/loyalty`: balance and ledger; 404 for a customer
/// who never earned points.
#[utoipa::path(
    get,
    path = "/customers/{id}/loyalty",
    operation_id = "get_loyalty_account",
    tag = "loyalty",
    params(("id" = String, Path, description = "The customer id.", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]+$")),
    responses((status = 200, body = LoyaltyAccount), (status = 404, response = NotFound))
)]
async fn loyalty(
    State(pool): State<PgPool>,
    // Customer ids are what the order API accepts; anything else names no one.
    PathParam(customer_id): PathParam<Identifier>,
) -> Result<Response, ApiError> {
    let customer_id = customer_id.as_str();
    let account = store::account(&pool, customer_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no loyalty account for customer `{customer_id}`")))?;
    let ledger = store::ledger_of(&pool, customer_id).await?;
    Ok(Json(LoyaltyAccount {
        customer_id: account.customer_id,
        balance: account.balance,
        updated_at: account.updated_at,
        ledger,
    })
    .into_response())
}

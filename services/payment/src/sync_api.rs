//! The synchronous twin's calls to payment (`POST /orders/sync` on the
//! order service makes them): charge and refund over HTTP, with the same
//! effects as the commands, idempotent by order id.

use crate::charges;
use crate::store::PaymentStatus;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use contracts::catalogue::{Cents, ProcessPayment};
use serde::Deserialize;
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use uuid::Uuid;

#[derive(Clone)]
struct PaymentSync {
    sync: SyncState,
    default_limit_cents: Cents,
}

pub fn router(sync: SyncState, default_limit_cents: Cents) -> Router {
    Router::new()
        .route("/sync/payments", post(charge))
        .route("/sync/refunds", post(refund))
        .with_state(PaymentSync { sync, default_limit_cents })
}

/// `POST /sync/payments` (the `ProcessPayment` fields): 200 with
/// `succeeded` and the payment id, or `declined` and the reason.
async fn charge(
    State(state): State<PaymentSync>,
    ApiJson(request): ApiJson<ProcessPayment>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.sync.process().await;
    let mut tx = state.sync.pool.begin().await?;
    let payment = charges::charge(&mut tx, &request, Uuid::now_v7(), state.default_limit_cents).await?;
    tx.commit().await?;
    let body = match payment.status {
        PaymentStatus::Succeeded => serde_json::json!({
            "outcome": "succeeded", "order_id": payment.order_id, "payment_id": payment.id,
            "amount_cents": payment.amount_cents,
        }),
        PaymentStatus::Declined => serde_json::json!({
            "outcome": "declined", "order_id": payment.order_id,
            "reason": payment.decline_reason.unwrap_or_else(|| "declined".to_owned()),
        }),
    };
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    order_id: Uuid,
    reason: String,
}

/// `POST /sync/refunds`: the order's charge returned in full; idempotent.
async fn refund(
    State(state): State<PaymentSync>,
    ApiJson(request): ApiJson<RefundRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.sync.process().await;
    let mut tx = state.sync.pool.begin().await?;
    let refunded = charges::refund(&mut tx, request.order_id, &request.reason, Uuid::now_v7()).await?;
    tx.commit().await?;
    Ok(Json(serde_json::to_value(refunded).unwrap_or_default()))
}

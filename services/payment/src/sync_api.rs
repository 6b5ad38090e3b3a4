//! The synchronous twin's calls to payment (`POST /orders/sync` on the
//! order service makes them): charge and refund over HTTP, with the same
//! effects as the commands, idempotent by order id.

use crate::charges;
use crate::store::PaymentStatus;
use axum::extract::State;
use axum::{Json, Router};
use contracts::catalogue::{Cents, PaymentMethod, PaymentRefunded, ProcessPayment};
use serde::{Deserialize, Serialize};
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

#[derive(Clone)]
pub struct PaymentSync {
    sync: SyncState,
    default_limit_cents: Cents,
}

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<PaymentSync> {
    OpenApiRouter::new().routes(routes!(charge)).routes(routes!(refund))
}

pub fn router(sync: SyncState, default_limit_cents: Cents) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(PaymentSync { sync, default_limit_cents })
}

#[derive(Serialize, ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum ChargeAnswer {
    Succeeded { order_id: Uuid, payment_id: Uuid, amount_cents: Cents },
    Declined { order_id: Uuid, reason: String },
}

/// `POST /sync/payments` (the `ProcessPayment` fields): 200 with
/// `succeeded` and the payment id, or `declined` and the reason.
#[utoipa::path(
    post,
    path = "/sync/payments",
    operation_id = "sync_charge",
    tag = "payment",
    request_body = ProcessPayment,
    responses((status = 200, body = ChargeAnswer))
)]
async fn charge(
    State(state): State<PaymentSync>,
    ApiJson(request): ApiJson<ProcessPayment>,
) -> Result<Json<ChargeAnswer>, ApiError> {
    if PaymentMethod::parse(&request.payment_method).is_none() {
        return Err(ApiError::validation(
            "payment_method",
            format!("unknown payment method `{}`", request.payment_method),
        ));
    }
    if request.amount_cents < 0 {
        return Err(ApiError::validation("amount_cents", "must not be negative"));
    }
    state.sync.process().await;
    let mut tx = state.sync.pool.begin().await?;
    let payment = charges::charge(&mut tx, &request, Uuid::now_v7(), state.default_limit_cents).await?;
    tx.commit().await?;
    let answer = match payment.status {
        PaymentStatus::Succeeded => ChargeAnswer::Succeeded {
            order_id: payment.order_id,
            payment_id: payment.id,
            amount_cents: payment.amount_cents,
        },
        PaymentStatus::Declined => ChargeAnswer::Declined {
            order_id: payment.order_id,
            reason: payment.decline_reason.unwrap_or_else(|| "declined".to_owned()),
        },
    };
    Ok(Json(answer))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    order_id: Uuid,
    reason: String,
}

/// `POST /sync/refunds`: the order's charge returned in full; idempotent.
#[utoipa::path(post, path = "/sync/refunds", operation_id = "sync_refund", tag = "payment", request_body = RefundRequest, responses((status = 200, body = PaymentRefunded)))]
async fn refund(
    State(state): State<PaymentSync>,
    ApiJson(request): ApiJson<RefundRequest>,
) -> Result<Json<PaymentRefunded>, ApiError> {
    state.sync.process().await;
    let mut tx = state.sync.pool.begin().await?;
    let refunded = charges::refund(&mut tx, request.order_id, &request.reason, Uuid::now_v7()).await?;
    tx.commit().await?;
    Ok(Json(refunded))
}

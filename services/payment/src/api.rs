//! Queries: an order's payments and refunds, one payment.

use crate::store::{self, Payment, Refund};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use service_kit::ApiError;
use sqlx::PgPool;
use std::collections::HashMap;

pub fn router(pool: PgPool) -> Router {
    Router::new().route("/payments", get(of_order)).route("/payments/{payment_id}", get(one)).with_state(pool)
}

/// `GET /payments?order_id=`: the order's payments and refunds (empty when
/// payment never heard of the order).
async fn of_order(
    State(pool): State<PgPool>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let order_id = ApiError::required_uuid(&params, "order_id")?;
    let payments = store::payments_of_order(&pool, order_id).await?;
    let refunds = store::refunds_of_order(&pool, order_id).await?;
    Ok(Json(serde_json::json!({ "order_id": order_id, "payments": payments, "refunds": refunds })).into_response())
}

#[derive(Serialize)]
struct PaymentWithRefund {
    #[serde(flatten)]
    payment: Payment,
    refund: Option<Refund>,
}

/// `GET /payments/{payment_id}`: the payment and its refund, if any.
async fn one(State(pool): State<PgPool>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(payment_id) = path?;
    let payment_id = ApiError::parse_uuid("payment_id", &payment_id)?;
    let payment = store::payment(&pool, payment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no payment {payment_id}")))?;
    let refund = store::refund_of_payment(&pool, payment_id).await?;
    Ok(Json(PaymentWithRefund { payment, refund }).into_response())
}

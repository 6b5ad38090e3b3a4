//! Queries: an order's payments and refunds, one payment.

use crate::store::{self, Payment, Refund};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use service_kit::ApiError;
use service_kit::openapi::NotFound;
use sqlx::PgPool;
use std::collections::HashMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new().routes(routes!(of_order)).routes(routes!(one))
}

pub fn router(pool: PgPool) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(pool)
}

#[derive(Serialize, ToSchema)]
struct OrderPayments {
    order_id: uuid::Uuid,
    /// Empty when payment never heard of the order.
    payments: Vec<Payment>,
    refunds: Vec<Refund>,
}

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Documentation only: the handler reads the query itself, to answer 400 as ApiError.
struct OrderQuery {
    order_id: uuid::Uuid,
}

/// `GET /payments?order_id=`: the order's payments and refunds (empty when
/// payment never heard of the order).
#[utoipa::path(get, path = "/payments", operation_id = "payments_of_order", tag = "payment", params(OrderQuery), responses((status = 200, body = OrderPayments)))]
async fn of_order(
    State(pool): State<PgPool>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let order_id = ApiError::required_uuid(&params, "order_id")?;
    let payments = store::payments_of_order(&pool, order_id).await?;
    let refunds = store::refunds_of_order(&pool, order_id).await?;
    Ok(Json(OrderPayments { order_id, payments, refunds }).into_response())
}

#[derive(Serialize, ToSchema)]
struct PaymentWithRefund {
    #[serde(flatten)]
    payment: Payment,
    refund: Option<Refund>,
}

/// `GET /payments/{payment_id}`: the payment and its refund, if any.
#[utoipa::path(
    get,
    path = "/payments/{payment_id}",
    operation_id = "get_payment",
    tag = "payment",
    params(("payment_id" = uuid::Uuid, Path, description = "The payment id.")),
    responses((status = 200, body = PaymentWithRefund), (status = 404, response = NotFound))
)]
async fn one(State(pool): State<PgPool>, path: Result<Path<String>, PathRejection>) -> Result<Response, ApiError> {
    let Path(payment_id) = path?;
    let payment_id = ApiError::parse_uuid("payment_id", &payment_id)?;
    let payment = store::payment(&pool, payment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no payment {payment_id}")))?;
    let refund = store::refund_of_payment(&pool, payment_id).await?;
    Ok(Json(PaymentWithRefund { payment, refund }).into_response())
}

//! Queries: an order's payments and refunds, one payment.

use crate::store::{self, Payment, Refund};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use service_kit::openapi::NotFound;
use service_kit::{ApiError, OrderIdQuery, PathParam, ValidQuery};
use sqlx::PgPool;
use utoipa::ToSchema;
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

/// `GET /payments?order_id=`: the order's payments and refunds (empty when
/// payment never heard of the order).
#[utoipa::path(get, path = "/payments", operation_id = "payments_of_order", tag = "payment", params(OrderIdQuery), responses((status = 200, body = OrderPayments)))]
async fn of_order(
    State(pool): State<PgPool>,
    ValidQuery(OrderIdQuery { order_id }): ValidQuery<OrderIdQuery>,
) -> Result<Response, ApiError> {
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
async fn one(State(pool): State<PgPool>, PathParam(payment_id): PathParam<uuid::Uuid>) -> Result<Response, ApiError> {
    let payment = store::payment(&pool, payment_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no payment {payment_id}")))?;
    let refund = store::refund_of_payment(&pool, payment_id).await?;
    Ok(Json(PaymentWithRefund { payment, refund }).into_response())
}

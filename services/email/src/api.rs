//! Queries: an order's e-mails, one e-mail.

use crate::store;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
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

#[derive(serde::Serialize, ToSchema)]
struct OrderEmails {
    order_id: uuid::Uuid,
    /// Empty when no e-mail was recorded for the order.
    emails: Vec<store::SentEmail>,
}

/// `GET /emails?order_id=`: every e-mail recorded for the order, with its
/// delivery state.
#[utoipa::path(get, path = "/emails", operation_id = "emails_of_order", tag = "email", params(OrderIdQuery), responses((status = 200, body = OrderEmails)))]
async fn of_order(
    State(pool): State<PgPool>,
    ValidQuery(OrderIdQuery { order_id }): ValidQuery<OrderIdQuery>,
) -> Result<Response, ApiError> {
    let emails = store::emails_of_order(&pool, order_id).await?;
    Ok(Json(OrderEmails { order_id, emails }).into_response())
}

/// `GET /emails/{id}`: one recorded e-mail with its delivery state.
#[utoipa::path(
    get,
    path = "/emails/{id}",
    operation_id = "get_email",
    tag = "email",
    params(("id" = uuid::Uuid, Path, description = "The e-mail id.")),
    responses((status = 200, body = store::SentEmail), (status = 404, response = NotFound))
)]
async fn one(State(pool): State<PgPool>, PathParam(id): PathParam<uuid::Uuid>) -> Result<Response, ApiError> {
    match store::email(&pool, id).await? {
        Some(email) => Ok(Json(email).into_response()),
        None => Err(ApiError::NotFound(format!("no e-mail {id}"))),
    }
}

//! The synchronous twin's call to email (`POST /orders/sync` on the order
//! service makes it): record the order's e-mails over HTTP, composed as the
//! events compose them, once per order and kind; the SMTP sender delivers
//! them afterwards as it delivers every e-mail.

use crate::compose::{self, EmailKind};
use crate::events;
use axum::extract::State;
use axum::{Json, Router};
use contracts::catalogue::{OrderCancelled, OrderPaid, ShipmentScheduled};
use serde::Deserialize;
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// The routes, documented; `state`-less so the document can be built alone.
pub fn api() -> OpenApiRouter<SyncState> {
    OpenApiRouter::new().routes(routes!(send))
}

pub fn router(state: SyncState) -> Router {
    let (router, _) = api().split_for_parts();
    router.with_state(state)
}

#[derive(serde::Serialize, ToSchema)]
struct Recorded {
    order_id: Option<Uuid>,
    /// The kinds recorded by this call (none when they were already).
    recorded: Vec<EmailKind>,
}

/// What happened to the order, with the facts the e-mails quote.
#[derive(Deserialize, ToSchema)]
// Without deny_unknown_fields, unlike the other bodies: an internally tagged
// enum's variants cannot say `additionalProperties: false` in the document,
// and the document is what a client reads.
#[serde(tag = "outcome", rename_all = "snake_case")]
enum SendRequest {
    /// A confirmation and a shipment notice.
    Shipped { paid: OrderPaid, shipment: ShipmentScheduled },
    /// A cancellation notice.
    Cancelled { cancelled: OrderCancelled },
}

/// `POST /sync/emails`: 200 with the kinds recorded now (none when asked again).
#[utoipa::path(
    post,
    path = "/sync/emails",
    operation_id = "sync_send_emails",
    tag = "email",
    request_body = SendRequest,
    responses((status = 200, body = Recorded))
)]
async fn send(
    State(state): State<SyncState>,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<Json<Recorded>, ApiError> {
    // As loyalty's credit: an amount the document (and a real payment) never has.
    if let SendRequest::Shipped { paid, .. } = &request {
        if paid.amount_cents < 0 {
            return Err(ApiError::validation("paid.amount_cents", "must not be negative"));
        }
    }
    state.process().await;
    let emails = match &request {
        SendRequest::Shipped { paid, shipment } => {
            vec![compose::order_confirmation(paid), compose::shipment_notice(shipment)]
        }
        SendRequest::Cancelled { cancelled } => vec![compose::cancellation_notice(cancelled)],
    };
    let mut tx = state.pool.begin().await?;
    let mut recorded = Vec::new();
    for email in &emails {
        if events::record(&mut tx, email, Uuid::now_v7()).await? {
            recorded.push(email.kind);
        }
    }
    tx.commit().await?;
    let order_id = emails.first().map(|e| e.order_id);
    Ok(Json(Recorded { order_id, recorded }))
}

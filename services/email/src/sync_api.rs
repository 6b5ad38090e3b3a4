//! The synchronous twin's call to email (`POST /orders/sync` on the order
//! service makes it): record the order's e-mails over HTTP, composed as the
//! events compose them, once per order and kind; the SMTP sender delivers
//! them afterwards as it delivers every e-mail.

use crate::compose;
use crate::events;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use contracts::catalogue::{OrderCancelled, OrderPaid, ShipmentScheduled};
use serde::Deserialize;
use service_kit::sync_twin::SyncState;
use service_kit::{ApiError, ApiJson};
use uuid::Uuid;

pub fn router(state: SyncState) -> Router {
    Router::new().route("/sync/emails", post(send)).with_state(state)
}

/// What happened to the order, with the facts the e-mails quote.
#[derive(Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
enum SendRequest {
    /// A confirmation and a shipment notice.
    Shipped { paid: OrderPaid, shipment: ShipmentScheduled },
    /// A cancellation notice.
    Cancelled { cancelled: OrderCancelled },
}

/// `POST /sync/emails`: 200 with the kinds recorded now (none when asked again).
async fn send(
    State(state): State<SyncState>,
    ApiJson(request): ApiJson<SendRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
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
            recorded.push(email.kind.as_str());
        }
    }
    tx.commit().await?;
    let order_id = emails.first().map(|e| e.order_id);
    Ok(Json(serde_json::json!({ "order_id": order_id, "recorded": recorded })))
}

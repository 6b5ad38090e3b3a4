//! The email service's reaction to order and shipment events: the e-mail is
//! recorded in the consumer's transaction with the inbox row, once per order
//! and kind. Delivery is the [`crate::smtp`] sender's job, after the commit.

use crate::compose::{self, ComposedEmail};
use crate::store;
use contracts::MessageContract;
use contracts::catalogue::{OrderCancelled, OrderPaid, ShipmentScheduled};
use messaging::{HandlerError, IncomingMessage, MessageHandler};
use sqlx::PgConnection;

#[derive(Clone, Copy, Debug, Default)]
pub struct EmailEvents;

/// Records `email` once per order and kind (the events' and the
/// synchronous twin's way alike); true if it was recorded now.
pub async fn record(conn: &mut PgConnection, email: &ComposedEmail, cause_id: uuid::Uuid) -> Result<bool, sqlx::Error> {
    let recorded = store::record(conn, email, cause_id).await?;
    if recorded {
        tracing::info!(order_id = %email.order_id, kind = email.kind.as_str(), to = %email.recipient, "e-mail recorded");
        metrics::counter!("emails_recorded_total", "kind" => email.kind.as_str()).increment(1);
    } else {
        tracing::info!(order_id = %email.order_id, kind = email.kind.as_str(), "e-mail already recorded; nothing to do");
    }
    Ok(recorded)
}

impl MessageHandler for EmailEvents {
    fn message_types(&self) -> &'static [&'static str] {
        &[OrderPaid::MESSAGE_TYPE, ShipmentScheduled::MESSAGE_TYPE, OrderCancelled::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let email = match message.envelope.message_type.as_str() {
            OrderPaid::MESSAGE_TYPE => compose::order_confirmation(&message.decode()?),
            ShipmentScheduled::MESSAGE_TYPE => compose::shipment_notice(&message.decode()?),
            OrderCancelled::MESSAGE_TYPE => compose::cancellation_notice(&message.decode()?),
            other => return Err(HandlerError::Poison(format!("email does not handle `{other}`"))),
        };
        record(conn, &email, message.envelope.message_id).await?;
        Ok(())
    }
}

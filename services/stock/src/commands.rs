//! The stock service's command handlers. Each runs in the consumer's
//! transaction with the inbox row, and replies through the outbox.

use crate::reservations::{self, Reservation};
use contracts::MessageContract;
use contracts::catalogue::{ReleaseStock, ReserveStock, StockRejected, StockReleased, StockReserved};
use messaging::{HandlerError, IncomingMessage, MessageFactory, MessageHandler, Outbox};
use sqlx::PgConnection;

#[derive(Clone)]
pub struct StockCommands {
    factory: MessageFactory,
}

impl StockCommands {
    pub fn new(factory: MessageFactory) -> Self {
        Self { factory }
    }

    async fn reserve(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: ReserveStock,
    ) -> Result<(), HandlerError> {
        let reply = match reservations::reserve(conn, cmd.order_id, &cmd.lines).await? {
            Reservation::Reserved { lines, total_cents } => {
                self.factory.reply(&message.envelope, &StockReserved { order_id: cmd.order_id, lines, total_cents })?
            }
            Reservation::Rejected { reason, unavailable } => {
                self.factory.reply(&message.envelope, &StockRejected { order_id: cmd.order_id, reason, unavailable })?
            }
        };
        Outbox::add(conn, &reply).await?;
        Ok(())
    }

    async fn release(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: ReleaseStock,
    ) -> Result<(), HandlerError> {
        let released = reservations::release(conn, cmd.order_id).await?;
        tracing::info!(order_id = %cmd.order_id, released, reason = %cmd.reason, "stock released");
        let reply = self.factory.reply(&message.envelope, &StockReleased { order_id: cmd.order_id })?;
        Outbox::add(conn, &reply).await?;
        Ok(())
    }
}

impl MessageHandler for StockCommands {
    fn message_types(&self) -> &'static [&'static str] {
        &[ReserveStock::MESSAGE_TYPE, ReleaseStock::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        match message.envelope.message_type.as_str() {
            ReserveStock::MESSAGE_TYPE => self.reserve(conn, message, message.decode()?).await,
            ReleaseStock::MESSAGE_TYPE => self.release(conn, message, message.decode()?).await,
            other => Err(HandlerError::Poison(format!("stock does not handle `{other}`"))),
        }
    }
}

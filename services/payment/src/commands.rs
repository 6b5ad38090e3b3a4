//! The payment service's command handlers. Each runs in the consumer's
//! transaction with the inbox row, and replies through the outbox.

use crate::charges;
use crate::store::{Payment, PaymentStatus};
use contracts::MessageContract;
use contracts::catalogue::{Cents, PaymentDeclined, PaymentSucceeded, ProcessPayment, RefundPayment};
use messaging::{HandlerError, IncomingMessage, MessageFactory, MessageHandler, Outbox, OutboxMessage};
use sqlx::PgConnection;

#[derive(Clone)]
pub struct PaymentCommands {
    factory: MessageFactory,
    default_limit_cents: Cents,
}

impl PaymentCommands {
    pub fn new(factory: MessageFactory, default_limit_cents: Cents) -> Self {
        Self { factory, default_limit_cents }
    }

    async fn process(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: ProcessPayment,
    ) -> Result<(), HandlerError> {
        let payment = charges::charge(conn, &cmd, message.envelope.message_id, self.default_limit_cents).await?;
        let reply = self.outcome_reply(message, &payment)?;
        Outbox::add(conn, &reply).await?;
        Ok(())
    }

    fn outcome_reply(&self, message: &IncomingMessage, payment: &Payment) -> Result<OutboxMessage, HandlerError> {
        let reply = match payment.status {
            PaymentStatus::Succeeded => self.factory.reply(
                &message.envelope,
                &PaymentSucceeded {
                    order_id: payment.order_id,
                    payment_id: payment.id,
                    amount_cents: payment.amount_cents,
                },
            )?,
            PaymentStatus::Declined => self.factory.reply(
                &message.envelope,
                &PaymentDeclined {
                    order_id: payment.order_id,
                    reason: payment.decline_reason.clone().unwrap_or_else(|| "declined".to_owned()),
                },
            )?,
        };
        Ok(reply)
    }

    async fn refund(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: RefundPayment,
    ) -> Result<(), HandlerError> {
        let refunded = charges::refund(conn, cmd.order_id, &cmd.reason, message.envelope.message_id).await?;
        let reply = self.factory.reply(&message.envelope, &refunded)?;
        Outbox::add(conn, &reply).await?;
        Ok(())
    }
}

impl MessageHandler for PaymentCommands {
    fn message_types(&self) -> &'static [&'static str] {
        &[ProcessPayment::MESSAGE_TYPE, RefundPayment::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        match message.envelope.message_type.as_str() {
            ProcessPayment::MESSAGE_TYPE => self.process(conn, message, message.decode()?).await,
            RefundPayment::MESSAGE_TYPE => self.refund(conn, message, message.decode()?).await,
            other => Err(HandlerError::Poison(format!("payment does not handle `{other}`"))),
        }
    }
}

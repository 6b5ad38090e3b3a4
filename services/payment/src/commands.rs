//! The payment service's command handlers. Each runs in the consumer's
//! transaction with the inbox row, and replies through the outbox.

use crate::provider::{self, Decision};
use crate::store::{self, NewPayment, NewRefund, Payment, PaymentStatus};
use contracts::MessageContract;
use contracts::catalogue::{Cents, PaymentDeclined, PaymentRefunded, PaymentSucceeded, ProcessPayment, RefundPayment};
use messaging::{HandlerError, IncomingMessage, MessageFactory, MessageHandler, Outbox, OutboxMessage};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Clone)]
pub struct PaymentCommands {
    factory: MessageFactory,
    default_limit_cents: Cents,
}

impl PaymentCommands {
    pub fn new(factory: MessageFactory, default_limit_cents: Cents) -> Self {
        Self { factory, default_limit_cents }
    }

    /// Charges the order once. The order id is the idempotency key: a
    /// second `ProcessPayment` for the same order, whatever its message id,
    /// gets the recorded outcome again and charges nothing.
    async fn process(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: ProcessPayment,
    ) -> Result<(), HandlerError> {
        if cmd.amount_cents < 0 {
            return Err(HandlerError::Poison(format!("ProcessPayment of a negative amount ({})", cmd.amount_cents)));
        }
        let limit = store::customer_limit(conn, &cmd.customer_id).await?.unwrap_or(self.default_limit_cents);
        let decision = provider::decide(&cmd.payment_method, cmd.amount_cents, limit);
        let (status, decline_reason) = match decision {
            Decision::Approve => (PaymentStatus::Succeeded, None),
            Decision::Decline { reason } => (PaymentStatus::Declined, Some(reason)),
        };
        let new_payment = NewPayment {
            id: Uuid::now_v7(),
            order_id: cmd.order_id,
            customer_id: cmd.customer_id.clone(),
            amount_cents: cmd.amount_cents,
            payment_method: cmd.payment_method.clone(),
            status,
            decline_reason,
            request_message_id: message.envelope.message_id,
        };
        let payment = match store::insert_payment(conn, &new_payment).await? {
            Some(payment) => {
                tracing::info!(order_id = %cmd.order_id, payment_id = %payment.id, status = payment.status.as_str(), "payment decided");
                metrics::counter!("payments_total", "outcome" => payment.status.as_str()).increment(1);
                payment
            }
            None => {
                let existing = store::lock_payment_of_order(conn, cmd.order_id).await?.ok_or_else(|| {
                    HandlerError::Failed(format!("payment of order {} conflicted but cannot be read", cmd.order_id))
                })?;
                if existing.amount_cents != cmd.amount_cents {
                    tracing::warn!(order_id = %cmd.order_id, recorded = existing.amount_cents, requested = cmd.amount_cents,
                        "repeated ProcessPayment asks for a different amount; answering the recorded outcome");
                }
                tracing::info!(order_id = %cmd.order_id, payment_id = %existing.id, "order already charged or declined; answering the same");
                metrics::counter!("payments_repeated_total").increment(1);
                existing
            }
        };
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

    /// Refunds a succeeded payment in full, once. With nothing charged (no
    /// payment, or a declined one) nothing is written and the reply says
    /// 0 cents were refunded: either way, no charge stands afterwards.
    async fn refund(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: RefundPayment,
    ) -> Result<(), HandlerError> {
        let refunded = match store::lock_payment_of_order(conn, cmd.order_id).await? {
            None => {
                tracing::warn!(order_id = %cmd.order_id, "refund requested for an order that was never charged");
                PaymentRefunded { order_id: cmd.order_id, payment_id: Uuid::nil(), amount_cents: 0 }
            }
            Some(payment) if payment.status == PaymentStatus::Declined => {
                tracing::info!(order_id = %cmd.order_id, payment_id = %payment.id, "refund of a declined payment: nothing to return");
                PaymentRefunded { order_id: cmd.order_id, payment_id: payment.id, amount_cents: 0 }
            }
            Some(payment) => {
                let new_refund = NewRefund {
                    id: Uuid::now_v7(),
                    payment_id: payment.id,
                    order_id: payment.order_id,
                    amount_cents: payment.amount_cents,
                    reason: cmd.reason.clone(),
                    request_message_id: message.envelope.message_id,
                };
                let refund = store::refund_once(conn, &new_refund).await?;
                if refund.id == new_refund.id {
                    tracing::info!(order_id = %cmd.order_id, payment_id = %payment.id, amount_cents = refund.amount_cents, reason = %cmd.reason, "payment refunded");
                    metrics::counter!("refunds_total").increment(1);
                } else {
                    tracing::info!(order_id = %cmd.order_id, payment_id = %payment.id, "payment already refunded; answering the same");
                }
                PaymentRefunded { order_id: cmd.order_id, payment_id: payment.id, amount_cents: refund.amount_cents }
            }
        };
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

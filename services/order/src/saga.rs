//! The order saga: the order's state machine, driven by the replies of stock
//! and payment and by shipping's event. Read it top to bottom:
//!
//! ```text
//!  PLACED ──StockReserved──▶ STOCK_RESERVED ──PaymentSucceeded──▶ PAID ──ShipmentScheduled──▶ COMPLETED
//!    │  sends ProcessPayment      │  publishes OrderPaid               publishes OrderCompleted
//!    │                           │
//!    └─StockRejected─▶ CANCELLED ◀─PaymentDeclined (sends ReleaseStock)
//!                      publishes OrderCancelled
//! ```
//!
//! States only move forward. A reply is applied only if it answers the
//! command the order is waiting for (its causation id); anything else (a
//! stale, repeated or out-of-order message) is recorded in the order's
//! history and ignored. Each step runs in the consumer's transaction, so the
//! new state, the history row, the inbox row and the messages it sends
//! commit together.

use crate::store::{self, LockedOrder, OrderStatus, TransitionFields};
use contracts::catalogue::{
    OrderCancelled, OrderCompleted, OrderPaid, PaymentDeclined, PaymentRefunded, PaymentSucceeded, ProcessPayment,
    RefundPayment, ReleaseStock, ShipmentScheduled, StockRejected, StockReleased, StockReserved,
};
use contracts::{Envelope, MessageContract, Topology};
use messaging::{HandlerError, IncomingMessage, MessageFactory, MessageHandler, Outbox};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Clone)]
pub struct OrderSaga {
    factory: MessageFactory,
    topology: Topology,
}

/// The messages that move the saga.
enum SagaInput {
    StockReserved(StockReserved),
    StockRejected(StockRejected),
    StockReleased(StockReleased),
    PaymentSucceeded(PaymentSucceeded),
    PaymentDeclined(PaymentDeclined),
    PaymentRefunded(PaymentRefunded),
    ShipmentScheduled(ShipmentScheduled),
}

impl SagaInput {
    fn decode(message: &IncomingMessage) -> Result<Self, HandlerError> {
        Ok(match message.envelope.message_type.as_str() {
            StockReserved::MESSAGE_TYPE => Self::StockReserved(message.decode()?),
            StockRejected::MESSAGE_TYPE => Self::StockRejected(message.decode()?),
            StockReleased::MESSAGE_TYPE => Self::StockReleased(message.decode()?),
            PaymentSucceeded::MESSAGE_TYPE => Self::PaymentSucceeded(message.decode()?),
            PaymentDeclined::MESSAGE_TYPE => Self::PaymentDeclined(message.decode()?),
            PaymentRefunded::MESSAGE_TYPE => Self::PaymentRefunded(message.decode()?),
            ShipmentScheduled::MESSAGE_TYPE => Self::ShipmentScheduled(message.decode()?),
            other => return Err(HandlerError::Poison(format!("the order saga does not handle `{other}`"))),
        })
    }
}

impl OrderSaga {
    pub fn new(factory: MessageFactory, topology: Topology) -> Self {
        Self { factory, topology }
    }

    /// Applies one message to one locked order.
    async fn step(
        &self,
        conn: &mut PgConnection,
        order: &LockedOrder,
        input: SagaInput,
        cause: &Envelope,
    ) -> Result<(), HandlerError> {
        use OrderStatus::*;
        // A reply counts only if it answers the command the order waits for.
        let answers_awaited = order.awaiting_message_id.is_some() && cause.causation_id == order.awaiting_message_id;
        match (order.status, input) {
            // 2 → 3. Stock reserved every line: charge the customer.
            (Placed, SagaInput::StockReserved(reserved)) if answers_awaited => {
                let prices: Vec<(String, i64)> =
                    reserved.lines.iter().map(|l| (l.sku.clone(), l.unit_price_cents)).collect();
                store::set_line_prices(conn, order.id, &prices).await?;
                let charge = ProcessPayment {
                    order_id: order.id,
                    customer_id: order.customer_id.clone(),
                    amount_cents: reserved.total_cents,
                    payment_method: order.payment_method.clone(),
                };
                let command = self.command(&self.topology.payment_commands(), order, cause, &charge)?;
                let fields = TransitionFields {
                    total_cents: Some(reserved.total_cents),
                    awaiting_message_id: Some(command.envelope.message_id),
                    ..TransitionFields::default()
                };
                store::transition(conn, order, StockReserved, &fields, cause).await?;
                Outbox::add(conn, &command).await?;
            }

            // 3. Stock could not reserve: the order ends here.
            (Placed, SagaInput::StockRejected(rejected)) if answers_awaited => {
                self.cancel(conn, order, cause, format!("stock rejected: {}", rejected.reason)).await?;
            }

            // 5. Paid: tell everyone who cares (shipping, email, loyalty).
            (StockReserved, SagaInput::PaymentSucceeded(paid)) if answers_awaited => {
                let sequence = order.event_sequence + 1;
                let event = OrderPaid {
                    order_id: order.id,
                    customer_id: order.customer_id.clone(),
                    amount_cents: paid.amount_cents,
                    payment_id: paid.payment_id,
                };
                let message = self.event(order, sequence, cause, &event)?;
                let fields = TransitionFields {
                    payment_id: Some(paid.payment_id),
                    event_sequence: Some(sequence),
                    ..TransitionFields::default()
                };
                store::transition(conn, order, Paid, &fields, cause).await?;
                Outbox::add(conn, &message).await?;
            }

            // 5. Declined: give the stock back, then cancel.
            (StockReserved, SagaInput::PaymentDeclined(declined)) if answers_awaited => {
                let release = ReleaseStock { order_id: order.id, reason: declined.reason.clone() };
                let command = self.command(&self.topology.stock_commands(), order, cause, &release)?;
                Outbox::add(conn, &command).await?;
                self.cancel(conn, order, cause, format!("payment declined: {}", declined.reason)).await?;
            }

            // 9. Shipped: the order is complete.
            (Paid, SagaInput::ShipmentScheduled(shipment)) => {
                tracing::info!(shipment_id = %shipment.shipment_id, carrier = %shipment.carrier, "shipment scheduled");
                let sequence = order.event_sequence + 1;
                let event = OrderCompleted { order_id: order.id, customer_id: order.customer_id.clone() };
                let message = self.event(order, sequence, cause, &event)?;
                let fields = TransitionFields { event_sequence: Some(sequence), ..TransitionFields::default() };
                store::transition(conn, order, Completed, &fields, cause).await?;
                Outbox::add(conn, &message).await?;
            }

            // Stock reserved for an order that is already cancelled (a
            // reservation retried and answered late) must not stay held.
            (Cancelled, SagaInput::StockReserved(_)) => {
                let release = ReleaseStock { order_id: order.id, reason: "order already cancelled".into() };
                let command = self.command(&self.topology.stock_commands(), order, cause, &release)?;
                Outbox::add(conn, &command).await?;
                let note = "stock reserved after cancellation: release requested";
                store::record_history(conn, order.id, Some(Cancelled), Cancelled, Some(cause), Some(note)).await?;
            }

            // A charge for an order that is already cancelled must not stand.
            (Cancelled, SagaInput::PaymentSucceeded(paid)) => {
                let refund = RefundPayment { order_id: order.id, reason: "order already cancelled".into() };
                let command = self.command(&self.topology.payment_commands(), order, cause, &refund)?;
                Outbox::add(conn, &command).await?;
                let note = format!("payment {} arrived after cancellation: refund requested", paid.payment_id);
                store::record_history(conn, order.id, Some(Cancelled), Cancelled, Some(cause), Some(&note)).await?;
            }

            // Acknowledgements of compensations: recorded, nothing to do.
            (status, SagaInput::StockReleased(released)) => {
                let note = format!("stock of order {} released", released.order_id);
                store::record_history(conn, order.id, Some(status), status, Some(cause), Some(&note)).await?;
            }
            (status, SagaInput::PaymentRefunded(refunded)) => {
                let note = format!("payment {} refunded ({} cents)", refunded.payment_id, refunded.amount_cents);
                store::record_history(conn, order.id, Some(status), status, Some(cause), Some(&note)).await?;
            }

            // Stale, repeated or out of order: never applied backwards.
            (status, _) => {
                let note =
                    format!("ignored {} in {}: stale, repeated or out of order", cause.message_type, status.as_str());
                tracing::info!(order_id = %order.id, %note);
                metrics::counter!("saga_messages_ignored_total", "message_type" => cause.message_type.clone())
                    .increment(1);
                store::record_history(conn, order.id, Some(status), status, Some(cause), Some(&note)).await?;
            }
        }
        Ok(())
    }

    /// → CANCELLED, publishing `OrderCancelled`.
    async fn cancel(
        &self,
        conn: &mut PgConnection,
        order: &LockedOrder,
        cause: &Envelope,
        reason: String,
    ) -> Result<(), HandlerError> {
        let sequence = order.event_sequence + 1;
        let event =
            OrderCancelled { order_id: order.id, customer_id: order.customer_id.clone(), reason: reason.clone() };
        let message = self.event(order, sequence, cause, &event)?;
        let fields = TransitionFields {
            cancel_reason: Some(reason),
            event_sequence: Some(sequence),
            ..TransitionFields::default()
        };
        store::transition(conn, order, OrderStatus::Cancelled, &fields, cause).await?;
        Outbox::add(conn, &message).await?;
        Ok(())
    }

    /// A command about `order` to `queue`, answered on the saga's reply queue.
    fn command<M: MessageContract>(
        &self,
        queue: &str,
        order: &LockedOrder,
        cause: &Envelope,
        command: &M,
    ) -> Result<messaging::OutboxMessage, HandlerError> {
        let reply_to = self.topology.order_replies();
        Ok(self.factory.command(queue, &order.id.to_string(), &reply_to, Some(cause), command)?)
    }

    fn event<M: MessageContract>(
        &self,
        order: &LockedOrder,
        sequence: i64,
        cause: &Envelope,
        event: &M,
    ) -> Result<messaging::OutboxMessage, HandlerError> {
        Ok(self.factory.event(&self.topology.orders_topic(), &order.id.to_string(), sequence, Some(cause), event)?)
    }
}

impl MessageHandler for OrderSaga {
    fn message_types(&self) -> &'static [&'static str] {
        &[
            StockReserved::MESSAGE_TYPE,
            StockRejected::MESSAGE_TYPE,
            StockReleased::MESSAGE_TYPE,
            PaymentSucceeded::MESSAGE_TYPE,
            PaymentDeclined::MESSAGE_TYPE,
            PaymentRefunded::MESSAGE_TYPE,
            ShipmentScheduled::MESSAGE_TYPE,
        ]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        let envelope = &message.envelope;
        let order_id: Uuid = envelope.correlation_id.parse().map_err(|_| {
            HandlerError::Poison(format!("correlation id `{}` is not an order id", envelope.correlation_id))
        })?;
        let input = SagaInput::decode(message)?;
        // The row lock serializes every message about this order.
        let Some(order) = store::lock_order(conn, order_id).await? else {
            return Err(HandlerError::Poison(format!("no order {order_id}")));
        };
        let from = order.status;
        self.step(conn, &order, input, envelope).await?;
        metrics::counter!("saga_steps_total", "from" => from.as_str(), "message_type" => envelope.message_type.clone())
            .increment(1);
        Ok(())
    }
}

//! The shipping service's reaction to order events, in the consumer's
//! transaction with the inbox row; `ShipmentScheduled` goes out through the
//! outbox.

use crate::store::{self, NewShipment};
use contracts::catalogue::{OrderCancelled, OrderPaid, ShipmentScheduled};
use contracts::{MessageContract, Topology};
use messaging::{HandlerError, IncomingMessage, MessageFactory, MessageHandler, Outbox};
use sqlx::PgConnection;
use uuid::Uuid;

/// Shipments are an aggregate keyed by order id with a single event, so
/// every `ShipmentScheduled` is that aggregate's first.
const SHIPMENT_SCHEDULED_SEQUENCE: i64 = 1;

#[derive(Clone)]
pub struct ShippingEvents {
    factory: MessageFactory,
    topology: Topology,
    carrier: String,
}

impl ShippingEvents {
    pub fn new(factory: MessageFactory, topology: Topology, carrier: String) -> Self {
        Self { factory, topology, carrier }
    }

    /// One shipment per order. An order that already has one (the event
    /// again under another message id) changes nothing and publishes
    /// nothing: its `ShipmentScheduled` was written with the shipment.
    async fn order_paid(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        paid: OrderPaid,
    ) -> Result<(), HandlerError> {
        let new_shipment = NewShipment {
            id: Uuid::now_v7(),
            order_id: paid.order_id,
            customer_id: paid.customer_id.clone(),
            payment_id: paid.payment_id,
            carrier: self.carrier.clone(),
            cause_message_id: message.envelope.message_id,
        };
        let Some(shipment) = store::insert_shipment(conn, &new_shipment).await? else {
            tracing::info!(order_id = %paid.order_id, "order already has a shipment; nothing to do");
            return Ok(());
        };
        let event = ShipmentScheduled {
            order_id: shipment.order_id,
            shipment_id: shipment.id,
            customer_id: shipment.customer_id.clone(),
            carrier: shipment.carrier.clone(),
        };
        let outgoing = self.factory.event(
            &self.topology.shipments_topic(),
            &shipment.order_id.to_string(),
            SHIPMENT_SCHEDULED_SEQUENCE,
            Some(&message.envelope),
            &event,
        )?;
        Outbox::add(conn, &outgoing).await?;
        tracing::info!(order_id = %shipment.order_id, shipment_id = %shipment.id, carrier = %shipment.carrier, "shipment scheduled");
        metrics::counter!("shipments_scheduled_total").increment(1);
        Ok(())
    }
}

impl MessageHandler for ShippingEvents {
    fn message_types(&self) -> &'static [&'static str] {
        // OrderCancelled has no effect here, but taking it through the inbox
        // advances the order's sequence mark, so an OrderPaid that arrives
        // after its cancellation is recognised as stale and ships nothing.
        &[OrderPaid::MESSAGE_TYPE, OrderCancelled::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        match message.envelope.message_type.as_str() {
            OrderPaid::MESSAGE_TYPE => self.order_paid(conn, message, message.decode()?).await,
            OrderCancelled::MESSAGE_TYPE => {
                let cancelled: OrderCancelled = message.decode()?;
                tracing::info!(order_id = %cancelled.order_id, "order cancelled: nothing to ship");
                Ok(())
            }
            other => Err(HandlerError::Poison(format!("shipping does not handle `{other}`"))),
        }
    }
}

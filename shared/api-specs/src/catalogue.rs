//! Who sends and who handles each message of the catalogue, and on which
//! channel: what `contracts` does not say (the services decide it, see
//! docs/design.md's catalogue table). tests/document.rs checks that every
//! message type of `contracts` is here exactly once.

use crate::SpecError;
use crate::examples;
use contracts::catalogue::{
    PaymentDeclined, PaymentRefunded, PaymentSucceeded, StockRejected, StockReleased, StockReserved,
};
use contracts::{MessageContract, Topology};
use schemars::generate::SchemaGenerator;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Command,
    Reply,
    Event,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Reply => "reply",
            Kind::Event => "event",
        }
    }
}

/// One message type: its contract, where it travels, who sends and handles it.
pub(crate) struct Entry {
    pub message_type: &'static str,
    pub schema_version: u32,
    pub kind: Kind,
    pub channel: String,
    pub producer: &'static str,
    /// Services whose handler takes it. On Kafka every subscribing group
    /// receives every event and acknowledges the ones it does not handle.
    pub handlers: &'static [&'static str],
    /// Commands: the replies that may answer it.
    pub replies: &'static [&'static str],
    /// Events: the event's `sequence` within its aggregate.
    pub sequence: Option<i64>,
    /// `$ref` to the payload's schema in `components.schemas`.
    pub payload: Value,
    /// A payload as it travels (serde's JSON of a sample value).
    pub example: Value,
}

impl Entry {
    /// `stock.ReserveStock` → `ReserveStock`.
    pub(crate) fn name(&self) -> &'static str {
        self.message_type.rsplit_once('.').map_or(self.message_type, |(_, name)| name)
    }
}

/// Everything one entry needs besides what its contract type says.
struct Route {
    kind: Kind,
    channel: String,
    producer: &'static str,
    handlers: &'static [&'static str],
    replies: &'static [&'static str],
    sequence: Option<i64>,
}

fn entry<M: MessageContract>(generator: &mut SchemaGenerator, route: Route, sample: &M) -> Result<Entry, SpecError> {
    let example =
        serde_json::to_value(sample).map_err(|source| SpecError::Example { message_type: M::MESSAGE_TYPE, source })?;
    Ok(Entry {
        message_type: M::MESSAGE_TYPE,
        schema_version: M::SCHEMA_VERSION,
        kind: route.kind,
        channel: route.channel,
        producer: route.producer,
        handlers: route.handlers,
        replies: route.replies,
        sequence: route.sequence,
        payload: generator.subschema_for::<M>().to_value(),
        example,
    })
}

fn command(channel: String, handler: &'static [&'static str], replies: &'static [&'static str]) -> Route {
    Route { kind: Kind::Command, channel, producer: "order", handlers: handler, replies, sequence: None }
}

fn reply(topology: &Topology, producer: &'static str) -> Route {
    Route {
        kind: Kind::Reply,
        channel: topology.order_replies(),
        producer,
        handlers: &["order"],
        replies: &[],
        sequence: None,
    }
}

fn event(channel: String, producer: &'static str, handlers: &'static [&'static str], sequence: i64) -> Route {
    Route { kind: Kind::Event, channel, producer, handlers, replies: &[], sequence: Some(sequence) }
}

/// The catalogue, in docs/design.md's order. Handlers are the services whose
/// `MessageHandler::message_types` name the type.
pub(crate) fn entries(topology: &Topology, generator: &mut SchemaGenerator) -> Result<Vec<Entry>, SpecError> {
    let stock = topology.stock_commands();
    let payment = topology.payment_commands();
    let orders = topology.orders_topic();
    let shipments = topology.shipments_topic();
    // The order's event number, as the saga assigns it (docs/design.md).
    let (placed, settled, completed) = (1, 2, 3);
    Ok(vec![
        entry(
            generator,
            command(stock.clone(), &["stock"], &[StockReserved::MESSAGE_TYPE, StockRejected::MESSAGE_TYPE]),
            &examples::reserve_stock(),
        )?,
        entry(generator, command(stock, &["stock"], &[StockReleased::MESSAGE_TYPE]), &examples::release_stock())?,
        entry(generator, reply(topology, "stock"), &examples::stock_reserved())?,
        entry(generator, reply(topology, "stock"), &examples::stock_rejected())?,
        entry(generator, reply(topology, "stock"), &examples::stock_released())?,
        entry(
            generator,
            command(payment.clone(), &["payment"], &[PaymentSucceeded::MESSAGE_TYPE, PaymentDeclined::MESSAGE_TYPE]),
            &examples::process_payment(),
        )?,
        entry(
            generator,
            command(payment, &["payment"], &[PaymentRefunded::MESSAGE_TYPE]),
            &examples::refund_payment(),
        )?,
        entry(generator, reply(topology, "payment"), &examples::payment_succeeded())?,
        entry(generator, reply(topology, "payment"), &examples::payment_declined())?,
        entry(generator, reply(topology, "payment"), &examples::payment_refunded())?,
        entry(generator, event(orders.clone(), "order", &[], placed), &examples::order_placed())?,
        entry(
            generator,
            event(orders.clone(), "order", &["shipping", "email", "loyalty"], settled),
            &examples::order_paid(),
        )?,
        entry(
            generator,
            event(orders.clone(), "order", &["shipping", "email", "loyalty"], settled),
            &examples::order_cancelled(),
        )?,
        entry(generator, event(orders, "order", &[], completed), &examples::order_completed())?,
        // The shipment's first and only event.
        entry(generator, event(shipments, "shipping", &["order", "email"], 1), &examples::shipment_scheduled())?,
    ])
}

//! One sample of every payload and of the envelope, fixed so the document is
//! the same on every run. Serialized by serde, they are the JSON and headers
//! that really travel: validate.mjs checks each against its schema.

use crate::catalogue::{Entry, Kind};
use chrono::{DateTime, Utc};
use contracts::catalogue::{
    OrderCancelled, OrderCompleted, OrderLine, OrderPaid, OrderPlaced, PaymentDeclined, PaymentMethod, PaymentRefunded,
    PaymentSucceeded, PricedLine, ProcessPayment, RefundPayment, ReleaseStock, ReserveStock, ShipmentScheduled,
    StockRejected, StockReleased, StockReserved,
};
use contracts::{Envelope, Topology};
use uuid::Uuid;

const ORDER_ID: Uuid = Uuid::from_u128(0x0190_b2a4_5e10_7000_8000_0000_0000_0001);
const PAYMENT_ID: Uuid = Uuid::from_u128(0x0190_b2a4_5e10_7000_8000_0000_0000_0002);
const SHIPMENT_ID: Uuid = Uuid::from_u128(0x0190_b2a4_5e10_7000_8000_0000_0000_0003);
/// The message whose handling produced the sample (its causation).
const CAUSE_ID: Uuid = Uuid::from_u128(0x0190_b2a4_5e10_7000_8000_0000_0000_0004);
/// Sample message ids are this plus the entry's position in the catalogue.
const FIRST_MESSAGE_ID: u128 = 0x0190_b2a4_5e10_7000_8000_0000_0001_0000;
/// 2026-01-01T12:00:00Z.
const OCCURRED_AT_SECS: i64 = 1_767_268_800;
const CUSTOMER_ID: &str = "c-1";
const AMOUNT_CENTS: i64 = 6_249;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn lines() -> Vec<OrderLine> {
    vec![OrderLine { sku: "SKU-002".into(), quantity: 1 }, OrderLine { sku: "SKU-004".into(), quantity: 3 }]
}

pub(crate) fn reserve_stock() -> ReserveStock {
    ReserveStock { order_id: ORDER_ID, lines: lines() }
}

pub(crate) fn release_stock() -> ReleaseStock {
    ReleaseStock { order_id: ORDER_ID, reason: "payment declined: card declined by the issuer".into() }
}

pub(crate) fn stock_reserved() -> StockReserved {
    StockReserved {
        order_id: ORDER_ID,
        lines: vec![
            PricedLine { sku: "SKU-002".into(), quantity: 1, unit_price_cents: 1_299 },
            PricedLine { sku: "SKU-004".into(), quantity: 3, unit_price_cents: 1_650 },
        ],
        total_cents: AMOUNT_CENTS,
    }
}

pub(crate) fn stock_rejected() -> StockRejected {
    StockRejected {
        order_id: ORDER_ID,
        reason: "out of stock: SKU-EMPTY".into(),
        unavailable: vec!["SKU-EMPTY".into()],
    }
}

pub(crate) fn stock_released() -> StockReleased {
    StockReleased { order_id: ORDER_ID }
}

pub(crate) fn process_payment() -> ProcessPayment {
    ProcessPayment {
        order_id: ORDER_ID,
        customer_id: CUSTOMER_ID.into(),
        amount_cents: AMOUNT_CENTS,
        payment_method: PaymentMethod::Card.as_str().into(),
    }
}

pub(crate) fn refund_payment() -> RefundPayment {
    RefundPayment { order_id: ORDER_ID, reason: "charged after the order was cancelled".into() }
}

pub(crate) fn payment_succeeded() -> PaymentSucceeded {
    PaymentSucceeded { order_id: ORDER_ID, payment_id: PAYMENT_ID, amount_cents: AMOUNT_CENTS }
}

pub(crate) fn payment_declined() -> PaymentDeclined {
    PaymentDeclined { order_id: ORDER_ID, reason: "card declined by the issuer".into() }
}

pub(crate) fn payment_refunded() -> PaymentRefunded {
    PaymentRefunded { order_id: ORDER_ID, payment_id: PAYMENT_ID, amount_cents: AMOUNT_CENTS }
}

pub(crate) fn order_placed() -> OrderPlaced {
    OrderPlaced {
        order_id: ORDER_ID,
        customer_id: CUSTOMER_ID.into(),
        lines: lines(),
        payment_method: PaymentMethod::Card.as_str().into(),
    }
}

pub(crate) fn order_paid() -> OrderPaid {
    OrderPaid {
        order_id: ORDER_ID,
        customer_id: CUSTOMER_ID.into(),
        amount_cents: AMOUNT_CENTS,
        payment_id: PAYMENT_ID,
    }
}

pub(crate) fn order_cancelled() -> OrderCancelled {
    OrderCancelled {
        order_id: ORDER_ID,
        customer_id: CUSTOMER_ID.into(),
        reason: "payment declined: card declined by the issuer".into(),
    }
}

pub(crate) fn order_completed() -> OrderCompleted {
    OrderCompleted { order_id: ORDER_ID, customer_id: CUSTOMER_ID.into() }
}

pub(crate) fn shipment_scheduled() -> ShipmentScheduled {
    ShipmentScheduled {
        order_id: ORDER_ID,
        shipment_id: SHIPMENT_ID,
        customer_id: CUSTOMER_ID.into(),
        carrier: "ordermesh-express".into(),
    }
}

/// The order id of every sample: the Kafka key of every sample event.
pub(crate) fn order_id() -> Uuid {
    ORDER_ID
}

/// The envelope the `position`-th entry of the catalogue would carry, built
/// as `messaging::MessageFactory` builds one of its kind.
pub(crate) fn envelope(topology: &Topology, entry: &Entry, position: usize) -> Envelope {
    let mut envelope = Envelope::new(entry.message_type, ORDER_ID.to_string(), entry.producer);
    envelope.message_id = Uuid::from_u128(FIRST_MESSAGE_ID + position as u128);
    envelope.occurred_at = DateTime::<Utc>::from_timestamp(OCCURRED_AT_SECS, 0).unwrap_or_default();
    envelope.schema_version = entry.schema_version;
    envelope.causation_id = Some(CAUSE_ID);
    envelope.traceparent = Some(TRACEPARENT.into());
    match entry.kind {
        Kind::Command => envelope.reply_to = Some(topology.order_replies()),
        Kind::Reply => {}
        Kind::Event => {
            envelope.aggregate_id = Some(ORDER_ID.to_string());
            envelope.sequence = entry.sequence;
        }
    }
    envelope
}

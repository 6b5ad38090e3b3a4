//! The message catalogue (docs/design.md): every command, reply and event, with
//! its wire name and schema version. Commands are imperative, events and
//! replies are past tense.
//!
//! | channel                      | messages                                                        |
//! |------------------------------|-----------------------------------------------------------------|
//! | `stock.commands` (RabbitMQ)  | `ReserveStock`, `ReleaseStock`                                  |
//! | `payment.commands` (RabbitMQ)| `ProcessPayment`, `RefundPayment`                               |
//! | `order.replies` (RabbitMQ)   | `StockReserved`, `StockRejected`, `StockReleased`, `PaymentSucceeded`, `PaymentDeclined`, `PaymentRefunded` |
//! | `orders` (Kafka)             | `OrderPlaced`, `OrderPaid`, `OrderCancelled`, `OrderCompleted`  |
//! | `shipments` (Kafka)          | `ShipmentScheduled`                                             |

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// A message of the catalogue: its payload type, wire name and schema version.
pub trait MessageContract: Serialize + DeserializeOwned {
    const MESSAGE_TYPE: &'static str;
    /// A consumer rejects (dead-letters) a version it does not know.
    const SCHEMA_VERSION: u32 = 1;
}

macro_rules! contract {
    ($ty:ty, $name:literal) => {
        impl MessageContract for $ty {
            const MESSAGE_TYPE: &'static str = $name;
        }
    };
}

/// Money is carried in minor units (cents) of a single currency.
pub type Cents = i64;

/// The payment methods an order may name. The payment service's provider
/// is a simulation: `card` is charged (up to the customer's limit) and
/// `card_declined` is always declined. Anything else is refused when the
/// order is placed, never carried into the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    CardDeclined,
}

impl PaymentMethod {
    pub const ALL: [PaymentMethod; 2] = [PaymentMethod::Card, PaymentMethod::CardDeclined];

    pub const fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::Card => "card",
            PaymentMethod::CardDeclined => "card_declined",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|method| method.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: Cents,
}

// ---- commands to stock ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub order_id: Uuid,
    pub lines: Vec<OrderLine>,
}
contract!(ReserveStock, "stock.ReserveStock");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub order_id: Uuid,
    pub reason: String,
}
contract!(ReleaseStock, "stock.ReleaseStock");

// ---- replies from stock ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: Uuid,
    /// Stock owns the catalogue, so it prices the lines it reserved.
    pub lines: Vec<PricedLine>,
    pub total_cents: Cents,
}
contract!(StockReserved, "stock.StockReserved");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRejected {
    pub order_id: Uuid,
    pub reason: String,
    /// SKUs that were unknown or short.
    pub unavailable: Vec<String>,
}
contract!(StockRejected, "stock.StockRejected");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: Uuid,
}
contract!(StockReleased, "stock.StockReleased");

// ---- commands to payment ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessPayment {
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: Cents,
    pub payment_method: String,
}
contract!(ProcessPayment, "payment.ProcessPayment");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPayment {
    pub order_id: Uuid,
    pub reason: String,
}
contract!(RefundPayment, "payment.RefundPayment");

// ---- replies from payment ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: Cents,
}
contract!(PaymentSucceeded, "payment.PaymentSucceeded");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    pub reason: String,
}
contract!(PaymentDeclined, "payment.PaymentDeclined");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: Cents,
}
contract!(PaymentRefunded, "payment.PaymentRefunded");

// ---- events on `orders` ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub payment_method: String,
}
contract!(OrderPlaced, "orders.OrderPlaced");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: Uuid,
    pub customer_id: String,
    pub amount_cents: Cents,
    pub payment_id: Uuid,
}
contract!(OrderPaid, "orders.OrderPaid");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: String,
    pub reason: String,
}
contract!(OrderCancelled, "orders.OrderCancelled");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCompleted {
    pub order_id: Uuid,
    pub customer_id: String,
}
contract!(OrderCompleted, "orders.OrderCompleted");

// ---- events on `shipments` ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentScheduled {
    pub order_id: Uuid,
    pub shipment_id: Uuid,
    pub customer_id: String,
    pub carrier: String,
}
contract!(ShipmentScheduled, "shipments.ShipmentScheduled");

/// Every message type of the catalogue. A consumer ignores a known type it
/// does not handle, and dead-letters a type that is not in this list.
pub const ALL_MESSAGE_TYPES: &[&str] = &[
    ReserveStock::MESSAGE_TYPE,
    ReleaseStock::MESSAGE_TYPE,
    StockReserved::MESSAGE_TYPE,
    StockRejected::MESSAGE_TYPE,
    StockReleased::MESSAGE_TYPE,
    ProcessPayment::MESSAGE_TYPE,
    RefundPayment::MESSAGE_TYPE,
    PaymentSucceeded::MESSAGE_TYPE,
    PaymentDeclined::MESSAGE_TYPE,
    PaymentRefunded::MESSAGE_TYPE,
    OrderPlaced::MESSAGE_TYPE,
    OrderPaid::MESSAGE_TYPE,
    OrderCancelled::MESSAGE_TYPE,
    OrderCompleted::MESSAGE_TYPE,
    ShipmentScheduled::MESSAGE_TYPE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_channel_and_tense_convention() {
        assert_eq!(ReserveStock::MESSAGE_TYPE, "stock.ReserveStock");
        assert_eq!(OrderPaid::MESSAGE_TYPE, "orders.OrderPaid");
        assert_eq!(ShipmentScheduled::SCHEMA_VERSION, 1);
    }

    #[test]
    fn payloads_are_plain_json() {
        let cmd = ReserveStock { order_id: Uuid::nil(), lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }] };
        let json = serde_json::to_value(&cmd).unwrap();
        assert_eq!(json["lines"][0]["quantity"], 2);
        assert_eq!(serde_json::from_value::<ReserveStock>(json).unwrap(), cmd);
    }
}

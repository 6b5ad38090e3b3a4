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

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// A message of the catalogue: its payload type, wire name and schema version.
/// `JsonSchema` so that no message can be left out of the published API
/// (docs/api/asyncapi.json).
pub trait MessageContract: Serialize + DeserializeOwned + JsonSchema {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
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

/// One line of an order: a SKU and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct OrderLine {
    pub sku: String,
    #[schema(minimum = 1)]
    pub quantity: i32,
}

/// A reserved line, priced by stock (cents of one currency).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: Cents,
}

// ---- commands to stock ----

/// Command to stock: reserve every line of the order, or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReserveStock {
    pub order_id: Uuid,
    pub lines: Vec<OrderLine>,
}
contract!(ReserveStock, "stock.ReserveStock");

/// Command to stock: give back what the order holds (idempotent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReleaseStock {
    pub order_id: Uuid,
    pub reason: String,
}
contract!(ReleaseStock, "stock.ReleaseStock");

// ---- replies from stock ----

/// Reply from stock: every line reserved and priced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReserved {
    pub order_id: Uuid,
    /// Stock owns the catalogue, so it prices the lines it reserved.
    pub lines: Vec<PricedLine>,
    pub total_cents: Cents,
}
contract!(StockReserved, "stock.StockReserved");

/// Reply from stock: nothing reserved, some SKUs unknown or short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockRejected {
    pub order_id: Uuid,
    pub reason: String,
    /// SKUs that were unknown or short.
    pub unavailable: Vec<String>,
}
contract!(StockRejected, "stock.StockRejected");

/// Reply from stock: the order's reservation is given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReleased {
    pub order_id: Uuid,
}
contract!(StockReleased, "stock.StockReleased");

// ---- commands to payment ----

/// Command to payment: charge the order once (the order id is the idempotency key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct ProcessPayment {
    pub order_id: Uuid,
    pub customer_id: String,
    // `Cents` is an alias: named here, utoipa would refer to it and drop the bound.
    #[schema(value_type = i64, minimum = 0)]
    pub amount_cents: Cents,
    // A `String` in Rust, but only a `PaymentMethod` travels (`POST /orders`
    // refuses any other), so the schema says that.
    #[schemars(with = "PaymentMethod")]
    #[schema(value_type = PaymentMethod)]
    pub payment_method: String,
}
contract!(ProcessPayment, "payment.ProcessPayment");

/// Command to payment: refund the order's charge, if any, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RefundPayment {
    pub order_id: Uuid,
    pub reason: String,
}
contract!(RefundPayment, "payment.RefundPayment");

// ---- replies from payment ----

/// Reply from payment: the order is charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentSucceeded {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: Cents,
}
contract!(PaymentSucceeded, "payment.PaymentSucceeded");

/// Reply from payment: the charge was declined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    pub reason: String,
}
contract!(PaymentDeclined, "payment.PaymentDeclined");

/// Reply from payment: the order's charge is refunded (nothing charged refunds nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub payment_id: Uuid,
    pub amount_cents: Cents,
}
contract!(PaymentRefunded, "payment.PaymentRefunded");

// ---- events on `orders` ----

/// Event: an order was accepted (`PLACED`); the order's event 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    // As in `ProcessPayment`.
    #[schemars(with = "PaymentMethod")]
    pub payment_method: String,
}
contract!(OrderPlaced, "orders.OrderPlaced");

/// Event: the order is paid (`PAID`); the order's event 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct OrderPaid {
    pub order_id: Uuid,
    pub customer_id: String,
    // `Cents` is an alias: named here, utoipa would refer to it and drop the bound.
    #[schema(value_type = i64, minimum = 0)]
    pub amount_cents: Cents,
    pub payment_id: Uuid,
}
contract!(OrderPaid, "orders.OrderPaid");

/// Event: the order is cancelled (`CANCELLED`); the order's event 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: String,
    pub reason: String,
}
contract!(OrderCancelled, "orders.OrderCancelled");

/// Event: the order is shipped and done (`COMPLETED`); the order's event 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCompleted {
    pub order_id: Uuid,
    pub customer_id: String,
}
contract!(OrderCompleted, "orders.OrderCompleted");

// ---- events on `shipments` ----

/// Event: a shipment is scheduled for a paid order; the shipment's event 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
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
    fn the_payment_method_schema_names_the_values_that_travel() {
        let schema = serde_json::to_value(schemars::schema_for!(PaymentMethod)).unwrap();
        let values: Vec<_> = PaymentMethod::ALL.iter().map(|m| serde_json::json!(m.as_str())).collect();
        assert_eq!(schema["enum"], serde_json::Value::Array(values), "{schema}");
        for method in PaymentMethod::ALL {
            assert_eq!(serde_json::to_value(method).unwrap(), method.as_str());
        }
    }

    #[test]
    fn payloads_are_plain_json() {
        let cmd = ReserveStock { order_id: Uuid::nil(), lines: vec![OrderLine { sku: "SKU-1".into(), quantity: 2 }] };
        let json = serde_json::to_value(&cmd).unwrap();
        assert_eq!(json["lines"][0]["quantity"], 2);
        assert_eq!(serde_json::from_value::<ReserveStock>(json).unwrap(), cmd);
    }
}

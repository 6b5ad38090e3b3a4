//! What the checks need from each database, read once into memory, and the
//! lighter [`PendingWork`] the chaos runner polls while the system drains.
//! Every query the checker (and the runner, through it) makes on the
//! services' tables is in this file; it only reads.

use crate::CheckError;
use crate::databases::Databases;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub const COMPLETED: &str = "COMPLETED";
pub const CANCELLED: &str = "CANCELLED";

/// The e-mail kinds of the email service's `sent_emails.kind`.
pub const ORDER_CONFIRMATION: &str = "order_confirmation";
pub const SHIPMENT_NOTICE: &str = "shipment_notice";
pub const CANCELLATION_NOTICE: &str = "cancellation_notice";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub total_cents: Option<i64>,
}

impl Order {
    pub fn is_completed(&self) -> bool {
        self.status == COMPLETED
    }

    pub fn is_cancelled(&self) -> bool {
        self.status == CANCELLED
    }

    pub fn is_final(&self) -> bool {
        self.is_completed() || self.is_cancelled()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    pub initial_on_hand: i32,
    pub on_hand: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i32,
    /// `reserved` or `released`
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount_cents: i64,
    /// `succeeded` or `declined`
    pub status: String,
    pub refunded: bool,
}

impl Payment {
    /// The provider took the money (whether or not it was refunded since).
    pub fn succeeded(&self) -> bool {
        self.status == "succeeded"
    }

    /// A charge that was made and not refunded.
    pub fn stands(&self) -> bool {
        self.succeeded() && !self.refunded
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub order_id: Uuid,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub customer_id: String,
    pub order_id: Uuid,
    pub kind: String,
    pub points: i64,
}

/// An outbox row not yet published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsentMessage {
    pub message_type: String,
    pub destination: String,
    /// The aggregate (order id).
    pub partition_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub orders: BTreeMap<Uuid, Order>,
    pub order_lines: Vec<OrderLine>,
    pub products: Vec<Product>,
    pub reservations: Vec<Reservation>,
    pub payments: Vec<Payment>,
    pub shipments: Vec<Shipment>,
    pub emails: Vec<Email>,
    /// Balance per customer.
    pub loyalty_balances: BTreeMap<String, i64>,
    pub loyalty_ledger: Vec<LedgerEntry>,
    /// Unsent outbox rows per service database.
    pub unsent: BTreeMap<&'static str, Vec<UnsentMessage>>,
}

impl Snapshot {
    pub async fn read(db: &Databases) -> Result<Self, CheckError> {
        let failed = |service: &'static str| move |error| CheckError::Query { service, error };
        let orders = sqlx::query_as!(Order, "SELECT id, customer_id, status, total_cents FROM orders")
            .fetch_all(&db.order)
            .await
            .map_err(failed("order"))?;
        let balances = sqlx::query!("SELECT customer_id, balance FROM loyalty_accounts")
            .fetch_all(&db.loyalty)
            .await
            .map_err(failed("loyalty"))?;
        let mut unsent = BTreeMap::new();
        for (service, pool) in db.iter() {
            let rows = sqlx::query_as!(
                UnsentMessage,
                "SELECT message_type, destination, partition_key FROM outbox WHERE sent_at IS NULL ORDER BY id",
            )
            .fetch_all(pool)
            .await
            .map_err(failed(service))?;
            unsent.insert(service, rows);
        }
        Ok(Self {
            orders: orders.into_iter().map(|o| (o.id, o)).collect(),
            order_lines: sqlx::query_as!(OrderLine, "SELECT order_id, sku, quantity FROM order_lines")
                .fetch_all(&db.order)
                .await
                .map_err(failed("order"))?,
            products: sqlx::query_as!(Product, "SELECT sku, initial_on_hand, on_hand FROM products")
                .fetch_all(&db.stock)
                .await
                .map_err(failed("stock"))?,
            reservations: sqlx::query_as!(Reservation, "SELECT order_id, sku, quantity, status FROM reservations")
                .fetch_all(&db.stock)
                .await
                .map_err(failed("stock"))?,
            payments: sqlx::query_as!(
                Payment,
                r#"SELECT p.id, p.order_id, p.amount_cents, p.status,
                          EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id) AS "refunded!"
                   FROM payments p"#,
            )
            .fetch_all(&db.payment)
            .await
            .map_err(failed("payment"))?,
            shipments: sqlx::query_as!(Shipment, "SELECT id, order_id FROM shipments")
                .fetch_all(&db.shipping)
                .await
                .map_err(failed("shipping"))?,
            emails: sqlx::query_as!(Email, "SELECT order_id, kind FROM sent_emails")
                .fetch_all(&db.email)
                .await
                .map_err(failed("email"))?,
            loyalty_balances: balances.into_iter().map(|row| (row.customer_id, row.balance)).collect(),
            loyalty_ledger: sqlx::query_as!(
                LedgerEntry,
                "SELECT customer_id, order_id, kind, points FROM loyalty_ledger"
            )
            .fetch_all(&db.loyalty)
            .await
            .map_err(failed("loyalty"))?,
            unsent,
        })
    }
}

/// What keeps a run from being drained: orders not final, accepted orders
/// not (yet) in the order database, outbox rows not yet published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingWork {
    /// Orders that exist but are neither COMPLETED nor CANCELLED.
    pub not_final: BTreeSet<Uuid>,
    /// Accepted orders the order database does not hold.
    pub missing: BTreeSet<Uuid>,
    /// Unsent outbox rows (parked ones included) per service database.
    pub unsent: BTreeMap<&'static str, i64>,
}

impl PendingWork {
    /// Reads it with one query per database, cheap enough to poll.
    pub async fn read(db: &Databases, accepted: &BTreeSet<Uuid>) -> Result<Self, CheckError> {
        let query = |error| CheckError::Query { service: "order", error };
        let not_final: Vec<Uuid> =
            sqlx::query_scalar!("SELECT id FROM orders WHERE status NOT IN ($1, $2)", COMPLETED, CANCELLED)
                .fetch_all(&db.order)
                .await
                .map_err(query)?;
        let ids: Vec<Uuid> = accepted.iter().copied().collect();
        let present: BTreeSet<Uuid> = sqlx::query_scalar!("SELECT id FROM orders WHERE id = ANY($1)", &ids)
            .fetch_all(&db.order)
            .await
            .map_err(query)?
            .into_iter()
            .collect();
        let mut unsent = BTreeMap::new();
        for (service, pool) in db.iter() {
            let count: i64 = sqlx::query_scalar!(r#"SELECT count(*) AS "unsent!" FROM outbox WHERE sent_at IS NULL"#)
                .fetch_one(pool)
                .await
                .map_err(|error| CheckError::Query { service, error })?;
            unsent.insert(service, count);
        }
        Ok(Self {
            not_final: not_final.into_iter().collect(),
            missing: accepted.difference(&present).copied().collect(),
            unsent,
        })
    }

    pub fn unsent_total(&self) -> i64 {
        self.unsent.values().sum()
    }

    /// Every order final, every accepted one present, every outbox empty.
    pub fn is_drained(&self) -> bool {
        self.not_final.is_empty() && self.missing.is_empty() && self.unsent_total() == 0
    }

    /// Orders not done: in progress, or accepted and missing.
    pub fn unfinished(&self) -> BTreeSet<Uuid> {
        self.not_final.union(&self.missing).copied().collect()
    }
}

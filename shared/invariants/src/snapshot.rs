//! What the checks need from each database, read once into memory, and the
//! lighter [`PendingWork`] the chaos runner polls while the system drains.
//! Every query the checker (and the runner, through it) makes on the
//! services' tables is in this file; it only reads.

use crate::CheckError;
use crate::databases::Databases;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

pub const COMPLETED: &str = "COMPLETED";
pub const CANCELLED: &str = "CANCELLED";

/// The e-mail kinds of the email service's `sent_emails.kind`.
pub const ORDER_CONFIRMATION: &str = "order_confirmation";
pub const SHIPMENT_NOTICE: &str = "shipment_notice";
pub const CANCELLATION_NOTICE: &str = "cancellation_notice";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderLine {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Product {
    pub sku: String,
    pub initial_on_hand: i32,
    pub on_hand: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Reservation {
    pub order_id: Uuid,
    pub sku: String,
    pub quantity: i32,
    /// `reserved` or `released`
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Shipment {
    pub id: Uuid,
    pub order_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Email {
    pub order_id: Uuid,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LedgerEntry {
    pub customer_id: String,
    pub order_id: Uuid,
    pub kind: String,
    pub points: i64,
}

/// An outbox row not yet published.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
        let orders: Vec<Order> =
            fetch("order", &db.order, "SELECT id, customer_id, status, total_cents FROM orders").await?;
        let balances: Vec<(String, i64)> =
            fetch("loyalty", &db.loyalty, "SELECT customer_id, balance FROM loyalty_accounts").await?;
        let mut unsent = BTreeMap::new();
        for (service, pool) in db.iter() {
            let rows = fetch(
                service,
                pool,
                "SELECT message_type, destination, partition_key FROM outbox WHERE sent_at IS NULL ORDER BY id",
            )
            .await?;
            unsent.insert(service, rows);
        }
        Ok(Self {
            orders: orders.into_iter().map(|o| (o.id, o)).collect(),
            order_lines: fetch("order", &db.order, "SELECT order_id, sku, quantity FROM order_lines").await?,
            products: fetch("stock", &db.stock, "SELECT sku, initial_on_hand, on_hand FROM products").await?,
            reservations: fetch("stock", &db.stock, "SELECT order_id, sku, quantity, status FROM reservations").await?,
            payments: fetch(
                "payment",
                &db.payment,
                "SELECT p.id, p.order_id, p.amount_cents, p.status,
                        EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = p.id) AS refunded
                 FROM payments p",
            )
            .await?,
            shipments: fetch("shipping", &db.shipping, "SELECT id, order_id FROM shipments").await?,
            emails: fetch("email", &db.email, "SELECT order_id, kind FROM sent_emails").await?,
            loyalty_balances: balances.into_iter().collect(),
            loyalty_ledger: fetch(
                "loyalty",
                &db.loyalty,
                "SELECT customer_id, order_id, kind, points FROM loyalty_ledger",
            )
            .await?,
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
        let not_final: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE status NOT IN ($1, $2)")
            .bind(COMPLETED)
            .bind(CANCELLED)
            .fetch_all(&db.order)
            .await
            .map_err(query)?;
        let ids: Vec<Uuid> = accepted.iter().copied().collect();
        let present: BTreeSet<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&db.order)
            .await
            .map_err(query)?
            .into_iter()
            .collect();
        let mut unsent = BTreeMap::new();
        for (service, pool) in db.iter() {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
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

async fn fetch<T>(service: &'static str, pool: &PgPool, sql: &'static str) -> Result<Vec<T>, CheckError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql).fetch_all(pool).await.map_err(|error| CheckError::Query { service, error })
}

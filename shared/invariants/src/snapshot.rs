//! What the checks need from each database, read once into memory. This is
//! the only place that knows the services' table layouts; it only reads.

use crate::CheckError;
use crate::databases::Databases;
use sqlx::PgPool;
use std::collections::BTreeMap;
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
    /// A charge that was made and not refunded.
    pub fn stands(&self) -> bool {
        self.status == "succeeded" && !self.refunded
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

async fn fetch<T>(service: &'static str, pool: &PgPool, sql: &'static str) -> Result<Vec<T>, CheckError>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql).fetch_all(pool).await.map_err(|error| CheckError::Query { service, error })
}

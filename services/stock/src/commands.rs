//! The stock service's command handlers. Each runs in the consumer's
//! transaction with the inbox row, and replies through the outbox.

use crate::store;
use contracts::MessageContract;
use contracts::catalogue::{PricedLine, ReleaseStock, ReserveStock, StockRejected, StockReleased, StockReserved};
use messaging::{HandlerError, IncomingMessage, MessageFactory, MessageHandler, Outbox};
use sqlx::PgConnection;
use std::collections::HashMap;

#[derive(Clone)]
pub struct StockCommands {
    factory: MessageFactory,
}

impl StockCommands {
    pub fn new(factory: MessageFactory) -> Self {
        Self { factory }
    }

    /// Reserves every line or none. An order already reserved (the same
    /// command sent again under a new id) gets the same answer again.
    async fn reserve(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: ReserveStock,
    ) -> Result<(), HandlerError> {
        let mut skus: Vec<String> = cmd.lines.iter().map(|l| l.sku.clone()).collect();
        skus.sort();
        skus.dedup();
        if skus.len() != cmd.lines.len() || cmd.lines.iter().any(|l| l.quantity <= 0) {
            return Err(HandlerError::Poison("ReserveStock with a repeated SKU or a non-positive quantity".into()));
        }
        store::lock_order(conn, cmd.order_id).await?;
        let products: HashMap<String, store::LockedProduct> =
            store::lock_products(conn, &skus).await?.into_iter().map(|p| (p.sku.clone(), p)).collect();
        // Read under the product locks: a second command for the same order
        // (same SKUs) waits for the first to commit and then sees its rows.
        let existing = store::reservations_of(conn, cmd.order_id).await?;

        let reply = if !existing.is_empty() {
            tracing::info!(order_id = %cmd.order_id, "already handled for this order; answering the same");
            if existing.iter().all(|r| r.status == "reserved") {
                self.reserved_reply(message, &cmd, &products)?
            } else {
                self.factory.reply(
                    &message.envelope,
                    &StockRejected {
                        order_id: cmd.order_id,
                        reason: "reservation already released".into(),
                        unavailable: vec![],
                    },
                )?
            }
        } else {
            let unavailable: Vec<String> = cmd
                .lines
                .iter()
                .filter(|l| products.get(&l.sku).is_none_or(|p| p.on_hand < l.quantity))
                .map(|l| l.sku.clone())
                .collect();
            if unavailable.is_empty() {
                for line in &cmd.lines {
                    store::reserve(conn, cmd.order_id, &line.sku, line.quantity).await?;
                }
                metrics::counter!("stock_reservations_total", "outcome" => "reserved").increment(1);
                self.reserved_reply(message, &cmd, &products)?
            } else {
                let unknown = unavailable.iter().any(|s| !products.contains_key(s));
                let reason = if unknown { "unknown SKU" } else { "insufficient stock" };
                metrics::counter!("stock_reservations_total", "outcome" => "rejected").increment(1);
                self.factory.reply(
                    &message.envelope,
                    &StockRejected { order_id: cmd.order_id, reason: reason.into(), unavailable },
                )?
            }
        };
        Outbox::add(conn, &reply).await?;
        Ok(())
    }

    fn reserved_reply(
        &self,
        message: &IncomingMessage,
        cmd: &ReserveStock,
        products: &HashMap<String, store::LockedProduct>,
    ) -> Result<messaging::OutboxMessage, HandlerError> {
        let lines: Vec<PricedLine> = cmd
            .lines
            .iter()
            .map(|l| PricedLine {
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit_price_cents: products.get(&l.sku).map(|p| p.price_cents).unwrap_or(0),
            })
            .collect();
        let total_cents = lines.iter().map(|l| l.unit_price_cents * i64::from(l.quantity)).sum();
        Ok(self.factory.reply(&message.envelope, &StockReserved { order_id: cmd.order_id, lines, total_cents })?)
    }

    /// Returns the order's reservation to stock; idempotent.
    async fn release(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cmd: ReleaseStock,
    ) -> Result<(), HandlerError> {
        // Lock in the same order as reservations do (the order, then its
        // products by SKU).
        store::lock_order(conn, cmd.order_id).await?;
        let reserved = store::reservations_of(conn, cmd.order_id).await?;
        let skus: Vec<String> = reserved.iter().map(|r| r.sku.clone()).collect();
        store::lock_products(conn, &skus).await?;
        let released = store::release(conn, cmd.order_id).await?;
        tracing::info!(order_id = %cmd.order_id, released, reason = %cmd.reason, "stock released");
        let reply = self.factory.reply(&message.envelope, &StockReleased { order_id: cmd.order_id })?;
        Outbox::add(conn, &reply).await?;
        Ok(())
    }
}

impl MessageHandler for StockCommands {
    fn message_types(&self) -> &'static [&'static str] {
        &[ReserveStock::MESSAGE_TYPE, ReleaseStock::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        match message.envelope.message_type.as_str() {
            ReserveStock::MESSAGE_TYPE => self.reserve(conn, message, message.decode()?).await,
            ReleaseStock::MESSAGE_TYPE => self.release(conn, message, message.decode()?).await,
            other => Err(HandlerError::Poison(format!("stock does not handle `{other}`"))),
        }
    }
}

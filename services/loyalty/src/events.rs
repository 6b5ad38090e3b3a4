//! The loyalty service's reaction to order events, in the consumer's
//! transaction with the inbox row. It publishes nothing.

use crate::store::{self, EntryKind, NewEntry};
use contracts::MessageContract;
use contracts::catalogue::{Cents, OrderCancelled, OrderPaid};
use messaging::{HandlerError, IncomingMessage, MessageHandler};
use sqlx::PgConnection;

/// One point per whole currency unit paid; cents are not rounded up.
pub fn points_for(amount_cents: Cents) -> i64 {
    amount_cents / 100
}

/// Appends the order's credit to the ledger (the event's and the
/// synchronous twin's way alike); the caller holds the account lock.
pub async fn credit(conn: &mut PgConnection, paid: &OrderPaid, cause_id: uuid::Uuid) -> Result<i64, sqlx::Error> {
    let credit = NewEntry {
        customer_id: paid.customer_id.clone(),
        order_id: paid.order_id,
        kind: EntryKind::Credit,
        points: points_for(paid.amount_cents),
        cause_message_id: cause_id,
    };
    store::append_entry(conn, &credit).await?;
    tracing::info!(order_id = %paid.order_id, customer_id = %paid.customer_id, points = credit.points, "points credited");
    metrics::counter!("loyalty_points_credited_total").increment(credit.points.unsigned_abs());
    Ok(credit.points)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LoyaltyEvents;

impl LoyaltyEvents {
    /// Credits the order's points, once per order.
    async fn order_paid(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        paid: OrderPaid,
    ) -> Result<(), HandlerError> {
        if paid.amount_cents < 0 {
            return Err(HandlerError::Poison(format!("OrderPaid with a negative amount ({})", paid.amount_cents)));
        }
        store::lock_account(conn, &paid.customer_id).await?;
        credit(conn, &paid, message.envelope.message_id).await?;
        Ok(())
    }

    async fn order_cancelled(
        &self,
        conn: &mut PgConnection,
        message: &IncomingMessage,
        cancelled: OrderCancelled,
    ) -> Result<(), HandlerError> {
        let Some((customer_id, _)) = store::net_points_of_order(conn, cancelled.order_id).await? else {
            tracing::debug!(order_id = %cancelled.order_id, "cancelled order was never credited");
            return Ok(());
        };
        // Read what is held again under the account lock: two reversals of
        // one order at once must not both see it unreversed.
        store::lock_account(conn, &customer_id).await?;
        let held = store::net_points_of_order(conn, cancelled.order_id).await?.map_or(0, |(_, held)| held);
        if held <= 0 {
            tracing::info!(order_id = %cancelled.order_id, "nothing left to reverse");
            return Ok(());
        }
        let reversal = NewEntry {
            customer_id: customer_id.clone(),
            order_id: cancelled.order_id,
            kind: EntryKind::Reversal,
            points: -held,
            cause_message_id: message.envelope.message_id,
        };
        store::append_entry(conn, &reversal).await?;
        tracing::info!(order_id = %cancelled.order_id, %customer_id, points = held, "credit reversed");
        Ok(())
    }
}

impl MessageHandler for LoyaltyEvents {
    fn message_types(&self) -> &'static [&'static str] {
        &[OrderPaid::MESSAGE_TYPE, OrderCancelled::MESSAGE_TYPE]
    }

    async fn handle(&self, conn: &mut PgConnection, message: &IncomingMessage) -> Result<(), HandlerError> {
        match message.envelope.message_type.as_str() {
            OrderPaid::MESSAGE_TYPE => self.order_paid(conn, message, message.decode()?).await,
            OrderCancelled::MESSAGE_TYPE => self.order_cancelled(conn, message, message.decode()?).await,
            other => Err(HandlerError::Poison(format!("loyalty does not handle `{other}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_whole_currency_unit() {
        assert_eq!(points_for(0), 0);
        assert_eq!(points_for(99), 0);
        assert_eq!(points_for(100), 1);
        assert_eq!(points_for(1_798), 17);
        assert_eq!(points_for(100_000), 1_000);
    }
}

//! Charging and refunding an order: the domain logic behind both the
//! `ProcessPayment`/`RefundPayment` commands and the synchronous twin's
//! calls, so the two paths have the same effects.

use crate::provider::{self, Decision};
use crate::store::{self, NewPayment, NewRefund, Payment, PaymentStatus};
use contracts::catalogue::{Cents, PaymentRefunded, ProcessPayment};
use messaging::HandlerError;
use sqlx::PgConnection;
use uuid::Uuid;

/// Charges the order once. The order id is the idempotency key: a second
/// request for the same order, whatever its id, gets the recorded outcome
/// again and charges nothing. `request_id` is the command's message id (or
/// the synchronous call's own).
pub async fn charge(
    conn: &mut PgConnection,
    cmd: &ProcessPayment,
    request_id: Uuid,
    default_limit_cents: Cents,
) -> Result<Payment, HandlerError> {
    if cmd.amount_cents < 0 {
        return Err(HandlerError::Poison(format!("a payment of a negative amount ({})", cmd.amount_cents)));
    }
    // Only `POST /orders` puts a method in a command, and it refuses others;
    // a command from anywhere else naming one is not charged (nor approved).
    if contracts::catalogue::PaymentMethod::parse(&cmd.payment_method).is_none() {
        return Err(HandlerError::Poison(format!("unknown payment method `{}`", cmd.payment_method)));
    }
    let limit = store::customer_limit(conn, &cmd.customer_id).await?.unwrap_or(default_limit_cents);
    let (status, decline_reason) = match provider::decide(&cmd.payment_method, cmd.amount_cents, limit) {
        Decision::Approve => (PaymentStatus::Succeeded, None),
        Decision::Decline { reason } => (PaymentStatus::Declined, Some(reason)),
    };
    let new_payment = NewPayment {
        id: Uuid::now_v7(),
        order_id: cmd.order_id,
        customer_id: cmd.customer_id.clone(),
        amount_cents: cmd.amount_cents,
        payment_method: cmd.payment_method.clone(),
        status,
        decline_reason,
        request_message_id: request_id,
    };
    if let Some(payment) = store::insert_payment(conn, &new_payment).await? {
        tracing::info!(order_id = %cmd.order_id, payment_id = %payment.id, status = payment.status.as_str(), "payment decided");
        metrics::counter!("payments_total", "outcome" => payment.status.as_str()).increment(1);
        return Ok(payment);
    }
    let existing = store::lock_payment_of_order(conn, cmd.order_id).await?.ok_or_else(|| {
        HandlerError::Failed(format!("payment of order {} conflicted but cannot be read", cmd.order_id))
    })?;
    if existing.amount_cents != cmd.amount_cents {
        tracing::warn!(order_id = %cmd.order_id, recorded = existing.amount_cents, requested = cmd.amount_cents,
            "repeated payment request asks for a different amount; answering the recorded outcome");
    }
    tracing::info!(order_id = %cmd.order_id, payment_id = %existing.id, "order already charged or declined; answering the same");
    metrics::counter!("payments_repeated_total").increment(1);
    Ok(existing)
}

/// Refunds a succeeded payment in full, once. With nothing charged (no
/// payment, or a declined one) nothing is written and the answer says 0
/// cents were refunded: either way, no charge stands afterwards.
pub async fn refund(
    conn: &mut PgConnection,
    order_id: Uuid,
    reason: &str,
    request_id: Uuid,
) -> Result<PaymentRefunded, HandlerError> {
    let refunded = match store::lock_payment_of_order(conn, order_id).await? {
        None => {
            tracing::warn!(%order_id, "refund requested for an order that was never charged");
            PaymentRefunded { order_id, payment_id: Uuid::nil(), amount_cents: 0 }
        }
        Some(payment) if payment.status == PaymentStatus::Declined => {
            tracing::info!(%order_id, payment_id = %payment.id, "refund of a declined payment: nothing to return");
            PaymentRefunded { order_id, payment_id: payment.id, amount_cents: 0 }
        }
        Some(payment) => {
            let new_refund = NewRefund {
                id: Uuid::now_v7(),
                payment_id: payment.id,
                order_id: payment.order_id,
                amount_cents: payment.amount_cents,
                reason: reason.to_owned(),
                request_message_id: request_id,
            };
            let refund = store::refund_once(conn, &new_refund).await?;
            if refund.id == new_refund.id {
                tracing::info!(%order_id, payment_id = %payment.id, amount_cents = refund.amount_cents, %reason, "payment refunded");
                metrics::counter!("refunds_total").increment(1);
            } else {
                tracing::info!(%order_id, payment_id = %payment.id, "payment already refunded; answering the same");
            }
            PaymentRefunded { order_id, payment_id: payment.id, amount_cents: refund.amount_cents }
        }
    };
    Ok(refunded)
}

//! What each e-mail says. Pure: the same event always gives the same
//! e-mail, with a Message-ID fixed by order and kind, so a copy delivered
//! twice is recognisable as the same e-mail.

use contracts::catalogue::{Cents, OrderCancelled, OrderPaid, ShipmentScheduled};
use serde::Serialize;
use uuid::Uuid;

/// Customers have no address of their own in this system: `<customer id>@` this.
pub const RECIPIENT_DOMAIN: &str = "example.com";
/// The right-hand side of every Message-ID.
pub const MESSAGE_ID_DOMAIN: &str = "ordermesh.local";

// Stored as the text `as_str` gives (the `sent_emails.kind` CHECK
// constraint); sqlx decodes it by the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EmailKind {
    /// On `OrderPaid`.
    OrderConfirmation,
    /// On `ShipmentScheduled`.
    ShipmentNotice,
    /// On `OrderCancelled`.
    CancellationNotice,
}

impl EmailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailKind::OrderConfirmation => "order_confirmation",
            EmailKind::ShipmentNotice => "shipment_notice",
            EmailKind::CancellationNotice => "cancellation_notice",
        }
    }
}

/// An e-mail ready to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposedEmail {
    pub order_id: Uuid,
    pub kind: EmailKind,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub message_id_header: String,
}

pub fn recipient_of(customer_id: &str) -> String {
    format!("{customer_id}@{RECIPIENT_DOMAIN}")
}

/// `<{order_id}.{kind}@ordermesh.local>`
pub fn message_id_header(order_id: Uuid, kind: EmailKind) -> String {
    format!("<{order_id}.{}@{MESSAGE_ID_DOMAIN}>", kind.as_str())
}

/// `1798` → `17.98`
pub fn format_amount(cents: Cents) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

fn composed(order_id: Uuid, kind: EmailKind, customer_id: &str, subject: String, body: String) -> ComposedEmail {
    ComposedEmail {
        order_id,
        kind,
        recipient: recipient_of(customer_id),
        subject,
        body,
        message_id_header: message_id_header(order_id, kind),
    }
}

pub fn order_confirmation(paid: &OrderPaid) -> ComposedEmail {
    composed(
        paid.order_id,
        EmailKind::OrderConfirmation,
        &paid.customer_id,
        format!("Your order {} is confirmed", paid.order_id),
        format!(
            "Hello {},\n\nthank you for your order {}. We received your payment of {} (payment {}).\n\
             We will let you know when it ships.\n",
            paid.customer_id,
            paid.order_id,
            format_amount(paid.amount_cents),
            paid.payment_id
        ),
    )
}

pub fn shipment_notice(scheduled: &ShipmentScheduled) -> ComposedEmail {
    composed(
        scheduled.order_id,
        EmailKind::ShipmentNotice,
        &scheduled.customer_id,
        format!("Your order {} is on its way", scheduled.order_id),
        format!(
            "Hello {},\n\nyour order {} has been handed to {} (shipment {}).\n",
            scheduled.customer_id, scheduled.order_id, scheduled.carrier, scheduled.shipment_id
        ),
    )
}

pub fn cancellation_notice(cancelled: &OrderCancelled) -> ComposedEmail {
    composed(
        cancelled.order_id,
        EmailKind::CancellationNotice,
        &cancelled.customer_id,
        format!("Your order {} was cancelled", cancelled.order_id),
        format!(
            "Hello {},\n\nwe are sorry: your order {} was cancelled ({}).\nAnything charged for it is refunded.\n",
            cancelled.customer_id, cancelled.order_id, cancelled.reason
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_printed_in_currency_units() {
        assert_eq!(format_amount(1_798), "17.98");
        assert_eq!(format_amount(5), "0.05");
        assert_eq!(format_amount(100_000), "1000.00");
        assert_eq!(format_amount(-250), "-2.50");
    }

    #[test]
    fn the_message_id_depends_only_on_order_and_kind() {
        let order_id = Uuid::now_v7();
        let paid = OrderPaid { order_id, customer_id: "c-1".into(), amount_cents: 1_798, payment_id: Uuid::now_v7() };
        let first = order_confirmation(&paid);
        let again = order_confirmation(&OrderPaid { payment_id: Uuid::now_v7(), ..paid.clone() });
        assert_eq!(first.message_id_header, again.message_id_header);
        assert_eq!(first.message_id_header, format!("<{order_id}.order_confirmation@ordermesh.local>"));
        assert_eq!(first.recipient, "c-1@example.com");
        assert!(first.body.contains("17.98"));
        let cancelled =
            cancellation_notice(&OrderCancelled { order_id, customer_id: "c-1".into(), reason: "x".into() });
        assert_ne!(cancelled.message_id_header, first.message_id_header);
    }

    /// Rows are written with `as_str` and read back by sqlx's derived names.
    #[test]
    fn kinds_are_stored_as_the_text_sqlx_reads() {
        use sqlx::Encode;
        for kind in [EmailKind::OrderConfirmation, EmailKind::ShipmentNotice, EmailKind::CancellationNotice] {
            let mut buf = sqlx::postgres::PgArgumentBuffer::default();
            let _ = Encode::<sqlx::Postgres>::encode_by_ref(&kind, &mut buf).unwrap();
            assert_eq!(buf.as_slice(), kind.as_str().as_bytes());
        }
    }
}

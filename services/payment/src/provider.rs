//! The simulated provider's decision. Deterministic, so a test or a demo
//! chooses the outcome through the order it places: the payment method
//! `card_declined` is always declined, and so is an amount over the
//! customer's limit.

use contracts::catalogue::Cents;

/// The payment method the simulated provider always declines.
pub const DECLINED_METHOD: &str = contracts::catalogue::PaymentMethod::CardDeclined.as_str();

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Decline { reason: String },
}

/// Whether to charge `amount_cents` with `payment_method` to a customer
/// allowed at most `limit_cents`.
pub fn decide(payment_method: &str, amount_cents: Cents, limit_cents: Cents) -> Decision {
    if payment_method == DECLINED_METHOD {
        return Decision::Decline { reason: "card declined by the issuer".to_owned() };
    }
    if amount_cents > limit_cents {
        return Decision::Decline {
            reason: format!("amount {amount_cents} cents exceeds the customer's limit of {limit_cents} cents"),
        };
    }
    Decision::Approve
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ordinary_card_within_the_limit_is_charged() {
        assert_eq!(decide("card", 1_798, 100_000), Decision::Approve);
        assert_eq!(decide("card", 100_000, 100_000), Decision::Approve, "the limit itself is allowed");
        assert_eq!(decide("invoice", 0, 0), Decision::Approve);
    }

    #[test]
    fn the_declined_card_is_declined_whatever_the_amount() {
        assert!(matches!(decide(DECLINED_METHOD, 1, 100_000), Decision::Decline { .. }));
    }

    #[test]
    fn an_amount_over_the_limit_is_declined_and_says_why() {
        let Decision::Decline { reason } = decide("card", 100_001, 100_000) else { panic!("expected a decline") };
        assert!(reason.contains("100001") && reason.contains("100000"), "{reason}");
    }
}

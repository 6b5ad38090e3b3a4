//! The database invariants (1 to 7a) as pure functions of a [`Snapshot`].
//! Orders still in progress are left to invariant 1, which already fails
//! for them; the others judge only final orders (and rows of orders the
//! order database does not know, which no run should leave behind).

use crate::report::{CheckResult, Invariant, ResultBuilder};
use crate::snapshot::{CANCELLATION_NOTICE, ORDER_CONFIRMATION, Order, SHIPMENT_NOTICE, Snapshot};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// Invariant 1: Every order is COMPLETED or CANCELLED; with the list of ids the API
/// accepted, also: each accepted id exists, and no order exists that was
/// not accepted.
pub fn orders_final(s: &Snapshot, accepted: Option<&BTreeSet<Uuid>>, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(Invariant::OrdersFinal, max);
    r.count("orders", s.orders.len())
        .count("completed", s.orders.values().filter(|o| o.is_completed()).count())
        .count("cancelled", s.orders.values().filter(|o| o.is_cancelled()).count())
        .count("not_final", s.orders.values().filter(|o| !o.is_final()).count());
    for order in s.orders.values().filter(|o| !o.is_final()) {
        r.offend(order.id, format!("still {}, not COMPLETED or CANCELLED", order.status));
    }
    if let Some(accepted) = accepted {
        let missing: Vec<&Uuid> = accepted.iter().filter(|id| !s.orders.contains_key(id)).collect();
        let unrequested: Vec<&Uuid> = s.orders.keys().filter(|id| !accepted.contains(id)).collect();
        r.count("accepted", accepted.len())
            .count("accepted_missing", missing.len())
            .count("not_accepted", unrequested.len());
        for id in missing {
            r.offend(id, "answered 2xx by the API, but no such order exists");
        }
        for id in unrequested {
            r.offend(id, "exists, but no accepted request created it");
        }
    }
    r.finish()
}

/// Groups `items` by order id.
fn by_order<T>(items: &[T], order_of: impl Fn(&T) -> Uuid) -> BTreeMap<Uuid, Vec<&T>> {
    let mut grouped: BTreeMap<Uuid, Vec<&T>> = BTreeMap::new();
    for item in items {
        grouped.entry(order_of(item)).or_default().push(item);
    }
    grouped
}

/// Invariant 2 ("exactly one successful charge per COMPLETED order, none
/// left standing for a CANCELLED one"): a COMPLETED order has exactly one
/// succeeded charge, refunded or not, and that one stands (unrefunded) and
/// is of its total; a CANCELLED one has no standing charge (a refunded one
/// is fine); no charge stands for an order the order database does not know.
pub fn payment(s: &Snapshot, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(Invariant::Payment, max);
    let payments = by_order(&s.payments, |p| p.order_id);
    r.count("payments", s.payments.len())
        .count("succeeded", s.payments.iter().filter(|p| p.succeeded()).count())
        .count("declined", s.payments.iter().filter(|p| p.status == "declined").count())
        .count("refunded", s.payments.iter().filter(|p| p.refunded).count())
        .count("standing", s.payments.iter().filter(|p| p.stands()).count());
    for order in s.orders.values() {
        let of_order = || payments.get(&order.id).into_iter().flatten();
        if order.is_completed() {
            let succeeded: Vec<_> = of_order().filter(|p| p.succeeded()).collect();
            match succeeded.as_slice() {
                [] => r.offend(order.id, "COMPLETED without a successful charge"),
                [charge] if charge.refunded => r.offend(order.id, "COMPLETED, but its charge was refunded"),
                [charge] if Some(charge.amount_cents) != order.total_cents => r.offend(
                    order.id,
                    format!("charged {} cents, order total {:?}", charge.amount_cents, order.total_cents),
                ),
                [_] => {}
                more => {
                    // A refund does not undo the extra charge: the customer was charged twice.
                    let refunded = more.iter().filter(|p| p.refunded).count();
                    r.offend(
                        order.id,
                        format!("COMPLETED with {} successful charges ({refunded} refunded), expected 1", more.len()),
                    )
                }
            }
        } else if order.is_cancelled() {
            let standing = of_order().filter(|p| p.stands()).count();
            if standing > 0 {
                r.offend(order.id, format!("CANCELLED with {standing} standing charge(s)"));
            }
        }
    }
    for (order_id, of_order) in &payments {
        if !s.orders.contains_key(order_id) && of_order.iter().any(|p| p.stands()) {
            r.offend(order_id, "charge standing for an order the order database does not know");
        }
    }
    r.finish()
}

/// Invariant 3: Per SKU, initial − on hand = quantities of the non-cancelled orders'
/// lines = quantities of its reserved rows, and on hand is not negative; a COMPLETED order holds a
/// reservation of each of its lines; a CANCELLED one holds none.
pub fn stock(s: &Snapshot, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(Invariant::Stock, max);
    let mut ordered: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &s.order_lines {
        if s.orders.get(&line.order_id).is_some_and(|o| !o.is_cancelled()) {
            *ordered.entry(line.sku.as_str()).or_default() += i64::from(line.quantity);
        }
    }
    r.count("skus", s.products.len())
        .count("reserved", s.reservations.iter().filter(|res| res.status == "reserved").count())
        .count("released", s.reservations.iter().filter(|res| res.status == "released").count())
        .count("units_held_by_orders", ordered.values().sum::<i64>());
    let mut in_reservations: BTreeMap<&str, i64> = BTreeMap::new();
    for res in s.reservations.iter().filter(|res| res.status == "reserved") {
        *in_reservations.entry(res.sku.as_str()).or_default() += i64::from(res.quantity);
    }
    for product in &s.products {
        let taken = i64::from(product.initial_on_hand) - i64::from(product.on_hand);
        let held = ordered.get(product.sku.as_str()).copied().unwrap_or(0);
        // Stock's own books must agree too: two faults that cancel out
        // against the orders (a release that forgot on hand, a reservation
        // that forgot it the other way) still show here.
        let reserved = in_reservations.get(product.sku.as_str()).copied().unwrap_or(0);
        if taken != reserved {
            r.offend(
                &product.sku,
                format!(
                    "initial {} − on hand {} = {taken}, but its reservation rows hold {reserved}",
                    product.initial_on_hand, product.on_hand
                ),
            );
        }
        if product.on_hand < 0 {
            r.offend(&product.sku, format!("on hand is negative ({})", product.on_hand));
        }
        if taken != held {
            r.offend(
                &product.sku,
                format!(
                    "initial {} − on hand {} = {taken}, but non-cancelled orders hold {held}",
                    product.initial_on_hand, product.on_hand
                ),
            );
        }
    }
    let known: BTreeSet<&str> = s.products.iter().map(|p| p.sku.as_str()).collect();
    for sku in ordered.keys().filter(|sku| !known.contains(*sku)) {
        r.offend(sku, "held by non-cancelled orders but unknown to stock");
    }
    let reservations = by_order(&s.reservations, |res| res.order_id);
    let lines = by_order(&s.order_lines, |l| l.order_id);
    for order in s.orders.values() {
        let held: Vec<_> =
            reservations.get(&order.id).into_iter().flatten().filter(|res| res.status == "reserved").collect();
        if order.is_cancelled() {
            for res in &held {
                r.offend(order.id, format!("CANCELLED but still holds {} × {}", res.quantity, res.sku));
            }
        } else if order.is_completed() {
            for line in lines.get(&order.id).into_iter().flatten() {
                let reserved: i32 = held.iter().filter(|res| res.sku == line.sku).map(|res| res.quantity).sum();
                if reserved != line.quantity {
                    r.offend(
                        order.id,
                        format!("COMPLETED with {} × {} ordered but {reserved} reserved", line.quantity, line.sku),
                    );
                }
            }
        }
    }
    for (order_id, of_order) in &reservations {
        if !s.orders.contains_key(order_id) && of_order.iter().any(|res| res.status == "reserved") {
            r.offend(order_id, "stock reserved for an order the order database does not know");
        }
    }
    r.finish()
}

/// Invariant 4: Exactly one shipment per COMPLETED order, none for a CANCELLED one or
/// for an order the order database does not know.
pub fn shipping(s: &Snapshot, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(Invariant::Shipping, max);
    let shipments = by_order(&s.shipments, |sh| sh.order_id);
    r.count("shipments", s.shipments.len());
    for order in s.orders.values() {
        let count = shipments.get(&order.id).map_or(0, Vec::len);
        if order.is_completed() && count != 1 {
            r.offend(order.id, format!("COMPLETED with {count} shipments, expected 1"));
        } else if order.is_cancelled() && count != 0 {
            r.offend(order.id, format!("CANCELLED with {count} shipment(s)"));
        }
    }
    for order_id in shipments.keys().filter(|id| !s.orders.contains_key(id)) {
        r.offend(order_id, "shipment for an order the order database does not know");
    }
    r.finish()
}

/// The e-mails a final order calls for: `(kind, how many)`.
fn expected_emails(order: &Order) -> [(&'static str, usize); 3] {
    let completed = usize::from(order.is_completed());
    let cancelled = usize::from(order.is_cancelled());
    [(ORDER_CONFIRMATION, completed), (SHIPMENT_NOTICE, completed), (CANCELLATION_NOTICE, cancelled)]
}

/// Invariant 5: A COMPLETED order has one confirmation and one shipment notice; a
/// CANCELLED one has one cancellation notice; nothing else, and nothing for
/// orders the order database does not know.
pub fn email(s: &Snapshot, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(Invariant::Email, max);
    let mut sent: BTreeMap<(Uuid, &str), usize> = BTreeMap::new();
    for e in &s.emails {
        *sent.entry((e.order_id, e.kind.as_str())).or_default() += 1;
    }
    r.count("emails", s.emails.len());
    for kind in [ORDER_CONFIRMATION, SHIPMENT_NOTICE, CANCELLATION_NOTICE] {
        r.count(kind, s.emails.iter().filter(|e| e.kind == kind).count());
    }
    let known_kinds = [ORDER_CONFIRMATION, SHIPMENT_NOTICE, CANCELLATION_NOTICE];
    for order in s.orders.values().filter(|o| o.is_final()) {
        for (kind, expected) in expected_emails(order) {
            let count = sent.get(&(order.id, kind)).copied().unwrap_or(0);
            if count != expected {
                r.offend(order.id, format!("{} with {count} {kind} e-mail(s), expected {expected}", order.status));
            }
        }
    }
    for ((order_id, kind), count) in &sent {
        if !known_kinds.contains(kind) {
            r.offend(order_id, format!("{count} e-mail(s) of unknown kind `{kind}`"));
        } else if !s.orders.contains_key(order_id) {
            r.offend(order_id, format!("{count} {kind} e-mail(s) for an order the order database does not know"));
        }
    }
    r.finish()
}

/// Points a COMPLETED order earns.
fn points_of(order: &Order) -> i64 {
    if order.is_completed() { order.total_cents.unwrap_or(0) / 100 } else { 0 }
}

/// Invariant 6: For every customer of the order database: balance = points of their
/// COMPLETED orders (total / 100), and the balance is the sum of their
/// ledger. Each final order's net ledger points match what it earns. Like
/// invariants 2–5, it also flags what no known order explains: ledger
/// entries of an order the order database does not know, and a balance or
/// ledger entries of a customer it does not know.
pub fn loyalty(s: &Snapshot, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(Invariant::Loyalty, max);
    let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
    for order in s.orders.values() {
        *expected.entry(order.customer_id.as_str()).or_default() += points_of(order);
    }
    let mut ledger_by_customer: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    let mut ledger_by_order: BTreeMap<Uuid, (usize, i64)> = BTreeMap::new();
    for entry in &s.loyalty_ledger {
        for sum in [
            ledger_by_customer.entry(entry.customer_id.as_str()).or_default(),
            ledger_by_order.entry(entry.order_id).or_default(),
        ] {
            sum.0 += 1;
            sum.1 += entry.points;
        }
    }
    r.count("customers", expected.len())
        .count("accounts", s.loyalty_balances.len())
        .count("ledger_entries", s.loyalty_ledger.len())
        .count("points_expected", expected.values().sum::<i64>());
    for (customer, points) in &expected {
        let balance = s.loyalty_balances.get(*customer).copied().unwrap_or(0);
        if balance != *points {
            r.offend(customer, format!("customer balance {balance}, completed orders earn {points}"));
        }
        let (_, ledger) = ledger_by_customer.get(customer).copied().unwrap_or_default();
        if ledger != balance {
            r.offend(customer, format!("customer balance {balance}, but the ledger adds up to {ledger}"));
        }
    }
    let mut over_credited = 0;
    for order in s.orders.values().filter(|o| o.is_final()) {
        let (_, net) = ledger_by_order.get(&order.id).copied().unwrap_or_default();
        // Too many points is a credit applied twice; too few may be a
        // consumer still behind. Counted apart so a test can tell.
        if net > points_of(order) {
            over_credited += 1;
        }
        if net != points_of(order) {
            r.offend(
                order.id,
                format!("{} with {net} net points in the ledger, expected {}", order.status, points_of(order)),
            );
        }
    }
    for (order_id, (entries, net)) in ledger_by_order.iter().filter(|(id, _)| !s.orders.contains_key(*id)) {
        r.offend(
            order_id,
            format!("{entries} ledger entries ({net} net points) for an order the order database does not know"),
        );
    }
    r.count("orders_over_credited", over_credited);
    let mut customers: BTreeSet<&str> = s.loyalty_balances.keys().map(String::as_str).collect();
    customers.extend(ledger_by_customer.keys().copied());
    for customer in customers.into_iter().filter(|c| !expected.contains_key(c)) {
        let balance = s.loyalty_balances.get(customer).copied().unwrap_or(0);
        let (entries, _) = ledger_by_customer.get(customer).copied().unwrap_or_default();
        // An account left at zero with no entries explains itself.
        if balance != 0 || entries > 0 {
            r.offend(
                customer,
                format!(
                    "balance {balance} and {entries} ledger entries for a customer the order database does not know"
                ),
            );
        }
    }
    r.finish()
}

/// Invariant 7a: No outbox row waits to be published, in any database.
pub fn outboxes_drained(s: &Snapshot, max: usize) -> CheckResult {
    let mut r = ResultBuilder::new(Invariant::OutboxesDrained, max);
    for (service, unsent) in &s.unsent {
        r.count(&format!("{service}_unsent"), unsent.len());
        for message in unsent {
            r.offend(
                &message.partition_key,
                format!("{} to {} unsent in the {service} outbox", message.message_type, message.destination),
            );
        }
    }
    r.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Email, LedgerEntry, OrderLine, Payment, Product, Reservation, Shipment};

    fn order(status: &str, total: i64) -> Order {
        Order { id: Uuid::now_v7(), customer_id: "c-1".into(), status: status.into(), total_cents: Some(total) }
    }

    /// One completed order (2 × SKU-1 at 9.99) with everything it leaves
    /// behind, and one cancelled order that left nothing standing.
    fn consistent() -> (Snapshot, Uuid, Uuid) {
        let done = order("COMPLETED", 1_998);
        let gone = order("CANCELLED", 500);
        let (done_id, gone_id) = (done.id, gone.id);
        let s = Snapshot {
            order_lines: vec![
                OrderLine { order_id: done_id, sku: "SKU-1".into(), quantity: 2 },
                OrderLine { order_id: gone_id, sku: "SKU-1".into(), quantity: 1 },
            ],
            products: vec![Product { sku: "SKU-1".into(), initial_on_hand: 10, on_hand: 8 }],
            reservations: vec![
                Reservation { order_id: done_id, sku: "SKU-1".into(), quantity: 2, status: "reserved".into() },
                Reservation { order_id: gone_id, sku: "SKU-1".into(), quantity: 1, status: "released".into() },
            ],
            payments: vec![
                Payment {
                    id: Uuid::now_v7(),
                    order_id: done_id,
                    amount_cents: 1_998,
                    status: "succeeded".into(),
                    refunded: false,
                },
                Payment {
                    id: Uuid::now_v7(),
                    order_id: gone_id,
                    amount_cents: 500,
                    status: "declined".into(),
                    refunded: false,
                },
            ],
            shipments: vec![Shipment { id: Uuid::now_v7(), order_id: done_id }],
            emails: vec![
                Email { order_id: done_id, kind: ORDER_CONFIRMATION.into() },
                Email { order_id: done_id, kind: SHIPMENT_NOTICE.into() },
                Email { order_id: gone_id, kind: CANCELLATION_NOTICE.into() },
            ],
            loyalty_balances: [("c-1".to_owned(), 19)].into_iter().collect(),
            loyalty_ledger: vec![LedgerEntry {
                customer_id: "c-1".into(),
                order_id: done_id,
                kind: "credit".into(),
                points: 19,
            }],
            orders: [(done_id, done), (gone_id, gone)].into_iter().collect(),
            ..Snapshot::default()
        };
        (s, done_id, gone_id)
    }

    fn all(s: &Snapshot) -> Vec<CheckResult> {
        vec![
            orders_final(s, None, 10),
            payment(s, 10),
            stock(s, 10),
            shipping(s, 10),
            email(s, 10),
            loyalty(s, 10),
            outboxes_drained(s, 10),
        ]
    }

    fn failing(s: &Snapshot) -> Vec<Invariant> {
        all(s).into_iter().filter(|c| c.failed()).map(|c| c.invariant).collect()
    }

    #[test]
    fn a_consistent_world_passes_everything() {
        let (s, _, _) = consistent();
        for check in all(&s) {
            assert!(check.passed(), "{check:?}");
        }
    }

    #[test]
    fn a_refunded_charge_of_a_cancelled_order_no_longer_stands() {
        let (mut s, _, gone) = consistent();
        s.payments.push(Payment {
            id: Uuid::now_v7(),
            order_id: gone,
            amount_cents: 500,
            status: "succeeded".into(),
            refunded: true,
        });
        assert!(failing(&s).is_empty());
        s.payments.last_mut().unwrap().refunded = false;
        assert_eq!(failing(&s), [Invariant::Payment]);
        assert!(payment(&s, 10).names(&gone.to_string()));
    }

    #[test]
    fn a_charge_of_the_wrong_amount_is_named() {
        let (mut s, done, _) = consistent();
        s.payments[0].amount_cents = 1;
        assert_eq!(failing(&s), [Invariant::Payment]);
        assert!(payment(&s, 10).names(&done.to_string()));
    }

    #[test]
    fn offenders_beyond_the_limit_are_counted_not_listed() {
        let (mut s, _, _) = consistent();
        for _ in 0..5 {
            let o = order("PAID", 100);
            s.orders.insert(o.id, o);
        }
        let check = orders_final(&s, None, 2);
        assert_eq!((check.offenders.len(), check.offender_count), (2, 5));
        assert_eq!(check.counts["not_final"], 5);
    }

    #[test]
    fn an_extra_email_of_any_kind_fails_only_the_email_check() {
        let (mut s, done, gone) = consistent();
        s.emails.push(Email { order_id: gone, kind: ORDER_CONFIRMATION.into() });
        assert_eq!(failing(&s), [Invariant::Email]);
        assert!(email(&s, 10).names(&gone.to_string()));
        assert!(!email(&s, 10).names(&done.to_string()));
    }

    #[test]
    fn a_second_successful_charge_of_a_completed_order_fails_even_if_refunded() {
        let (mut s, done, gone) = consistent();
        s.payments.push(Payment {
            id: Uuid::now_v7(),
            order_id: done,
            amount_cents: 1_998,
            status: "succeeded".into(),
            refunded: true,
        });
        assert_eq!(failing(&s), [Invariant::Payment]);
        let check = payment(&s, 10);
        assert!(check.names(&done.to_string()) && !check.names(&gone.to_string()), "{check:?}");
    }

    #[test]
    fn the_only_charge_of_a_completed_order_refunded_fails() {
        let (mut s, done, _) = consistent();
        s.payments[0].refunded = true;
        assert_eq!(failing(&s), [Invariant::Payment]);
        assert!(payment(&s, 10).names(&done.to_string()));
    }

    #[test]
    fn loyalty_points_of_an_unknown_order_fail_even_when_they_net_to_zero() {
        let (mut s, done, _) = consistent();
        let ghost = Uuid::now_v7();
        for points in [7, -7] {
            let kind = if points > 0 { "credit" } else { "reversal" };
            s.loyalty_ledger.push(LedgerEntry {
                customer_id: "c-1".into(),
                order_id: ghost,
                kind: kind.into(),
                points,
            });
        }
        assert_eq!(failing(&s), [Invariant::Loyalty]);
        let check = loyalty(&s, 10);
        assert!(check.names(&ghost.to_string()), "{check:?}");
        assert!(!check.names(&done.to_string()) && !check.names("c-1"), "{check:?}");
    }

    #[test]
    fn loyalty_balance_of_an_unknown_customer_fails() {
        let (mut s, _, _) = consistent();
        s.loyalty_balances.insert("c-ghost".into(), 7);
        assert_eq!(failing(&s), [Invariant::Loyalty]);
        assert!(loyalty(&s, 10).names("c-ghost"));
        // An empty account of an unknown customer is harmless.
        s.loyalty_balances.insert("c-ghost".into(), 0);
        assert!(failing(&s).is_empty());
    }

    #[test]
    fn a_reversed_credit_of_a_completed_order_is_caught_by_order_and_customer() {
        let (mut s, done, _) = consistent();
        s.loyalty_ledger.push(LedgerEntry {
            customer_id: "c-1".into(),
            order_id: done,
            kind: "reversal".into(),
            points: -19,
        });
        s.loyalty_balances.insert("c-1".into(), 0);
        let check = loyalty(&s, 10);
        assert!(check.failed());
        assert!(check.names(&done.to_string()) && check.names("c-1"));
    }
}

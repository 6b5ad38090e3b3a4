//! The outcome of a check run: one [`CheckResult`] per invariant, printable
//! for people ([`std::fmt::Display`]) and as JSON ([`Report::to_json`]).

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The invariants of docs/design.md (Invariants); the
/// seventh is split by what it reads, since the brokers are optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// 1. Every order final; accepted orders exist, and only those.
    OrdersFinal,
    /// 2. Exactly one successful (and standing) charge per completed order, none standing per cancelled one.
    Payment,
    /// 3. Stock taken = quantities of non-cancelled orders; nothing held by cancelled ones.
    Stock,
    /// 4. One shipment per completed order, none per cancelled one.
    Shipping,
    /// 5. The e-mails each order's outcome calls for, once each.
    Email,
    /// 6. Each customer's balance = points of their completed orders.
    Loyalty,
    /// 7. No unsent outbox row in any database.
    OutboxesDrained,
    /// 7. The RabbitMQ dead-letter queues are empty.
    AmqpDeadLettersEmpty,
    /// 7. The Kafka dead-letter topics are empty.
    KafkaDeadLettersEmpty,
    /// Also 7: nothing is still on its way (command and reply queues empty,
    /// every consumer group at the end of its topics). With the rest of 7,
    /// an accepted order that is not final was lost, not delayed.
    NothingInFlight,
}

impl Invariant {
    pub const ALL: [Invariant; 10] = [
        Invariant::OrdersFinal,
        Invariant::Payment,
        Invariant::Stock,
        Invariant::Shipping,
        Invariant::Email,
        Invariant::Loyalty,
        Invariant::OutboxesDrained,
        Invariant::AmqpDeadLettersEmpty,
        Invariant::KafkaDeadLettersEmpty,
        Invariant::NothingInFlight,
    ];

    /// Its number in docs/design.md.
    pub fn number(self) -> &'static str {
        match self {
            Invariant::OrdersFinal => "1",
            Invariant::Payment => "2",
            Invariant::Stock => "3",
            Invariant::Shipping => "4",
            Invariant::Email => "5",
            Invariant::Loyalty => "6",
            Invariant::OutboxesDrained => "7a",
            Invariant::AmqpDeadLettersEmpty => "7b",
            Invariant::KafkaDeadLettersEmpty => "7c",
            Invariant::NothingInFlight => "7d",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Invariant::OrdersFinal => "every accepted order exists and is final",
            Invariant::Payment => "one successful charge per completed order, none standing per cancelled",
            Invariant::Stock => "stock taken matches non-cancelled orders",
            Invariant::Shipping => "one shipment per completed order, none per cancelled",
            Invariant::Email => "each e-mail an order calls for, exactly once",
            Invariant::Loyalty => "balances match points of completed orders",
            Invariant::OutboxesDrained => "every outbox drained",
            Invariant::AmqpDeadLettersEmpty => "RabbitMQ dead-letter queues empty",
            Invariant::KafkaDeadLettersEmpty => "Kafka dead-letter topics empty",
            Invariant::NothingInFlight => "nothing in flight: command queues empty, consumer groups caught up",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum CheckStatus {
    Passed,
    Failed,
    /// Not checked (e.g. no broker given): neither passed nor failed.
    Skipped(String),
}

/// Something that breaks an invariant: an order id where there is one,
/// otherwise a SKU, customer, queue or topic, with what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offender {
    pub id: String,
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub invariant: Invariant,
    pub number: &'static str,
    pub title: &'static str,
    #[serde(flatten)]
    pub status: CheckStatus,
    /// What was looked at, e.g. `completed_orders: 12`.
    pub counts: BTreeMap<String, i64>,
    /// Offenders found, at most the run's limit of them.
    pub offenders: Vec<Offender>,
    /// All offenders found, including those left out of `offenders`.
    pub offender_count: usize,
}

impl CheckResult {
    pub fn passed(&self) -> bool {
        self.status == CheckStatus::Passed
    }

    pub fn failed(&self) -> bool {
        self.status == CheckStatus::Failed
    }

    /// Whether `id` (an order id, SKU, …) is among the listed offenders.
    pub fn names(&self, id: &str) -> bool {
        self.offenders.iter().any(|o| o.id == id)
    }

    pub(crate) fn skipped(invariant: Invariant, reason: impl Into<String>) -> Self {
        Self {
            invariant,
            number: invariant.number(),
            title: invariant.title(),
            status: CheckStatus::Skipped(reason.into()),
            counts: BTreeMap::new(),
            offenders: Vec::new(),
            offender_count: 0,
        }
    }
}

/// Builds one [`CheckResult`]: counts and offenders as they are found; it
/// passes if no offender was added.
pub(crate) struct ResultBuilder {
    invariant: Invariant,
    max_offenders: usize,
    counts: BTreeMap<String, i64>,
    offenders: Vec<Offender>,
    offender_count: usize,
}

impl ResultBuilder {
    pub(crate) fn new(invariant: Invariant, max_offenders: usize) -> Self {
        Self { invariant, max_offenders, counts: BTreeMap::new(), offenders: Vec::new(), offender_count: 0 }
    }

    pub(crate) fn count(&mut self, name: &str, value: impl TryInto<i64>) -> &mut Self {
        self.counts.insert(name.to_owned(), value.try_into().unwrap_or(i64::MAX));
        self
    }

    pub(crate) fn offend(&mut self, id: impl ToString, problem: impl Into<String>) {
        self.offender_count += 1;
        if self.offenders.len() < self.max_offenders {
            self.offenders.push(Offender { id: id.to_string(), problem: problem.into() });
        }
    }

    pub(crate) fn finish(self) -> CheckResult {
        let status = if self.offender_count == 0 { CheckStatus::Passed } else { CheckStatus::Failed };
        CheckResult {
            invariant: self.invariant,
            number: self.invariant.number(),
            title: self.invariant.title(),
            status,
            counts: self.counts,
            offenders: self.offenders,
            offender_count: self.offender_count,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// No check failed. Skipped checks do not fail a run, but they are not
    /// passes either: see [`Report::skipped`].
    pub fn passed(&self) -> bool {
        !self.checks.iter().any(CheckResult::failed)
    }

    pub fn failed(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| c.failed()).collect()
    }

    pub fn skipped(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| matches!(c.status, CheckStatus::Skipped(_))).collect()
    }

    pub fn get(&self, invariant: Invariant) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.invariant == invariant)
    }

    /// The invariants that failed, in order.
    pub fn failed_invariants(&self) -> Vec<Invariant> {
        self.failed().iter().map(|c| c.invariant).collect()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["passed"] = serde_json::Value::Bool(self.passed());
        value
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckStatus::Passed => "PASS",
            CheckStatus::Failed => "FAIL",
            CheckStatus::Skipped(_) => "SKIP",
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |wanted: fn(&CheckStatus) -> bool| self.checks.iter().filter(|c| wanted(&c.status)).count();
        let passed = count(|s| *s == CheckStatus::Passed);
        let failed = count(|s| *s == CheckStatus::Failed);
        let skipped = count(|s| matches!(s, CheckStatus::Skipped(_)));
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        writeln!(f, "invariants {verdict}: {passed} passed, {failed} failed, {skipped} skipped")?;
        for check in &self.checks {
            write!(f, "{} {:<3} {}", check.status, check.number, check.title)?;
            if let CheckStatus::Skipped(reason) = &check.status {
                write!(f, " ({reason})")?;
            }
            let counts: Vec<String> = check.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if !counts.is_empty() {
                write!(f, ": {}", counts.join(" "))?;
            }
            writeln!(f)?;
            for offender in &check.offenders {
                writeln!(f, "       {}: {}", offender.id, offender.problem)?;
            }
            let unlisted = check.offender_count.saturating_sub(check.offenders.len());
            if unlisted > 0 {
                writeln!(f, "       … and {unlisted} more")?;
            }
        }
        Ok(())
    }
}

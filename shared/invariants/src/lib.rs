//! The invariant checker: reads the six service databases (and, optionally,
//! the brokers' dead-letter destinations) after a run has drained, and
//! checks every invariant of docs/design.md (Invariants).
//!
//! ```no_run
//! # async fn example() -> Result<(), invariants::CheckError> {
//! use invariants::{CheckOptions, DatabaseUrls, Databases};
//! let databases = Databases::connect(&DatabaseUrls::dev()).await?;
//! let report = invariants::check(&databases, &CheckOptions::default()).await?;
//! println!("{report}");
//! assert!(report.passed());
//! # Ok(()) }
//! ```
//!
//! - [`checks`]: invariants 1–7a as pure functions of a [`Snapshot`].
//! - [`pending_work`]: what still keeps a run from having drained.
//! - [`brokers`]: invariant 7 on RabbitMQ and Kafka: dead letters, and nothing in flight.
//! - [`report`]: the results, printable and as JSON.

pub mod brokers;
pub mod checks;
pub mod databases;
mod error;
pub mod report;
pub mod snapshot;

pub use brokers::{Brokers, DEV_AMQP_URL, DEV_KAFKA_BROKERS};
pub use databases::{DEV_SERVER_URL, DatabaseUrls, Databases, PerService, SERVICES};
pub use error::CheckError;
pub use report::{CheckResult, CheckStatus, Invariant, Offender, Report};
pub use snapshot::{PendingWork, Snapshot};

use std::collections::BTreeSet;
use uuid::Uuid;

/// Offenders listed per check unless told otherwise.
pub const DEFAULT_MAX_OFFENDERS: usize = 20;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Ids of the orders the API answered 2xx; `None`: invariant 1 checks
    /// only that every order is final.
    pub accepted: Option<BTreeSet<Uuid>>,
    pub brokers: Brokers,
    /// Offenders listed per check (all are counted).
    pub max_offenders: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self { accepted: None, brokers: Brokers::default(), max_offenders: DEFAULT_MAX_OFFENDERS }
    }
}

/// The invariants read from the six databases (1–7a); the rest (7b–7d) are
/// read from the brokers.
pub const DATABASE_INVARIANTS: &[Invariant] = Invariant::ALL.split_at(7).0;

/// How the reason of a check skipped by [`check_what_answers`] begins when
/// the database or broker it reads did not answer (as opposed to one the
/// caller did not give).
pub const COULD_NOT_BE_CHECKED: &str = "could not be checked";

/// Runs every check. An unreachable database or broker is an error, not a
/// failed check: nothing could be concluded. [`check_what_answers`] reports
/// in any case instead.
pub async fn check(databases: &Databases, options: &CheckOptions) -> Result<Report, CheckError> {
    let snapshot = Snapshot::read(databases).await?;
    let mut checks = database_checks(&snapshot, options);
    for (_, result) in broker_checks(options).await {
        checks.push(result?);
    }
    Ok(Report { checks })
}

/// What [`check_what_answers`] found.
#[derive(Debug)]
pub struct Checked {
    /// One result per invariant, those that could not be made skipped
    /// with [`COULD_NOT_BE_CHECKED`] and the error.
    pub report: Report,
    /// The databases and brokers that did not answer, one error each.
    pub unanswered: Vec<CheckError>,
}

/// Every check that can be made, whatever does not answer: a database that
/// cannot be read skips every database invariant (1–7a), a broker that does
/// not answer skips the invariants that read it (7b–7d), each with the
/// reason, and the other checks are still made. For callers that must
/// report in any case (the chaos runner at its deadline, the CLI).
pub async fn check_what_answers(urls: &DatabaseUrls, options: &CheckOptions) -> Checked {
    let mut unanswered = Vec::new();
    let snapshot = match Databases::connect(urls).await {
        Ok(databases) => {
            let snapshot = Snapshot::read(&databases).await;
            databases.close().await;
            snapshot
        }
        Err(error) => Err(error),
    };
    let mut checks = match snapshot {
        Ok(snapshot) => database_checks(&snapshot, options),
        Err(error) => {
            let skipped = DATABASE_INVARIANTS.iter().map(|i| could_not_be_checked(*i, &error)).collect();
            unanswered.push(error);
            skipped
        }
    };
    for (invariant, result) in broker_checks(options).await {
        checks.push(match result {
            Ok(result) => result,
            Err(error) => {
                let skipped = could_not_be_checked(invariant, &error);
                unanswered.push(error);
                skipped
            }
        });
    }
    Checked { report: Report { checks }, unanswered }
}

fn could_not_be_checked(invariant: Invariant, error: &CheckError) -> CheckResult {
    CheckResult::skipped(invariant, format!("{COULD_NOT_BE_CHECKED}: {error}"))
}

fn database_checks(snapshot: &Snapshot, options: &CheckOptions) -> Vec<CheckResult> {
    let max = options.max_offenders;
    vec![
        checks::orders_final(snapshot, options.accepted.as_ref(), max),
        checks::payment(snapshot, max),
        checks::stock(snapshot, max),
        checks::shipping(snapshot, max),
        checks::email(snapshot, max),
        checks::loyalty(snapshot, max),
        checks::outboxes_drained(snapshot, max),
    ]
}

/// 7b, 7c and 7d, asked at once: each is bounded by the dead-letter tools'
/// own timeouts, and a broker that does not answer should cost one of
/// them, not their sum.
async fn broker_checks(options: &CheckOptions) -> [(Invariant, Result<CheckResult, CheckError>); 3] {
    let (brokers, max) = (&options.brokers, options.max_offenders);
    let (amqp, kafka, in_flight) = tokio::join!(
        brokers::amqp_dead_letters(brokers, max),
        brokers::kafka_dead_letters(brokers, max),
        brokers::nothing_in_flight(brokers, max),
    );
    [
        (Invariant::AmqpDeadLettersEmpty, amqp),
        (Invariant::KafkaDeadLettersEmpty, kafka),
        (Invariant::NothingInFlight, in_flight),
    ]
}

/// What still keeps the system from being drained (see [`PendingWork`]);
/// for polling while a run settles, before the full [`check`].
pub async fn pending_work(databases: &Databases, accepted: &BTreeSet<Uuid>) -> Result<PendingWork, CheckError> {
    PendingWork::read(databases, accepted).await
}

/// Parses the accepted-orders list: one order id per line; blank lines and
/// `#` comments are ignored, repeats (an idempotent replay) count once.
pub fn parse_accepted(text: &str) -> Result<BTreeSet<Uuid>, CheckError> {
    let mut ids = BTreeSet::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = line.parse().map_err(|_| CheckError::AcceptedId { line: index + 1, text: line.to_owned() })?;
        ids.insert(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accepted_list_takes_ids_one_per_line() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        let ids = parse_accepted(&format!("# accepted\n{a}\n\n  {b}  \n{a}\n")).unwrap();
        assert_eq!(ids, [a, b].into_iter().collect());
        let err = parse_accepted(&format!("{a}\nnot-an-id\n")).unwrap_err();
        assert!(matches!(err, CheckError::AcceptedId { line: 2, .. }), "{err}");
    }

    #[test]
    fn skipped_checks_do_not_fail_a_report_but_show() {
        let report = Report {
            checks: vec![
                CheckResult::skipped(Invariant::KafkaDeadLettersEmpty, "no Kafka brokers given"),
                report::ResultBuilder::new(Invariant::OrdersFinal, 5).finish(),
            ],
        };
        assert!(report.passed());
        assert_eq!(report.skipped().len(), 1);
        let text = report.to_string();
        assert!(text.contains("SKIP 7c") && text.contains("no Kafka brokers given"), "{text}");
        let json = report.to_json();
        assert_eq!(json["passed"], true);
        assert_eq!(json["checks"][0]["status"], "skipped");
        assert_eq!(json["checks"][0]["reason"], "no Kafka brokers given");
        assert_eq!(json["checks"][1]["status"], "passed");
        assert_eq!(json["checks"][1]["invariant"], "orders_final");
    }

    #[tokio::test]
    async fn what_does_not_answer_is_skipped_with_the_reason_and_the_rest_is_still_checked() {
        // Nothing listens on port 1: every database and both brokers are
        // unreachable, and still every invariant has a result.
        let urls = DatabaseUrls::on_server("postgres://postgres@127.0.0.1:1", str::to_owned);
        let options = CheckOptions {
            brokers: Brokers {
                amqp_url: Some("amqp://guest:guest@127.0.0.1:1/%2f".to_owned()),
                kafka_brokers: None,
                topology: contracts::Topology::new(""),
            },
            ..CheckOptions::default()
        };
        let checked = check_what_answers(&urls, &options).await;
        let report = &checked.report;
        assert_eq!(report.checks.len(), Invariant::ALL.len(), "{report}");
        for &invariant in DATABASE_INVARIANTS {
            let status = &report.get(invariant).unwrap().status;
            assert!(
                matches!(status, CheckStatus::Skipped(why) if why.starts_with("could not be checked: connecting to the order database")),
                "{invariant:?}: {status:?}"
            );
        }
        let amqp = &report.get(Invariant::AmqpDeadLettersEmpty).unwrap().status;
        assert!(
            matches!(amqp, CheckStatus::Skipped(why) if why.starts_with("could not be checked: RabbitMQ")),
            "{amqp:?}"
        );
        // Not given is not unanswered: skipped as before, and not counted.
        let kafka = &report.get(Invariant::KafkaDeadLettersEmpty).unwrap().status;
        assert_eq!(kafka, &CheckStatus::Skipped("no Kafka brokers given".to_owned()));
        assert_eq!(checked.unanswered.len(), 2, "{:?}", checked.unanswered);
        assert!(
            report.to_string().contains("SKIP 1   every accepted order exists and is final (could not be checked: "),
            "{report}"
        );
    }

    #[test]
    fn a_failed_check_prints_its_offenders() {
        let mut failing = report::ResultBuilder::new(Invariant::Shipping, 1);
        failing.count("shipments", 3);
        failing.offend("o-1", "CANCELLED with 1 shipment(s)");
        failing.offend("o-2", "CANCELLED with 1 shipment(s)");
        let report = Report { checks: vec![failing.finish()] };
        assert!(!report.passed());
        assert_eq!(report.failed_invariants(), [Invariant::Shipping]);
        let text = report.to_string();
        assert!(text.starts_with("invariants FAILED: 0 passed, 1 failed, 0 skipped"), "{text}");
        assert!(text.contains("FAIL 4") && text.contains("shipments=3"), "{text}");
        assert!(text.contains("o-1: CANCELLED with 1 shipment(s)") && text.contains("… and 1 more"), "{text}");
    }
}

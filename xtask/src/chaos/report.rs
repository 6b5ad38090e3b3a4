//! What a chaos run found: the orders' outcomes, the faults made, the
//! invariants, and whether all that proves what the run claims.

use super::ChaosOptions;
use super::plan;
use crate::kafka_supervisor;
use messaging::log_tailing::RelayMode;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;
use uuid::Uuid;

/// The share of orders that may end rejected with 503 (after their
/// retries) before the run counts as proving too little.
pub const MAX_REJECTED_PERCENT: usize = 10;

#[derive(Debug, Clone)]
pub struct ChaosReport {
    pub options: ChaosOptions,
    /// The prefix of the run's queues, topics and groups (empty on compose).
    pub namespace: String,
    pub sent: usize,
    /// Orders the load generator came back with an outcome for.
    pub answered: usize,
    pub accepted: usize,
    /// The ids the API answered 202 with.
    pub accepted_ids: BTreeSet<Uuid>,
    pub rejected_503: usize,
    pub failed: Vec<String>,
    pub responses_503: usize,
    pub request_retries: usize,
    /// Kills the plan scheduled, per target.
    pub planned: BTreeMap<&'static str, usize>,
    /// Kills that signalled a running process, per target.
    pub kills: BTreeMap<&'static str, usize>,
    /// Successful restarts after such a kill, per target.
    pub restarts: BTreeMap<&'static str, usize>,
    /// Planned kills that found nothing running (not counted as kills).
    pub missed_kills: Vec<String>,
    /// Kills made while orders were still being placed (the rest landed
    /// after the last order, e.g. behind a slow RabbitMQ restart).
    pub kills_during_load: usize,
    /// Partitions the plan scheduled, per link.
    pub planned_partitions: BTreeMap<&'static str, usize>,
    /// Partitions made and healed, per link.
    pub partitions: BTreeMap<&'static str, usize>,
    /// Connections those partitions killed, per link.
    pub stranded: BTreeMap<&'static str, u64>,
    pub fault_errors: Vec<String>,
    pub load_duration: Duration,
    /// From the end of the faults until every order was final and every
    /// outbox empty; `None` if that never happened within the bound.
    pub time_to_drain: Option<Duration>,
    /// Panics of the Kafka broker itself during the run (local Tansu): a
    /// broker defect, named so a failed run is not blamed on the system.
    /// One the stack's Kafka supervisor recovered from (see
    /// `supervisor_restarts`) is a finding; any other fails the run.
    pub broker_panics: Vec<String>,
    /// Restarts of a wedged Kafka by the stack's supervisor during the run
    /// (local Tansu; see [`crate::kafka_supervisor`]), each a broker defect.
    pub supervisor_restarts: Vec<kafka_supervisor::RestartRecord>,
    /// Ids the API accepted orders with that are not order ids.
    pub malformed_ids: Vec<String>,
    /// Quorum queues of the run that RabbitMQ left without a leader after a
    /// restart (local RabbitMQ): a broker defect, named likewise.
    pub leaderless_queues: Vec<String>,
    /// Quorum queues RabbitMQ lost in a kill and the runner re-attached
    /// (local RabbitMQ), one line per repair: a broker defect recovered from.
    pub quorum_repairs: Vec<String>,
    pub invariants: invariants::Report,
}

impl ChaosReport {
    /// Every invariant held and the run itself did what it claims.
    pub fn passed(&self) -> bool {
        self.invariants.passed() && self.problems().is_empty()
    }

    /// Why the run proves less than it should, apart from the invariants:
    /// orders without a definitive answer, a fault that could not be
    /// injected or undone, no drain, or an infrastructure component the
    /// plan meant to kill that was never confirmed killed and restarted.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.answered != self.sent {
            problems.push(format!(
                "{} of {} orders came back with no outcome at all",
                self.sent - self.answered,
                self.sent
            ));
        }
        if self.accepted == 0 {
            problems.push("no order was accepted: there was nothing to check".to_owned());
        }
        // A 503 is a definitive answer, but its order is never checked: a
        // system that stops accepting must not pass by checking little.
        if self.rejected_503 * 100 > self.sent * MAX_REJECTED_PERCENT {
            problems.push(format!(
                "{} of {} orders rejected with 503 (over {MAX_REJECTED_PERCENT}%): the system did not recover, \
                 or the run checked too little",
                self.rejected_503, self.sent
            ));
        }
        // Malformed ids are named below, not counted as repeats.
        let well_formed = self.accepted.saturating_sub(self.malformed_ids.len());
        if self.accepted_ids.len() != well_formed {
            problems.push(format!(
                "{} accepted answers named an order another request had already been given",
                well_formed.saturating_sub(self.accepted_ids.len())
            ));
        }
        if !self.failed.is_empty() {
            problems.push(format!("{} orders got no definitive answer", self.failed.len()));
        }
        problems.extend(self.malformed_ids.iter().map(|id| format!("the API accepted an order with id {id:?}")));
        // A chaos run always has the databases and both brokers at hand:
        // an invariant not checked is one not proven.
        for invariant in invariants::Invariant::ALL {
            match self.invariants.get(invariant).map(|c| &c.status) {
                Some(invariants::CheckStatus::Passed | invariants::CheckStatus::Failed) => {}
                Some(invariants::CheckStatus::Skipped(why)) => {
                    problems.push(format!("invariant {} was not checked: {why}", invariant.number()));
                }
                None => problems.push(format!("invariant {} was not checked", invariant.number())),
            }
        }
        problems.extend(self.fault_errors.iter().map(|e| format!("fault injection: {e}")));
        problems.extend(self.unconfirmed_infrastructure().into_iter().map(|target| {
            format!(
                "{target}: {} kill(s) planned, but none confirmed (a process signalled, then restarted)",
                self.planned.get(target).copied().unwrap_or(0)
            )
        }));
        for (link, planned) in &self.planned_partitions {
            let made = self.partitions.get(link).copied().unwrap_or(0);
            if made < *planned {
                problems.push(format!("{link}: {planned} partition(s) planned, {made} made and healed"));
            }
            // A cut that kills no connection tested nothing.
            if made > 0 && self.stranded.get(link).is_none_or(|n| *n == 0) {
                problems.push(format!(
                    "{link}: partitioned, but no connection went through the cut: the services do not reach it \
                     through the runner's proxy"
                ));
            }
        }
        if self.time_to_drain.is_none() {
            problems.push(format!("did not drain within {:?}", self.options.drain_timeout));
        }
        problems.extend(self.leaderless_queues.iter().map(|q| {
            format!(
                "RabbitMQ left quorum queue {q} without a leader after a restart (nothing published to it is \
                 confirmed); a broker defect, see docs/broker-notes.md"
            )
        }));
        problems.extend(
            self.unrecovered_panics()
                .into_iter()
                .map(|p| format!("the Kafka broker (Tansu) panicked: {p}; a broker defect, see docs/broker-notes.md")),
        );
        problems.extend(self.supervisor_restarts.iter().filter(|r| r.new_pid.is_none()).map(|r| {
            format!("the Kafka supervisor killed a wedged broker and could not start it again: {}", r.describe())
        }));
        problems
    }

    /// What the run found that does not fail it: each wedged Kafka the
    /// stack's supervisor restarted, a broker defect the system rode out
    /// (the run still had to drain and every invariant to hold).
    pub fn findings(&self) -> Vec<String> {
        let restarts = self.supervisor_restarts.iter().filter(|r| r.new_pid.is_some()).map(|r| {
            format!(
                "the Kafka broker (Tansu) wedged and its supervisor restarted it {}; a broker defect, see \
                 docs/broker-notes.md",
                r.describe()
            )
        });
        let repairs = self.quorum_repairs.iter().map(|repair| {
            format!(
                "RabbitMQ lost the registration of a quorum queue killed young and the runner re-attached its \
                 server, messages kept ({repair}); a broker defect, see docs/broker-notes.md"
            )
        });
        restarts.chain(repairs).collect()
    }

    /// The broker's panics not covered by a supervisor restart that
    /// brought it back (each restart names the panics since the broker's
    /// start, read from the same log by the same parser).
    pub fn unrecovered_panics(&self) -> Vec<&String> {
        let mut recovered: Vec<&String> =
            self.supervisor_restarts.iter().filter(|r| r.new_pid.is_some()).flat_map(|r| r.panics.iter()).collect();
        self.broker_panics
            .iter()
            .filter(|panic| match recovered.iter().position(|r| r == panic) {
                Some(at) => {
                    recovered.swap_remove(at);
                    false
                }
                None => true,
            })
            .collect()
    }

    /// Planned infrastructure targets without one confirmed kill and restart.
    pub fn unconfirmed_infrastructure(&self) -> Vec<&'static str> {
        plan::INFRASTRUCTURE
            .into_iter()
            .filter(|target| self.planned.get(target).is_some_and(|n| *n > 0))
            .filter(|target| {
                self.kills.get(target).is_none_or(|n| *n == 0) || self.restarts.get(target).is_none_or(|n| *n == 0)
            })
            .collect()
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "chaos run: seed {} ({} orders, {} kills, {} partitions, {:.0}/s)",
            o.seed, o.orders, o.kills, o.partitions, o.rate
        )?;
        if o.relay_mode() == RelayMode::LogTailing {
            writeln!(f, "outbox relay: log tailing (OUTBOX_RELAY=log-tailing)")?;
        }
        if let Some(mode) = o.unsafe_mode {
            writeln!(f, "UNSAFE MODE: {} (the checker is expected to fail)", mode.env_var())?;
        }
        writeln!(
            f,
            "orders: sent {} / accepted {} / rejected with 503 {} / failed {} (503 responses seen {}, requests retried {})",
            self.sent,
            self.accepted,
            self.rejected_503,
            self.failed.len(),
            self.responses_503,
            self.request_retries
        )?;
        for failure in self.failed.iter().take(5) {
            writeln!(f, "  failed: {failure}")?;
        }
        let mut kills = String::new();
        for (target, planned) in &self.planned {
            let killed = self.kills.get(target).copied().unwrap_or(0);
            let restarted = self.restarts.get(target).copied().unwrap_or(0);
            let _ = write!(kills, "{target} {killed}/{restarted}/{planned} ");
        }
        writeln!(f, "kills/restarts/planned: {}", kills.trim_end())?;
        let total: usize = self.kills.values().sum();
        writeln!(f, "kills while orders were still being placed: {} of {total}", self.kills_during_load)?;
        if !self.planned_partitions.is_empty() {
            let mut cuts = String::new();
            for (link, planned) in &self.planned_partitions {
                let made = self.partitions.get(link).copied().unwrap_or(0);
                let stranded = self.stranded.get(link).copied().unwrap_or(0);
                let _ = write!(cuts, "{link} {made}/{planned} ({stranded} connections cut), ");
            }
            writeln!(f, "partitions made and healed/planned: {}", cuts.trim_end_matches([',', ' ']))?;
        }
        for missed in &self.missed_kills {
            writeln!(f, "  planned kill found nothing running: {missed}")?;
        }
        for error in &self.fault_errors {
            writeln!(f, "  fault injection error: {error}")?;
        }
        writeln!(f, "load lasted {:.1}s", self.load_duration.as_secs_f64())?;
        match self.time_to_drain {
            Some(d) => writeln!(f, "drained {:.1}s after the last fault", d.as_secs_f64())?,
            None => writeln!(f, "did NOT drain within {:?}", o.drain_timeout)?,
        }
        write!(f, "{}", self.invariants)?;
        for finding in self.findings() {
            writeln!(f, "finding: {finding}")?;
        }
        for problem in self.problems() {
            writeln!(f, "run problem: {problem}")?;
        }
        let partitions = if o.partitions > 0 { format!(" --partitions {}", o.partitions) } else { String::new() };
        let relay = if o.relay == RelayMode::LogTailing { " --relay log-tailing" } else { "" };
        writeln!(
            f,
            "result: {}  (reproduce: cargo xtask chaos --orders {} --kills {}{partitions}{relay} --seed {})",
            if self.passed() { "PASS" } else { "FAIL" },
            o.orders,
            o.kills,
            o.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that did everything it planned and found nothing wrong.
    fn clean_report() -> ChaosReport {
        let planned: BTreeMap<&'static str, usize> =
            [("postgres", 1), ("rabbitmq", 1), ("kafka", 1), ("order", 2)].into();
        ChaosReport {
            options: ChaosOptions::default(),
            namespace: "chaos1x1.".to_owned(),
            sent: 10,
            answered: 10,
            accepted: 10,
            accepted_ids: (0..10).map(|_| Uuid::now_v7()).collect(),
            rejected_503: 0,
            failed: Vec::new(),
            responses_503: 0,
            request_retries: 0,
            kills: planned.clone(),
            restarts: planned.clone(),
            planned,
            missed_kills: Vec::new(),
            kills_during_load: 5,
            planned_partitions: BTreeMap::new(),
            partitions: BTreeMap::new(),
            stranded: BTreeMap::new(),
            fault_errors: Vec::new(),
            load_duration: Duration::from_secs(1),
            time_to_drain: Some(Duration::from_secs(1)),
            broker_panics: Vec::new(),
            supervisor_restarts: Vec::new(),
            malformed_ids: Vec::new(),
            leaderless_queues: Vec::new(),
            quorum_repairs: Vec::new(),
            invariants: invariants::Report {
                checks: invariants::Invariant::ALL
                    .iter()
                    .map(|i| invariants::CheckResult {
                        invariant: *i,
                        number: i.number(),
                        title: i.title(),
                        status: invariants::CheckStatus::Passed,
                        counts: BTreeMap::new(),
                        offenders: Vec::new(),
                        offender_count: 0,
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn an_invariant_left_unchecked_fails_the_run() {
        let mut report = clean_report();
        report.invariants.checks[9].status = invariants::CheckStatus::Skipped("needs both brokers".to_owned());
        report.invariants.checks.remove(0);
        assert!(!report.passed());
        let text = report.to_string();
        assert!(text.contains("invariant 7d was not checked: needs both brokers"), "{text}");
        assert!(text.contains("invariant 1 was not checked"), "{text}");
    }

    #[test]
    fn a_clean_run_passes() {
        let report = clean_report();
        assert!(report.passed(), "{report}");
        assert!(report.to_string().contains("kills while orders were still being placed: 5 of 5"), "{report}");
    }

    #[test]
    fn a_run_that_checked_too_little_fails() {
        // Most orders turned away with 503: their orders were never checked.
        let mut report = clean_report();
        report.rejected_503 = 2;
        report.accepted = 8;
        report.accepted_ids = report.accepted_ids.iter().take(8).copied().collect();
        assert!(!report.passed());
        assert!(report.to_string().contains("2 of 10 orders rejected with 503"), "{report}");
        let mut report = clean_report();
        report.rejected_503 = 1;
        report.accepted = 9;
        report.accepted_ids = report.accepted_ids.iter().take(9).copied().collect();
        assert!(report.passed(), "one in ten is within the bound: {report}");

        let mut report = clean_report();
        report.answered = 9;
        assert!(report.to_string().contains("1 of 10 orders came back with no outcome"), "{report}");

        // Two requests given the same order: one of them created nothing.
        let mut report = clean_report();
        report.accepted_ids = report.accepted_ids.iter().take(9).copied().collect();
        assert!(report.to_string().contains("1 accepted answers named an order another request"), "{report}");

        let mut report = clean_report();
        (report.accepted, report.accepted_ids) = (0, BTreeSet::new());
        assert!(report.to_string().contains("no order was accepted"), "{report}");
    }

    #[test]
    fn a_fault_that_could_not_be_injected_fails_the_run() {
        let mut report = clean_report();
        report.fault_errors.push("restarting order: not ready".to_owned());
        assert!(!report.passed());
        assert!(report.to_string().contains("run problem: fault injection: restarting order"), "{report}");
    }

    #[test]
    fn a_broker_defect_is_named_and_fails_the_run() {
        let mut panicked = clean_report();
        panicked.broker_panics.push("more or less than one row (tansu-storage-0.6.0/src/lite.rs:503:13)".to_owned());
        let mut leaderless = clean_report();
        leaderless.leaderless_queues.push("chaos5x1.order.replies".to_owned());
        for (report, named) in [
            (panicked, "the Kafka broker (Tansu) panicked: more or less than one row"),
            (leaderless, "RabbitMQ left quorum queue chaos5x1.order.replies without a leader"),
        ] {
            assert!(!report.passed());
            assert!(report.to_string().contains(named), "{report}");
        }
    }

    fn supervisor_restart(panics: &[&str], new_pid: Option<u32>) -> kafka_supervisor::RestartRecord {
        kafka_supervisor::RestartRecord {
            at: "2026-12-06T15:10:03Z".to_owned(),
            old_pid: 100,
            new_pid,
            reason: "3 failed probes over 15.0s, last: reading the answer's size: early eof".to_owned(),
            panics: panics.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn a_quorum_queue_the_runner_re_attached_is_a_finding_not_a_failure() {
        let mut report = clean_report();
        report.quorum_repairs.push("2026-12-06T19:40:00Z [{\"queue 'chaos1.order.replies'\",reattached}]".to_owned());
        assert!(report.passed(), "{report}");
        let text = report.to_string();
        assert!(text.contains("finding: RabbitMQ lost the registration of a quorum queue"), "{text}");
        assert!(text.contains("chaos1.order.replies"), "{text}");
    }

    #[test]
    fn a_panic_the_supervisor_recovered_from_is_named_and_does_not_fail_the_run() {
        const ROW: &str = "more or less than one row (/r/tansu-storage-0.6.0/src/lite.rs:503:13)";
        const UNREACHABLE: &str =
            "internal error: entered unreachable code (/r/tansu-storage-0.6.0/src/service.rs:337:13)";
        let mut report = clean_report();
        report.broker_panics = vec![ROW.to_owned(), UNREACHABLE.to_owned()];
        report.supervisor_restarts.push(supervisor_restart(&[ROW, UNREACHABLE], Some(200)));
        assert!(report.passed(), "{report}");
        let text = report.to_string();
        assert!(
            text.contains(&format!(
                "finding: the Kafka broker (Tansu) wedged and its supervisor restarted it at 2026-12-06T15:10:03Z \
                 pid 100 -> pid 200 (3 failed probes over 15.0s, last: reading the answer's size: early eof): \
                 {ROW}; {UNREACHABLE}"
            )),
            "{text}"
        );

        // The same panic again later, with no restart after it: not recovered.
        let mut again = report.clone();
        again.broker_panics.push(ROW.to_owned());
        assert!(!again.passed());
        assert_eq!(again.unrecovered_panics(), [ROW]);
        assert!(again.to_string().contains(&format!("run problem: the Kafka broker (Tansu) panicked: {ROW}")));

        // Killed, never back: a failure, and its panics are not recovered.
        let mut not_back = clean_report();
        not_back.broker_panics = vec![ROW.to_owned()];
        not_back.supervisor_restarts.push(supervisor_restart(&[ROW], None));
        assert!(!not_back.passed());
        let text = not_back.to_string();
        assert!(
            text.contains("could not start it again: at 2026-12-06T15:10:03Z pid 100 -> not started again"),
            "{text}"
        );
        assert!(text.contains("run problem: the Kafka broker (Tansu) panicked: more or less"), "{text}");
        assert!(!text.contains("finding:"), "{text}");

        // A restart with no panic logged (a hung broker) is a finding too.
        let mut hung = clean_report();
        hung.supervisor_restarts.push(supervisor_restart(&[], Some(200)));
        assert!(hung.passed());
        assert!(hung.to_string().contains("pid 100 -> pid 200 (3 failed probes"), "{hung}");
        assert!(hung.to_string().contains("early eof): no panic logged; a broker defect"), "{hung}");
    }

    #[test]
    fn an_order_accepted_with_a_malformed_id_fails_the_run() {
        let mut report = clean_report();
        report.malformed_ids.push("not-a-uuid".to_owned());
        report.accepted_ids = report.accepted_ids.iter().take(9).copied().collect();
        assert!(!report.passed());
        let text = report.to_string();
        assert!(text.contains("run problem: the API accepted an order with id \"not-a-uuid\""), "{text}");
        assert!(!text.contains("another request had already been given"), "{text}");
    }

    #[test]
    fn planned_infrastructure_must_be_confirmed_killed_and_restarted() {
        let mut report = clean_report();
        report.kills.remove("rabbitmq");
        report.restarts.remove("rabbitmq");
        report.missed_kills.push("rabbitmq at 3.0s".to_owned());
        assert_eq!(report.unconfirmed_infrastructure(), ["rabbitmq"]);
        assert!(!report.passed());
        let text = report.to_string();
        assert!(text.contains("found nothing running: rabbitmq at 3.0s"), "{text}");

        // Killed but never back: not confirmed either.
        let mut report = clean_report();
        report.restarts.remove("kafka");
        assert_eq!(report.unconfirmed_infrastructure(), ["kafka"]);

        // Infrastructure the plan did not schedule is not required, and a
        // missed kill of a service is reported, not a failure.
        let mut report = clean_report();
        for target in ["postgres", "order"] {
            report.planned.remove(target);
            report.kills.remove(target);
            report.restarts.remove(target);
        }
        report.missed_kills.push("order at 1.0s".to_owned());
        assert!(report.passed(), "{report}");
    }

    #[test]
    fn a_planned_partition_not_made_fails_the_run_and_the_report_names_the_links() {
        let mut report = clean_report();
        report.options.partitions = 3;
        report.planned_partitions = [("postgres", 1), ("rabbitmq", 1), ("kafka", 1)].into();
        report.partitions = report.planned_partitions.clone();
        report.stranded = [("postgres", 12), ("rabbitmq", 3), ("kafka", 5)].into();
        assert!(report.passed(), "{report}");
        let text = report.to_string();
        assert!(
            text.contains(
                "partitions made and healed/planned: kafka 1/1 (5 connections cut), postgres 1/1 (12 connections cut), \
                 rabbitmq 1/1 (3 connections cut)\n"
            ),
            "{text}"
        );
        assert!(text.contains("--kills 10 --partitions 3 --seed 1"), "{text}");

        let mut missed = report.clone();
        missed.partitions.remove("kafka");
        assert!(!missed.passed());
        assert!(missed.to_string().contains("kafka: 1 partition(s) planned, 0 made and healed"), "{missed}");

        // A cut nobody's connection crossed proves nothing.
        report.stranded.insert("rabbitmq", 0);
        assert!(!report.passed());
        assert!(
            report.to_string().contains("rabbitmq: partitioned, but no connection went through the cut"),
            "{report}"
        );
    }
}

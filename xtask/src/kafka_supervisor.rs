//! The local Kafka's liveness supervisor, as a container orchestrator's
//! liveness probe would be: one detached process per stack (this binary
//! re-executed as `xtask supervise-kafka --stack <name>`, pid and log under
//! `.run/<stack>/` as `kafka-supervisor`) that asks the broker a real
//! question every few seconds ([`kafka_probe`]) and restarts a broker that
//! is alive but stopped answering.
//!
//! Tansu 0.6 with SQLite storage can wedge: after a panic in its storage
//! task the process keeps its port open and fails every request, forever.
//! Only that case is the supervisor's business:
//! - a dead broker is left alone: whoever killed it (the chaos runner, a
//!   test, `cargo xtask kill`) restarts it;
//! - a stopped broker (SIGSTOP, a test freezing it on purpose) is left
//!   alone and its failures are forgotten;
//! - a broker that is starting or merely busy is given time: a restart
//!   needs [`Policy::failures`] failed probes in a row of the same process,
//!   spread over at least [`Policy::min_span`].
//!
//! A restart is SIGKILL and the stack's own start ([`Kafka::restart_unresponsive`],
//! under the start lock, data file kept), logged as one `RESTART` line with
//! the panics the broker logged since its start ([`RestartRecord`]); the
//! chaos report reads these lines back.
//!
//! [`Kafka::restart_unresponsive`]: crate::infra::Kafka::restart_unresponsive

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    chaos::backend::panics_in,
    infra::{KAFKA_READY_TIMEOUT, KAFKA_START_MARK, Stack, StartOutcome},
    kafka_probe,
    process::{self, OWNER_ENV},
    services,
};

/// Its name in `.run/<stack>/logs/` and `pids/`, and in `cargo xtask status`.
pub const NAME: &str = "kafka-supervisor";
/// The hidden subcommand that runs it.
pub const SUBCOMMAND: &str = "supervise-kafka";
const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Generous for one small request: Tansu serves storage requests one at a
/// time, so a busy broker answers late; a wedged one fails at once.
const PROBE_TIMEOUT: Duration = Duration::from_secs(8);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const START_ATTEMPTS: u32 = 3;
/// Marks each start of the supervisor in its log (the restart count of
/// `cargo xtask status` is since then).
const STARTED: &str = "supervisor started";
const RESTART: &str = " RESTART ";

/// When an unanswered broker is restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Failed probes in a row, of the same process.
    pub failures: u32,
    /// Least time from the first of them to the last.
    pub min_span: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self { failures: 3, min_span: Duration::from_secs(15) }
    }
}

/// What one look at the broker found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// No broker process: not the supervisor's business.
    Dead,
    /// Alive but stopped (SIGSTOP): frozen on purpose, left alone.
    Stopped {
        pid: u32,
    },
    Answered {
        pid: u32,
    },
    /// Alive, not stopped, and the probe failed.
    Unanswered {
        pid: u32,
        error: String,
    },
}

/// Failed probes in a row of one broker process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streak {
    pub pid: u32,
    pub failures: u32,
    pub first: Instant,
    pub last: Instant,
    pub last_error: String,
}

impl Streak {
    pub fn span(&self) -> Duration {
        self.last.duration_since(self.first)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Leave,
    Restart(Streak),
}

/// The decision to restart, apart from the probing: fed one
/// [`Observation`] at a time.
#[derive(Debug)]
pub struct Tracker {
    policy: Policy,
    streak: Option<Streak>,
}

impl Tracker {
    pub fn new(policy: Policy) -> Self {
        Self { policy, streak: None }
    }

    /// Failed probes in the current streak of broker `pid`.
    pub fn failures(&self, pid: u32) -> u32 {
        self.streak.as_ref().filter(|s| s.pid == pid).map_or(0, |s| s.failures)
    }

    pub fn observe(&mut self, observation: Observation, now: Instant) -> Decision {
        let (pid, error) = match observation {
            // An answer, a death or a freeze ends any streak: what came
            // before says nothing about the broker from now on.
            Observation::Dead | Observation::Stopped { .. } | Observation::Answered { .. } => {
                self.streak = None;
                return Decision::Leave;
            }
            Observation::Unanswered { pid, error } => (pid, error),
        };
        let streak = match self.streak.take() {
            // Another pid is another broker (restarted by someone else).
            Some(streak) if streak.pid == pid => streak,
            _ => Streak { pid, failures: 0, first: now, last: now, last_error: String::new() },
        };
        let streak = Streak { failures: streak.failures + 1, last: now, last_error: error, ..streak };
        if streak.failures >= self.policy.failures && streak.span() >= self.policy.min_span {
            return Decision::Restart(streak);
        }
        self.streak = Some(streak);
        Decision::Leave
    }
}

/// One restart, as logged (one line: time, `RESTART`, this as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// UTC, RFC 3339.
    pub at: String,
    pub old_pid: u32,
    /// `None` if the broker could not be started again.
    pub new_pid: Option<u32>,
    /// Why: the failed probes.
    pub reason: String,
    /// The panics the broker logged since its last start ("message (location)").
    pub panics: Vec<String>,
}

impl RestartRecord {
    pub fn to_line(&self) -> String {
        format!("{}{RESTART}{}", self.at, serde_json::to_string(self).unwrap_or_default())
    }

    /// For reports: when, which pid, why, and the panics.
    pub fn describe(&self) -> String {
        let new = self.new_pid.map_or_else(|| "not started again".to_owned(), |pid| format!("pid {pid}"));
        let panics = if self.panics.is_empty() { "no panic logged".to_owned() } else { self.panics.join("; ") };
        format!("at {} pid {} -> {new} ({}): {panics}", self.at, self.old_pid, self.reason)
    }
}

/// The restarts recorded in (a part of) a supervisor log.
pub fn restarts_in(log: &str) -> Vec<RestartRecord> {
    log.lines()
        .filter_map(|line| line.split_once(RESTART))
        .filter_map(|(_, json)| serde_json::from_str(json.trim()).ok())
        .collect()
}

/// The restarts since the supervisor last started, in its whole log.
fn restarts_since_start(log: &str) -> usize {
    let since = log.rfind(STARTED).map_or(log, |at| &log[at..]);
    restarts_in(since).len()
}

/// The stack's supervisor process.
#[derive(Clone, Copy, Debug)]
pub struct KafkaSupervisor<'a> {
    stack: &'a Stack,
}

impl<'a> KafkaSupervisor<'a> {
    pub fn new(stack: &'a Stack) -> Self {
        Self { stack }
    }

    pub fn pid(self) -> Option<u32> {
        self.stack.owned_pid(NAME)
    }

    pub fn log_path(self) -> PathBuf {
        self.stack.log_path(NAME)
    }

    /// Restarts made since it last started.
    pub fn restarts(self) -> usize {
        std::fs::read(self.log_path()).map_or(0, |log| restarts_since_start(&String::from_utf8_lossy(&log)))
    }

    /// Spawns the supervisor unless one runs. `Ok(None)` for a stack that
    /// is not one of the named ones (a test's own stack): another process
    /// could not rebuild it from its name.
    pub async fn start(self) -> Result<Option<StartOutcome>> {
        if !self.stack.is_named() {
            return Ok(None);
        }
        let _lock = process::lock_file_async(&self.stack.start_lock_path(NAME)).await?;
        if let Some(pid) = self.pid() {
            return Ok(Some(StartOutcome::AlreadyRunning { pid }));
        }
        let root = self.stack.repo_root();
        let executable = executable(root)?;
        let mut command = std::process::Command::new(&executable);
        command
            .args([SUBCOMMAND, "--stack", self.stack.name()])
            .current_dir(root)
            .env("ORDERMESH_REPO_ROOT", root)
            .env(OWNER_ENV, self.stack.owner_tag(NAME));
        let pid = process::spawn_detached(command, &self.log_path(), &self.stack.pid_path(NAME))?;
        Ok(Some(StartOutcome::Spawned { pid }))
    }

    /// [`KafkaSupervisor::start`], a failure only said on stderr: the
    /// stack runs without one, as it did before supervisors existed.
    pub async fn start_or_warn(self) -> Option<StartOutcome> {
        match self.start().await {
            Ok(outcome) => outcome,
            Err(error) => {
                eprintln!("warning: Kafka of stack {} runs unsupervised: {error:#}", self.stack.name());
                None
            }
        }
    }

    pub async fn stop(self) -> Result<()> {
        self.stack.terminate_owned(NAME, STOP_TIMEOUT).await
    }
}

/// This program, to run again as the supervisor: the running `xtask`, or
/// the one cargo built when the caller is another program (a test binary
/// calling [`Stack::start_infra`]).
fn executable(repo_root: &std::path::Path) -> Result<PathBuf> {
    if let Ok(current) = std::env::current_exe()
        && current.file_name().is_some_and(|name| name == "xtask")
    {
        return Ok(current);
    }
    let target = services::target_dir(repo_root);
    ["debug", "release"]
        .into_iter()
        .map(|profile| target.join(profile).join("xtask"))
        .find(|path| path.is_file())
        .with_context(|| format!("no xtask executable in {} (cargo build -p xtask)", target.display()))
}

/// The supervisor's loop: runs until its pid file names another process
/// (a newer supervisor, or `down` removed it).
pub async fn supervise(stack: &Stack) -> Result<()> {
    if !stack.is_named() {
        bail!("stack {} is not one of dev, test, chaos", stack.name());
    }
    let me = std::process::id();
    let address = SocketAddr::from(([127, 0, 0, 1], stack.ports().kafka));
    let policy = Policy::default();
    say(&format!(
        "{STARTED} (pid {me}) for stack {}: a Metadata request to {address} every {PROBE_INTERVAL:?} \
         ({PROBE_TIMEOUT:?} each); a broker that is alive, not stopped, and fails {} in a row over at least {:?} \
         is restarted",
        stack.name(),
        policy.failures,
        policy.min_span
    ));
    let mut tracker = Tracker::new(policy);
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if process::read_pid_file(&stack.pid_path(NAME)).ok().flatten() != Some(me) {
            say(&format!("pid file {} no longer names this process: exiting", stack.pid_path(NAME).display()));
            return Ok(());
        }
        let observation = observe(stack, address).await;
        match &observation {
            Observation::Unanswered { pid, error } => {
                say(&format!("kafka pid {pid} did not answer ({} in a row): {error}", tracker.failures(*pid) + 1));
            }
            Observation::Answered { pid } if tracker.failures(*pid) > 0 => {
                say(&format!("kafka pid {pid} answers again after {} failed probe(s)", tracker.failures(*pid)));
            }
            _ => {}
        }
        if let Decision::Restart(streak) = tracker.observe(observation, Instant::now()) {
            restart(stack, &streak).await;
        }
    }
}

async fn observe(stack: &Stack, address: SocketAddr) -> Observation {
    let Some(pid) = stack.kafka().pid() else { return Observation::Dead };
    if process::is_stopped(pid) {
        return Observation::Stopped { pid };
    }
    match kafka_probe::probe(address, PROBE_TIMEOUT).await {
        Ok(_) => Observation::Answered { pid },
        // Killed or frozen while being asked: not a wedge.
        Err(_) if !process::is_alive(pid) => Observation::Dead,
        Err(_) if process::is_stopped(pid) => Observation::Stopped { pid },
        Err(error) => Observation::Unanswered { pid, error: error.to_string() },
    }
}

async fn restart(stack: &Stack, streak: &Streak) {
    // Read before the restart marks the log with a new start.
    let panics = panics_since_last_start(stack);
    let reason = format!(
        "{} failed probes over {:.1}s, last: {}",
        streak.failures,
        streak.span().as_secs_f64(),
        streak.last_error
    );
    let started = Instant::now();
    let kafka = stack.kafka();
    let mut outcome = kafka.restart_unresponsive(streak.pid).await;
    if let Ok(None) = outcome {
        say(&format!(
            "kafka pid {} was killed, restarted or stopped by someone else meanwhile: left alone",
            streak.pid
        ));
        return;
    }
    // Killed by us: starting it again is ours too.
    let mut attempt = 1;
    while let Err(error) = &outcome {
        say(&format!("starting kafka again failed (attempt {attempt} of {START_ATTEMPTS}): {error:#}"));
        if attempt >= START_ATTEMPTS {
            break;
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        outcome = kafka.start().await.map(|started| Some(started.pid()));
    }
    let new_pid = outcome.ok().flatten();
    let record = RestartRecord { at: now(), old_pid: streak.pid, new_pid, reason, panics };
    println!("{}", record.to_line());
    if new_pid.is_some() {
        match kafka.wait_ready(KAFKA_READY_TIMEOUT).await {
            Ok(()) => say(&format!("kafka ready again {:.1}s after the restart", started.elapsed().as_secs_f64())),
            Err(error) => say(&format!("kafka not ready after the restart: {error:#}")),
        }
    }
}

/// The panics in Kafka's log since its last start.
fn panics_since_last_start(stack: &Stack) -> Vec<String> {
    let Ok(log) = std::fs::read(stack.log_path("kafka")) else { return Vec::new() };
    let log = String::from_utf8_lossy(&log);
    let marker = format!("ordermesh runner: {KAFKA_START_MARK} kafka");
    panics_in(log.rfind(&marker).map_or(&log, |at| &log[at..]))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One line of the supervisor's log (its stdout), with the time.
fn say(line: &str) {
    println!("{} {line}", now());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unanswered(pid: u32) -> Observation {
        Observation::Unanswered { pid, error: "reading the answer's size: early eof".to_owned() }
    }

    /// Feeds `observations`, one per `every`, and returns the decisions.
    fn run(observations: Vec<Observation>, every: Duration) -> Vec<Decision> {
        let mut tracker = Tracker::new(Policy::default());
        let start = Instant::now();
        observations
            .into_iter()
            .enumerate()
            .map(|(i, o)| tracker.observe(o, start + every * u32::try_from(i).unwrap_or(0)))
            .collect()
    }

    fn restarts(decisions: &[Decision]) -> Vec<usize> {
        decisions.iter().enumerate().filter(|(_, d)| matches!(d, Decision::Restart(_))).map(|(i, _)| i).collect()
    }

    #[test]
    fn an_alive_broker_that_keeps_failing_is_restarted_once_the_span_is_reached() {
        let five = Duration::from_secs(5);
        // 0 s, 5 s, 10 s: three failures over only 10 s; the fourth, at 15 s, restarts.
        let decisions = run(vec![unanswered(7); 4], five);
        assert_eq!(restarts(&decisions), [3]);
        let Decision::Restart(streak) = &decisions[3] else { unreachable!() };
        assert_eq!((streak.pid, streak.failures, streak.span()), (7, 4, Duration::from_secs(15)));
        // Slow failures: the third is enough.
        assert_eq!(restarts(&run(vec![unanswered(7); 3], Duration::from_secs(8))), [2]);
        // After a restart the count starts again.
        assert_eq!(restarts(&run(vec![unanswered(7); 8], five)), [3, 7]);
    }

    #[test]
    fn a_stopped_broker_is_never_restarted() {
        let observations = (0..20)
            .map(|i| if i % 3 == 2 { Observation::Stopped { pid: 7 } } else { unanswered(7) })
            .collect::<Vec<_>>();
        assert!(restarts(&run(observations, Duration::from_secs(10))).is_empty());
        assert!(restarts(&run(vec![Observation::Stopped { pid: 7 }; 20], Duration::from_secs(10))).is_empty());
    }

    #[test]
    fn a_dead_broker_is_never_restarted() {
        assert!(restarts(&run(vec![Observation::Dead; 20], Duration::from_secs(10))).is_empty());
        let killed_in_between = vec![unanswered(7), unanswered(7), Observation::Dead, unanswered(8), unanswered(8)];
        assert!(restarts(&run(killed_in_between, Duration::from_secs(10))).is_empty());
    }

    #[test]
    fn an_answer_or_another_pid_starts_the_count_again() {
        let ten = Duration::from_secs(10);
        let answered =
            vec![unanswered(7), unanswered(7), Observation::Answered { pid: 7 }, unanswered(7), unanswered(7)];
        assert!(restarts(&run(answered, ten)).is_empty());
        // Restarted by someone else between two probes: a new broker.
        let replaced = vec![unanswered(7), unanswered(7), unanswered(8), unanswered(8)];
        assert!(restarts(&run(replaced, ten)).is_empty());
    }

    #[test]
    fn restart_lines_are_read_back_and_counted_since_the_last_start() {
        let record = RestartRecord {
            at: "2026-12-06T15:10:03Z".to_owned(),
            old_pid: 100,
            new_pid: Some(200),
            reason: "3 failed probes over 15.0s, last: reading the answer's size: early eof".to_owned(),
            panics: vec![
                "more or less than one row (/r/tansu-storage-0.6.0/src/lite.rs:503:13)".to_owned(),
                "internal error: entered unreachable code (/r/tansu-storage-0.6.0/src/service.rs:337:13)".to_owned(),
            ],
        };
        let failed = RestartRecord { new_pid: None, panics: Vec::new(), ..record.clone() };
        let log = format!(
            "2026-12-06T15:00:00Z {STARTED} (pid 1)\n{}\n2026-12-06T15:20:00Z {STARTED} (pid 2)\n\
             2026-12-06T15:21:00Z kafka pid 200 did not answer (1 in a row): no answer within 8s\n{}\n",
            record.to_line(),
            failed.to_line()
        );
        assert_eq!(restarts_in(&log), [record.clone(), failed.clone()]);
        assert_eq!(restarts_since_start(&log), 1);
        assert_eq!(restarts_since_start(""), 0);
        assert!(record.describe().contains("pid 100 -> pid 200 (3 failed probes"), "{}", record.describe());
        assert!(record.describe().ends_with(
            "lite.rs:503:13); internal error: entered unreachable code (/r/tansu-storage-0.6.0/src/service.rs:337:13)"
        ));
        assert!(failed.describe().contains("-> not started again") && failed.describe().ends_with("no panic logged"));
    }
}

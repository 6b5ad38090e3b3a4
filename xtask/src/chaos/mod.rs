//! `cargo xtask chaos`: a bounded stream of mixed orders while components
//! are SIGKILLed on a seeded schedule and restarted after a random pause;
//! then a bounded drain and the invariant checker. The same suite runs
//! against the local runner's processes or a `docker compose` deployment.

pub mod backend;
pub mod load;
pub mod plan;

use anyhow::{Context, Result};
use backend::Backend;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// An UNSAFE delivery mode for a negative control (see messaging::safety).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsafeMode {
    PublishWithoutOutbox,
    AckBeforeCommit,
    SkipInbox,
}

impl UnsafeMode {
    pub fn env_var(self) -> &'static str {
        match self {
            UnsafeMode::PublishWithoutOutbox => "UNSAFE_PUBLISH_WITHOUT_OUTBOX",
            UnsafeMode::AckBeforeCommit => "UNSAFE_ACK_BEFORE_COMMIT",
            UnsafeMode::SkipInbox => "UNSAFE_SKIP_INBOX",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "publish-without-outbox" => Some(Self::PublishWithoutOutbox),
            "ack-before-commit" => Some(Self::AckBeforeCommit),
            "skip-inbox" => Some(Self::SkipInbox),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub orders: usize,
    pub kills: usize,
    pub seed: u64,
    /// Orders per second.
    pub rate: f64,
    pub concurrency: usize,
    /// Upper bound on waiting for the system to settle after the faults.
    pub drain_timeout: Duration,
    pub unsafe_mode: Option<UnsafeMode>,
    /// Components that may be killed (default: all nine).
    pub targets: Vec<&'static str>,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            orders: 300,
            kills: 10,
            seed: 1,
            rate: 15.0,
            concurrency: 8,
            drain_timeout: Duration::from_secs(180),
            unsafe_mode: None,
            targets: plan::TARGETS.to_vec(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChaosReport {
    pub options: ChaosOptions,
    pub sent: usize,
    pub accepted: usize,
    pub rejected_503: usize,
    pub failed: Vec<String>,
    pub responses_503: usize,
    pub request_retries: usize,
    pub kills: BTreeMap<&'static str, usize>,
    pub restarts: BTreeMap<&'static str, usize>,
    pub fault_errors: Vec<String>,
    pub load_duration: Duration,
    /// From the end of the faults until every order was final and every
    /// outbox empty; `None` if that never happened within the bound.
    pub time_to_drain: Option<Duration>,
    pub invariants: invariants::Report,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.invariants.passed() && self.failed.is_empty() && self.time_to_drain.is_some()
    }
}

impl std::fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(f, "chaos run: seed {} ({} orders, {} kills, {:.0}/s)", o.seed, o.orders, o.kills, o.rate)?;
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
        for (target, n) in &self.kills {
            let _ = write!(kills, "{target} {n}/{} ", self.restarts.get(target).copied().unwrap_or(0));
        }
        writeln!(f, "kills/restarts: {}", kills.trim_end())?;
        for error in &self.fault_errors {
            writeln!(f, "  fault injection error: {error}")?;
        }
        writeln!(f, "load lasted {:.1}s", self.load_duration.as_secs_f64())?;
        match self.time_to_drain {
            Some(d) => writeln!(f, "drained {:.1}s after the last fault", d.as_secs_f64())?,
            None => writeln!(f, "did NOT drain within {:?}", o.drain_timeout)?,
        }
        write!(f, "{}", self.invariants)?;
        writeln!(
            f,
            "result: {}  (reproduce: cargo xtask chaos --orders {} --kills {} --seed {})",
            if self.passed() { "PASS" } else { "FAIL" },
            o.orders,
            o.kills,
            o.seed
        )
    }
}

/// Runs one chaos experiment against `backend`.
pub async fn run(backend: &Backend<'_>, options: ChaosOptions) -> Result<ChaosReport> {
    let namespace = format!("chaos{}x{}.", options.seed, chrono_free_timestamp());
    let mut env = vec![
        ("MESSAGING_NAMESPACE".to_owned(), namespace.clone()),
        ("SHUTDOWN_DEADLINE_SECS".to_owned(), "5".to_owned()),
    ];
    if let Some(mode) = options.unsafe_mode {
        env.push((mode.env_var().to_owned(), "1".to_owned()));
    }
    println!("preparing a fresh system (namespace {namespace})…");
    backend.prepare(&env).await.context("preparing the system")?;

    let window = Duration::from_secs_f64(options.orders as f64 / options.rate.max(0.1));
    let schedule = plan::plan(options.seed, options.kills, window, &options.targets);
    println!(
        "placing {} orders over ~{:.0}s while killing {} components…",
        options.orders,
        window.as_secs_f64(),
        schedule.len()
    );

    let order_url = backend.order_url();
    let load = load::place_orders(
        &order_url,
        options.seed,
        options.orders,
        options.concurrency,
        options.rate,
        options.drain_timeout,
    );
    let faults = inject_faults(backend, &schedule, &env);
    let (load, faults) = tokio::join!(load, faults);
    let faults_done = Instant::now();

    println!("waiting for the system to drain…");
    let accepted = load.accepted_ids();
    // Kept so the checker can be run again by hand, e.g. after a run that
    // did not drain within its bound: check-invariants --accepted FILE.
    let accepted_file = std::env::temp_dir().join(format!("{}accepted.txt", namespace));
    match std::fs::write(&accepted_file, accepted.join("\n")) {
        Ok(()) => println!("accepted order ids: {}", accepted_file.display()),
        Err(e) => println!("could not write {}: {e}", accepted_file.display()),
    }
    let drained = backend.wait_drained(&accepted, options.drain_timeout).await;
    let time_to_drain = drained.then(|| faults_done.elapsed());
    // Consumers may still be catching up on the last events: poll the
    // checker until it passes or the bound is reached.
    let deadline = faults_done + options.drain_timeout;
    let invariants = loop {
        let report = backend.check_invariants(&accepted, &namespace).await?;
        if report.passed() || Instant::now() >= deadline || !drained {
            break report;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    Ok(ChaosReport {
        sent: options.orders,
        accepted: accepted.len(),
        rejected_503: load.count(|o| *o == load::Outcome::Rejected),
        failed: load
            .outcomes
            .iter()
            .filter_map(|(i, o)| match o {
                load::Outcome::Failed(why) => Some(format!("order #{i}: {why}")),
                _ => None,
            })
            .collect(),
        responses_503: load.responses_503,
        request_retries: load.retries,
        kills: faults.kills,
        restarts: faults.restarts,
        fault_errors: faults.errors,
        load_duration: load.elapsed,
        time_to_drain,
        invariants,
        options,
    })
}

#[derive(Default)]
struct FaultLog {
    kills: BTreeMap<&'static str, usize>,
    restarts: BTreeMap<&'static str, usize>,
    errors: Vec<String>,
}

async fn inject_faults(backend: &Backend<'_>, schedule: &[plan::PlannedKill], env: &[(String, String)]) -> FaultLog {
    let started = Instant::now();
    let mut log = FaultLog::default();
    for kill in schedule {
        tokio::time::sleep_until((started + kill.at).into()).await;
        println!(
            "  {:>6.1}s kill {} (down {:.1}s)",
            started.elapsed().as_secs_f64(),
            kill.target,
            kill.down_for.as_secs_f64()
        );
        if let Err(e) = backend.kill(kill.target).await {
            log.errors.push(format!("killing {}: {e:#}", kill.target));
            continue;
        }
        *log.kills.entry(kill.target).or_default() += 1;
        tokio::time::sleep(kill.down_for).await;
        match start_with_retries(backend, kill.target, env).await {
            Ok(()) => *log.restarts.entry(kill.target).or_default() += 1,
            Err(e) => log.errors.push(format!("restarting {}: {e:#}", kill.target)),
        }
    }
    log
}

/// Starts `target`, trying again (twice at most, loudly) if it dies or
/// fails during start-up: what the suite measures is whether the system
/// recovers once its parts are back, and a start that fails on its own
/// (seen rarely with Tansu right after a SIGKILL) is not that.
async fn start_with_retries(backend: &Backend<'_>, target: &str, env: &[(String, String)]) -> Result<()> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match backend.start(target, env).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < ATTEMPTS => {
                println!("  WARNING: starting {target} failed (attempt {attempt} of {ATTEMPTS}), trying again: {e:#}");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Seconds since the epoch, for unique namespaces.
fn chrono_free_timestamp() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

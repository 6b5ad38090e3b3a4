//! What the `cargo xtask` subcommands do; `main.rs` only parses arguments.

use std::{fmt::Write as _, io::Write as _, str::FromStr, time::Instant};

use anyhow::{Context, Result, anyhow, bail};
use messaging::log_tailing::RelayMode;

use crate::{
    infra::{Component, Stack, StartOutcome},
    kafka_supervisor,
    services::{self, CONSOLE, SERVICE_READY_TIMEOUT, SERVICE_STOP_TIMEOUT, SERVICES, ServiceSpec},
    tools,
};

/// Something `kill`, `restart` and `logs` can address by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Infra(Component),
    Service(&'static ServiceSpec),
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Infra(component) => component.name(),
            Target::Service(spec) => spec.name,
        }
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(name: &str) -> Result<Self> {
        if let Ok(component) = name.parse::<Component>() {
            return Ok(Target::Infra(component));
        }
        if let Some(spec) = services::service_spec(name) {
            return Ok(Target::Service(spec));
        }
        let services: Vec<&str> = SERVICES.iter().map(|spec| spec.name).collect();
        Err(anyhow!("unknown name {name:?}: expected postgres, rabbitmq, kafka or a service ({})", services.join(", ")))
    }
}

/// `cargo xtask up`: tools, infrastructure, databases, topics, build, services.
pub async fn up(stack: &Stack, build: bool) -> Result<()> {
    infra_up(stack).await?;
    provision(stack).await?;

    if build {
        println!("Building the service binaries…");
        if let Err(error) = services::build_services(stack.repo_root()).await {
            eprintln!("error: {error:#}\n(continuing with whatever binaries exist)");
        }
    }

    let mut failures = Vec::new();
    // The console first, so that the services send it their spans from the start.
    for spec in [&CONSOLE].into_iter().chain(&SERVICES) {
        let service = stack.service(spec);
        let Some(binary) = service.binary() else {
            println!(
                "{:<9} binary missing (neither {} nor {} in {}): not started",
                spec.name,
                spec.name,
                spec.package,
                services::binary_dir(stack.repo_root()).display()
            );
            continue;
        };
        let started = Instant::now();
        let result = async {
            let outcome = service.spawn(&[])?;
            service.wait_ready(SERVICE_READY_TIMEOUT).await?;
            anyhow::Ok(outcome)
        }
        .await;
        match result {
            Ok(outcome) => println!(
                "{:<9} {} ({}), ready in {:.1}s",
                spec.name,
                describe_start(outcome),
                binary.display(),
                started.elapsed().as_secs_f64()
            ),
            Err(error) => {
                eprintln!("{:<9} FAILED: {error:#}", spec.name);
                failures.push(spec.name);
            }
        }
    }

    println!("\n{}", endpoints(stack));
    if !failures.is_empty() {
        bail!(
            "services not ready: {} (see their logs above and in {})",
            failures.join(", "),
            stack.logs_dir().display()
        );
    }
    Ok(())
}

/// Creates the six databases and the Kafka topics (idempotent).
pub async fn provision(stack: &Stack) -> Result<()> {
    for spec in SERVICES.iter().chain([&CONSOLE]) {
        stack.create_database(spec.name).await.with_context(|| format!("creating the {} database", spec.name))?;
    }
    let topics = services::topics();
    let refs: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    stack.kafka().create_topics(&refs).await.context("creating Kafka topics")?;
    let topics: Vec<String> =
        topics.iter().map(|(name, partitions)| format!("{name} ({partitions} partitions)")).collect();
    println!(
        "databases: {}; topics: {}",
        SERVICES.iter().map(|spec| spec.name).collect::<Vec<_>>().join(", "),
        topics.join(", ")
    );
    Ok(())
}

/// `cargo xtask down`: services first (they hold connections), then infrastructure.
pub async fn down(stack: &Stack) -> Result<()> {
    let mut failures = Vec::new();
    // The console last: it shows the others going.
    for spec in SERVICES.iter().chain([&CONSOLE]) {
        let service = stack.service(spec);
        if service.is_running() {
            match service.stop(SERVICE_STOP_TIMEOUT).await {
                Ok(()) => println!("{:<9} stopped", spec.name),
                Err(error) => failures.push(format!("{}: {error:#}", spec.name)),
            }
        }
    }
    if let Err(error) = infra_down(stack).await {
        failures.push(format!("{error:#}"));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}

/// `cargo xtask infra up`: start PostgreSQL, RabbitMQ, Kafka and wait.
pub async fn infra_up(stack: &Stack) -> Result<()> {
    tools::ensure_all().await?;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for component in Component::ALL {
        outcomes.push((component, stack.start_component(component).await?));
    }
    // Wait concurrently: RabbitMQ's boot dominates.
    let ready_after =
        |component: Component| async move { stack.wait_component_ready(component).await.map(|()| started.elapsed()) };
    let (postgres, rabbitmq, kafka) = tokio::join!(
        ready_after(Component::Postgres),
        ready_after(Component::RabbitMq),
        ready_after(Component::Kafka),
    );
    let mut failures = Vec::new();
    for ((component, outcome), result) in outcomes.into_iter().zip([postgres, rabbitmq, kafka]) {
        match result {
            Ok(elapsed) => println!(
                "{:<9} {} on port {}, ready after {:.1}s",
                component.name(),
                describe_start(outcome),
                stack.component_port(component),
                elapsed.as_secs_f64()
            ),
            Err(error) => failures.push(format!("{error:#}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    if let Some(outcome) = stack.kafka_supervisor().start_or_warn().await {
        println!(
            "{:<9} {} (restarts a wedged Kafka; log {})",
            kafka_supervisor::NAME,
            describe_start(outcome),
            stack.kafka_supervisor().log_path().display()
        );
    }
    Ok(())
}

/// `cargo xtask infra down`.
pub async fn infra_down(stack: &Stack) -> Result<()> {
    let running: Vec<Component> =
        Component::ALL.into_iter().filter(|component| stack.component_pid(*component).is_some()).collect();
    let supervised = stack.kafka_supervisor().pid().is_some();
    stack.stop_infra().await?;
    if supervised {
        println!("{:<9} stopped", kafka_supervisor::NAME);
    }
    for component in running {
        println!("{:<9} stopped", component.name());
    }
    Ok(())
}

/// `cargo xtask status`: one row per process.
pub fn status(stack: &Stack) -> String {
    let mut table = String::new();
    let _ = writeln!(table, "stack {} ({})", stack.name(), stack.dir().display());
    let _ = writeln!(table, "{:<16} {:>8} {:<8} {:>6}", "COMPONENT", "PID", "RUNNING", "PORT");
    let mut row = |name: &str, pid: Option<u32>, port: Option<u16>, note: &str| {
        let pid_text = pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        let running = if pid.is_some() { "yes" } else { "no" };
        let port = port.map_or_else(|| "-".to_owned(), |port| port.to_string());
        let _ = writeln!(table, "{}", format!("{name:<16} {pid_text:>8} {running:<8} {port:>6} {note}").trim_end());
    };
    for component in Component::ALL {
        row(component.name(), stack.component_pid(component), Some(stack.component_port(component)), "");
    }
    let supervisor = stack.kafka_supervisor();
    let restarts = format!("{} restart(s) of a wedged kafka", supervisor.restarts());
    row(kafka_supervisor::NAME, supervisor.pid(), None, &restarts);
    for spec in SERVICES.iter().chain([&CONSOLE]) {
        let service = stack.service(spec);
        row(spec.name, service.pid(), Some(service.port()), "");
    }
    table
}

/// `cargo xtask logs NAME [--follow]`.
pub async fn logs(stack: &Stack, target: Target, follow: bool) -> Result<()> {
    let path = stack.log_path(target.name());
    if !path.exists() {
        bail!("no log for {} at {} (has it been started on stack {}?)", target.name(), path.display(), stack.name());
    }
    if follow {
        let status = tokio::process::Command::new("tail")
            .args(["-n", "+1", "-F"])
            .arg(&path)
            .status()
            .await
            .context("running tail -F")?;
        if !status.success() {
            bail!("tail -F {} exited with {status}", path.display());
        }
        return Ok(());
    }
    let contents = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    std::io::stdout().write_all(&contents).context("writing log to stdout")?;
    Ok(())
}

/// The pid of `target`, or `None` after saying it is not running.
fn running_pid(stack: &Stack, target: Target) -> Option<u32> {
    let pid = match target {
        Target::Infra(component) => stack.component_pid(component),
        Target::Service(spec) => stack.service(spec).pid(),
    };
    if pid.is_none() {
        println!("{} is not running on stack {}", target.name(), stack.name());
    }
    pid
}

/// `cargo xtask kill NAME`: SIGKILL, like a crash.
pub async fn kill(stack: &Stack, target: Target) -> Result<()> {
    let started = Instant::now();
    let Some(pid) = running_pid(stack, target) else { return Ok(()) };
    let killed = match target {
        Target::Infra(component) => stack.kill_component(component).await?,
        Target::Service(spec) => {
            stack.service(spec).kill().await?;
            true
        }
    };
    if !killed {
        // It exited between the look-up and the signal.
        println!("{} (pid {pid}) had already exited on stack {}", target.name(), stack.name());
        return Ok(());
    }
    println!("{} (pid {pid}) killed with SIGKILL in {:.1}s", target.name(), started.elapsed().as_secs_f64());
    Ok(())
}

/// `cargo xtask stop NAME`: SIGTERM, and wait until it has exited.
pub async fn stop(stack: &Stack, target: Target) -> Result<()> {
    let started = Instant::now();
    let Some(pid) = running_pid(stack, target) else { return Ok(()) };
    match target {
        Target::Infra(component) => stack.stop_component(component).await?,
        Target::Service(spec) => stack.service(spec).stop(SERVICE_STOP_TIMEOUT).await?,
    }
    println!("{} (pid {pid}) stopped with SIGTERM in {:.1}s", target.name(), started.elapsed().as_secs_f64());
    Ok(())
}

/// `cargo xtask restart NAME`: graceful stop if running, start, wait until ready.
pub async fn restart(stack: &Stack, target: Target) -> Result<()> {
    let started = Instant::now();
    let pid = match target {
        Target::Infra(component) => stack.restart_component(component).await?,
        Target::Service(spec) => stack.service(spec).restart(&[]).await?,
    };
    println!("{} restarted: pid {pid}, ready in {:.1}s", target.name(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Every address a developer needs, plus where the logs are.
pub fn endpoints(stack: &Stack) -> String {
    let mut text = String::new();
    let console = stack.service(&CONSOLE);
    let _ = writeln!(text, "console    {:<24} follow an order, break the system and watch it recover", console.url());
    let _ = writeln!(text, "postgres   postgres://postgres@127.0.0.1:{}/<database>", stack.ports().postgres);
    let _ = writeln!(text, "amqp       {}", stack.amqp_url());
    if let Some(port) = stack.ports().rabbit_management {
        let _ = writeln!(text, "rabbit ui  http://127.0.0.1:{port} (guest/guest)");
    }
    let _ = writeln!(text, "kafka      {}", stack.kafka_brokers());
    for spec in &SERVICES {
        let _ = writeln!(
            text,
            "{:<10} {:<24} database {}",
            spec.name,
            stack.service(spec).url(),
            stack.postgres_url(spec.name)
        );
    }
    let _ = write!(text, "logs       {}/<name>.log", stack.logs_dir().display());
    text
}

fn describe_start(outcome: StartOutcome) -> String {
    match outcome {
        StartOutcome::AlreadyRunning { pid } => format!("already running (pid {pid})"),
        StartOutcome::Spawned { pid } => format!("started (pid {pid})"),
    }
}

/// The test binaries run a second time with the log-tailing relay.
const LOG_TAILING_PASS: &[&str] =
    &["order_flow", "foundation_flow", "event_ordering", "faults", "network_faults", "backpressure"];

/// Tests of those binaries the second pass leaves out (name prefixes).
const LOG_TAILING_PASS_SKIPS: &[&str] = &[
    "crash_point_relay_",
    "crash_point_log_tailing_",
    "crash_point_inbox_",
    "crash_point_consumer_",
    "kafka_publisher_",
    "negative_control",
];

/// The benchmarks of `cargo xtask bench`, by name: each is a binary of
/// load-tests writing `<name>.html` and `<name>.json` under target/bench/.
const BENCHMARKS: [&str; 3] = ["kafka-storage", "relays", "e2e"];

/// `cargo xtask bench [kafka-storage|relays|e2e|all]`: the benchmarks, built in release
/// (debug figures would measure the compiler's checks), services included,
/// on the test stack.
pub fn bench(which: &str, extra_args: &[String]) -> Result<()> {
    let chosen: Vec<&str> = match which {
        "all" => BENCHMARKS.to_vec(),
        one if BENCHMARKS.contains(&one) => vec![one],
        other => bail!("no benchmark `{other}`: choose one of {} or `all`", BENCHMARKS.join(", ")),
    };
    let root = crate::repo_root();
    let report_dir = services::target_dir(&root).join("bench");
    for benchmark in chosen {
        let status = std::process::Command::new(cargo())
            .args(["run", "--release", "-p", "load-tests", "--bin", benchmark])
            .args(["--", "--report"])
            .arg(&report_dir)
            .args(extra_args)
            // The services the benchmark starts are release builds too.
            .env("ORDERMESH_SERVICE_PROFILE", "release")
            .current_dir(&root)
            .status()
            .with_context(|| format!("running the {benchmark} benchmark"))?;
        if !status.success() {
            bail!("the {benchmark} benchmark failed ({status})");
        }
    }
    println!("reports in {}", report_dir.display());
    Ok(())
}

/// `cargo xtask test`: everything the tests need on a fresh machine (tools,
/// the test infrastructure stack, the service binaries), then every test of
/// the workspace. Extra arguments go to `cargo test` after `--`.
pub async fn test(extra_args: &[String]) -> Result<()> {
    let started = Instant::now();
    let root = crate::repo_root();
    tools::ensure_all().await.context("installing or locating PostgreSQL, RabbitMQ and Tansu")?;
    tools::ensure_docker_compose().await.context("installing docker-compose (validates docker-compose.yml)")?;
    tools::ensure_chromium().await.context("installing Chromium and chromedriver (the console's browser tests)")?;
    let stack = Stack::test(&root);
    // The API fuzz test's schemathesis (PyPI, a virtual environment under
    // the stack's folder): installed here so that a machine without Python
    // fails at once, saying so, not half an hour into the tests.
    crate::schemathesis::ensure_schemathesis(stack.dir())
        .await
        .context("installing schemathesis (the API fuzz test)")?;
    stack.start_infra().await.context("starting the test infrastructure stack")?;
    // Every test works in a namespace of its own, so what earlier runs left
    // in the broker is garbage; Tansu slows down as it piles up, until
    // admin metadata requests time out. Each run starts from an empty one.
    stack.kafka().restart_empty().await.context("emptying the test stack's Kafka (Tansu)")?;
    // Slots that tests which failed earlier left behind hold back WAL.
    stack.drop_idle_replication_slots().await.context("dropping leftover replication slots")?;
    let infra_ready = started.elapsed();

    println!("Building the service binaries…");
    let build = std::process::Command::new(cargo())
        .args(["build", "--workspace", "--bins"])
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !build.success() {
        bail!("cargo build --workspace --bins failed");
    }
    let built = started.elapsed();

    println!("Running the tests…");
    // The tests that make throwaway databases (services' handler tests, the
    // checker's corruption tests) make them on the test stack's server too,
    // never on the machine's own.
    let test_postgres = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| stack.postgres_server_url());
    let status = std::process::Command::new(cargo())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra_args)
        .env("ORDERMESH_SKIP_BUILD", "1")
        .env("TEST_POSTGRES_URL", test_postgres)
        .current_dir(&root)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("some tests failed (service logs of system tests: {}/test-logs)", services::target_dir(&root).display());
    }

    // The flow, guarantee and fault tests again, every service publishing
    // its outbox with the log-tailing relay. Left out: what does not depend
    // on the relay (the consumers' and the Kafka producer's own crash points
    // and tests), the polling relay's crash points (they never fire with
    // the other relay), the log-tailing ones (they run above, with that
    // relay) and the negative controls (whole chaos runs; the log-tailing
    // one runs above).
    println!("\nThe flow and fault tests again with OUTBOX_RELAY=log-tailing…");
    let mut tailing = std::process::Command::new(cargo());
    tailing.args(["test", "-p", "system-tests", "--no-fail-fast"]);
    for test in LOG_TAILING_PASS {
        tailing.args(["--test", test]);
    }
    let status = tailing
        .arg("--")
        .args(LOG_TAILING_PASS_SKIPS.iter().flat_map(|test| ["--skip", test]))
        .env("ORDERMESH_SKIP_BUILD", "1")
        .env("OUTBOX_RELAY", "log-tailing")
        .current_dir(&root)
        .status()
        .context("running cargo test with the log-tailing relay")?;
    let tests_done = started.elapsed();
    if !status.success() {
        bail!(
            "some tests failed with OUTBOX_RELAY=log-tailing (service logs of system tests: {}/test-logs)",
            services::target_dir(&root).display()
        );
    }

    // The short chaos run of CI: PostgreSQL, RabbitMQ and Kafka each killed
    // at least once (the other kills fall on any component), and the network
    // to each of them silently cut once, while orders flow; then every
    // invariant checked.
    let seed = std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_123);
    println!("\nShort chaos run (seed {seed}; CHAOS_SEED overrides)…");
    let chaos_stack = Stack::chaos(&root);
    let mut reports = Vec::new();
    for relay in [RelayMode::Polling, RelayMode::LogTailing] {
        let options =
            crate::chaos::ChaosOptions { orders: 300, kills: 10, partitions: 3, seed, relay, ..Default::default() };
        let report = crate::chaos::run(&crate::chaos::backend::Backend::Local(&chaos_stack), options).await?;
        println!("\n{report}");
        reports.push(report);
    }
    println!(
        "infrastructure ready after {:.0}s, binaries built after {:.0}s, tests done after {:.0}s, chaos done after {:.0}s",
        infra_ready.as_secs_f64(),
        built.as_secs_f64(),
        tests_done.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    if let Some(report) = reports.iter().find(|report| !report.passed()) {
        bail!(
            "the short chaos run with the {:?} relay found a violation (seed {seed}); logs in {}",
            report.options.relay,
            chaos_stack.logs_dir().display()
        );
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

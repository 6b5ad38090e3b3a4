//! Where the chaos suite injects faults: the local runner's processes, or a
//! `docker compose` deployment (`docker compose kill` / `start`).
//!
//! The compose deployment takes its configuration from docker-compose.yml
//! alone: the run's environment (`MESSAGING_NAMESPACE`, the UNSAFE modes,
//! the shutdown deadline) does not reach it ([`Backend::applies_env`]), so
//! the runner refuses unsafe modes there, and its queues, topics, groups
//! and dead-letter destinations carry no namespace: the checker reads them
//! with the empty one.

use crate::infra::{Component, Stack, percent_encode};
use crate::kafka_supervisor;
use crate::services::service_spec;
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub enum Backend<'a> {
    /// Processes of a local runner stack (normally `chaos`).
    Local(&'a Stack),
    /// A compose project started from `file`; services on the host ports of
    /// the file, PostgreSQL reachable at `database_url_template`
    /// (`{service}` is replaced by the service name), RabbitMQ at `amqp_url`.
    Compose { file: PathBuf, database_url_template: String, amqp_url: String },
}

impl Backend<'_> {
    /// The deployment of docker-compose.yml `file` as seen from this host,
    /// with the credentials and ports the file itself takes from the
    /// environment (`POSTGRES_PASSWORD`, `POSTGRES_HOST_PORT`,
    /// `RABBITMQ_USER`, `RABBITMQ_PASSWORD`), or its defaults.
    pub fn compose(file: PathBuf) -> Backend<'static> {
        Self::compose_with(file, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn compose_with(file: PathBuf, var: impl Fn(&str) -> Option<String>) -> Backend<'static> {
        let var = |name: &str, default: &str| percent_encode(&var(name).unwrap_or_else(|| default.to_owned()));
        let (password, port) = (var("POSTGRES_PASSWORD", "postgres"), var("POSTGRES_HOST_PORT", "5432"));
        let (user, rabbit_password) = (var("RABBITMQ_USER", "ordermesh"), var("RABBITMQ_PASSWORD", "ordermesh"));
        Backend::Compose {
            file,
            database_url_template: format!("postgres://postgres:{password}@127.0.0.1:{port}/{{service}}"),
            amqp_url: format!("amqp://{user}:{rabbit_password}@127.0.0.1:5672/%2f"),
        }
    }

    /// Whether the services get the `env` given to [`Backend::prepare`] and
    /// [`Backend::start`]; the compose deployment does not.
    pub fn applies_env(&self) -> bool {
        match self {
            Backend::Local(_) => true,
            Backend::Compose { .. } => false,
        }
    }

    /// A fresh system: infrastructure up, empty databases, services started
    /// with `env` (namespace, unsafe modes; local backend only) and ready.
    pub async fn prepare(&self, env: &[(String, String)]) -> Result<()> {
        match self {
            Backend::Local(stack) => {
                crate::services::start_fresh_system(stack, |_| env.to_vec(), Duration::from_secs(90)).await
            }
            Backend::Compose { file, .. } => {
                // `env` is not applied (see the module docs): the compose file
                // carries its own configuration, and fresh volumes stand in
                // for a namespace.
                compose(file, &["down", "--volumes"])?;
                compose(file, &["up", "--detach", "--wait"])
            }
        }
    }

    /// How far the brokers' logs have grown (local processes; 0 otherwise).
    pub fn broker_log_lens(&self) -> BrokerLogLens {
        BrokerLogLens {
            kafka: self.log_len("kafka"),
            rabbitmq: self.log_len("rabbitmq"),
            supervisor: self.log_len(kafka_supervisor::NAME),
            rabbitmq_repairs: self.log_len(crate::infra::QUORUM_REPAIRS_LOG),
        }
    }

    fn log_len(&self, component: &str) -> u64 {
        match self {
            Backend::Local(stack) => std::fs::metadata(stack.log_path(component)).map_or(0, |m| m.len()),
            Backend::Compose { .. } => 0,
        }
    }

    /// What `component` logged after `offset` (local processes only).
    fn log_since(&self, component: &str, offset: u64) -> Option<String> {
        let Backend::Local(stack) = self else { return None };
        let log = std::fs::read(stack.log_path(component)).ok()?;
        Some(String::from_utf8_lossy(log.get(usize::try_from(offset).unwrap_or(0)..).unwrap_or_default()).into_owned())
    }

    /// Panics the Kafka broker logged since `since`: Tansu 0.6 can panic in
    /// its storage task, which leaves the process listening but unable to
    /// answer anything.
    pub fn broker_panics_since(&self, since: BrokerLogLens) -> Vec<String> {
        self.log_since("kafka", since.kafka).map(|tail| panics_in(&tail)).unwrap_or_default()
    }

    /// The restarts the stack's Kafka supervisor made since `since` (local
    /// processes only; see [`crate::kafka_supervisor`]).
    pub fn supervisor_restarts_since(&self, since: BrokerLogLens) -> Vec<kafka_supervisor::RestartRecord> {
        self.log_since(kafka_supervisor::NAME, since.supervisor)
            .map(|tail| kafka_supervisor::restarts_in(&tail))
            .unwrap_or_default()
    }

    /// The quorum queues the runner re-attached since `since`, one line per
    /// repair (see [`crate::infra::RabbitMq::repair_quorum_queues`]).
    pub fn quorum_repairs_since(&self, since: BrokerLogLens) -> Vec<String> {
        self.log_since(crate::infra::QUORUM_REPAIRS_LOG, since.rabbitmq_repairs)
            .map(|tail| tail.lines().map(str::to_owned).filter(|l| !l.trim().is_empty()).collect())
            .unwrap_or_default()
    }

    /// Quorum queues of `namespace` that RabbitMQ, restarted since `since`,
    /// left without a leader: its log says "leader not known" for them and
    /// never elects one afterwards. RabbitMQ 3.10 (Debian's) can fail to
    /// bring back the Raft member of a single-node quorum queue killed
    /// within a second or so of its declaration; every publish to it then
    /// waits for a confirm that never comes.
    pub fn leaderless_queues_since(&self, since: BrokerLogLens, namespace: &str) -> Vec<String> {
        match self.log_since("rabbitmq", since.rabbitmq) {
            Some(tail) if !namespace.is_empty() => leaderless_queues(&tail, namespace),
            _ => Vec::new(),
        }
    }

    /// SIGKILLs `target`; `Ok(false)` if nothing of it was running, so
    /// nothing was killed.
    pub async fn kill(&self, target: &str) -> Result<bool> {
        match self {
            Backend::Local(stack) => match target.parse::<Component>() {
                Ok(component) => stack.kill_component(component).await,
                Err(_) => {
                    let service = stack.service_named(target)?;
                    // Service::kill does not say whether it found a process;
                    // one that exits between the look-up and the signal
                    // still counts, which is as good as a kill.
                    let running = service.pid().is_some();
                    service.kill().await?;
                    Ok(running)
                }
            },
            Backend::Compose { file, .. } => {
                let running = compose_output(file, &["ps", "--status", "running", "--quiet", target])?;
                if running.trim().is_empty() {
                    return Ok(false);
                }
                compose(file, &["kill", "-s", "SIGKILL", target])?;
                Ok(true)
            }
        }
    }

    /// Starts `target` again and waits until it is ready.
    pub async fn start(&self, target: &str, env: &[(String, String)]) -> Result<()> {
        match self {
            Backend::Local(stack) => match target.parse::<Component>() {
                Ok(component) => {
                    stack.start_component(component).await?;
                    stack.wait_component_ready(component).await
                }
                Err(_) => {
                    let service = stack.service_named(target)?;
                    service.spawn(&as_refs(env))?;
                    service.wait_ready(Duration::from_secs(90)).await
                }
            },
            Backend::Compose { file, .. } => {
                compose(file, &["start", target])?;
                match service_spec(target) {
                    Some(spec) => {
                        wait_http_ready(&format!("http://127.0.0.1:{}", spec.base_port), Duration::from_secs(90)).await
                    }
                    // A broker or database counts as restarted once its own
                    // health check passes, as the local backend waits for
                    // its component to answer.
                    None => wait_container_healthy(file, target, Duration::from_secs(120)).await,
                }
            }
        }
    }

    pub fn order_url(&self) -> String {
        match self {
            Backend::Local(stack) => stack.service_named("order").map(|s| s.url()).unwrap_or_default(),
            Backend::Compose { .. } => "http://127.0.0.1:8080".to_owned(),
        }
    }

    pub fn database_url(&self, service: &str) -> String {
        match self {
            Backend::Local(stack) => stack.postgres_url(service),
            Backend::Compose { database_url_template, .. } => database_url_template.replace("{service}", service),
        }
    }

    pub fn amqp_url(&self) -> String {
        match self {
            Backend::Local(stack) => stack.amqp_url(),
            Backend::Compose { amqp_url, .. } => amqp_url.clone(),
        }
    }

    pub fn kafka_brokers(&self) -> String {
        match self {
            Backend::Local(stack) => stack.kafka_brokers(),
            Backend::Compose { .. } => "127.0.0.1:9094".to_owned(),
        }
    }

    /// The URL of each service's database.
    pub fn database_urls(&self) -> invariants::DatabaseUrls {
        invariants::DatabaseUrls {
            order: self.database_url("order"),
            stock: self.database_url("stock"),
            payment: self.database_url("payment"),
            shipping: self.database_url("shipping"),
            email: self.database_url("email"),
            loyalty: self.database_url("loyalty"),
        }
    }

    /// What still keeps the system from having drained (one short-lived
    /// pool set; for repeated polling see [`Backend::wait_drained`]).
    pub async fn pending_work(&self, accepted: &BTreeSet<Uuid>) -> Result<invariants::PendingWork> {
        let databases = invariants::Databases::connect(&self.database_urls()).await?;
        let pending = invariants::pending_work(&databases, accepted).await;
        databases.close().await;
        Ok(pending?)
    }

    /// Waits until every accepted order is final and every outbox is empty;
    /// false if that did not happen within `timeout`.
    pub async fn wait_drained(&self, accepted: &BTreeSet<Uuid>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // One pool set for the whole wait, connected once the databases answer.
        let mut databases: Option<invariants::Databases> = None;
        let drained = loop {
            let pending = match &databases {
                Some(db) => invariants::pending_work(db, accepted).await,
                None => match invariants::Databases::connect(&self.database_urls()).await {
                    Ok(db) => {
                        databases = Some(db);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match pending {
                Ok(pending) if pending.is_drained() => break true,
                Ok(pending) if Instant::now() >= deadline => {
                    println!(
                        "  still {} orders in flight, {} accepted orders missing and {} unsent messages at the deadline",
                        pending.not_final.len(),
                        pending.missing.len(),
                        pending.unsent_total()
                    );
                    break false;
                }
                Err(e) if Instant::now() >= deadline => {
                    println!("  cannot read the databases at the deadline: {e}");
                    break false;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        if let Some(db) = databases {
            db.close().await;
        }
        drained
    }

    /// Runs the invariant checker on this system; `namespace` is the run's
    /// (empty on compose, see the module docs). What does not answer is
    /// reported in the result, never an early exit.
    pub async fn check_invariants(&self, accepted: &BTreeSet<Uuid>, namespace: &str) -> invariants::Checked {
        let options = invariants::CheckOptions {
            accepted: Some(accepted.clone()),
            brokers: invariants::Brokers {
                amqp_url: Some(self.amqp_url()),
                kafka_brokers: Some(self.kafka_brokers()),
                topology: contracts::Topology::new(namespace),
            },
            ..invariants::CheckOptions::default()
        };
        invariants::check_what_answers(&self.database_urls(), &options).await
    }
}

/// Where the brokers' logs ended at some point (see [`Backend::broker_log_lens`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct BrokerLogLens {
    kafka: u64,
    rabbitmq: u64,
    /// The Kafka supervisor's log.
    supervisor: u64,
    /// The runner's log of quorum-queue repairs.
    rabbitmq_repairs: u64,
}

/// The panics in a Kafka (Tansu) log, each as "<message> (<location>)":
/// Rust prints `thread '…' panicked at <location>:` and the message on the
/// next line.
pub fn panics_in(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(_, line)| line.contains("panicked at"))
        .map(|(i, line)| {
            let location = line.split("panicked at").nth(1).unwrap_or_default().trim().trim_end_matches(':');
            let message = lines.get(i + 1).copied().unwrap_or_default().trim();
            format!("{message} ({location})")
        })
        .collect()
}

/// See [`Backend::leaderless_queues_since`]: the queues of `namespace` whose
/// last word in `log` is "leader not known", in order of first mention.
fn leaderless_queues(log: &str, namespace: &str) -> Vec<String> {
    let mut last_word: Vec<(String, bool)> = Vec::new();
    let mut note = |queue: &str, leaderless: bool| match last_word.iter_mut().find(|(q, _)| q == queue) {
        Some(entry) => entry.1 = leaderless,
        None => last_word.push((queue.to_owned(), leaderless)),
    };
    for line in log.lines() {
        if line.contains("leader call - leader not known") {
            // {'%2F_<queue>','<node>'}: leader call - leader not known.
            if let Some(queue) = line.split("{'%2F_").nth(1).and_then(|rest| rest.split('\'').next()) {
                note(queue, true);
            }
        } else if line.contains("candidate -> leader") {
            // queue '<queue>' in vhost '/': candidate -> leader in term: …
            if let Some(queue) = line.split("queue '").nth(1).and_then(|rest| rest.split('\'').next()) {
                note(queue, false);
            }
        }
    }
    last_word
        .into_iter()
        .filter(|(queue, leaderless)| *leaderless && queue.starts_with(namespace))
        .map(|(q, _)| q)
        .collect()
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `docker compose -f FILE ARGS…`, returning its standard output.
fn compose_output(file: &PathBuf, args: &[&str]) -> Result<String> {
    let output = std::process::Command::new("docker")
        .arg("compose")
        .arg("-f")
        .arg(file)
        .args(args)
        .output()
        .context("running `docker compose` (is Docker installed?)")?;
    if !output.status.success() {
        bail!(
            "docker compose {} failed: {} ({})",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn compose(file: &PathBuf, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("docker")
        .arg("compose")
        .arg("-f")
        .arg(file)
        .args(args)
        .status()
        .context("running `docker compose` (is Docker installed?)")?;
    if !status.success() {
        bail!("docker compose {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Waits until the container of compose service `target` reports its health
/// check as passed (`docker inspect`, the same with Compose v1 and v2).
async fn wait_container_healthy(file: &PathBuf, target: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let container = compose_output(file, &["ps", "--quiet", target])?;
        if let Some(id) = container.split_whitespace().next() {
            let output = std::process::Command::new("docker")
                .args(["inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}", id])
                .output()
                .context("running `docker inspect`")?;
            last = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if last == "healthy" {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("{target} not healthy after {timeout:?} (last health status: `{last}`)");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_http_ready(base: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("{base} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compose_backend_uses_the_credentials_the_compose_file_is_given() {
        let defaults = Backend::compose_with("docker-compose.yml".into(), |_| None);
        assert_eq!(defaults.amqp_url(), "amqp://ordermesh:ordermesh@127.0.0.1:5672/%2f");
        assert_eq!(defaults.database_url("order"), "postgres://postgres:postgres@127.0.0.1:5432/order");

        let overridden = Backend::compose_with("docker-compose.yml".into(), |name| match name {
            "POSTGRES_PASSWORD" => Some("p@ss".to_owned()),
            "POSTGRES_HOST_PORT" => Some("15432".to_owned()),
            "RABBITMQ_USER" => Some("ops".to_owned()),
            "RABBITMQ_PASSWORD" => Some("s/cret".to_owned()),
            _ => None,
        });
        assert_eq!(overridden.amqp_url(), "amqp://ops:s%2Fcret@127.0.0.1:5672/%2f");
        assert_eq!(overridden.database_url("stock"), "postgres://postgres:p%40ss@127.0.0.1:15432/stock");
    }

    #[test]
    fn broker_panics_after_the_offset_are_found_with_their_message() {
        let root = std::env::temp_dir().join(format!("ordermesh-backend-test-{}", Uuid::now_v7()));
        let stack = Stack::chaos(&root);
        let log = stack.log_path("kafka");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let before = "thread 'x' panicked at old.rs:1:1:\nold panic\n";
        std::fs::write(&log, before).unwrap();
        let backend = Backend::Local(&stack);
        let offset = backend.broker_log_lens();
        let after = "ready in 27ms\nthread 'tokio-rt-worker' (15318) panicked at /r/tansu-storage-0.6.0/src/lite.rs:503:13:\nmore or less than one row\nstack backtrace:\n";
        std::fs::write(&log, format!("{before}{after}")).unwrap();
        assert_eq!(
            backend.broker_panics_since(offset),
            ["more or less than one row (/r/tansu-storage-0.6.0/src/lite.rs:503:13)"]
        );
        assert_eq!(backend.broker_panics_since(BrokerLogLens::default()).len(), 2);
        let _ = std::fs::remove_dir_all(root);
    }
}

#[cfg(test)]
mod leaderless_tests {
    use super::leaderless_queues;

    #[test]
    fn a_queue_whose_last_word_is_leader_not_known_is_leaderless() {
        let log = "\
2026-11-24 14:12:44.979571+00:00 [notice] <0.780.0> queue 'run1.order.replies' in vhost '/': candidate -> leader in term: 1 machine version: 2
2026-11-24 14:12:52.845739+00:00 [notice] <0.509.0> queue 'run1.stock.commands' in vhost '/': candidate -> leader in term: 2 machine version: 2
2026-11-24 14:12:53.014398+00:00 [info] <0.548.0> {'%2F_run1.order.replies','ordermesh-chaos@localhost'}: leader call - leader not known. Command will be forwarded once leader is known.
2026-11-24 14:12:53.100000+00:00 [info] <0.548.0> {'%2F_run1.stock.commands','ordermesh-chaos@localhost'}: leader call - leader not known. Command will be forwarded once leader is known.
2026-11-24 14:12:53.200000+00:00 [notice] <0.509.0> queue 'run1.stock.commands' in vhost '/': candidate -> leader in term: 3 machine version: 2
2026-11-24 14:12:54.014398+00:00 [info] <0.548.0> {'%2F_old.order.replies','ordermesh-chaos@localhost'}: leader call - leader not known. Command will be forwarded once leader is known.
2026-11-24 14:13:10.106013+00:00 [info] <0.548.0> {'%2F_run1.order.replies','ordermesh-chaos@localhost'}: leader call - leader not known. Command will be forwarded once leader is known.
";
        // stock.commands found its leader again; the other run's queue is not this run's.
        assert_eq!(leaderless_queues(log, "run1."), ["run1.order.replies"]);
        assert!(leaderless_queues(log, "run2.").is_empty());
    }
}

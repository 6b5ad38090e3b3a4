//! What a stack is: its name, directory, ports and the URLs they make, and
//! the bookkeeping of the processes it owns (pid files, logs, kills).

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;

use super::{KILL_TIMEOUT, LOG_TAIL_LINES};
use crate::process::{self, OWNER_ENV};

/// Kafka of [`Stack::test_kafka_behind_proxy`].
const NETWORK_FAULTS_KAFKA_PORT: u16 = 22192;

/// Ports of one stack. All below 32768, where Linux starts handing out
/// ephemeral ports: a listener's port there can be held by some outgoing
/// connection just when a killed server restarts and needs it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackPorts {
    pub postgres: u16,
    pub amqp: u16,
    pub rabbit_dist: u16,
    pub kafka: u16,
    /// RabbitMQ management UI, if enabled for this stack.
    pub rabbit_management: Option<u16>,
    /// Added to each service's base port (8080…8085) so stacks can run side by side.
    pub service_port_offset: u16,
}

/// A named set of infrastructure processes with its own directory and ports.
#[derive(Clone, Debug)]
pub struct Stack {
    pub(super) name: String,
    pub(super) repo_root: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) ports: StackPorts,
    /// The port Kafka tells its clients to connect to, if not its own
    /// (a proxy in front of it, see [`Stack::with_kafka_advertised_port`]).
    pub(super) kafka_advertised_port: Option<u16>,
    /// Where the services are told to reach the infrastructure, if not at
    /// its own ports (see [`Stack::behind_proxies`]).
    pub(super) service_routes: Option<ServiceRoutes>,
}

/// Ports the services reach PostgreSQL, RabbitMQ and Kafka on instead of
/// the stack's own: proxies in front of them (the chaos run's network
/// partitions). The runner's own connections still go straight there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceRoutes {
    pub postgres: u16,
    pub amqp: u16,
    pub kafka: u16,
}

/// `postgres://postgres@127.0.0.1:<port>/<database>`, the form of every stack.
pub fn postgres_url_at(port: u16, database: &str) -> String {
    format!("{}/{}", postgres_server_url_at(port), percent_encode(database))
}

/// `postgres://postgres@127.0.0.1:<port>`: the server, without a database.
fn postgres_server_url_at(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}")
}

/// `amqp://guest:guest@127.0.0.1:<port>/%2f`, the form of every stack.
pub fn amqp_url_at(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

fn kafka_brokers_at(port: u16) -> String {
    format!("127.0.0.1:{port}")
}
impl Stack {
    /// A stack called `name` under `<repo_root>/.run/<name>/`.
    pub fn new(name: &str, repo_root: impl AsRef<Path>, ports: StackPorts) -> Stack {
        let repo_root = std::path::absolute(repo_root.as_ref()).unwrap_or_else(|_| repo_root.as_ref().to_path_buf());
        let dir = repo_root.join(".run").join(name);
        Stack { name: name.to_owned(), repo_root, dir, ports, kafka_advertised_port: None, service_routes: None }
    }

    /// This stack with its services sent through `routes`, and a Kafka
    /// that advertises the route's port (so that, after bootstrapping,
    /// Kafka clients stay behind it too; see
    /// [`Stack::with_kafka_advertised_port`]). Takes effect at each
    /// service's and Kafka's next start.
    pub fn behind_proxies(self, routes: ServiceRoutes) -> Stack {
        Stack { service_routes: Some(routes), ..self.with_kafka_advertised_port(routes.kafka) }
    }

    /// This stack with a Kafka that advertises `port` (where a proxy in
    /// front of it listens) instead of its own: Kafka clients connect to
    /// the advertised address after bootstrapping, so only then does all
    /// their traffic cross the proxy. Takes effect at Kafka's next start.
    pub fn with_kafka_advertised_port(mut self, port: u16) -> Stack {
        self.kafka_advertised_port = Some(port);
        self
    }

    /// The developer stack used by `cargo xtask up`.
    pub fn dev(repo_root: impl AsRef<Path>) -> Stack {
        Stack::new(
            "dev",
            repo_root,
            StackPorts {
                postgres: 21432,
                amqp: 21672,
                rabbit_dist: 21673,
                kafka: 21092,
                rabbit_management: Some(21674),
                service_port_offset: 0,
            },
        )
    }

    /// The stack for the system tests.
    pub fn test(repo_root: impl AsRef<Path>) -> Stack {
        Stack::new(
            "test",
            repo_root,
            StackPorts {
                postgres: 22432,
                amqp: 22672,
                rabbit_dist: 22673,
                kafka: 22092,
                rabbit_management: None,
                service_port_offset: 1000,
            },
        )
    }

    /// The stack for chaos (kill -9) tests.
    pub fn chaos(repo_root: impl AsRef<Path>) -> Stack {
        Stack::new(
            "chaos",
            repo_root,
            StackPorts {
                postgres: 23432,
                amqp: 23672,
                rabbit_dist: 23673,
                kafka: 23092,
                rabbit_management: None,
                service_port_offset: 2000,
            },
        )
    }

    /// The stack `dev`, `test` or `chaos`; `None` for any other name.
    pub fn named(name: &str, repo_root: impl AsRef<Path>) -> Option<Stack> {
        match name {
            "dev" => Some(Stack::dev(repo_root)),
            "test" => Some(Stack::test(repo_root)),
            "chaos" => Some(Stack::chaos(repo_root)),
            _ => None,
        }
    }

    /// Whether this is one of the named stacks as [`Stack::named`] builds
    /// it (not a stack of a test's own): only those can be rebuilt from
    /// their name by another process, e.g. the Kafka supervisor.
    pub fn is_named(&self) -> bool {
        Stack::named(&self.name, &self.repo_root).is_some_and(|named| named.ports == self.ports)
    }

    /// A Kafka of its own for the network-fault tests, on port 22192, to
    /// put behind a proxy ([`Stack::with_kafka_advertised_port`]). Only its
    /// Kafka is meant to run: its other ports are the test stack's.
    pub fn test_kafka_behind_proxy(repo_root: impl AsRef<Path>) -> Stack {
        let ports = StackPorts { kafka: NETWORK_FAULTS_KAFKA_PORT, ..Stack::test(&repo_root).ports };
        Stack::new("test-kafka-behind-proxy", repo_root, ports)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn repo_root(&self) -> &Path {
        &self.repo_root
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ports(&self) -> StackPorts {
        self.ports
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn pids_dir(&self) -> PathBuf {
        self.dir.join("pids")
    }
    /// `logs/<name>.log` for an infra component or a service.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.logs_dir().join(format!("{name}.log"))
    }
    /// `pids/<name>.lock`, held while starting `name`.
    pub(crate) fn start_lock_path(&self, name: &str) -> PathBuf {
        self.pids_dir().join(format!("{name}.lock"))
    }
    /// `pids/<name>.pid` for an infra component or a service.
    pub fn pid_path(&self, name: &str) -> PathBuf {
        self.pids_dir().join(format!("{name}.pid"))
    }
    /// The value of [`OWNER_ENV`] given to the process `name` of this stack.
    pub(crate) fn owner_tag(&self, name: &str) -> String {
        format!("{}::{name}", self.dir.display())
    }
    /// `postgres://postgres@127.0.0.1:<port>`: the server, without a database.
    pub fn postgres_server_url(&self) -> String {
        postgres_server_url_at(self.ports.postgres)
    }
    /// `postgres://postgres@127.0.0.1:<port>/<database>`
    pub fn postgres_url(&self, database: &str) -> String {
        postgres_url_at(self.ports.postgres, database)
    }
    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub fn amqp_url(&self) -> String {
        amqp_url_at(self.ports.amqp)
    }
    /// `127.0.0.1:<port>` (the form librdkafka's `bootstrap.servers` takes).
    pub fn kafka_brokers(&self) -> String {
        kafka_brokers_at(self.ports.kafka)
    }

    /// [`Stack::postgres_url`] as the services are told it (see
    /// [`Stack::behind_proxies`]).
    pub fn service_postgres_url(&self, database: &str) -> String {
        postgres_url_at(self.service_routes.map_or(self.ports.postgres, |routes| routes.postgres), database)
    }
    /// [`Stack::amqp_url`] as the services are told it.
    pub fn service_amqp_url(&self) -> String {
        amqp_url_at(self.service_routes.map_or(self.ports.amqp, |routes| routes.amqp))
    }
    /// [`Stack::kafka_brokers`] as the services are told it.
    pub fn service_kafka_brokers(&self) -> String {
        kafka_brokers_at(self.service_routes.map_or(self.ports.kafka, |routes| routes.kafka))
    }
    pub(super) fn prepare_dirs(&self) -> Result<()> {
        for dir in [self.logs_dir(), self.pids_dir()] {
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// Appends a marker line so restarts are easy to find in a shared log.
    pub(crate) fn mark_log(&self, name: &str, what: &str) -> Result<()> {
        let path = self.log_path(name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        writeln!(log, "\n===== ordermesh runner: {what} {name} (unix time {since_epoch}) =====")
            .with_context(|| format!("writing {}", path.display()))
    }

    pub(crate) fn owned_pid(&self, name: &str) -> Option<u32> {
        let pid = process::read_pid_file(&self.pid_path(name)).ok().flatten()?;
        (process::is_alive(pid) && process::process_has_env(pid, OWNER_ENV, &self.owner_tag(name))).then_some(pid)
    }

    /// SIGKILLs the process group recorded for `name` and waits for it to
    /// die; `Ok(false)` if no such process was running (nothing signalled).
    pub(super) async fn kill_owned(&self, name: &str) -> Result<bool> {
        let pid = self.owned_pid(name);
        if let Some(pid) = pid {
            let mut group = process::group_members(pid);
            group.push(pid);
            process::signal_group(pid, Signal::SIGKILL)?;
            // The whole group, not only its leader: a member still dying
            // may hold the port the restart needs.
            if !process::wait_for_exit(&group, KILL_TIMEOUT).await {
                bail!("{name} (process group {pid}) still alive {KILL_TIMEOUT:?} after SIGKILL");
            }
        }
        process::remove_pid_file(&self.pid_path(name))?;
        Ok(pid.is_some())
    }

    /// SIGTERMs the process group recorded for `name` and waits; escalates to
    /// SIGKILL (reported as an error) if it does not exit in time.
    pub(crate) async fn terminate_owned(&self, name: &str, timeout: Duration) -> Result<()> {
        if let Some(pid) = self.owned_pid(name) {
            process::signal_group(pid, Signal::SIGTERM)?;
            if !process::wait_for_exit(&[pid], timeout).await {
                process::signal_group(pid, Signal::SIGKILL)?;
                let log = process::log_tail(&self.log_path(name), LOG_TAIL_LINES);
                bail!("{name} (pid {pid}) ignored SIGTERM for {timeout:?}; sent SIGKILL\n{log}");
            }
        }
        process::remove_pid_file(&self.pid_path(name))
    }

    pub(super) fn not_ready_error(&self, name: &str, pid: Option<u32>, problem: &str) -> anyhow::Error {
        let log = process::log_tail(&self.log_path(name), LOG_TAIL_LINES);
        match pid {
            Some(pid) => anyhow!("{name} of stack {} (pid {pid}) {problem}\n{log}", self.name),
            None => anyhow!("{name} of stack {} {problem}\n{log}", self.name),
        }
    }
}
/// One URL path segment (a database name in a PostgreSQL URL), percent-encoded.
pub fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(byte).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_percent_encoded_in_urls() {
        assert_eq!(percent_encode("order"), "order");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn stacks_have_distinct_ports_and_dirs() {
        let root = Path::new("/repo");
        let stacks = [Stack::dev(root), Stack::test(root), Stack::chaos(root)];
        assert_eq!(stacks[0].dir(), Path::new("/repo/.run/dev"));
        assert_eq!(stacks[1].ports().postgres, 22432);
        assert_eq!(stacks[2].ports().kafka, 23092);
        assert_eq!(stacks[0].amqp_url(), "amqp://guest:guest@127.0.0.1:21672/%2f");
        assert_eq!(stacks[1].postgres_url("order"), "postgres://postgres@127.0.0.1:22432/order");
        assert_eq!(stacks[2].kafka_brokers(), "127.0.0.1:23092");
        let mut all: Vec<u16> = Vec::new();
        for stack in &stacks {
            let p = stack.ports();
            all.extend([p.postgres, p.amqp, p.rabbit_dist, p.kafka]);
            all.extend(p.rabbit_management);
            all.extend((8080..=8085).map(|base| base + p.service_port_offset));
        }
        all.push(Stack::test_kafka_behind_proxy(".").ports().kafka);
        assert!(all.iter().all(|port| *port < 32768), "a port in Linux's ephemeral range: {all:?}");
        let distinct: std::collections::BTreeSet<u16> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "two stacks share a port: {all:?}");
    }

    #[test]
    fn only_the_named_stacks_are_named() {
        assert!(Stack::chaos("/repo").is_named());
        assert_eq!(Stack::named("test", "/repo").map(|s| s.ports().kafka), Some(22092));
        assert!(Stack::named("prod", "/repo").is_none());
        assert!(!Stack::test_kafka_behind_proxy("/repo").is_named());
    }
}

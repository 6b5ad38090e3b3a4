//! The six service binaries: where they are, how they are configured, and
//! spawning / stopping / killing them as detached processes of a [`Stack`].

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

use crate::{
    infra::{Stack, StartOutcome},
    process::{self, OWNER_ENV, POLL_INTERVAL},
};

pub const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(60);
pub const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 40;

/// Static description of one service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Binary name, database name, log/pid file name, `OTEL_SERVICE_NAME`.
    pub name: &'static str,
    /// Cargo package that builds it.
    pub package: &'static str,
    /// HTTP port on the dev stack (other stacks add their `service_port_offset`).
    pub base_port: u16,
    /// Services it calls over HTTP, exported as `<NAME>_URL`.
    pub http_dependencies: &'static [&'static str],
}

impl fmt::Display for ServiceSpec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name)
    }
}

pub const SERVICES: [ServiceSpec; 6] = [
    // Stock for the catalogue; all five for the synchronous twin.
    ServiceSpec {
        name: "order",
        package: "order-service",
        base_port: 8080,
        http_dependencies: &["stock", "payment", "shipping", "email", "loyalty"],
    },
    ServiceSpec { name: "stock", package: "stock-service", base_port: 8081, http_dependencies: &[] },
    ServiceSpec { name: "payment", package: "payment-service", base_port: 8082, http_dependencies: &[] },
    ServiceSpec { name: "shipping", package: "shipping-service", base_port: 8083, http_dependencies: &[] },
    ServiceSpec { name: "email", package: "email-service", base_port: 8084, http_dependencies: &[] },
    ServiceSpec { name: "loyalty", package: "loyalty-service", base_port: 8085, http_dependencies: &[] },
];

/// The console (console/): run by the runner like a service, on its own
/// database, told where the six services are and how to reach the runner.
pub const CONSOLE: ServiceSpec = ServiceSpec {
    name: "console",
    package: "console",
    base_port: 8090,
    http_dependencies: &["order", "stock", "payment", "shipping", "email", "loyalty"],
};

/// The OpenTelemetry variables that, set by the user, choose where spans
/// go instead of the console.
const USER_OTLP_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// Kafka topics of the un-namespaced topology (events and dead letters),
/// with their partition counts. The services create them too; creating them
/// up front lets `up` show them.
pub fn topics() -> Vec<(String, i32)> {
    contracts::Topology::default()
        .all_topics()
        .into_iter()
        .map(|t| (t, contracts::topology::EVENT_TOPIC_PARTITIONS))
        .collect()
}

/// Looks a service up by name.
pub fn service_spec(name: &str) -> Option<&'static ServiceSpec> {
    SERVICES.iter().chain([&CONSOLE]).find(|spec| spec.name == name)
}

/// `CARGO_TARGET_DIR` (relative to the current directory, as cargo does) or `<repo>/target`.
pub fn target_dir(repo_root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::absolute(&dir).unwrap_or_else(|_| PathBuf::from(dir)),
        None => repo_root.join("target"),
    }
}

/// The build of the services the runner builds and starts:
/// `ORDERMESH_SERVICE_PROFILE=release` for benchmarks, `debug` otherwise
/// (quicker to build, which is what tests and development want).
pub fn service_profile() -> &'static str {
    match std::env::var("ORDERMESH_SERVICE_PROFILE").as_deref() {
        Ok("release") => "release",
        _ => "debug",
    }
}

/// Where the service binaries of [`service_profile`] are built.
pub fn binary_dir(repo_root: &Path) -> PathBuf {
    target_dir(repo_root).join(service_profile())
}

/// `<binaries>/<name>`; falls back to `<binaries>/<package>` for crates that
/// have not declared a `[[bin]] name` yet.
pub fn binary_path(repo_root: &Path, spec: &ServiceSpec) -> Option<PathBuf> {
    let dir = binary_dir(repo_root);
    [spec.name, spec.package].into_iter().map(|file| dir.join(file)).find(|path| path.is_file())
}

/// `cargo build --bins -p order-service -p stock-service …` in the repo root.
pub async fn build_services(repo_root: &Path) -> Result<()> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(["build", "--bins"]).current_dir(repo_root);
    if service_profile() == "release" {
        command.arg("--release");
    }
    for spec in SERVICES.iter().chain([&CONSOLE]) {
        command.args(["-p", spec.package]);
    }
    let status = command.status().await.context("running cargo build for the services")?;
    if !status.success() {
        bail!(
            "`cargo build --bins -p order-service -p stock-service -p payment-service -p shipping-service -p email-service -p loyalty-service -p console` failed with {status}"
        );
    }
    Ok(())
}

/// A fresh system on `stack`: infrastructure up, the six services killed,
/// Kafka emptied, their databases made again, then each started with
/// `env_of(service)` and ready within `ready_timeout`.
pub async fn start_fresh_system(
    stack: &Stack,
    env_of: impl Fn(&str) -> Vec<(String, String)>,
    ready_timeout: Duration,
) -> Result<()> {
    stack.start_infra().await?;
    for spec in &SERVICES {
        stack.service(spec).kill().await?;
    }
    stack.kafka().restart_empty().await?;
    for spec in &SERVICES {
        stack.drop_database(spec.name).await?;
        stack.create_database(spec.name).await?;
    }
    for spec in &SERVICES {
        let env = env_of(spec.name);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        stack.service(spec).spawn(&env)?;
    }
    for spec in &SERVICES {
        stack.service(spec).wait_ready(ready_timeout).await?;
    }
    Ok(())
}

impl Stack {
    /// A handle on one service of this stack.
    pub fn service(&self, spec: &'static ServiceSpec) -> Service<'_> {
        Service { stack: self, spec }
    }

    /// A handle on the service called `name`.
    pub fn service_named(&self, name: &str) -> Result<Service<'_>> {
        let spec = service_spec(name).ok_or_else(|| {
            let known: Vec<&str> = SERVICES.iter().map(|spec| spec.name).collect();
            anyhow!("unknown service {name:?} (known: {})", known.join(", "))
        })?;
        Ok(self.service(spec))
    }
}

/// One service process of a stack.
#[derive(Clone, Copy, Debug)]
pub struct Service<'a> {
    stack: &'a Stack,
    spec: &'static ServiceSpec,
}

impl Service<'_> {
    pub fn spec(self) -> &'static ServiceSpec {
        self.spec
    }

    pub fn port(self) -> u16 {
        self.spec.base_port + self.stack.ports().service_port_offset
    }

    pub fn addr(self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn log_path(self) -> PathBuf {
        self.stack.log_path(self.spec.name)
    }

    pub fn binary(self) -> Option<PathBuf> {
        binary_path(self.stack.repo_root(), self.spec)
    }

    /// The environment a service gets (before the caller's extra variables).
    pub fn env(self) -> Vec<(String, String)> {
        let name = self.spec.name;
        let mut env = vec![
            ("HTTP_ADDR".to_owned(), self.addr().to_string()),
            ("DATABASE_URL".to_owned(), self.stack.service_postgres_url(name)),
            ("AMQP_URL".to_owned(), self.stack.service_amqp_url()),
            ("KAFKA_BROKERS".to_owned(), self.stack.service_kafka_brokers()),
            ("MESSAGING_NAMESPACE".to_owned(), String::new()),
            // The caller's choice, if any (`LOG_FORMAT=pretty cargo xtask up`).
            ("LOG_FORMAT".to_owned(), std::env::var("LOG_FORMAT").unwrap_or_else(|_| "json".to_owned())),
            ("RUST_LOG".to_owned(), std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned())),
            ("OTEL_SERVICE_NAME".to_owned(), name.to_owned()),
            // Tansu 0.6 never evicts a killed consumer-group member; one
            // replica per service takes every partition instead.
            ("KAFKA_ASSIGNMENT".to_owned(), "all-partitions".to_owned()),
        ];
        for dependency in self.spec.http_dependencies {
            if let Ok(other) = self.stack.service_named(dependency) {
                env.push((format!("{}_URL", dependency.to_uppercase()), other.url()));
            }
        }
        if self.spec == &CONSOLE {
            env.extend(self.console_env());
        } else {
            env.extend(self.tracing_env());
        }
        env
    }

    /// The console controls processes through this runner, on this stack.
    fn console_env(self) -> Vec<(String, String)> {
        let mut env = vec![("CONSOLE_STACK".to_owned(), self.stack.name().to_owned())];
        if let Ok(runner) = std::env::current_exe() {
            env.push(("CONSOLE_RUNNER".to_owned(), runner.display().to_string()));
        }
        env
    }

    /// Spans go to the stack's console when it runs, unless the user chose
    /// where they go; sent in small batches every half second (the SDK's
    /// default waits 5 s), so a journey fills in while the order travels.
    fn tracing_env(self) -> Vec<(String, String)> {
        let console = self.stack.service(&CONSOLE);
        if USER_OTLP_VARIABLES.iter().any(|v| std::env::var_os(v).is_some()) || !console.is_running() {
            return Vec::new();
        }
        let defaults = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", console.url()),
            ("OTEL_BSP_SCHEDULE_DELAY", "500".to_owned()),
            // A console that hangs holds the exporter's thread this long at
            // most; the service's spans queue (bounded) meanwhile.
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_owned()),
        ];
        defaults
            .into_iter()
            .filter(|(name, _)| std::env::var_os(name).is_none())
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    pub fn pid(self) -> Option<u32> {
        let pid = process::read_pid_file(&self.stack.pid_path(self.spec.name)).ok().flatten()?;
        (process::is_alive(pid) && process::process_has_env(pid, OWNER_ENV, &self.owner_tag())).then_some(pid)
    }

    pub fn is_running(self) -> bool {
        self.pid().is_some()
    }

    fn owner_tag(self) -> String {
        self.stack.owner_tag(self.spec.name)
    }

    /// Spawns the service detached (no readiness wait) unless it is already
    /// running. `extra_env` overrides the defaults of [`Service::env`].
    pub fn spawn(self, extra_env: &[(&str, &str)]) -> Result<StartOutcome> {
        // Short critical section (check + spawn), so blocking is fine.
        let _lock = process::lock_file(&self.stack.start_lock_path(self.spec.name))?;
        if let Some(pid) = self.pid() {
            return Ok(StartOutcome::AlreadyRunning { pid });
        }
        let binary = self.binary().with_context(|| {
            format!(
                "no {} binary in {} (build it with `cargo build -p {}`)",
                self.spec.name,
                binary_dir(self.stack.repo_root()).display(),
                self.spec.package
            )
        })?;
        let mut command = std::process::Command::new(&binary);
        command
            .current_dir(self.stack.repo_root())
            .envs(self.env())
            .envs(extra_env.iter().copied())
            .env(OWNER_ENV, self.owner_tag());
        self.stack.mark_log(self.spec.name, "starting")?;
        let pid = process::spawn_detached(command, &self.log_path(), &self.stack.pid_path(self.spec.name))?;
        Ok(StartOutcome::Spawned { pid })
    }

    /// Spawns (if needed) and waits for `/health/ready`.
    pub async fn start(self, extra_env: &[(&str, &str)]) -> Result<StartOutcome> {
        let outcome = self.spawn(extra_env)?;
        self.wait_ready(SERVICE_READY_TIMEOUT).await?;
        Ok(outcome)
    }

    /// Waits until `GET /health/ready` answers 200; fails early if the process exits.
    pub async fn wait_ready(self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(pid) = self.pid() else {
                bail!(
                    "{} is not running (exited during startup?)\n{}",
                    self.spec.name,
                    process::log_tail(&self.log_path(), LOG_TAIL_LINES)
                );
            };
            let problem = match http_status(self.addr(), "/health/ready").await {
                Ok(200) => return Ok(()),
                Ok(status) => format!("HTTP {status}"),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                let problem = match not_ready_components(&self.url()).await {
                    Some(components) => format!("{problem}; not ready: {components}"),
                    None => problem,
                };
                bail!(
                    "{} (pid {pid}) not ready after {timeout:?}: GET {}/health/ready: {problem}\n{}",
                    self.spec.name,
                    self.url(),
                    process::log_tail(&self.log_path(), LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends `signal` to the service's process group (no waiting).
    pub fn signal(self, signal: Signal) -> Result<()> {
        match self.pid() {
            Some(pid) => process::signal_group(pid, signal),
            None => Ok(()),
        }
    }

    /// Graceful stop: SIGTERM and wait up to `timeout`. If the service does
    /// not exit in time it is SIGKILLed and an error is returned.
    pub async fn stop(self, timeout: Duration) -> Result<()> {
        let pid_path = self.stack.pid_path(self.spec.name);
        let Some(pid) = self.pid() else {
            return process::remove_pid_file(&pid_path);
        };
        process::signal_group(pid, Signal::SIGTERM)?;
        if !process::wait_for_exit(&[pid], timeout).await {
            process::signal_group(pid, Signal::SIGKILL)?;
            bail!(
                "{} (pid {pid}) did not exit within {timeout:?} of SIGTERM; sent SIGKILL\n{}",
                self.spec.name,
                process::log_tail(&self.log_path(), LOG_TAIL_LINES)
            );
        }
        process::remove_pid_file(&pid_path)
    }

    /// Simulates a crash: SIGKILL and wait until the process is gone.
    pub async fn kill(self) -> Result<()> {
        let pid_path = self.stack.pid_path(self.spec.name);
        if let Some(pid) = self.pid() {
            process::signal_group(pid, Signal::SIGKILL)?;
            if !process::wait_for_exit(&[pid], Duration::from_secs(10)).await {
                bail!("{} (pid {pid}) still alive after SIGKILL", self.spec.name);
            }
        }
        process::remove_pid_file(&pid_path)
    }

    /// Graceful stop (if running), spawn, wait until ready. Returns the new pid.
    pub async fn restart(self, extra_env: &[(&str, &str)]) -> Result<u32> {
        self.stop(SERVICE_STOP_TIMEOUT).await?;
        Ok(self.start(extra_env).await?.pid())
    }
}

/// Minimal HTTP/1.1 GET returning the status code; avoids an HTTP client dependency.
/// The components a service's `/health/ready` reports not ready, with
/// their detail (`None` if it does not answer with its JSON).
async fn not_ready_components(base_url: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().ok()?;
    let body: serde_json::Value =
        client.get(format!("{base_url}/health/ready")).send().await.ok()?.json().await.ok()?;
    let components = body.get("components")?.as_object()?;
    let down: Vec<String> = components
        .iter()
        .filter(|(_, status)| status.get("ready").and_then(serde_json::Value::as_bool) != Some(true))
        .map(|(name, status)| match status.get("detail").and_then(serde_json::Value::as_str) {
            Some(detail) => format!("{name} ({detail})"),
            None => name.clone(),
        })
        .collect();
    Some(down.join(", "))
}

pub async fn http_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let request = async {
        let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.context("sending request")?;
        let mut response = Vec::new();
        let mut buffer = [0_u8; 512];
        // The status line is all we need.
        while !response.contains(&b'\n') {
            let read = stream.read(&mut buffer).await.context("reading response")?;
            if read == 0 {
                break;
            }
            response.extend_from_slice(&buffer[..read]);
        }
        let text = String::from_utf8_lossy(&response);
        let status_line = text.lines().next().unwrap_or_default();
        status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .with_context(|| format!("malformed HTTP status line {status_line:?}"))
    };
    tokio::time::timeout(Duration::from_secs(3), request)
        .await
        .map_err(|_| anyhow!("GET http://{addr}{path} timed out"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_knows_where_stock_is() {
        let stack = Stack::test("/repo");
        let order = stack.service_named("order").unwrap();
        let env = order.env();
        let lookup = |key: &str| env.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone());
        assert_eq!(lookup("HTTP_ADDR").unwrap(), "127.0.0.1:9080");
        assert_eq!(lookup("STOCK_URL").unwrap(), "http://127.0.0.1:9081");
        assert_eq!(lookup("DATABASE_URL").unwrap(), "postgres://postgres@127.0.0.1:22432/order");
        assert_eq!(lookup("OTEL_SERVICE_NAME").unwrap(), "order");
    }

    #[test]
    fn services_behind_proxies_are_told_the_proxies_and_the_runner_is_not() {
        let routes = crate::infra::ServiceRoutes { postgres: 1001, amqp: 1002, kafka: 1003 };
        let stack = Stack::chaos("/repo").behind_proxies(routes);
        let env = stack.service_named("stock").unwrap().env();
        let lookup = |key: &str| env.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone());
        assert_eq!(lookup("DATABASE_URL").unwrap(), "postgres://postgres@127.0.0.1:1001/stock");
        assert_eq!(lookup("AMQP_URL").unwrap(), "amqp://guest:guest@127.0.0.1:1002/%2f");
        assert_eq!(lookup("KAFKA_BROKERS").unwrap(), "127.0.0.1:1003");
        assert_eq!(stack.postgres_url("stock"), "postgres://postgres@127.0.0.1:23432/stock");
        assert_eq!(stack.amqp_url(), "amqp://guest:guest@127.0.0.1:23672/%2f");
        assert_eq!(stack.kafka_brokers(), "127.0.0.1:23092");
    }

    #[test]
    fn the_console_knows_every_service_and_its_stack_and_services_export_only_to_a_running_console() {
        let stack = Stack::test("/nonexistent-repo");
        let env = stack.service(&CONSOLE).env();
        let lookup = |key: &str| env.iter().find(|(name, _)| name == key).map(|(_, value)| value.clone());
        assert_eq!(lookup("HTTP_ADDR").unwrap(), "127.0.0.1:9090");
        assert_eq!(lookup("DATABASE_URL").unwrap(), "postgres://postgres@127.0.0.1:22432/console");
        assert_eq!(lookup("LOYALTY_URL").unwrap(), "http://127.0.0.1:9085");
        assert_eq!(lookup("CONSOLE_STACK").unwrap(), "test");
        assert!(lookup("OTEL_EXPORTER_OTLP_ENDPOINT").is_none(), "the console does not trace into itself");
        // No console runs on this stack: the services are not pointed at one.
        let order = stack.service_named("order").unwrap().env();
        assert!(!order.iter().any(|(name, _)| name == "OTEL_EXPORTER_OTLP_ENDPOINT"));
    }

    #[test]
    fn dev_services_use_base_ports() {
        let stack = Stack::dev("/repo");
        let ports: Vec<u16> = SERVICES.iter().map(|spec| stack.service(spec).port()).collect();
        assert_eq!(ports, [8080, 8081, 8082, 8083, 8084, 8085]);
    }
}

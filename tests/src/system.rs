//! A whole system of service processes for one test: its own databases
//! (`<namespace>_<service>`), its own queues and topics (`<namespace>.` prefix),
//! its own ports. Services can be killed (SIGKILL), terminated (SIGTERM) and
//! restarted with the same configuration.

use crate::{log_dir, test_stack, unique_namespace};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use uuid::Uuid;
use xtask::Stack;

pub const ALL_SERVICES: [&str; 6] = ["order", "stock", "payment", "shipping", "email", "loyalty"];

struct ServiceProcess {
    port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    starts: u32,
}

/// Other ports for the services to reach PostgreSQL and RabbitMQ on, such
/// as a [`chaos_proxy::ChaosProxy`] in front of the stack's, and
/// another Kafka (one that advertises a proxy in front of it).
#[derive(Debug, Clone, Default)]
pub struct Routes {
    pub postgres_port: Option<u16>,
    pub amqp_port: Option<u16>,
    pub kafka_brokers: Option<String>,
}

impl Routes {
    fn postgres_url(&self, stack: &Stack, database: &str) -> String {
        xtask::infra::postgres_url_at(self.postgres_port.unwrap_or(stack.ports().postgres), database)
    }

    fn amqp_url(&self, stack: &Stack) -> String {
        xtask::infra::amqp_url_at(self.amqp_port.unwrap_or(stack.ports().amqp))
    }
}

pub struct TestSystem {
    pub namespace: String,
    stack: &'static Stack,
    kafka_brokers: String,
    services: BTreeMap<&'static str, ServiceProcess>,
    pools: HashMap<&'static str, sqlx::PgPool>,
    pub http: reqwest::Client,
}

/// Builds the service binaries once per test process (skipped when the test
/// command already did, `ORDERMESH_SKIP_BUILD=1`).
async fn ensure_binaries() {
    static BUILT: OnceLock<()> = OnceLock::new();
    if BUILT.get().is_some() || std::env::var("ORDERMESH_SKIP_BUILD").is_ok_and(|v| v == "1") {
        return;
    }
    xtask::services::build_services(&xtask::repo_root()).await.expect("building the service binaries");
    let _ = BUILT.set(());
}

/// Where the services' ports are drawn from: above the runner's stacks
/// (21xxx–23xxx), below the kernel's ephemeral range.
const SERVICE_PORTS_FROM: u16 = 24_000;

/// A port for a service to listen on, free now and outside the kernel's
/// ephemeral range: a port read off an ephemeral bind and released can be
/// handed to an outgoing connection before the service binds it (seen in
/// CI: stock exited with "Address already in use").
fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let below = ephemeral_ports_start().max(SERVICE_PORTS_FROM + 1_000);
    let span = below - SERVICE_PORTS_FROM;
    // Test binaries run one after another: each starts elsewhere in the span.
    let offset = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    for _ in 0..span {
        let port = SERVICE_PORTS_FROM + (offset + NEXT.fetch_add(1, Ordering::Relaxed) % span) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {SERVICE_PORTS_FROM}..{below}");
}

/// The first port of the kernel's ephemeral range (32768 when unreadable).
fn ephemeral_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A `POST /orders` body.
pub fn order_request(customer: &str, lines: &[(&str, i64)], payment_method: &str) -> Value {
    json!({
        "customer_id": customer,
        "payment_method": payment_method,
        "lines": lines.iter().map(|(sku, q)| json!({"sku": sku, "quantity": q})).collect::<Vec<_>>(),
    })
}

impl TestSystem {
    /// Starts `services` for the test `test_name`, with `env` added to every one.
    pub async fn start(test_name: &str, services: &[&'static str], env: &[(&str, &str)]) -> Result<Self> {
        Self::start_on(test_stack().await, test_name, services, env).await
    }

    /// Like [`Self::start`], on another infrastructure stack (e.g. the
    /// `chaos` stack, for tests that kill PostgreSQL, RabbitMQ or Kafka).
    pub async fn start_on(
        stack: &'static Stack,
        test_name: &str,
        services: &[&'static str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_on_with(stack, test_name, services, env, &[]).await
    }

    /// Like [`Self::start_on`], with extra environment for some services
    /// only (`(service, variable, value)`, e.g. to arm a crash point in one).
    pub async fn start_on_with(
        stack: &'static Stack,
        test_name: &str,
        services: &[&'static str],
        env: &[(&str, &str)],
        service_env: &[(&str, &str, &str)],
    ) -> Result<Self> {
        Self::start_full(stack, test_name, services, env, service_env, Routes::default()).await
    }

    /// Like [`Self::start`], the services reaching PostgreSQL, RabbitMQ and
    /// Kafka by `routes` (the test's own database and queue checks still go
    /// straight to the stack); `env` comes last and overrides.
    pub async fn start_routed(
        test_name: &str,
        services: &[&'static str],
        routes: Routes,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_full(test_stack().await, test_name, services, env, &[], routes).await
    }

    async fn start_full(
        stack: &'static Stack,
        test_name: &str,
        services: &[&'static str],
        env: &[(&str, &str)],
        service_env: &[(&str, &str, &str)],
        routes: Routes,
    ) -> Result<Self> {
        ensure_binaries().await;
        let namespace = unique_namespace(test_name);
        let ports: HashMap<&str, u16> = services.iter().map(|s| (*s, free_port())).collect();
        let mut system = TestSystem {
            namespace: namespace.clone(),
            stack,
            kafka_brokers: routes.kafka_brokers.clone().unwrap_or_else(|| stack.kafka_brokers()),
            services: BTreeMap::new(),
            pools: HashMap::new(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        };
        std::fs::create_dir_all(log_dir(&namespace))?;
        for service in services {
            let database = format!("{namespace}_{service}");
            stack.create_database(&database).await?;
            let mut vars: Vec<(String, String)> = vec![
                ("HTTP_ADDR".into(), format!("127.0.0.1:{}", ports[service])),
                ("DATABASE_URL".into(), routes.postgres_url(stack, &database)),
                ("AMQP_URL".into(), routes.amqp_url(stack)),
                ("KAFKA_BROKERS".into(), system.kafka_brokers.clone()),
                ("MESSAGING_NAMESPACE".into(), format!("{namespace}.")),
                ("LOG_FORMAT".into(), "json".into()),
                ("RUST_LOG".into(), "info".into()),
                ("SHUTDOWN_DEADLINE_SECS".into(), "10".into()),
                // See xtask's service environment: Tansu and consumer groups.
                ("KAFKA_ASSIGNMENT".into(), "all-partitions".into()),
            ];
            // Where the others are: stock's catalogue, and the synchronous
            // twin's five peers.
            for peer in ["stock", "payment", "shipping", "email", "loyalty"] {
                if let Some(port) = ports.get(peer) {
                    vars.push((format!("{}_URL", peer.to_ascii_uppercase()), format!("http://127.0.0.1:{port}")));
                }
            }
            // `cargo xtask test` runs the flow and fault tests a second time
            // with the log-tailing relay (OUTBOX_RELAY=log-tailing).
            if let Ok(relay) = std::env::var("OUTBOX_RELAY") {
                vars.push(("OUTBOX_RELAY".into(), relay));
            }
            vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            for (_, k, v) in service_env.iter().filter(|(s, _, _)| s == service) {
                vars.retain(|(key, _)| key != k);
                vars.push(((*k).to_owned(), (*v).to_owned()));
            }
            let pool =
                sqlx::postgres::PgPoolOptions::new().max_connections(4).connect_lazy(&stack.postgres_url(&database))?;
            system.pools.insert(service, pool);
            system.services.insert(service, ServiceProcess { port: ports[service], env: vars, child: None, starts: 0 });
        }
        for service in services {
            system.spawn(service)?;
        }
        for service in services {
            system.wait_ready(service, Duration::from_secs(60)).await?;
        }
        Ok(system)
    }

    fn spawn(&mut self, service: &str) -> Result<()> {
        let root = xtask::repo_root();
        let binary = xtask::services::binary_dir(&root).join(service);
        let log_path = log_dir(&self.namespace).join(format!("{service}.log"));
        let process = self.services.get_mut(service).ok_or_else(|| anyhow!("{service} is not in this system"))?;
        process.starts += 1;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        let child = Command::new(&binary)
            // Only what the test asks for: not the test process's own settings.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("FAILPOINTS")
            .envs(process.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} (build it with cargo build --bins)", binary.display()))?;
        process.child = Some(child);
        Ok(())
    }

    pub fn url(&self, service: &str) -> String {
        format!("http://127.0.0.1:{}", self.services[service].port)
    }

    pub fn log_path(&self, service: &str) -> std::path::PathBuf {
        log_dir(&self.namespace).join(format!("{service}.log"))
    }

    pub fn database_url(&self, service: &str) -> String {
        self.stack.postgres_url(&format!("{}_{service}", self.namespace))
    }

    /// The Kafka this system's services use.
    pub fn kafka_brokers(&self) -> &str {
        &self.kafka_brokers
    }

    pub fn stack(&self) -> &'static Stack {
        self.stack
    }

    pub fn topology(&self) -> contracts::Topology {
        contracts::Topology::new(format!("{}.", self.namespace))
    }

    pub fn db(&self, service: &str) -> &sqlx::PgPool {
        &self.pools[service]
    }

    pub fn pid(&self, service: &str) -> Option<u32> {
        self.services.get(service)?.child.as_ref()?.id()
    }

    pub async fn wait_ready(&mut self, service: &str, timeout: Duration) -> Result<()> {
        let url = format!("{}/health/ready", self.url(service));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.services.get_mut(service).and_then(|p| p.child.as_mut()) {
                if let Some(status) = child.try_wait()? {
                    bail!("{service} exited during start-up ({status}); log: {}", self.log_path(service).display());
                }
            }
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{service} not ready after {timeout:?}; log: {}", self.log_path(service).display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the process dies at once, mid-whatever.
    pub async fn kill(&mut self, service: &str) -> Result<()> {
        if let Some(mut child) = self.services.get_mut(service).and_then(|p| p.child.take()) {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a graceful exit; returns the exit status.
    pub async fn terminate(&mut self, service: &str, timeout: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self
            .services
            .get_mut(service)
            .and_then(|p| p.child.take())
            .ok_or_else(|| anyhow!("{service} is not running"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{service} has no pid"))?;
        xtask::process::signal_process(pid, xtask::Signal::SIGTERM)?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                child.kill().await?;
                bail!("{service} did not exit within {timeout:?} of SIGTERM")
            }
        }
    }

    /// Starts a stopped service again with the same configuration and waits
    /// until it is ready.
    pub async fn restart(&mut self, service: &str) -> Result<()> {
        self.kill(service).await?;
        self.spawn(service)?;
        self.wait_ready(service, Duration::from_secs(60)).await
    }

    /// Like [`Self::restart`] with extra environment for this start only
    /// (e.g. to arm or disarm a crash point).
    pub async fn restart_with(&mut self, service: &str, env: &[(&str, &str)]) -> Result<()> {
        let process = self.services.get_mut(service).ok_or_else(|| anyhow!("no {service}"))?;
        for (k, v) in env {
            process.env.retain(|(key, _)| key != k);
            process.env.push(((*k).to_owned(), (*v).to_owned()));
        }
        self.restart(service).await
    }

    /// Spawns without waiting for readiness (for a process expected to crash).
    pub fn spawn_with(&mut self, service: &str, env: &[(&str, &str)]) -> Result<()> {
        let process = self.services.get_mut(service).ok_or_else(|| anyhow!("no {service}"))?;
        for (k, v) in env {
            process.env.retain(|(key, _)| key != k);
            process.env.push(((*k).to_owned(), (*v).to_owned()));
        }
        self.spawn(service)
    }

    /// Removes `variable` from the service's environment for its next starts
    /// (e.g. to disarm a crash point before a restart).
    pub fn unset_env(&mut self, service: &str, variable: &str) -> Result<()> {
        let process = self.services.get_mut(service).ok_or_else(|| anyhow!("no {service}"))?;
        process.env.retain(|(key, _)| key != variable);
        Ok(())
    }

    /// The exit status if the service's process has exited, `None` while it
    /// runs; an error if it was never started or was stopped by the test.
    pub fn try_exit_status(&mut self, service: &str) -> Result<Option<std::process::ExitStatus>> {
        let process = self.services.get_mut(service).ok_or_else(|| anyhow!("no {service}"))?;
        let child = process.child.as_mut().ok_or_else(|| anyhow!("{service} is not running"))?;
        Ok(child.try_wait()?)
    }

    /// How many times the service's process was started.
    pub fn starts(&self, service: &str) -> u32 {
        self.services.get(service).map_or(0, |p| p.starts)
    }

    /// The service's log (every start of it, appended), lossily decoded.
    pub fn log_text(&self, service: &str) -> String {
        std::fs::read(self.log_path(service)).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Waits for the process to exit on its own (e.g. at a crash point).
    pub async fn wait_exit(&mut self, service: &str, timeout: Duration) -> Result<std::process::ExitStatus> {
        let process = self.services.get_mut(service).ok_or_else(|| anyhow!("no {service}"))?;
        let child = process.child.as_mut().ok_or_else(|| anyhow!("{service} is not running"))?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .map_err(|_| anyhow!("{service} still running after {timeout:?}"))??;
        process.child = None;
        Ok(status)
    }

    /// `POST /orders`; returns the status and the JSON body.
    pub async fn place_order(&self, body: &Value, idempotency_key: Option<&str>) -> Result<(u16, Value)> {
        let mut request = self.http.post(format!("{}/orders", self.url("order"))).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let (status, text) = self.as_documented("order", "POST", "/orders", request.send().await?).await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `GET <service><path>` as JSON.
    pub async fn get_json(&self, service: &str, path: &str) -> Result<(u16, Value)> {
        let (status, text) = self.get_text(service, path).await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// `GET <service><path>` as text (e.g. `/metrics`).
    pub async fn get_text(&self, service: &str, path: &str) -> Result<(u16, String)> {
        let response = self.http.get(format!("{}{path}", self.url(service))).send().await?;
        self.as_documented(service, "GET", path, response).await
    }

    /// Sends `request` (built from [`Self::http`]) to `service` and returns
    /// the status and body, held to the service's OpenAPI document as
    /// [`Self::get_json`]'s are.
    pub async fn send_documented(&self, service: &str, request: reqwest::RequestBuilder) -> Result<(u16, String)> {
        let request = request.build()?;
        let method = request.method().as_str().to_owned();
        let path = request.url().path().to_owned();
        let response = self.http.execute(request).await?;
        self.as_documented(service, &method, &path, response).await
    }

    /// The status and body of `response`, once they are held to the
    /// service's OpenAPI document (crate::http_contract): an answer the
    /// document does not describe fails the test that received it.
    async fn as_documented(
        &self,
        service: &str,
        method: &str,
        path: &str,
        response: reqwest::Response,
    ) -> Result<(u16, String)> {
        let status = response.status().as_u16();
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        let answer =
            crate::http_contract::Answer { method, path, status, content_type: content_type.as_deref(), body: &body };
        crate::http_contract::check(service, &answer).map_err(|contradiction| anyhow!(contradiction))?;
        Ok((status, body))
    }

    pub async fn order_status(&self, id: Uuid) -> Result<String> {
        let (status, body) = self.get_json("order", &format!("/orders/{id}")).await?;
        if status != 200 {
            bail!("GET /orders/{id}: {status} {body}");
        }
        Ok(body["status"].as_str().unwrap_or_default().to_owned())
    }

    /// Polls the order database until every order in `ids` has one of
    /// `statuses`, or `timeout`; returns each order's last status.
    pub async fn wait_for_statuses(
        &self,
        ids: &[Uuid],
        statuses: &[&str],
        timeout: Duration,
    ) -> Result<HashMap<Uuid, String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows: Vec<(Uuid, String)> = sqlx::query_as("SELECT id, status FROM orders WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(self.db("order"))
                .await
                .unwrap_or_default();
            let found: HashMap<Uuid, String> = rows.into_iter().collect();
            let done = ids.iter().all(|id| found.get(id).is_some_and(|s| statuses.contains(&s.as_str())));
            if done || Instant::now() > deadline {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills every process and drops the databases.
    pub async fn shutdown(mut self) {
        let names: Vec<&'static str> = self.services.keys().copied().collect();
        for service in &names {
            let _ = self.kill(service).await;
        }
        for (_, pool) in self.pools.drain() {
            pool.close().await;
        }
        for service in names {
            let _ = self.stack.drop_database(&format!("{}_{service}", self.namespace)).await;
        }
    }
}

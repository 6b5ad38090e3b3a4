//! Infrastructure stacks: a PostgreSQL cluster, a RabbitMQ node and a Tansu
//! (Kafka API) broker owned by the runner, each with its own directory and
//! ports, so tests can SIGKILL and restart them without touching the system
//! PostgreSQL / RabbitMQ services.
//!
//! Layout of a stack directory `<repo>/.run/<stack>/`:
//! - `logs/<name>.log`, `pids/<name>.pid` for every process (infra and services)
//! - `pg/` (or a symlink to `/var/tmp/ordermesh-<hash>/<stack>/pg` when the
//!   `postgres` OS user cannot reach the repository) with `data/` and `socket/`
//! - `rabbitmq/` node home: config, cookie, mnesia, logs
//! - `kafka/` Tansu's sqlite storage

use std::{
    fmt,
    fs::{self, OpenOptions},
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Output,
    str::FromStr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use nix::{
    sys::signal::Signal,
    unistd::{Gid, Uid, User},
};
use sqlx::{Connection as _, PgConnection};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

use crate::{
    kafka_supervisor::KafkaSupervisor,
    process::{self, OWNER_ENV, POLL_INTERVAL},
    tools,
};

pub const POSTGRES_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The first boot of a RabbitMQ node (mnesia + feature flags) is slow on a
/// busy two-core machine.
pub const RABBITMQ_READY_TIMEOUT: Duration = Duration::from_secs(120);
pub const KAFKA_READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a start waits for a killed predecessor's port to be released.
const PORT_RELEASE_TIMEOUT: Duration = Duration::from_secs(15);
const KILL_TIMEOUT: Duration = Duration::from_secs(15);
const LOG_TAIL_LINES: usize = 40;
/// Room left in `sockaddr_un.sun_path` (108 bytes) for `/.s.PGSQL.NNNNN`.
const MAX_SOCKET_DIR_LEN: usize = 90;

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
    name: String,
    repo_root: PathBuf,
    dir: PathBuf,
    ports: StackPorts,
    /// The port Kafka tells its clients to connect to, if not its own
    /// (a proxy in front of it, see [`Stack::with_kafka_advertised_port`]).
    kafka_advertised_port: Option<u16>,
    /// Where the services are told to reach the infrastructure, if not at
    /// its own ports (see [`Stack::behind_proxies`]).
    service_routes: Option<ServiceRoutes>,
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

/// The three infrastructure components of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    Postgres,
    RabbitMq,
    Kafka,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Postgres, Component::RabbitMq, Component::Kafka];

    /// Name used for logs, pid files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Component::Postgres => "postgres",
            Component::RabbitMq => "rabbitmq",
            Component::Kafka => "kafka",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Component {
    type Err = anyhow::Error;
    fn from_str(name: &str) -> Result<Self> {
        Component::ALL
            .into_iter()
            .find(|component| component.name() == name)
            .ok_or_else(|| anyhow!("unknown infrastructure component {name:?} (expected postgres, rabbitmq or kafka)"))
    }
}

/// What `start` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    AlreadyRunning { pid: u32 },
    Spawned { pid: u32 },
}

impl StartOutcome {
    pub fn pid(self) -> u32 {
        match self {
            StartOutcome::AlreadyRunning { pid } | StartOutcome::Spawned { pid } => pid,
        }
    }
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

    pub fn postgres(&self) -> Postgres<'_> {
        Postgres { stack: self }
    }
    pub fn rabbitmq(&self) -> RabbitMq<'_> {
        RabbitMq { stack: self }
    }
    pub fn kafka(&self) -> Kafka<'_> {
        Kafka { stack: self }
    }
    pub fn kafka_supervisor(&self) -> KafkaSupervisor<'_> {
        KafkaSupervisor::new(self)
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

    /// Starts PostgreSQL, RabbitMQ and Kafka (installing tools if needed) and
    /// waits until all three are ready.
    pub async fn start_infra(&self) -> Result<()> {
        tools::ensure_all().await?;
        self.prepare_dirs()?;
        let mut rabbitmq_started = false;
        for component in Component::ALL {
            let outcome = self.start_component(component).await?;
            rabbitmq_started |= component == Component::RabbitMq && matches!(outcome, StartOutcome::Spawned { .. });
        }
        tokio::try_join!(
            self.postgres().wait_ready(POSTGRES_READY_TIMEOUT),
            self.rabbitmq().wait_ready(RABBITMQ_READY_TIMEOUT),
            self.kafka().wait_ready(KAFKA_READY_TIMEOUT),
        )?;
        if rabbitmq_started {
            self.rabbitmq().repair_quorum_queues().await;
        }
        self.kafka_supervisor().start_or_warn().await;
        Ok(())
    }

    /// Gracefully stops all three components (and first Kafka's
    /// supervisor, so it does not take the stop for a wedge); tries all of
    /// them even if one fails.
    pub async fn stop_infra(&self) -> Result<()> {
        let supervisor = self.kafka_supervisor().stop().await;
        let (kafka, rabbitmq, postgres) =
            tokio::join!(self.kafka().stop(), self.rabbitmq().stop(), self.postgres().stop(),);
        let failures: Vec<String> = [supervisor, kafka, rabbitmq, postgres]
            .into_iter()
            .filter_map(|result| result.err().map(|error| format!("{error:#}")))
            .collect();
        if !failures.is_empty() {
            bail!("stopping infrastructure of stack {}:\n{}", self.name, failures.join("\n"));
        }
        Ok(())
    }

    pub async fn start_component(&self, component: Component) -> Result<StartOutcome> {
        match component {
            Component::Postgres => self.postgres().start().await,
            Component::RabbitMq => self.rabbitmq().start().await,
            Component::Kafka => self.kafka().start().await,
        }
    }
    /// Waits until `component`, just started, is ready (and RabbitMQ's
    /// quorum queues are whole again, see [`RabbitMq::repair_quorum_queues`]).
    pub async fn wait_component_ready(&self, component: Component) -> Result<()> {
        match component {
            Component::Postgres => self.postgres().wait_ready(POSTGRES_READY_TIMEOUT).await,
            Component::RabbitMq => {
                self.rabbitmq().wait_ready(RABBITMQ_READY_TIMEOUT).await?;
                self.rabbitmq().repair_quorum_queues().await;
                Ok(())
            }
            Component::Kafka => self.kafka().wait_ready(KAFKA_READY_TIMEOUT).await,
        }
    }
    /// SIGKILLs `component`; `Ok(false)` if nothing of it was running.
    pub async fn kill_component(&self, component: Component) -> Result<bool> {
        match component {
            Component::Postgres => self.postgres().kill().await,
            Component::RabbitMq => self.rabbitmq().kill().await,
            Component::Kafka => self.kafka().kill().await,
        }
    }
    /// Stops `component` gracefully (SIGTERM) and waits until it has exited.
    pub async fn stop_component(&self, component: Component) -> Result<()> {
        match component {
            Component::Postgres => self.postgres().stop().await,
            Component::RabbitMq => self.rabbitmq().stop().await,
            Component::Kafka => self.kafka().stop().await,
        }
    }
    pub async fn restart_component(&self, component: Component) -> Result<u32> {
        match component {
            Component::Postgres => self.postgres().restart().await,
            Component::RabbitMq => self.rabbitmq().restart().await,
            Component::Kafka => self.kafka().restart().await,
        }
    }
    /// Pid of the running component, `None` if it is not running.
    pub fn component_pid(&self, component: Component) -> Option<u32> {
        match component {
            Component::Postgres => self.postgres().pid(),
            Component::RabbitMq => self.rabbitmq().pid(),
            Component::Kafka => self.kafka().pid(),
        }
    }
    pub fn component_port(&self, component: Component) -> u16 {
        match component {
            Component::Postgres => self.ports.postgres,
            Component::RabbitMq => self.ports.amqp,
            Component::Kafka => self.ports.kafka,
        }
    }

    /// Creates a database if it does not exist yet (see [`create_database_on`]).
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        create_database_on(&mut connection, name).await.with_context(|| format!("on {}", self.postgres_url("postgres")))
    }

    /// Drops a database if it exists, disconnecting its sessions.
    /// Drops every replication slot no session streams: on a test stack,
    /// what the log-tailing relays of earlier test runs left behind.
    pub async fn drop_idle_replication_slots(&self) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        let (dropped,): (i64,) = sqlx::query_as(
            "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE NOT active",
        )
        .fetch_one(&mut connection)
        .await
        .context("dropping idle replication slots")?;
        if dropped > 0 {
            println!("dropped {dropped} idle replication slot(s) left by earlier runs");
        }
        Ok(())
    }

    pub async fn drop_database(&self, name: &str) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        // A log-tailing relay's slot keeps its database from being dropped,
        // even with FORCE; its stream may outlive the killed service briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Inactive slots are dropped; the streams of active ones ended,
            // to be dropped on the next pass.
            let pass: Result<(i64,), sqlx::Error> = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE active AND pg_terminate_backend(active_pid))
                      + count(*) FILTER (WHERE NOT active AND pg_drop_replication_slot(slot_name) IS NOT NULL)
                 FROM pg_replication_slots WHERE database = $1",
            )
            .bind(name)
            .fetch_one(&mut connection)
            .await;
            let left = match pass {
                Ok((active,)) => active,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("dropping the replication slots of database {name:?}"));
                }
                // A slot taken up again between the scan and the drop.
                Err(_) => 1,
            };
            if left == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_identifier(name));
        sqlx::raw_sql(&statement)
            .execute(&mut connection)
            .await
            .with_context(|| format!("dropping database {name:?} on {}", self.postgres_url("postgres")))?;
        Ok(())
    }

    async fn admin_connection(&self) -> Result<PgConnection> {
        let url = self.postgres_url("postgres");
        PgConnection::connect(&url).await.with_context(|| {
            format!(
                "connecting to {url} (is the {} stack up? try `cargo xtask infra up --stack {}`)",
                self.name, self.name
            )
        })
    }

    fn prepare_dirs(&self) -> Result<()> {
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
    async fn kill_owned(&self, name: &str) -> Result<bool> {
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

    fn not_ready_error(&self, name: &str, pid: Option<u32>, problem: &str) -> anyhow::Error {
        let log = process::log_tail(&self.log_path(name), LOG_TAIL_LINES);
        match pid {
            Some(pid) => anyhow!("{name} of stack {} (pid {pid}) {problem}\n{log}", self.name),
            None => anyhow!("{name} of stack {} {problem}\n{log}", self.name),
        }
    }
}

/// The OS user PostgreSQL runs as: `postgres` when we are root (the server
/// refuses to run as root), otherwise ourselves.
#[derive(Clone, Debug)]
struct ClusterOwner {
    ids: Option<(Uid, Gid)>,
}

impl ClusterOwner {
    fn current() -> Result<ClusterOwner> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(ClusterOwner { ids: None });
        }
        let user = User::from_name("postgres").context("looking up the `postgres` OS user")?.context(
            "no `postgres` OS user exists; install PostgreSQL (apt-get install postgresql) which creates it",
        )?;
        Ok(ClusterOwner { ids: Some((user.uid, user.gid)) })
    }

    fn apply(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    fn apply_std(&self, command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt as _;
        if let Some((uid, gid)) = self.ids {
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown postgres {}", path.display()))?;
        }
        Ok(())
    }

    /// Whether the owner can traverse `dir` (x permission on it and all ancestors).
    async fn can_traverse(&self, dir: &Path) -> Result<bool> {
        let mut command = Command::new("test");
        command.arg("-x").arg(dir);
        self.apply(&mut command);
        let status = command
            .status()
            .await
            .with_context(|| format!("checking whether the postgres user can reach {}", dir.display()))?;
        Ok(status.success())
    }
}

/// The stack's PostgreSQL cluster.
#[derive(Clone, Copy, Debug)]
pub struct Postgres<'a> {
    stack: &'a Stack,
}

impl Postgres<'_> {
    const NAME: &'static str = "postgres";

    /// `<stack dir>/pg`: a directory or a symlink to the fallback location.
    pub fn area_link(self) -> PathBuf {
        self.stack.dir.join("pg")
    }

    /// The real data directory, if the cluster area exists.
    pub fn data_dir(self) -> Option<PathBuf> {
        self.area_link().canonicalize().ok().map(|area| area.join("data"))
    }

    /// Pid of the postmaster, if running: the process we spawned (recognised
    /// by its environment marker), or the one named in the cluster's own
    /// `postmaster.pid` if it really serves this data directory (pids get reused).
    pub fn pid(self) -> Option<u32> {
        if let Some(pid) = self.stack.owned_pid(Self::NAME) {
            return Some(pid);
        }
        let data_dir = self.data_dir()?;
        let postmaster = fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())?;
        (process::is_alive(postmaster) && process::process_cwd(postmaster).as_deref() == Some(&data_dir))
            .then_some(postmaster)
    }

    pub fn is_running(self) -> bool {
        self.pid().is_some()
    }

    /// Spawns the postmaster (after `initdb` on first use) unless it is already running.
    pub async fn start(self) -> Result<StartOutcome> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        if let Some(pid) = self.pid() {
            return Ok(StartOutcome::AlreadyRunning { pid });
        }
        let tools = tools::ensure_postgres().await?;
        let owner = ClusterOwner::current()?;
        self.stack.prepare_dirs()?;
        let area = self.prepare_area(&owner).await?;
        let data_dir = area.join("data");
        self.init_cluster(&tools, &owner, &data_dir).await?;
        self.write_config(&owner, &area, &data_dir)?;
        self.reap_orphans(&area, &data_dir).await?;
        process::wait_port_free(self.stack.ports.postgres, PORT_RELEASE_TIMEOUT, "PostgreSQL").await?;

        let mut command = std::process::Command::new(tools.postgres());
        command
            .arg("-D")
            .arg(&data_dir)
            .current_dir(&area)
            .env("HOME", &area)
            .env(OWNER_ENV, self.stack.owner_tag(Self::NAME));
        owner.apply_std(&mut command);
        self.stack.mark_log(Self::NAME, "starting")?;
        let pid = process::spawn_detached(command, &self.stack.log_path(Self::NAME), &self.stack.pid_path(Self::NAME))?;
        Ok(StartOutcome::Spawned { pid })
    }

    /// Waits until `SELECT 1` succeeds over TCP.
    pub async fn wait_ready(self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let url = self.stack.postgres_url("postgres");
        loop {
            // Our pid file exists from the spawn on; postmaster.pid only once
            // the server has initialised.
            let spawned = process::read_pid_file(&self.stack.pid_path(Self::NAME)).ok().flatten();
            let pid = self.pid().or(spawned.filter(|pid| process::is_alive(*pid)));
            let Some(pid) = pid else {
                return Err(self.stack.not_ready_error(Self::NAME, spawned, "is not running (exited during startup?)"));
            };
            // Only connect once the postmaster says it is ready: connecting
            // earlier just fills the log with "the database system is starting up".
            let problem = if self.postmaster_status().as_deref() != Some("ready") {
                format!("postmaster status is {:?}", self.postmaster_status().unwrap_or_else(|| "unknown".into()))
            } else {
                match tokio::time::timeout(Duration::from_secs(5), select_one(&url)).await {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(error)) => format!("{url}: {error:#}"),
                    Err(_) => format!("{url}: connection attempt timed out"),
                }
            };
            if Instant::now() >= deadline {
                return Err(self.stack.not_ready_error(
                    Self::NAME,
                    Some(pid),
                    &format!("not ready after {timeout:?} ({problem})"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The status line PostgreSQL keeps in `postmaster.pid` (`starting`,
    /// `ready`, `stopping`, ...), as `pg_ctl -w` reads it.
    pub fn postmaster_status(self) -> Option<String> {
        let lock = fs::read_to_string(self.data_dir()?.join("postmaster.pid")).ok()?;
        lock.lines().nth(7).map(|status| status.trim().to_owned())
    }

    /// `pg_ctl stop -m fast`, waiting for the postmaster to exit.
    pub async fn stop(self) -> Result<()> {
        let (Some(pid), Some(data_dir)) = (self.pid(), self.data_dir()) else {
            return process::remove_pid_file(&self.stack.pid_path(Self::NAME));
        };
        let tools = tools::locate_postgres()?;
        let owner = ClusterOwner::current()?;
        let mut command = Command::new(tools.pg_ctl());
        command
            .arg("stop")
            .arg("-D")
            .arg(&data_dir)
            .args(["-m", "fast", "-w", "-t"])
            .arg(STOP_TIMEOUT.as_secs().to_string());
        owner.apply(&mut command);
        let output = command.output().await.context("running pg_ctl stop")?;
        if !output.status.success() && process::is_alive(pid) {
            bail!("pg_ctl stop -D {} failed: {}", data_dir.display(), describe_output(&output));
        }
        if !process::wait_for_exit(&[pid], STOP_TIMEOUT).await {
            bail!("postgres (pid {pid}) still running {STOP_TIMEOUT:?} after pg_ctl stop");
        }
        self.stack.mark_log(Self::NAME, "stopped")?;
        process::remove_pid_file(&self.stack.pid_path(Self::NAME))
    }

    /// Simulates a crash: SIGKILL to the postmaster's group, then to every
    /// backend (backends are session leaders of their own, so the group kill
    /// misses them), and waits until all are gone so a restart can attach to
    /// the shared memory again. `Ok(false)` if no postgres process was found.
    pub async fn kill(self) -> Result<bool> {
        let mut killed = Vec::new();
        if let Some(pid) = self.pid() {
            process::signal_group(pid, Signal::SIGKILL)?;
            process::signal_process(pid, Signal::SIGKILL)?;
            killed.push(pid);
        }
        if let Some(data_dir) = self.data_dir() {
            // Look for backends only after the postmaster is dead, so it cannot fork new ones.
            process::wait_for_exit(&killed, KILL_TIMEOUT).await;
            for pid in cluster_processes(&data_dir) {
                process::signal_process(pid, Signal::SIGKILL)?;
                killed.push(pid);
            }
        }
        if !process::wait_for_exit(&killed, KILL_TIMEOUT).await {
            let alive: Vec<u32> = killed.into_iter().filter(|pid| process::is_alive(*pid)).collect();
            bail!("postgres processes {alive:?} still alive {KILL_TIMEOUT:?} after SIGKILL");
        }
        process::remove_pid_file(&self.stack.pid_path(Self::NAME))?;
        Ok(!killed.is_empty())
    }

    /// Graceful stop (if running), start, wait until ready. Returns the new pid.
    pub async fn restart(self) -> Result<u32> {
        self.stop().await?;
        let outcome = self.start().await?;
        self.wait_ready(POSTGRES_READY_TIMEOUT).await?;
        Ok(outcome.pid())
    }

    /// Creates (once) the directory holding `data/` and `socket/`, choosing a
    /// location the `postgres` user can reach. Returns its canonical path.
    async fn prepare_area(self, owner: &ClusterOwner) -> Result<PathBuf> {
        let link = self.area_link();
        match fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() => {
                // The symlink records a fallback location; recreate its target if
                // /var/tmp was cleaned.
                let target = fs::read_link(&link).with_context(|| format!("reading symlink {}", link.display()))?;
                if !target.is_dir() {
                    create_owned_dir(&target, owner)?;
                }
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!("{} exists but is neither a directory nor a symlink", link.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.stack.dir)
                    .with_context(|| format!("creating {}", self.stack.dir.display()))?;
                if owner.ids.is_none() || owner.can_traverse(&self.stack.dir).await? {
                    create_owned_dir(&link, owner)?;
                } else {
                    // E.g. the repository is checked out under a root-only temp dir in CI.
                    let fallback = fallback_area(&self.stack.repo_root, &self.stack.name);
                    create_owned_dir(&fallback, owner)?;
                    let parent = fallback.parent().unwrap_or(Path::new("/"));
                    if !owner.can_traverse(parent).await? {
                        bail!(
                            "the postgres user can reach neither {} nor {}; make one of them traversable (chmod o+x)",
                            self.stack.dir.display(),
                            parent.display()
                        );
                    }
                    std::os::unix::fs::symlink(&fallback, &link)
                        .with_context(|| format!("symlinking {} -> {}", link.display(), fallback.display()))?;
                }
            }
            Err(error) => {
                return Err(error).with_context(|| format!("inspecting {}", link.display()));
            }
        }
        link.canonicalize().with_context(|| format!("resolving {}", link.display()))
    }

    async fn init_cluster(self, tools: &tools::PostgresTools, owner: &ClusterOwner, data_dir: &Path) -> Result<()> {
        if data_dir.join("PG_VERSION").is_file() {
            return Ok(());
        }
        if data_dir.exists() {
            // A previous initdb was interrupted; the directory is ours and unusable.
            fs::remove_dir_all(data_dir)
                .with_context(|| format!("removing half-initialised {}", data_dir.display()))?;
        }
        let mut command = Command::new(tools.initdb());
        command
            .arg("-D")
            .arg(data_dir)
            .args(["--auth=trust", "-U", "postgres", "--no-locale", "--encoding=UTF8"])
            .env("HOME", data_dir.parent().unwrap_or(data_dir));
        owner.apply(&mut command);
        let output = command.output().await.with_context(|| format!("running {}", tools.initdb().display()))?;
        if !output.status.success() {
            bail!("initdb -D {} failed: {}", data_dir.display(), describe_output(&output));
        }
        let conf = data_dir.join("postgresql.conf");
        let mut file =
            OpenOptions::new().append(true).open(&conf).with_context(|| format!("opening {}", conf.display()))?;
        writeln!(
            file,
            "\n# Settings of the ordermesh runner, rewritten on every start.\ninclude_if_exists = 'ordermesh.conf'"
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        Ok(())
    }

    fn write_config(self, owner: &ClusterOwner, area: &Path, data_dir: &Path) -> Result<()> {
        let port = self.stack.ports.postgres;
        let socket_dir = self.socket_dir(area);
        if !socket_dir.is_dir() {
            create_owned_dir(&socket_dir, owner)?;
        }
        // fsync stays on: surviving kill -9 without losing commits is the point.
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket}'\n\
             max_connections = 400\n\
             shared_buffers = 128MB\n\
             fsync = on\n\
             synchronous_commit = on\n\
             full_page_writes = on\n\
             logging_collector = off\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n\
             # After a crash, sync the data directory with one syncfs() instead of
             # fsync()ing every file: same guarantee, seconds faster.\n\
             recovery_init_sync_method = syncfs\n\
             # The log-tailing outbox relay (OUTBOX_RELAY=log-tailing) reads the WAL
             # through logical replication, one slot per service database (tests
             # make many). A slot left unread may hold back at most this much WAL;
             # beyond it the slot is invalidated and the relay sweeps what it missed.
             # A relay cut off by the network frees its slot after the timeout.\n\
             wal_level = logical\n\
             max_replication_slots = 100\n\
             max_wal_senders = 100\n\
             max_slot_wal_keep_size = 512MB\n\
             wal_sender_timeout = 15s\n",
            socket = socket_dir.display()
        );
        let path = data_dir.join("ordermesh.conf");
        fs::write(&path, settings).with_context(|| format!("writing {}", path.display()))?;
        owner.chown(&path)
    }

    /// Kills leftovers of an earlier crash (backends outliving a SIGKILLed
    /// postmaster) and removes a stale `postmaster.pid`, whose pid might
    /// since have been reused by an unrelated process.
    /// `<area>/socket`, or a short directory under the temp dir when that
    /// path would not fit a unix socket address (108 bytes).
    fn socket_dir(self, area: &Path) -> PathBuf {
        let socket_dir = area.join("socket");
        if socket_dir.as_os_str().len() <= MAX_SOCKET_DIR_LEN {
            return socket_dir;
        }
        std::env::temp_dir().join(format!("ordermesh-{}-{}-pgsock", short_hash(&self.stack.repo_root), self.stack.name))
    }

    async fn reap_orphans(self, area: &Path, data_dir: &Path) -> Result<()> {
        let orphans = cluster_processes(data_dir);
        for pid in &orphans {
            process::signal_process(*pid, Signal::SIGKILL)?;
        }
        if !process::wait_for_exit(&orphans, KILL_TIMEOUT).await {
            bail!("leftover postgres processes {orphans:?} of {} survive SIGKILL", data_dir.display());
        }
        // Nothing serves this cluster now, so lock files are stale. PostgreSQL
        // would refuse to start if their pid still answered kill(pid, 0),
        // which happens when the pid was reused or is an unreaped zombie.
        let socket = self.socket_dir(area).join(format!(".s.PGSQL.{}", self.stack.ports.postgres));
        let socket_lock = PathBuf::from(format!("{}.lock", socket.display()));
        for stale in [data_dir.join("postmaster.pid"), socket_lock, socket] {
            match fs::remove_file(&stale) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("removing stale {}", stale.display()));
                }
            }
        }
        Ok(())
    }
}

/// Live `postgres` processes whose working directory is `data_dir`: the
/// postmaster and all its backends / auxiliary processes.
fn cluster_processes(data_dir: &Path) -> Vec<u32> {
    process::processes_with_cwd(data_dir)
        .into_iter()
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("postgres"))
            })
        })
        .collect()
}

async fn select_one(url: &str) -> Result<()> {
    let mut connection = PgConnection::connect(url).await.context("connecting")?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut connection).await.context("SELECT 1")?;
    if one != 1 {
        bail!("SELECT 1 returned {one}");
    }
    let _ = connection.close().await;
    Ok(())
}

/// The stack's RabbitMQ node.
#[derive(Clone, Copy, Debug)]
pub struct RabbitMq<'a> {
    stack: &'a Stack,
}

impl RabbitMq<'_> {
    const NAME: &'static str = "rabbitmq";

    /// The node's home: config files, Erlang cookie, mnesia, logs.
    pub fn dir(self) -> PathBuf {
        self.stack.dir.join("rabbitmq")
    }

    /// `ordermesh-<stack>@localhost`
    pub fn node_name(self) -> String {
        format!("ordermesh-{}@localhost", self.stack.name)
    }

    pub fn pid(self) -> Option<u32> {
        self.stack.owned_pid(Self::NAME)
    }

    pub fn is_running(self) -> bool {
        self.pid().is_some()
    }

    /// Environment shared by `rabbitmq-server` and `rabbitmqctl`: everything
    /// points into the node's own directory so `/etc/rabbitmq/*` (which names
    /// the system node) never leaks in, and HOME makes both agree on the cookie.
    pub fn env(self) -> Vec<(String, String)> {
        let dir = self.dir();
        let in_dir = |file: &str| dir.join(file).display().to_string();
        let ports = self.stack.ports;
        vec![
            ("HOME".into(), dir.display().to_string()),
            ("RABBITMQ_NODENAME".into(), self.node_name()),
            ("RABBITMQ_NODE_IP_ADDRESS".into(), "127.0.0.1".into()),
            ("RABBITMQ_NODE_PORT".into(), ports.amqp.to_string()),
            ("RABBITMQ_DIST_PORT".into(), ports.rabbit_dist.to_string()),
            ("RABBITMQ_MNESIA_BASE".into(), in_dir("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), in_dir("log")),
            ("RABBITMQ_PID_FILE".into(), in_dir("beam.pid")),
            ("RABBITMQ_CONFIG_FILE".into(), in_dir("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE".into(), in_dir("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE".into(), in_dir("enabled_plugins")),
            ("RABBITMQ_CONF_ENV_FILE".into(), in_dir("rabbitmq-env.conf")),
            // Keep distribution on loopback, like the system node.
            ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS".into(), "-kernel inet_dist_use_interface {127,0,0,1}".into()),
            ("ERL_EPMD_ADDRESS".into(), "127.0.0.1".into()),
        ]
    }

    fn command(self, program: &Path) -> Command {
        let mut command = Command::new(program);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RABBITMQ_") {
                command.env_remove(name);
            }
        }
        command
            .env_remove("ERL_FLAGS")
            .env_remove("ERL_AFLAGS")
            .env_remove("ERL_ZFLAGS")
            .envs(self.env())
            .current_dir(self.dir());
        command
    }

    fn write_config(self) -> Result<()> {
        let dir = self.dir();
        for sub in [dir.clone(), dir.join("mnesia"), dir.join("log")] {
            fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        }
        let ports = self.stack.ports;
        let mut config = format!(
            "# Written by the ordermesh runner on every start.\n\
             listeners.tcp.default = 127.0.0.1:{amqp}\n\
             # loopback_users stays at its default: guest/guest works on 127.0.0.1 only.\n\
             log.console = true\n\
             log.console.level = info\n\
             log.console.use_colors = off\n\
             log.file = false\n",
            amqp = ports.amqp
        );
        let plugins = match ports.rabbit_management {
            Some(port) => {
                config.push_str(&format!("management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {port}\n"));
                "[rabbitmq_management].\n"
            }
            None => "[].\n",
        };
        let files = [
            ("rabbitmq.conf", config.as_str()),
            ("enabled_plugins", plugins),
            ("advanced.config", "[].\n"),
            (
                "rabbitmq-env.conf",
                "# Intentionally empty: replaces /etc/rabbitmq/rabbitmq-env.conf, which names the system node.\n",
            ),
        ];
        for (file, contents) in files {
            let path = dir.join(file);
            fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Spawns `rabbitmq-server` unless the node is already running.
    pub async fn start(self) -> Result<StartOutcome> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        if let Some(pid) = self.pid() {
            return Ok(StartOutcome::AlreadyRunning { pid });
        }
        let tools = tools::ensure_rabbitmq().await?;
        process::wait_port_free(self.stack.ports.amqp, PORT_RELEASE_TIMEOUT, "RabbitMQ").await?;
        self.stack.prepare_dirs()?;
        self.write_config()?;
        let mut command = self.command(&tools.server()).into_std();
        command.env(OWNER_ENV, self.stack.owner_tag(Self::NAME));
        self.stack.mark_log(Self::NAME, "starting")?;
        let pid = process::spawn_detached(command, &self.stack.log_path(Self::NAME), &self.stack.pid_path(Self::NAME))?;
        Ok(StartOutcome::Spawned { pid })
    }

    /// Waits for the AMQP listener to greet (it opens last during boot), then
    /// confirms with `rabbitmqctl await_startup`.
    pub async fn wait_ready(self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let address = SocketAddr::from(([127, 0, 0, 1], self.stack.ports.amqp));
        loop {
            let Some(pid) = self.pid() else {
                return Err(self.stack.not_ready_error(Self::NAME, None, "is not running (exited during startup?)"));
            };
            if amqp_greets(address).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.stack.not_ready_error(
                    Self::NAME,
                    Some(pid),
                    &format!("does not speak AMQP on {address} after {timeout:?}"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(10));
        let output = self
            .ctl(&["await_startup", "--timeout", &remaining.as_secs().to_string()], remaining + Duration::from_secs(30))
            .await?;
        if !output.status.success() {
            return Err(self.stack.not_ready_error(
                Self::NAME,
                self.pid(),
                &format!("failed `rabbitmqctl -n {} await_startup`: {}", self.node_name(), describe_output(&output)),
            ));
        }
        Ok(())
    }

    /// Runs `rabbitmqctl -n <node> <args>` with the node's environment.
    pub async fn ctl(self, args: &[&str], timeout: Duration) -> Result<Output> {
        let tools = tools::locate_rabbitmq()?;
        let node = self.node_name();
        let mut command = self.command(&tools.ctl());
        command.arg("-n").arg(&node).args(args).kill_on_drop(true);
        let description = format!("rabbitmqctl -n {node} {}", args.join(" "));
        tokio::time::timeout(timeout, command.output())
            .await
            .map_err(|_| anyhow!("`{description}` did not finish within {timeout:?}"))?
            .with_context(|| format!("running `{description}`"))
    }

    /// `rabbitmqctl shutdown` (stops the node and waits for its OS process),
    /// falling back to SIGTERM.
    pub async fn stop(self) -> Result<()> {
        let Some(pid) = self.pid() else {
            return process::remove_pid_file(&self.stack.pid_path(Self::NAME));
        };
        let shutdown = self.ctl(&["shutdown"], STOP_TIMEOUT).await;
        let graceful = matches!(&shutdown, Ok(output) if output.status.success());
        if !graceful || !process::wait_for_exit(&[pid], Duration::from_secs(30)).await {
            let reason = match shutdown {
                Ok(output) => describe_output(&output),
                Err(error) => format!("{error:#}"),
            };
            eprintln!("rabbitmqctl shutdown did not stop {} ({reason}); sending SIGTERM", self.node_name());
            self.stack.terminate_owned(Self::NAME, Duration::from_secs(30)).await?;
        }
        self.stack.mark_log(Self::NAME, "stopped")?;
        process::remove_pid_file(&self.stack.pid_path(Self::NAME))
    }

    /// Simulates a crash: SIGKILL to the whole group (script, beam.smp,
    /// helpers). `Ok(false)` if the node was not running.
    pub async fn kill(self) -> Result<bool> {
        self.stack.kill_owned(Self::NAME).await
    }

    pub async fn restart(self) -> Result<u32> {
        self.stop().await?;
        let outcome = self.start().await?;
        self.wait_ready(RABBITMQ_READY_TIMEOUT).await?;
        self.repair_quorum_queues().await;
        Ok(outcome.pid())
    }

    /// Where [`RabbitMq::repair_quorum_queues`] notes each repair it made.
    pub fn repairs_log_path(self) -> PathBuf {
        self.stack.log_path(QUORUM_REPAIRS_LOG)
    }

    /// Re-attaches quorum queues whose Raft server RabbitMQ 3.10 lost in an
    /// unclean stop (xtask/src/rabbitmq/repair_quorum_queues.erl): without
    /// it, a queue SIGKILLed young never gets a leader again and confirms
    /// nothing. Run after each start this runner makes; a repair is noted
    /// in `logs/rabbitmq-repairs.log` (the chaos report names each as a
    /// broker defect). Failing to run it is reported, never fatal: the
    /// broker works for every queue it did not lose.
    pub async fn repair_quorum_queues(self) {
        let script: String = REPAIR_QUORUM_QUEUES
            .lines()
            .filter(|line| !line.trim_start().starts_with("%%"))
            .collect::<Vec<_>>()
            .join("\n");
        let outcome = match self.ctl(&["eval", &script], Duration::from_secs(60)).await {
            Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            Ok(output) => {
                eprintln!("rabbitmq: the quorum-queue repair failed: {}", describe_output(&output));
                return;
            }
            Err(error) => {
                eprintln!("rabbitmq: the quorum-queue repair did not run: {error:#}");
                return;
            }
        };
        if outcome == "[]" {
            return;
        }
        let outcome = outcome.split_whitespace().collect::<Vec<_>>().join(" ");
        eprintln!("rabbitmq: re-attached quorum queues lost in an unclean stop: {outcome}");
        let line = format!("{} {outcome}\n", chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.repairs_log_path())
            .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
        if let Err(error) = written {
            eprintln!("rabbitmq: noting the repair in {}: {error}", self.repairs_log_path().display());
        }
    }
}

/// The log of [`RabbitMq::repair_quorum_queues`], beside the broker's.
pub const QUORUM_REPAIRS_LOG: &str = "rabbitmq-repairs";

const REPAIR_QUORUM_QUEUES: &str = include_str!("rabbitmq/repair_quorum_queues.erl");

/// Opens an AMQP 0-9-1 connection far enough to receive `Connection.Start`.
async fn amqp_greets(address: SocketAddr) -> Result<()> {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await.context("connecting")?;
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.context("sending protocol header")?;
        let mut frame_header = [0_u8; 7];
        stream.read_exact(&mut frame_header).await.context("reading Connection.Start")?;
        // Frame type 1 (method) on channel 0: the broker's Connection.Start.
        if frame_header[0] != 1 || frame_header[1..3] != [0, 0] {
            bail!("unexpected AMQP greeting {frame_header:?}");
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt).await.map_err(|_| anyhow!("AMQP greeting timed out"))?
}

/// The stack's Tansu broker.
#[derive(Clone, Copy, Debug)]
pub struct Kafka<'a> {
    stack: &'a Stack,
}

impl Kafka<'_> {
    const NAME: &'static str = "kafka";

    pub fn dir(self) -> PathBuf {
        self.stack.dir.join("kafka")
    }

    /// The sqlite file holding all topics.
    pub fn storage_file(self) -> PathBuf {
        self.dir().join("tansu.db")
    }

    /// Kills the broker and deletes everything it stored, then starts it
    /// empty. Tansu's SQLite engine slows down as its file grows (a whole
    /// core for ~10 records/s at ~30 MB), so a throwaway stack that runs
    /// experiment after experiment starts each one from an empty broker.
    pub async fn restart_empty(self) -> Result<()> {
        self.kill().await?;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let path = PathBuf::from(format!("{}{suffix}", self.storage_file().display()));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error).with_context(|| format!("removing {}", path.display())),
            }
        }
        self.start().await?;
        self.wait_ready(KAFKA_READY_TIMEOUT).await
    }

    /// `tcp://127.0.0.1:<port>`, the URL form Tansu's CLI takes.
    pub fn broker_url(self) -> String {
        format!("tcp://127.0.0.1:{}", self.stack.ports.kafka)
    }

    pub fn pid(self) -> Option<u32> {
        self.stack.owned_pid(Self::NAME)
    }

    pub fn is_running(self) -> bool {
        self.pid().is_some()
    }

    fn tansu_command(self, tansu: &Path) -> Command {
        let mut command = Command::new(tansu);
        // Tansu also reads these from the environment (and from a .env file in
        // its working directory, which is why that is the kafka/ dir).
        for leaky in [
            "CLUSTER_ID",
            "LISTENER_URL",
            "ADVERTISED_LISTENER_URL",
            "STORAGE_ENGINE",
            "SCHEMA_REGISTRY",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            command.env_remove(leaky);
        }
        command.current_dir(self.dir());
        command
    }

    /// Spawns `tansu broker` with sqlite storage unless already running.
    pub async fn start(self) -> Result<StartOutcome> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        self.start_locked().await
    }

    /// SIGKILLs the broker `pid`, alive but not answering, and starts it
    /// again on the same data file, under the start lock so that no other
    /// start races it. Leaves it alone (`Ok(None)`) if `pid` is no longer
    /// the broker (someone killed or restarted it meanwhile) or is stopped
    /// (frozen on purpose). The new broker advertises what the old one did
    /// (a chaos run's proxy, see [`Stack::with_kafka_advertised_port`]).
    /// Returns the new pid.
    pub async fn restart_unresponsive(self, pid: u32) -> Result<Option<u32>> {
        let _lock = process::lock_file_async(&self.stack.start_lock_path(Self::NAME)).await?;
        if self.pid() != Some(pid) || process::is_stopped(pid) {
            return Ok(None);
        }
        let advertised = process::process_args(pid).and_then(|args| advertised_port(&args));
        self.stack.mark_log(Self::NAME, &format!("the supervisor kills unresponsive (pid {pid})"))?;
        self.kill().await?;
        let stack = match advertised {
            Some(port) if port != self.stack.ports.kafka => self.stack.clone().with_kafka_advertised_port(port),
            _ => self.stack.clone(),
        };
        Ok(Some(stack.kafka().start_locked().await?.pid()))
    }

    /// [`Kafka::start`], the start lock held by the caller.
    async fn start_locked(self) -> Result<StartOutcome> {
        if let Some(pid) = self.pid() {
            return Ok(StartOutcome::AlreadyRunning { pid });
        }
        let tansu = tools::ensure_tansu().await?;
        process::wait_port_free(self.stack.ports.kafka, PORT_RELEASE_TIMEOUT, "Kafka").await?;
        self.stack.prepare_dirs()?;
        fs::create_dir_all(self.dir()).with_context(|| format!("creating {}", self.dir().display()))?;
        let url = self.broker_url();
        let advertised = match self.stack.kafka_advertised_port {
            Some(port) => format!("tcp://127.0.0.1:{port}"),
            None => url.clone(),
        };
        let mut command = self.tansu_command(&tansu);
        // Tansu resolves sqlite:// paths relative to its working directory.
        command
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .env(OWNER_ENV, self.stack.owner_tag(Self::NAME));
        self.stack.mark_log(Self::NAME, KAFKA_START_MARK)?;
        let pid = process::spawn_detached(
            command.into_std(),
            &self.stack.log_path(Self::NAME),
            &self.stack.pid_path(Self::NAME),
        )?;
        Ok(StartOutcome::Spawned { pid })
    }

    /// Waits until the port accepts connections and topics can be listed.
    pub async fn wait_ready(self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let address = SocketAddr::from(([127, 0, 0, 1], self.stack.ports.kafka));
        loop {
            let Some(pid) = self.pid() else {
                return Err(self.stack.not_ready_error(Self::NAME, None, "is not running (exited during startup?)"));
            };
            let probe = async {
                TcpStream::connect(address).await.context("connecting")?;
                self.list_topics().await.map(|_| ())
            };
            let problem = match tokio::time::timeout(Duration::from_secs(10), probe).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(error)) => format!("{error:#}"),
                Err(_) => "probe timed out".to_owned(),
            };
            if Instant::now() >= deadline {
                return Err(self.stack.not_ready_error(
                    Self::NAME,
                    Some(pid),
                    &format!("not ready on {address} after {timeout:?}: {problem}"),
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Existing topics with their partition counts.
    pub async fn list_topics(self) -> Result<Vec<(String, usize)>> {
        let tansu = tools::locate_tansu()?.context("tansu is not installed")?;
        let url = self.broker_url();
        let output = self
            .tansu_command(&tansu)
            .args(["topic", "list", "--broker", &url])
            .kill_on_drop(true)
            .output()
            .await
            .context("running `tansu topic list`")?;
        if !output.status.success() {
            bail!("`tansu topic list --broker {url}` failed: {}", describe_output(&output));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        // Tansu prints the Metadata response's topics as one JSON array line.
        let json_line = stdout
            .lines()
            .find(|line| line.trim_start().starts_with('['))
            .with_context(|| format!("`tansu topic list` printed no JSON array: {stdout}"))?;
        let topics: Vec<serde_json::Value> = serde_json::from_str(json_line)
            .with_context(|| format!("parsing `tansu topic list` output {json_line}"))?;
        Ok(topics
            .iter()
            .filter_map(|topic| {
                let name = topic.get("name")?.as_str()?.to_owned();
                let partitions = topic.get("partitions").and_then(|p| p.as_array()).map_or(0, Vec::len);
                Some((name, partitions))
            })
            .collect())
    }

    /// Creates the topics that do not exist yet; existing ones are left alone
    /// (a differing partition count is reported on stderr, not changed).
    pub async fn create_topics(self, topics: &[(&str, i32)]) -> Result<()> {
        let tansu = tools::locate_tansu()?.context("tansu is not installed")?;
        let url = self.broker_url();
        let existing = self.list_topics().await?;
        for (topic, partitions) in topics {
            if let Some((_, actual)) = existing.iter().find(|(name, _)| name == topic) {
                if i32::try_from(*actual).ok() != Some(*partitions) {
                    eprintln!(
                        "warning: topic {topic} exists with {actual} partitions (wanted {partitions}); left as is"
                    );
                }
                continue;
            }
            let output = self
                .tansu_command(&tansu)
                .args(["topic", "create", topic, "--partitions", &partitions.to_string(), "--broker", &url])
                .kill_on_drop(true)
                .output()
                .await
                .with_context(|| format!("running `tansu topic create {topic}`"))?;
            if !output.status.success() {
                // Lost a race with another creator? Then the topic is there now.
                let now = self.list_topics().await?;
                if !now.iter().any(|(name, _)| name == topic) {
                    bail!(
                        "`tansu topic create {topic} --partitions {partitions} --broker {url}` failed: {}",
                        describe_output(&output)
                    );
                }
            }
        }
        Ok(())
    }

    /// SIGTERM (Tansu shuts down cleanly on it) and wait.
    pub async fn stop(self) -> Result<()> {
        let running = self.is_running();
        self.stack.terminate_owned(Self::NAME, Duration::from_secs(30)).await?;
        if running {
            self.stack.mark_log(Self::NAME, "stopped")?;
        }
        Ok(())
    }

    /// SIGKILL; `Ok(false)` if the broker was not running.
    pub async fn kill(self) -> Result<bool> {
        self.stack.kill_owned(Self::NAME).await
    }

    pub async fn restart(self) -> Result<u32> {
        self.stop().await?;
        let outcome = self.start().await?;
        self.wait_ready(KAFKA_READY_TIMEOUT).await?;
        Ok(outcome.pid())
    }
}

/// What Kafka's log is marked with at each start ([`Stack::mark_log`]):
/// "===== ordermesh runner: starting kafka (unix time …) =====".
pub(crate) const KAFKA_START_MARK: &str = "starting";

/// The port of `--advertised-listener-url tcp://host:port` in a Tansu
/// command line.
fn advertised_port(args: &[String]) -> Option<u16> {
    let url = args.iter().skip_while(|arg| *arg != "--advertised-listener-url").nth(1)?;
    url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
}

/// Creates `dir` (and parents) owned by the cluster owner with mode 0700:
/// private to that user, which is what PostgreSQL expects of its own areas.
fn create_owned_dir(dir: &Path, owner: &ClusterOwner) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    owner.chown(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).with_context(|| format!("chmod 700 {}", dir.display()))
}

/// `/var/tmp/ordermesh-<hash of repo path>/<stack>/pg`
fn fallback_area(repo_root: &Path, stack: &str) -> PathBuf {
    PathBuf::from("/var/tmp").join(format!("ordermesh-{}", short_hash(repo_root))).join(stack).join("pg")
}

/// A short, stable (FNV-1a) hash of a path, for per-checkout directory names.
pub fn short_hash(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let hash =
        canonical.as_os_str().as_bytes().iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

/// `"name"` with embedded quotes doubled.
/// Creates database `name` on the server `admin` is connected to, unless it
/// exists. Names are quoted, so SQL keywords such as `order` work; somebody
/// else creating it in between is what we wanted, not an error.
pub async fn create_database_on(admin: &mut sqlx::PgConnection, name: &str) -> Result<()> {
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut *admin)
        .await
        .with_context(|| format!("checking whether database {name:?} exists"))?;
    if exists.is_some() {
        return Ok(());
    }
    let statement = format!("CREATE DATABASE {}", quote_identifier(name));
    match sqlx::raw_sql(&statement).execute(&mut *admin).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => Ok(()),
        Err(error) => Err(error).with_context(|| format!("creating database {name:?}")),
    }
}

fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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

fn describe_output(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    format!("{} (stdout: {}) (stderr: {})", output.status, stdout.trim(), stderr.trim())
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
    fn a_restarted_broker_keeps_the_port_it_advertised() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let tansu = args(&[
            "tansu",
            "broker",
            "--listener-url",
            "tcp://127.0.0.1:23092",
            "--advertised-listener-url",
            "tcp://127.0.0.1:40123",
        ]);
        assert_eq!(advertised_port(&tansu), Some(40123));
        assert_eq!(advertised_port(&args(&["tansu", "broker"])), None);
    }

    #[test]
    fn only_the_named_stacks_are_named() {
        assert!(Stack::chaos("/repo").is_named());
        assert_eq!(Stack::named("test", "/repo").map(|s| s.ports().kafka), Some(22092));
        assert!(Stack::named("prod", "/repo").is_none());
        assert!(!Stack::test_kafka_behind_proxy("/repo").is_named());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier("order"), "\"order\"");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn components_parse_from_their_names() {
        for component in Component::ALL {
            assert_eq!(component.name().parse::<Component>().unwrap(), component);
        }
        assert!("redis".parse::<Component>().is_err());
    }

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(short_hash(Path::new("/nonexistent/x")), short_hash(Path::new("/nonexistent/x")));
        assert_ne!(short_hash(Path::new("/nonexistent/x")), short_hash(Path::new("/nonexistent/y")));
        assert_eq!(short_hash(Path::new("/nonexistent/x")).len(), 12);
    }
}

//! A Tansu broker of the benchmark's own, on one storage engine, on a port
//! of its own beside the test stack (whose Kafka the other benchmarks use):
//! started, SIGKILLed and restarted on the same storage, stopped.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Child;

/// Where Tansu 0.6's PostgreSQL engine finds its tables: the engine does not
/// create them, and the crate does not ship them (they are
/// `etc/initdb.d/010-schema.sql` of the tansu repository at v0.6.0).
pub const POSTGRES_SCHEMA_ENV: &str = "TANSU_POSTGRES_SCHEMA";

/// The database the PostgreSQL engine stores in, on the test stack's server.
const POSTGRES_DATABASE: &str = "bench_tansu_storage";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// SQLite through libSQL, one file (the local runner's engine).
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
    /// Objects in memory (`memory://`): the speed bound, not durable.
    Memory,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
            Engine::Memory => "memory",
        }
    }

    /// Whether an acknowledged record is meant to survive the broker's death.
    pub fn durable(self) -> bool {
        self != Engine::Memory
    }
}

/// A running broker and what it stores in.
pub struct TansuBroker {
    engine: Engine,
    child: Child,
    port: u16,
    dir: PathBuf,
    storage: String,
    postgres_admin_url: Option<String>,
}

impl TansuBroker {
    /// Starts a broker on `engine` with empty storage. `Ok(Err(why))` when
    /// this machine cannot run that engine (not built into the installed
    /// Tansu, or its schema is missing).
    pub async fn start(stack: &xtask::Stack, engine: Engine) -> Result<Result<TansuBroker, String>> {
        let tansu = xtask::tools::ensure_tansu().await?;
        let dir = stack.dir().join(format!("bench-tansu-{}", engine.name()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let (storage, postgres_admin_url) = match engine {
            // Tansu resolves sqlite:// paths relative to its working directory.
            Engine::Sqlite => ("sqlite://tansu.db".to_owned(), None),
            Engine::Memory => ("memory://tansu/".to_owned(), None),
            Engine::Postgres => {
                let Some(schema) = std::env::var_os(POSTGRES_SCHEMA_ENV).map(PathBuf::from) else {
                    return Ok(Err(format!(
                        "Tansu 0.6's PostgreSQL engine needs its tables created first, from a file the crate does not ship \
                         (etc/initdb.d/010-schema.sql of the tansu repository at v0.6.0); set {POSTGRES_SCHEMA_ENV} to it"
                    )));
                };
                stack.drop_database(POSTGRES_DATABASE).await?;
                stack.create_database(POSTGRES_DATABASE).await?;
                let url = stack.postgres_url(POSTGRES_DATABASE);
                apply_schema(&url, &schema).await?;
                (url.clone(), Some(url))
            }
        };
        let port = free_port()?;
        let mut broker =
            TansuBroker { engine, child: spawn(&tansu, &dir, port, &storage)?, port, dir, storage, postgres_admin_url };
        match broker.wait_ready(Duration::from_secs(60)).await {
            Ok(()) => Ok(Ok(broker)),
            Err(error) => {
                broker.stop().await;
                let log = xtask::process::log_tail(&broker.log_path(), 5);
                if log.contains("FeatureNotEnabled") {
                    Ok(Err(format!("the installed Tansu was built without this engine: {}", log.trim())))
                } else {
                    Err(error)
                        .with_context(|| format!("Tansu on {} did not start; its log ends:\n{log}", engine.name()))
                }
            }
        }
    }

    /// `host:port` for Kafka clients.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("tansu.log")
    }

    /// SIGKILL (no chance to flush anything), then a new broker on the same
    /// storage and port.
    pub async fn kill_and_restart(mut self) -> Result<TansuBroker> {
        self.child.start_kill().context("killing Tansu")?;
        self.child.wait().await.context("waiting for Tansu to die")?;
        xtask::process::wait_port_free(self.port, Duration::from_secs(30), "Tansu").await?;
        let tansu = xtask::tools::ensure_tansu().await?;
        self.child = spawn(&tansu, &self.dir, self.port, &self.storage)?;
        self.wait_ready(Duration::from_secs(60)).await?;
        Ok(self)
    }

    /// Bytes the engine holds on disk, where that can be told.
    pub async fn storage_bytes(&self) -> Option<u64> {
        match self.engine {
            Engine::Sqlite => std::fs::read_dir(&self.dir)
                .ok()?
                .filter_map(|entry| entry.ok())
                .filter(|entry| entry.file_name().to_string_lossy().starts_with("tansu.db"))
                .map(|entry| entry.metadata().map_or(0, |m| m.len()))
                .sum::<u64>()
                .into(),
            Engine::Postgres => {
                let pool = sqlx::PgPool::connect(self.postgres_admin_url.as_deref()?).await.ok()?;
                let bytes: i64 =
                    sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&pool).await.ok()?;
                u64::try_from(bytes).ok()
            }
            Engine::Memory => None,
        }
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("Tansu exited ({status})");
            }
            let brokers = self.brokers();
            let probe = tokio::task::spawn_blocking(move || metadata_answers(&brokers)).await?;
            if probe.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return probe.context("Tansu did not answer a metadata request");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn spawn(tansu: &Path, dir: &Path, port: u16, storage: &str) -> Result<Child> {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .context("opening Tansu's log")?;
    let mut command = xtask::infra::kafka::tansu_command(tansu, dir);
    command
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", storage])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    command.spawn().context("starting Tansu")
}

fn metadata_answers(brokers: &str) -> Result<()> {
    use rdkafka::producer::{BaseProducer, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    producer.client().fetch_metadata(None, Duration::from_secs(2))?;
    Ok(())
}

/// Runs the schema file as one script (it holds its own BEGIN and COMMIT).
async fn apply_schema(url: &str, schema: &Path) -> Result<()> {
    let sql = std::fs::read_to_string(schema).with_context(|| format!("reading {}", schema.display()))?;
    let pool = sqlx::PgPool::connect(url).await?;
    sqlx::raw_sql(&sql).execute(&pool).await.with_context(|| format!("applying {}", schema.display()))?;
    pool.close().await;
    Ok(())
}

/// A port nobody listens on now (the broker binds it a moment later).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

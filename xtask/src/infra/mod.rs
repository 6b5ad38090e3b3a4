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

pub mod kafka;
mod postgres;
mod rabbitmq;
mod stack;

use std::{fmt, path::Path, process::Output, str::FromStr, time::Duration};

use anyhow::{Result, anyhow, bail};

pub(crate) use kafka::KAFKA_START_MARK;
pub use kafka::Kafka;
pub use postgres::{Postgres, create_database_on};
pub use rabbitmq::{QUORUM_REPAIRS_LOG, RabbitMq};
pub use stack::{ServiceRoutes, Stack, StackPorts, amqp_url_at, percent_encode, postgres_url_at};

use crate::tools;

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
fn describe_output(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    format!("{} (stdout: {}) (stderr: {})", output.status, stdout.trim(), stderr.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

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

//! The console's settings, read once at start from the environment, with
//! defaults that point at the local runner's development stack.

use contracts::Topology;
use service_kit::config::Secret;
use service_kit::{ConfigError, env_or, env_parse};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The six services, in the order an order travels them.
pub const SERVICES: [&str; 6] = ["order", "stock", "payment", "shipping", "email", "loyalty"];
/// The infrastructure the map shows beside them.
pub const INFRASTRUCTURE: [&str; 3] = ["postgres", "rabbitmq", "kafka"];

#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// `HTTP_ADDR` (default 127.0.0.1:8090).
    pub http_addr: SocketAddr,
    /// `DATABASE_URL`: the console's own database (spans).
    pub database_url: Secret,
    /// `AMQP_URL`, `KAFKA_BROKERS`: read for queue depths and consumer lag.
    pub amqp_url: Secret,
    pub kafka_brokers: String,
    /// `MESSAGING_NAMESPACE`: the services' prefix of queues, topics and groups.
    pub messaging_namespace: String,
    /// `<SERVICE>_URL` for each of the six (default the dev stack's ports).
    pub service_urls: Vec<(&'static str, String)>,
    /// `POSTGRES_ADDR`: the PostgreSQL server the map shows (default: the
    /// host and port of `DATABASE_URL`).
    pub postgres_addr: String,
    /// `CONSOLE_RETENTION_SECS`: spans older than this are deleted.
    pub retention_max_age: Duration,
    /// `CONSOLE_RETENTION_MAX_SPANS`: beyond this many, the oldest go.
    pub retention_max_spans: i64,
    /// `CONSOLE_SAMPLE_INTERVAL_MS`: how often the system map is read.
    pub sample_interval: Duration,
    /// `CONSOLE_RUNNER`: the local runner's binary (`xtask`) that owns the
    /// processes, and `CONSOLE_STACK` its stack; unset, the console does
    /// not control processes (a deployment it does not own).
    pub runner: Option<RunnerConfig>,
    /// `ADMIN_TOKEN`: bearer token the actions (kill, stop, restart,
    /// placing orders) need when set.
    pub admin_token: Option<Secret>,
    /// `SHUTDOWN_DEADLINE_SECS`
    pub shutdown_deadline: Duration,
    /// `HTTP_BODY_LIMIT_BYTES`: the largest OTLP export accepted.
    pub http_body_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerConfig {
    pub program: PathBuf,
    pub stack: String,
}

impl ConsoleConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let database_url = env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:21432/console");
        let service_urls = SERVICES
            .iter()
            .zip(8080u16..)
            .map(|(service, port)| {
                let variable = format!("{}_URL", service.to_ascii_uppercase());
                (*service, env_or(&variable, &format!("http://127.0.0.1:{port}")).trim_end_matches('/').to_owned())
            })
            .collect();
        let runner = std::env::var("CONSOLE_RUNNER")
            .ok()
            .filter(|r| !r.trim().is_empty())
            .map(|program| RunnerConfig { program: PathBuf::from(program), stack: env_or("CONSOLE_STACK", "dev") });
        let retention_max_spans = env_parse("CONSOLE_RETENTION_MAX_SPANS", 500_000i64)?;
        if retention_max_spans < 1 {
            return Err(ConfigError {
                name: "CONSOLE_RETENTION_MAX_SPANS".into(),
                value: retention_max_spans.to_string(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            http_addr: env_parse("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8090)))?,
            postgres_addr: env_or("POSTGRES_ADDR", &server_address(&database_url)),
            database_url: Secret::new(database_url),
            amqp_url: Secret::new(env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:21672/%2f")),
            kafka_brokers: env_or("KAFKA_BROKERS", "127.0.0.1:21092"),
            messaging_namespace: env_or("MESSAGING_NAMESPACE", ""),
            service_urls,
            retention_max_age: Duration::from_secs(env_parse("CONSOLE_RETENTION_SECS", 6 * 3600)?),
            retention_max_spans,
            sample_interval: Duration::from_millis(env_parse("CONSOLE_SAMPLE_INTERVAL_MS", 1_000u64)?.max(100)),
            runner,
            admin_token: std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty()).map(Secret::new),
            shutdown_deadline: Duration::from_secs(env_parse("SHUTDOWN_DEADLINE_SECS", 10)?),
            http_body_limit: env_parse("HTTP_BODY_LIMIT_BYTES", 8 << 20)?,
        })
    }

    pub fn topology(&self) -> Topology {
        Topology::new(self.messaging_namespace.clone())
    }

    pub fn service_url(&self, service: &str) -> Option<&str> {
        self.service_urls.iter().find(|(name, _)| *name == service).map(|(_, url)| url.as_str())
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL (5432 if none given).
fn server_address(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_address_is_read_off_the_database_url_without_credentials() {
        assert_eq!(server_address("postgres://postgres:pw@127.0.0.1:21432/console"), "127.0.0.1:21432");
        assert_eq!(server_address("postgres://db/console?sslmode=disable"), "db:5432");
    }
}

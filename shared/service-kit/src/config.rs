//! Configuration from environment variables, parsed once at start, with
//! defaults that work against the local runner's development stack.

use contracts::Topology;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// The variable's value, or `default` when unset or empty.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

/// The variable parsed as `T`, or `default` when unset; a value that does not
/// parse is an error naming the variable, never silently replaced.
pub fn env_parse<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name).ok().filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|e: T::Err| ConfigError {
            name: name.to_owned(),
            value,
            reason: e.to_string(),
        }),
    }
}

/// `value` if it is at least `min`: a setting below it cannot work, for `why`.
fn at_least<T: PartialOrd + std::fmt::Display>(name: &str, value: T, min: T, why: &str) -> Result<T, ConfigError> {
    if value >= min {
        return Ok(value);
    }
    Err(ConfigError {
        name: name.to_owned(),
        value: value.to_string(),
        reason: format!("must be at least {min}: {why}"),
    })
}

/// The shortest inbox window accepted: a redelivery after its inbox row is
/// gone is applied a second time, and redeliveries (a consumer down over a
/// night, a dead letter replayed the next morning) take hours.
const MIN_INBOX_RETENTION_SECS: u64 = 24 * 3600;

/// Kept in `messaging`, the lowest crate holding secrets; named here too,
/// where the services' configuration uses it.
pub use messaging::secret::Secret;

/// Settings every service reads.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// `HTTP_ADDR`
    pub http_addr: SocketAddr,
    /// `DATABASE_URL`
    pub database_url: Secret,
    /// `DATABASE_MAX_CONNECTIONS`
    pub database_max_connections: u32,
    /// `AMQP_URL`
    pub amqp_url: Secret,
    /// `KAFKA_BROKERS`
    pub kafka_brokers: String,
    /// `MESSAGING_NAMESPACE`: prefix of every queue, topic and group.
    pub messaging_namespace: String,
    /// `SHUTDOWN_DEADLINE_SECS`: how long SIGTERM waits for in-flight work.
    pub shutdown_deadline: Duration,
    /// `HTTP_REQUEST_TIMEOUT_SECS`
    pub http_request_timeout: Duration,
    /// `HTTP_BODY_LIMIT_BYTES`
    pub http_body_limit: usize,
    /// `ADMIN_TOKEN`: bearer token of the admin routes; none disables them.
    pub admin_token: Option<Secret>,
    /// `KAFKA_GROUP_INSTANCE_ID`: static consumer-group membership, unique per
    /// replica; default `<service>-<hostname>`.
    pub kafka_group_instance_id: String,
    /// `KAFKA_ASSIGNMENT`: `group` (consumer groups, default) or
    /// `all-partitions` (single replica; the local runner's choice for Tansu).
    pub kafka_assignment: messaging::kafka_consumer::Assignment,
    /// `KAFKA_CONSUMER_REPLACE_AFTER_SECS`: a Kafka consumer that hears
    /// nothing but errors this long is replaced by a new one; 0 never
    /// (only to show why it must be).
    pub kafka_consumer_replace_after: Option<Duration>,
    /// `KAFKA_DEBUG`: librdkafka debug contexts, empty for none.
    pub kafka_debug: Option<String>,
    /// `KAFKA_FETCH_WAIT_MAX_MS`: longest a consumer's fetch waits at the
    /// broker for records (librdkafka's `fetch.wait.max.ms`, default 500).
    pub kafka_fetch_wait_max: Duration,
    /// `PROCESSING_DELAY_MS`: an artificial processing time per message and
    /// per synchronous call (the coupling lesson); 0, the default, none.
    pub processing_delay: Duration,
    /// `OUTBOX_RELAY`: `polling` (default) or `log-tailing`.
    pub outbox_relay: messaging::log_tailing::RelayMode,
    /// `OUTBOX_SLOT`: the log-tailing relay's replication slot; default
    /// derived from the database name (slots are per server).
    pub outbox_slot: String,
    /// `OUTBOX_RETENTION_SECS`, `INBOX_RETENTION_SECS`.
    pub retention: messaging::retention::RetentionConfig,
}

impl CommonConfig {
    /// Reads the common variables; `default_port` and `database` make the
    /// defaults point at this service's place in the development stack.
    pub fn from_env(default_port: u16, database: &str) -> Result<Self, ConfigError> {
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|| "localhost".to_owned());
        Ok(Self {
            http_addr: env_parse("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], default_port)))?,
            database_url: Secret::new(env_or(
                "DATABASE_URL",
                &format!("postgres://postgres@127.0.0.1:21432/{database}"),
            )),
            database_max_connections: at_least(
                "DATABASE_MAX_CONNECTIONS",
                env_parse("DATABASE_MAX_CONNECTIONS", 10)?,
                1,
                "every database call needs a connection",
            )?,
            amqp_url: Secret::new(env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:21672/%2f")),
            kafka_brokers: env_or("KAFKA_BROKERS", "127.0.0.1:21092"),
            messaging_namespace: env_or("MESSAGING_NAMESPACE", ""),
            shutdown_deadline: Duration::from_secs(env_parse("SHUTDOWN_DEADLINE_SECS", 20)?),
            http_request_timeout: Duration::from_secs(env_parse("HTTP_REQUEST_TIMEOUT_SECS", 10)?),
            http_body_limit: env_parse("HTTP_BODY_LIMIT_BYTES", 64 * 1024)?,
            admin_token: std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty()).map(Secret::new),
            kafka_group_instance_id: env_or("KAFKA_GROUP_INSTANCE_ID", &format!("{database}-{hostname}")),
            kafka_assignment: env_parse("KAFKA_ASSIGNMENT", messaging::kafka_consumer::Assignment::Group)?,
            kafka_consumer_replace_after: match env_parse(
                "KAFKA_CONSUMER_REPLACE_AFTER_SECS",
                messaging::kafka_consumer::DEFAULT_REPLACE_AFTER.as_secs(),
            )? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            kafka_debug: std::env::var("KAFKA_DEBUG").ok().filter(|d| !d.trim().is_empty()),
            kafka_fetch_wait_max: Duration::from_millis(at_least(
                "KAFKA_FETCH_WAIT_MAX_MS",
                env_parse(
                    "KAFKA_FETCH_WAIT_MAX_MS",
                    messaging::kafka_consumer::DEFAULT_FETCH_WAIT_MAX.as_millis() as u64,
                )?,
                1,
                "a fetch that never waits would spin against the broker",
            )?),
            processing_delay: Duration::from_millis(env_parse("PROCESSING_DELAY_MS", 0)?),
            outbox_relay: env_parse("OUTBOX_RELAY", messaging::log_tailing::RelayMode::Polling)?,
            outbox_slot: env_or("OUTBOX_SLOT", ""),
            retention: messaging::retention::RetentionConfig {
                sent_outbox: Duration::from_secs(env_parse("OUTBOX_RETENTION_SECS", 24 * 3600)?),
                inbox: Duration::from_secs(at_least(
                    "INBOX_RETENTION_SECS",
                    env_parse("INBOX_RETENTION_SECS", 14 * 24 * 3600)?,
                    MIN_INBOX_RETENTION_SECS,
                    "deduplication forgets a message once its inbox row is deleted",
                )?),
                ..messaging::retention::RetentionConfig::default()
            },
        })
    }

    pub fn topology(&self) -> Topology {
        Topology::new(self.messaging_namespace.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_variables_take_defaults_and_secrets_stay_hidden() {
        assert_eq!(env_parse::<u32>("SERVICE_KIT_TEST_UNSET_VAR", 7).unwrap(), 7);
        assert!(format!("{:?}", Secret::new("hunter2")).contains("***"));
    }

    #[test]
    fn a_setting_below_its_floor_is_refused_with_the_reason() {
        let error = at_least("INBOX_RETENTION_SECS", 60, MIN_INBOX_RETENTION_SECS, "dedup").unwrap_err();
        assert!(error.to_string().contains("INBOX_RETENTION_SECS") && error.to_string().contains("86400"), "{error}");
        assert_eq!(at_least("X", 3, 2, "why").unwrap(), 3);
    }
}

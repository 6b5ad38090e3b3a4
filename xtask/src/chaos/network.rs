//! The chaos run's network: one [`ChaosProxy`] in front of each of the
//! stack's PostgreSQL, RabbitMQ and Kafka, which the services reach only
//! through it ([`Stack::behind_proxies`]), so that a planned partition can
//! cut a link silently: no connection closed, no error returned, every
//! byte dropped, and the connections that lived through it dead for good.
//!
//! The proxies live in the runner's process: the services of a run with
//! partitions cannot outlive it (see [`NetworkLinks::release`]).

use crate::infra::{ServiceRoutes, Stack};
use anyhow::{Context, Result, anyhow};
use chaos_proxy::ChaosProxy;
use std::net::SocketAddr;
use std::time::Duration;

/// How long after a client left a dead connection the server learns it, as
/// TCP keepalive would tell it: PostgreSQL holds a backend (and a
/// connection slot) for every stranded session until then.
pub const SERVER_KEEPALIVE: Duration = Duration::from_secs(30);

pub struct NetworkLinks {
    postgres: ChaosProxy,
    rabbitmq: ChaosProxy,
    kafka: ChaosProxy,
}

impl NetworkLinks {
    /// Proxies in front of `stack`'s infrastructure, healthy.
    pub async fn start(stack: &Stack) -> Result<Self> {
        let ports = stack.ports();
        let proxy = |port: u16| async move {
            ChaosProxy::with_server_keepalive(SocketAddr::from(([127, 0, 0, 1], port)), SERVER_KEEPALIVE)
                .await
                .with_context(|| format!("starting a proxy in front of port {port}"))
        };
        Ok(Self {
            postgres: proxy(ports.postgres).await?,
            rabbitmq: proxy(ports.amqp).await?,
            kafka: proxy(ports.kafka).await?,
        })
    }

    /// Where the services must be told the infrastructure is.
    pub fn routes(&self) -> ServiceRoutes {
        ServiceRoutes { postgres: self.postgres.port(), amqp: self.rabbitmq.port(), kafka: self.kafka.port() }
    }

    /// The proxy of `link` (one of [`super::plan::LINKS`]).
    pub fn link(&self, link: &str) -> Result<&ChaosProxy> {
        match link {
            "postgres" => Ok(&self.postgres),
            "rabbitmq" => Ok(&self.rabbitmq),
            "kafka" => Ok(&self.kafka),
            other => Err(anyhow!("no link {other:?} to partition (expected postgres, rabbitmq or kafka)")),
        }
    }

    /// Heals every link (a run never ends partitioned, even if a lane failed).
    pub fn heal_all(&self) {
        for proxy in [&self.postgres, &self.rabbitmq, &self.kafka] {
            proxy.heal();
        }
    }

    /// The services and Kafka of `routed` reach each other through these
    /// proxies, which end with this process: stop the services, and start
    /// Kafka again as `plain` (advertising its own port), so the stack is
    /// left as the runner would start it, bar the services.
    pub async fn release(self, routed: &Stack, plain: &Stack) -> Result<()> {
        for spec in &crate::services::SERVICES {
            routed.service(spec).kill().await?;
        }
        plain.kafka().restart().await.context("restarting Kafka to advertise its own port")?;
        drop(self);
        Ok(())
    }
}

//! PostgreSQL, RabbitMQ and Kafka in Docker containers, for tests that should
//! run against throw-away infrastructure instead of the local runner's stacks.
//!
//! **Everything here is behind the cargo feature `docker`, off by default.**
//! Without it this crate is empty (only [`ENABLED`], which is `false`) and
//! depends on nothing, so the ordinary workspace build needs neither Docker
//! nor the testcontainers dependency tree. With it:
//!
//! ```text
//! cargo test -p test-containers --features docker   # needs a Docker engine
//! ```
//!
//! The fixtures hand out connection details in the same shape as the local
//! runner's `xtask::Stack`: [`Containers::postgres_url`], [`Containers::amqp_url`],
//! [`Containers::kafka_brokers`] and [`Containers::create_database`], so code
//! written against one works against the other.
//!
//! A container lives as long as its handle: keep the [`Containers`] (or the
//! single fixture) alive for the whole test; dropping it removes the container.

/// Whether this build has the Docker fixtures (`--features docker`).
pub const ENABLED: bool = cfg!(feature = "docker");

#[cfg(feature = "docker")]
mod docker;

#[cfg(feature = "docker")]
pub use docker::{Containers, KafkaContainer, PostgresContainer, RabbitMqContainer};

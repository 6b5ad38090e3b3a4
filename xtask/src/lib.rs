//! The local runner: starts PostgreSQL, RabbitMQ and a Kafka-compatible
//! broker (Tansu) as processes it owns, plus the six services, for
//! development (`cargo xtask …`) and for the system tests (as a library).
//!
//! - [`tools`]: finding / installing the external programs
//! - [`infra`]: [`Stack`]s and their components ([`infra::Postgres`], [`infra::RabbitMq`], [`infra::Kafka`])
//! - [`kafka_supervisor`], [`kafka_probe`]: restarting a wedged Kafka, as a liveness probe would
//! - [`services`]: the service table and service processes
//! - [`commands`]: what the CLI subcommands do
//! - [`lesson`]: the course's lessons measured on the real system
//! - [`process`]: detached processes, pid files, signals
//! - [`sqlx_prepare`]: the compile-checked queries' offline data (`.sqlx/`)

pub mod chaos;
pub mod commands;
pub mod infra;
pub mod kafka_probe;
pub mod kafka_supervisor;
pub mod lesson;
pub mod process;
pub mod schemathesis;
pub mod services;
pub mod sqlx_prepare;
pub mod tools;

use std::path::PathBuf;

pub use infra::{Component, ServiceRoutes, Stack, StackPorts, StartOutcome};
/// Re-exported so callers of [`Service::signal`] need no `nix` dependency.
pub use nix::sys::signal::Signal;
pub use services::{SERVICES, Service, ServiceSpec};

/// The workspace root: `ORDERMESH_REPO_ROOT` if set, else the parent of this crate.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("ORDERMESH_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => {
            let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
        }
    }
}

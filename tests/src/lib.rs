//! Fixtures for the system tests: the test infrastructure stack (PostgreSQL,
//! RabbitMQ, Kafka owned by the local runner), and whole systems of service
//! processes with their own databases, queues and topics, so tests run side
//! by side without sharing state.
//!
//! Tests fail (never skip) when the infrastructure cannot be started.

#![allow(clippy::unwrap_used)]

pub mod brokers;
pub mod browser;
pub mod checker;
pub mod console;
pub mod effects;
pub mod flow;
pub mod http_contract;
pub mod message_contract;
pub mod otlp;
pub mod outbox_fixture;
pub mod schema_check;
pub mod system;

pub use system::{Routes, TestSystem, order_request};

use std::sync::OnceLock;
use tokio::sync::OnceCell;
use xtask::Stack;

/// The `test` stack of the local runner, started on first use.
pub async fn test_stack() -> &'static Stack {
    static STACK: OnceCell<Stack> = OnceCell::const_new();
    STACK
        .get_or_init(|| async {
            let stack = Stack::test(xtask::repo_root());
            stack
                .start_infra()
                .await
                .unwrap_or_else(|e| panic!("the test infrastructure did not start (run `cargo xtask test`): {e:#}"));
            stack
        })
        .await
}

/// The `chaos` stack of the local runner (its own PostgreSQL, RabbitMQ and
/// Kafka), for tests that kill infrastructure; started on first use. Such
/// tests must not run two at a time and must leave it running.
pub async fn chaos_stack() -> &'static Stack {
    static STACK: OnceCell<Stack> = OnceCell::const_new();
    STACK
        .get_or_init(|| async {
            let stack = Stack::chaos(xtask::repo_root());
            stack.start_infra().await.unwrap_or_else(|e| panic!("the chaos infrastructure did not start: {e:#}"));
            stack
        })
        .await
}

/// A short unique name for one test's databases, queues and topics.
pub fn unique_namespace(test: &str) -> String {
    let short: String = test.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    format!("t{}{:06x}", short.to_ascii_lowercase(), rand::random::<u32>() & 0xff_ffff)
}

/// Where this test's service logs go: `target/test-logs/<namespace>/`.
pub fn log_dir(namespace: &str) -> std::path::PathBuf {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| xtask::services::target_dir(&xtask::repo_root()).join("test-logs")).join(namespace)
}

/// A pool on a fresh database of the test stack.
pub async fn fresh_database(stack: &Stack, name: &str) -> sqlx::PgPool {
    stack.create_database(name).await.unwrap_or_else(|e| panic!("creating database {name}: {e:#}"));
    sqlx::postgres::PgPoolOptions::new().max_connections(10).connect(&stack.postgres_url(name)).await.unwrap()
}

//! Fixtures for the tests that run a service's code against a real database:
//! a throwaway database on the test stack's PostgreSQL (`TEST_POSTGRES_URL`,
//! which `cargo xtask test` sets; default `postgres://postgres@127.0.0.1:22432`,
//! the test stack's port) migrated with the service's
//! real migrations, the messages a handler receives, and a way to handle one
//! as the consumer would.
//!
//! PostgreSQL being unreachable fails the test: these fixtures never skip.

use contracts::{MessageContract, Topology};
use messaging::secret::{Secret, redact_url};
use messaging::{IncomingMessage, MessageFactory, MessageHandler, MessageSource};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// The server used when `TEST_POSTGRES_URL` is not set: the one `cargo
/// xtask test` (or `cargo xtask --stack test infra up`) starts.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:22432";

/// The PostgreSQL server the tests create their databases on, without a
/// database name.
pub fn server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned())
}

/// One connection to the server's `postgres` database, for creating and
/// dropping databases. Panics when the server does not answer within 5 s.
pub async fn admin_pool() -> PgPool {
    let server = server_url();
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} must be reachable for this test: {e}", redact_url(&server)))
}

/// A uniquely named, migrated database, dropped by [`drop_it`](Self::drop_it)
/// at the end of a test, or when it goes out of scope (a failed test).
#[derive(Debug)]
pub struct ThrowawayDatabase {
    name: String,
    url: Secret,
    pool: PgPool,
    dropped: bool,
}

impl ThrowawayDatabase {
    /// Creates `<prefix>_<fresh id>` and applies the messaging tables and
    /// `migrator` (`messaging::migrations::run`). Panics when PostgreSQL is
    /// unreachable or a step fails.
    pub async fn create(prefix: &str, mut migrator: Migrator) -> Self {
        let name = format!("{prefix}_{}", Uuid::now_v7().simple());
        let admin = admin_pool().await;
        admin
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        admin.close().await;
        let url = format!("{}/{name}", server_url());
        let pool = PgPool::connect(&url).await.unwrap_or_else(|e| panic!("connecting to {name}: {e}"));
        // Dropped if migrating fails.
        let database = Self { name, url: Secret::new(url), pool, dropped: false };
        messaging::migrations::run(&database.pool, &mut migrator)
            .await
            .unwrap_or_else(|e| panic!("migrating {}: {e}", database.name));
        database
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL, for code that connects by itself.
    pub fn url(&self) -> &str {
        self.url.expose()
    }

    /// The single `int8` that `sql` selects.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap_or_else(|e| panic!("{e}\n{sql}"))
    }

    /// Handles `message` as the consumer would: in one transaction,
    /// committed. Panics if the handler fails.
    pub async fn handle(&self, handler: &impl MessageHandler, message: &IncomingMessage) {
        let mut tx = self.pool.begin().await.expect("begin");
        handler.handle(&mut tx, message).await.expect("handled");
        tx.commit().await.expect("commit");
    }

    /// Handles `message` as the consumer pipeline does: inbox row first, the
    /// effect only if the message is new (`false` for a duplicate or a stale
    /// event), one committed transaction.
    pub async fn deliver(&self, consumer: &str, handler: &impl MessageHandler, message: &IncomingMessage) -> bool {
        let mut tx = self.pool.begin().await.expect("begin");
        let outcome = messaging::Inbox::new(consumer).record(&mut tx, &message.envelope).await.expect("inbox");
        let new = outcome == messaging::InboxOutcome::New;
        if new {
            handler.handle(&mut tx, message).await.expect("handled");
        }
        tx.commit().await.expect("commit");
        new
    }

    /// Closes the pool and drops the database.
    pub async fn drop_it(mut self) {
        self.dropped = true;
        self.pool.close().await;
        admin_pool().await.execute(drop_statement(&self.name).as_str()).await.expect("drop database");
    }
}

impl Drop for ThrowawayDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let name = std::mem::take(&mut self.name);
        // Async work cannot run in drop: a thread with its own runtime drops
        // the database, terminating the pool's connections.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Err(e) = admin_pool().await.execute(drop_statement(&name).as_str()).await {
                    eprintln!("could not drop {name}: {e}");
                }
            });
        });
        let _ = dropped.join();
    }
}

fn drop_statement(name: &str) -> String {
    format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#)
}

/// `event` as consumer group `group` receives it from `topic`: published by
/// `producer` as the `sequence`-th event of `aggregate_id`, with a fresh
/// message id each time.
pub fn incoming_event<M: MessageContract>(
    producer: &str,
    topic: &str,
    group: &str,
    aggregate_id: &str,
    sequence: i64,
    event: &M,
) -> IncomingMessage {
    let published = MessageFactory::new(producer).event(topic, aggregate_id, sequence, None, event).expect("event");
    IncomingMessage {
        envelope: published.envelope,
        payload: serde_json::to_vec(event).expect("payload"),
        source: MessageSource::Topic { topic: topic.to_owned(), group: group.to_owned(), partition: 0, offset: 0 },
    }
}

/// `command` as it arrives on `queue`, first delivery: sent by `producer`
/// with `correlation_id` and the return address `reply_to`, with a fresh
/// message id each time.
pub fn incoming_command<M: MessageContract>(
    producer: &str,
    queue: &str,
    correlation_id: &str,
    reply_to: &str,
    command: &M,
) -> IncomingMessage {
    let request =
        MessageFactory::new(producer).command(queue, correlation_id, reply_to, None, command).expect("command");
    IncomingMessage {
        envelope: request.envelope,
        payload: serde_json::to_vec(command).expect("payload"),
        source: MessageSource::Queue { queue: queue.to_owned(), redelivered: false },
    }
}

/// [`incoming_event`] from the order service on the default orders topic, the
/// `sequence`-th of order `order_id`, as consumer group `group` receives it.
pub fn order_event<M: MessageContract>(group: &str, order_id: Uuid, sequence: i64, event: &M) -> IncomingMessage {
    incoming_event("order", &Topology::default().orders_topic(), group, &order_id.to_string(), sequence, event)
}

/// [`incoming_command`] from the order service about order `order_id` on `queue`, with
/// the order service's default reply queue as its return address.
pub fn order_command<M: MessageContract>(queue: &str, order_id: Uuid, command: &M) -> IncomingMessage {
    incoming_command("order", queue, &order_id.to_string(), &Topology::default().order_replies(), command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_database_password_does_not_print() {
        let url = "postgres://postgres:hunter2@127.0.0.1:1/t_none";
        let pool = PgPoolOptions::new().connect_lazy(url).expect("a valid URL");
        // Marked dropped: there is no database to drop.
        let database = ThrowawayDatabase { name: "t_none".to_owned(), url: Secret::new(url), pool, dropped: true };
        assert!(!format!("{database:?}").contains("hunter2"), "{database:?}");
    }
}

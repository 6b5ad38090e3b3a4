//! The console run in this process on the test stack, with a database of
//! its own: for its API tests and the benchmark's console scenario.

use crate::{test_stack, unique_namespace};
use anyhow::{Result, bail};
use console::config::ConsoleConfig;
use service_kit::config::Secret;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct InProcessConsole {
    pub url: String,
    pub database_url: String,
    stop: CancellationToken,
}

impl InProcessConsole {
    /// Starts the console for `test` (its brokers the test stack's, no
    /// runner), with `configure` applied last, and waits until it is ready.
    pub async fn start(test: &str, configure: impl FnOnce(&mut ConsoleConfig)) -> Result<Self> {
        let stack = test_stack().await;
        let database = format!("{}_console", unique_namespace(test));
        stack.create_database(&database).await?;
        let database_url = stack.postgres_url(&database);
        let mut config = ConsoleConfig::from_env()?;
        config.database_url = Secret::new(database_url.clone());
        config.amqp_url = Secret::new(stack.amqp_url());
        config.kafka_brokers = stack.kafka_brokers();
        config.runner = None;
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        tokio::spawn(console::run(config, listener, stop.clone()));
        let ready = format!("{url}/health/ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(&ready).await.map(|r| r.status().as_u16()).ok() != Some(200) {
            if Instant::now() > deadline {
                bail!("the console was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { url, database_url, stop })
    }

    /// Spans in its store now.
    pub async fn stored_spans(&self) -> Result<usize> {
        let pool = sqlx::PgPool::connect(&self.database_url).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM spans").fetch_one(&pool).await?;
        pool.close().await;
        Ok(usize::try_from(count).unwrap_or_default())
    }
}

impl Drop for InProcessConsole {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

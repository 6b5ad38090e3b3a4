//! Where the chaos suite injects faults: the local runner's processes, or a
//! `docker compose` deployment (`docker compose kill` / `start`).

use crate::infra::{Component, Stack};
use crate::services::{SERVICES, service_spec};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub enum Backend<'a> {
    /// Processes of a local runner stack (normally `chaos`).
    Local(&'a Stack),
    /// A compose project started from `file`; services on the host ports of
    /// the file, PostgreSQL reachable at `database_url_template`
    /// (`{service}` is replaced by the service name).
    Compose { file: PathBuf, database_url_template: String },
}

impl Backend<'_> {
    /// A fresh system: infrastructure up, empty databases, services started
    /// with `env` (namespace, unsafe modes) and ready.
    pub async fn prepare(&self, env: &[(String, String)]) -> Result<()> {
        match self {
            Backend::Local(stack) => {
                stack.start_infra().await?;
                for spec in &SERVICES {
                    stack.service(spec).kill().await?;
                }
                stack.kafka().restart_empty().await?;
                for spec in &SERVICES {
                    stack.drop_database(spec.name).await?;
                    stack.create_database(spec.name).await?;
                }
                for spec in &SERVICES {
                    stack.service(spec).spawn(&as_refs(env))?;
                }
                for spec in &SERVICES {
                    stack.service(spec).wait_ready(Duration::from_secs(90)).await?;
                }
                Ok(())
            }
            Backend::Compose { file, .. } => {
                // The compose file carries its own configuration; a namespace
                // is not needed because the deployment is fresh.
                compose(file, &["down", "--volumes"])?;
                compose(file, &["up", "--detach", "--wait"])
            }
        }
    }

    pub async fn kill(&self, target: &str) -> Result<()> {
        match self {
            Backend::Local(stack) => match target.parse::<Component>() {
                Ok(component) => stack.kill_component(component).await,
                Err(_) => stack.service_named(target)?.kill().await,
            },
            Backend::Compose { file, .. } => compose(file, &["kill", "-s", "SIGKILL", target]),
        }
    }

    /// Starts `target` again and waits until it is ready.
    pub async fn start(&self, target: &str, env: &[(String, String)]) -> Result<()> {
        match self {
            Backend::Local(stack) => match target.parse::<Component>() {
                Ok(component) => {
                    stack.start_component(component).await?;
                    stack.wait_component_ready(component).await
                }
                Err(_) => {
                    let service = stack.service_named(target)?;
                    service.spawn(&as_refs(env))?;
                    service.wait_ready(Duration::from_secs(90)).await
                }
            },
            Backend::Compose { file, .. } => {
                compose(file, &["start", target])?;
                if let Some(spec) = service_spec(target) {
                    wait_http_ready(&format!("http://127.0.0.1:{}", spec.base_port), Duration::from_secs(90)).await?;
                }
                Ok(())
            }
        }
    }

    pub fn order_url(&self) -> String {
        match self {
            Backend::Local(stack) => stack.service_named("order").map(|s| s.url()).unwrap_or_default(),
            Backend::Compose { .. } => "http://127.0.0.1:8080".to_owned(),
        }
    }

    pub fn database_url(&self, service: &str) -> String {
        match self {
            Backend::Local(stack) => stack.postgres_url(service),
            Backend::Compose { database_url_template, .. } => database_url_template.replace("{service}", service),
        }
    }

    pub fn amqp_url(&self) -> String {
        match self {
            Backend::Local(stack) => stack.amqp_url(),
            Backend::Compose { .. } => "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        }
    }

    pub fn kafka_brokers(&self) -> String {
        match self {
            Backend::Local(stack) => stack.kafka_brokers(),
            Backend::Compose { .. } => "127.0.0.1:9094".to_owned(),
        }
    }

    /// Waits until every accepted order is final and every outbox is empty;
    /// false if that did not happen within `timeout`.
    pub async fn wait_drained(&self, accepted: &[String], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.pending_work(accepted).await {
                Ok((0, 0)) => return true,
                Ok((orders, outbox)) if Instant::now() >= deadline => {
                    println!("  still {orders} orders in flight and {outbox} unsent messages at the deadline");
                    return false;
                }
                Err(e) if Instant::now() >= deadline => {
                    println!("  cannot read the databases at the deadline: {e:#}");
                    return false;
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// (accepted orders missing or not final + any order not final, unsent
    /// outbox rows across the six databases).
    async fn pending_work(&self, accepted: &[String]) -> Result<(i64, i64)> {
        let ids: Vec<uuid::Uuid> = accepted.iter().filter_map(|id| id.parse().ok()).collect();
        let order = sqlx::PgPool::connect(&self.database_url("order")).await?;
        let (not_final, missing): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM orders WHERE status NOT IN ('COMPLETED', 'CANCELLED')),
                    $2::int8 - (SELECT count(*) FROM orders WHERE id = ANY($1))",
        )
        .bind(&ids)
        .bind(ids.len() as i64)
        .fetch_one(&order)
        .await?;
        order.close().await;
        let mut unsent = 0;
        for spec in &SERVICES {
            let pool = sqlx::PgPool::connect(&self.database_url(spec.name)).await?;
            let (n,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetch_one(&pool).await?;
            unsent += n;
            pool.close().await;
        }
        Ok((not_final + missing, unsent))
    }

    /// Runs the invariant checker on this system.
    pub async fn check_invariants(&self, accepted: &[String], namespace: &str) -> Result<invariants::Report> {
        let urls = invariants::DatabaseUrls {
            order: self.database_url("order"),
            stock: self.database_url("stock"),
            payment: self.database_url("payment"),
            shipping: self.database_url("shipping"),
            email: self.database_url("email"),
            loyalty: self.database_url("loyalty"),
        };
        let databases = invariants::Databases::connect(&urls).await?;
        let options = invariants::CheckOptions {
            accepted: Some(invariants::parse_accepted(&accepted.join("\n"))?),
            brokers: invariants::Brokers {
                amqp_url: Some(self.amqp_url()),
                kafka_brokers: Some(self.kafka_brokers()),
                topology: contracts::Topology::new(namespace),
            },
            ..invariants::CheckOptions::default()
        };
        let report = invariants::check(&databases, &options).await;
        databases.close().await;
        Ok(report?)
    }
}

fn as_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn compose(file: &PathBuf, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new("docker")
        .arg("compose")
        .arg("-f")
        .arg(file)
        .args(args)
        .status()
        .context("running `docker compose` (is Docker installed?)")?;
    if !status.success() {
        bail!("docker compose {} failed: {status}", args.join(" "));
    }
    Ok(())
}

async fn wait_http_ready(base: &str, timeout: Duration) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("{base} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

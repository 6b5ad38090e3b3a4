//! The ordermesh console: receives the services' spans over OTLP/HTTP into
//! its own PostgreSQL database, shows one order's journey across the six
//! services with the time each message waited, draws the live system map,
//! and kills, stops and restarts components through the local runner.

pub mod api;
pub mod channels;
pub mod config;
pub mod coupling;
pub mod error;
pub mod journey;
pub mod order_service;
pub mod order_traffic;
pub mod otlp;
pub mod pages;
pub mod process_control;
pub mod scrape;
pub mod span_ingest;
pub mod span_store;
pub mod system_map;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use config::ConsoleConfig;
use error::ConsoleError;
use health::Readiness;
use service_kit::config::Secret;
use sqlx::postgres::PgPoolOptions;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often spans past the retention bounds are deleted.
const RETENTION_INTERVAL: Duration = Duration::from_secs(30);
/// How long start-up waits for its database before serving anyway (the
/// map and the receiver work without it; journeys wait for it).
const DATABASE_RETRY: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ConsoleState {
    pub store: span_store::SpanStore,
    pub ingest: span_ingest::SpanIngest,
    pub map: system_map::LatestMap,
    pub orders: order_service::OrderService,
    pub traffic: order_traffic::OrderTraffic,
    pub control: process_control::ProcessControl,
    pub channels: std::sync::Arc<journey::Channels>,
    pub service_urls: Vec<(&'static str, String)>,
    pub admin_token: Option<Secret>,
    pub shutdown: CancellationToken,
}

impl ConsoleState {
    /// Actions need the bearer token when one is configured.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ConsoleError> {
        let Some(token) = &self.admin_token else { return Ok(()) };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(given) if given.as_bytes() == token.expose().as_bytes() => Ok(()),
            _ => Err(ConsoleError::Unauthorized),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleStartError {
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// Runs the console on `listener` until `shutdown`.
pub async fn run(
    config: ConsoleConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ConsoleStartError> {
    let readiness = Readiness::new();
    readiness.register("database");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(config.database_url.expose())
        .map_err(|e| std::io::Error::other(format!("DATABASE_URL: {e}")))?;
    let store = span_store::SpanStore::new(pool.clone());
    let (ingest, writer) = span_ingest::channel(store.clone());
    let map = system_map::LatestMap::default();
    let order_url = config.service_url("order").unwrap_or("http://127.0.0.1:8080").to_owned();
    let state = ConsoleState {
        store: store.clone(),
        ingest,
        map: map.clone(),
        orders: order_service::OrderService::new(&order_url),
        traffic: order_traffic::OrderTraffic::default(),
        control: process_control::ProcessControl::new(config.runner.clone()),
        channels: std::sync::Arc::new(journey::Channels::of(&config.topology())),
        service_urls: config.service_urls.clone(),
        admin_token: config.admin_token.clone(),
        shutdown: shutdown.clone(),
    };

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(migrate_until_done(pool.clone(), readiness.clone(), shutdown.clone()));
    tasks.spawn(writer.run(shutdown.clone()));
    tasks.spawn(system_map::MapSampler::new(config.clone(), pool, map).run(shutdown.clone()));
    tasks.spawn(enforce_retention(store, config.clone(), shutdown.clone()));

    let app = Router::new()
        .route("/v1/traces", post(api::receive_traces))
        .route("/api/map", get(api::map))
        .route("/api/orders", get(api::recent_orders).post(api::place_order))
        .route("/api/orders/{id}", get(api::order_journey))
        .route("/api/traffic", get(api::traffic).post(api::start_traffic).delete(api::stop_traffic))
        .route("/api/components/{name}/{action}", post(api::act_on_component))
        .route("/api/lesson/coupling", post(api::coupling_lesson))
        .route("/", get(pages::map_page))
        .route("/orders/{id}", get(pages::journey_page))
        .route("/assets/{name}", get(pages::asset))
        .with_state(state)
        .merge(service_kit::operational_routes::routes("console", readiness))
        .fallback(pages::not_found);
    let app = service_kit::http::layered(app, config.http_body_limit, Duration::from_secs(150));
    tracing::info!(addr = %config.http_addr, "console serving");
    let token = shutdown.clone();
    axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).await?;
    shutdown.cancel();
    // Spans still queued are written, within the deadline.
    let _ = tokio::time::timeout(config.shutdown_deadline, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// Applies migrations/console, retrying while PostgreSQL is away; the
/// console is ready once they are applied.
async fn migrate_until_done(pool: sqlx::PgPool, readiness: Readiness, shutdown: CancellationToken) {
    loop {
        match sqlx::migrate!("../migrations/console").run(&pool).await {
            Ok(()) => {
                readiness.ready("database");
                return;
            }
            Err(e) => {
                readiness.not_ready("database", format!("migrating the span store: {e}"));
                tracing::warn!(error = %e, "span store not ready; retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DATABASE_RETRY) => {}
        }
    }
}

async fn enforce_retention(store: span_store::SpanStore, config: ConsoleConfig, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETENTION_INTERVAL) => {}
        }
        match store.enforce_retention(config.retention_max_age, config.retention_max_spans).await {
            Ok(0) => {}
            Ok(deleted) => {
                metrics::counter!("console_spans_expired_total").increment(deleted);
                tracing::info!(deleted, "spans past retention deleted");
            }
            Err(e) => tracing::warn!(error = %e, "retention pass failed; retrying later"),
        }
    }
}

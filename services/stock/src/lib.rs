//! The stock service: reserves and releases stock for orders, on command.
//!
//! - [`reservations`]: reserve all lines or none, release (the domain).
//! - [`commands`]: the `ReserveStock` and `ReleaseStock` commands.
//! - [`sync_api`]: the same over HTTP, for the synchronous twin.
//! - [`store`]: the SQL of `products` and `reservations`.
//! - [`api`]: `GET /stock`, `GET /stock/{sku}`, `GET /reservations?order_id=`.

pub mod api;
pub mod commands;
pub mod reservations;
pub mod store;
pub mod sync_api;

use messaging::MessageFactory;
use service_kit::host::HostError;
use service_kit::{CommonConfig, ConfigError, ServiceHost};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "stock";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { common: CommonConfig::from_env(8081, "stock")? })
    }
}

/// The service's OpenAPI document, as served at `/openapi.json` and
/// committed as docs/api/stock.openapi.json.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut own = api::api().into_openapi();
    own.merge(sync_api::api().into_openapi());
    service_kit::openapi::service_document(SERVICE, own)
}

pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = ServiceHost::start(SERVICE, &config.common, listener, shutdown);
    let pool = host.database(sqlx::migrate!("../../migrations/stock")).await?;
    let topology = config.common.topology();
    // Stock only replies (RabbitMQ); it publishes no events.
    let amqp = host.amqp_publisher();
    host.start_relay(pool.clone(), Some(amqp), None)?;
    let handler = commands::StockCommands::new(MessageFactory::new(SERVICE));
    host.consume_queue(pool.clone(), topology.stock_commands(), SERVICE, handler);
    let sync = service_kit::sync_twin::SyncState::new(pool.clone(), &config.common);
    host.serve(api::router(pool).merge(sync_api::router(sync)), openapi()).await?;
    Ok(())
}

//! The loyalty service: points for paid orders, kept in a ledger per customer.
//!
//! - [`events`]: `OrderPaid` credits points, `OrderCancelled` reverses a credit.
//! - [`store`]: the SQL of `loyalty_accounts` and `loyalty_ledger`.
//! - [`api`]: `GET /customers/{id}/loyalty`.

pub mod api;
pub mod events;
pub mod store;
pub mod sync_api;

use service_kit::host::HostError;
use service_kit::{CommonConfig, ConfigError, ServiceHost};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "loyalty";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self { common: CommonConfig::from_env(8085, "loyalty")? })
    }
}

/// The service's OpenAPI document, as served at `/openapi.json` and
/// committed as docs/api/loyalty.openapi.json.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut own = api::api().into_openapi();
    own.merge(sync_api::api().into_openapi());
    service_kit::openapi::service_document(SERVICE, own)
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = ServiceHost::start(SERVICE, &config.common, listener, shutdown);
    let pool = host.database(sqlx::migrate!("../../migrations/loyalty")).await?;
    let topology = config.common.topology();
    // Loyalty publishes nothing: no relay. The producer carries dead letters.
    let dead_letters = host.kafka_publisher(&topology.all_topics()).await?;
    host.consume_topics(pool.clone(), vec![topology.orders_topic()], events::LoyaltyEvents, dead_letters);
    let sync = service_kit::sync_twin::SyncState::new(pool.clone(), &config.common);
    host.serve(api::router(pool).merge(sync_api::router(sync)), openapi()).await?;
    Ok(())
}

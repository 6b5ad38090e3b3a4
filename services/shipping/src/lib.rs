//! The shipping service: schedules one shipment for every paid order.
//!
//! - [`events`]: `OrderPaid` → shipment + `ShipmentScheduled`.
//! - [`store`]: the SQL of `shipments`.
//! - [`api`]: `GET /shipments?order_id=`, `GET /shipments/{id}`.

pub mod api;
pub mod events;
pub mod store;
pub mod sync_api;

use messaging::MessageFactory;
use service_kit::host::HostError;
use service_kit::{CommonConfig, ConfigError, ServiceHost, env_or};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "shipping";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `SHIPPING_CARRIER`: the carrier every shipment is handed to.
    pub carrier: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(8083, "shipping")?,
            carrier: env_or("SHIPPING_CARRIER", "ordermesh-express"),
        })
    }
}

/// The service's OpenAPI document, as served at `/openapi.json` and
/// committed as docs/api/shipping.openapi.json.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut own = api::api().into_openapi();
    own.merge(sync_api::api().into_openapi());
    service_kit::openapi::service_document(SERVICE, own)
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = ServiceHost::start(SERVICE, &config.common, listener, shutdown);
    let pool = host.database(sqlx::migrate!("../../migrations/shipping")).await?;
    let topology = config.common.topology();
    // Events only (Kafka): the producer publishes the outbox and dead letters.
    let kafka = host.kafka_publisher(&topology.all_topics()).await?;
    host.start_relay(pool.clone(), None, Some(kafka.clone()))?;
    let handler = events::ShippingEvents::new(MessageFactory::new(SERVICE), topology.clone(), config.carrier.clone());
    host.consume_topics(pool.clone(), vec![topology.orders_topic()], handler, kafka);
    let sync = service_kit::sync_twin::SyncState::new(pool.clone(), &config.common);
    host.serve(api::router(pool).merge(sync_api::router(sync, config.carrier)), openapi()).await?;
    Ok(())
}

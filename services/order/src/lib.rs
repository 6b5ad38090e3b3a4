//! The order service: the public HTTP API and the order saga.
//!
//! - [`api`]: `POST /orders`, `GET /orders/{id}`.
//! - [`sync_order`]: `POST /orders/sync`, the synchronous twin (the course's
//!   phone call), calling the five services through [`sync_peers`].
//! - [`saga`]: the order's state machine, driven by replies and events.
//! - [`store`]: the SQL of the `orders`, `order_lines` and `order_history` tables.
//! - [`catalogue`]: the SKUs `POST /orders` accepts, read from the stock service.

pub mod api;
pub mod catalogue;
pub mod saga;
pub mod store;
pub mod sync_order;
pub mod sync_peers;

use messaging::MessageFactory;
use service_kit::host::HostError;
use service_kit::{CommonConfig, ConfigError, ServiceHost, env_or, env_parse};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "order";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `STOCK_URL`: where the catalogue of SKUs is read (a query, not a command).
    pub stock_url: String,
    /// `PAYMENT_URL`, `SHIPPING_URL`, `EMAIL_URL`, `LOYALTY_URL` (and
    /// `STOCK_URL`): the synchronous twin's peers.
    pub peer_urls: sync_peers::PeerUrls,
    /// `SYNC_CALL_TIMEOUT_MS`: how long the twin waits for one peer.
    pub sync_call_timeout: std::time::Duration,
    /// `ORDER_MAX_OUTBOX_BACKLOG`: above this many unsent messages,
    /// `POST /orders` answers 503 instead of queueing without limit.
    pub max_outbox_backlog: i64,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let stock_url = env_or("STOCK_URL", "http://127.0.0.1:8081");
        Ok(Self {
            common: CommonConfig::from_env(8080, "order")?,
            peer_urls: sync_peers::PeerUrls {
                stock: stock_url.clone(),
                payment: env_or("PAYMENT_URL", "http://127.0.0.1:8082"),
                shipping: env_or("SHIPPING_URL", "http://127.0.0.1:8083"),
                email: env_or("EMAIL_URL", "http://127.0.0.1:8084"),
                loyalty: env_or("LOYALTY_URL", "http://127.0.0.1:8085"),
            },
            sync_call_timeout: std::time::Duration::from_millis(env_parse("SYNC_CALL_TIMEOUT_MS", 5_000)?),
            stock_url,
            max_outbox_backlog: env_parse("ORDER_MAX_OUTBOX_BACKLOG", 5_000)?,
        })
    }
}

/// The service's OpenAPI document, as served at `/openapi.json` and
/// committed as docs/api/order.openapi.json.
pub fn openapi() -> utoipa::openapi::OpenApi {
    service_kit::openapi::service_document(SERVICE, api::api().into_openapi())
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = ServiceHost::start(SERVICE, &config.common, listener, shutdown);
    let pool = host.database(sqlx::migrate!("../../migrations/order")).await?;
    let topology = config.common.topology();
    let amqp = host.amqp_publisher();
    let kafka = host.kafka_publisher(&topology.all_topics()).await?;
    let outbox_backlog = host.start_relay(pool.clone(), Some(amqp), Some(kafka.clone()))?;

    let factory = MessageFactory::new(SERVICE);
    let saga = saga::OrderSaga::new(factory.clone(), topology.clone());
    host.consume_queue(pool.clone(), topology.order_replies(), SERVICE, saga.clone());
    host.consume_topics(pool.clone(), vec![topology.shipments_topic()], saga, kafka);

    let catalogue = Arc::new(
        catalogue::Catalogue::new(&config.stock_url).map_err(|e| HostError::setup("the stock catalogue client", e))?,
    );
    host.spawn("catalogue-refresh", catalogue.clone().refresh_periodically(host.shutdown()));

    let sync_peers = sync_peers::SyncPeers::new(config.peer_urls.clone(), config.sync_call_timeout)
        .map_err(|e| HostError::setup("the synchronous twin's HTTP client", e))?;
    let state = api::AppState {
        sync_peers,
        pool,
        factory,
        topology,
        catalogue,
        max_outbox_backlog: config.max_outbox_backlog,
        outbox_backlog,
    };
    host.serve(api::router(state), openapi()).await?;
    Ok(())
}

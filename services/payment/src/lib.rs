//! The payment service: a simulated payment provider that charges and
//! refunds orders on command.
//!
//! - [`provider`]: the deterministic decision (approve or decline).
//! - [`charges`]: one charge per order, refunds (the domain).
//! - [`commands`]: the `ProcessPayment` and `RefundPayment` commands.
//! - [`sync_api`]: the same over HTTP, for the synchronous twin.
//! - [`store`]: the SQL of `customer_limits`, `payments` and `refunds`.
//! - [`api`]: `GET /payments?order_id=`, `GET /payments/{payment_id}`.

pub mod api;
pub mod charges;
pub mod commands;
pub mod provider;
pub mod store;
pub mod sync_api;

use contracts::catalogue::Cents;
use messaging::MessageFactory;
use service_kit::host::HostError;
use service_kit::{CommonConfig, ConfigError, ServiceHost, env_parse};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "payment";

/// Limit of customers without a row in `customer_limits`: 1000.00.
pub const DEFAULT_LIMIT_CENTS: Cents = 100_000;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PAYMENT_DEFAULT_LIMIT_CENTS`: the most a customer without a limit of
    /// their own can be charged for one order.
    pub default_limit_cents: Cents,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        const LIMIT_VAR: &str = "PAYMENT_DEFAULT_LIMIT_CENTS";
        let default_limit_cents = env_parse(LIMIT_VAR, DEFAULT_LIMIT_CENTS)?;
        if default_limit_cents < 0 {
            return Err(ConfigError {
                name: LIMIT_VAR.to_owned(),
                value: default_limit_cents.to_string(),
                reason: "must not be negative".to_owned(),
            });
        }
        Ok(Self { common: CommonConfig::from_env(8082, "payment")?, default_limit_cents })
    }
}

/// The service's OpenAPI document, as served at `/openapi.json` and
/// committed as docs/api/payment.openapi.json.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut own = api::api().into_openapi();
    own.merge(sync_api::api().into_openapi());
    service_kit::openapi::service_document(SERVICE, own)
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = ServiceHost::start(SERVICE, &config.common, listener, shutdown);
    let pool = host.database(sqlx::migrate!("../../migrations/payment")).await?;
    let topology = config.common.topology();
    // Payment only replies (RabbitMQ); it publishes no events.
    let amqp = host.amqp_publisher();
    host.start_relay(pool.clone(), Some(amqp), None)?;
    let handler = commands::PaymentCommands::new(MessageFactory::new(SERVICE), config.default_limit_cents);
    host.consume_queue(pool.clone(), topology.payment_commands(), SERVICE, handler);
    let sync = service_kit::sync_twin::SyncState::new(pool.clone(), &config.common);
    host.serve(api::router(pool).merge(sync_api::router(sync, config.default_limit_cents)), openapi()).await?;
    Ok(())
}

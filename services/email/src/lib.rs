//! The email service: one e-mail per order and kind (confirmation, shipment
//! notice, cancellation notice), recorded exactly once and delivered over
//! SMTP at least once.
//!
//! - [`compose`]: what each e-mail says (pure).
//! - [`events`]: `OrderPaid`, `ShipmentScheduled`, `OrderCancelled` → recorded e-mail.
//! - [`smtp`]: delivery of recorded e-mails, with retries.
//! - [`store`]: the SQL of `sent_emails`.
//! - [`api`]: `GET /emails?order_id=`.

pub mod api;
pub mod compose;
pub mod events;
pub mod smtp;
pub mod store;
pub mod sync_api;

use service_kit::config::Secret;
use service_kit::host::HostError;
use service_kit::{CommonConfig, ConfigError, ServiceHost, env_or};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "email";

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `SMTP_URL`, e.g. `smtp://127.0.0.1:1025`: where to deliver. Unset:
    /// e-mails are recorded only.
    pub smtp_url: Option<Secret>,
    /// `EMAIL_FROM`: the sender's mailbox.
    pub from: String,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(8084, "email")?,
            smtp_url: std::env::var("SMTP_URL").ok().filter(|v| !v.trim().is_empty()).map(Secret::new),
            from: env_or("EMAIL_FROM", "ordermesh <orders@ordermesh.local>"),
        })
    }
}

/// The service's OpenAPI document, as served at `/openapi.json` and
/// committed as docs/api/email.openapi.json.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut own = api::api().into_openapi();
    own.merge(sync_api::api().into_openapi());
    service_kit::openapi::service_document(SERVICE, own)
}

/// Runs the service on `listener` until `shutdown`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), HostError> {
    let mut host = ServiceHost::start(SERVICE, &config.common, listener, shutdown);
    let pool = host.database(sqlx::migrate!("../../migrations/email")).await?;
    let topology = config.common.topology();
    // Email publishes no messages: no relay. The producer carries dead letters.
    let dead_letters = host.kafka_publisher(&topology.all_topics()).await?;
    let topics = vec![topology.orders_topic(), topology.shipments_topic()];
    host.consume_topics(pool.clone(), topics, events::EmailEvents, dead_letters);
    match &config.smtp_url {
        Some(url) => {
            let sender = smtp::SmtpSender::new(pool.clone(), url.expose(), &config.from)
                .map_err(|e| HostError::setup("the SMTP transport", e))?;
            host.spawn("smtp-sender", sender.run(host.shutdown()));
        }
        None => tracing::info!("SMTP_URL is not set: e-mails are recorded, not delivered"),
    }
    let sync = service_kit::sync_twin::SyncState::new(pool.clone(), &config.common);
    host.serve(api::router(pool).merge(sync_api::router(sync)), openapi()).await?;
    Ok(())
}

//! Runs a service: its background tasks (relay, consumers, jobs) and its HTTP
//! server, all stopped by one cancellation token, within a deadline.

use crate::admin;
use crate::config::CommonConfig;
use crate::db;
use crate::http::{layered, with_standard_layers};
use crate::operational_routes;
use axum::Router;
use dead_letters::{DeadLetters, Destination};
use health::Readiness;
use messaging::amqp::{AmqpConnector, AmqpPublisher};
use messaging::amqp_consumer::AmqpConsumer;
use messaging::consumer::{MessageHandler, MessageProcessor, RetryPolicy};
use messaging::kafka::{KafkaPublishError, KafkaPublisher};
use messaging::kafka_consumer::KafkaConsumer;
use messaging::log_tailing::{self, LogTailingConfig, LogTailingRelay, RelayMode};
use messaging::outbox::OutboxBacklogMonitor;
use messaging::processing_delay::DelayedHandler;
use messaging::relay::{OutboxRelay, RelayConfig};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaPublishError),
    #[error("Kafka topics: {0}")]
    KafkaTopics(#[from] rdkafka_error::KafkaError),
    #[error("shut down before start-up finished")]
    ShutDownDuringStartup,
    #[error("setting up {what}: {source}")]
    Setup { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

impl HostError {
    /// A service's own start-up step failed (an HTTP client, an SMTP transport).
    pub fn setup(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Setup { what, source: Box::new(source) }
    }
}

use messaging::kafka::rdkafka_error;

/// The readiness component that is green once start-up is complete.
pub const STARTUP_COMPONENT: &str = "startup";

pub struct ServiceHost {
    name: &'static str,
    /// The HTTP server, serving health and metrics from the start and the
    /// service's own routes once [`ServiceHost::serve`] installs them.
    http: JoinHandle<std::io::Result<()>>,
    app: AppSlot,
    config: CommonConfig,
    readiness: Readiness,
    shutdown: CancellationToken,
    deadline: Duration,
    body_limit: usize,
    request_timeout: Duration,
    tasks: Vec<(String, JoinHandle<()>)>,
    /// Where this service's consumers dead-letter: what its admin routes manage.
    dead_letter_destinations: Vec<Destination>,
}

impl ServiceHost {
    /// Starts serving `/health/live`, `/health/ready` and `/metrics` on
    /// `listener` at once, so a slow start (a database or broker not up yet)
    /// is visible as "live, not ready" instead of as a dead process. Every
    /// other route answers 503 until [`ServiceHost::serve`].
    pub fn start(
        name: &'static str,
        config: &CommonConfig,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Self {
        let modes = messaging::safety::unsafe_modes();
        if modes.any() {
            tracing::error!(
                service = name,
                modes = ?modes.enabled(),
                "UNSAFE MODE ENABLED: delivery guarantees are deliberately broken"
            );
        }
        let readiness = Readiness::new();
        // Not ready before every route is served, whatever else is up.
        readiness.register(STARTUP_COMPONENT);
        let app = AppSlot::default();
        let router = layered(
            operational_routes::routes(name, readiness.clone()),
            config.http_body_limit,
            config.http_request_timeout,
        )
        .fallback_service(app.clone());
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(service = name, %addr, "serving HTTP (health and metrics until start-up completes)");
        let token = shutdown.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(async move { token.cancelled().await }).await
        });
        Self {
            name,
            http,
            app,
            config: config.clone(),
            readiness,
            shutdown,
            deadline: config.shutdown_deadline,
            body_limit: config.http_body_limit,
            request_timeout: config.http_request_timeout,
            tasks: Vec::new(),
            dead_letter_destinations: Vec::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn config(&self) -> &CommonConfig {
        &self.config
    }

    /// The dead-letter queues and topics of the consumers started so far.
    pub fn dead_letter_destinations(&self) -> &[Destination] {
        &self.dead_letter_destinations
    }

    /// The pool, once the database answers and the migrations are applied;
    /// keeps reporting the database's readiness afterwards.
    pub async fn database(&mut self, migrator: Migrator) -> Result<PgPool, HostError> {
        let pool = db::pool(&self.config)?;
        if !db::migrate_when_reachable(&pool, migrator, &self.shutdown).await? {
            return Err(HostError::ShutDownDuringStartup);
        }
        db::spawn_readiness_probe(pool.clone(), self.readiness.clone(), self.shutdown.clone());
        let retention = messaging::retention::run(pool.clone(), self.config.retention, self.shutdown.clone());
        self.spawn("retention", retention);
        Ok(pool)
    }

    /// A connector to the configured RabbitMQ, named after this service.
    pub fn amqp_connector(&self, role: &str) -> AmqpConnector {
        AmqpConnector::new(self.config.amqp_url.expose(), format!("{}-{role}", self.name), self.readiness.clone())
    }

    /// A confirm-mode publisher whose connection is kept open in the background.
    pub fn amqp_publisher(&mut self) -> Arc<AmqpPublisher> {
        let publisher = Arc::new(AmqpPublisher::new(self.amqp_connector("publisher"), self.config.topology()));
        let shutdown = self.shutdown.clone();
        self.spawn("amqp-publisher-connection", publisher.clone().keep_connected(shutdown));
        publisher
    }

    /// An idempotent Kafka producer, after making sure `topics` exist.
    pub async fn kafka_publisher(&self, topics: &[String]) -> Result<Arc<KafkaPublisher>, HostError> {
        let brokers = &self.config.kafka_brokers;
        let mut attempt = 0;
        let backoff = messaging::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        // Topic creation needs the brokers: wait for them like for the database.
        while let Err(e) =
            messaging::kafka::ensure_topics(brokers, topics, contracts::topology::EVENT_TOPIC_PARTITIONS).await
        {
            attempt += 1;
            tracing::warn!(error = %e, attempt, "Kafka not reachable yet");
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(HostError::ShutDownDuringStartup),
                _ = tokio::time::sleep(backoff.delay(attempt)) => {}
            }
        }
        let publisher = KafkaPublisher::new(brokers, self.name)?;
        publisher.spawn_readiness_probe(self.readiness.clone(), self.shutdown.clone());
        Ok(Arc::new(publisher))
    }

    /// Runs the outbox relay for this service's database (polling or log
    /// tailing, `OUTBOX_RELAY`), and the sampler of its backlog (returned,
    /// for a service that sheds load on it).
    pub fn start_relay(
        &mut self,
        pool: PgPool,
        amqp: Option<Arc<AmqpPublisher>>,
        kafka: Option<Arc<KafkaPublisher>>,
    ) -> Result<OutboxBacklogMonitor, HostError> {
        let backlog = OutboxBacklogMonitor::default();
        self.spawn(
            "outbox-backlog",
            backlog.clone().run(pool.clone(), Duration::from_millis(500), self.shutdown.clone()),
        );
        let slot = match self.config.outbox_slot.as_str() {
            "" => log_tailing::slot::slot_name_for(pool.connect_options().get_database().unwrap_or(self.name)),
            named => named.to_owned(),
        };
        let shutdown = self.shutdown.clone();
        match self.config.outbox_relay {
            RelayMode::Polling => {
                let relay = OutboxRelay::new(pool.clone(), amqp, kafka, RelayConfig::default());
                self.spawn("outbox-relay", async move {
                    // A slot a log-tailing run left behind would hold back
                    // WAL, read by no one, until invalidated.
                    match log_tailing::slot::drop_slot(&pool, &slot).await {
                        Ok(true) => tracing::info!(slot, "dropped the outbox slot of an earlier log-tailing run"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, slot, "could not check for a leftover outbox slot"),
                    }
                    relay.run(shutdown).await
                });
            }
            RelayMode::LogTailing => {
                let relay = LogTailingRelay::new(
                    pool,
                    self.config.database_url.expose(),
                    amqp,
                    kafka,
                    LogTailingConfig::for_slot(slot),
                )
                .map_err(|e| HostError::setup("the log-tailing outbox relay", e))?;
                self.spawn("outbox-relay", relay.run(shutdown));
            }
        }
        Ok(backlog)
    }

    /// Consumes RabbitMQ `queue` with `handler`, recording in the inbox as `consumer`.
    pub fn consume_queue<H: MessageHandler>(&mut self, pool: PgPool, queue: String, consumer: &str, handler: H) {
        self.dead_letter_destinations.push(Destination::rabbitmq(&queue));
        let handler = DelayedHandler::new(handler, self.config.processing_delay);
        let processor = MessageProcessor::new(pool, consumer, handler, RetryPolicy::default());
        let amqp_consumer =
            AmqpConsumer::new(self.amqp_connector("consumer"), self.config.topology(), queue.clone(), 16, processor);
        let shutdown = self.shutdown.clone();
        self.spawn(format!("amqp-consumer:{queue}"), amqp_consumer.run(shutdown));
    }

    /// Consumes Kafka `topics` in this service's consumer group with `handler`.
    pub fn consume_topics<H: MessageHandler>(
        &mut self,
        pool: PgPool,
        topics: Vec<String>,
        handler: H,
        dead_letters: Arc<KafkaPublisher>,
    ) {
        let topology = self.config.topology();
        let group = topology.consumer_group(self.name);
        self.dead_letter_destinations.extend(topics.iter().map(|t| Destination::kafka(t, &group)));
        let handler = DelayedHandler::new(handler, self.config.processing_delay);
        let processor = MessageProcessor::new(pool, self.name, handler, RetryPolicy::default());
        let consumer = KafkaConsumer::new(
            &self.config.kafka_brokers,
            &group,
            topics,
            processor,
            dead_letters,
            self.readiness.clone(),
        )
        .with_group_instance_id(Some(self.config.kafka_group_instance_id.clone()))
        .with_debug(self.config.kafka_debug.clone())
        .with_fetch_wait_max(self.config.kafka_fetch_wait_max)
        .with_assignment(self.config.kafka_assignment)
        .with_replacement_after(self.config.kafka_consumer_replace_after);
        let shutdown = self.shutdown.clone();
        self.spawn(format!("kafka-consumer:{group}"), consumer.run(shutdown));
    }

    /// Runs `task` until it returns; it must watch [`Self::shutdown`].
    pub fn spawn(&mut self, name: impl Into<String>, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name.into(), tokio::spawn(task)));
    }

    /// Serves `app` plus the health and metrics routes and `document` (the
    /// service's whole OpenAPI document, [`crate::openapi::service_document`])
    /// at `/openapi.json` until shutdown, then waits for the background tasks
    /// to finish their in-flight work, up to the deadline.
    pub async fn serve(self, app: Router, document: utoipa::openapi::OpenApi) -> std::io::Result<()> {
        let mut app = app.merge(crate::openapi::serve_document(&document));
        // No token, no admin routes at all (404), rather than routes nobody may call.
        if let Some(token) = &self.config.admin_token {
            let dead_letters =
                DeadLetters::new(self.config.amqp_url.expose(), &self.config.kafka_brokers, self.config.topology());
            let destinations = self.dead_letter_destinations.clone();
            app = app.merge(admin::routes(token.clone(), dead_letters, destinations, self.request_timeout));
        }
        self.app.install(with_standard_layers(app, self.body_limit, self.request_timeout));
        self.readiness.ready(STARTUP_COMPONENT);
        tracing::info!(service = self.name, "start-up complete: serving every route");
        let mut http = self.http;
        // Serve until shutdown (or a server error)…
        let early = tokio::select! {
            result = &mut http => Some(result),
            _ = self.shutdown.cancelled() => None,
        };
        // …then one budget for everything in flight: open requests first
        // (the server stops accepting at once), then background tasks.
        let deadline = tokio::time::Instant::now() + self.deadline;
        let joined = match early {
            Some(joined) => joined,
            None => tokio::time::timeout_at(deadline, http).await.unwrap_or_else(|_| {
                tracing::warn!("HTTP requests still open at the shutdown deadline");
                Ok(Ok(()))
            }),
        };
        let result = joined.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        self.shutdown.cancel();
        let waiting = async {
            for (name, handle) in self.tasks {
                if let Err(e) = handle.await {
                    tracing::error!(task = %name, error = %e, "background task failed");
                }
            }
        };
        if tokio::time::timeout_at(deadline, waiting).await.is_err() {
            tracing::warn!(service = self.name, budget = ?self.deadline, "background tasks still running at the shutdown deadline");
        }
        tracing::info!(service = self.name, "stopped");
        result
    }
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(error) => {
                    // Ctrl-C still works; SIGTERM would kill the process
                    // without a graceful shutdown, so say so.
                    tracing::error!(%error, "cannot listen for SIGTERM: only Ctrl-C shuts down gracefully");
                    std::future::pending::<()>().await
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

/// The service's own routes, installed once start-up is complete; until
/// then every request to them is answered 503 with `Retry-After`.
#[derive(Clone, Default)]
struct AppSlot(Arc<std::sync::OnceLock<Router>>);

impl AppSlot {
    fn install(&self, app: Router) {
        let _ = self.0.set(app);
    }
}

impl tower::Service<axum::extract::Request> for AppSlot {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        use axum::response::IntoResponse;
        use tower::ServiceExt;
        match self.0.get().cloned() {
            Some(app) => Box::pin(app.oneshot(request)),
            None => Box::pin(async {
                Ok(crate::ApiError::Unavailable { reason: "starting up".into(), retry_after_secs: 1 }.into_response())
            }),
        }
    }
}

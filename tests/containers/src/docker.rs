//! The fixtures proper (feature `docker`).

use anyhow::{Context, Result, bail};
use lapin::{Connection, ConnectionProperties};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sqlx::{Connection as _, PgConnection};
use std::time::Duration;
use testcontainers_modules::kafka::apache::{self, Kafka};
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::rabbitmq::RabbitMq;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

/// The first start pulls the images, which can take a while.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// The PostgreSQL major version of `docker-compose.yml` (the module's own
/// default, 11, is too old to stand for production).
const POSTGRES_TAG: &str = "17-alpine";
const POSTGRES_USER: &str = "postgres";
const POSTGRES_PASSWORD: &str = "postgres";
const AMQP_PORT: u16 = 5672;
const POSTGRES_PORT: u16 = 5432;

/// How tests reach a container: the Docker host as seen from this process.
async fn host_of<I: testcontainers_modules::testcontainers::Image>(container: &ContainerAsync<I>) -> Result<String> {
    let host = container.get_host().await.context("asking Docker for the container's host")?;
    Ok(host.to_string())
}

/// PostgreSQL (user `postgres`, password `postgres`).
pub struct PostgresContainer {
    container: ContainerAsync<Postgres>,
    host: String,
    port: u16,
}

impl PostgresContainer {
    pub async fn start() -> Result<Self> {
        let container = Postgres::default()
            .with_tag(POSTGRES_TAG)
            .with_startup_timeout(STARTUP_TIMEOUT)
            .start()
            .await
            .context("starting the PostgreSQL container (is Docker running?)")?;
        let host = host_of(&container).await?;
        let port = container.get_host_port_ipv4(POSTGRES_PORT).await.context("PostgreSQL's mapped port")?;
        Ok(Self { container, host, port })
    }

    /// `postgres://postgres:postgres@<host>:<port>/<database>`
    pub fn postgres_url(&self, database: &str) -> String {
        format!(
            "postgres://{POSTGRES_USER}:{POSTGRES_PASSWORD}@{}:{}/{}",
            self.host,
            self.port,
            xtask::infra::percent_encode(database)
        )
    }

    /// Creates a database if it does not exist yet, as the local runner does.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        let created = xtask::infra::create_database_on(&mut connection, name).await;
        connection.close().await.ok();
        created
    }

    /// `SELECT 1` on the `postgres` database.
    pub async fn ping(&self) -> Result<()> {
        let mut connection = self.admin_connection().await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut connection).await.context("SELECT 1")?;
        if one != 1 {
            bail!("SELECT 1 answered {one}");
        }
        connection.close().await.ok();
        Ok(())
    }

    async fn admin_connection(&self) -> Result<PgConnection> {
        let url = self.postgres_url("postgres");
        PgConnection::connect(&url).await.with_context(|| format!("connecting to {url}"))
    }

    /// The container, for anything these helpers do not cover.
    pub fn container(&self) -> &ContainerAsync<Postgres> {
        &self.container
    }
}

/// RabbitMQ with the management plugin (user `guest`, password `guest`).
pub struct RabbitMqContainer {
    container: ContainerAsync<RabbitMq>,
    host: String,
    port: u16,
}

impl RabbitMqContainer {
    pub async fn start() -> Result<Self> {
        let container = RabbitMq::default()
            .with_startup_timeout(STARTUP_TIMEOUT)
            .start()
            .await
            .context("starting the RabbitMQ container (is Docker running?)")?;
        let host = host_of(&container).await?;
        let port = container.get_host_port_ipv4(AMQP_PORT).await.context("RabbitMQ's mapped port")?;
        Ok(Self { container, host, port })
    }

    /// `amqp://guest:guest@<host>:<port>/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}:{}/%2f", self.host, self.port)
    }

    /// Opens a connection and a channel, then closes them.
    pub async fn ping(&self) -> Result<()> {
        let url = self.amqp_url();
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to {url}"))?;
        connection.create_channel().await.context("opening an AMQP channel")?;
        connection.close(200, "ping done".into()).await.context("closing the AMQP connection")?;
        Ok(())
    }

    pub fn container(&self) -> &ContainerAsync<RabbitMq> {
        &self.container
    }
}

/// Apache Kafka, single node in KRaft mode, advertised on `127.0.0.1:<mapped port>`
/// (so it is reachable from this machine only: a remote `DOCKER_HOST` will not do).
pub struct KafkaContainer {
    container: ContainerAsync<Kafka>,
    port: u16,
}

impl KafkaContainer {
    pub async fn start() -> Result<Self> {
        let container = Kafka::default()
            .with_startup_timeout(STARTUP_TIMEOUT)
            .start()
            .await
            .context("starting the Kafka container (is Docker running?)")?;
        let port = container.get_host_port_ipv4(apache::KAFKA_PORT).await.context("Kafka's mapped port")?;
        Ok(Self { container, port })
    }

    /// `127.0.0.1:<port>`, the form librdkafka's `bootstrap.servers` takes.
    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Fetches the cluster metadata and checks that it names a broker.
    pub async fn ping(&self) -> Result<()> {
        let brokers = self.kafka_brokers();
        // librdkafka's metadata call blocks: keep it off the async workers.
        tokio::task::spawn_blocking(move || -> Result<()> {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .with_context(|| format!("creating a Kafka client for {brokers}"))?;
            let metadata = consumer
                .fetch_metadata(None, Duration::from_secs(10))
                .with_context(|| format!("fetching metadata from {brokers}"))?;
            if metadata.brokers().is_empty() {
                bail!("{brokers} answered with no broker in its metadata");
            }
            Ok(())
        })
        .await
        .context("the Kafka metadata task panicked")?
    }

    pub fn container(&self) -> &ContainerAsync<Kafka> {
        &self.container
    }
}

/// The three together, shaped like the local runner's `xtask::Stack`.
pub struct Containers {
    pub postgres: PostgresContainer,
    pub rabbitmq: RabbitMqContainer,
    pub kafka: KafkaContainer,
}

impl Containers {
    /// Starts PostgreSQL, RabbitMQ and Kafka side by side and waits for all three.
    pub async fn start() -> Result<Self> {
        let (postgres, rabbitmq, kafka) =
            tokio::try_join!(PostgresContainer::start(), RabbitMqContainer::start(), KafkaContainer::start())?;
        Ok(Self { postgres, rabbitmq, kafka })
    }

    pub fn postgres_url(&self, database: &str) -> String {
        self.postgres.postgres_url(database)
    }

    pub fn amqp_url(&self) -> String {
        self.rabbitmq.amqp_url()
    }

    pub fn kafka_brokers(&self) -> String {
        self.kafka.kafka_brokers()
    }

    pub async fn create_database(&self, name: &str) -> Result<()> {
        self.postgres.create_database(name).await
    }

    /// Checks that each of the three answers its own protocol.
    pub async fn ping(&self) -> Result<()> {
        tokio::try_join!(self.postgres.ping(), self.rabbitmq.ping(), self.kafka.ping())?;
        Ok(())
    }
}

//! Why a check could not be made.

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("connecting to the {service} database: {error}")]
    Connect { service: &'static str, error: sqlx::Error },
    #[error("reading the {service} database: {error}")]
    Query { service: &'static str, error: sqlx::Error },
    #[error("accepted-orders list, line {line}: `{text}` is not an order id")]
    AcceptedId { line: usize, text: String },
    #[error("RabbitMQ: {0}")]
    Amqp(String),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error("RabbitMQ or Kafka: {0}")]
    Broker(String),
}

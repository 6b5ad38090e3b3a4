//! The tools' one error type.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("`{name}` is not a dead-letter destination here; valid names: {}", valid.join(", "))]
    UnknownDestination { name: String, valid: Vec<String> },
    #[error("no message with id `{message_id}` in {destination}")]
    MessageNotFound { destination: String, message_id: String },
    /// The request makes no sense for this destination (e.g. an offset for a queue).
    #[error("{0}")]
    Unsupported(String),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("replay to {destination} failed after {replayed} message(s), at message {message_id:?}: {reason}")]
    ReplayFailed { destination: String, message_id: Option<String>, replayed: u64, reason: String },
    #[error("timed out after {after:?} {doing}")]
    Timeout { after: Duration, doing: String },
    #[error("background task failed: {0}")]
    Task(String),
}

impl DeadLetterError {
    /// The broker could not be reached or answered with an error: worth retrying later.
    pub fn is_broker_error(&self) -> bool {
        matches!(
            self,
            DeadLetterError::Amqp(_)
                | DeadLetterError::Kafka(_)
                | DeadLetterError::Timeout { .. }
                | DeadLetterError::ReplayFailed { .. }
        )
    }
}

pub type Result<T, E = DeadLetterError> = std::result::Result<T, E>;

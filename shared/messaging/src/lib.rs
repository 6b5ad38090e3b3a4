//! Reliable messaging: transactional outbox, relay, idempotent inbox, and the
//! broker plumbing for RabbitMQ (commands, replies) and Kafka (events).
//!
//! Where to look:
//! - [`outbox`]: write a message in the caller's transaction.
//! - [`relay`]: publish committed outbox rows with broker confirmation.
//! - [`inbox`]: record a received message in the handler's transaction.
//! - [`consumer`]: the receive pipeline shared by both brokers (inbox,
//!   handler, retries, dead letters); [`amqp_consumer`] and [`kafka_consumer`]
//!   feed it.

pub mod amqp;
pub mod amqp_consumer;
pub mod consumer;
pub mod crash;
pub mod db_errors;
pub mod db_span;
pub mod dead_letter;
pub mod deadline;
pub mod inbox;
pub mod kafka;
pub mod kafka_consumer;
pub mod log_tailing;
pub mod migrations;
pub mod outbox;
mod outbox_publisher;
pub mod processing_delay;
pub mod relay;
pub mod retention;
pub mod retry;
pub mod safety;
pub mod secret;
pub mod wire;

pub use consumer::{HandlerError, IncomingMessage, MessageHandler, MessageSource};
pub use inbox::{Inbox, InboxOutcome};
pub use outbox::{Destination, MessageFactory, Outbox, OutboxMessage};
pub use relay::{OutboxRelay, RelayConfig};

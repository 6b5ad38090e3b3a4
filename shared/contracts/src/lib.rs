//! The message contracts shared by every service: the envelope every message
//! carries, the catalogue of commands, replies and events, and the names of the
//! queues and topics they travel on.
//!
//! This crate knows nothing about brokers or databases; `messaging` maps the
//! envelope onto AMQP properties and Kafka headers.

pub mod catalogue;
pub mod envelope;
pub mod topology;

pub use catalogue::MessageContract;
pub use envelope::{Envelope, EnvelopeError};
pub use topology::Topology;

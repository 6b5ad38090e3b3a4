//! A model of the messaging protocol of `shared/messaging`, checked with
//! stateright: a business write and its outbox row in one transaction; a
//! relay (two instances) that publishes a lane's rows in id order under the
//! lane's advisory lock and marks only the confirmed prefix sent; a broker
//! that keeps what it stored and redelivers what was not acknowledged; a
//! consumer that writes its inbox row in the effect's transaction and
//! acknowledges after the commit. Relays and consumer crash at any step.
//!
//! Properties: no effect applied twice, an order's effects in commit
//! order, and nothing lost once nothing is left to do. Variants remove one
//! guarantee each to show the properties notice. See docs/protocol-model.md.

pub mod actions;
pub mod check;
pub mod config;
pub mod consumer;
pub mod describe;
pub mod model;
pub mod producer;
pub mod properties;
pub mod relay;
pub mod state;

pub use check::{CheckReport, Search, run};
pub use config::{ModelConfig, Variant};
pub use model::OutboxProtocol;

//! What every service has in common, so each service crate holds only its
//! domain: configuration from the environment, the HTTP error type and JSON
//! extractor, health and metrics routes, the database pool, and a host that
//! runs background tasks and shuts everything down within a deadline.

pub mod admin;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod host;
pub mod http;
pub mod json;
pub mod openapi;
pub mod operational_routes;
pub mod process;
pub mod sync_twin;

pub use config::{CommonConfig, ConfigError, env_or, env_parse};
pub use error::{ApiError, identifier_problem};
pub use extract::{Identifier, OrderIdQuery, PathParam, ValidQuery};
pub use host::ServiceHost;
pub use json::ApiJson;

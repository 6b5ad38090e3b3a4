//! The six services' OpenAPI 3.1 documents. Each service builds its own
//! (`<service>::openapi()`, from the `#[utoipa::path]` of the handlers it
//! routes, the same document it serves at `/openapi.json`); this module only
//! collects them, to commit them as `docs/api/<service>.openapi.json`.

use crate::SpecError;
use serde_json::Value;
use std::path::PathBuf;

/// Every service with an HTTP API, in the saga's order.
pub const SERVICES: [&str; 6] = ["order", "stock", "payment", "shipping", "email", "loyalty"];

/// `service`'s document, or `None` for a name that is not a service.
pub fn openapi_document(service: &str) -> Option<Result<Value, SpecError>> {
    let document = match service {
        "order" => order_service::openapi(),
        "stock" => stock_service::openapi(),
        "payment" => payment_service::openapi(),
        "shipping" => shipping_service::openapi(),
        "email" => email_service::openapi(),
        "loyalty" => loyalty_service::openapi(),
        _ => return None,
    };
    Some(serde_json::to_value(document).map_err(SpecError::Render))
}

/// Where `service`'s document is committed, relative to the workspace root.
pub fn openapi_relative_path(service: &str) -> String {
    format!("docs/api/{service}.openapi.json")
}

/// The committed document's absolute path.
pub fn openapi_path(service: &str) -> PathBuf {
    crate::workspace_root().join(openapi_relative_path(service))
}

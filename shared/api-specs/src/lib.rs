//! The APIs of ordermesh as documents: each service's HTTP API in OpenAPI
//! 3.1 (built by the service, src/openapi.rs), and the message API in
//! AsyncAPI 3.0, described below.
//!
//! The message API of ordermesh as an AsyncAPI 3.0 document, built from
//! `contracts`: the channels from `Topology` (with the default, empty
//! namespace), the payload and envelope schemas from `schemars`, samples
//! serialized by serde. The document is committed as
//! [`DOCUMENT_PATH`]; `cargo run -p api-specs` writes it again, and
//! tests/drift.rs fails when the code and the file disagree.
//!
//! What `contracts` cannot say is stated here and checked elsewhere: who
//! sends and handles each message (src/catalogue.rs, as docs/design.md) and
//! how `messaging` puts the envelope on each broker (src/headers.rs, held to
//! `messaging` by tests/wire.rs).

mod catalogue;
mod document;
mod examples;
mod headers;
mod openapi;

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub use document::document;
pub use openapi::{SERVICES, openapi_document, openapi_path, openapi_relative_path};

pub const ASYNCAPI_VERSION: &str = "3.0.0";
pub(crate) const AMQP_BINDING_VERSION: &str = "0.3.0";
pub(crate) const KAFKA_BINDING_VERSION: &str = "0.5.0";

/// Where the document is committed, relative to the workspace root.
pub const DOCUMENT_PATH: &str = "docs/api/asyncapi.json";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the sample payload of {message_type} does not serialize: {source}")]
    Example { message_type: &'static str, source: serde_json::Error },
    #[error("the envelope's schema is unusable: {0}")]
    Envelope(&'static str),
    #[error("two schemas are named `{0}` in components.schemas")]
    SchemaName(String),
    #[error("rendering the document: {0}")]
    Render(serde_json::Error),
}

/// The workspace root (this crate is `shared/api-specs`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.ancestors().nth(2).unwrap_or(manifest).to_path_buf()
}

/// The committed document's absolute path.
pub fn document_path() -> PathBuf {
    workspace_root().join(DOCUMENT_PATH)
}

/// The document as committed: pretty JSON, keys sorted at every level (so
/// the file does not depend on serde_json's `preserve_order` feature being
/// unified in by another crate), with a trailing newline.
pub fn render(document: &Value) -> Result<String, SpecError> {
    let mut text = serde_json::to_string_pretty(&sorted(document)).map_err(SpecError::Render)?;
    text.push('\n');
    Ok(text)
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let sorted: Map<String, Value> =
                keys.into_iter().filter_map(|k| map.get(k).map(|v| (k.clone(), sorted(v)))).collect();
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rendering_sorts_keys_at_every_level_and_ends_with_a_newline() {
        let text = render(&json!({"b": 1, "a": {"d": [{"z": 0, "y": 1}], "c": 2}})).unwrap();
        assert_eq!(
            text,
            "{\n  \"a\": {\n    \"c\": 2,\n    \"d\": [\n      {\n        \"y\": 1,\n        \"z\": 0\n      }\n    ]\n  },\n  \"b\": 1\n}\n"
        );
    }
}

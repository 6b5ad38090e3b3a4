//! JSON Schema validation of a schema that lives inside an API document
//! (OpenAPI or AsyncAPI), for the wire checks (http_contract.rs,
//! message_contract.rs).

use jsonschema::{Draft, Validator};
use serde_json::{Value, json};

/// The schema at `pointer`, compiled within the whole document: a root
/// `$ref` to it makes every `#/components/...` reference resolve in place.
/// Formats assert (`uuid`, `date-time`), as a client generated from the
/// document would parse them.
pub fn compile_in_document(document: &Value, pointer: &str, draft: Draft) -> Result<Validator, String> {
    let mut schema = document.clone();
    if let Value::Object(root) = &mut schema {
        // A pointer is a URI fragment here: `/orders/{id}` needs its braces escaped.
        let fragment = pointer.replace('%', "%25").replace('{', "%7B").replace('}', "%7D");
        root.insert("$ref".into(), json!(format!("#{fragment}")));
    }
    jsonschema::options()
        .with_draft(draft)
        .should_validate_formats(true)
        // Not a draft-7 format; AsyncAPI's and OpenAPI's documents use it.
        .with_format("uuid", |value: &str| uuid::Uuid::try_parse(value).is_ok())
        .build(&schema)
        .map_err(|e| format!("compiling the schema at {pointer}: {e}"))
}

/// A name as a JSON pointer segment.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

//! Every HTTP answer the system tests read through [`TestSystem`](crate::TestSystem)
//! is held to the service's committed OpenAPI document
//! (docs/api/<service>.openapi.json): the status must be documented for the
//! operation, the content type must be the documented one, and a JSON body
//! must validate against the documented schema. A test that gets an answer
//! the document does not describe fails, whatever it asserts itself.

use crate::schema_check::{compile_in_document, escape};
use jsonschema::{Draft, Validator};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// One service's document and the validators compiled from it so far.
pub struct HttpContract {
    service: String,
    document: Value,
    validators: HashMap<String, Arc<Validator>>,
}

/// An answer as a test received it.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub method: &'a str,
    /// The request's path, with or without its query string.
    pub path: &'a str,
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub body: &'a str,
}

impl HttpContract {
    /// The committed document of `service`.
    pub fn load(service: &str) -> Result<HttpContract, String> {
        let path = api_specs::openapi_path(service);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let document = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(HttpContract::new(service, document))
    }

    pub fn new(service: &str, document: Value) -> HttpContract {
        HttpContract { service: service.to_owned(), document, validators: HashMap::new() }
    }

    /// Why `answer` contradicts the document, if it does.
    pub fn check(&mut self, answer: &Answer<'_>) -> Result<(), String> {
        let path = answer.path.split('?').next().unwrap_or_default();
        let template = self
            .template_of(path)
            .ok_or_else(|| format!("{}: {} {path} is not in the document", self.service, answer.method))?;
        let method = answer.method.to_ascii_lowercase();
        let operation = &self.document["paths"][&template][&method];
        if operation.is_null() {
            return Err(format!("{}: {} {template} is not in the document", self.service, answer.method));
        }
        let status = answer.status.to_string();
        let mut pointer = format!("/paths/{}/{method}/responses/{status}", escape(&template));
        let mut response = &operation["responses"][&status];
        if response.is_null() {
            return Err(format!(
                "{}: {} {template} answered {status}, which the document does not list (it lists {})",
                self.service,
                answer.method,
                operation["responses"]
                    .as_object()
                    .map(|r| r.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ));
        }
        if let Some(reference) = response["$ref"].as_str() {
            pointer = reference.trim_start_matches('#').to_owned();
            response = self.document.pointer(&pointer).unwrap_or(&Value::Null);
        }
        let Some(content) = response["content"].as_object() else {
            return Ok(());
        };
        let media = answer.content_type.and_then(|c| c.split(';').next()).map(str::trim).unwrap_or_default();
        if !content.contains_key(media) {
            return Err(format!(
                "{}: {} {template} {status} came as `{media}`; the document says {:?}",
                self.service,
                answer.method,
                content.keys().collect::<Vec<_>>()
            ));
        }
        if media != "application/json" {
            return Ok(());
        }
        let body: Value = serde_json::from_str(answer.body).map_err(|e| {
            format!("{}: {} {template} {status}: the body is not JSON ({e})", self.service, answer.method)
        })?;
        let schema_pointer = format!("{pointer}/content/application~1json/schema");
        let validator = self.validator(&schema_pointer)?;
        let errors: Vec<String> =
            validator.iter_errors(&body).map(|e| format!("{} at `{}`", e, e.instance_path())).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{}: {} {template} {status}: the body contradicts the document: {}\nbody: {body}",
                self.service,
                answer.method,
                errors.join("; ")
            ))
        }
    }

    /// The document's path template for `path`: literal segments first
    /// (`/orders/sync` before `/orders/{id}`), as the router matches.
    fn template_of(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let templates = self.document["paths"].as_object()?;
        templates
            .keys()
            .filter_map(|template| {
                let parts: Vec<&str> = template.split('/').collect();
                if parts.len() != segments.len() {
                    return None;
                }
                let mut literal = 0;
                for (part, segment) in parts.iter().zip(&segments) {
                    if part.starts_with('{') && part.ends_with('}') {
                        if segment.is_empty() {
                            return None;
                        }
                    } else if part == segment {
                        literal += 1;
                    } else {
                        return None;
                    }
                }
                Some((literal, template))
            })
            .max_by_key(|(literal, _)| *literal)
            .map(|(_, template)| template.clone())
    }

    fn validator(&mut self, pointer: &str) -> Result<Arc<Validator>, String> {
        if let Some(validator) = self.validators.get(pointer) {
            return Ok(validator.clone());
        }
        // OpenAPI 3.1's schemas are JSON Schema 2020-12.
        let validator = Arc::new(compile_in_document(&self.document, pointer, Draft::Draft202012)?);
        self.validators.insert(pointer.to_owned(), validator.clone());
        Ok(validator)
    }
}

/// Checks `answer` against `service`'s committed document (loaded once per
/// test process).
pub fn check(service: &str, answer: &Answer<'_>) -> Result<(), String> {
    static CONTRACTS: OnceLock<Mutex<HashMap<String, HttpContract>>> = OnceLock::new();
    let contracts = CONTRACTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut contracts = contracts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !contracts.contains_key(service) {
        contracts.insert(service.to_owned(), HttpContract::load(service)?);
    }
    match contracts.get_mut(service) {
        Some(contract) => contract.check(answer),
        None => Err(format!("no document for {service}")),
    }
}

#[cfg(test)]
mod tests {
    //! Negative controls: answers the document does not describe are refused.

    use super::*;

    fn answer<'a>(method: &'a str, path: &'a str, status: u16, body: &'a str) -> Answer<'a> {
        Answer { method, path, status, content_type: Some("application/json"), body }
    }

    fn order() -> HttpContract {
        HttpContract::load("order").expect("the committed order document")
    }

    #[test]
    fn answers_as_documented_pass() {
        let mut order = order();
        let placed = r#"{"order_id":"0190a0a0-0000-7000-8000-000000000000","status":"PLACED","location":"/orders/0190a0a0-0000-7000-8000-000000000000"}"#;
        order.check(&answer("POST", "/orders", 202, placed)).expect("a 202 as documented");
        let error = r#"{"error":{"code":"validation_failed","message":"unknown","field":"payment_method"}}"#;
        order.check(&answer("POST", "/orders", 422, error)).expect("a 422 as documented");
        let missing = r#"{"error":{"code":"not_found","message":"no order"}}"#;
        order.check(&answer("GET", "/orders/0190a0a0-0000-7000-8000-000000000000", 404, missing)).expect("a 404");
        order
            .check(&answer("GET", "/orders?customer_id=c-1", 200, r#"{"customer_id":"c-1","orders":[]}"#))
            .expect("a list");
    }

    #[test]
    fn an_undocumented_status_is_refused() {
        let error = order().check(&answer("GET", "/orders/x", 409, r#"{"error":{"code":"conflict","message":"m"}}"#));
        assert!(error.expect_err("409 is not documented for GET /orders/{id}").contains("does not list"));
    }

    #[test]
    fn a_body_that_contradicts_its_schema_is_refused() {
        let wrong_status = r#"{"order_id":"0190a0a0-0000-7000-8000-000000000000","status":"SHIPPED","location":"/x"}"#;
        let error = order().check(&answer("POST", "/orders", 202, wrong_status)).expect_err("SHIPPED is no status");
        assert!(error.contains("contradicts"), "{error}");
        let no_code = r#"{"error":{"message":"m"}}"#;
        order().check(&answer("POST", "/orders", 422, no_code)).expect_err("an error body without its code");
    }

    #[test]
    fn a_wrong_content_type_or_an_unknown_route_is_refused() {
        let mut order = order();
        let text = Answer { content_type: Some("text/plain"), ..answer("GET", "/health/live", 200, "live") };
        order.check(&text).expect_err("/health/live answers JSON");
        order.check(&answer("GET", "/nowhere", 200, "{}")).expect_err("no such route");
        order.check(&answer("DELETE", "/orders", 200, "{}")).expect_err("no such operation");
    }

    #[test]
    fn a_literal_segment_wins_over_a_parameter() {
        let order = order();
        assert_eq!(order.template_of("/orders/sync").as_deref(), Some("/orders/sync"));
        assert_eq!(order.template_of("/orders/abc").as_deref(), Some("/orders/{id}"));
    }
}

//! `ApiJson<T>`: a JSON body extractor whose errors name the offending field
//! (`lines[1].quantity: invalid type: string "x", expected i32`), mapped to
//! [`ApiError`] like every other error.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json") || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

/// Parses `bytes` as `T`, naming the path of the first offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every request body of this API is an object; say so rather than report
    // the first element of an array as a field.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::BadRequest("the request body is empty".into())),
        Some(b'{') => {}
        Some(b'[' | b'"' | b't' | b'f' | b'n' | b'-' | b'0'..=b'9') => {
            return Err(ApiError::validation("body", "must be a JSON object"));
        }
        Some(_) => {}
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => {
            de.end().map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
            Ok(value)
        }
        Err(e) => {
            if e.inner().to_string().starts_with("invalid type: floating point") {
                if let Some(value) = with_whole_numbers_as_integers(bytes) {
                    return Ok(value);
                }
            }
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::BadRequest(format!("malformed JSON: {inner}")));
            }
            let message = inner.to_string();
            // serde reports a missing or repeated field at the parent; name
            // the field itself.
            let named = ["missing field `", "duplicate field `"]
                .iter()
                .find_map(|prefix| message.strip_prefix(prefix))
                .and_then(|m| m.split('`').next());
            let field = match named {
                Some(missing) if path == "." => missing.to_owned(),
                Some(missing) => format!("{path}.{missing}"),
                None if path == "." => "body".to_owned(),
                None => path,
            };
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            Err(ApiError::Validation { field, message })
        }
    }
}

/// JSON does not tell `2` from `2.0`, and JSON Schema (the OpenAPI
/// documents) calls both integers; serde refuses `2.0` for an integer
/// field. A body refused for that alone is read again with every whole
/// number as an integer. Only then, so that the first reading still sees
/// what a `Value` would hide (a repeated field).
fn with_whole_numbers_as_integers<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    fn normalize(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Number(number) => {
                let whole = number.as_f64().filter(|f| f.fract() == 0.0 && number.is_f64());
                // Within ±2^53 a float is an exact integer; beyond, leave it refused.
                if let Some(whole) = whole.filter(|f| f.abs() <= 9_007_199_254_740_992.0) {
                    *number = serde_json::Number::from(whole as i64);
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(normalize),
            serde_json::Value::Object(map) => map.values_mut().for_each(normalize),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    normalize(&mut value);
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Line {
        sku: String,
        quantity: i32,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        customer_id: String,
        lines: Vec<Line>,
    }

    fn field_of(json: &str) -> String {
        match parse::<Body>(json.as_bytes()) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"lines": []}"#), "customer_id");
        assert_eq!(field_of(r#"{"customer_id": 5, "lines": []}"#), "customer_id");
        assert_eq!(field_of(r#"{"customer_id": "c", "lines": [{"sku": "a", "quantity": "x"}]}"#), "lines[0].quantity");
        assert_eq!(field_of(r#"{"customer_id": "c", "lines": [{"quantity": 1}]}"#), "lines[0].sku");
        assert_eq!(field_of(r#"[1, 2]"#), "body");
        assert_eq!(field_of(r#"{"customer_id": "a", "customer_id": "b", "lines": []}"#), "customer_id");
        assert_eq!(
            field_of(r#"{"customer_id": "c", "lines": [{"sku": "a", "sku": "b", "quantity": 1}]}"#),
            "lines[0].sku"
        );
    }

    #[test]
    fn a_whole_number_written_as_a_float_is_an_integer() {
        let body = parse::<Body>(br#"{"customer_id": "c", "lines": [{"sku": "a", "quantity": 2.0}]}"#).unwrap();
        assert_eq!(body.lines[0].quantity, 2);
        assert_eq!(field_of(r#"{"customer_id": "c", "lines": [{"sku": "a", "quantity": 2.5}]}"#), "lines[0].quantity");
    }

    #[test]
    fn syntax_errors_are_bad_requests() {
        assert!(matches!(parse::<Body>(b"{not json"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse::<Body>(b""), Err(ApiError::BadRequest(_))));
        assert!(matches!(
            parse::<Body>(br#"{"customer_id": "c", "lines": []} trailing"#),
            Err(ApiError::BadRequest(_))
        ));
    }
}

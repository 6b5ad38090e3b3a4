//! One error type for every HTTP handler: 4xx with a JSON body that says what
//! is wrong and where; 5xx opaque to the client and logged with detail.
//!
//! Body: `{"error": {"code": "...", "message": "...", "field": "lines[0].quantity"}}`

use crate::openapi::{ErrorBody, ErrorDetail};
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The longest identifier (customer id, SKU) the API accepts.
pub const MAX_IDENTIFIER_LEN: usize = 64;

/// What is wrong with `value` as an identifier of the kind the API accepts
/// (customer ids, SKUs, payment methods): 1 to [`MAX_IDENTIFIER_LEN`] ASCII
/// letters, digits, `-`, `_` or `.`. Anything else (a NUL byte PostgreSQL
/// refuses, control characters, non-ASCII) can name nothing that exists.
pub fn identifier_problem(value: &str) -> Option<String> {
    if value.is_empty() || value.len() > MAX_IDENTIFIER_LEN {
        return Some(format!("must be 1 to {MAX_IDENTIFIER_LEN} characters"));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Some("may contain only letters, digits, '-', '_' and '.'".to_owned());
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, of the wrong type or out of range.
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    /// A path or query parameter is malformed.
    #[error("{field}: {message}")]
    InvalidParameter { field: String, message: String },
    /// The body is not JSON at all, or the request is otherwise malformed.
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is larger than this service accepts")]
    PayloadTooLarge,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The service is protecting itself; the client should retry later.
    #[error("{reason}")]
    Unavailable { reason: String, retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation { field: field.into(), message: message.into() }
    }

    pub fn invalid_parameter(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParameter { field: field.into(), message: message.into() }
    }

    /// Parses a path or query parameter that must be a UUID.
    pub fn parse_uuid(field: &str, value: &str) -> Result<uuid::Uuid, Self> {
        value.parse().map_err(|_| Self::invalid_parameter(field, format!("`{value}` is not a UUID")))
    }

    /// Checks a path or query parameter that must be an identifier (see
    /// [`identifier_problem`]): a 400, never a database error.
    pub fn parse_identifier<'v>(field: &str, value: &'v str) -> Result<&'v str, Self> {
        match identifier_problem(value) {
            Some(problem) => Err(Self::invalid_parameter(field, problem)),
            None => Ok(value),
        }
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) | ApiError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { .. } => "validation_failed",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// A path parameter axum could not extract (e.g. percent-encoded bytes
/// that are not UTF-8): a 400 naming the parameter, like any other.
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        if let PathRejection::FailedToDeserializePathParams(e) = &rejection {
            match e.kind() {
                ErrorKind::InvalidUtf8InPathParam { key } => {
                    return Self::invalid_parameter(key, "is not valid UTF-8 once percent-decoded");
                }
                ErrorKind::ParseErrorAtKey { key, expected_type, .. } => {
                    return Self::invalid_parameter(key, format!("is not a valid {expected_type}"));
                }
                ErrorKind::DeserializeError { key, message, .. } => return Self::invalid_parameter(key, message),
                _ => {}
            }
        }
        if rejection.status().is_server_error() {
            // A handler asking for parameters its route does not have.
            return Self::Internal(rejection.body_text().into());
        }
        Self::BadRequest(rejection.body_text())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if messaging::db_errors::is_transient_db_error(&e) {
            // Database down or pool exhausted: tell the client to come back.
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::Unavailable { reason: "the database is unavailable".into(), retry_after_secs: 1 };
        }
        ApiError::internal(e)
    }
}

impl From<messaging::outbox::OutboxError> for ApiError {
    fn from(e: messaging::outbox::OutboxError) -> Self {
        match e {
            messaging::outbox::OutboxError::Database(db) => db.into(),
            other => ApiError::internal(other),
        }
    }
}

/// A handler's domain logic called synchronously (the services' `sync_api`):
/// a request it can never apply is the caller's error, a failure is ours.
impl From<messaging::HandlerError> for ApiError {
    fn from(e: messaging::HandlerError) -> Self {
        match e {
            messaging::HandlerError::Poison(reason) => ApiError::BadRequest(reason),
            messaging::HandlerError::Database(db) => db.into(),
            messaging::HandlerError::Outbox(outbox) => outbox.into(),
            failed @ messaging::HandlerError::Failed(_) => ApiError::internal(failed),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut error = ErrorDetail { code: self.code().to_owned(), message: self.to_string(), field: None };
        match &self {
            ApiError::Validation { field, message } | ApiError::InvalidParameter { field, message } => {
                error.field = Some(field.clone());
                error.message = message.clone();
            }
            ApiError::Internal(source) => {
                tracing::error!(error = %source, "internal error");
            }
            _ => {}
        }
        let mut response = (status, axum::Json(ErrorBody { error })).into_response();
        if let ApiError::Unavailable { retry_after_secs, .. } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_validation_error_names_the_field() {
        let response = ApiError::validation("lines[0].quantity", "must be at least 1").into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["field"], "lines[0].quantity");
        assert_eq!(body["error"]["code"], "validation_failed");
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let response = ApiError::Unavailable { reason: "busy".into(), retry_after_secs: 2 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}

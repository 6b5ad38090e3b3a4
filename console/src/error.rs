//! Every error of the console's routes and the HTTP status it is: the one
//! place they are mapped. Bodies have the services' shape,
//! `{"error": {"code": "...", "message": "..."}}`; pages get a small HTML
//! page with the same message.

use crate::order_service::OrderServiceError;
use crate::otlp::OtlpError;
use crate::process_control::ControlError;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{field}: {message}")]
    InvalidParameter { field: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("missing or invalid bearer token (Authorization: Bearer <ADMIN_TOKEN>)")]
    Unauthorized,
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    OrderService(#[from] OrderServiceError),
    /// The span store is unreachable (PostgreSQL down) or too slow.
    #[error("the console's span store is unavailable: {0}")]
    Store(#[from] sqlx::Error),
    /// Spans arrive faster than they can be stored: the export is refused
    /// at once rather than slowing the sender.
    #[error("the console is behind on storing spans; this export was dropped")]
    Overloaded,
}

impl ConsoleError {
    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::BadRequest(_) | ConsoleError::InvalidParameter { .. } | ConsoleError::Otlp(_) => {
                StatusCode::BAD_REQUEST
            }
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Unauthorized => StatusCode::UNAUTHORIZED,
            ConsoleError::Control(e) => match e {
                ControlError::UnknownComponent(_) | ControlError::UnknownAction(_) => StatusCode::BAD_REQUEST,
                ControlError::NotOwned(_) | ControlError::Busy(_) => StatusCode::CONFLICT,
                ControlError::Failed { .. } => StatusCode::BAD_GATEWAY,
            },
            ConsoleError::OrderService(OrderServiceError::Refused { status, .. }) if *status < 500 => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ConsoleError::OrderService(_) => StatusCode::BAD_GATEWAY,
            ConsoleError::Store(_) | ConsoleError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> String {
        self.status().canonical_reason().unwrap_or("error").to_ascii_lowercase().replace([' ', '-'], "_")
    }

    /// The same error as a page, for the routes a browser opens.
    pub fn into_page(self) -> Response {
        let status = self.status();
        let message = html_escape(&self.to_string());
        let title = status.canonical_reason().unwrap_or("Error");
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · ordermesh console</title>\
             <link rel=\"stylesheet\" href=\"/assets/console.css\"></head><body class=\"error-page\">\
             <main><h1>{} {title}</h1><p id=\"error-message\">{message}</p><p><a href=\"/\">Back to the system map</a></p>\
             </main></body></html>",
            status.as_u16()
        );
        (status, Html(body)).into_response()
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "console request failed");
        }
        let body = serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
        (status, axum::Json(body)).into_response()
    }
}

pub fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status() {
        assert_eq!(ConsoleError::Control(ControlError::UnknownComponent("x".into())).status(), 400);
        assert_eq!(ConsoleError::Control(ControlError::NotOwned("compose".into())).status(), 409);
        assert_eq!(ConsoleError::NotFound("no order".into()).status(), 404);
        assert_eq!(ConsoleError::Overloaded.status(), 503);
        let refused = OrderServiceError::Refused { status: 422, body: String::new() };
        assert_eq!(ConsoleError::OrderService(refused).status(), 422);
    }

    #[test]
    fn a_page_never_echoes_markup() {
        assert_eq!(html_escape("<script>\"x\"&"), "&lt;script&gt;&quot;x&quot;&amp;");
    }
}

//! Admin routes for the dead letters of this service's consumers, served only
//! when `ADMIN_TOKEN` is set, each behind `Authorization: Bearer <token>`:
//!
//! - `GET  /admin/dead-letters`: this service's dead-letter destinations and their pending counts
//! - `GET  /admin/dead-letters/{dlq}?limit=N`: pending letters, left in place
//! - `GET  /admin/dead-letters/{dlq}/{message_id}`: one letter in full
//! - `POST /admin/dead-letters/{dlq}/replay`: body `{"message_id": "…"}` for one, or empty for all
//!   (Kafka also `{"up_to": {"partition": 0, "offset": 12}}`)
//! - `POST /admin/dead-letters/{dlq}/purge`
//!
//! A destination this service does not consume from is 404, like a missing one.

use crate::config::Secret;
use crate::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dead_letters::{DeadLetterError, DeadLetters, Destination, KafkaPosition, ReplaySelection};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Clone)]
struct AdminState {
    token: Secret,
    dead_letters: Arc<DeadLetters>,
    /// The dead-letter destinations this service's consumers write to.
    destinations: Arc<Vec<Destination>>,
}

impl AdminState {
    fn own(&self, dlq: &str) -> Result<&Destination, ApiError> {
        self.destinations
            .iter()
            .find(|d| d.name == dlq)
            .ok_or_else(|| ApiError::NotFound(format!("`{dlq}` is not a dead-letter destination of this service")))
    }
}

/// The admin routes for `destinations`, the ones this service's consumers write to.
pub fn routes(token: Secret, dead_letters: DeadLetters, destinations: Vec<Destination>) -> Router {
    let state = AdminState { token, dead_letters: Arc::new(dead_letters), destinations: Arc::new(destinations) };
    Router::new()
        .route("/admin/dead-letters", get(summary))
        .route("/admin/dead-letters/{dlq}", get(list))
        .route("/admin/dead-letters/{dlq}/{message_id}", get(show))
        .route("/admin/dead-letters/{dlq}/replay", post(replay))
        .route("/admin/dead-letters/{dlq}/purge", post(purge))
        // route_layer: only matched routes ask for the token; others stay 404.
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.expose().as_bytes()) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Compares every byte whatever the first difference, so the time taken does
/// not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn api_error(e: DeadLetterError) -> ApiError {
    match e {
        DeadLetterError::UnknownDestination { .. } | DeadLetterError::MessageNotFound { .. } => {
            ApiError::NotFound(e.to_string())
        }
        DeadLetterError::Unsupported(reason) => ApiError::Conflict(reason),
        // The broker is down or refused: the operator should retry later.
        e if e.is_broker_error() => {
            tracing::warn!(error = %e, "dead-letter administration failed");
            ApiError::Unavailable { reason: e.to_string(), retry_after_secs: 5 }
        }
        e => ApiError::internal(e),
    }
}

async fn summary(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let counts = state.dead_letters.pending(&state.destinations).await.map_err(api_error)?;
    Ok(axum::Json(json!({ "dead_letter_destinations": counts })).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list(
    State(state): State<AdminState>,
    Path(dlq): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let destination = state.own(&dlq)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid_parameter("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    let letters = state.dead_letters.list(destination, limit).await.map_err(api_error)?;
    Ok(axum::Json(json!({ "dead_letter_destination": dlq, "count": letters.len(), "dead_letters": letters }))
        .into_response())
}

async fn show(
    State(state): State<AdminState>,
    Path((dlq, message_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let destination = state.own(&dlq)?;
    let letter = state.dead_letters.show(destination, &message_id).await.map_err(api_error)?;
    Ok(axum::Json(letter).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    message_id: Option<String>,
    up_to: Option<KafkaPosition>,
}

async fn replay(State(state): State<AdminState>, Path(dlq): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let destination = state.own(&dlq)?;
    // No body means all; a body must be JSON.
    let request: ReplayRequest =
        if body.iter().all(u8::is_ascii_whitespace) { ReplayRequest::default() } else { crate::json::parse(&body)? };
    let selection = match request {
        ReplayRequest { message_id: Some(_), up_to: Some(_) } => {
            return Err(ApiError::BadRequest("give either message_id or up_to, not both".into()));
        }
        ReplayRequest { message_id: Some(id), .. } => ReplaySelection::Message(id),
        ReplayRequest { up_to: Some(position), .. } => ReplaySelection::UpTo(position),
        ReplayRequest { .. } => ReplaySelection::All,
    };
    let report = state.dead_letters.replay(destination, &selection).await.map_err(api_error)?;
    Ok(axum::Json(report).into_response())
}

async fn purge(State(state): State<AdminState>, Path(dlq): Path<String>) -> Result<Response, ApiError> {
    let destination = state.own(&dlq)?;
    let report = state.dead_letters.purge(destination).await.map_err(api_error)?;
    Ok(axum::Json(report).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use contracts::Topology;
    use tower::ServiceExt;

    fn app() -> Router {
        // Brokers nowhere: these requests must be decided before any broker call.
        let dl = DeadLetters::new("amqp://guest:guest@127.0.0.1:1/%2f", "127.0.0.1:1", Topology::default());
        routes(Secret::new("s3cret"), dl, vec![Destination::rabbitmq("stock.commands")])
    }

    async fn status(request: axum::http::Request<Body>) -> StatusCode {
        app().oneshot(request).await.unwrap().status()
    }

    fn get(path: &str, auth: Option<&str>) -> axum::http::Request<Body> {
        let mut builder = axum::http::Request::get(path);
        if let Some(auth) = auth {
            builder = builder.header(header::AUTHORIZATION, auth);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn every_route_wants_the_token() {
        assert_eq!(status(get("/admin/dead-letters", None)).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(get("/admin/dead-letters", Some("Bearer wrong!"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(get("/admin/dead-letters", Some("s3cret"))).await, StatusCode::UNAUTHORIZED);
        let purge = axum::http::Request::post("/admin/dead-letters/stock.commands.dlq/purge").body(Body::empty());
        assert_eq!(status(purge.unwrap()).await, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn a_destination_of_another_service_is_not_found() {
        let request = get("/admin/dead-letters/payment.commands.dlq", Some("Bearer s3cret"));
        assert_eq!(status(request).await, StatusCode::NOT_FOUND);
        let request = get("/admin/dead-letters/stock.commands.dlq?limit=0", Some("Bearer s3cret"));
        assert_eq!(status(request).await, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn tokens_compare_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

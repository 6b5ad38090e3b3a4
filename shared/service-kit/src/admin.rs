//! Admin routes for the dead letters of this service's consumers, served only
//! when `ADMIN_TOKEN` is set, each behind `Authorization: Bearer <token>`:
//!
//! - `GET  /admin/dead-letters`: this service's dead-letter destinations and their pending counts
//! - `GET  /admin/dead-letters/{dlq}?limit=N`: pending letters (N from 1 to 1000, default 100), left in place
//! - `GET  /admin/dead-letters/{dlq}/{message_id}`: one letter in full
//! - `POST /admin/dead-letters/{dlq}/replay`: body `{"message_id": "…"}` for one, or empty for all
//!   (Kafka also `{"up_to": {"partition": 0, "offset": 12}}`); at most
//!   [`dead_letters::MAX_REPLAY_PER_CALL`] letters per call, the report's `remaining` says how many are left
//! - `POST /admin/dead-letters/{dlq}/purge`
//!
//! A destination this service does not consume from is 404, like a missing one.
//! The broker work of a request gets a budget well inside the HTTP request
//! timeout, so a slow or silent broker is answered 503 with `Retry-After`
//! (and a replay reports what it sent) rather than cut off by the timeout.

use crate::config::Secret;
use crate::error::ApiError;
use crate::extract::{FromQueryParams, PathParam, QueryParams, ValidQuery};
use crate::openapi::{Conflict, NotFound};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use dead_letters::{
    DeadLetter, DeadLetterError, DeadLetters, Destination, KafkaPosition, PendingCount, PurgeReport, ReplayReport,
    ReplaySelection,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// AMQP's limit for a message id (a short string); Kafka's are ours, UUIDs.
const MAX_MESSAGE_ID_LEN: usize = 255;
/// No control characters (`char::is_control`), as `message_id_problem` checks.
const MESSAGE_ID_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]+$";
/// Retry-After of a 503 from a broker.
const BROKER_RETRY_AFTER_SECS: u64 = 5;

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

/// The admin routes for `destinations`, the ones this service's consumers
/// write to, on a server whose requests time out after `request_timeout`
/// (broker calls get a share of it, so a slow broker is a 503, not a 408).
pub fn routes(
    token: Secret,
    dead_letters: DeadLetters,
    destinations: Vec<Destination>,
    request_timeout: Duration,
) -> Router {
    let (round_trip, budget) = broker_limits(request_timeout);
    let dead_letters = dead_letters.with_timeout(round_trip).with_budget(budget);
    let state = AdminState { token, dead_letters: Arc::new(dead_letters), destinations: Arc::new(destinations) };
    let (router, _) = api().split_for_parts();
    // route_layer: only matched routes ask for the token; others stay 404.
    router.route_layer(middleware::from_fn_with_state(state.clone(), require_token)).with_state(state)
}

/// The routes, documented; `state`-less so the document can be built alone.
fn api() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(summary))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(replay))
        .routes(routes!(purge))
}

/// The document of [`routes`]. The routes exist only where `ADMIN_TOKEN`
/// is set; elsewhere they answer 404 like any unknown route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// `GET /admin/dead-letters`.
#[derive(Serialize, ToSchema)]
struct Summary {
    dead_letter_destinations: Vec<PendingCount>,
}

/// `GET /admin/dead-letters/{dlq}`.
#[derive(Serialize, ToSchema)]
struct Listing {
    dead_letter_destination: String,
    count: usize,
    dead_letters: Vec<DeadLetter>,
}

/// The broker work of one request: 60 % of the request timeout in all, a
/// third of that per broker round trip. The rest leaves time to answer (and
/// for a replay's last confirm) before the server's 408.
fn broker_limits(request_timeout: Duration) -> (Duration, Duration) {
    let budget = request_timeout.mul_f64(0.6);
    (budget / 3, budget)
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
        // The broker is down, slow or refused: the operator should retry later.
        e if e.is_broker_error() => {
            tracing::warn!(error = %e, "dead-letter administration failed");
            ApiError::Unavailable { reason: e.to_string(), retry_after_secs: BROKER_RETRY_AFTER_SECS }
        }
        // A blocking broker call's task did not finish (shutting down):
        // nothing was decided, so the request can simply be retried.
        DeadLetterError::Task(_) => {
            tracing::warn!(error = %e, "dead-letter administration interrupted");
            ApiError::Unavailable {
                reason: "the dead-letter operation was interrupted".into(),
                retry_after_secs: BROKER_RETRY_AFTER_SECS,
            }
        }
        e => ApiError::internal(e),
    }
}

#[utoipa::path(
    get,
    path = "/admin/dead-letters",
    operation_id = "dead_letter_summary",
    tag = "dead letters",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "This service's dead-letter destinations and how many letters wait in each.", body = Summary),
        (status = 404, response = NotFound),
    )
)]
async fn summary(State(state): State<AdminState>) -> Result<Response, ApiError> {
    let counts = state.dead_letters.pending(&state.destinations).await.map_err(api_error)?;
    Ok(axum::Json(Summary { dead_letter_destinations: counts }).into_response())
}

/// The dead-letter destination of a path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Documentation only: the handlers take it as a PathParam, to answer 400 as ApiError.
struct DestinationPath {
    /// A dead-letter queue or topic this service's consumers write to (`stock.commands.dlq`).
    dlq: String,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// How many letters to show, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `?limit=`: a bad value is a 400 naming the parameter like every other.
impl FromQueryParams for ListQuery {
    fn from_query_params(params: &QueryParams) -> Result<Self, ApiError> {
        let limit = params.optional_with("limit", |limit| {
            limit.parse::<usize>().ok().filter(|l| (1..=MAX_LIMIT).contains(l)).ok_or_else(|| {
                ApiError::invalid_parameter("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })
        })?;
        Ok(Self { limit })
    }
}

/// What is wrong with `id` as a message id: any text a broker could carry,
/// but not empty, not longer than AMQP allows, no control characters.
fn message_id_problem(id: &str) -> Option<String> {
    // Characters, as the document's `maxLength` counts: an id longer in
    // bytes than AMQP allows names no letter, and is simply not found.
    if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_LEN {
        return Some(format!("must be 1 to {MAX_MESSAGE_ID_LEN} characters"));
    }
    id.chars().any(char::is_control).then(|| "may not contain control characters".to_owned())
}

#[utoipa::path(
    get,
    path = "/admin/dead-letters/{dlq}",
    operation_id = "list_dead_letters",
    tag = "dead letters",
    security(("admin_token" = [])),
    params(DestinationPath, ListQuery),
    responses(
        (status = 200, description = "The pending letters, oldest first, left in place.", body = Listing),
        (status = 404, response = NotFound),
    )
)]
async fn list(
    State(state): State<AdminState>,
    PathParam(dlq): PathParam<String>,
    ValidQuery(query): ValidQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let destination = state.own(&dlq)?;
    let letters = state.dead_letters.list(destination, limit).await.map_err(api_error)?;
    Ok(axum::Json(Listing { dead_letter_destination: dlq, count: letters.len(), dead_letters: letters })
        .into_response())
}

#[utoipa::path(
    get,
    path = "/admin/dead-letters/{dlq}/{message_id}",
    operation_id = "show_dead_letter",
    tag = "dead letters",
    security(("admin_token" = [])),
    params(
        DestinationPath,
        ("message_id" = String, Path, description = "The letter's message id.", min_length = 1, max_length = 255, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"),
    ),
    responses(
        (status = 200, description = "The letter in full.", body = DeadLetter),
        (status = 404, response = NotFound),
    )
)]
async fn show(
    State(state): State<AdminState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((dlq, message_id)) = path?;
    if let Some(problem) = message_id_problem(&message_id) {
        return Err(ApiError::invalid_parameter("message_id", problem));
    }
    let destination = state.own(&dlq)?;
    let letter = state.dead_letters.show(destination, &message_id).await.map_err(api_error)?;
    Ok(axum::Json(letter).into_response())
}

/// Which letters to replay: one by `message_id`, or (Kafka) those of one
/// partition `up_to` an offset; `{}`, `null` or no body for all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default, deserialize_with = "present")]
    message_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    up_to: Option<KafkaPosition>,
}

/// A field that may be absent but, when present, is not `null`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Written out rather than derived: one of the three shapes exactly, so the
/// document says that both fields at once (or a `null` field) is refused,
/// while the struct above keeps serde's errors naming the field.
impl utoipa::PartialSchema for ReplayRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let closed = || Some(AdditionalProperties::FreeForm(false));
        let message_id = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_MESSAGE_ID_LEN))
            .pattern(Some(MESSAGE_ID_PATTERN));
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .property("message_id", message_id)
                    .required("message_id")
                    .additional_properties(closed()),
            )
            .item(
                ObjectBuilder::new()
                    .property("up_to", utoipa::openapi::Ref::from_schema_name("KafkaPosition"))
                    .required("up_to")
                    .additional_properties(closed()),
            )
            .item(ObjectBuilder::new().schema_type(Type::Object).additional_properties(closed()))
            .into()
    }
}

impl ToSchema for ReplayRequest {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push(("KafkaPosition".into(), <KafkaPosition as utoipa::PartialSchema>::schema()));
    }
}

#[utoipa::path(
    post,
    path = "/admin/dead-letters/{dlq}/replay",
    operation_id = "replay_dead_letters",
    tag = "dead letters",
    security(("admin_token" = [])),
    params(DestinationPath),
    request_body(content = Option<ReplayRequest>, description = "Empty for every letter.", content_type = "application/json"),
    responses(
        (status = 200, description = "What was sent back to the source; `remaining` letters are left for another call.", body = ReplayReport),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
async fn replay(
    State(state): State<AdminState>,
    PathParam(dlq): PathParam<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let destination = state.own(&dlq)?;
    // No body (or JSON `null`) means all; a body must be JSON.
    let text = body.trim_ascii();
    let request: ReplayRequest =
        if text.is_empty() || text == b"null" { ReplayRequest::default() } else { crate::json::parse(&body)? };
    let selection = match request {
        ReplayRequest { message_id: Some(_), up_to: Some(_) } => {
            return Err(ApiError::validation("up_to", "give either message_id or up_to, not both"));
        }
        ReplayRequest { message_id: Some(id), .. } => match message_id_problem(&id) {
            Some(problem) => return Err(ApiError::validation("message_id", problem)),
            None => ReplaySelection::Message(id),
        },
        ReplayRequest { up_to: Some(position), .. } => {
            if position.partition < 0 {
                return Err(ApiError::validation("up_to.partition", "must not be negative"));
            }
            if position.offset < 0 {
                return Err(ApiError::validation("up_to.offset", "must not be negative"));
            }
            ReplaySelection::UpTo(position)
        }
        ReplayRequest { .. } => ReplaySelection::All,
    };
    let report = state.dead_letters.replay(destination, &selection).await.map_err(api_error)?;
    Ok(axum::Json(report).into_response())
}

#[utoipa::path(
    post,
    path = "/admin/dead-letters/{dlq}/purge",
    operation_id = "purge_dead_letters",
    tag = "dead letters",
    security(("admin_token" = [])),
    params(DestinationPath),
    responses(
        (status = 200, description = "How many letters were thrown away.", body = PurgeReport),
        (status = 404, response = NotFound),
    )
)]
async fn purge(State(state): State<AdminState>, PathParam(dlq): PathParam<String>) -> Result<Response, ApiError> {
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
        routes(Secret::new("s3cret"), dl, vec![Destination::rabbitmq("stock.commands")], Duration::from_secs(10))
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

    /// Status and `error.field` of the answer.
    async fn answer(app: Router, request: axum::http::Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn bad_parameters_are_400s_that_name_the_parameter() {
        let auth = Some("Bearer s3cret");
        for (path, field) in [
            ("/admin/dead-letters/stock.commands.dlq?limit=abc", "limit"),
            ("/admin/dead-letters/stock.commands.dlq?limit=-1", "limit"),
            ("/admin/dead-letters/stock.commands.dlq?limit=1001", "limit"),
            ("/admin/dead-letters/stock.commands.dlq?limit=99999999999999999999999", "limit"),
            ("/admin/dead-letters/%FF%FE", "dlq"),
            ("/admin/dead-letters/stock.commands.dlq/%FF%FE", "message_id"),
            ("/admin/dead-letters/stock.commands.dlq/a%0Ab", "message_id"),
        ] {
            let (status, body) = answer(app(), get(path, auth)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(body["error"]["field"], field, "{path}: {body}");
        }
        let long = format!("/admin/dead-letters/stock.commands.dlq/{}", "a".repeat(256));
        let (status, body) = answer(app(), get(&long, auth)).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (StatusCode::BAD_REQUEST, &serde_json::json!("message_id")),
            "{body}"
        );
        let replay = |body: &str| {
            axum::http::Request::post("/admin/dead-letters/stock.commands.dlq/replay")
                .header(header::AUTHORIZATION, "Bearer s3cret")
                .body(Body::from(body.to_owned()))
                .unwrap()
        };
        for (body, field) in [
            (r#"{"message_id": 5}"#, "message_id"),
            (r#"{"message_id": ""}"#, "message_id"),
            (r#"{"up_to": {"partition": -1, "offset": 0}}"#, "up_to.partition"),
            (r#"{"up_to": {"partition": 0, "offset": -5}}"#, "up_to.offset"),
            (r#"{"up_to": {"partition": "x", "offset": 0}}"#, "up_to.partition"),
            (r#"{"all": true}"#, "all"),
            (r#"{"message_id": null}"#, "message_id"),
            (r#"{"message_id": "m", "up_to": {"partition": 0, "offset": 1}}"#, "up_to"),
        ] {
            let (status, answer) = answer(app(), replay(body)).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
            assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
        }
    }

    /// A broker that accepts connections and never says a word.
    async fn silent_broker() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        address
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_broker_is_a_503_well_within_the_request_timeout() {
        let broker = silent_broker().await;
        let dl = DeadLetters::new(format!("amqp://guest:guest@{broker}/%2f"), broker.clone(), Topology::default());
        let destinations = vec![Destination::rabbitmq("stock.commands"), Destination::kafka("orders", "shipping")];
        let request_timeout = Duration::from_secs(2);
        for path in [
            "/admin/dead-letters/stock.commands.dlq?limit=10",
            "/admin/dead-letters/orders.shipping.dlq?limit=10",
            "/admin/dead-letters/orders.shipping.dlq/some-id",
        ] {
            let app = routes(Secret::new("s3cret"), dl.clone(), destinations.clone(), request_timeout);
            let started = std::time::Instant::now();
            let response = app.oneshot(get(path, Some("Bearer s3cret"))).await.unwrap();
            let elapsed = started.elapsed();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(response.headers()[header::RETRY_AFTER], "5", "{path}");
            assert!(elapsed < request_timeout.mul_f64(0.8), "{path}: answered after {elapsed:?}");
        }
        let (round_trip, budget) = broker_limits(Duration::from_secs(10));
        assert_eq!((round_trip, budget), (Duration::from_secs(2), Duration::from_secs(6)));
    }

    #[test]
    fn tokens_compare_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}

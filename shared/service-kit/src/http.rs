//! Layers every HTTP server gets: a server span per request that continues
//! the caller's W3C trace, request metrics, a body size limit and a timeout.

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

/// Wraps `router` with tracing, metrics, a body limit and a timeout, and
/// makes every error answer a JSON [`ApiError`](crate::ApiError) body.
/// Unknown routes get a JSON 404.
pub fn with_standard_layers(router: Router, body_limit: usize, timeout: Duration) -> Router {
    // The fallback first, so that the layers apply to unknown routes too.
    layered(router.fallback(not_found), body_limit, timeout)
}

/// The standard layers on the routes (and fallback) `router` has so far.
pub fn layered(router: Router, body_limit: usize, timeout: Duration) -> Router {
    // The last layer added is the outermost: the span and the metrics
    // enclose the timeout, so a request cut off at the deadline is still
    // counted, traced and answered with its trace id.
    router
        .layer(middleware::from_fn_with_state(body_limit, read_body_within_limit))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .layer(middleware::from_fn(trace_and_measure))
        .layer(middleware::from_fn(json_error_bodies))
}

/// Past the body limit, up to this many more bytes are read and thrown away
/// so that the client gets its 413 on a connection that stays usable; a
/// body announced larger than that gets the 413 at once, and the connection
/// is closed.
const MAX_DRAINED_BYTES: usize = 8 << 20;

/// Reads the whole request body, within `limit`, before the route runs, so
/// that whatever the answer (405, 404, 415, 422), no unread body is left on
/// the connection. hyper closes a connection whose request body was left
/// unread: the client may then lose the answer to a reset, or send its next
/// request on a connection that is already gone. A body over the limit is
/// read to its end, thrown away, and answered 413.
async fn read_body_within_limit(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let (parts, mut body) = request.into_parts();
    if body.size_hint().exact() == Some(0) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let too_large_to_drain = |size: usize| size > limit.saturating_add(MAX_DRAINED_BYTES);
    let announced = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(too_large_to_drain) {
        return close_after(crate::ApiError::PayloadTooLarge.into_response());
    }
    let mut buffered = Vec::new();
    let mut read: usize = 0;
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return crate::ApiError::BadRequest(format!("reading the request body: {e}")).into_response(),
        };
        let Ok(data) = frame.into_data() else { continue };
        read = read.saturating_add(data.len());
        if read <= limit {
            buffered.extend_from_slice(&data);
        } else if too_large_to_drain(read) {
            return close_after(crate::ApiError::PayloadTooLarge.into_response());
        }
    }
    if read > limit {
        return crate::ApiError::PayloadTooLarge.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(buffered))).await
}

fn close_after(mut response: Response) -> Response {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Errors that axum and the layers answer themselves, outside any handler
/// (405 with an empty body, 408 from the timeout, an extractor's plain-text
/// rejection), get the same JSON body as the handlers' errors. Headers such
/// as `Allow` are kept; the text of a 5xx is not shown to the client.
async fn json_error_bodies(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("error");
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let message = match text {
        Ok(text) if status.is_client_error() && !text.is_empty() => text,
        _ => reason.to_owned(),
    };
    let code = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let body = crate::openapi::ErrorBody { error: crate::openapi::ErrorDetail { code, message, field: None } };
    let body = serde_json::to_string(&body).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

async fn not_found() -> Response {
    crate::ApiError::NotFound("no such route".into()).into_response()
}

async fn trace_and_measure(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Probes and scrapes (every second or two, from an orchestrator or the
    // console) would bury the traces of real requests: measured, not traced.
    if is_probe(&route) {
        let started = Instant::now();
        let response = next.run(request).await;
        measure(method, route, response.status().as_u16(), started);
        return response;
    }
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        // The servers speak plain HTTP; TLS, if any, ends in front of them.
        url.scheme = "http",
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let trace_headers = telemetry::TraceHeaders {
        traceparent: header_text(&request, "traceparent"),
        tracestate: header_text(&request, "tracestate"),
    };
    telemetry::set_remote_parent(&span, &trace_headers);
    let started = Instant::now();
    let trace_id = span.in_scope(telemetry::current_trace_id);
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        // Semantic conventions: a server span is an error on 5xx only.
        span.record("otel.status_code", "ERROR");
    }
    if let Some(id) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        // Lets a client jump from a response to its trace in Jaeger.
        response.headers_mut().insert("x-trace-id", id);
    }
    measure(method, route, status, started);
    response
}

fn is_probe(route: &str) -> bool {
    route == "/metrics" || route.starts_with("/health/")
}

fn measure(method: String, route: String, status: u16, started: Instant) {
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2]).record(started.elapsed().as_secs_f64());
}

fn header_text(request: &Request, name: &str) -> Option<String> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{Method, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    async fn answer(method: Method, uri: &str) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let app = Router::new().route("/things/{id}", get(|| async { "thing" }));
        let app = with_standard_layers(app, 1024, Duration::from_secs(5));
        let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_wrong_method_gets_a_json_405_that_keeps_allow() {
        let (status, headers, body) = answer(Method::DELETE, "/things/1").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(headers[header::ALLOW].to_str().unwrap().contains("GET"));
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_read_to_its_end_and_refused_with_413() {
        let app = Router::new().route("/things", axum::routing::post(|body: String| async move { body }));
        let app = with_standard_layers(app, 16, Duration::from_secs(5));
        for (body, expected) in [("x".repeat(16), StatusCode::OK), ("x".repeat(17), StatusCode::PAYLOAD_TOO_LARGE)] {
            let request = Request::builder().method(Method::POST).uri("/things").body(Body::from(body)).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), expected);
        }
        let request =
            Request::builder().method(Method::DELETE).uri("/things").body(Body::from("x".repeat(17))).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "the size is checked before the method");
    }

    #[tokio::test]
    async fn a_request_past_the_deadline_gets_a_json_408() {
        let slow = get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        });
        let app = with_standard_layers(Router::new().route("/slow", slow), 1024, Duration::from_millis(50));
        let request = Request::builder().uri("/slow").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn unknown_routes_and_successes_are_left_alone() {
        let (status, _, body) = answer(Method::GET, "/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "not_found");
        let (status, _, _) = answer(Method::GET, "/things/1").await;
        assert_eq!(status, StatusCode::OK);
    }
}

//! Layers every HTTP server gets: a server span per request that continues
//! the caller's W3C trace, request metrics, a body size limit and a timeout.

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

/// Wraps `router` with tracing, metrics, a body limit and a timeout.
pub fn with_standard_layers(router: Router, body_limit: usize, timeout: Duration) -> Router {
    router
        .layer(middleware::from_fn(trace_and_measure))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout))
        .fallback(not_found)
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
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
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
    if let Some(id) = trace_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        // Lets a client jump from a response to its trace in Jaeger.
        response.headers_mut().insert("x-trace-id", id);
    }
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels[..2]).record(started.elapsed().as_secs_f64());
    response
}

fn header_text(request: &Request, name: &str) -> Option<String> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

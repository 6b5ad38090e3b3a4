//! `/metrics` in the Prometheus text format, and `/health/live`, `/health/ready`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use health::Readiness;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (tests running several
                // services in one process): render an unconnected one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

#[derive(Clone)]
struct Operational {
    readiness: Readiness,
    metrics: PrometheusHandle,
    service: &'static str,
}

/// Health and metrics routes of a service.
pub fn routes(service: &'static str, readiness: Readiness) -> Router {
    let state = Operational { readiness, metrics: prometheus(), service };
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn live(State(op): State<Operational>) -> Response {
    axum::Json(serde_json::json!({ "status": "live", "service": op.service })).into_response()
}

async fn ready(State(op): State<Operational>) -> Response {
    let components = op.readiness.snapshot();
    let is_ready = components.values().all(|c| c.ready);
    let unsafe_modes = messaging::safety::unsafe_modes().enabled();
    let body = serde_json::json!({
        "status": if is_ready { "ready" } else { "not_ready" },
        "service": op.service,
        "components": components,
        "unsafe_modes": unsafe_modes,
    });
    let status = if is_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

async fn render_metrics(State(op): State<Operational>) -> Response {
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    for (name, status) in op.readiness.snapshot() {
        metrics::gauge!("component_ready", "component" => name).set(if status.ready { 1.0 } else { 0.0 });
    }
    op.metrics.run_upkeep();
    ([("content-type", "text/plain; version=0.0.4")], op.metrics.render()).into_response()
}

/// Resident set size from /proc (Linux); none elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

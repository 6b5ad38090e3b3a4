//! `/metrics` in the Prometheus text format, and `/health/live`, `/health/ready`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use health::{ComponentStatus, Readiness};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// `GET /health/live`: the process answers.
#[derive(Serialize, ToSchema)]
struct Live {
    /// Always `live`.
    status: String,
    service: String,
}

/// `GET /health/ready`: every component's state; 503 while any is not ready.
#[derive(Serialize, ToSchema)]
struct Ready {
    status: ReadyStatus,
    service: String,
    /// By component (database, AMQP connection, each consumer, the relay, …).
    components: BTreeMap<String, ComponentStatus>,
    /// Deliberately unsafe modes switched on (negative controls); empty in production.
    unsafe_modes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReadyStatus {
    Ready,
    NotReady,
}

/// The routes, documented; `state`-less so the document can be built alone.
fn api() -> OpenApiRouter<Operational> {
    OpenApiRouter::new().routes(routes!(live)).routes(routes!(ready)).routes(routes!(render_metrics))
}

/// Health and metrics routes of a service.
pub fn routes(service: &'static str, readiness: Readiness) -> Router {
    let state = Operational { readiness, metrics: prometheus(), service };
    let (router, _) = api().split_for_parts();
    router.with_state(state)
}

/// The document of [`routes`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

#[utoipa::path(get, path = "/health/live", operation_id = "health_live", tag = "operations", responses((status = 200, body = Live)))]
async fn live(State(op): State<Operational>) -> Response {
    axum::Json(Live { status: "live".into(), service: op.service.into() }).into_response()
}

#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "health_ready",
    tag = "operations",
    responses(
        (status = 200, description = "Every component is ready.", body = Ready),
        (status = 503, description = "A component is not ready; `detail` says why.", body = Ready),
    )
)]
async fn ready(State(op): State<Operational>) -> Response {
    let components = op.readiness.snapshot();
    let is_ready = components.values().all(|c| c.ready);
    let unsafe_modes = messaging::safety::unsafe_modes().enabled().into_iter().map(str::to_owned).collect();
    let body = Ready {
        status: if is_ready { ReadyStatus::Ready } else { ReadyStatus::NotReady },
        service: op.service.into(),
        components,
        unsafe_modes,
    };
    let status = if is_ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", content_type = "text/plain", body = String))
)]
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

//! Tracing, logs and trace-context propagation, set up once per process.
//!
//! Spans always carry an OpenTelemetry context, so logs have a `trace_id`
//! and messages carry a `traceparent` even when nothing is exported; the
//! OTLP exporter is attached only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
//! traces-specific variant) is set. Sampling follows `OTEL_TRACES_SAMPLER`.

mod captured_logs;
mod json_log;
pub mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use captured_logs::CapturedLogs;
pub use propagation::{TraceHeaders, current_trace_headers, current_trace_id, set_remote_parent};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line with `trace_id`/`span_id`: for machines.
    Json,
    /// Human-readable lines led by the trace id: for a developer's terminal.
    Pretty,
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" => Ok(Self::Pretty),
            other => Err(TelemetryError::Config(format!("LOG_FORMAT must be `json` or `pretty`, got `{other}`"))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of every span; `OTEL_SERVICE_NAME` overrides it.
    pub service_name: String,
    pub log_format: LogFormat,
    /// Whether an OTLP endpoint is configured through the standard variables.
    pub export_traces: bool,
    /// `RUST_LOG`: which lines are logged (an `EnvFilter` directive;
    /// default `info`). Tracing does not depend on it (see [`SPAN_LEVEL`]).
    pub log_filter: String,
}

impl TelemetryConfig {
    /// Reads `OTEL_SERVICE_NAME`, `LOG_FORMAT`, `RUST_LOG` and the OTLP
    /// endpoint variables.
    pub fn from_env(default_service_name: &str) -> Result<Self, TelemetryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(Self {
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service_name.to_owned()),
            log_format: var("LOG_FORMAT").map(|v| v.parse()).transpose()?.unwrap_or(LogFormat::Json),
            export_traces: !disabled
                && (var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                    || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()),
            log_filter: var("RUST_LOG").unwrap_or_else(|| SPAN_LEVEL.as_str().to_ascii_lowercase()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry configuration: {0}")]
    Config(String),
    #[error("building the OTLP exporter: {0}")]
    Exporter(String),
    #[error("installing the tracing subscriber: {0}")]
    Subscriber(String),
}

/// Keeps the tracer provider alive; call [`TelemetryGuard::shutdown`] last.
#[must_use = "dropping the guard without shutdown loses buffered spans"]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Flushes buffered spans. Runs on its own thread with a deadline because
    /// an exporter stuck on an unreachable collector must not hang shutdown.
    pub fn shutdown(self, deadline: Duration) {
        let provider = self.provider;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(provider.shutdown_with_timeout(deadline));
        });
        match done_rx.recv_timeout(deadline + Duration::from_millis(200)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("telemetry shutdown: {e}"),
            Err(_) => eprintln!("telemetry shutdown: gave up after {deadline:?}"),
        }
    }
}

/// Spans at this level and above are traced whatever `RUST_LOG` says (every
/// span of the message path is `info`).
const SPAN_LEVEL: tracing::Level = tracing::Level::INFO;

/// Installs the global subscriber (log filter from `RUST_LOG`, JSON or
/// pretty logs on stdout, OpenTelemetry layer) and the W3C trace-context
/// propagator.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    init_writing_to(config, std::io::stdout)
}

/// [`init`], with the log lines going to `writer` (tests read them).
pub fn init_writing_to<W>(config: &TelemetryConfig, writer: W) -> Result<TelemetryGuard, TelemetryError>
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    // `RUST_LOG` chooses what is logged, not what is traced: a service
    // logging at `warn` must still create its `info` spans, or it would put
    // no `traceparent` into its messages and break every trace through it.
    let log_filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| TelemetryError::Config(format!("RUST_LOG `{}`: {e}", config.log_filter)))?;
    let provider = tracer_provider(config)?;
    let tracer = provider.tracer(config.service_name.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());

    let fmt_layer = match config.log_format {
        // Span fields are rendered by the default field formatter, which
        // colours them unless told not to: only on a terminal (not in the
        // runner's log files).
        LogFormat::Json => json_log::layer(&config.service_name, writer).boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(json_log::CompactWithTraceId::new())
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(span_layer(tracer))
        .with(fmt_layer.with_filter(log_filter))
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}

/// The OpenTelemetry layer, with its own filter (see [`SPAN_LEVEL`]).
fn span_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::LevelFilter::from_level(SPAN_LEVEL))
}

fn tracer_provider(config: &TelemetryConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder().with_service_name(config.service_name.clone()).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    if !config.export_traces {
        return Ok(builder.build());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

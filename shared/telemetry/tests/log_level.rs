//! `RUST_LOG` decides what is logged, never what is traced. Its own test
//! binary: it installs the global subscriber, as a service does (a scoped
//! one behaves differently inside a layer).

#![allow(clippy::unwrap_used)]

use telemetry::{CapturedLogs, LogFormat, TelemetryConfig, current_trace_headers, current_trace_id};

/// `RUST_LOG=warn` once switched the `info` spans off for the OpenTelemetry
/// layer too: no `traceparent` in the service's outbox rows (every trace
/// through it broken) and warn lines without a trace id.
#[test]
fn logging_at_warn_still_traces_info_spans_and_puts_their_ids_on_warn_lines() {
    let lines = CapturedLogs::default();
    let config = TelemetryConfig {
        service_name: "stock".to_owned(),
        log_format: LogFormat::Json,
        export_traces: false,
        log_filter: "warn".to_owned(),
    };
    let telemetry = telemetry::init_writing_to(&config, lines.clone()).unwrap();

    let (headers, trace_id) = {
        let span = tracing::info_span!("process");
        let _entered = span.enter();
        tracing::info!("not logged at warn");
        tracing::warn!("retrying");
        (current_trace_headers(), current_trace_id())
    };
    telemetry.shutdown(std::time::Duration::from_secs(1));

    let trace_id = trace_id.expect("an info span has a trace id when logging at warn");
    let traceparent = headers.traceparent.expect("an info span gives a traceparent when logging at warn");
    assert!(traceparent.contains(&trace_id), "{traceparent} is not of trace {trace_id}");
    let text = lines.text();
    let logged: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(logged.len(), 1, "only the warn line is logged: {text}");
    assert_eq!(logged[0]["message"], "retrying");
    assert_eq!(logged[0]["trace_id"], trace_id.as_str(), "{text}");
}

#[test]
fn a_malformed_rust_log_is_refused_with_its_value() {
    let config = TelemetryConfig {
        service_name: "stock".to_owned(),
        log_format: LogFormat::Json,
        export_traces: false,
        log_filter: "info,lapin=loud".to_owned(),
    };
    let error = telemetry::init_writing_to(&config, std::io::sink).err().unwrap();
    assert!(error.to_string().contains("RUST_LOG `info,lapin=loud`"), "{error}");
}

//! The console binary: configuration, logs, the listener, until SIGTERM.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("console: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = console::config::ConsoleConfig::from_env()?;
    let mut telemetry_config = telemetry::TelemetryConfig::from_env("console")?;
    // The console receives spans; exporting its own to itself would make
    // every export produce more spans to export.
    telemetry_config.export_traces = false;
    let telemetry = telemetry::init(&telemetry_config)?;
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", config.http_addr))?;
    let result = console::run(config, listener, service_kit::host::shutdown_on_signal()).await;
    telemetry.shutdown(std::time::Duration::from_secs(1));
    Ok(result?)
}

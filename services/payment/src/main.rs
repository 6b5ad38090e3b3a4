use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = payment_service::Config::from_env().context("reading configuration")?;
    let _crash_points = messaging::crash::arm_from_env();
    let telemetry = telemetry::init(&telemetry::TelemetryConfig::from_env(payment_service::SERVICE)?)?;
    let listener = tokio::net::TcpListener::bind(config.common.http_addr)
        .await
        .with_context(|| format!("binding {}", config.common.http_addr))?;
    let result = payment_service::run(config, listener, service_kit::host::shutdown_on_signal()).await;
    telemetry.shutdown(std::time::Duration::from_secs(5));
    result
}

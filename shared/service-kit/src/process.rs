//! The `main` of every service binary: configuration, crash points,
//! telemetry, the listener, the service until SIGTERM, the last spans.

use crate::config::{CommonConfig, ConfigError};
use crate::host::{HostError, shutdown_on_signal};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long the last spans may take to leave at exit.
const TELEMETRY_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("reading configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error("binding {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Service(#[from] HostError),
    #[error(transparent)]
    FaultInjection(#[from] messaging::safety::FaultInjectionMissing),
    #[error(transparent)]
    CrashPoints(#[from] messaging::crash::CrashPointError),
}

/// Runs service `name` as a process: reads its configuration with
/// `config`, arms the crash points named in `FAILPOINTS`, installs
/// telemetry, binds the HTTP address and runs `service` until SIGTERM or
/// Ctrl-C; then flushes the spans still buffered, whatever the outcome.
pub async fn run_service_process<C, Service, Running>(
    name: &'static str,
    config: impl FnOnce() -> Result<C, ConfigError>,
    common: impl Fn(&C) -> &CommonConfig,
    service: Service,
) -> Result<(), ProcessError>
where
    Service: FnOnce(C, TcpListener, CancellationToken) -> Running,
    Running: Future<Output = Result<(), HostError>>,
{
    let config = config()?;
    messaging::safety::requested_faults_available()?;
    messaging::crash::arm_from_env()?;
    let telemetry = telemetry::init(&telemetry::TelemetryConfig::from_env(name)?)?;
    let addr = common(&config).http_addr;
    let result = match TcpListener::bind(addr).await {
        Ok(listener) => service(config, listener, shutdown_on_signal()).await.map_err(ProcessError::from),
        Err(source) => Err(ProcessError::Bind { addr, source }),
    };
    telemetry.shutdown(TELEMETRY_FLUSH_DEADLINE);
    result
}

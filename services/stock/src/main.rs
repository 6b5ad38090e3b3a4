#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use stock_service::{Config, SERVICE, run};
    service_kit::process::run_service_process(SERVICE, Config::from_env, |c| &c.common, run).await?;
    Ok(())
}

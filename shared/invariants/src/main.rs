//! `check-invariants`: checks the invariants of DESIGN.md against the six
//! service databases (and the brokers' dead letters, when given).
//!
//! Exit status: 0 when no check failed, 1 when one did, 2 on a usage or
//! connection error.

use anyhow::Context;
use clap::Parser;
use invariants::{Brokers, CheckOptions, DatabaseUrls, Databases};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const DEV: &str = invariants::DEV_SERVER_URL;

#[derive(Parser, Debug)]
#[command(name = "check-invariants", about = "Check the invariants of DESIGN.md after a run has drained")]
struct Cli {
    #[arg(long, env = "ORDER_DATABASE_URL", default_value_t = format!("{DEV}/order"))]
    order_db: String,
    #[arg(long, env = "STOCK_DATABASE_URL", default_value_t = format!("{DEV}/stock"))]
    stock_db: String,
    #[arg(long, env = "PAYMENT_DATABASE_URL", default_value_t = format!("{DEV}/payment"))]
    payment_db: String,
    #[arg(long, env = "SHIPPING_DATABASE_URL", default_value_t = format!("{DEV}/shipping"))]
    shipping_db: String,
    #[arg(long, env = "EMAIL_DATABASE_URL", default_value_t = format!("{DEV}/email"))]
    email_db: String,
    #[arg(long, env = "LOYALTY_DATABASE_URL", default_value_t = format!("{DEV}/loyalty"))]
    loyalty_db: String,
    /// File of the order ids the API answered 2xx, one per line. Without it,
    /// invariant 1 checks only that every order is final.
    #[arg(long, value_name = "FILE")]
    accepted: Option<PathBuf>,
    /// RabbitMQ URL for the dead-letter queues (e.g. amqp://guest:guest@127.0.0.1:55672/%2f);
    /// without it that check is skipped.
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// Kafka bootstrap servers for the dead-letter topics (e.g. 127.0.0.1:59092);
    /// without them that check is skipped.
    #[arg(long, env = "KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Prefix of every queue and topic, as the services' MESSAGING_NAMESPACE.
    #[arg(long, env = "MESSAGING_NAMESPACE", default_value = "")]
    namespace: String,
    /// Offenders listed per check (all are counted).
    #[arg(long, default_value_t = invariants::DEFAULT_MAX_OFFENDERS)]
    max_offenders: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    // clap exits with 2 itself on a usage error.
    let cli = Cli::parse();
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("check-invariants: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether every check passed (or was skipped).
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let accepted = match &cli.accepted {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Some(invariants::parse_accepted(&text)?)
        }
        None => None,
    };
    let urls = DatabaseUrls {
        order: cli.order_db,
        stock: cli.stock_db,
        payment: cli.payment_db,
        shipping: cli.shipping_db,
        email: cli.email_db,
        loyalty: cli.loyalty_db,
    };
    let databases = Databases::connect(&urls).await?;
    let options = CheckOptions {
        accepted,
        brokers: Brokers {
            amqp_url: cli.amqp_url.filter(|u| !u.trim().is_empty()),
            kafka_brokers: cli.kafka_brokers.filter(|b| !b.trim().is_empty()),
            topology: contracts::Topology::new(cli.namespace),
        },
        max_offenders: cli.max_offenders,
    };
    let report = invariants::check(&databases, &options).await?;
    databases.close().await;
    let text = if cli.json { format!("{:#}\n", report.to_json()) } else { report.to_string() };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        // A reader that stopped early (`| head`) still gets the verdict as exit status.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("writing the report"),
        _ => {}
    }
    Ok(report.passed())
}

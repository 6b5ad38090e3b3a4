//! `check-invariants`: checks the invariants of docs/design.md against the six
//! service databases and the brokers: dead letters, and anything still in
//! flight (by default all on the dev stack; `--no-brokers` skips the brokers).
//!
//! A database or broker that does not answer does not stop the checker: the
//! invariants that read it are reported as SKIP with the error, the others
//! are still checked, and the report is printed.
//!
//! Exit status: 0 when every check was made and none failed (checks skipped
//! by `--no-brokers` do not count), 1 when one failed (whatever else could
//! not be checked: a violation is a verdict), 2 when none failed but a
//! database or broker did not answer, or on a usage error.

use anyhow::Context;
use clap::Parser;
use invariants::{Brokers, CheckOptions, DatabaseUrls};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

const DEV: &str = invariants::DEV_SERVER_URL;

// No `Debug`: it holds database and AMQP URLs, passwords and all.
#[derive(Parser)]
#[command(name = "check-invariants", about = "Check the invariants of docs/design.md after a run has drained")]
struct Cli {
    #[arg(long, env = "ORDER_DATABASE_URL", hide_env_values = true, default_value_t = format!("{DEV}/order"))]
    order_db: String,
    #[arg(long, env = "STOCK_DATABASE_URL", hide_env_values = true, default_value_t = format!("{DEV}/stock"))]
    stock_db: String,
    #[arg(long, env = "PAYMENT_DATABASE_URL", hide_env_values = true, default_value_t = format!("{DEV}/payment"))]
    payment_db: String,
    #[arg(long, env = "SHIPPING_DATABASE_URL", hide_env_values = true, default_value_t = format!("{DEV}/shipping"))]
    shipping_db: String,
    #[arg(long, env = "EMAIL_DATABASE_URL", hide_env_values = true, default_value_t = format!("{DEV}/email"))]
    email_db: String,
    #[arg(long, env = "LOYALTY_DATABASE_URL", hide_env_values = true, default_value_t = format!("{DEV}/loyalty"))]
    loyalty_db: String,
    /// File of the order ids the API answered 2xx, one per line. Without it,
    /// invariant 1 checks only that every order is final.
    #[arg(long, value_name = "FILE")]
    accepted: Option<PathBuf>,
    /// RabbitMQ URL for the dead-letter and command queues (invariants 7b, 7d); the dev
    /// stack's by default, like the databases.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = invariants::DEV_AMQP_URL)]
    amqp_url: String,
    /// Kafka bootstrap servers for the dead-letter topics and the consumer
    /// groups' progress (invariants 7c, 7d); the
    /// dev stack's by default.
    #[arg(long, env = "KAFKA_BROKERS", default_value = invariants::DEV_KAFKA_BROKERS)]
    kafka_brokers: String,
    /// Skip the brokers' checks (7b, 7c, 7d): they are reported as
    /// SKIP, and only the databases decide the exit status.
    #[arg(long)]
    no_brokers: bool,
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
        Ok(Verdict::Passed) => ExitCode::SUCCESS,
        Ok(Verdict::Failed) => ExitCode::from(1),
        Ok(Verdict::Unchecked) => ExitCode::from(2),
        Err(error) => {
            eprintln!("check-invariants: {error:#}");
            ExitCode::from(2)
        }
    }
}

enum Verdict {
    Passed,
    Failed,
    /// Nothing failed, but something did not answer: nothing concluded.
    Unchecked,
}

async fn run(cli: Cli) -> anyhow::Result<Verdict> {
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
    let brokers = if cli.no_brokers {
        Brokers { amqp_url: None, kafka_brokers: None, topology: contracts::Topology::new(cli.namespace) }
    } else {
        // An empty value used to mean "skip" silently; skipping is now asked for by name.
        if cli.amqp_url.trim().is_empty() || cli.kafka_brokers.trim().is_empty() {
            anyhow::bail!("--amqp-url and --kafka-brokers must not be empty (use --no-brokers to skip 7b, 7c and 7d)");
        }
        Brokers {
            amqp_url: Some(cli.amqp_url),
            kafka_brokers: Some(cli.kafka_brokers),
            topology: contracts::Topology::new(cli.namespace),
        }
    };
    let options = CheckOptions { accepted, brokers, max_offenders: cli.max_offenders };
    let invariants::Checked { report, unanswered } = invariants::check_what_answers(&urls, &options).await;
    for error in &unanswered {
        eprintln!("check-invariants: {error}");
    }
    let text = if cli.json { format!("{:#}\n", report.to_json()) } else { report.to_string() };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        // A reader that stopped early (`| head`) still gets the verdict as exit status.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e).context("writing the report"),
        _ => {}
    }
    Ok(if !report.passed() {
        Verdict::Failed
    } else if !unanswered.is_empty() {
        Verdict::Unchecked
    } else {
        Verdict::Passed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_brokers_default_to_the_dev_stack_and_can_be_skipped_by_name() {
        let cli = Cli::try_parse_from(["check-invariants"]).unwrap();
        // A developer's shell may set these; the default is what matters here.
        if std::env::var_os("AMQP_URL").is_none() {
            assert_eq!(cli.amqp_url, invariants::DEV_AMQP_URL);
        }
        if std::env::var_os("KAFKA_BROKERS").is_none() {
            assert_eq!(cli.kafka_brokers, invariants::DEV_KAFKA_BROKERS);
        }
        assert!(!cli.no_brokers);
        assert!(Cli::try_parse_from(["check-invariants", "--no-brokers"]).unwrap().no_brokers);
    }
}

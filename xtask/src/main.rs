//! `cargo xtask <command>`: the local runner's command line. All logic lives
//! in the library so the system tests can drive the same code.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use xtask::{Stack, commands, commands::Target};

#[derive(Parser)]
#[command(name = "xtask", about = "Run the ordermesh services and their infrastructure locally")]
struct Cli {
    /// Which stack (directory and ports) to act on.
    #[arg(long, global = true, value_enum, default_value_t = StackName::Dev)]
    stack: StackName,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum StackName {
    Dev,
    Test,
    Chaos,
}

#[derive(Subcommand)]
enum Command {
    /// Start infrastructure, create databases and topics, build and start the services.
    Up {
        /// Skip `cargo build` of the service binaries.
        #[arg(long)]
        no_build: bool,
    },
    /// Stop the services, then the infrastructure.
    Down,
    /// Show every process of the stack.
    Status,
    /// Print a log file (postgres, rabbitmq, kafka or a service).
    Logs {
        name: String,
        /// Keep printing as the log grows.
        #[arg(long, short)]
        follow: bool,
    },
    /// SIGKILL a component or service (simulates a crash).
    Kill { name: String },
    /// SIGTERM a component or service and wait until it has exited (a graceful stop).
    Stop { name: String },
    /// Restart a component or service and wait until it is ready.
    Restart { name: String },
    /// Set up everything the tests need (tools, test stack, binaries) and run every test.
    Test {
        /// Passed to `cargo test` (e.g. `-- --test-threads 1`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks, release builds, on the test stack: the outbox relays
    /// against raw publishing and PostgreSQL's commit ceiling (`relays`),
    /// the whole system under an open loop, safe and unsafe (`e2e`); each
    /// writes a report (HTML and JSON) under target/bench/.
    Bench {
        /// Which: `relays`, `e2e` or `all`.
        #[arg(default_value = "all")]
        which: String,
        /// Passed to the benchmark (e.g. `relays --messages 20000 --rates 100,1000`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Place mixed orders while killing services and brokers on a seeded
    /// schedule, drain, and check every invariant (always on the chaos stack).
    Chaos {
        #[arg(long, default_value_t = 300)]
        orders: usize,
        #[arg(long, default_value_t = 10)]
        kills: usize,
        /// Silent network partitions (PostgreSQL, RabbitMQ and Kafka links,
        /// each cut at least once from three on); local processes only.
        #[arg(long, default_value_t = 0, conflicts_with = "compose")]
        partitions: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Orders per second.
        #[arg(long, default_value_t = 15.0)]
        rate: f64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Upper bound on the wait for the system to settle, in seconds.
        #[arg(long, default_value_t = 180)]
        drain_timeout: u64,
        /// A negative control: publish-without-outbox, ack-before-commit,
        /// skip-inbox or flush-before-confirm (the last with the log-tailing
        /// relay; local processes only: the compose deployment would not get
        /// the mode).
        #[arg(long = "unsafe", conflicts_with = "compose")]
        unsafe_mode: Option<String>,
        /// The services' outbox relay: polling (default) or log-tailing
        /// (local processes only).
        #[arg(long, default_value = "polling", conflicts_with = "compose")]
        relay: String,
        /// Run against `docker compose` (file docker-compose.yml) instead of
        /// local processes; no namespace, no unsafe modes.
        #[arg(long)]
        compose: bool,
        /// Print the seeded schedule of faults and exit without running.
        #[arg(long)]
        plan_only: bool,
    },
    /// A lesson of the course measured on the real system (on the chaos
    /// stack): `coupling`, the phone call against the mailbox.
    Lesson {
        #[command(subcommand)]
        lesson: Lesson,
    },
    /// The stack's Kafka supervisor itself (started by `up`, `infra up` and
    /// the stacks' own start; see xtask/src/kafka_supervisor.rs).
    #[command(name = "supervise-kafka", hide = true)]
    SuperviseKafka,
    /// Write the compile-checked queries' offline data (.sqlx/) from a
    /// scratch database holding every migration, on the stack's PostgreSQL
    /// (started if need be) unless `--server` names another; installs
    /// sqlx-cli if missing.
    #[command(name = "sqlx-prepare")]
    SqlxPrepare {
        /// Only check that .sqlx/ matches the queries (fails if stale).
        #[arg(long)]
        check: bool,
        /// A running PostgreSQL server to use instead of the stack's, e.g.
        /// `postgres://postgres@127.0.0.1:5432`.
        #[arg(long)]
        server: Option<String>,
    },
    /// Infrastructure only (PostgreSQL, RabbitMQ, Kafka), e.g. for tests.
    Infra {
        #[command(subcommand)]
        action: InfraAction,
    },
}

#[derive(Subcommand)]
enum Lesson {
    /// The caller's blocking time, sync (`POST /orders/sync`) against async
    /// (`POST /orders`), with 1 to 5 services; then orders placed while
    /// `email` is down, and after it restarts.
    Coupling {
        /// Orders placed each way to measure blocking.
        #[arg(long, default_value_t = 40)]
        orders: usize,
        /// Orders placed each way while email is down.
        #[arg(long, default_value_t = 10)]
        while_down: usize,
    },
}

#[derive(Subcommand)]
enum InfraAction {
    Up,
    Down,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Print the context chain without a backtrace: the messages
            // already say what failed and carry log tails.
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let repo_root = xtask::repo_root();
    let stack = match cli.stack {
        StackName::Dev => Stack::dev(&repo_root),
        StackName::Test => Stack::test(&repo_root),
        StackName::Chaos => Stack::chaos(&repo_root),
    };
    match cli.command {
        Command::Up { no_build } => commands::up(&stack, !no_build).await,
        Command::Down => commands::down(&stack).await,
        Command::Status => {
            print!("{}", commands::status(&stack));
            Ok(())
        }
        Command::Logs { name, follow } => commands::logs(&stack, name.parse::<Target>()?, follow).await,
        Command::Kill { name } => commands::kill(&stack, name.parse::<Target>()?).await,
        Command::Stop { name } => commands::stop(&stack, name.parse::<Target>()?).await,
        Command::Restart { name } => commands::restart(&stack, name.parse::<Target>()?).await,
        Command::Test { args } => commands::test(&args).await,
        Command::Chaos {
            orders,
            kills,
            partitions,
            seed,
            rate,
            concurrency,
            drain_timeout,
            unsafe_mode,
            relay,
            compose,
            plan_only,
        } => {
            let relay: messaging::log_tailing::RelayMode =
                relay.parse().map_err(|e| anyhow::anyhow!("--relay: {e}"))?;
            let unsafe_mode = match unsafe_mode.as_deref() {
                None => None,
                Some(name) => Some(xtask::chaos::UnsafeMode::parse(name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--unsafe must be publish-without-outbox, ack-before-commit, skip-inbox or flush-before-confirm"
                    )
                })?),
            };
            let options = xtask::chaos::ChaosOptions {
                orders,
                kills,
                partitions,
                seed,
                rate,
                concurrency,
                drain_timeout: std::time::Duration::from_secs(drain_timeout),
                unsafe_mode,
                relay,
                ..Default::default()
            };
            if plan_only {
                let window = std::time::Duration::from_secs_f64(orders as f64 / rate.max(0.1));
                let targets = xtask::chaos::ChaosOptions::default().targets;
                for fault in xtask::chaos::plan::plan(seed, kills, partitions, window, &targets) {
                    println!(
                        "{:>7.2}s {:?} {} for {:.1}s",
                        fault.at.as_secs_f64(),
                        fault.kind,
                        fault.target,
                        fault.down_for.as_secs_f64()
                    );
                }
                return Ok(());
            }
            let chaos_stack = Stack::chaos(&repo_root);
            let backend = if compose {
                xtask::chaos::backend::Backend::compose(repo_root.join("docker-compose.yml"))
            } else {
                // The runner starts the services from their binaries: build
                // them first, as `up` does, so the run uses today's code.
                xtask::services::build_services(&repo_root).await?;
                xtask::chaos::backend::Backend::Local(&chaos_stack)
            };
            let report = xtask::chaos::run(&backend, options).await?;
            println!("\n{report}");
            if !report.passed() {
                anyhow::bail!("the chaos run found a violation (seed {seed})");
            }
            Ok(())
        }
        Command::Lesson { lesson: Lesson::Coupling { orders, while_down } } => {
            xtask::services::build_services(&repo_root).await?;
            let options = xtask::lesson::CouplingOptions { orders: orders.max(1), while_down: while_down.max(1) };
            println!("{}", xtask::lesson::coupling(&Stack::chaos(&repo_root), options).await?);
            Ok(())
        }
        Command::Bench { which, args } => commands::bench(&which, &args),
        Command::SuperviseKafka => xtask::kafka_supervisor::supervise(&stack).await,
        Command::SqlxPrepare { check, server } => {
            let server = match server {
                Some(url) => xtask::sqlx_prepare::Server::Url(url),
                None => xtask::sqlx_prepare::Server::Stack(&stack),
            };
            xtask::sqlx_prepare::run(&repo_root, server, check).await
        }
        Command::Infra { action: InfraAction::Up } => commands::infra_up(&stack).await,
        Command::Infra { action: InfraAction::Down } => commands::infra_down(&stack).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_supervisor_subcommand_is_the_one_it_is_started_with() {
        let cli = Cli::try_parse_from(["xtask", xtask::kafka_supervisor::SUBCOMMAND, "--stack", "chaos"]).unwrap();
        assert!(matches!((cli.command, cli.stack), (Command::SuperviseKafka, StackName::Chaos)));
    }

    #[test]
    fn an_unsafe_mode_is_refused_with_the_compose_backend() {
        assert!(Cli::try_parse_from(["xtask", "chaos", "--unsafe", "skip-inbox"]).is_ok());
        let error = Cli::try_parse_from(["xtask", "chaos", "--unsafe", "skip-inbox", "--compose"]).err().unwrap();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let error = Cli::try_parse_from(["xtask", "chaos", "--partitions", "3", "--compose"]).err().unwrap();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}

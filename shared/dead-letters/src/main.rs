//! `dead-letters`: list, inspect, replay and purge dead letters.
//!
//! A `<dlq>` is a RabbitMQ dead-letter queue (`<queue>.dlq`) or a Kafka
//! dead-letter topic (`<topic>.<group>.dlq`) of the topology; `summary`
//! names them all. Exit status: 0 on success, 1 on any error.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use contracts::Topology;
use dead_letters::{DeadLetter, DeadLetters, KafkaPosition, PendingCount, ReplayReport, ReplaySelection};
use serde::Serialize;
use std::process::ExitCode;
use std::time::Duration;

// No `Debug`: it holds the AMQP URL, password and all.
#[derive(Parser)]
#[command(name = "dead-letters", about = "List, inspect, replay and purge dead letters")]
struct Cli {
    #[arg(
        long,
        env = "AMQP_URL",
        hide_env_values = true,
        default_value = "amqp://guest:guest@127.0.0.1:21672/%2f",
        global = true
    )]
    amqp_url: String,
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:21092", global = true)]
    kafka_brokers: String,
    /// Prefix of every queue, topic and group, as the services use it (e.g. `t42.`).
    #[arg(long, env = "MESSAGING_NAMESPACE", default_value = "", global = true)]
    namespace: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Longest wait for one broker round trip (twice that to read a Kafka
    /// topic to its end, or for a replay's deliveries).
    #[arg(long, default_value_t = 15, global = true)]
    timeout_secs: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pending letters of every dead-letter queue and topic.
    Summary,
    /// Pending letters of one destination, left where they are.
    List {
        dlq: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One letter in full: headers, reason, attempts, payload.
    Show { dlq: String, message_id: String },
    /// Send letters back to where they came from (same message id, so the
    /// inbox still drops a message that was in fact handled).
    Replay {
        dlq: String,
        /// One letter. On Kafka only the oldest pending one of its partition.
        #[arg(long, conflicts_with_all = ["all", "up_to"])]
        message_id: Option<String>,
        /// Every pending letter, at most 1000 per run (the report says how many remain).
        #[arg(long, conflicts_with = "up_to")]
        all: bool,
        /// Kafka: the pending records of one partition up to an offset, as PARTITION:OFFSET.
        #[arg(long, value_name = "PARTITION:OFFSET", value_parser = parse_position)]
        up_to: Option<KafkaPosition>,
    },
    /// Drop every pending letter (Kafka: skip them in the admin group).
    Purge {
        dlq: String,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

fn parse_position(text: &str) -> Result<KafkaPosition, String> {
    let (partition, offset) = text.split_once(':').ok_or("expected PARTITION:OFFSET, e.g. 2:41")?;
    Ok(KafkaPosition {
        partition: partition.trim().parse().map_err(|e| format!("partition `{partition}`: {e}"))?,
        offset: offset.trim().parse().map_err(|e| format!("offset `{offset}`: {e}"))?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain on one line; no backtrace for an operator's mistake.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let dl = DeadLetters::new(&cli.amqp_url, &cli.kafka_brokers, Topology::new(cli.namespace.clone()))
        .with_timeout(Duration::from_secs(cli.timeout_secs));
    match cli.command {
        Command::Summary => {
            let counts = dl.summary().await.context("counting dead letters")?;
            output(cli.json, &counts, || print_summary(&counts))
        }
        Command::List { dlq, limit } => {
            let letters = dl.list(&dl.resolve(&dlq)?, limit).await.with_context(|| format!("listing {dlq}"))?;
            output(cli.json, &letters, || print_list(&dlq, &letters))
        }
        Command::Show { dlq, message_id } => {
            let letter = dl.show(&dl.resolve(&dlq)?, &message_id).await.with_context(|| format!("reading {dlq}"))?;
            output(cli.json, &letter, || print_letter(&letter))
        }
        Command::Replay { dlq, message_id, all, up_to } => {
            let selection = match (message_id, all, up_to) {
                (Some(id), _, _) => ReplaySelection::Message(id),
                (None, true, _) => ReplaySelection::All,
                (None, false, Some(position)) => ReplaySelection::UpTo(position),
                (None, false, None) => bail!("say what to replay: --message-id ID, --all or --up-to PARTITION:OFFSET"),
            };
            let report = dl.replay(&dl.resolve(&dlq)?, &selection).await.with_context(|| format!("replaying {dlq}"))?;
            output(cli.json, &report, || print_replay(&report))
        }
        Command::Purge { dlq, yes } => {
            // Resolved first, so a wrong name is reported as such.
            let destination = dl.resolve(&dlq)?;
            if !yes {
                bail!("purging {dlq} cannot be undone: add --yes");
            }
            let report = dl.purge(&destination).await.with_context(|| format!("purging {dlq}"))?;
            output(cli.json, &report, || {
                println!("purged {} letter(s) from {}", report.purged, report.dead_letter_destination)
            })
        }
    }
}

fn output<T: Serialize>(json: bool, value: &T, table: impl FnOnce()) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        table();
    }
    Ok(())
}

/// Left-aligned columns as wide as their widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_summary(counts: &[PendingCount]) {
    let rows: Vec<Vec<String>> = counts
        .iter()
        .map(|c| {
            vec![
                c.destination.name.clone(),
                c.destination.broker.to_string(),
                c.destination.source.clone(),
                c.pending.to_string(),
            ]
        })
        .collect();
    print_table(&["DEAD-LETTER DESTINATION", "BROKER", "SOURCE", "PENDING"], &rows);
    let total: u64 = counts.iter().map(|c| c.pending).sum();
    println!("\n{total} pending dead letter(s)");
}

fn dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}

/// First line of `text`, at most `max` characters.
fn clip(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

fn print_list(dlq: &str, letters: &[DeadLetter]) {
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|l| {
            vec![
                dash(&l.message_id),
                dash(&l.message_type),
                l.attempts.map_or_else(|| "-".to_owned(), |a| a.to_string()),
                l.position.map_or_else(|| "-".to_owned(), |p| format!("{}:{}", p.partition, p.offset)),
                dash(&l.dead_lettered_at),
                clip(l.reason.as_deref().unwrap_or("-"), 80),
            ]
        })
        .collect();
    print_table(&["MESSAGE ID", "TYPE", "ATTEMPTS", "POSITION", "DEAD-LETTERED AT", "REASON"], &rows);
    println!("\n{} letter(s) shown from {dlq}", letters.len());
}

fn print_letter(l: &DeadLetter) {
    let field = |name: &str, value: String| println!("{name:<22}{value}");
    field("message id", dash(&l.message_id));
    field("type", dash(&l.message_type));
    field("correlation id", dash(&l.correlation_id));
    field("reason", dash(&l.reason));
    field("attempts", l.attempts.map_or_else(|| "-".to_owned(), |a| a.to_string()));
    field("original destination", dash(&l.original_destination));
    field("dead-lettered by", dash(&l.dead_lettered_by));
    field("dead-lettered at", dash(&l.dead_lettered_at));
    if let Some(p) = l.position {
        field("position", format!("partition {} offset {}", p.partition, p.offset));
    }
    if let Some(key) = &l.key {
        field("key", key.clone());
    }
    if !l.properties.is_empty() {
        println!("\nproperties:");
        for (name, value) in &l.properties {
            println!("  {name}: {value}");
        }
    }
    println!("\nheaders:");
    for (name, value) in &l.headers {
        println!("  {name}: {value}");
    }
    println!("\npayload ({} bytes):\n{}", l.payload_bytes, l.payload);
}

fn print_replay(report: &ReplayReport) {
    println!("replayed {} letter(s) from {} to {}", report.replayed, report.dead_letter_destination, report.sent_to);
    for m in &report.messages {
        let position =
            m.position.map(|p| format!(" (partition {} offset {})", p.partition, p.offset)).unwrap_or_default();
        println!("  {}{position}", dash(&m.message_id));
    }
    if report.remaining > 0 {
        println!(
            "{} more still pending (at most {} per replay): run the replay again",
            report.remaining,
            dead_letters::MAX_REPLAY_PER_CALL
        );
    }
}

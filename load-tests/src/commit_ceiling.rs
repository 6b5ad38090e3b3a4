//! The commit ceiling of the benchmark's PostgreSQL, measured in the same
//! run with pgbench (its own tool, beside the server binaries): how many
//! small write transactions per second the server commits, with one client
//! and with several. Every figure of the relays and of an order's flow is
//! bounded by it.

use anyhow::{Context, Result, bail};
use std::time::Duration;

/// pgbench's answer for one client count.
#[derive(Debug, Clone, Copy)]
pub struct CommitCeiling {
    pub clients: u32,
    pub transactions_per_second: f64,
    pub latency_ms: f64,
}

/// Runs pgbench's simple-update script (`-N`: one UPDATE, one SELECT, one
/// INSERT per transaction, each committed) for `duration` with each client
/// count, on a database of its own that is dropped afterwards.
pub async fn measure(stack: &xtask::Stack, clients: &[u32], duration: Duration) -> Result<Vec<CommitCeiling>> {
    let pgbench = xtask::tools::locate_postgres()?.bin_dir.join("pgbench");
    let database = system_tests::unique_namespace("benchpgbench");
    stack.create_database(&database).await?;
    let url = stack.postgres_url(&database);
    let result = async {
        run(&pgbench, &["-i", "-q", "-s", "1", &url]).await.context("pgbench -i")?;
        let mut ceilings = vec![];
        for &count in clients {
            let seconds = duration.as_secs().max(1).to_string();
            let jobs = count.min(2).to_string();
            let output =
                run(&pgbench, &["-N", "-n", "-c", &count.to_string(), "-j", &jobs, "-T", &seconds, &url]).await?;
            ceilings.push(parse(count, &output)?);
        }
        Ok(ceilings)
    }
    .await;
    stack.drop_database(&database).await?;
    result
}

async fn run(pgbench: &std::path::Path, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(pgbench)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {}", pgbench.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("pgbench {} failed ({}):\n{text}", args.join(" "), output.status);
    }
    Ok(text)
}

/// `tps = 1234.5 (without initial connection time)` and `latency average = 0.8 ms`.
fn parse(clients: u32, output: &str) -> Result<CommitCeiling> {
    let number_after = |prefix: &str| {
        output.lines().find_map(|line| line.trim().strip_prefix(prefix)?.split_whitespace().next()?.parse::<f64>().ok())
    };
    Ok(CommitCeiling {
        clients,
        transactions_per_second: number_after("tps = ")
            .with_context(|| format!("no tps in pgbench's output:\n{output}"))?,
        latency_ms: number_after("latency average = ").unwrap_or(f64::NAN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_output_is_read() {
        let output = "number of transactions actually processed: 12345\nlatency average = 0.810 ms\n\
                      initial connection time = 3.2 ms\ntps = 1234.567890 (without initial connection time)\n";
        let ceiling = parse(4, output).unwrap();
        assert_eq!((ceiling.clients, ceiling.transactions_per_second, ceiling.latency_ms), (4, 1234.56789, 0.81));
        assert!(parse(1, "nothing").is_err());
    }
}

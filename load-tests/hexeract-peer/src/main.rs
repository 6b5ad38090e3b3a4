//! Hexeract 0.6's outbox relay measured the way load-tests' relays
//! benchmark measures ordermesh's: run by `relays` (or by hand), it prints
//! progress on stderr and its figures as one JSON object on stdout.
//!
//! ```text
//! cargo run --release --manifest-path load-tests/hexeract-peer/Cargo.toml -- \
//!     --postgres-url postgres://postgres@127.0.0.1:22432/some_db --amqp-url amqp://guest:guest@127.0.0.1:22672/%2f
//! ```

mod peer;

use anyhow::Result;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// A fresh database the caller created (and drops).
    #[arg(long)]
    postgres_url: String,
    #[arg(long)]
    amqp_url: String,
    /// The queue is `<prefix>hexeract`, deleted at the end.
    #[arg(long, default_value = "bench.")]
    queue_prefix: String,
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    #[arg(long, default_value_t = 10)]
    per_transaction: usize,
    /// Fixed rates (msg/s); half of the saturation rate is added, as for
    /// ordermesh's relays.
    #[arg(long, value_delimiter = ',', default_values_t = [100.0, 1000.0])]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let rates = args.rates.clone();
    let figures = peer::measure(
        &args.postgres_url,
        &args.amqp_url,
        &args.queue_prefix,
        args.messages,
        args.per_transaction,
        move |saturated| {
            let mut all = rates;
            all.push((saturated / 2.0).round().max(1.0));
            all
        },
        args.seconds,
    )
    .await?;
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}

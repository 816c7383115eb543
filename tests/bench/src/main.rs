//! `make bench`: measures what users pick this project for, against the baseline each figure
//! is compared to, and prints one table (also written to docs/BENCHMARKS.md). Timings are
//! distributions or ratios from repeated runs; nothing here fails on speed.
//!
//! 1. Reaction time: `kubectl patch` → the bot's trading state; a guard level crossed → the bot
//!    in ReduceOnly, split into detection and propagation, next to the bot's own guard.
//! 2. Fleet scale: 1,000 TradingBots, against the API server accepting the same child objects
//!    from one client; operator RSS, CPU, API requests per bot, idle writes.
//! 3. Bot pipeline throughput on a 100,000-candle replay, against the bare replay loop.
//! 4. `perps-bot --profile dev --dev-fast` wall time and RSS.

mod fleet;
mod pipeline;
mod reaction;
mod report;

use report::Row;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let only: Vec<String> = std::env::args().skip(1).collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    if wants("pipeline") {
        eprintln!("bench: bot pipeline throughput and dev-fast smoke");
        rows.extend(pipeline::throughput(&mut notes)?);
        rows.extend(pipeline::dev_fast(&mut notes)?);
    }
    if wants("reaction") {
        eprintln!("bench: reaction times (real cluster)");
        rows.extend(reaction::run(&mut notes).await?);
    }
    if wants("fleet") {
        eprintln!("bench: fleet of 1,000 TradingBots (real cluster)");
        rows.extend(fleet::run(&mut notes).await?);
    }
    let table = report::table(&rows);
    println!("{table}");
    if only.is_empty() {
        report::write_markdown(&table, &notes)?;
        eprintln!("bench: wrote docs/BENCHMARKS.md");
    }
    Ok(())
}

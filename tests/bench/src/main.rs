//! `make bench`: measures what users pick this project for, against the baseline each figure
//! is compared to, and prints one table (also written to docs/BENCHMARKS.md). Timings are
//! distributions or ratios from repeated runs; nothing here fails on speed.
//!
//! 1. Reaction time: `kubectl patch` → the bot's trading state; a guard level crossed → the bot
//!    in ReduceOnly, split into detection and propagation, next to the bot's own guard.
//! 2. Fleet scale: 1,000 TradingBots, against the API server accepting the same child objects
//!    from one client; operator RSS, CPU, API requests per bot, idle writes.
//!    A live fleet: as many real bot pods as the node holds plus 2,000 synthetic scraped
//!    bots; the operator's steady-state cost and the guard reaction at fleet size vs alone.
//! 3. Bot pipeline throughput on a 100,000-candle replay, against the bare replay loop.
//! 4. `perps-bot --profile dev --dev-fast` wall time and RSS.

mod apiserver;
mod fleet;
mod images;
mod live;
mod load;
mod operator_process;
mod peak;
mod pipeline;
mod reaction;
mod report;
mod synthetic;

use futures::FutureExt;
use report::{Row, RunLog};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let only: Vec<String> = std::env::args().skip(1).collect();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Interrupted, the parts are dropped: their namespaces (bots halted first) go with them.
    tokio::select! {
        outcome = bench(&only) => outcome,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: the bench's namespaces are being removed"),
        _ = terminate.recv() => anyhow::bail!("terminated: the bench's namespaces are being removed"),
    }
}

async fn bench(only: &[String]) -> anyhow::Result<()> {
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut rows: Vec<Row> = Vec::new();
    let mut unmeasured: Vec<&'static str> = Vec::new();
    let mut run = RunLog::default();
    let load = load::LoadWatch::start();
    if wants("reaction") || wants("fleet") || wants("live") {
        run.note(format!(
            "Images: release builds of the measured tree, loaded as perps-bot:{tag} and tradingbot-operator:{tag}.",
            tag = images::tag()?
        ));
    }
    if wants("pipeline") {
        eprintln!("bench: bot pipeline throughput and dev-fast smoke");
        let part = async { pipeline::throughput(&mut run) };
        measure(&mut rows, &mut unmeasured, "bot pipeline throughput", part).await;
        let part = async { pipeline::dev_fast(&mut run) };
        measure(&mut rows, &mut unmeasured, "perps-bot --profile dev --dev-fast", part).await;
    }
    if wants("reaction") {
        eprintln!("bench: reaction times (real cluster)");
        let part = reaction::run(&mut run);
        measure(&mut rows, &mut unmeasured, "reaction times", part).await;
    }
    if wants("fleet") {
        eprintln!("bench: fleet of 1,000 TradingBots (real cluster)");
        let part = fleet::run(&mut run);
        measure(&mut rows, &mut unmeasured, "fleet of 1,000 TradingBots", part).await;
    }
    if wants("live") {
        eprintln!("bench: live fleet: real bot pods and synthetic scraped bots (real cluster)");
        let part = live::run(&mut run);
        measure(&mut rows, &mut unmeasured, "live fleet", part).await;
    }
    run.note(load.summary());
    let table = report::table(&rows);
    println!("{table}");
    if only.is_empty() {
        report::write_markdown(&table, &run, !unmeasured.is_empty())?;
        eprintln!("bench: wrote docs/BENCHMARKS.md");
    } else {
        // A partial run writes no document: its run notes go with the table.
        for note in &run.notes {
            println!("- {note}");
        }
    }
    anyhow::ensure!(
        unmeasured.is_empty(),
        "not measured (INVALID rows in the table): {}",
        unmeasured.join(", ")
    );
    Ok(())
}

/// Runs one part of the bench. A part that fails, with an error or a panic, becomes one
/// INVALID row naming it and why: the parts measured before and after it still reach the table
/// and docs/BENCHMARKS.md, and the run fails at the end.
async fn measure(
    rows: &mut Vec<Row>,
    unmeasured: &mut Vec<&'static str>,
    part: &'static str,
    work: impl Future<Output = anyhow::Result<Vec<Row>>>,
) {
    let why = match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(Ok(measured)) => {
            rows.extend(measured);
            return;
        }
        Ok(Err(error)) => format!("{error:#}"),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "it panicked".into()),
    };
    eprintln!("bench: {part} could not be measured: {why}");
    rows.push(Row::invalid(part, report::table_cell(&why)));
    unmeasured.push(part);
}

//! The bot alone: its pipeline throughput on a 100,000-candle replay (the same
//! `perps-bot backtest` users run) against the bare replay loop, and the `--dev-fast` smoke run.

use crate::report::{Row, RunLog, median_f64};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RUNS: usize = 5;
const CANDLES: usize = 100_000;
const DEV_FAST_RUNS: usize = 20;

fn bot() -> PathBuf {
    test_harness::root().join("target/release/perps-bot")
}

/// Run `perps-bot` with `args` in `dir`; returns (stdout, wall time, the process's own peak
/// RSS in bytes: see [`crate::peak`] for why not `wait4`'s).
fn measure(dir: &Path, args: &[&str]) -> anyhow::Result<(String, Duration, u64)> {
    let mut command = Command::new(bot());
    command
        .args(args)
        .current_dir(dir)
        .env("PERPS_BOT_LOG", "warn")
        .stderr(std::process::Stdio::null());
    let measured = crate::peak::run(command)?;
    Ok((measured.stdout, measured.wall, measured.peak_rss))
}

/// One `perps-bot backtest --json` process.
struct Replayed {
    summary: serde_json::Value,
    /// The whole process: start-up, the file's check, the streamed replay, the summary.
    wall: Duration,
    max_rss: u64,
}

/// `perps-bot backtest --json` over `csv` (plus `extra`).
fn replay(dir: &Path, csv: &str, extra: &[&str]) -> anyhow::Result<Replayed> {
    let mut args = vec!["backtest", "--profile", "dev", "--candles", csv, "--json"];
    args.extend_from_slice(extra);
    let (text, wall, max_rss) = measure(dir, &args)?;
    Ok(Replayed {
        summary: serde_json::from_str(&text)?,
        wall,
        max_rss,
    })
}

fn candles_per_second(summary: &serde_json::Value) -> f64 {
    summary["candles_per_second"].as_f64().unwrap_or(0.0)
}

pub fn throughput(run: &mut RunLog) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join("bench-pipeline");
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("replay.csv");
    let csv_arg = csv.display().to_string();
    measure(
        &dir,
        &[
            "backtest",
            "--profile",
            "dev",
            "--candles",
            &csv_arg,
            "--generate",
            &CANDLES.to_string(),
        ],
    )?;
    // The floor of the same binary: a one-candle replay (start-up, config, one row).
    let one = dir.join("one.csv");
    std::fs::write(
        &one,
        "symbol,start,open,high,low,close,volume\nBTC-USD,1700000000,1,1,1,1,1\n",
    )?;
    let floor_rss = replay(&dir, &one.display().to_string(), &[])?.max_rss as f64;
    let (mut full, mut floor, mut rss, mut whole) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last: serde_json::Value = serde_json::Value::Null;
    for _ in 0..RUNS {
        let replayed = replay(&dir, &csv_arg, &[])?;
        full.push(candles_per_second(&replayed.summary));
        rss.push(replayed.max_rss as f64);
        whole.push(CANDLES as f64 / replayed.wall.as_secs_f64().max(1e-9));
        last = replayed.summary;
        floor.push(candles_per_second(&replay(&dir, &csv_arg, &["--baseline"])?.summary));
    }
    let (full, floor, rss) = (median_f64(&mut full), median_f64(&mut floor), median_f64(&mut rss));
    let whole = median_f64(&mut whole);
    let stages = &last["stages"];
    let stage = |name: &str| stages[name].as_f64().unwrap_or(0.0) * 1000.0;
    run.note(format!(
        "Pipeline profile of one full replay ({} candles, {} symbols, {} orders): strategy {:.1} ms, risk + paper execution {:.1} ms, guards {:.1} ms; the rest is the loop itself (marks, paper book) and the timers. Reading and parsing the streamed rows took {:.1} ms besides (not in the throughput figures; in the whole-process one).",
        last["candles"], last["symbols"], last["orders_placed"], stage("strategy"), stage("risk_and_execution"), stage("guards"), stage("read_and_parse")
    ));
    let mib = |bytes: f64| bytes / 1_048_576.0;
    Ok(vec![
        Row::new(
            "bot pipeline throughput (strategy + risk + paper execution; reading the file excluded)",
            format!("{:.0} candles/s (median of {RUNS})", full),
        )
        .baseline(format!(
            "{:.0} candles/s: the same replay loop without strategy or risk",
            floor
        ))
        .ratio(if floor > 0.0 { full / floor } else { 0.0 })
        .target("> 1,000,000 candles/s on one core", full > 1_000_000.0),
        Row::new(
            "bot replay, whole process (start-up, file check, streamed replay)",
            format!("{whole:.0} candles/s (median of {RUNS})"),
        )
        .baseline(format!("{full:.0} candles/s: the in-loop figure above"))
        .ratio(if full > 0.0 { whole / full } else { 0.0 }),
        Row::new(
            format!("bot replay peak RSS ({CANDLES} candles)"),
            format!("{:.1} MiB", mib(rss)),
        )
        .baseline(format!(
            "{:.1} MiB: a one-candle replay of the same binary",
            mib(floor_rss)
        ))
        .ratio(if floor_rss > 0.0 { rss / floor_rss } else { 0.0 })
        .target("<= 6 MiB", rss <= 6.0 * 1_048_576.0),
    ])
}

pub fn dev_fast(run: &mut RunLog) -> anyhow::Result<Vec<Row>> {
    let dir = std::env::temp_dir().join("bench-devfast");
    std::fs::create_dir_all(&dir)?;
    let mut walls = Vec::new();
    let mut rss = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..DEV_FAST_RUNS {
        let (_, wall, max_rss) = measure(&dir, &["--profile", "dev", "--dev-fast"])?;
        walls.push(wall.as_secs_f64() * 1000.0);
        rss.push(max_rss as f64);
        let (_, start, _) = measure(&dir, &["--version"])?;
        starts.push(start.as_secs_f64() * 1000.0);
    }
    let start = median_f64(&mut starts);
    let wall = median_f64(&mut walls);
    let p95 = walls[(walls.len() * 95 / 100).min(walls.len() - 1)];
    let rss = median_f64(&mut rss);
    run.note(format!(
        "dev-fast: {DEV_FAST_RUNS} runs of the release binary, one offline cycle over the dev profile's symbols each, \
         writing metrics.json and health.json."
    ));
    Ok(vec![
        Row::new(
            "perps-bot --profile dev --dev-fast wall time",
            format!("median {wall:.1} ms, p95 {p95:.1} ms (n={DEV_FAST_RUNS})"),
        )
        .baseline(format!(
            "median {start:.1} ms: the same binary's start-up alone (perps-bot --version)"
        ))
        .ratio(if start > 0.0 { wall / start } else { 0.0 }),
        Row::new(
            "perps-bot --profile dev --dev-fast peak RSS",
            format!("median {:.1} MiB", rss / 1_048_576.0),
        ),
    ])
}

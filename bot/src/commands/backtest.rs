//! `perps-bot backtest --candles FILE.csv`: replays candles through the same strategy, trading
//! state, quantisation and risk code as the live loop, with the paper exchange filling orders
//! synchronously. Prints throughput (the benchmark uses it) and the trading result.

use crate::broker::paper::PaperExchange;
use crate::config::BotConfig;
use crate::domain::{OrderStatus, Side, Symbol};
use crate::execution::{ClientIds, build_order};
use crate::guards::GuardMonitor;
use crate::risk::{self, RiskInput, UtcClock};
use crate::strategy::{Decision, DecisionInput, SymbolStrategy};
use crate::trading_state;
use anyhow::Context;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tradingbot_crds::{Instance, TradingMode};

/// One replay row.
#[derive(Debug, Clone)]
pub struct Row {
    pub symbol: usize,
    pub start: i64,
    pub close: Decimal,
}

/// Loaded candles: symbols and rows in file order.
pub struct Replay {
    pub symbols: Vec<Symbol>,
    pub rows: Vec<Row>,
}

/// Parse `symbol,start,open,high,low,close,volume` (a header line is skipped).
pub fn load(path: &Path) -> anyhow::Result<Replay> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--candles {}: cannot read", path.display()))?;
    let mut symbols: Vec<Symbol> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (number == 0 && line.starts_with("symbol")) {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        let field = |i: usize, name: &str| {
            fields
                .get(i)
                .map(|s| s.trim())
                .with_context(|| format!("--candles line {}: missing {name}", number + 1))
        };
        let symbol_text = field(0, "symbol")?;
        let symbol = match index.get(symbol_text) {
            Some(i) => *i,
            None => {
                let parsed: Symbol = symbol_text
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--candles line {}: {e}", number + 1))?;
                symbols.push(parsed);
                index.insert(symbol_text.to_string(), symbols.len() - 1);
                symbols.len() - 1
            }
        };
        let start: i64 = field(1, "start")?
            .parse()
            .with_context(|| format!("--candles line {}: start must be unix seconds", number + 1))?;
        let close = Decimal::from_str(field(5, "close")?)
            .with_context(|| format!("--candles line {}: close must be a decimal", number + 1))?;
        anyhow::ensure!(
            close > Decimal::ZERO,
            "--candles line {}: close must be positive",
            number + 1
        );
        rows.push(Row { symbol, start, close });
    }
    anyhow::ensure!(!rows.is_empty(), "--candles {}: no candles", path.display());
    Ok(Replay { symbols, rows })
}

/// Write a deterministic random-walk replay of `count` candles over `symbols` (round robin).
pub fn generate(path: &Path, symbols: &[Symbol], count: usize, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut prices: Vec<Decimal> = symbols.iter().map(|_| Decimal::from(1000)).collect();
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    writeln!(out, "symbol,start,open,high,low,close,volume")?;
    for i in 0..count {
        let s = i % symbols.len();
        let open = prices[s];
        let step: i64 = rng.gen_range(-30..=30);
        let close = (open * (Decimal::ONE + Decimal::new(step, 4))).round_dp(4);
        prices[s] = close;
        let start = 1_700_000_000 + (i / symbols.len()) as i64 * 60;
        writeln!(
            out,
            "{},{start},{open},{},{},{close},{}",
            symbols[s],
            open.max(close),
            open.min(close),
            rng.gen_range(1..100)
        )?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub candles: usize,
    pub symbols: usize,
    pub seconds: f64,
    pub candles_per_second: f64,
    pub orders_placed: u64,
    pub orders_refused: u64,
    pub fills: usize,
    pub realized_pnl: Decimal,
    pub fees: Decimal,
    pub final_equity: Decimal,
    pub peak_rss_bytes: u64,
    /// Where the time went (only measured in the full replay).
    pub stages: BTreeMap<&'static str, f64>,
}

/// Replay `replay` through the pipeline (or, with `baseline`, through the bare loop).
pub fn run(config: &BotConfig, replay: &Replay, baseline: bool) -> Summary {
    let mut config = config.clone();
    config.symbols = replay.symbols.clone();
    config.risk.max_staleness_seconds = u64::MAX;
    config.risk.session = None;
    let paper = PaperExchange::new(&config.paper, &replay.symbols, true);
    let products: Vec<_> = replay.symbols.iter().filter_map(|s| paper.product_of(s)).collect();
    let mut strategies: Vec<SymbolStrategy> = replay
        .symbols
        .iter()
        .map(|s| SymbolStrategy::new(&config.strategy, s))
        .collect();
    let mut guards = GuardMonitor::new(config.guards.clone(), true, None);
    let mut marks: Vec<Decimal> = vec![Decimal::ZERO; replay.symbols.len()];
    let mut ids = ClientIds::new("backtest.");
    let (mut placed, mut refused) = (0u64, 0u64);
    let mut stage = [Duration::ZERO; 3];
    let mut account = paper.account_now();
    let mut last_group = i64::MIN;
    let started = Instant::now();

    for row in &replay.rows {
        marks[row.symbol] = row.close;
        paper.set_mark(&replay.symbols[row.symbol], row.close);
        if baseline {
            continue;
        }
        if row.start != last_group {
            let t = Instant::now();
            last_group = row.start;
            let mark_of = |s: &Symbol| replay.symbols.iter().position(|x| x == s).map(|i| marks[i]);
            let equity = account.equity(mark_of);
            guards.measure(equity, row.start * 1000, BTreeMap::new(), &[]);
            guards.evaluate(Instance::Prod, row.start * 1000);
            stage[2] += t.elapsed();
        }
        let mode = guards.mode().0;
        let t = Instant::now();
        let position = account.position(&replay.symbols[row.symbol]);
        let decision = strategies[row.symbol].decide(
            &config.strategy,
            DecisionInput {
                mark: row.close,
                position,
                equity: account.cash,
                reduce_only: mode != TradingMode::Normal,
                perpetual: products[row.symbol].is_perpetual,
                hourly: &[],
            },
        );
        stage[0] += t.elapsed();
        let (side, quantity, reduce_only) = match decision {
            Decision::Hold { .. } => continue,
            Decision::Enter { side, notional, .. } => (side, notional / row.close, false),
            Decision::Exit { .. } => (
                if position > Decimal::ZERO {
                    Side::Sell
                } else {
                    Side::Buy
                },
                position.abs(),
                true,
            ),
        };
        let t = Instant::now();
        let symbol = &replay.symbols[row.symbol];
        let Ok(quote) = paper.quote_now(symbol) else { continue };
        let product = &products[row.symbol];
        let outcome =
            build_order(&config, product, &quote, side, quantity, reduce_only, ids.next_id()).and_then(|order| {
                trading_state::gate(mode, order.side, order.quantity, position, order.reduce_only)?;
                let mark_of = |s: &Symbol| replay.symbols.iter().position(|x| x == s).map(|i| marks[i]);
                risk::check(
                    &config.risk,
                    guards.levels(),
                    &RiskInput {
                        symbol,
                        side,
                        quantity: order.quantity,
                        price: quote.taker_price(side),
                        product,
                        quote: &quote,
                        quote_age_seconds: 0,
                        account: &account,
                        marks: &mark_of,
                        clock: UtcClock::at_unix(row.start),
                    },
                )?;
                Ok(order)
            });
        match outcome.map(|order| paper.place(&order)) {
            Ok(Ok(order)) if order.status == OrderStatus::Filled => {
                placed += 1;
                account = paper.account_now();
            }
            _ => refused += 1,
        }
        stage[1] += t.elapsed();
    }
    let seconds = started.elapsed().as_secs_f64();
    let (realized_pnl, fees) = paper.totals();
    let final_account = paper.account_now();
    let final_equity = final_account.equity(|s| replay.symbols.iter().position(|x| x == s).map(|i| marks[i]));
    let stages = if baseline {
        BTreeMap::new()
    } else {
        BTreeMap::from([
            ("strategy", stage[0].as_secs_f64()),
            ("risk_and_execution", stage[1].as_secs_f64()),
            ("guards", stage[2].as_secs_f64()),
        ])
    };
    Summary {
        mode: if baseline { "baseline" } else { "full" },
        candles: replay.rows.len(),
        symbols: replay.symbols.len(),
        seconds,
        candles_per_second: replay.rows.len() as f64 / seconds.max(1e-9),
        orders_placed: placed,
        orders_refused: refused,
        fills: paper.fills().len(),
        realized_pnl,
        fees,
        final_equity,
        peak_rss_bytes: peak_rss_bytes(),
        stages,
    }
}

/// Peak resident set size of this process (VmHWM), in bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profiles::builtin;
    use tradingbot_crds::Profile;

    #[test]
    fn generated_replays_load_and_trade_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("candles.csv");
        let symbols: Vec<Symbol> = ["BTC-USD", "ETH-USD"].iter().map(|s| s.parse().unwrap()).collect();
        generate(&path, &symbols, 4000, 7).unwrap();
        let replay = load(&path).unwrap();
        assert_eq!((replay.rows.len(), replay.symbols.len()), (4000, 2));
        let mut config = builtin(Profile::Prod);
        config.strategy.confirmation_bars = 1;
        let first = run(&config, &replay, false);
        let second = run(&config, &replay, false);
        assert!(first.orders_placed > 0, "the strategy trades on a random walk");
        assert_eq!(
            (first.orders_placed, first.realized_pnl),
            (second.orders_placed, second.realized_pnl)
        );
        let floor = run(&config, &replay, true);
        assert_eq!(floor.orders_placed, 0);
    }

    #[test]
    fn bad_rows_name_the_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.csv");
        std::fs::write(
            &path,
            "symbol,start,open,high,low,close,volume\nBTC-USD,1,1,1,1,abc,1\n",
        )
        .unwrap();
        let error = load(&path).err().unwrap().to_string();
        assert!(error.contains("line 2") && error.contains("close"), "{error}");
    }
}

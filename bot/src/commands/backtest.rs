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
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tradingbot_crds::{Instance, TradingMode};

/// One replay row.
#[derive(Debug, Clone)]
pub struct Row {
    pub symbol: usize,
    pub start: i64,
    pub close: Decimal,
}

/// A candle file checked end to end, then streamed from the start again: its rows are never
/// held (only its symbols), so they cost no memory however long the file is.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    file: Mutex<Option<File>>,
    pub symbols: Vec<Symbol>,
    index: HashMap<String, usize>,
    /// Candles in the file (blank lines and the header not counted).
    pub candles: usize,
}

impl Replay {
    /// Check every line of `path` (`symbol,start,open,high,low,close,volume`, a header line
    /// skipped) and collect its symbols. A bad line is named before anything is replayed.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let mut replay = Replay {
            path: path.to_path_buf(),
            file: Mutex::new(None),
            symbols: Vec::new(),
            index: HashMap::new(),
            candles: 0,
        };
        let mut lines = CandleLines::new(path, open_regular_file(path)?);
        while let Some(candle) = lines.next_candle() {
            let candle = candle?;
            if !replay.index.contains_key(candle.symbol) {
                let parsed: Symbol = candle
                    .symbol
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("--candles line {}: {e}", candle.line))?;
                replay.index.insert(candle.symbol.to_string(), replay.symbols.len());
                replay.symbols.push(parsed);
            }
            replay.candles += 1;
        }
        anyhow::ensure!(replay.candles > 0, "--candles {}: no candles", path.display());
        replay.file = Mutex::new(Some(lines.reader.into_inner()));
        Ok(replay)
    }

    /// The rows in file order, read from the file (the one checked, rewound) as they are
    /// replayed; a second replay opens it again.
    pub fn rows(&self) -> anyhow::Result<Rows<'_>> {
        let kept = self.file.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut file = match kept {
            Some(file) => file,
            None => open_regular_file(&self.path)?,
        };
        file.seek(SeekFrom::Start(0))
            .with_context(|| format!("--candles {}: cannot read it again from the start", self.path.display()))?;
        Ok(Rows {
            lines: CandleLines::new(&self.path, file),
            replay: self,
        })
    }
}

/// Open `path` for reading; only a regular file will do (the replay reads it twice: a pipe or
/// a FIFO could be read only once).
fn open_regular_file(path: &Path) -> anyhow::Result<File> {
    let cannot_read = || format!("--candles {}: cannot read", path.display());
    // Looked at before opening: opening a FIFO would wait for a writer.
    let regular = std::fs::metadata(path).with_context(cannot_read)?.is_file();
    anyhow::ensure!(
        regular,
        "--candles {}: must be a regular file (it is checked whole before the replay, then read again)",
        path.display()
    );
    File::open(path).with_context(cannot_read)
}

/// The rows of a [`Replay`], parsed one line at a time.
pub struct Rows<'a> {
    lines: CandleLines,
    replay: &'a Replay,
}

impl Iterator for Rows<'_> {
    type Item = anyhow::Result<Row>;

    fn next(&mut self) -> Option<Self::Item> {
        let candle = match self.lines.next_candle()? {
            Ok(candle) => candle,
            Err(error) => return Some(Err(error)),
        };
        let Some(&symbol) = self.replay.index.get(candle.symbol) else {
            return Some(Err(anyhow::anyhow!(
                "--candles line {}: symbol {} was not in the file when it was checked (it changed during the replay)",
                candle.line,
                candle.symbol
            )));
        };
        Some(Ok(Row {
            symbol,
            start: candle.start,
            close: candle.close,
        }))
    }
}

/// One parsed line; the symbol borrows the reader's line buffer.
struct Candle<'a> {
    line: usize,
    symbol: &'a str,
    start: i64,
    close: Decimal,
}

/// A candle file read line by line into one reused buffer.
struct CandleLines {
    reader: BufReader<File>,
    path: PathBuf,
    text: String,
    number: usize,
}

impl CandleLines {
    fn new(path: &Path, file: File) -> Self {
        CandleLines {
            reader: BufReader::new(file),
            path: path.to_path_buf(),
            text: String::new(),
            number: 0,
        }
    }

    /// The next candle (blank lines and a first line starting with `symbol` skipped), or the
    /// error naming its line and field.
    fn next_candle(&mut self) -> Option<anyhow::Result<Candle<'_>>> {
        loop {
            self.text.clear();
            self.number += 1;
            match self.reader.read_line(&mut self.text) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                    return Some(Err(anyhow::anyhow!("--candles line {}: not UTF-8 text", self.number)));
                }
                Err(error) => {
                    return Some(Err(
                        anyhow::Error::new(error).context(format!("--candles {}: cannot read", self.path.display()))
                    ));
                }
            }
            let line = self.text.trim();
            if !(line.is_empty() || (self.number == 1 && line.starts_with("symbol"))) {
                break;
            }
        }
        Some(parse_candle(self.number, self.text.trim()))
    }
}

fn parse_candle(number: usize, line: &str) -> anyhow::Result<Candle<'_>> {
    let mut fields = line.split(',').map(str::trim);
    let mut field = |name: &str| {
        fields
            .next()
            .with_context(|| format!("--candles line {number}: missing {name}"))
    };
    let symbol = field("symbol")?;
    let start: i64 = field("start")?
        .parse()
        .with_context(|| format!("--candles line {number}: start must be unix seconds"))?;
    for name in ["open", "high", "low"] {
        field(name)?;
    }
    let close = Decimal::from_str(field("close")?)
        .with_context(|| format!("--candles line {number}: close must be a decimal"))?;
    anyhow::ensure!(close > Decimal::ZERO, "--candles line {number}: close must be positive");
    Ok(Candle {
        line: number,
        symbol,
        start,
        close,
    })
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
    /// The replay loop, reading and parsing the streamed rows included.
    pub seconds: f64,
    /// The replay's own rate: reading and parsing the file (`stages.read_and_parse`) excluded.
    pub candles_per_second: f64,
    pub orders_placed: u64,
    pub orders_refused: u64,
    pub fills: usize,
    pub realized_pnl: Decimal,
    pub fees: Decimal,
    pub final_equity: Decimal,
    pub peak_rss_bytes: u64,
    /// Where the time went (reading and parsing in both modes, the rest in the full replay).
    pub stages: BTreeMap<&'static str, f64>,
}

/// Finished orders a replay's paper exchange remembers: its client order ids never repeat, so
/// it needs none to answer a resent order, and holding a live run's thousand would cost a
/// replay more memory than everything else it holds.
const REPLAY_HISTORY: usize = 64;

/// Replay `replay` through the pipeline (or, with `baseline`, through the bare loop), reading
/// its rows from the file as they are replayed (the timed region includes parsing them).
pub fn run(config: &BotConfig, replay: &Replay, baseline: bool) -> anyhow::Result<Summary> {
    let mut config = config.clone();
    config.symbols = replay.symbols.clone();
    config.risk.max_staleness_seconds = u64::MAX;
    config.risk.session = None;
    let paper = PaperExchange::new(&config.paper, &replay.symbols, true).remembering(REPLAY_HISTORY);
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
    // strategy, risk and execution, guards, reading and parsing the streamed rows.
    let mut stage = [Duration::ZERO; 4];
    let mut account = paper.account_now();
    let mut last_group = i64::MIN;
    let mut candles = 0usize;
    let started = Instant::now();

    let mut rows = replay.rows()?;
    loop {
        let t = Instant::now();
        let Some(row) = rows.next() else { break };
        stage[3] += t.elapsed();
        let row = row?;
        candles += 1;
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
    let replay_seconds = (seconds - stage[3].as_secs_f64()).max(0.0);
    anyhow::ensure!(
        candles == replay.candles,
        "--candles {}: {} candles when checked, {candles} replayed (the file changed during the replay)",
        replay.path.display(),
        replay.candles
    );
    let (realized_pnl, fees) = paper.totals();
    let final_account = paper.account_now();
    let final_equity = final_account.equity(|s| replay.symbols.iter().position(|x| x == s).map(|i| marks[i]));
    let mut stages = BTreeMap::from([("read_and_parse", stage[3].as_secs_f64())]);
    if !baseline {
        stages.extend([
            ("strategy", stage[0].as_secs_f64()),
            ("risk_and_execution", stage[1].as_secs_f64()),
            ("guards", stage[2].as_secs_f64()),
        ]);
    }
    Ok(Summary {
        mode: if baseline { "baseline" } else { "full" },
        candles,
        symbols: replay.symbols.len(),
        seconds,
        candles_per_second: candles as f64 / replay_seconds.max(1e-9),
        orders_placed: placed,
        orders_refused: refused,
        fills: paper.fill_count(),
        realized_pnl,
        fees,
        final_equity,
        peak_rss_bytes: peak_rss_bytes(),
        stages,
    })
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
        let replay = Replay::open(&path).unwrap();
        assert_eq!((replay.candles, replay.symbols.len()), (4000, 2));
        let mut config = builtin(Profile::Prod);
        config.strategy.confirmation_bars = 1;
        let first = run(&config, &replay, false).unwrap();
        let second = run(&config, &replay, false).unwrap();
        assert_eq!(first.candles, 4000, "every row streamed through the replay");
        assert!(first.orders_placed > 0, "the strategy trades on a random walk");
        assert_eq!(
            (first.orders_placed, first.realized_pnl),
            (second.orders_placed, second.realized_pnl)
        );
        let floor = run(&config, &replay, true).unwrap();
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
        let error = Replay::open(&path).err().unwrap().to_string();
        assert!(error.contains("line 2") && error.contains("close"), "{error}");
    }

    #[test]
    fn a_bad_last_line_is_refused_before_anything_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.csv");
        let mut text = String::from("symbol,start,open,high,low,close,volume\n");
        for i in 0..100 {
            text.push_str(&format!("BTC-USD,{},1,1,1,100,1\n", 60 * i));
        }
        text.push_str("BTC-USD,6000,1,1,1\n");
        std::fs::write(&path, text).unwrap();
        let error = format!("{:#}", Replay::open(&path).err().unwrap());
        assert!(error.contains("line 102") && error.contains("missing close"), "{error}");
    }

    #[test]
    fn a_file_changed_after_its_check_stops_the_replay_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("changed.csv");
        std::fs::write(&path, "BTC-USD,0,1,1,1,100,1\nBTC-USD,60,1,1,1,101,1\n").unwrap();
        let replay = Replay::open(&path).unwrap();
        std::fs::write(&path, "BTC-USD,0,1,1,1,100,1\nETH-USD,60,1,1,1,101,1\n").unwrap();
        let error = format!("{:#}", run(&builtin(Profile::Dev), &replay, false).err().unwrap());
        assert!(error.contains("line 2") && error.contains("ETH-USD"), "{error}");
    }

    #[test]
    fn a_file_cut_short_after_its_check_is_an_error_not_a_shorter_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.csv");
        std::fs::write(&path, "BTC-USD,0,1,1,1,100,1\nBTC-USD,60,1,1,1,101,1\n").unwrap();
        let replay = Replay::open(&path).unwrap();
        std::fs::write(&path, "BTC-USD,0,1,1,1,100,1\n").unwrap();
        let error = format!("{:#}", run(&builtin(Profile::Dev), &replay, false).err().unwrap());
        assert!(error.contains("2 candles when checked, 1 replayed"), "{error}");
    }

    #[test]
    fn only_a_regular_file_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let error = format!("{:#}", Replay::open(dir.path()).err().unwrap());
        assert!(error.contains("must be a regular file"), "{error}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let error = format!("{:#}", Replay::open(&fifo).err().unwrap());
        assert!(error.contains("must be a regular file"), "{error}");
        let error = format!("{:#}", Replay::open(&dir.path().join("absent.csv")).err().unwrap());
        assert!(error.contains("absent.csv: cannot read"), "{error}");
    }

    #[test]
    fn blank_lines_and_a_missing_header_are_fine_and_lines_count_from_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.csv");
        std::fs::write(&path, "BTC-USD,0,1,1,1,100,1\n\n  \nBTC-USD,60,1,1,1,-1,1\n").unwrap();
        let error = format!("{:#}", Replay::open(&path).err().unwrap());
        assert!(error.contains("line 4") && error.contains("positive"), "{error}");
        std::fs::write(&path, "BTC-USD,0,1,1,1,100,1\n\nBTC-USD,60,1,1,1,101,1\n").unwrap();
        assert_eq!(Replay::open(&path).unwrap().candles, 2);
    }
}

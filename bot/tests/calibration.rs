//! Guards calibrated for crypto, on the exchange simulator: the spot profile runs minutes on the
//! simulator's default market (one step a second: 46% and 80% a year) without a trip, and a
//! price shock (a volatility regime far beyond normal) halts it through the volatility guard;
//! a single-symbol bot holding a normal position is not "concentrated" by construction.

mod support;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{BotProcess, Exchange, LOCAL, metrics_json, wait_until};

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

async fn scrape(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `name{symbol="S"} value` for every symbol.
fn by_symbol(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}{{symbol=\"")))
        .filter_map(|rest| {
            let (symbol, value) = rest.split_once("\"} ")?;
            Some((symbol.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// How long the normal run lasts: 3 minutes in `make test`; `SPOT_CALIBRATION_SECONDS` runs
/// it longer by hand.
fn normal_run() -> Duration {
    let seconds = std::env::var("SPOT_CALIBRATION_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(seconds.unwrap_or(180))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spot_profile_runs_minutes_on_the_default_market_without_a_trip_and_a_shock_halts_it() {
    let exchange = Exchange::start(Duration::from_secs(1), &[("USD", dec!(100000))]).await;
    let addr = free_addr();
    let metrics = exchange.path("metrics.json");
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "spot",
            "--dry-run",
            "--metrics-addr",
            &addr,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        &exchange.env(),
        exchange.dir.path(),
        &exchange.path("bot.log"),
    );
    wait_until("the first cycle", Duration::from_secs(60), || {
        metrics_json(&metrics).is_some_and(|m| m["cycles"].as_u64() >= Some(1))
    })
    .await;
    let started = Instant::now();
    let run_for = normal_run();
    let (mut lowest, mut highest) = (f64::MAX, 0f64);
    while started.elapsed() < run_for {
        let text = scrape(&addr).await;
        let metric = |name: &str| test_harness::metric(&text, name);
        assert_eq!(
            metric("perps_bot_trading_mode"),
            Some(0.0),
            "tripped after {:?}:\n{text}",
            started.elapsed()
        );
        assert_eq!(support::total(&text, "perps_bot_guard_trips_total"), Some(0.0));
        let volatility = by_symbol(&text, "perps_bot_volatility");
        assert_eq!(volatility.len(), 10, "{text}");
        for (symbol, value) in &volatility {
            assert!(
                (0.25..1.2).contains(value),
                "{symbol} at {value}: outside normal crypto volatility"
            );
            lowest = lowest.min(*value);
            highest = highest.max(*value);
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let cycles = metrics_json(&metrics).unwrap()["cycles"].as_u64().unwrap();
    assert!(cycles >= run_for.as_secs() / 6, "{cycles} cycles in {run_for:?}");
    eprintln!(
        "spot profile: {:?} on the default market, {cycles} cycles, no trip; volatility {lowest:.3}..{highest:.3}",
        run_for
    );

    // A regime change: BTC drops 10% at once. The one-minute return is far beyond normal; the
    // guard halts within a couple of minutes (the minute has to close first).
    exchange
        .sim
        .inject(exchange_sim::FaultRequest {
            price_shock: Some(exchange_sim::PriceShock {
                product_id: "BTC-USD".into(),
                percent: Decimal::from(-10),
            }),
            ..Default::default()
        })
        .unwrap();
    let shocked = Instant::now();
    let mut text = String::new();
    while shocked.elapsed() < Duration::from_secs(200) {
        text = scrape(&addr).await;
        if test_harness::metric(&text, "perps_bot_trading_mode") == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_eq!(
        test_harness::metric(&text, "perps_bot_trading_mode"),
        Some(2.0),
        "{text}"
    );
    let btc = by_symbol(&text, "perps_bot_volatility")["BTC-USD"];
    assert!(btc >= 1.8, "BTC volatility {btc}");
    assert!(
        text.lines().any(
            |l| l.starts_with("perps_bot_guard_latched{guard=\"volatility\",level=\"Halted\"}") && !l.ends_with(" 0")
        ),
        "{text}"
    );
    eprintln!(
        "after a -10% shock: Halted in {:?}, BTC volatility {btc:.2}",
        shocked.elapsed()
    );
    tokio::task::block_in_place(|| bot.stop());
}

/// One symbol, one position worth about 9% of equity, and the spot example's concentration
/// level (0.6): measured in shares of equity the bot is far from concentrated, so nothing trips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_symbol_bot_is_not_concentrated_by_construction() {
    let exchange = Exchange::start(Duration::from_millis(500), &[("USD", dec!(10000))]).await;
    exchange.place(&format!("{LOCAL}seed-1"), "BTC-USD", "BUY", dec!(0.01));
    std::fs::write(
        exchange.path("config.yaml"),
        "trailing_stop_percent: \"0\"\nper_symbol:\n  BTC-USD: {short_window: 500, long_window: 1000}\nguards:\n  concentration: {reduceOnlyAt: \"0.6\", haltAt: \"0.9\"}\n",
    )
    .unwrap();
    let addr = free_addr();
    let metrics = exchange.path("metrics.json");
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "spot",
            "--config",
            exchange.path("config.yaml").to_str().unwrap(),
            "--symbols",
            "BTC-USD",
            "--interval",
            "0.3",
            "--dry-run=false",
            "--metrics-addr",
            &addr,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        &exchange.env(),
        exchange.dir.path(),
        &exchange.path("bot.log"),
    );
    wait_until("five cycles with the position", Duration::from_secs(60), || {
        metrics_json(&metrics)
            .is_some_and(|m| m["cycles"].as_u64() >= Some(5) && m["positions"].as_array().is_some_and(|p| p.len() == 1))
    })
    .await;
    let text = scrape(&addr).await;
    let concentration = test_harness::metric(&text, "perps_bot_concentration").unwrap();
    assert!(concentration > 0.005 && concentration < 0.02, "{concentration}");
    assert_eq!(test_harness::metric(&text, "perps_bot_trading_mode"), Some(0.0));
    assert_eq!(support::total(&text, "perps_bot_guard_trips_total"), Some(0.0));
    tokio::task::block_in_place(|| bot.stop());
}

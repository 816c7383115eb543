//! The bot trades only what it bought, on the exchange simulator: accounts that start with
//! coins the bot never bought, price shocks, Normal and ReduceOnly, a person moving coins
//! away, restarts with the ledger rebuilt from the exchange's order history, flatten on
//! demand, and no shorting without derivatives. Every test reads the exchange's own record of
//! the orders (its history and order log), so a sale that should not happen would be seen.

mod support;

use perps_bot::coinbase::{self, ConnectOptions, Credentials};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::Value;
use std::time::Duration;
use support::{BotProcess, Exchange, LOCAL, dec, describe, metrics_json, run, wait_until};

const MINUTE: Duration = Duration::from_secs(60);

fn shock(exchange: &Exchange, product: &str, percent: i64) {
    exchange
        .sim
        .inject(exchange_sim::FaultRequest {
            price_shock: Some(exchange_sim::PriceShock {
                product_id: product.into(),
                percent: Decimal::from(percent),
            }),
            ..Default::default()
        })
        .unwrap();
}

fn cycles(metrics: &std::path::Path) -> u64 {
    metrics_json(metrics).and_then(|m| m["cycles"].as_u64()).unwrap_or(0)
}

fn inventory(metrics: &Value, symbol: &str) -> Value {
    metrics["inventory"]["symbols"][symbol].clone()
}

/// A fresh bot (no history under its prefix) on an account full of coins it never bought,
/// started reduce-only, through two price shocks: it sees the coins, owns none of them and
/// attempts no sale at all, not even one the checks would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_spot_bot_in_reduce_only_attempts_no_sale_at_all() {
    let exchange = Exchange::start(
        Duration::from_millis(200),
        &[
            ("USD", dec!(10000)),
            ("BTC", dec!(1)),
            ("ETH", dec!(10)),
            ("SOL", dec!(50)),
        ],
    )
    .await;
    let metrics = exchange.path("metrics.json");
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "spot",
            "--reduce-only",
            "--symbols",
            "BTC-USD,ETH-USD,SOL-USD",
            "--interval",
            "0.3",
            "--cycles",
            "20",
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &exchange.env(),
        exchange.dir.path(),
        &exchange.path("bot.log"),
    );
    wait_until("three cycles", MINUTE, || cycles(&metrics) >= 3).await;
    shock(&exchange, "BTC-USD", -8);
    shock(&exchange, "ETH-USD", -8);
    wait_until("ten cycles", MINUTE, || cycles(&metrics) >= 10).await;
    assert_eq!(metrics_json(&metrics).unwrap()["trading_mode"], "ReduceOnly");
    shock(&exchange, "BTC-USD", 12);
    shock(&exchange, "SOL-USD", -15);
    let status =
        tokio::task::block_in_place(|| bot.wait(Duration::from_secs(90))).expect("the bot finishes its cycles");
    let log = bot.log();
    assert!(status.success(), "{log}");

    let snapshot = metrics_json(&metrics).unwrap();
    assert_eq!(snapshot["cycles"], 20);
    for (symbol, held) in [("BTC-USD", dec!(1)), ("ETH-USD", dec!(10)), ("SOL-USD", dec!(50))] {
        let figures = inventory(&snapshot, symbol);
        assert_eq!(dec(&figures["held"]), held, "the bot saw the coins: {snapshot:#}");
        assert_eq!(dec(&figures["own"]), Decimal::ZERO, "{symbol} is not the bot's");
        assert_eq!(dec(&figures["unowned"]), held);
    }
    assert_eq!(
        snapshot["positions"],
        serde_json::json!([]),
        "no position from coins it did not buy"
    );
    // The shocks moved the user's coins, not the bot's books: no loss, and no loss guard trips.
    // (Shocks that land in different one-minute candles are real volatility: that guard, which
    // measures the market and not the books, may trip; it changes no order here either.)
    assert_eq!(dec(&snapshot["equity"]), dec!(10000), "{snapshot:#}");
    assert_eq!(dec(&snapshot["pnl_today"]), Decimal::ZERO);
    let trips = snapshot["trips"].as_array().cloned().unwrap_or_default();
    assert!(
        trips.iter().all(|t| t["guard"] == "volatility"),
        "only the market's volatility may trip: {trips:?}"
    );
    assert_eq!(snapshot["order_stats"]["attempted"], 0);
    assert!(!log.contains("order_refused") && !log.contains("order_placed"), "{log}");
    assert!(exchange.sim.order_log().is_empty(), "no order reached the exchange");
    for (currency, held) in [("BTC", dec!(1)), ("ETH", dec!(10)), ("SOL", dec!(50))] {
        assert_eq!(exchange.balance(currency).await, held);
    }
}

const ACTIVE: &str = "short_window: 2
long_window: 3
epsilon_bps: \"0\"
trailing_stop_percent: \"0.05\"
position_fraction: \"0.002\"
entry_filters: {}
per_symbol:
  BTC-USD: {short_window: 2, long_window: 3, filters: {}}
  ETH-USD: {short_window: 2, long_window: 3, filters: {}}
";

/// An active spot bot (short MAs, a tight trailing stop) on an account holding 1 BTC and
/// 10 ETH it never bought: through price shocks in Normal, then ReduceOnly, then a flatten
/// request from the control file. The exchange's history shows sales happened, never more than
/// the bot bought, no buy after ReduceOnly, and the account ends with exactly the user's coins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_stops_reduce_only_and_flatten_sell_no_more_than_the_bot_bought() {
    let exchange = Exchange::start(
        Duration::from_millis(200),
        &[("USD", dec!(20000)), ("BTC", dec!(1)), ("ETH", dec!(10))],
    )
    .await;
    std::fs::write(exchange.path("active.yaml"), ACTIVE).unwrap();
    let (metrics, control) = (exchange.path("metrics.json"), exchange.path("control.yaml"));
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "spot",
            "--config",
            exchange.path("active.yaml").to_str().unwrap(),
            "--symbols",
            "BTC-USD,ETH-USD",
            "--interval",
            "0.25",
            "--dry-run=false",
            "--disable-guards",
            "--control-file",
            control.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &exchange.env(),
        exchange.dir.path(),
        &exchange.path("bot.log"),
    );

    // Normal: trade until the exchange shows the bot's buys and sells on both products.
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    let mut round = 0;
    loop {
        let filled = exchange.filled_by(LOCAL).await;
        let traded = |p: &str, s: &str| {
            filled
                .get(&(p.to_string(), s.to_string()))
                .is_some_and(|f| f.1 > Decimal::ZERO)
        };
        if ["BTC-USD", "ETH-USD"]
            .iter()
            .all(|p| traded(p, "BUY") && traded(p, "SELL"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no round trips yet: {filled:?}\n{}",
            bot.log()
        );
        round += 1;
        for product in ["BTC-USD", "ETH-USD"] {
            shock(&exchange, product, if round % 2 == 0 { 2 } else { -2 });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // ReduceOnly: no new buys; exits (shocks fire the trailing stops) still sell own coins.
    std::fs::write(&control, "mode: ReduceOnly\nreason: test\n").unwrap();
    wait_until("ReduceOnly", MINUTE, || {
        metrics_json(&metrics).is_some_and(|m| m["trading_mode"] == "ReduceOnly")
    })
    .await;
    let buys_before = exchange.filled_by(LOCAL).await;
    for percent in [-3, 2, -4] {
        for product in ["BTC-USD", "ETH-USD"] {
            shock(&exchange, product, percent);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let after = exchange.filled_by(LOCAL).await;
    for product in ["BTC-USD", "ETH-USD"] {
        let key = (product.to_string(), "BUY".to_string());
        assert_eq!(after.get(&key), buys_before.get(&key), "no {product} buy in ReduceOnly");
    }

    // Flatten from the control file: whatever the bot still owns is sold, nothing more.
    std::fs::write(&control, "mode: ReduceOnly\nreason: test\nflatten: t2-flat\n").unwrap();
    wait_until("the flatten done", MINUTE, || {
        bot.log().contains("\"event\":\"flatten_done\"")
    })
    .await;
    wait_until("a cycle after the flatten", MINUTE, || {
        metrics_json(&metrics).is_some_and(|m| {
            ["BTC-USD", "ETH-USD"]
                .iter()
                .all(|s| dec(&inventory(&m, s)["own"]).is_zero())
        })
    })
    .await;
    let status = tokio::task::block_in_place(|| bot.stop());
    assert!(status.success(), "{}", bot.log());

    let filled = exchange.filled_by(LOCAL).await;
    for (product, currency, users) in [("BTC-USD", "BTC", dec!(1)), ("ETH-USD", "ETH", dec!(10))] {
        let (buys, bought) = filled[&(product.to_string(), "BUY".to_string())];
        let (sells, sold) = filled[&(product.to_string(), "SELL".to_string())];
        assert!(buys >= 1 && sells >= 1 && sold > Decimal::ZERO, "{product}: {filled:?}");
        assert!(sold <= bought, "{product}: sold {sold} of {bought} bought");
        assert_eq!(sold, bought, "{product}: flattened to nothing of its own");
        assert_eq!(
            exchange.balance(currency).await,
            users,
            "exactly the user's {currency} is left"
        );
    }
    let log = exchange.sim.order_log();
    assert!(
        log.iter().all(|e| e.failure_reason.is_none()),
        "the exchange refused nothing (no sale beyond the balance): {log:?}"
    );
}

const STILL: &str = "trailing_stop_percent: \"0\"
per_symbol:
  BTC-USD: {short_window: 500, long_window: 1000}
";

/// The bot owns 0.02 BTC (bought under its prefix before it started) next to the user's 0.5.
/// The user moves coins away until only 0.005 BTC are left: the bot caps its inventory to what
/// exists, counts and logs it, and does not take the transfer for a trading loss (no guard
/// trips, though the equity drop is far over the daily loss level). Flatten over HTTP then
/// sells exactly the 0.005, and coins put back later are not reclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coins_moved_away_cap_the_inventory_and_are_not_a_trading_loss() {
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", dec!(10000)), ("BTC", dec!(0.5))]).await;
    exchange.place(&format!("{LOCAL}seed-1"), "BTC-USD", "BUY", dec!(0.02));
    std::fs::write(exchange.path("still.yaml"), STILL).unwrap();
    std::fs::write(exchange.path("token"), "0123456789abcdef-test\n").unwrap();
    let addr = format!(
        "127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let metrics = exchange.path("metrics.json");
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "spot",
            "--config",
            exchange.path("still.yaml").to_str().unwrap(),
            "--symbols",
            "BTC-USD",
            "--interval",
            "0.3",
            "--dry-run=false",
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--metrics-addr",
            &addr,
            "--control-token-file",
            exchange.path("token").to_str().unwrap(),
        ],
        &exchange.env(),
        exchange.dir.path(),
        &exchange.path("bot.log"),
    );
    let own = |m: &Value| dec(&inventory(m, "BTC-USD")["own"]);
    wait_until("the rebuilt inventory", MINUTE, || {
        metrics_json(&metrics)
            .is_some_and(|m| own(&m) == dec!(0.02) && dec(&inventory(&m, "BTC-USD")["unowned"]) == dec!(0.5))
    })
    .await;
    let equity_before = dec(&metrics_json(&metrics).unwrap()["equity"]);

    exchange
        .sim
        .set_balances(&exchange.key.name, [("BTC".to_string(), dec!(0.005))].into())
        .unwrap();
    wait_until("the cap", MINUTE, || {
        metrics_json(&metrics).is_some_and(|m| own(&m) == dec!(0.005))
    })
    .await;
    wait_until("three more cycles", MINUTE, || cycles(&metrics) >= 6).await;
    let snapshot = metrics_json(&metrics).unwrap();
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str| test_harness::metric(&text, name);
    assert_eq!(metric("perps_bot_inventory_capped_total"), Some(1.0), "{text}");
    assert_eq!(metric("perps_bot_inventory_quantity"), Some(0.005));
    assert_eq!(
        support::total(&text, "perps_bot_guard_trips_total"),
        Some(0.0),
        "the transfer tripped nothing"
    );
    assert_eq!(metric("perps_bot_trading_mode"), Some(0.0));
    assert!(
        dec(&snapshot["pnl_today"]).abs() < dec!(5),
        "no loss from the transfer: {snapshot:#}"
    );
    assert!(
        equity_before - dec(&snapshot["equity"]) > dec!(1000),
        "the equity did drop by the moved coins"
    );
    assert!(bot.log().contains("\"event\":\"inventory_capped\""));

    let response = reqwest::Client::new()
        .post(format!("http://{addr}/control/flatten"))
        .bearer_auth("0123456789abcdef-test")
        .json(&serde_json::json!({"request_id": "moved-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    wait_until("the flatten", MINUTE, || {
        exchange.sim.order_log().iter().any(|e| e.side == "SELL")
    })
    .await;
    wait_until("the flat inventory", MINUTE, || {
        metrics_json(&metrics).is_some_and(|m| own(&m).is_zero())
    })
    .await;
    let sells: Vec<_> = exchange
        .sim
        .order_log()
        .into_iter()
        .filter(|e| e.side == "SELL")
        .collect();
    assert_eq!(sells.len(), 1, "{sells:?}");
    assert_eq!(sells[0].base_size.as_deref(), Some("0.005"));
    assert_eq!(exchange.balance("BTC").await, Decimal::ZERO);

    // Coins coming back are the user's, not the bot's again; a repeated request does nothing.
    exchange
        .sim
        .set_balances(&exchange.key.name, [("BTC".to_string(), dec!(1))].into())
        .unwrap();
    let again = reqwest::Client::new()
        .post(format!("http://{addr}/control/flatten"))
        .bearer_auth("0123456789abcdef-test")
        .json(&serde_json::json!({"request_id": "moved-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    let at = cycles(&metrics);
    wait_until("three more cycles", MINUTE, || cycles(&metrics) >= at + 3).await;
    let snapshot = metrics_json(&metrics).unwrap();
    assert_eq!(own(&snapshot), Decimal::ZERO, "{snapshot:#}");
    assert_eq!(exchange.sim.order_log().iter().filter(|e| e.side == "SELL").count(), 1);
    assert!(bot.log().contains("flatten_repeat_ignored"));
    tokio::task::block_in_place(|| bot.stop());
    assert_eq!(exchange.balance("BTC").await, dec!(1));
}

/// Restarts: the bot identity bought 0.03 BTC and sold 0.01 earlier; a person bought 0.2 under
/// another client id; the account also holds the user's 1 BTC. A new process with no ledger
/// file rebuilds its inventory from the exchange's history and `perps-bot flatten` sells
/// exactly the 0.02 that are the bot's. A later run finds the persisted ledger and the history
/// agree: nothing more to sell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_ledger_is_rebuilt_from_the_exchanges_history() {
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", dec!(40000)), ("BTC", dec!(1))]).await;
    exchange.place(&format!("{LOCAL}earlier-1"), "BTC-USD", "BUY", dec!(0.03));
    exchange.place(&format!("{LOCAL}earlier-2"), "BTC-USD", "SELL", dec!(0.01));
    exchange.place("manual-person-1", "BTC-USD", "BUY", dec!(0.2));
    let state = exchange.path("state");
    std::fs::create_dir(&state).unwrap();
    let state_file = state.join("guard-state.json");
    let args = [
        "flatten",
        "--profile",
        "spot",
        "--symbols",
        "BTC-USD",
        "--dry-run=false",
        "--state-file",
        state_file.to_str().unwrap(),
    ];
    assert!(!state.join("inventory.json").exists());
    let output = run(&args, &exchange.env(), exchange.dir.path());
    assert!(output.status.success(), "{}", describe(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["closed"].as_array().unwrap().len(), 1, "{result:#}");
    assert_eq!(result["closed"][0]["order"]["quantity"], "0.02", "{result:#}");
    assert_eq!(result["positions_before"][0]["quantity"], "0.02");
    assert!(String::from_utf8_lossy(&output.stderr).contains("inventory_rebuilt"));
    assert_eq!(
        exchange.balance("BTC").await,
        dec!(1.2),
        "the user's 1 and the person's 0.2 remain"
    );
    let persisted: Value = serde_json::from_slice(&std::fs::read(state.join("inventory.json")).unwrap()).unwrap();
    assert_eq!(persisted["prefix"], LOCAL);
    assert_eq!(
        persisted["ledger"]["orders"].as_object().unwrap().len(),
        3,
        "{persisted:#}"
    );

    let output = run(&args, &exchange.env(), exchange.dir.path());
    assert!(output.status.success(), "{}", describe(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        result["closed"].as_array().unwrap().is_empty(),
        "nothing of the bot's is left: {result:#}"
    );
    let sells = exchange
        .sim
        .order_log()
        .into_iter()
        .filter(|e| e.side == "SELL")
        .count();
    assert_eq!(sells, 2, "the earlier sale and the flatten, nothing else");
}

/// The prod profile asks for shorts on perpetuals; without derivatives its symbols map to spot
/// and it trades long-only. On a falling market (bearish crossovers observed in its decisions)
/// it places no SELL at all: it owns nothing to sell and spot cannot be shorted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_derivatives_the_prod_profile_is_long_only_and_never_shorts_spot() {
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", dec!(10000)), ("BTC", dec!(1))]).await;
    let mut config = perps_bot::config::profiles::builtin(tradingbot_crds::Profile::Prod);
    config.dry_run = false;
    assert!(config.strategy.enable_shorts);
    let options = ConnectOptions::new(exchange.sim.api_url(), None, "test")
        .with_credentials(Credentials::from_json(&exchange.key.cdp_key_json(), "test").unwrap());
    let (adjusted, _) = coinbase::connect(options, &config).await.unwrap();
    assert_eq!(
        adjusted.symbols,
        ["BTC-USD".parse().unwrap(), "ETH-USD".parse().unwrap()]
    );
    assert!(!adjusted.strategy.enable_shorts, "long-only without perpetuals");

    std::fs::write(
        exchange.path("fast.yaml"),
        "short_window: 2\nlong_window: 3\nepsilon_bps: \"0\"\n",
    )
    .unwrap();
    let metrics = exchange.path("metrics.json");
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "prod",
            "--config",
            exchange.path("fast.yaml").to_str().unwrap(),
            "--symbols",
            "BTC-PERP",
            "--interval",
            "0.25",
            "--disable-guards",
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &exchange.env(),
        exchange.dir.path(),
        &exchange.path("bot.log"),
    );
    // Up and down again: every drop is a bearish crossover of the 2/3 MAs.
    let mut bearish = 0;
    for round in 0..24 {
        shock(&exchange, "BTC-USD", if round % 2 == 0 { 1 } else { -1 });
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let reason = metrics_json(&metrics).map(|m| m["decisions"]["BTC-USD"]["reason"].to_string());
            bearish += usize::from(reason.is_some_and(|r| r.contains("shorts disabled")));
        }
    }
    tokio::task::block_in_place(|| bot.stop());
    assert!(bearish >= 1, "bearish crossovers happened: {}", bot.log());
    assert!(bot.log().contains("\"event\":\"long_only\""));
    assert!(!bot.log().contains("spot_short"), "it never even tried to sell short");
    let filled = exchange.filled_by(LOCAL).await;
    let side = |s: &str| {
        filled
            .get(&("BTC-USD".to_string(), s.to_string()))
            .map_or(Decimal::ZERO, |f| f.1)
    };
    assert!(side("SELL") <= side("BUY"), "{filled:?}");
    assert_eq!(exchange.balance("BTC").await, dec!(1) + side("BUY") - side("SELL"));
}

/// A resting sell of the bot's coins offers them: while it rests, nothing more can be sold;
/// when the market fills it between cycles, the next refresh takes the coins off the books.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_sell_reserves_the_coins_and_its_later_fill_is_reconciled() {
    use perps_bot::broker::Broker;
    use perps_bot::domain::{OrderKind, OrderRequest, OrderStatus, Side, TimeInForce};
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", dec!(10000)), ("BTC", dec!(1))]).await;
    let mut config = perps_bot::config::profiles::builtin(tradingbot_crds::Profile::Spot);
    config.symbols = vec!["BTC-USD".parse().unwrap()];
    let options = ConnectOptions::new(exchange.sim.api_url(), None, "test")
        .with_credentials(Credentials::from_json(&exchange.key.cdp_key_json(), "test").unwrap());
    let (_, broker) = coinbase::connect(options, &config).await.unwrap();
    let order = |id: &str, side, quantity, kind, tif| OrderRequest {
        client_order_id: format!("{LOCAL}{id}"),
        symbol: "BTC-USD".parse().unwrap(),
        side,
        quantity,
        kind,
        tif,
        reduce_only: false,
        leverage: None,
        preview_id: None,
    };
    broker
        .place_order(&order(
            "b-1",
            Side::Buy,
            dec!(0.002),
            OrderKind::Market,
            TimeInForce::Ioc,
        ))
        .await
        .unwrap();
    let above = (exchange.sim.mid_price("BTC-USD").unwrap() * dec!(1.03)).round_dp(2);
    let resting = broker
        .place_order(&order(
            "s-1",
            Side::Sell,
            dec!(0.002),
            OrderKind::Limit { limit_price: above },
            TimeInForce::Gtc,
        ))
        .await
        .unwrap();
    assert_eq!(resting.status, OrderStatus::Open);
    let again = broker
        .place_order(&order(
            "s-2",
            Side::Sell,
            dec!(0.001),
            OrderKind::Market,
            TimeInForce::Ioc,
        ))
        .await
        .unwrap_err();
    assert!(format!("{again}").contains("SPOT_SHORT"), "{again}");
    assert_eq!(
        broker.account().await.unwrap().position(&"BTC-USD".parse().unwrap()),
        dec!(0.002)
    );

    shock(&exchange, "BTC-USD", 6);
    broker.begin_cycle().await;
    let account = broker.account().await.unwrap();
    assert!(account.positions.is_empty(), "the fill is reconciled: {account:?}");
    let report = broker.inventory().unwrap();
    let btc = &report.symbols[&"BTC-USD".parse().unwrap()];
    assert_eq!(
        (btc.bought, btc.sold, btc.caps),
        (dec!(0.002), dec!(0.002), 0),
        "no cap: {btc:?}"
    );
    assert_eq!(exchange.balance("BTC").await, dec!(1));
}

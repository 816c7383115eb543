//! Guard enforcement by the operator, on real bot pods trading on the exchange simulator:
//! loss from a price shock trips ReduceOnly then Halted (orders cancelled), a manual
//! acknowledgement is refused until the loss recovers, frozen data and unreachable metrics
//! trip the staleness guard, and a bot with its own guards disabled is still stopped.
//!
//! A bot's loss is on what it bought: the loss tests give each bot 1 BTC of its own (a fill
//! under its client order id prefix in the exchange's history) next to 1 BTC of the user's, and
//! check the bot counts exactly its own before shocking the price.

mod support;

use exchange_sim::GeneratedKey;
use perps_bot::domain::OrderStatus;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::time::Duration;
use support::sim::PodExchange;
use support::*;
use test_harness::{IptablesRule, TestNamespace, eventually};

const QUICK: Duration = Duration::from_secs(45);

fn trips(ns: &TestNamespace, bot: &str) -> Vec<Value> {
    ns.tradingbot(bot)["status"]["trips"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn trip_id(ns: &TestNamespace, bot: &str, guard: &str, level: &str) -> String {
    trips(ns, bot)
        .iter()
        .find(|t| t["guard"] == guard && t["level"] == level)
        .and_then(|t| t["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no {guard} {level} trip in {:?}", trips(ns, bot)))
}

async fn wait_cycles(ns: &TestNamespace, pod: &str, cycles: f64) {
    eventually(Duration::from_secs(90), "the bot cycling", || async move {
        let text = pod_metrics(ns, pod).await?;
        (metric(&text, "perps_bot_cycles_total")? >= cycles).then_some(())
    })
    .await;
}

/// A key holding USD and the user's 1 BTC, on which `bot` (prod) already bought 1 BTC of its own.
fn key_with_own_btc(exchange: &PodExchange, ns: &TestNamespace, bot: &str) -> GeneratedKey {
    let key = exchange.key(&[("USD", Decimal::from(200_000)), ("BTC", Decimal::ONE)], false);
    let prefix = tradingbot_crds::names::client_order_prefix(&ns.name, bot, tradingbot_crds::Instance::Prod);
    exchange
        .sim
        .place_market_order(&exchange_sim::AdminOrder {
            key_name: key.name.clone(),
            client_order_id: format!("{prefix}earlier-1"),
            product_id: "BTC-USD".into(),
            side: "BUY".into(),
            base_size: Decimal::ONE,
        })
        .expect("the bot's earlier buy fills");
    key
}

/// The venue goes cancel-only (a real incident pattern) or back to normal.
fn cancel_only(exchange: &PodExchange, on: bool) {
    exchange
        .sim
        .set_product_flags(
            "BTC-USD",
            exchange_sim::ProductFlagsUpdate {
                cancel_only: Some(on),
                ..Default::default()
            },
        )
        .unwrap();
}

/// The bot counts its own 1 BTC and not the user's.
async fn assert_owns_one_btc(ns: &TestNamespace, bot: &str) {
    let text = pod_metrics(ns, bot).await.expect("the bot's metrics");
    assert_eq!(metric(&text, "perps_bot_inventory_quantity"), Some(1.0), "{text}");
    assert_eq!(
        metric(&text, "perps_bot_inventory_unowned_quantity"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "perps_bot_exposure_notional").unwrap_or(0.0) > 0.0,
        "{text}"
    );
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loss_trips_reduce_only_then_halted_and_an_ack_needs_recovery() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("op-loss", exchange.operator_values()).await;
    let key = key_with_own_btc(&exchange, &ns, "lossy");
    exchange.secret(&ns, "coinbase-demo", &key);
    let client = exchange.client(&key).await;
    let prefix = tradingbot_crds::names::client_order_prefix(&ns.name, "lossy", tradingbot_crds::Instance::Prod);
    let resting = exchange.resting_order(&client, &format!("{prefix}resting-1")).await;
    // The venue is cancel-only from before the bot starts: it cannot sell its BTC while the
    // price falls, so the loss keeps growing through both levels; cancelling still works.
    cancel_only(&exchange, true);
    let mid = exchange.mid("BTC-USD");
    let reduce_at = (mid * Decimal::new(5, 2)).round_dp(2);
    let halt_at = (mid * Decimal::new(12, 2)).round_dp(2);
    ns.apply(&bot(
        "lossy",
        json!({
            "profile": "demo", "symbols": ["BTC-USD"], "dryRun": false,
            "exchange": {"credentialsSecret": "coinbase-demo"},
            "guards": {"dailyLoss": {"reduceOnlyAt": reduce_at.to_string(), "haltAt": halt_at.to_string()}, "resume": "Manual"},
            "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}],
        }),
    ))
    .unwrap();
    wait_running(&ns, "lossy").await;
    wait_cycles(&ns, "lossy", 3.0).await;
    assert_owns_one_btc(&ns, "lossy").await;

    exchange.shock("BTC-USD", -8);
    wait_for_field(&ns, "lossy", "{.status.mode}", "ReduceOnly", QUICK).await;
    wait_for_metric(&ns, "lossy", "perps_bot_trading_mode", 1.0, QUICK).await;
    let trip = trips(&ns, "lossy")
        .into_iter()
        .find(|t| t["level"] == "ReduceOnly")
        .unwrap();
    assert_eq!(trip["guard"], "dailyLoss");
    assert_eq!(trip["threshold"], reduce_at.normalize().to_string());
    assert!(trip["value"].as_str().unwrap().parse::<Decimal>().unwrap() >= reduce_at);
    ns.wait_for_event("lossy", "Warning GuardTripped of dailyLoss", |(kind, reason, note)| {
        kind == "Warning" && reason == "GuardTripped" && note.contains("dailyLoss")
    })
    .await;

    exchange.shock("BTC-USD", -8);
    wait_for_field(&ns, "lossy", "{.status.mode}", "Halted", QUICK).await;
    wait_for_metric(&ns, "lossy", "perps_bot_trading_mode", 2.0, QUICK).await;
    eventually(QUICK, "the bot's resting order cancelled", || {
        let client = &client;
        let id = resting.order_id.clone();
        async move { (client.get_order(&id).await.ok()?.status == OrderStatus::Cancelled).then_some(()) }
    })
    .await;

    // Acknowledging while the loss is still over the level is refused.
    let halted = trip_id(&ns, "lossy", "dailyLoss", "Halted");
    ns.kubectl(&[
        "annotate",
        "tb",
        "lossy",
        &format!("trading.gpttrader.io/ack-trip={halted}"),
    ]);
    wait_for_field(&ns, "lossy", "{.status.lastAck.result}", "Refused", QUICK).await;
    assert_eq!(ns.tradingbot("lossy")["status"]["mode"], "Halted");
    ns.wait_for_event("lossy", "Warning AckRefused", |(kind, reason, _)| {
        kind == "Warning" && reason == "AckRefused"
    })
    .await;

    // The price recovers; now the same trips can be acknowledged.
    exchange.shock("BTC-USD", 25);
    cancel_only(&exchange, false);
    wait_for_metric(&ns, "lossy", "perps_bot_daily_loss", 0.0, QUICK).await;
    ack_until_accepted(&ns, "lossy", &halted, QUICK).await;
    wait_for_field(&ns, "lossy", "{.status.mode}", "ReduceOnly", QUICK).await;
    let reduce = trip_id(&ns, "lossy", "dailyLoss", "ReduceOnly");
    ns.kubectl(&[
        "annotate",
        "--overwrite",
        "tb",
        "lossy",
        &format!("trading.gpttrader.io/ack-trip={reduce}"),
    ]);
    wait_for_field(&ns, "lossy", "{.status.mode}", "Normal", QUICK).await;
    wait_for_metric(&ns, "lossy", "perps_bot_trading_mode", 0.0, QUICK).await;
    ns.wait_for_events("lossy", "two TripAcknowledged", |events| {
        events.iter().filter(|(_, r, _)| r == "TripAcknowledged").count() >= 2
    })
    .await;
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_market_data_and_unreachable_metrics_trip_the_staleness_guard() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("op-stale", exchange.operator_values()).await;
    ns.apply(&bot(
        "stale",
        json!({
            "profile": "demo", "symbols": ["BTC-USD", "ETH-USD"], "dryRun": true,
            "guards": {"marketDataStalenessSeconds": {"reduceOnlyAt": 6, "haltAt": 3600}, "resume": "Manual"},
            "metrics": {"scrapeIntervalSeconds": 1, "unreachableAfterSeconds": 5},
            "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}],
        }),
    ))
    .unwrap();
    wait_running(&ns, "stale").await;
    wait_cycles(&ns, "stale", 2.0).await;

    exchange.freeze(true);
    wait_for_field(&ns, "stale", "{.status.mode}", "ReduceOnly", QUICK).await;
    wait_for_metric(&ns, "stale", "perps_bot_trading_mode", 1.0, QUICK).await;
    let frozen = trip_id(&ns, "stale", "marketDataStalenessSeconds", "ReduceOnly");
    exchange.freeze(false);
    eventually(QUICK, "fresh market data again", || async {
        let text = pod_metrics(&ns, "stale").await?;
        let ages: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("perps_bot_market_data_staleness_seconds{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!ages.is_empty() && ages.iter().all(|a| *a < 3.0)).then_some(())
    })
    .await;
    ack_until_accepted(&ns, "stale", &frozen, QUICK).await;
    wait_for_field(&ns, "stale", "{.status.mode}", "Normal", QUICK).await;

    // Now the bot is healthy but its metrics cannot be read by the operator.
    let ip = pod_field(&ns, "stale", "{.status.podIP}");
    let operator_ip = pod_field(
        &ns,
        &ns.pods("app.kubernetes.io/name=tradingbot-operator")[0],
        "{.status.podIP}",
    );
    assert_ne!(ip, operator_ip);
    // Dropped at the host's FORWARD chain while `blocked` lives (also if this test panics).
    let blocked = IptablesRule::drop_tcp_to(&ip, 9102).expect("iptables rule inserted");
    wait_for_field(
        &ns,
        "stale",
        "{.status.conditions[?(@.type==\"MetricsReachable\")].status}",
        "False",
        QUICK,
    )
    .await;
    wait_for_field(&ns, "stale", "{.status.mode}", "ReduceOnly", QUICK).await;
    ns.wait_for_events(
        "stale",
        "Warning MetricsUnreachable and a GuardTripped naming it",
        |events| {
            events
                .iter()
                .any(|(kind, reason, _)| kind == "Warning" && reason == "MetricsUnreachable")
                && events
                    .iter()
                    .any(|(_, reason, note)| reason == "GuardTripped" && note.contains("metrics unreachable"))
        },
    )
    .await;
    drop(blocked);
    wait_for_field(
        &ns,
        "stale",
        "{.status.conditions[?(@.type==\"MetricsReachable\")].status}",
        "True",
        QUICK,
    )
    .await;
    // The bot follows the operator's status even though the operator could not read it.
    let text = pod_metrics(&ns, "stale").await.unwrap();
    assert_eq!(metric(&text, "perps_bot_trading_mode"), Some(1.0));
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_with_its_own_guards_disabled_is_still_stopped_by_the_operator() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("op-blind", exchange.operator_values()).await;
    let key = key_with_own_btc(&exchange, &ns, "blind");
    exchange.secret(&ns, "coinbase-demo", &key);
    // Cancel-only: the bot cannot sell its BTC before the shock (nor trade the loss away).
    cancel_only(&exchange, true);
    let reduce_at = (exchange.mid("BTC-USD") * Decimal::new(5, 2)).round_dp(2);
    ns.apply(&bot(
        "blind",
        json!({
            "profile": "demo", "symbols": ["BTC-USD"], "dryRun": false,
            "exchange": {"credentialsSecret": "coinbase-demo"},
            "guards": {"dailyLoss": {"reduceOnlyAt": reduce_at.to_string()}},
            "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}, {"name": "PERPS_BOT_DISABLE_GUARDS", "value": "true"}],
        }),
    ))
    .unwrap();
    wait_running(&ns, "blind").await;
    wait_cycles(&ns, "blind", 3.0).await;
    assert_owns_one_btc(&ns, "blind").await;
    exchange.shock("BTC-USD", -9);
    wait_for_field(&ns, "blind", "{.status.mode}", "ReduceOnly", QUICK).await;
    wait_for_metric(&ns, "blind", "perps_bot_trading_mode", 1.0, QUICK).await;
    let text = pod_metrics(&ns, "blind").await.unwrap();
    assert_eq!(
        metric(&text, "perps_bot_guard_trips_total"),
        Some(0.0),
        "the bot's own guards never tripped"
    );
    assert!(metric(&text, "perps_bot_daily_loss").unwrap() >= reduce_at.to_string().parse::<f64>().unwrap());
}

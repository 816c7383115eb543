//! What the plugin's real-cluster suites share: the operator's test support (simulator, bot
//! manifests, waits), running `kubectl-tradingbot` as a user would, and the order log checks.
#![allow(dead_code)]

#[path = "../../../operator/tests/support/mod.rs"]
pub mod support;

use rust_decimal::Decimal;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
pub use support::Scrapes;
use support::sim::{MarketMover, PodExchange};
use test_harness::{TestNamespace, eventually};

/// The requesting user the plugin records (TRADINGBOT_USER).
pub const USER: &str = "alice@ops";

/// One run of the plugin.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// `kubectl-tradingbot -n <ns> ARGS`, with the test cluster's kubeconfig.
pub fn plugin(ns: &TestNamespace, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_kubectl-tradingbot"))
        .args(["-n", &ns.name])
        .args(args)
        .env("KUBECONFIG", &ns.cluster().kubeconfig)
        .env("TRADINGBOT_USER", USER)
        .output()
        .expect("the plugin runs");
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ kubectl tradingbot {}\n{}{}(exit {})",
        args.join(" "),
        run.stdout,
        run.stderr,
        run.code
    );
    run
}

/// The plugin's output; it must exit 0.
pub fn ok(ns: &TestNamespace, args: &[&str]) -> String {
    let run = plugin(ns, args);
    assert_eq!(run.code, 0, "kubectl tradingbot {args:?} failed: {run:?}");
    run.stdout
}

/// The plugin must exit with `code`; returns stderr.
pub fn fails(ns: &TestNamespace, args: &[&str], code: i32) -> String {
    let run = plugin(ns, args);
    assert_eq!(run.code, code, "kubectl tradingbot {args:?}: {run:?}");
    run.stderr
}

/// A demo bot on the simulator (real orders), its market kept moving so that it trades.
pub fn spec(extra: Value) -> Value {
    let mut spec = serde_json::json!({
        "profile": "demo",
        "image": "perps-bot:dev",
        "symbols": ["BTC-USD", "ETH-USD", "SOL-USD"],
        "dryRun": false,
        "exchange": {"credentialsSecret": "coinbase-demo"},
        "guards": {
            "errorRate": {"windowSeconds": 120, "reduceOnlyAt": 20, "haltAt": 200},
            "dailyLoss": {"reduceOnlyAt": "500", "haltAt": "1000"},
            "marketDataStalenessSeconds": {"reduceOnlyAt": 8, "haltAt": 3600},
            "resume": "Manual",
        },
        "metrics": {"scrapeIntervalSeconds": 1},
        "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}],
    });
    test_harness::merge_json(&mut spec, extra);
    spec
}

/// A simulator with a moving market, a namespace with an operator and a key Secret.
pub async fn exchange_and_namespace(prefix: &str, scrapes: Scrapes) -> (PodExchange, TestNamespace, MarketMover) {
    let exchange = PodExchange::start().await;
    let mover = exchange.keep_moving(&["BTC-USD", "ETH-USD", "SOL-USD"], 1, Duration::from_secs(4));
    let ns = support::namespace_with_operator(prefix, scrapes.values(exchange.operator_values())).await;
    let key = exchange.key(&[("USD", Decimal::from(100_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    (exchange, ns, mover)
}

pub use support::order_log::*;

/// The bot's `perps_bot_trading_mode` (0 Normal, 1 ReduceOnly, 2 Halted) from its own metrics.
pub async fn bot_mode(ns: &TestNamespace, pod: &str) -> Option<f64> {
    support::pod_metrics(ns, pod)
        .await
        .and_then(|text| test_harness::metric(&text, "perps_bot_trading_mode"))
}

pub async fn wait_bot_mode(ns: &TestNamespace, pod: &str, mode: f64) {
    eventually(
        Duration::from_secs(60),
        &format!("{pod} reports mode {mode}"),
        || async move { (bot_mode(ns, pod).await == Some(mode)).then_some(()) },
    )
    .await;
}

/// Kinds and who of `status.history`.
pub fn audit(status: &Value) -> Vec<(String, String, String)> {
    status["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or_default().to_string(),
                        e["who"].as_str().unwrap_or_default().to_string(),
                        e["why"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

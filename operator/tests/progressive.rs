//! Progressive delivery on a real cluster with real bot pods on the exchange simulator: a
//! canary gated by its analysis, promoted, baked and recorded in the rollout history; a prod
//! guard trip during the bake that rolls prod back to the previous version, stop then start
//! (the order log shows no two prod processes ever traded at once, three of them having traded);
//! a canary that makes no progress aborting at its deadline.

mod support;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::time::Duration;
use support::order_log::*;
use support::sim::{MarketMover, PodExchange};
use support::*;
use test_harness::{TestNamespace, eventually};

const ROLLOUT: Duration = Duration::from_secs(300);

fn spec(bake_seconds: u32) -> Value {
    json!({
        "profile": "demo",
        "image": "perps-bot:dev",
        "symbols": ["BTC-USD", "ETH-USD", "SOL-USD"],
        "dryRun": false,
        "exchange": {"credentialsSecret": "coinbase-demo"},
        "rollout": {
            "strategy": "Canary",
            "promotion": "Auto",
            "canary": {"minHealthyCycles": 3, "minDurationSeconds": 5, "maxErrors": 0},
            "analysis": {
                "intervalSeconds": 5, "count": 3, "failureLimit": 0, "inconclusiveLimit": 2,
                "metrics": [
                    {"name": "CycleErrors", "max": "0"},
                    {"name": "MarketDataStaleness", "max": "30"},
                    {"name": "OrderRejections", "max": "50", "comparison": "VsProd"},
                    {"name": "CycleDuration", "max": "60"},
                ],
            },
            "bake": {"durationSeconds": bake_seconds, "maxRestarts": 2},
        },
        "guards": {
            "errorRate": {"windowSeconds": 120, "reduceOnlyAt": 20, "haltAt": 200},
            "dailyLoss": {"reduceOnlyAt": "500", "haltAt": "1000"},
            "marketDataStalenessSeconds": {"reduceOnlyAt": 8, "haltAt": 3600},
        },
        "metrics": {"scrapeIntervalSeconds": 1},
        "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}],
    })
}

async fn setup(prefix: &str, name: &str, spec: Value, scrapes: Scrapes) -> (PodExchange, TestNamespace, MarketMover) {
    let exchange = PodExchange::start().await;
    let mover = exchange.keep_moving(&["BTC-USD", "ETH-USD", "SOL-USD"], 1, Duration::from_secs(4));
    let ns = namespace_with_operator(prefix, scrapes.values(exchange.operator_values())).await;
    let key = exchange.key(&[("USD", Decimal::from(100_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    ns.apply(&bot(name, spec)).unwrap();
    wait_running(&ns, name).await;
    wait_for_field(
        &ns,
        name,
        "{.status.currentVersion}",
        "perps-bot:dev",
        Duration::from_secs(60),
    )
    .await;
    (exchange, ns, mover)
}

fn history_kinds(status: &Value) -> Vec<String> {
    status["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_analysed_canary_is_promoted_baked_and_recorded() {
    let (exchange, ns, _mover) = setup("pd-analysis", "analysed", spec(20), Scrapes::Quiet).await;
    ns.kubectl(&[
        "patch",
        "tb",
        "analysed",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(&ns, "analysed", "{.status.rollout.phase}", "CanaryRunning", ROLLOUT).await;
    eventually(ROLLOUT, "a measurement of the canary", || {
        let status = ns.tradingbot("analysed")["status"].clone();
        let measured = status["rollout"]["analysis"]["measurements"].as_u64().unwrap_or(0);
        async move { (measured >= 1).then_some(status) }
    })
    .await;
    wait_for_field(&ns, "analysed", "{.status.rollout.phase}", "Baking", ROLLOUT).await;
    let baking = ns.tradingbot("analysed")["status"].clone();
    assert_eq!(baking["currentVersion"], "perps-bot:v2");
    assert_eq!(
        baking["rollout"]["analysis"]["subject"], "prod",
        "the bake measures prod"
    );
    wait_for_field(&ns, "analysed", "{.status.rollout.phase}", "Promoted", ROLLOUT).await;
    let status = ns.tradingbot("analysed")["status"].clone();
    let record = &status["rolloutHistory"][0];
    assert_eq!(
        (&record["revision"], &record["version"], &record["outcome"]),
        (&json!(1), &json!("perps-bot:v2"), &json!("Promoted")),
        "{record}"
    );
    assert_eq!(record["previousVersion"], "perps-bot:dev");
    let steps = [
        "RolloutStarted",
        "CanaryReady",
        "AnalysisPassed",
        "CanaryPassed",
        "Promoting",
        "Baking",
        "RolloutPromoted",
    ];
    ns.wait_for_events("analysed", &format!("each of {steps:?}"), |events| {
        steps.iter().all(|step| events.iter().any(|(_, r, _)| r == step))
    })
    .await;
    let kinds = history_kinds(&status);
    assert!(
        kinds.contains(&"RolloutStarted".into()) && kinds.contains(&"RolloutPromoted".into()),
        "{kinds:?}"
    );
    let started = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "RolloutStarted")
        .unwrap()
        .clone();
    assert_eq!(
        started["who"], "kubectl-patch",
        "the field manager that set spec.image: {started}"
    );
    wait_for_prod_traders(&exchange, &ns, "analysed", 2).await;
    assert_prod_never_overlapped(&exchange, &ns, "analysed", 2);
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_trip_during_the_bake_rolls_prod_back_stop_then_start() {
    let (exchange, ns, _mover) = setup("pd-bake", "baked", spec(600), Scrapes::EveryReconciles).await;
    ns.kubectl(&[
        "patch",
        "tb",
        "baked",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(&ns, "baked", "{.status.rollout.phase}", "Baking", ROLLOUT).await;
    // The old prod and the new one have both traded before anything goes wrong.
    wait_for_prod_traders(&exchange, &ns, "baked", 2).await;
    let new_prod = pod_field(&ns, "baked", "{.metadata.uid}");
    exchange.freeze(true);
    wait_for_field(&ns, "baked", "{.status.rollout.phase}", "RollingBack", ROLLOUT).await;
    // A bot is ready only on fresh market data: the market recovers for the old version to start.
    exchange.freeze(false);
    wait_for_field(&ns, "baked", "{.status.rollout.phase}", "RolledBack", ROLLOUT).await;
    let status = ns.tradingbot("baked")["status"].clone();
    assert_eq!(
        status["currentVersion"], "perps-bot:dev",
        "prod is back on the previous version"
    );
    assert_eq!(
        pod_field(&ns, "baked", "{.metadata.annotations.trading\\.gpttrader\\.io/version}"),
        "perps-bot:dev"
    );
    assert_ne!(
        pod_field(&ns, "baked", "{.metadata.uid}"),
        new_prod,
        "a new pod, after the old one stopped"
    );
    let record = &status["rolloutHistory"][0];
    assert_eq!(
        (&record["version"], &record["outcome"]),
        (&json!("perps-bot:v2"), &json!("RolledBack"))
    );
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("guard trip of prod during the bake"), "{reason}");
    ns.wait_for_event("baked", "Warning RollingBack", |(kind, r, _)| {
        kind == "Warning" && r == "RollingBack"
    })
    .await;
    assert!(history_kinds(&status).contains(&"RolledBack".to_string()));
    // The trip is acknowledged; the rolled back version is not retried.
    acknowledge_all(&ns, "baked").await;
    wait_for_prod_traders(&exchange, &ns, "baked", 3).await;
    wait_for_reconciliations(&ns, 10.0, Duration::from_secs(120)).await;
    let status = ns.tradingbot("baked")["status"].clone();
    assert_eq!(status["rollout"]["phase"], "RolledBack");
    assert!(status["canaryVersion"].is_null(), "v2 is not tried again by itself");
    assert_prod_never_overlapped(&exchange, &ns, "baked", 3);
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_makes_no_progress_aborts_at_its_deadline() {
    let mut spec = spec(30);
    spec["rollout"]["progressDeadlineSeconds"] = json!(30);
    let (exchange, ns, _mover) = setup("pd-deadline", "stuck", spec, Scrapes::Quiet).await;
    let prod = pod_field(&ns, "stuck", "{.metadata.uid}");
    // An image the node does not have: the canary never starts, it never restarts either.
    ns.kubectl(&[
        "patch",
        "tb",
        "stuck",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:missing"}}"#,
    ]);
    wait_for_field(&ns, "stuck", "{.status.rollout.phase}", "CanaryStarting", ROLLOUT).await;
    wait_for_field(&ns, "stuck", "{.status.rollout.phase}", "Aborted", ROLLOUT).await;
    let status = ns.tradingbot("stuck")["status"].clone();
    let message = status["rollout"]["message"].as_str().unwrap();
    assert!(
        message.contains("progress deadline: the canary not ready within 30 s"),
        "{message}"
    );
    assert_eq!(status["rolloutHistory"][0]["outcome"], "Aborted");
    assert_eq!(pod_field(&ns, "stuck", "{.metadata.uid}"), prod, "prod untouched");
    wait_for_prod_traders(&exchange, &ns, "stuck", 1).await;
    assert_prod_never_overlapped(&exchange, &ns, "stuck", 1);
}

/// A spec whose canary analysis measures only the mean cycle duration, with `metric`'s levels.
fn spec_measuring(metric: Value) -> Value {
    let mut spec = spec(30);
    spec["rollout"]["analysis"] = json!({
        "intervalSeconds": 5, "count": 3, "failureLimit": 0, "inconclusiveLimit": 0,
        "metrics": [metric],
    });
    spec
}

/// The analysis decides on the cluster, from the canary's real metrics: a canary whose cycles are
/// slower than its level aborts, and one too close to call pauses for a human; prod is untouched
/// and keeps trading the old version in both.
// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_analysis_aborts_and_an_inconclusive_one_pauses() {
    // A cycle against the simulator takes tens of milliseconds (the analysis measures the mean
    // in whole milliseconds): a 1 ms level fails, or is too close to call, at the first measurement.
    let failing = spec_measuring(json!({"name": "CycleDuration", "max": "0.001"}));
    let vague = spec_measuring(json!({"name": "CycleDuration", "max": "600", "inconclusiveAbove": "0.001"}));
    let (exchange, ns, _mover) = setup("pd-verdicts", "failing", failing, Scrapes::Quiet).await;
    ns.apply(&bot("vague", vague)).unwrap();
    wait_running(&ns, "vague").await;
    wait_for_field(
        &ns,
        "vague",
        "{.status.currentVersion}",
        "perps-bot:dev",
        Duration::from_secs(60),
    )
    .await;
    let prods: Vec<String> = ["failing", "vague"]
        .iter()
        .map(|bot| pod_field(&ns, bot, "{.metadata.uid}"))
        .collect();
    for bot in ["failing", "vague"] {
        ns.kubectl(&[
            "patch",
            "tb",
            bot,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"image":"perps-bot:v2"}}"#,
        ]);
    }

    wait_for_field(&ns, "failing", "{.status.rollout.phase}", "Aborted", ROLLOUT).await;
    let status = ns.tradingbot("failing")["status"].clone();
    let message = status["rollout"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("analysis failed: measurement 1/3 Failed (CycleDuration ") && message.contains("> max 0.001"),
        "{message}"
    );
    assert!(
        status["rollout"]["analysis"]["measurements"].as_u64().unwrap_or(0) >= 1,
        "the canary was measured: {status}"
    );
    assert_eq!(status["rolloutHistory"][0]["outcome"], "Aborted");
    assert_eq!(status["currentVersion"], "perps-bot:dev");

    eventually(ROLLOUT, "the inconclusive canary paused", || {
        let rollout = ns.tradingbot("vague")["status"]["rollout"].clone();
        async move { (rollout["pause"]["reason"] == "AnalysisInconclusive").then_some(rollout) }
    })
    .await;
    let status = ns.tradingbot("vague")["status"].clone();
    assert_eq!(status["rollout"]["analysis"]["phase"], "Inconclusive", "{status}");
    assert_eq!(status["rollout"]["phase"], "CanaryRunning", "waiting for a human");
    assert!(
        status["rollout"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("paused for a human")),
        "{status}"
    );
    assert!(history_kinds(&status).iter().any(|k| k == "RolloutPaused"), "{status}");
    ns.wait_for_event("vague", "AnalysisInconclusive", |(_, reason, _)| {
        reason == "AnalysisInconclusive"
    })
    .await;
    ns.wait_for_event("failing", "RolloutAborted (the abort is an Event)", |(_, reason, _)| {
        reason == "RolloutAborted"
    })
    .await;

    // Both prods untouched, and still trading the old version: orders after the verdicts.
    for (bot, uid) in ["failing", "vague"].iter().zip(&prods) {
        assert_eq!(&pod_field(&ns, bot, "{.metadata.uid}"), uid, "{bot}'s prod untouched");
        assert_eq!(ns.tradingbot(bot)["status"]["currentVersion"], "perps-bot:dev");
        let before = last_prod_order(&exchange, &ns, bot);
        eventually(
            Duration::from_secs(240),
            &format!("{bot}'s prod trading after the verdict"),
            || {
                let now = last_prod_order(&exchange, &ns, bot);
                async move { (now > before).then_some(()) }
            },
        )
        .await;
        assert_eq!(
            prod_spans(&exchange, &ns, bot).len(),
            1,
            "one prod process of {bot} traded"
        );
    }
}

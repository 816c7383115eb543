//! Canary → prod rollouts on a real cluster with real bot pods on the exchange simulator:
//! automatic promotion, manual promotion by a Git-style change of approvedVersion, a failing
//! canary that aborts and leaves prod alone, and an operator restart in the middle.

mod support;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::sim::{MarketMover, PodExchange};
use support::*;
use test_harness::{TestNamespace, eventually};

const ROLLOUT: Duration = Duration::from_secs(240);

fn spec(promotion: &str, min_duration: u32) -> Value {
    json!({
        "profile": "demo",
        "image": "perps-bot:dev",
        "symbols": ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD"],
        "dryRun": false,
        "exchange": {"credentialsSecret": "coinbase-demo"},
        "rollout": {
            "strategy": "Canary",
            "promotion": promotion,
            "canary": {"minHealthyCycles": 3, "minDurationSeconds": min_duration, "maxErrors": 0},
        },
        "guards": {
            "errorRate": {"windowSeconds": 120, "reduceOnlyAt": 3, "haltAt": 50},
            // Looser than the canary profile's locked limit: the canary must still start.
            "dailyLoss": {"reduceOnlyAt": "500", "haltAt": "1000"},
        },
        "metrics": {"scrapeIntervalSeconds": 1},
        "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}],
    })
}

/// The market keeps moving (±1 % every 4 s) for as long as the returned mover lives, so that every
/// prod process trades and the no-overlap check has something to check. The first prod process
/// has traded before this returns (a rollout that follows at once would otherwise replace it
/// before its moving averages even warmed up).
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
        Duration::from_secs(30),
    )
    .await;
    wait_for_prod_traders(&exchange, &ns, name, 1).await;
    (exchange, ns, mover)
}

/// Wait until `count` distinct prod processes of `bot` have placed orders.
async fn wait_for_prod_traders(exchange: &PodExchange, ns: &TestNamespace, bot: &str, count: usize) {
    let prefix = format!("{}/{bot}/prod/", ns.name);
    eventually(
        Duration::from_secs(180),
        &format!("{count} prod processes of {bot} trading"),
        || {
            let traders: std::collections::BTreeSet<String> = exchange
                .sim
                .order_log()
                .into_iter()
                .filter(|e| e.order_id.is_some())
                .filter_map(|e| e.client_instance.filter(|i| i.starts_with(&prefix)))
                .collect();
            async move { (traders.len() >= count).then_some(()) }
        },
    )
    .await;
}

fn reasons(ns: &TestNamespace, bot: &str) -> Vec<String> {
    let mut events: Vec<(String, String)> = {
        let json = ns.kubectl(&["get", "events.v1.events.k8s.io", "-o", "json"]);
        let value: Value = serde_json::from_str(&json).unwrap();
        value["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == bot && e["regarding"]["kind"] == "TradingBot")
            .map(|e| {
                (
                    e["eventTime"].as_str().unwrap_or_default().to_string(),
                    e["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    events.sort();
    events.into_iter().map(|(_, reason)| reason).collect()
}

/// No two prod processes of `bot` ever traded at once: their spans in the simulator's order log
/// (one sequence) do not overlap. At least `instances` distinct prod processes must have
/// traded, or the check would prove nothing.
fn assert_prod_instances_never_overlapped(exchange: &PodExchange, ns: &TestNamespace, bot: &str, instances: usize) {
    let prefix = format!("{}/{bot}/prod/", ns.name);
    let mut spans: BTreeMap<String, (u64, u64, usize)> = BTreeMap::new();
    let log = exchange.sim.order_log();
    for entry in log.iter().filter(|e| e.order_id.is_some() && !e.replay) {
        let Some(instance) = entry.client_instance.as_deref().filter(|i| i.starts_with(&prefix)) else {
            continue;
        };
        let span = spans.entry(instance.to_string()).or_insert((entry.seq, entry.seq, 0));
        span.0 = span.0.min(entry.seq);
        span.1 = span.1.max(entry.seq);
        span.2 += 1;
    }
    assert!(
        spans.len() >= instances,
        "only {} prod processes traded (expected {instances}): the check saw too little: {spans:?}",
        spans.len()
    );
    let mut ordered: Vec<&(u64, u64, usize)> = spans.values().collect();
    ordered.sort();
    for pair in ordered.windows(2) {
        assert!(pair[0].1 < pair[1].0, "two prod instances traded at once: {spans:?}");
    }
    assert!(
        !log.iter().any(|e| e
            .client_instance
            .as_deref()
            .is_some_and(|i| i.contains(&format!("/{bot}/canary/")))),
        "the dry-run canary placed orders"
    );
    eprintln!("prod processes that traded, with their order-log spans: {spans:?}");
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_automatically() {
    let (exchange, ns, _mover) = setup("ro-auto", "roll", spec("Auto", 8), Scrapes::Quiet).await;
    let old_uid = pod_field(&ns, "roll", "{.metadata.uid}");
    ns.kubectl(&[
        "patch",
        "tb",
        "roll",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "CanaryRunning", ROLLOUT).await;
    assert_eq!(
        pod_field(
            &ns,
            "roll--canary",
            "{.metadata.annotations.trading\\.gpttrader\\.io/version}"
        ),
        "perps-bot:v2"
    );
    assert_eq!(
        pod_field(&ns, "roll", "{.metadata.annotations.trading\\.gpttrader\\.io/version}"),
        "perps-bot:dev",
        "prod keeps the old version meanwhile"
    );
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "Promoted", ROLLOUT).await;
    wait_running(&ns, "roll").await;
    let status = ns.tradingbot("roll")["status"].clone();
    assert_eq!(status["currentVersion"], "perps-bot:v2");
    assert!(status["canaryVersion"].is_null());
    assert!(status["rollout"]["healthyCycles"].as_u64().unwrap() >= 3);
    assert_ne!(pod_field(&ns, "roll", "{.metadata.uid}"), old_uid);
    assert_eq!(
        pod_field(&ns, "roll", "{.metadata.annotations.trading\\.gpttrader\\.io/version}"),
        "perps-bot:v2"
    );
    eventually(Duration::from_secs(60), "the canary pod gone", || {
        let gone = ns.kubectl_result(&["get", "pod", "roll--canary"]).is_err();
        async move { gone.then_some(()) }
    })
    .await;
    let steps = [
        "RolloutStarted",
        "CanaryReady",
        "CanaryPassed",
        "Promoting",
        "RolloutPromoted",
    ];
    // Events follow the status write they belong to: wait for all of them, then check the order.
    let seen = eventually(Duration::from_secs(30), "an Event for each rollout step", || {
        let seen = reasons(&ns, "roll");
        let all = steps.iter().all(|step| seen.iter().any(|s| s == step));
        async move { all.then_some(seen) }
    })
    .await;
    let order: Vec<usize> = steps
        .iter()
        .map(|r| seen.iter().position(|s| s == r).expect("waited for above"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    wait_for_prod_traders(&exchange, &ns, "roll", 2).await;
    assert_prod_instances_never_overlapped(&exchange, &ns, "roll", 2);
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_promotion_waits_for_a_git_commit_of_approved_version() {
    let (exchange, ns, _mover) = setup("ro-manual", "gated", spec("Manual", 5), Scrapes::Quiet).await;
    ns.kubectl(&[
        "patch",
        "tb",
        "gated",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(&ns, "gated", "{.status.rollout.phase}", "AwaitingPromotion", ROLLOUT).await;
    let status = ns.tradingbot("gated")["status"].clone();
    assert_eq!(status["currentVersion"], "perps-bot:dev");
    assert_eq!(status["canaryVersion"], "perps-bot:v2");
    assert!(
        status["rollout"]["message"]
            .as_str()
            .unwrap()
            .contains("approvedVersion: perps-bot:v2")
    );
    let progressing = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        (progressing["status"].as_str(), progressing["reason"].as_str()),
        (Some("True"), Some("AwaitingPromotion"))
    );
    let wide = ns.kubectl(&["get", "tb", "gated", "-o", "wide"]);
    assert!(
        wide.contains("AwaitingPromotion") && wide.contains("perps-bot:v2"),
        "{wide}"
    );

    // The GitOps commit: the whole manifest again, now with approvedVersion.
    let mut approved = spec("Manual", 5);
    approved["image"] = json!("perps-bot:v2");
    approved["rollout"]["approvedVersion"] = json!("perps-bot:v2");
    ns.apply(&bot("gated", approved)).unwrap();
    wait_for_field(&ns, "gated", "{.status.rollout.phase}", "Promoted", ROLLOUT).await;
    assert_eq!(ns.tradingbot("gated")["status"]["currentVersion"], "perps-bot:v2");
    wait_for_prod_traders(&exchange, &ns, "gated", 2).await;
    assert_prod_instances_never_overlapped(&exchange, &ns, "gated", 2);
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_aborts_and_prod_keeps_its_version() {
    let (exchange, ns, _mover) = setup("ro-abort", "steady", spec("Auto", 5), Scrapes::EveryReconciles).await;
    let prod_uid = pod_field(&ns, "steady", "{.metadata.uid}");
    // perps-bot:broken has an unreachable exchange URL baked in: a bad release.
    ns.kubectl(&[
        "patch",
        "tb",
        "steady",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:broken"}}"#,
    ]);
    wait_for_field(&ns, "steady", "{.status.rollout.phase}", "Aborted", ROLLOUT).await;
    let status = ns.tradingbot("steady")["status"].clone();
    let message = status["rollout"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("guard trip during the canary") && message.contains("errorRate"),
        "{message}"
    );
    assert_eq!(status["currentVersion"], "perps-bot:dev");
    assert!(status["canaryVersion"].is_null());
    assert_eq!(status["mode"], "Normal", "the canary's trip does not restrict prod");
    ns.wait_for_event("steady", "Warning RolloutAborted", |(kind, reason, _)| {
        kind == "Warning" && reason == "RolloutAborted"
    })
    .await;
    eventually(Duration::from_secs(60), "the canary removed", || {
        let gone = ns.kubectl_result(&["get", "pod", "steady--canary"]).is_err();
        async move { gone.then_some(()) }
    })
    .await;
    // Not retried while the spec names the same version; prod untouched: over the next 10
    // reconciles of this bot (each scrape triggers one) no canary pod is created.
    wait_for_reconciliations(&ns, 10.0, Duration::from_secs(120)).await;
    assert!(
        ns.events_for("steady")
            .iter()
            .filter(|(_, r, _)| r == "RolloutStarted")
            .count()
            == 1,
        "the aborted version was started again"
    );
    assert!(
        ns.kubectl_result(&["get", "pod", "steady--canary"]).is_err(),
        "an aborted version is not retried"
    );
    assert_eq!(ns.tradingbot("steady")["status"]["rollout"]["phase"], "Aborted");
    assert_eq!(pod_field(&ns, "steady", "{.metadata.uid}"), prod_uid);
    wait_for_prod_traders(&exchange, &ns, "steady", 1).await;
    assert_prod_instances_never_overlapped(&exchange, &ns, "steady", 1);
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_mid_rollout_resumes_it() {
    let (exchange, ns, _mover) = setup("ro-restart", "resumed", spec("Auto", 25), Scrapes::Quiet).await;
    ns.kubectl(&[
        "patch",
        "tb",
        "resumed",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(&ns, "resumed", "{.status.rollout.phase}", "CanaryRunning", ROLLOUT).await;
    let started = ns.tradingbot("resumed")["status"]["rollout"]["startedAt"].clone();
    let canary_uid = pod_field(&ns, "resumed--canary", "{.metadata.uid}");
    let operator = ns.pods("app.kubernetes.io/name=tradingbot-operator")[0].clone();
    let restarts_before = kill_and_await_restart(&ns, &operator).await;
    wait_for_field(&ns, "resumed", "{.status.rollout.phase}", "Promoted", ROLLOUT).await;
    let status = ns.tradingbot("resumed")["status"].clone();
    assert_eq!(
        status["rollout"]["startedAt"], started,
        "the rollout was resumed, not restarted"
    );
    assert_eq!(status["currentVersion"], "perps-bot:v2");
    let seen = reasons(&ns, "resumed");
    assert_eq!(seen.iter().filter(|r| *r == "RolloutStarted").count(), 1, "{seen:?}");
    assert_eq!(
        pod_field(&ns, &operator, "{.status.containerStatuses[0].restartCount}"),
        (restarts_before + 1).to_string(),
        "the operator was killed once and restarted once"
    );
    assert!(!canary_uid.is_empty());
    wait_for_prod_traders(&exchange, &ns, "resumed", 2).await;
    assert_prod_instances_never_overlapped(&exchange, &ns, "resumed", 2);
}

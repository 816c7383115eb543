//! The operator as the independent second line of defence, on the real cluster: enforcement
//! that no refused child or status write can block, children that no other TradingBot can collide with
//! or steal, and objects of other owners left alone.

mod support;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::sim::PodExchange;
use support::*;
use test_harness::{TestNamespace, eventually};

fn condition(ns: &TestNamespace, bot: &str, type_: &str) -> Value {
    ns.tradingbot(bot)["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

/// A staleness guard the operator enforces alone (the bot's own guards are off).
fn guarded_spec() -> Value {
    json!({
        "profile": "demo", "symbols": ["BTC-USD"], "dryRun": true, "image": "perps-bot:dev",
        "exchange": {"credentialsSecret": "coinbase-demo"},
        "rollout": {"strategy": "Canary", "promotion": "Manual", "canary": {"minHealthyCycles": 1, "minDurationSeconds": 0}},
        "guards": {"marketDataStalenessSeconds": {"reduceOnlyAt": 4, "haltAt": 8}},
        "metrics": {"scrapeIntervalSeconds": 1, "unreachableAfterSeconds": 5},
        "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}, {"name": "PERPS_BOT_DISABLE_GUARDS", "value": "true"}],
    })
}

/// From freezing market data to `status.mode` Halted and the bot obeying it.
async fn time_to_halt(exchange: &PodExchange, ns: &TestNamespace, bot: &str) -> Duration {
    let started = Instant::now();
    exchange.freeze(true);
    wait_for_field(ns, bot, "{.status.mode}", "Halted", Duration::from_secs(60)).await;
    let halted_after = started.elapsed();
    wait_for_metric(ns, bot, "perps_bot_trading_mode", 2.0, Duration::from_secs(15)).await;
    let text = pod_metrics(ns, bot).await.expect("bot metrics");
    assert_eq!(
        metric(&text, "perps_bot_guard_trips_total"),
        Some(0.0),
        "the bot's own guards are off: only the operator acted"
    );
    exchange.freeze(false);
    halted_after
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_canary_write_never_delays_a_guard_trip() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("safe-quota", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(10_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    ns.apply(&bot("guarded", guarded_spec())).unwrap();
    wait_running(&ns, "guarded").await;
    wait_for_metric(&ns, "guarded", "perps_bot_mode_known", 1.0, Duration::from_secs(30)).await;

    // The bound without any failure: freeze, halt, acknowledge, recover.
    let clean = time_to_halt(&exchange, &ns, "guarded").await;
    assert!(
        !trip_ids(&ns.tradingbot("guarded")["status"]).is_empty(),
        "a trip latched"
    );
    acknowledge_all(&ns, "guarded").await;
    wait_for_field(&ns, "guarded", "{.status.mode}", "Normal", Duration::from_secs(60)).await;

    // A quota that refuses every further ConfigMap and pod: the canary's children.
    let count = |kind: &str| ns.kubectl(&["get", kind, "-o", "name"]).lines().count().to_string();
    let (config_maps, pods) = (count("configmaps"), count("pods"));
    let quota = json!({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-canary"},
        "spec": {"hard": {"configmaps": config_maps, "pods": pods}},
    });
    ns.apply(&quota.to_string()).unwrap();
    eventually(Duration::from_secs(60), "the quota's usage counted", || {
        let used = ns.kubectl(&[
            "get",
            "resourcequota",
            "no-canary",
            "-o",
            "jsonpath={.status.used.pods}",
        ]);
        let pods = pods.clone();
        async move { (used.trim() == pods).then_some(()) }
    })
    .await;
    ns.kubectl(&[
        "patch",
        "tb",
        "guarded",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    let refused = eventually(Duration::from_secs(60), "the canary's children refused", || {
        let c = condition(&ns, "guarded", "ChildrenApplied");
        async move { (c["status"] == "False").then_some(c) }
    })
    .await;
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("ConfigMap guarded--canary-config") && message.contains("exceeded quota"),
        "the condition names the child and the API's message: {refused}"
    );
    assert_eq!(refused["reason"], "WriteFailed");
    ns.wait_for_event(
        "guarded",
        "Warning ChildWriteFailed naming guarded--canary-config",
        |(kind, reason, note)| {
            kind == "Warning" && reason == "ChildWriteFailed" && note.contains("guarded--canary-config")
        },
    )
    .await;
    assert_eq!(ns.tradingbot("guarded")["status"]["rollout"]["phase"], "CanaryStarting");

    // The same guard trip, while every pass of the reconcile meets the refused writes.
    let failing = time_to_halt(&exchange, &ns, "guarded").await;
    eprintln!("time to Halted: {clean:?} without failures, {failing:?} with the canary refused");
    let bound = clean * 2 + Duration::from_secs(10);
    assert!(
        failing <= bound,
        "{failing:?} is over the bound {bound:?} the clean case sets"
    );
    assert_eq!(
        condition(&ns, "guarded", "ChildrenApplied")["status"],
        "False",
        "still refused meanwhile"
    );
    assert_eq!(
        condition(&ns, "guarded", "Halted")["reason"],
        "GuardTripped",
        "{}",
        condition(&ns, "guarded", "Halted")
    );
}

/// The operator's reconcile errors so far (all reasons) and whether one was a refused status
/// write of the trading decisions.
async fn enforce_refusals(ns: &TestNamespace) -> Option<(f64, bool)> {
    let text = operator_metrics(ns).await?;
    let errors = metric(&text, "tradingbot_operator_reconcile_errors_total").unwrap_or(0.0);
    Some((errors, text.contains("reason=\"enforce_api_403\"")))
}

/// The operator's Role in `ns` without (or, `restore`d, with) its right to write TradingBot
/// status: the API server itself refuses the writes meanwhile.
fn refuse_status_writes(ns: &TestNamespace, original: &Value, refuse: bool) {
    let mut role = original.clone();
    for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields"] {
        role["metadata"].as_object_mut().map(|m| m.remove(field));
    }
    if refuse {
        let rules = role["rules"].as_array_mut().expect("the Role's rules");
        rules.retain(|rule| !rule["resources"].to_string().contains("tradingbots/status"));
    }
    ns.apply(&role.to_string()).expect("the operator's Role replaced");
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_status_write_keeps_every_scrape_of_a_quiet_bot_asking() {
    let exchange = PodExchange::start().await;
    // Quiet scrapes are the default: an idle bot's unchanged scrapes ask for no reconcile.
    let ns = namespace_with_operator("safe-status", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(10_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    ns.apply(&bot("quiet", guarded_spec())).unwrap();
    wait_running(&ns, "quiet").await;
    wait_for_metric(&ns, "quiet", "perps_bot_mode_known", 1.0, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(60),
        "the bot quiet (scrapes asking for nothing)",
        || async {
            let text = operator_metrics(&ns).await?;
            (metric(&text, "tradingbot_operator_scrapes_unchanged_total")? >= 3.0).then_some(())
        },
    )
    .await;

    let role: Value = serde_json::from_str(&ns.kubectl(&["get", "role", "tbo-tradingbot-operator", "-o", "json"]))
        .expect("the operator's Role");
    refuse_status_writes(&ns, &role, true);
    let (errors_before, _) = enforce_refusals(&ns).await.expect("operator metrics");
    exchange.freeze(true);
    // Every scrape (one a second) after the refused trip reconciles again, and is refused again:
    // twenty refusals in a minute. Had the bot stayed quiet, only the error backoff (1, 2, 4 …
    // 32 s) would retry, five or six times in that minute.
    eventually(Duration::from_secs(60), "twenty refused status writes", || async {
        let (errors, refused) = enforce_refusals(&ns).await?;
        (refused && errors >= errors_before + 20.0).then_some(())
    })
    .await;
    let status = ns.tradingbot("quiet")["status"].clone();
    assert_ne!(status["mode"], "Halted", "no trip could be written meanwhile: {status}");
    assert!(trip_ids(&status).is_empty(), "{status}");

    // A new bot meanwhile: where status cannot be written, no pod of it starts (its first status,
    // which for a new bot nothing restricts may otherwise follow its children, is tried first).
    let since = test_harness::audit_now();
    ns.apply(&bot("newcomer", guarded_spec())).unwrap();
    let user = operator_user(&ns);
    eventually(
        Duration::from_secs(30),
        "the newcomer's status write refused",
        || async {
            test_harness::audited_writes(&user, &since)
                .iter()
                .any(|w| w.name == "newcomer" && w.subresource == "status" && w.code == 403)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let newcomer_writes: Vec<_> = test_harness::audited_writes(&user, &since)
        .into_iter()
        .filter(|w| w.name.starts_with("newcomer"))
        .collect();
    assert!(
        newcomer_writes
            .iter()
            .all(|w| matches!(w.resource.as_str(), "tradingbots" | "events")),
        "no child of the newcomer was attempted: {newcomer_writes:?}"
    );
    assert!(
        ns.kubectl_result(&["get", "pod", "newcomer"]).is_err(),
        "no pod of the newcomer"
    );

    refuse_status_writes(&ns, &role, false);
    let allowed = Instant::now();
    wait_for_field(&ns, "quiet", "{.status.mode}", "Halted", Duration::from_secs(60)).await;
    let took = allowed.elapsed();
    eprintln!("Halted {took:?} after status writes were allowed again");
    assert!(
        took <= Duration::from_secs(10),
        "the next scrape brings the trip ({took:?}), not the backoff or the minute's refresh"
    );
    wait_for_metric(&ns, "quiet", "perps_bot_trading_mode", 2.0, Duration::from_secs(15)).await;
    exchange.freeze(false);
    wait_running(&ns, "newcomer").await;
}

/// Uids of a bot's named children (kind/name -> uid), absent ones left out.
fn uids(ns: &TestNamespace, children: &[(&str, String)]) -> BTreeMap<String, String> {
    children
        .iter()
        .filter_map(|(kind, name)| {
            let uid = ns
                .kubectl_result(&["get", kind, name, "-o", "jsonpath={.metadata.uid}"])
                .ok()?;
            Some((format!("{kind}/{name}"), uid))
        })
        .collect()
}

fn instance_children(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("pod", base.to_string()),
        ("configmap", format!("{base}-config")),
        ("service", format!("{base}-metrics")),
        ("lease", format!("{base}-trading")),
    ]
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_whose_names_once_collided_never_touch_each_other() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("safe-names", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(10_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    // Under the old scheme bot nc's canary children were bot nc-canary's prod children.
    ns.apply(&bot(
        "nc-canary",
        json!({"env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}]}),
    ))
    .unwrap();
    let mut rollout = guarded_spec();
    rollout["guards"] = json!({});
    ns.apply(&bot("nc", rollout)).unwrap();
    wait_running(&ns, "nc-canary").await;
    wait_running(&ns, "nc").await;
    ns.kubectl(&[
        "patch",
        "tb",
        "nc",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(
        &ns,
        "nc",
        "{.status.rollout.phase}",
        "AwaitingPromotion",
        Duration::from_secs(240),
    )
    .await;
    let neighbour = instance_children("nc-canary");
    let canary = instance_children("nc--canary");
    let before = (uids(&ns, &neighbour), uids(&ns, &canary));
    assert_eq!(before.0.len(), 4, "nc-canary has all its children: {:?}", before.0);
    assert_eq!(before.1.len(), 4, "nc's canary has all its children: {:?}", before.1);
    assert!(before.0.values().all(|u| !before.1.values().any(|v| v == u)));

    // Many reconciles of both (every scrape triggers one): nothing moves.
    let restarts = pod_field(&ns, "nc-canary", "{.status.containerStatuses[0].restartCount}");
    let scrapes =
        |ns: &TestNamespace| ns.kubectl(&["get", "tb", "nc", "-o", "jsonpath={.status.rollout.healthyCycles}"]);
    let start = scrapes(&ns).trim().parse::<u64>().unwrap_or(0);
    eventually(Duration::from_secs(120), "the canary counted 20 more cycles", || {
        let now = scrapes(&ns).trim().parse::<u64>().unwrap_or(0);
        async move { (now >= start + 20).then_some(()) }
    })
    .await;
    assert_eq!(
        (uids(&ns, &neighbour), uids(&ns, &canary)),
        before,
        "a child was replaced"
    );
    assert_eq!(
        pod_field(&ns, "nc-canary", "{.status.containerStatuses[0].restartCount}"),
        restarts
    );
    for bot in ["nc", "nc-canary"] {
        let events = ns.events_for(bot);
        assert!(
            !events
                .iter()
                .any(|(_, r, _)| r == "PodStopping" || r == "ChildOwnedByOther"),
            "{bot}: {events:?}"
        );
    }
    // Names that would collide are refused by the API server itself.
    let refused = ns.apply(&bot("nc--canary", json!({}))).unwrap_err().to_string();
    assert!(refused.contains("metadata.name"), "{refused}");
}

#[tokio::test]
async fn an_object_of_another_owner_is_reported_and_left_alone() {
    let ns = namespace_with_operator("safe-owner", json!({})).await;
    // Someone else's ConfigMap under the name the bot's config would take, and a Service owned
    // by another (real) object.
    ns.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "taken-config"}, "data": {"mine": "yes"}}).to_string())
        .unwrap();
    let holder_uid = ns.kubectl(&["get", "configmap", "taken-config", "-o", "jsonpath={.metadata.uid}"]);
    ns.apply(&bot("taken", json!({}))).unwrap();
    let stolen = eventually(Duration::from_secs(60), "the conflict reported", || {
        let c = condition(&ns, "taken", "ChildrenApplied");
        async move { (c["reason"] == "OwnedByOther").then_some(c) }
    })
    .await;
    assert!(
        stolen["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ConfigMap taken-config"),
        "{stolen}"
    );
    ns.wait_for_event(
        "taken",
        "Warning ChildOwnedByOther naming taken-config",
        |(kind, reason, note)| kind == "Warning" && reason == "ChildOwnedByOther" && note.contains("taken-config"),
    )
    .await;
    // Untouched: same object, same data, no owner added; and no pod started on a config it
    // does not control.
    let cm = ns.kubectl(&["get", "configmap", "taken-config", "-o", "json"]);
    let cm: Value = serde_json::from_str(&cm).unwrap();
    assert_eq!(cm["metadata"]["uid"], holder_uid.trim());
    assert_eq!(cm["data"], json!({"mine": "yes"}));
    assert!(cm["metadata"]["ownerReferences"].is_null(), "{cm}");
    assert!(
        ns.kubectl_result(&["get", "pod", "taken"]).is_err(),
        "no pod on a foreign config"
    );
    // Removing the stranger lets the bot start.
    ns.kubectl(&["delete", "configmap", "taken-config"]);
    wait_running(&ns, "taken").await;
    assert_eq!(condition(&ns, "taken", "ChildrenApplied")["status"], "True");
}

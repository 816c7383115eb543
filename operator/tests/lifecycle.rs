//! The operator on a real cluster, with the bot and the operator running as real pods:
//! children of a TradingBot, live mode changes without restarts, stop-then-start replacement
//! with Lease fencing, deletion that halts first, and Degraded specs.

mod support;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::*;
use test_harness::eventually;

#[tokio::test]
async fn the_dev_example_gets_its_children_and_serves_metrics_through_its_service() {
    let ns = namespace_with_operator("op-example", json!({})).await;
    let example = test_harness::root().join("docs/examples/dev.yaml");
    ns.kubectl(&["apply", "-f", example.to_str().unwrap()]);
    wait_running(&ns, "dev-bot").await;

    for (kind, name) in [
        ("pod", "dev-bot"),
        ("configmap", "dev-bot-config"),
        ("service", "dev-bot-metrics"),
        ("serviceaccount", "dev-bot-perps-bot"),
        ("role", "dev-bot-perps-bot"),
        ("rolebinding", "dev-bot-perps-bot"),
    ] {
        let owner = ns.kubectl(&[
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
        ]);
        assert_eq!(owner, "TradingBot/dev-bot", "{kind}/{name} is owned by the TradingBot");
    }
    let config = ns.kubectl(&[
        "get",
        "configmap",
        "dev-bot-config",
        "-o",
        "jsonpath={.data.config\\.yaml}",
    ]);
    assert!(
        config.contains("profile: dev") && config.contains("BTC-USD"),
        "{config}"
    );

    // The bot's /metrics through its Service (ClusterIP, kube-proxy).
    let ip = ns.kubectl(&["get", "service", "dev-bot-metrics", "-o", "jsonpath={.spec.clusterIP}"]);
    let text = eventually(Duration::from_secs(30), "metrics through the Service", || {
        let url = format!("http://{ip}:9102/metrics");
        async move { http_get(&url).await }
    })
    .await;
    assert_eq!(metric(&text, "perps_bot_mode_known"), Some(1.0));
    assert_eq!(metric(&text, "perps_bot_lease_held"), Some(1.0));
    assert!(metric(&text, "perps_bot_cycles_total").unwrap_or(0.0) >= 1.0);

    let table = ns.kubectl(&["get", "tb"]);
    assert!(
        table.contains("dev-bot") && table.contains("Normal") && table.contains("Running"),
        "{table}"
    );
    let status = ns.tradingbot("dev-bot")["status"].clone();
    assert_eq!(
        status["observedGeneration"],
        ns.tradingbot("dev-bot")["metadata"]["generation"]
    );
    assert_eq!(status["currentVersion"], "perps-bot:dev");
}

#[tokio::test]
async fn mode_patches_reach_the_running_bot_without_a_restart() {
    let ns = namespace_with_operator("op-mode", json!({})).await;
    ns.apply(&bot("modal", json!({}))).unwrap();
    wait_running(&ns, "modal").await;
    let uid = pod_field(&ns, "modal", "{.metadata.uid}");
    let restarts = pod_field(&ns, "modal", "{.status.containerStatuses[0].restartCount}");
    let quick = Duration::from_secs(10);

    ns.kubectl(&[
        "patch",
        "tb",
        "modal",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"reduceOnly":true}}"#,
    ]);
    wait_for_metric(&ns, "modal", "perps_bot_trading_mode", 1.0, quick).await;
    wait_for_field(&ns, "modal", "{.status.mode}", "ReduceOnly", quick).await;

    ns.kubectl(&[
        "patch",
        "tb",
        "modal",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"halted":true}}"#,
    ]);
    wait_for_metric(&ns, "modal", "perps_bot_trading_mode", 2.0, quick).await;
    wait_for_field(&ns, "modal", "{.status.mode}", "Halted", quick).await;

    ns.kubectl(&[
        "patch",
        "tb",
        "modal",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"halted":false,"reduceOnly":false}}"#,
    ]);
    wait_for_metric(&ns, "modal", "perps_bot_trading_mode", 0.0, quick).await;
    wait_for_field(&ns, "modal", "{.status.mode}", "Normal", quick).await;

    assert_eq!(pod_field(&ns, "modal", "{.metadata.uid}"), uid, "same pod");
    assert_eq!(
        pod_field(&ns, "modal", "{.status.containerStatuses[0].restartCount}"),
        restarts,
        "no restart"
    );
    ns.wait_for_events("modal", "three ModeChanged", |events| {
        events.iter().filter(|(_, r, _)| r == "ModeChanged").count() >= 3
    })
    .await;
}

#[tokio::test]
async fn a_new_version_replaces_the_pod_without_two_ever_ready() {
    let ns = namespace_with_operator("op-direct", json!({})).await;
    let spec =
        json!({"dryRun": false, "image": "perps-bot:dev", "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.2"}]});
    ns.apply(&bot("single", spec)).unwrap();
    wait_running(&ns, "single").await;

    // Watch every pod of this bot identity; two Ready at once fails the test.
    let client = ns.cluster().client().await;
    let api: kube::Api<Pod> = kube::Api::namespaced(client, &ns.name);
    let overlap = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let seen_ready = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let watch = {
        let (overlap, seen, seen_ready) = (overlap.clone(), seen.clone(), seen_ready.clone());
        let config =
            watcher::Config::default().labels("trading.gpttrader.io/bot=single,trading.gpttrader.io/instance=prod");
        tokio::spawn(async move {
            let mut ready: HashMap<String, bool> = HashMap::new();
            let mut events = watcher(api, config).boxed();
            while let Some(event) = events.next().await {
                let event = event.unwrap_or_else(|error| panic!("the pod watch failed: {error}"));
                let mut update = |pod: &Pod, gone: bool| {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    let is_ready = !gone
                        && pod
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    ready.insert(uid.clone(), is_ready);
                    if is_ready {
                        seen_ready.lock().unwrap().insert(uid.clone());
                    }
                    seen.store(ready.len(), Ordering::Relaxed);
                    if ready.values().filter(|r| **r).count() > 1 {
                        overlap.store(true, Ordering::Relaxed);
                    }
                };
                match event {
                    watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => update(&pod, false),
                    watcher::Event::Delete(pod) => update(&pod, true),
                    _ => {}
                }
            }
        })
    };

    ns.kubectl(&[
        "patch",
        "tb",
        "single",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(
        &ns,
        "single",
        "{.status.currentVersion}",
        "perps-bot:v2",
        Duration::from_secs(60),
    )
    .await;
    eventually(Duration::from_secs(120), "the v2 pod running and ready", || {
        let version = pod_field(
            &ns,
            "single",
            "{.metadata.annotations.trading\\.gpttrader\\.io/version}",
        );
        let ready = pod_field(&ns, "single", "{.status.conditions[?(@.type==\"Ready\")].status}");
        async move { (version == "perps-bot:v2" && ready == "True").then_some(()) }
    })
    .await;
    ns.kubectl(&[
        "patch",
        "tb",
        "single",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"symbols":["SOL-USD"]}}"#,
    ]);
    eventually(Duration::from_secs(120), "the pod restarted on the new symbols", || {
        let seen = seen.load(Ordering::Relaxed);
        let ready = pod_field(&ns, "single", "{.status.conditions[?(@.type==\"Ready\")].status}");
        async move { (seen >= 3 && ready == "True").then_some(()) }
    })
    .await;
    // The watch saw the pod now running Ready, and at least one Ready pod before it (a watch
    // that re-lists may miss a short-lived state in between, never the current one).
    let current = pod_field(&ns, "single", "{.metadata.uid}");
    eventually(
        Duration::from_secs(60),
        "the watch seeing the current pod Ready",
        || {
            let seen = seen_ready.lock().unwrap().clone();
            let current = current.clone();
            async move { (seen.contains(&current) && seen.len() >= 2).then_some(()) }
        },
    )
    .await;
    assert!(!watch.is_finished(), "the pod watch ended early");
    watch.abort();
    assert!(
        !overlap.load(Ordering::Relaxed),
        "two pods of one bot identity were Ready at once"
    );
    let ready = seen_ready.lock().unwrap().len();
    assert!(
        ready >= 3,
        "the watch saw {ready} pods Ready: the old, the v2 and the SOL-USD one"
    );
    ns.wait_for_event(
        "single",
        "PodStopping for perps-bot:dev -> perps-bot:v2",
        |(_, reason, note)| reason == "PodStopping" && note.contains("perps-bot:dev -> perps-bot:v2"),
    )
    .await;
}

#[tokio::test]
async fn deleting_a_tradingbot_halts_the_bot_then_removes_every_child() {
    let ns = namespace_with_operator("op-delete", json!({})).await;
    ns.apply(&bot("doomed", json!({}))).unwrap();
    wait_running(&ns, "doomed").await;
    ns.kubectl(&["delete", "tb", "doomed", "--wait=false"]);
    eventually(Duration::from_secs(120), "every child gone", || {
        let left = ns
            .kubectl_result(&[
                "get",
                "pods,configmaps,services,serviceaccounts,roles,rolebindings",
                "-l",
                "trading.gpttrader.io/bot=doomed",
                "-o",
                "name",
            ])
            .unwrap_or_else(|e| e.to_string());
        let tb_gone = ns.kubectl_result(&["get", "tb", "doomed"]).is_err();
        async move { (left.trim().is_empty() && tb_gone).then_some(()) }
    })
    .await;
    let events = ns
        .wait_for_events("doomed", "Halting and Removed", |events| {
            ["Halting", "Removed"]
                .iter()
                .all(|wanted| events.iter().any(|(_, r, _)| r == wanted))
        })
        .await;
    let reasons: Vec<&str> = events.iter().map(|(_, r, _)| r.as_str()).collect();
    let halting = reasons.iter().position(|r| *r == "Halting").expect("a Halting event");
    let removed = reasons.iter().position(|r| *r == "Removed").expect("a Removed event");
    assert!(halting < removed, "{reasons:?}");
    assert!(
        !reasons.contains(&"HaltTimeout"),
        "the bot reported Halted before its pod was stopped: {events:?}"
    );
}

#[tokio::test]
async fn invalid_specs_are_degraded_without_crash_loops() {
    let ns = namespace_with_operator("op-degraded", json!({})).await;
    ns.apply(&bot(
        "spotperps",
        json!({"profile": "spot", "exchange": {"derivatives": true, "credentialsSecret": "k"}}),
    ))
    .unwrap();
    ns.apply(&bot(
        "inverted",
        json!({"guards": {"dailyLoss": {"reduceOnlyAt": "600", "haltAt": "500"}}}),
    ))
    .unwrap();
    for (name, text) in [
        ("spotperps", "spec.exchange.derivatives"),
        ("inverted", "spec.guards.dailyLoss"),
    ] {
        wait_for_field(&ns, name, "{.status.phase}", "Degraded", Duration::from_secs(60)).await;
        let degraded = condition(&ns, name, "Degraded");
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some("InvalidSpec"))
        );
        assert!(degraded["message"].as_str().unwrap().contains(text), "{degraded}");
        ns.wait_for_event(
            name,
            &format!("Warning InvalidSpec naming {text:?}"),
            |(kind, r, note)| kind == "Warning" && r == "InvalidSpec" && note.contains(text),
        )
        .await;
        assert!(
            ns.kubectl_result(&["get", "pod", name]).is_err(),
            "no pod for an invalid spec"
        );
    }
    // Fixing the spec brings the bot up.
    ns.kubectl(&[
        "patch",
        "tb",
        "inverted",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"guards":{"dailyLoss":{"reduceOnlyAt":"400"}}}}"#,
    ]);
    wait_running(&ns, "inverted").await;
    assert_operator_never_restarted(&ns);
}

fn condition(ns: &test_harness::TestNamespace, bot: &str, type_: &str) -> serde_json::Value {
    ns.tradingbot(bot)["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_default()
}

fn assert_operator_never_restarted(ns: &test_harness::TestNamespace) {
    let restarts = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tradingbot-operator",
        "-o",
        "jsonpath={.items[0].status.containerStatuses[0].restartCount}",
    ]);
    assert_eq!(restarts, "0", "the operator never crashed");
}

/// The operator reads no Secret: a missing or unusable one is reported from what the bot pod
/// says (its termination message), naming the Secret and never its content.
#[tokio::test]
async fn missing_or_malformed_credentials_are_reported_from_the_bot_pod() {
    let ns = namespace_with_operator("op-creds", json!({})).await;
    let garbage = "not-a-key-0123456789abcdef-SECRETSAUCE";
    ns.kubectl(&[
        "create",
        "secret",
        "generic",
        "coinbase-garbled",
        &format!("--from-literal=cdp_api_key.json={garbage}"),
    ]);
    for (name, secret) in [("nokey", "coinbase-missing"), ("garbled", "coinbase-garbled")] {
        ns.apply(&bot(
            name,
            json!({"profile": "prod", "exchange": {"credentialsSecret": secret}}),
        ))
        .unwrap();
    }
    for (name, secret) in [("nokey", "coinbase-missing"), ("garbled", "coinbase-garbled")] {
        let degraded = eventually(Duration::from_secs(120), "the pod's report as a condition", || {
            let c = condition(&ns, name, "Degraded");
            async move { (c["reason"] == "CredentialsRejected").then_some(c) }
        })
        .await;
        let message = degraded["message"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains(&format!("pod {name}")) && message.contains(secret),
            "{degraded}"
        );
        assert!(
            !message.contains("SECRETSAUCE"),
            "the Secret's content leaked: {message}"
        );
        let status = ns.tradingbot(name)["status"].clone();
        assert_eq!(status["phase"], "Degraded");
        let events = ns
            .wait_for_event(
                name,
                &format!("Warning CredentialsRejected naming {secret}"),
                |(kind, reason, note)| kind == "Warning" && reason == "CredentialsRejected" && note.contains(secret),
            )
            .await;
        assert!(!serde_json::to_string(&events).unwrap().contains("SECRETSAUCE"));
    }
    // `kubectl auth can-i` exits 0 only for "yes".
    let may_read = ns.kubectl_result(&["auth", "can-i", "get", "secrets", "--as", &operator_user(&ns)]);
    assert!(may_read.is_err(), "the operator may not read Secrets: {may_read:?}");
    let may_list_pods = ns.kubectl_result(&["auth", "can-i", "list", "pods", "--as", &operator_user(&ns)]);
    assert!(may_list_pods.is_ok(), "the question itself works: {may_list_pods:?}");
    assert_operator_never_restarted(&ns);
}

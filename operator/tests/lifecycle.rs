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
    let reasons: Vec<String> = ns
        .events_for("modal")
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    assert!(
        reasons.iter().filter(|r| *r == "ModeChanged").count() >= 3,
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_new_version_replaces_the_pod_without_overlap_and_a_second_instance_is_fenced() {
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
    let watch = {
        let (overlap, seen) = (overlap.clone(), seen.clone());
        let config =
            watcher::Config::default().labels("trading.gpttrader.io/bot=single,trading.gpttrader.io/instance=prod");
        tokio::spawn(async move {
            let mut ready: HashMap<String, bool> = HashMap::new();
            let mut events = watcher(api, config).boxed();
            while let Some(Ok(event)) = events.next().await {
                let mut update = |pod: &Pod, gone: bool| {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    let is_ready = !gone
                        && pod
                            .status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                    ready.insert(uid, is_ready);
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
    watch.abort();
    assert!(
        !overlap.load(Ordering::Relaxed),
        "two pods of one bot identity were Ready at once"
    );
    let events = ns.events_for("single");
    assert!(
        events
            .iter()
            .any(|(_, reason, note)| reason == "PodStopping" && note.contains("perps-bot:dev -> perps-bot:v2")),
        "{events:?}"
    );

    // A second instance of the same identity, started by hand, never gets the Lease.
    let intruder = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "intruder"},
        "spec": {
            "serviceAccountName": "single-perps-bot",
            "dnsPolicy": "Default",
            "containers": [{
                "name": "perps-bot", "image": "perps-bot:v2", "imagePullPolicy": "Never",
                "args": ["--profile", "dev", "--dry-run=false", "--interval", "0.2", "--metrics-file", "/tmp/metrics.json", "--symbols", "SOL-USD"],
                "env": [
                    {"name": "TRADINGBOT_NAME", "value": "single"},
                    {"name": "TRADINGBOT_NAMESPACE", "value": ns.name},
                    {"name": "TRADINGBOT_INSTANCE", "value": "prod"},
                    {"name": "POD_NAME", "value": "intruder"},
                ],
                "ports": [{"name": "metrics", "containerPort": 9102}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 1},
            }],
        }
    });
    ns.apply(&intruder.to_string()).unwrap();
    eventually(Duration::from_secs(60), "the intruder serving metrics", || async {
        pod_metrics(&ns, "intruder")
            .await
            .filter(|t| metric(t, "perps_bot_cycles_total").unwrap_or(0.0) >= 20.0)
    })
    .await;
    let text = pod_metrics(&ns, "intruder").await.unwrap();
    assert_eq!(
        metric(&text, "perps_bot_lease_held"),
        Some(0.0),
        "the intruder must not hold the Lease"
    );
    assert_eq!(
        metric(&text, "perps_bot_orders_submitted_total"),
        Some(0.0),
        "the intruder placed orders"
    );
    let legit = pod_metrics(&ns, "single").await.unwrap();
    assert_eq!(metric(&legit, "perps_bot_lease_held"), Some(1.0));
    let ready = pod_field(&ns, "intruder", "{.status.containerStatuses[0].ready}");
    assert_eq!(ready, "false", "without the Lease the intruder is not ready");
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
    let events = ns.events_for("doomed");
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
async fn invalid_specs_and_missing_secrets_are_degraded_without_crash_loops() {
    let ns = namespace_with_operator("op-degraded", json!({})).await;
    ns.apply(&bot(
        "spotperps",
        json!({"profile": "spot", "exchange": {"derivatives": true, "credentialsSecret": "k"}}),
    ))
    .unwrap();
    ns.apply(&bot(
        "nokey",
        json!({"profile": "prod", "exchange": {"credentialsSecret": "coinbase-missing"}}),
    ))
    .unwrap();
    ns.apply(&bot(
        "inverted",
        json!({"guards": {"dailyLoss": {"reduceOnlyAt": "600", "haltAt": "500"}}}),
    ))
    .unwrap();
    for (name, reason, text) in [
        ("spotperps", "InvalidSpec", "spec.exchange.derivatives"),
        ("nokey", "SecretMissing", "coinbase-missing"),
        ("inverted", "InvalidSpec", "spec.guards.dailyLoss"),
    ] {
        wait_for_field(&ns, name, "{.status.phase}", "Degraded", Duration::from_secs(60)).await;
        let tb = ns.tradingbot(name);
        let degraded = tb["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Degraded")
            .unwrap()
            .clone();
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], reason);
        assert!(degraded["message"].as_str().unwrap().contains(text), "{degraded}");
        let events = ns.events_for(name);
        assert!(
            events
                .iter()
                .any(|(kind, r, note)| kind == "Warning" && r == reason && note.contains(text)),
            "{events:?}"
        );
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

//! The TradingBot API on a real API server: the generated CRD installs, every documented
//! example applies, invalid specs are refused naming the field, the printer columns show, and
//! a pod from a locally loaded image runs and becomes Ready on the node.

use serde_json::{Value, json};
use std::time::Duration;
use test_harness::{cluster, eventually};

fn valid() -> Value {
    json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": "probe"},
        "spec": {
            "profile": "dev",
            "symbols": ["BTC-USD"],
            "guards": {"dailyLoss": {"reduceOnlyAt": "100", "haltAt": "200"}},
        }
    })
}

/// Set `path` (dot-separated, under the object) to `value`, or remove it when `value` is null.
fn with(path: &str, value: Value) -> Value {
    let mut object = valid();
    let keys: Vec<&str> = path.split('.').collect();
    let mut cursor = &mut object;
    for key in &keys[..keys.len() - 1] {
        cursor = cursor.as_object_mut().unwrap().entry(*key).or_insert_with(|| json!({}));
    }
    let last = keys[keys.len() - 1];
    if value.is_null() {
        cursor.as_object_mut().unwrap().remove(last);
    } else {
        cursor[last] = value;
    }
    object
}

#[test]
fn crd_installs_examples_apply_and_printer_columns_show() {
    let cluster = cluster();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The namespace first: while a test namespace is active, `make demo-down` keeps the CRD.
    let ns = runtime.block_on(cluster.namespace("crd-examples"));
    cluster.install_crd();
    let examples = test_harness::root().join("docs/examples");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let is_bot = std::fs::read_to_string(&path).is_ok_and(|t| t.contains("kind: TradingBot"));
        if path.extension().is_some_and(|e| e == "yaml") && is_bot {
            let out = ns.kubectl(&["apply", "-f", path.to_str().unwrap()]);
            assert!(
                out.contains("created") || out.contains("configured"),
                "{}: {out}",
                path.display()
            );
            names.push(path);
        }
    }
    assert_eq!(names.len(), 5, "one example per profile");
    let table = ns.kubectl(&["get", "tb"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "PROFILE", "MODE", "PHASE", "VERSION", "AGE"],
        "{table}"
    );
    for profile in ["dev", "demo", "canary", "spot", "prod"] {
        assert!(table.contains(profile), "{table}");
    }
    let wide = ns.kubectl(&["get", "tradingbots", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "PROFILE", "MODE", "PHASE", "VERSION", "AGE", "ROLLOUT", "CANARY", "TRIPS", "REASON"
        ],
        "{wide}"
    );
}

#[test]
fn invalid_specs_are_refused_by_the_api_server_naming_the_field() {
    let cluster = cluster();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The namespace first: while a test namespace is active, `make demo-down` keeps the CRD.
    let ns = runtime.block_on(cluster.namespace("crd-invalid"));
    cluster.install_crd();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("spec.profile", json!("yolo"), "spec.profile"),
        ("spec.profile", Value::Null, "spec.profile"),
        ("spec.symbols", json!(["btc-usd"]), "spec.symbols"),
        (
            "spec.guards.dailyLoss.haltAt",
            json!("abc"),
            "spec.guards.dailyLoss.haltAt",
        ),
        (
            "spec.guards.dailyLoss.reduceOnlyAt",
            json!("-5"),
            "spec.guards.dailyLoss.reduceOnlyAt",
        ),
        (
            "spec.guards.dailyLoss.haltAt",
            json!(500),
            "spec.guards.dailyLoss.haltAt",
        ),
        (
            "spec.guards.drawdownPercent.haltAt",
            json!("150"),
            "spec.guards.drawdownPercent.haltAt",
        ),
        (
            "spec.guards.marketDataStalenessSeconds.haltAt",
            json!(0),
            "spec.guards.marketDataStalenessSeconds.haltAt",
        ),
        (
            "spec.guards.volatility.window",
            json!(1),
            "spec.guards.volatility.window",
        ),
        (
            "spec.guards.concentration.reduceOnlyAt",
            json!("1.5"),
            "spec.guards.concentration.reduceOnlyAt",
        ),
        (
            "spec.guards.errorRate.windowSeconds",
            json!(0),
            "spec.guards.errorRate.windowSeconds",
        ),
        ("spec.guards.maxLeverage", json!("0"), "spec.guards.maxLeverage"),
        (
            "spec.guards.maxNotionalPerSymbol",
            json!({"BTC-USD": "1e6"}),
            "spec.guards.maxNotionalPerSymbol",
        ),
        ("spec.guards.resume", json!("Sometimes"), "spec.guards.resume"),
        (
            "spec.guards.healthyCyclesBeforeResume",
            json!(0),
            "spec.guards.healthyCyclesBeforeResume",
        ),
        ("spec.rollout.strategy", json!("BlueGreen"), "spec.rollout.strategy"),
        ("spec.rollout.promotion", json!("Whenever"), "spec.rollout.promotion"),
        (
            "spec.rollout.canary.maxErrors",
            json!(-1),
            "spec.rollout.canary.maxErrors",
        ),
        ("spec.metrics.port", json!(80), "spec.metrics.port"),
        (
            "spec.metrics.scrapeIntervalSeconds",
            json!(0),
            "spec.metrics.scrapeIntervalSeconds",
        ),
        (
            "spec.metrics.serviceMonitor.interval",
            json!("30 seconds"),
            "spec.metrics.serviceMonitor.interval",
        ),
        (
            "spec.exchange.credentialsSecret",
            json!("Bad_Name"),
            "spec.exchange.credentialsSecret",
        ),
        (
            "spec.exchange.apiBaseUrl",
            json!("ftp://exchange"),
            "spec.exchange.apiBaseUrl",
        ),
        ("spec.image", json!("perps bot:v1"), "spec.image"),
        ("spec.dryRun", json!("yes"), "spec.dryRun"),
        // Names with '--' would share child names with another bot's canary instance.
        ("metadata.name", json!("btc--canary"), "metadata.name"),
        ("metadata.name", json!("a".repeat(41)), "metadata.name"),
    ];
    assert!(cases.len() >= 15);
    for (path, value, field) in cases {
        let manifest = with(path, value.clone()).to_string();
        // --validate=false: the API server, not kubectl, must refuse it.
        let result = ns
            .cluster()
            .kubectl_stdin(&["-n", &ns.name, "apply", "--validate=false", "-f", "-"], &manifest);
        let error = result.expect_err(&format!("{path} = {value} was accepted"));
        let message = format!("{error:#}");
        assert!(
            message.contains(field),
            "{path} = {value}: the error does not name {field}: {message}"
        );
    }
    // The valid base itself is accepted, and so is a name that only ends in -canary.
    ns.cluster()
        .kubectl_stdin(&["-n", &ns.name, "apply", "-f", "-"], &valid().to_string())
        .unwrap();
    ns.cluster()
        .kubectl_stdin(
            &["-n", &ns.name, "apply", "-f", "-"],
            &with("metadata.name", json!("btc-canary")).to_string(),
        )
        .unwrap();
}

#[tokio::test]
async fn a_pod_from_a_locally_loaded_image_runs_and_becomes_ready() {
    let cluster = cluster();
    cluster.require_images();
    let ns = cluster.namespace("local-image").await;
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "dev-bot"},
        "spec": {
            "dnsPolicy": "Default",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "perps-bot",
                "image": "perps-bot:dev",
                "imagePullPolicy": "Never",
                "args": ["--profile", "dev", "--interval", "1", "--metrics-file", "/var/lib/perps-bot/metrics.json"],
                "ports": [{"name": "metrics", "containerPort": 9102}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 1},
                "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "state", "mountPath": "/var/lib/perps-bot"}],
            }],
            "volumes": [{"name": "state", "emptyDir": {}}],
        }
    });
    ns.apply(&pod.to_string()).unwrap();
    eventually(Duration::from_secs(120), "the dev-bot pod to become Ready", || {
        let ready = ns
            .kubectl_result(&[
                "get",
                "pod",
                "dev-bot",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .unwrap_or_default();
        async move { (ready == "True").then_some(()) }
    })
    .await;
    let ip = ns.kubectl(&["get", "pod", "dev-bot", "-o", "jsonpath={.status.podIP}"]);
    let body = ns.kubectl(&["exec", "dev-bot", "--", "/usr/local/bin/perps-bot", "--version"]);
    assert!(body.starts_with("perps-bot"), "{body}");
    let metrics = http_get(&format!("{ip}:9102"), "/metrics").await;
    assert!(metrics.contains("perps_bot_cycles_total"), "{metrics}");
}

/// A tiny HTTP/1.0 GET without extra dependencies.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

//! Helpers shared by the operator's real-cluster suites.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::time::Duration;
pub use test_harness::metric;
use test_harness::{TestNamespace, eventually};

/// A TradingBot manifest (JSON is YAML) with `spec` merged over a dev-profile base.
pub fn bot(name: &str, spec: Value) -> String {
    let mut manifest = json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": name},
        "spec": {"profile": "dev", "symbols": ["BTC-USD", "ETH-USD"], "rollout": {"strategy": "Direct"}, "metrics": {"scrapeIntervalSeconds": 2}},
    });
    test_harness::merge_json(&mut manifest["spec"], spec);
    manifest.to_string()
}

/// GET a bot pod's `/metrics` straight from its pod IP.
pub async fn pod_metrics(ns: &TestNamespace, pod: &str) -> Option<String> {
    let ip = ns
        .kubectl_result(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
        .ok()?;
    http_get(&format!("http://{}:9102/metrics", ip.trim())).await
}

pub async fn http_get(url: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()?;
    let response = client.get(url).send().await.ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// Wait until `jsonpath` of the TradingBot equals `want`.
pub async fn wait_for_field(ns: &TestNamespace, bot: &str, jsonpath: &str, want: &str, timeout: Duration) {
    let what = format!("tb/{bot} {jsonpath} == {want}");
    eventually(timeout, &what, || {
        let got = ns
            .kubectl_result(&["get", "tb", bot, "-o", &format!("jsonpath={jsonpath}")])
            .unwrap_or_default();
        async move { (got.trim() == want).then_some(()) }
    })
    .await;
}

pub async fn wait_running(ns: &TestNamespace, bot: &str) {
    wait_for_field(ns, bot, "{.status.phase}", "Running", Duration::from_secs(180)).await;
}

/// Wait until the bot pod's `/metrics` shows `name` == `value`.
pub async fn wait_for_metric(ns: &TestNamespace, pod: &str, name: &str, value: f64, timeout: Duration) {
    let what = format!("{pod} {name} == {value}");
    eventually(timeout, &what, || async move {
        let text = pod_metrics(ns, pod).await?;
        (metric(&text, name) == Some(value)).then_some(())
    })
    .await;
}

/// One field of a pod (jsonpath).
pub fn pod_field(ns: &TestNamespace, pod: &str, jsonpath: &str) -> String {
    ns.kubectl_result(&["get", "pod", pod, "-o", &format!("jsonpath={jsonpath}")])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The operator's service account as the audit log names it.
pub fn operator_user(ns: &TestNamespace) -> String {
    format!("system:serviceaccount:{}:tbo-tradingbot-operator", ns.name)
}

/// Set up a namespace with the CRD, the images and an operator watching it.
pub async fn namespace_with_operator(prefix: &str, values: Value) -> TestNamespace {
    let cluster = test_harness::cluster();
    cluster.install_crd();
    cluster.require_images();
    let ns = cluster.namespace(prefix).await;
    ns.deploy_operator(values);
    ns
}
pub mod sim;

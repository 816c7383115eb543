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
    // reqwest is built without a default TLS provider (the workspace picks ring): a client
    // built before anyone installed it panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
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

/// A container SIGKILLed by [`kill_counted`], with the kubelet's restart count from before.
pub struct Killed {
    pod: String,
    pub restarts_before: u32,
}

fn restart_count(ns: &TestNamespace, pod: &str) -> u32 {
    pod_field(ns, pod, "{.status.containerStatuses[0].restartCount}")
        .parse()
        .unwrap_or(0)
}

/// SIGKILL the first container of `pod`, noting its restart count first.
pub fn kill_counted(ns: &TestNamespace, pod: &str) -> Killed {
    let restarts_before = restart_count(ns, pod);
    ns.kill_container(pod);
    Killed {
        pod: pod.to_string(),
        restarts_before,
    }
}

impl Killed {
    /// Wait until the kubelet has counted the restart (so a test never reads the count before
    /// the kubelet noticed the kill); the count then.
    pub async fn restarted(&self, ns: &TestNamespace) -> u32 {
        let what = format!("the kubelet counting {}'s restart", self.pod);
        eventually(Duration::from_secs(120), &what, || {
            let now = restart_count(ns, &self.pod);
            async move { (now > self.restarts_before).then_some(now) }
        })
        .await
    }
}

/// SIGKILL the first container of `pod` and wait until the kubelet has counted the restart; the
/// restart count before the kill.
pub async fn kill_and_await_restart(ns: &TestNamespace, pod: &str) -> u32 {
    let killed = kill_counted(ns, pod);
    killed.restarted(ns).await;
    killed.restarts_before
}

/// The operator's service account as the audit log names it.
pub fn operator_user(ns: &TestNamespace) -> String {
    format!("system:serviceaccount:{}:tbo-tradingbot-operator", ns.name)
}

/// Set up a namespace with the CRD, the images and an operator watching it.
pub async fn namespace_with_operator(prefix: &str, values: Value) -> TestNamespace {
    let cluster = test_harness::cluster();
    // The namespace first: while a test namespace is active, `make demo-down` (run by the docs
    // test in the other lane) keeps the CRD.
    let ns = cluster.namespace(prefix).await;
    cluster.install_crd();
    cluster.require_images();
    ns.deploy_operator(values);
    ns
}
pub mod hostbot;
pub mod order_log;
pub mod sim;

/// A pod that only anchors a pod-bound token: the bot image running the paper exchange as a
/// plain, unmanaged process under `service_account` (it holds no Lease and reaches no
/// exchange). Returns its uid once it runs.
pub async fn anchor_pod(ns: &TestNamespace, name: &str, service_account: &str) -> String {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "anchor", "image": "perps-bot:dev", "imagePullPolicy": "Never",
                "args": ["--profile", "dev", "--metrics-file", "/tmp/metrics.json", "--metrics-addr", "127.0.0.1:9999"],
            }],
        }
    });
    ns.apply(&pod.to_string()).expect("anchor pod");
    eventually(Duration::from_secs(60), "the anchor pod running", || {
        let phase = pod_field(ns, name, "{.status.phase}");
        async move { (phase == "Running").then_some(()) }
    })
    .await;
    pod_field(ns, name, "{.metadata.uid}")
}

/// The ids of a status's latched trips.
pub fn trip_ids(status: &Value) -> std::collections::BTreeSet<String> {
    status["trips"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["id"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// Acknowledge every latched trip (a new annotation value per attempt, as a human retrying
/// would) until none is left and the bot is back to Normal.
pub async fn acknowledge_all(ns: &TestNamespace, bot: &str) {
    let mut attempt = 0;
    eventually(Duration::from_secs(180), "every trip acknowledged", || {
        attempt += 1;
        let status = ns.tradingbot(bot)["status"].clone();
        if let Some(id) = trip_ids(&status).into_iter().next() {
            let _ = ns.kubectl_result(&[
                "annotate",
                "tb",
                bot,
                "--overwrite",
                &format!("trading.gpttrader.io/ack-trip={id}@{attempt}"),
            ]);
        }
        async move { (trip_ids(&status).is_empty() && status["mode"] == "Normal").then_some(()) }
    })
    .await;
}

/// Which scrapes of a quiet bot the operator under test reconciles after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scrapes {
    /// The default: only those that change what a decision reads, and one a minute.
    Quiet,
    /// Every one (`quietScrapes: false`): for a test that shows a decision holds over the next
    /// reconciles ([`wait_for_reconciliations`]), which then come one per scrape.
    EveryReconciles,
}

impl Scrapes {
    /// The operator's chart `values` with this setting.
    pub fn values(self, mut values: Value) -> Value {
        if self == Scrapes::EveryReconciles {
            values["quietScrapes"] = json!(false);
        }
        values
    }
}

/// The (one) operator's own `/metrics` text right now.
pub async fn operator_metrics(ns: &TestNamespace) -> Option<String> {
    let pod = ns.pods("app.kubernetes.io/name=tradingbot-operator").first().cloned()?;
    let ip = pod_field(ns, &pod, "{.status.podIP}");
    http_get(&format!("http://{ip}:8080/metrics")).await
}

/// The operator's `tradingbot_operator_reconciliations_total` right now (None when unreadable).
pub async fn operator_reconciliations(ns: &TestNamespace) -> Option<f64> {
    operator_metrics(ns)
        .await
        .and_then(|text| metric(&text, "tradingbot_operator_reconciliations_total"))
}

/// Wait until the operator has reconciled `count` more times than now (both read from its own
/// metrics: a read that fails is no count, never zero).
pub async fn wait_for_reconciliations(ns: &TestNamespace, count: f64, timeout: Duration) {
    let start = eventually(timeout, "the operator's reconcile count", || async {
        operator_reconciliations(ns).await
    })
    .await;
    eventually(timeout, &format!("{count} more reconciles"), || async {
        operator_reconciliations(ns)
            .await
            .filter(|now| *now >= start + count)
            .map(|_| ())
    })
    .await;
}

/// Acknowledge `trip` of `bot` until the operator accepts it: `trip@1`, `trip@2`, … a new value
/// each time the operator has refused the last (judged on a scrape from before a recovery), as
/// the runbook says. A wait on the operator's answers, not on time.
pub async fn ack_until_accepted(ns: &TestNamespace, bot: &str, trip: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    for attempt in 1.. {
        let value = format!("{trip}@{attempt}");
        ns.kubectl(&[
            "annotate",
            "--overwrite",
            "tb",
            bot,
            &format!("trading.gpttrader.io/ack-trip={value}"),
        ]);
        let answer = eventually(timeout, &format!("the operator's answer to {value}"), || {
            let ack = ns.tradingbot(bot)["status"]["lastAck"].clone();
            let answered = ack["value"] == value.as_str();
            async move { answered.then_some(ack) }
        })
        .await;
        if answer["result"] == "Accepted" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{trip} never accepted; the last answer: {answer}"
        );
    }
}

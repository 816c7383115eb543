//! ServiceMonitors: no API, no crash (a condition and an event); API installed later, the
//! ServiceMonitor appears. Own test binary: it installs and removes a cluster-scoped CRD.

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;
use test_harness::eventually;

const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

#[tokio::test]
async fn service_monitors_follow_the_api_being_installed() {
    let cluster = test_harness::cluster();
    let _ = cluster.kubectl_result(&[
        "delete",
        "crd",
        "servicemonitors.monitoring.coreos.com",
        "--ignore-not-found",
    ]);
    let ns = namespace_with_operator("op-sm", json!({})).await;
    ns.apply(&bot(
        "watched",
        json!({"metrics": {"serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prom"}}}}),
    ))
    .unwrap();
    wait_running(&ns, "watched").await;
    wait_for_field(
        &ns,
        "watched",
        "{.status.conditions[?(@.type==\"ServiceMonitor\")].reason}",
        "APIMissing",
        Duration::from_secs(30),
    )
    .await;
    ns.wait_for_event("watched", "Warning ServiceMonitorAPIMissing", |(kind, reason, _)| {
        kind == "Warning" && reason == "ServiceMonitorAPIMissing"
    })
    .await;

    cluster
        .kubectl_stdin(&["apply", "-f", "-"], SERVICE_MONITOR_CRD)
        .unwrap();
    cluster.wait_crd_established("crd/servicemonitors.monitoring.coreos.com");
    let monitor = eventually(Duration::from_secs(90), "the ServiceMonitor to be created", || {
        let found = ns
            .kubectl_result(&["get", "servicemonitors", "watched-perps-bot", "-o", "json"])
            .ok();
        async move { found }
    })
    .await;
    let monitor: serde_json::Value = serde_json::from_str(&monitor).unwrap();
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["trading.gpttrader.io/bot"],
        "watched"
    );
    wait_for_field(
        &ns,
        "watched",
        "{.status.conditions[?(@.type==\"ServiceMonitor\")].status}",
        "True",
        Duration::from_secs(30),
    )
    .await;
    let restarts = ns.kubectl(&[
        "get",
        "pods",
        "-l",
        "app.kubernetes.io/name=tradingbot-operator",
        "-o",
        "jsonpath={.items[0].status.containerStatuses[0].restartCount}",
    ]);
    assert_eq!(restarts, "0");
    // Switching it off removes the ServiceMonitor the operator created.
    ns.kubectl(&[
        "patch",
        "tb",
        "watched",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"metrics":{"serviceMonitor":{"enabled":false}}}}"#,
    ]);
    eventually(Duration::from_secs(60), "the ServiceMonitor removed", || {
        let gone = ns
            .kubectl_result(&["get", "servicemonitors", "watched-perps-bot"])
            .is_err();
        async move { gone.then_some(()) }
    })
    .await;
    drop(ns);
    // Waited for: the chart suite after the lanes dry-runs ServiceMonitors whenever the API is
    // listed, and a CRD still being deleted is listed but refuses them.
    let _ = cluster.kubectl_result(&[
        "delete",
        "crd",
        "servicemonitors.monitoring.coreos.com",
        "--wait=true",
        "--timeout=120s",
    ]);
}

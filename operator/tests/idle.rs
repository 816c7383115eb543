//! Idle is idle: with 20 bots running and nothing changing, the operator sends no write
//! request to the API server for 60 s (counted in the API server's audit log).

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;
use test_harness::eventually;

#[tokio::test]
async fn twenty_idle_bots_cause_no_writes_for_a_minute() {
    let ns = namespace_with_operator("op-idle", json!({})).await;
    let bots: Vec<String> = (0..20).map(|i| format!("idle-{i:02}")).collect();
    for name in &bots {
        ns.apply(&bot(name, json!({"symbols": ["BTC-USD"]}))).unwrap();
    }
    for name in &bots {
        wait_running(&ns, name).await;
    }
    // The start-up's last status writes and Events are over once 5 s pass without any write.
    let user = operator_user(&ns);
    let mut quiet_since = test_harness::audit_now();
    eventually(Duration::from_secs(120), "5 s without an operator write", || {
        let writes = test_harness::audited_writes(&user, &quiet_since);
        if !writes.is_empty() {
            quiet_since = test_harness::audit_now();
        }
        let quiet_for = seconds_between(&quiet_since, &test_harness::audit_now());
        async move { (writes.is_empty() && quiet_for >= 5.0).then_some(()) }
    })
    .await;
    let pod = ns.pods("app.kubernetes.io/name=tradingbot-operator")[0].clone();
    let ip = pod_field(&ns, &pod, "{.status.podIP}");
    let url = format!("http://{ip}:8080/metrics");
    let before = http_get(&url).await.expect("operator metrics");
    let since = test_harness::audit_now();
    // The window itself: a minute of nothing changing (this wait is the measurement).
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = test_harness::audited_writes(&user, &since);
    assert!(
        writes.is_empty(),
        "the idle operator wrote {} times: {writes:?}",
        writes.len()
    );
    // It was not idle because it was dead: within the same minute it kept scraping every bot
    // (20 bots every 10 s: about 120 scrapes). Quiet scrapes being the default, most of them
    // changed nothing a decision reads and asked for no reconcile; each bot was still reconciled
    // about once a minute (about 20 in all).
    let after = http_get(&url).await.expect("operator metrics");
    let grew = |name: &str| metric(&after, name).unwrap_or(0.0) - metric(&before, name).unwrap_or(0.0);
    let scrapes = grew("tradingbot_operator_scrape_duration_seconds_count");
    assert!(scrapes >= 100.0, "{after}");
    assert!(
        grew("tradingbot_operator_scrapes_unchanged_total") >= scrapes / 2.0,
        "most scrapes of an idle fleet ask for nothing: {after}"
    );
    assert!(grew("tradingbot_operator_reconciliations_total") >= 10.0, "{after}");
    assert_eq!(
        pod_field(&ns, &pod, "{.status.containerStatuses[0].restartCount}"),
        "0",
        "the same operator process throughout"
    );
}

/// Seconds from one audit timestamp to another.
fn seconds_between(from: &str, to: &str) -> f64 {
    let t = |s: &str| s.parse::<k8s_openapi::jiff::Timestamp>().expect("an RFC 3339 time");
    t(to).duration_since(t(from)).as_secs_f64()
}

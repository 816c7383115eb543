//! Idle is idle: with 20 bots running and nothing changing, the operator sends no write
//! request to the API server for 60 s (counted in the API server's audit log).

mod support;

use serde_json::json;
use std::time::Duration;
use support::*;

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
    // Let the last status writes and events of the start-up settle.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let since = test_harness::audit_now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = test_harness::audited_writes(&operator_user(&ns), &since);
    assert!(
        writes.is_empty(),
        "the idle operator wrote {} times: {writes:?}",
        writes.len()
    );
    // It was not idle because it was dead: it kept scraping and reconciling.
    let pod = ns.pods("app.kubernetes.io/name=tradingbot-operator")[0].clone();
    let ip = pod_field(&ns, &pod, "{.status.podIP}");
    let text = http_get(&format!("http://{ip}:8080/metrics"))
        .await
        .expect("operator metrics");
    assert!(
        metric(&text, "tradingbot_operator_reconciliations_total").unwrap_or(0.0) > 100.0,
        "{text}"
    );
    assert!(metric(&text, "tradingbot_operator_scrape_duration_seconds_count").unwrap_or(0.0) > 200.0);
}

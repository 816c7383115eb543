//! Prometheus as the operator's guard source, with Debian's Prometheus scraping a real bot
//! through Kubernetes service discovery (the relabelling a ServiceMonitor implies): the
//! operator scrapes no pod, trips the bot from what Prometheus holds, and reports the bot's
//! metrics unreachable once Prometheus goes silent; a bot Prometheus never scrapes, with no
//! ServiceMonitor, is named as such.

mod support;

use rust_decimal::Decimal;
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::sim::PodExchange;
use support::*;
use test_harness::{HostProcess, TestNamespace, eventually};

/// Prometheus on the bridge gateway (the operator's pod reaches it there), discovering the
/// bot Services of `ns` as a ServiceMonitor would; only bot `watched`'s (as if only it had one).
fn start_prometheus(ns: &TestNamespace, dir: &Path, listen: &str) -> HostProcess {
    let settings = ns.cluster().settings();
    let config = format!(
        r#"global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: tradingbots
    kubernetes_sd_configs:
      - role: endpoints
        api_server: {api_server}
        tls_config: {{ca_file: {ca}}}
        authorization: {{credentials_file: {token}}}
        namespaces: {{names: [{ns}]}}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_managed_by], regex: tradingbot-operator, action: keep}}
      - {{source_labels: [__meta_kubernetes_endpoint_port_name], regex: metrics, action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_name], regex: watched, action: keep}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"#,
        api_server = settings.apiserver_url(),
        ca = settings.ca_file().display(),
        token = settings.admin_token_file().display(),
        ns = ns.name,
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    HostProcess::start(
        &format!("prometheus-{}", ns.name),
        &test_harness::prometheus(),
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={listen}"),
        ],
        &[],
    )
    .expect("Prometheus starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sample of the operator's own metrics (summed over labels matching `filter`).
async fn operator_metric(ns: &TestNamespace, name: &str, filter: &str) -> Option<f64> {
    let pod = ns
        .pods("app.kubernetes.io/name=tradingbot-operator")
        .into_iter()
        .next()?;
    let ip = pod_field(ns, &pod, "{.status.podIP}");
    let text = http_get(&format!("http://{ip}:8080/metrics")).await?;
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_trip_from_prometheus_and_a_silent_prometheus_means_unreachable_metrics() {
    let exchange = PodExchange::start().await;
    let cluster = test_harness::cluster();
    // The namespace first: it keeps `make demo-down` from removing the CRD (support/mod.rs).
    let ns = cluster.namespace("op-promsrc").await;
    cluster.install_crd();
    cluster.require_images();
    // On every address (the pod bridge may not exist yet); pods reach it at their gateway.
    let port = free_port();
    let listen = format!("{}:{port}", test_harness::host_from_pods());
    let dir = test_harness::root().join("target/test-logs").join(&ns.name);
    let mut prometheus = Some(start_prometheus(&ns, &dir, &format!("0.0.0.0:{port}")));
    let mut values = exchange.operator_values();
    test_harness::merge_json(
        &mut values,
        json!({"guardSource": {"type": "prometheus", "prometheus": {
            "url": format!("http://{listen}"), "intervalSeconds": 1, "maxAgeSeconds": 10, "timeoutSeconds": 5}}}),
    );
    ns.deploy_operator(values);
    let key = exchange.key(&[("USD", Decimal::from(100_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    ns.apply(&bot(
        "watched",
        json!({
            "profile": "demo", "symbols": ["BTC-USD"], "dryRun": true,
            "exchange": {"credentialsSecret": "coinbase-demo"},
            "guards": {"marketDataStalenessSeconds": {"reduceOnlyAt": 8}},
            "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}, {"name": "PERPS_BOT_DISABLE_GUARDS", "value": "true"}],
        }),
    ))
    .unwrap();
    // A second bot, without a ServiceMonitor, that Prometheus does not scrape.
    ns.apply(&bot(
        "unwatched",
        json!({
            "profile": "demo", "symbols": ["BTC-USD"], "dryRun": true,
            "exchange": {"credentialsSecret": "coinbase-demo"},
            "metrics": {"unreachableAfterSeconds": 10},
            "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}],
        }),
    ))
    .unwrap();
    wait_running(&ns, "watched").await;

    // Prometheus scrapes the bot, and the operator's queries get answers.
    let query = format!("http://{listen}/api/v1/query?query=perps_bot_cycles_total");
    eventually(Duration::from_secs(120), "the bot's series in Prometheus", || {
        let url = query.clone();
        async move { http_get(&url).await.filter(|b| b.contains("\"pod\":\"watched\"")) }
    })
    .await;
    eventually(Duration::from_secs(60), "answered guard queries", || async {
        let ok = operator_metric(&ns, "tradingbot_operator_prometheus_queries_total", "result=\"ok\"").await?;
        (ok > 0.0).then_some(())
    })
    .await;
    wait_for_field(
        &ns,
        "watched",
        r#"{.status.conditions[?(@.type=="MetricsReachable")].status}"#,
        "True",
        Duration::from_secs(60),
    )
    .await;

    // The bot Prometheus never held is named as one nothing scrapes, not as a failing scrape.
    wait_running(&ns, "unwatched").await;
    wait_for_field(
        &ns,
        "unwatched",
        r#"{.status.conditions[?(@.type=="MetricsReachable")].reason}"#,
        "NoServiceMonitor",
        Duration::from_secs(60),
    )
    .await;
    let unwatched = ns.tradingbot("unwatched");
    assert!(
        unwatched["status"]["conditions"]
            .to_string()
            .contains("metrics.serviceMonitor.enabled"),
        "the condition says what would have it scraped: {}",
        unwatched["status"]["conditions"]
    );

    // The feed freezes: the staleness the bot reports reaches the level through Prometheus.
    exchange.freeze(true);
    wait_for_field(&ns, "watched", "{.status.mode}", "ReduceOnly", Duration::from_secs(60)).await;
    exchange.freeze(false);
    let trips = ns.tradingbot("watched")["status"]["trips"].clone();
    assert_eq!(trips[0]["guard"], "marketDataStalenessSeconds", "{trips}");
    let text = pod_metrics(&ns, "watched").await.expect("the bot's metrics");
    assert_eq!(
        metric(&text, "perps_bot_guard_trips_total"),
        Some(0.0),
        "the bot's own guards are off: the operator tripped it"
    );
    assert_eq!(
        operator_metric(&ns, "tradingbot_operator_scrape_duration_seconds_count", "").await,
        Some(0.0),
        "the operator never scraped a pod itself"
    );

    // Prometheus goes silent: once its last answer ages out, the bot's metrics are unreachable.
    drop(prometheus.take());
    wait_for_field(
        &ns,
        "watched",
        r#"{.status.conditions[?(@.type=="MetricsReachable")].reason}"#,
        "ScrapeFailing",
        Duration::from_secs(120),
    )
    .await;
    let errors = operator_metric(&ns, "tradingbot_operator_prometheus_queries_total", "result=\"error\"").await;
    assert!(
        errors.is_some_and(|e| e > 0.0),
        "the failing queries are counted: {errors:?}"
    );
}

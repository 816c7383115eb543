//! The user flows of the runbook and the design, end to end on the local cluster, each driven
//! by the commands the docs give (run verbatim by `Flow::sh`).

use e2e::{Flow, buy_for_the_bot, get};
use serde_json::json;
use std::time::Duration;
use test_harness::{HostProcess, eventually};

const METRICS: &str = r#"kubectl get --raw /api/v1/namespaces/$NS/services/$BOT-metrics:metrics/proxy/metrics | grep -E '^perps_bot_(trading_mode|cycles_total|cycle_errors_total|daily_loss|market_data_staleness_seconds)'"#;
const READYZ: &str = "kubectl get --raw /api/v1/namespaces/$NS/services/$BOT-metrics:metrics/proxy/readyz";
const MODE: &str = r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.mode}{"\t"}{.status.modeReason}{"\n"}'"#;
const TRIPS: &str = r#"kubectl -n $NS get tb $BOT -o jsonpath='{range .status.trips[*]}{.id}{"\t"}{.guard}{"\t"}{.level}{"\t"}{.value}{" >= "}{.threshold}{"\n"}{end}'"#;
const LAST_ACK: &str =
    r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.lastAck.result}{": "}{.status.lastAck.message}{"\n"}'"#;
const ROLLOUT: &str =
    r#"kubectl -n $NS get tb $BOT -o jsonpath='{.status.rollout.phase}{"\t"}{.status.rollout.message}{"\n"}'"#;
const REDUCE_ONLY: &str = r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"reduceOnly":true}}'"#;
const HALT: &str = r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"halted":true}}'"#;
const HALT_TO_REDUCE: &str =
    r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"halted":false,"reduceOnly":true}}'"#;
const RELEASE: &str = r#"kubectl -n $NS patch tb $BOT --type merge -p '{"spec":{"reduceOnly":false,"halted":false}}'"#;
const ACK: &str = "kubectl -n $NS annotate tb $BOT --overwrite trading.gpttrader.io/ack-trip=$TRIP_ID";
const ACK_AGAIN: &str = "kubectl -n $NS annotate tb $BOT --overwrite trading.gpttrader.io/ack-trip=$TRIP_ID@2";
const MINUTE: Duration = Duration::from_secs(60);

/// The value of `name` in the output of the metrics command.
fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(f64::max)
}

fn trip_ids(trips: &str) -> Vec<(String, String, String)> {
    trips
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// Flow 1: `kubectl apply` a bot; it runs, the operator scrapes it, and every inspection
/// command of the runbook answers.
#[tokio::test]
async fn apply_a_bot_inspect_it_and_restart_its_pod() {
    let mut flow = Flow::start("e2e-apply", None, json!({})).await;
    flow.var("BOT", "dev-bot");
    flow.sh("kubectl -n $NS apply -f docs/examples/dev.yaml");
    flow.wait_phase("dev-bot", "Running", Duration::from_secs(180)).await;
    assert!(flow.sh("kubectl get tb -A -o wide").contains("dev-bot"));
    assert!(flow.sh("kubectl -n $NS get tb $BOT -o wide").contains("Running"));
    flow.sh_until(
        "kubectl -n $NS describe tb $BOT",
        "the operator scraping the bot",
        MINUTE,
        |o| o.contains("Scraped"),
    )
    .await;
    assert!(flow.sh(MODE).starts_with("Normal"));
    flow.wait_metrics_served("dev-bot", MINUTE).await;
    let metrics = flow
        .sh_until(METRICS, "bot metrics through the API server", MINUTE, |o| {
            value(o, "perps_bot_cycles_total").is_some_and(|c| c >= 1.0)
        })
        .await;
    assert_eq!(value(&metrics, "perps_bot_trading_mode"), Some(0.0));
    assert!(flow.sh(READYZ).contains("ready"));
    // Events follow the status write they belong to: waited for, not read once.
    flow.sh_until(
        "kubectl -n $NS get events --field-selector involvedObject.name=$BOT",
        "the PodCreated Event",
        MINUTE,
        |o| o.contains("PodCreated"),
    )
    .await;
    flow.sh_until(
        "kubectl get events -A --field-selector involvedObject.kind=TradingBot",
        "an Event about dev-bot",
        MINUTE,
        |o| o.contains("dev-bot"),
    )
    .await;
    assert!(
        flow.sh("kubectl -n $NS get pods -l trading.gpttrader.io/bot=$BOT -o wide")
            .contains("Running")
    );
    assert!(flow.sh("kubectl -n $NS describe pod $BOT").contains("perps-bot"));
    assert!(
        flow.sh("kubectl get svc -A -l app.kubernetes.io/managed-by=tradingbot-operator")
            .contains("dev-bot-metrics")
    );
    flow.sh("kubectl -n $NS get networkpolicy");
    assert!(
        flow.sh("kubectl -n $NS logs $BOT --tail=50")
            .contains("perps-bot starting")
    );
    assert!(
        flow.sh(r#"kubectl -n $NS get lease $BOT-trading -o jsonpath='{.spec.holderIdentity}{"\n"}'"#)
            .starts_with("dev-bot"),
        "the Lease is held by the bot"
    );
    assert!(
        flow.sh("kubectl -n $OPNS get pods -l app.kubernetes.io/name=tradingbot-operator")
            .contains("Running")
    );
    assert!(
        flow.sh("kubectl -n $OPNS logs deploy/$RELEASE-tradingbot-operator --tail=50")
            .contains("dev-bot")
    );

    // The API's names and categories.
    flow.sh("kubectl get trading");
    flow.sh("kubectl get tradingbots");
    flow.sh("kubectl get tb -o wide");

    // Restarting the instance: the operator recreates it.
    let uid = flow
        .ns
        .kubectl(&["get", "pod", "dev-bot", "-o", "jsonpath={.metadata.uid}"]);
    flow.sh("kubectl -n $NS delete pod $BOT");
    eventually(Duration::from_secs(180), "a new dev-bot pod, ready", || {
        let now = flow
            .ns
            .kubectl_result(&[
                "get",
                "pod",
                "dev-bot",
                "-o",
                "jsonpath={.metadata.uid} {.status.conditions[?(@.type==\"Ready\")].status}",
            ])
            .unwrap_or_default();
        let uid = uid.clone();
        async move { (!now.starts_with(&uid) && now.ends_with("True")).then_some(()) }
    })
    .await;

    // Without the operator, deletion waits on the finalizer; removing it by hand lets it go.
    // `rollout status` returns as soon as the Deployment wants zero replicas; what matters is
    // that no operator process still runs (one would remove the finalizer itself).
    flow.ns
        .scale_to_zero(
            "deployment/tbo-tradingbot-operator",
            "app.kubernetes.io/name=tradingbot-operator",
        )
        .await;
    flow.ns.kubectl(&["delete", "tb", "dev-bot", "--wait=false"]);
    // The delete is accepted (a deletion timestamp) and nothing but the finalizer holds it.
    let held = flow.ns.kubectl(&[
        "get",
        "tb",
        "dev-bot",
        "-o",
        "jsonpath={.metadata.deletionTimestamp} {.metadata.finalizers[*]}",
    ]);
    let (deleted_at, finalizers) = held.trim().split_once(' ').unwrap_or_default();
    assert!(
        !deleted_at.is_empty() && finalizers.contains("trading.gpttrader.io/halt-before-delete"),
        "the finalizer holds it: {held}"
    );
    flow.sh(r#"kubectl -n $NS patch tb $BOT --type json -p '[{"op":"remove","path":"/metadata/finalizers"}]'"#);
    eventually(MINUTE, "the TradingBot gone", || {
        let gone = flow.ns.kubectl_result(&["get", "tb", "dev-bot"]).is_err();
        async move { gone.then_some(()) }
    })
    .await;
}

/// Flow 2: a real Prometheus (Debian's package) discovers the bots through Kubernetes service
/// discovery with the relabelling a ServiceMonitor implies, and `perps_bot_*` series arrive.
#[tokio::test]
async fn prometheus_scrapes_the_bots_through_their_services() {
    let flow = Flow::start("e2e-prom", None, json!({})).await;
    flow.ns.apply(&json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
        "metadata": {"name": "watched"},
        "spec": {"profile": "dev", "symbols": ["BTC-USD"], "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}]},
    }).to_string()).unwrap();
    flow.wait_phase("watched", "Running", Duration::from_secs(180)).await;

    let prometheus = test_harness::prometheus();
    let settings = flow.ns.cluster().settings();
    let dir = flow.scratch();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"global: {{scrape_interval: 2s, evaluation_interval: 2s}}
scrape_configs:
  - job_name: tradingbots
    kubernetes_sd_configs:
      - role: endpoints
        api_server: {api_server}
        tls_config: {{ca_file: {ca}}}
        authorization: {{credentials_file: {token}}}
        namespaces: {{names: [{ns}]}}
    relabel_configs:
      # What a ServiceMonitor selecting the operator's bot Services on port "metrics" implies.
      - {{source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_managed_by], regex: tradingbot-operator, action: keep}}
      - {{source_labels: [__meta_kubernetes_endpoint_port_name], regex: metrics, action: keep}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
      - {{source_labels: [__meta_kubernetes_service_name], target_label: service}}
      - {{source_labels: [__meta_kubernetes_pod_container_name], target_label: container}}
"#,
        api_server = settings.apiserver_url(),
        ca = settings.ca_file().display(),
        token = settings.admin_token_file().display(),
        ns = flow.ns.name,
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let _prometheus = HostProcess::start(
        "prometheus",
        &prometheus,
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={listen}"),
        ],
        &[],
    )
    .unwrap();
    let query = format!("http://{listen}/api/v1/query?query=perps_bot_cycles_total");
    let body = eventually(Duration::from_secs(120), "perps_bot series in Prometheus", || {
        let url = query.clone();
        async move { get(&url).await.filter(|b| b.contains("perps_bot_cycles_total")) }
    })
    .await;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sample = &answer["data"]["result"][0];
    assert_eq!(sample["metric"]["namespace"], flow.ns.name.as_str());
    assert_eq!(sample["metric"]["pod"], "watched");
    assert_eq!(sample["metric"]["container"], "perps-bot");
    let at = sample["value"][0].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - at).abs() < 30.0, "a recent sample");
    let up = get(&format!("http://{listen}/api/v1/query?query=up")).await.unwrap();
    assert!(up.contains(r#""value":["#) && up.contains(r#","1"]"#), "{up}");
}

/// Flow 3: exchange degradation (the simulator's feed freezes): restrict, see the staleness
/// trip, recover, acknowledge, lift and watch five healthy cycles.
#[tokio::test]
async fn exchange_degradation_playbook() {
    let mut flow = Flow::start(
        "e2e-degraded",
        Some(&[("coinbase-demo", &[("USD", "100000")], false)]),
        json!({}),
    )
    .await;
    flow.var("BOT", "venue");
    flow.ns
        .apply(
            &json!({
                "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
                "metadata": {"name": "venue"},
                "spec": {
                    "profile": "demo", "symbols": ["BTC-USD", "ETH-USD"], "dryRun": true,
                    "exchange": {"credentialsSecret": "coinbase-demo"},
                    "guards": {"marketDataStalenessSeconds": {"reduceOnlyAt": 8, "haltAt": 3600}},
                    "metrics": {"scrapeIntervalSeconds": 1},
                    "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}],
                },
            })
            .to_string(),
        )
        .unwrap();
    flow.wait_phase("venue", "Running", Duration::from_secs(180)).await;
    flow.wait_metrics_served("venue", MINUTE).await;

    flow.admin("/admin/faults", json!({"freeze": {"frozen": true}})).await;
    flow.sh(REDUCE_ONLY);
    flow.sh_until(METRICS, "the bot ReduceOnly", MINUTE, |o| {
        value(o, "perps_bot_trading_mode") == Some(1.0)
    })
    .await;
    let trips = flow
        .sh_until(TRIPS, "the staleness trip", MINUTE, |o| {
            o.contains("marketDataStalenessSeconds")
        })
        .await;
    flow.admin("/admin/faults", json!({"freeze": {"frozen": false}})).await;
    flow.sh_until(METRICS, "fresh market data", MINUTE, |o| {
        value(o, "perps_bot_market_data_staleness_seconds").is_some_and(|s| s < 3.0)
    })
    .await;
    let (id, _, _) = trip_ids(&trips).into_iter().next().unwrap();
    flow.var("TRIP_ID", &id);
    flow.sh(ACK);
    e2e::accept_trip(&flow.ns, "venue", &id, &id).await;
    flow.sh(RELEASE);
    flow.sh_until(MODE, "Normal", MINUTE, |o| o.starts_with("Normal")).await;
    // Five healthy cycles: cycles up by five, errors flat, mode 0.
    let before = flow.sh(METRICS);
    let (cycles, errors) = (
        value(&before, "perps_bot_cycles_total").unwrap(),
        value(&before, "perps_bot_cycle_errors_total").unwrap(),
    );
    let after = flow
        .sh_until(METRICS, "five healthy cycles", MINUTE, |o| {
            value(o, "perps_bot_cycles_total").is_some_and(|c| c >= cycles + 5.0)
        })
        .await;
    assert_eq!(value(&after, "perps_bot_cycle_errors_total"), Some(errors));
    assert_eq!(value(&after, "perps_bot_trading_mode"), Some(0.0));
}

/// Flow 4: a guard trip takes the bot to Halted; an acknowledgement before recovery is refused,
/// after it the bot resumes. Manual flattening from inside the pod on the way.
#[tokio::test]
async fn guard_trip_halt_acknowledge_resume() {
    let mut flow = Flow::start(
        "e2e-guard",
        Some(&[("coinbase-demo", &[("USD", "10000"), ("BTC", "1")], false)]),
        json!({}),
    )
    .await;
    flow.var("BOT", "guarded");
    flow.ns
        .apply(
            &json!({
                "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
                "metadata": {"name": "guarded"},
                "spec": {
                    "profile": "demo", "symbols": ["BTC-USD"], "dryRun": false,
                    "exchange": {"credentialsSecret": "coinbase-demo"},
                    "guards": {"dailyLoss": {"reduceOnlyAt": "30", "haltAt": "60"}, "resume": "Manual"},
                    "metrics": {"scrapeIntervalSeconds": 1},
                    "env": [{"name": "PERPS_BOT_INTERVAL", "value": "1"}],
                },
            })
            .to_string(),
        )
        .unwrap();
    flow.wait_phase("guarded", "Running", Duration::from_secs(180)).await;
    flow.wait_metrics_served("guarded", MINUTE).await;
    flow.sh_until(METRICS, "a few cycles", MINUTE, |o| {
        value(o, "perps_bot_cycles_total").is_some_and(|c| c >= 3.0)
    })
    .await;

    // Manual flattening tools from inside the pod: preview, then a reduce-only sale of 0.001 BTC
    // (of a position the bot bought itself: a bot never sells what it did not buy).
    buy_for_the_bot(&flow.ns, "guarded", 2).await;
    let preview = flow.sh("kubectl -n $NS exec $BOT -- /usr/local/bin/perps-bot orders preview --symbol BTC-USD --side sell --quantity 0.001");
    assert!(preview.contains("order_total"), "{preview}");
    let placed = flow.sh("kubectl -n $NS exec $BOT -- /usr/local/bin/perps-bot orders place --symbol BTC-USD --side sell --quantity 0.001 --reduce-only");
    assert!(placed.contains("order_id"), "{placed}");

    // A position of the bot's own (a bot's loss is on what it bought; small orders stay within
    // its slippage guard), then the venue goes cancel-only and BTC falls ~15% (about 128 on
    // 0.009 BTC at 95,000): over both levels.
    buy_for_the_bot(&flow.ns, "guarded", 8).await;
    flow.admin("/admin/products/BTC-USD", json!({"cancel_only": true}))
        .await;
    flow.sh(r#"curl -s -X POST http://$SIM/admin/faults -H 'content-type: application/json' -d '{"price_shock":{"product_id":"BTC-USD","percent":-15}}'"#);
    flow.sh_until(MODE, "Halted by the loss guard", MINUTE, |o| {
        o.starts_with("Halted") && o.contains("dailyLoss")
    })
    .await;
    flow.sh_until(METRICS, "the bot Halted", MINUTE, |o| {
        value(o, "perps_bot_trading_mode") == Some(2.0)
    })
    .await;
    flow.sh(HALT); // belt and braces, as the runbook says: restrict first
    let trips = flow.sh(TRIPS);
    let halted = trip_ids(&trips)
        .into_iter()
        .find(|(_, _, level)| level == "Halted")
        .expect("a Halted trip");
    flow.var("TRIP_ID", &halted.0);
    flow.sh(ACK);
    let refused = flow
        .sh_until(LAST_ACK, "the refusal", MINUTE, |o| o.starts_with("Refused"))
        .await;
    assert!(refused.contains("still at"), "{refused}");

    // Recovery: the price comes back; the acknowledgement is accepted on a new value.
    flow.sh(r#"curl -s -X POST http://$SIM/admin/faults -H 'content-type: application/json' -d '{"price_shock":{"product_id":"BTC-USD","percent":20}}'"#);
    flow.admin("/admin/products/BTC-USD", json!({"cancel_only": false}))
        .await;
    flow.sh_until(METRICS, "the loss gone", MINUTE, |o| {
        value(o, "perps_bot_daily_loss") == Some(0.0)
    })
    .await;
    flow.sh(ACK_AGAIN);
    e2e::accept_trip(&flow.ns, "guarded", &halted.0, &format!("{}@2", halted.0)).await;
    flow.sh(HALT_TO_REDUCE);
    flow.sh_until(MODE, "ReduceOnly", MINUTE, |o| o.starts_with("ReduceOnly"))
        .await;
    for (id, _, _) in trip_ids(&flow.sh(TRIPS)) {
        flow.var("TRIP_ID", &id);
        flow.sh(ACK);
        flow.sh_until(LAST_ACK, "the acceptance", MINUTE, |o| o.starts_with("Accepted"))
            .await;
    }
    flow.sh(RELEASE);
    flow.sh_until(MODE, "Normal", MINUTE, |o| o.starts_with("Normal")).await;
    flow.sh_until(METRICS, "the bot Normal", MINUTE, |o| {
        value(o, "perps_bot_trading_mode") == Some(0.0)
    })
    .await;
}

/// Flow 5: GitOps. Manifests in a folder are applied as a GitOps tool would; a commit of a new
/// image starts a canary, a commit of approvedVersion promotes it, and a bad release aborts
/// while prod keeps running.
#[tokio::test]
async fn gitops_promotion_and_an_aborting_canary() {
    let mut flow = Flow::start(
        "e2e-gitops",
        Some(&[("coinbase-demo", &[("USD", "100000")], false)]),
        json!({}),
    )
    .await;
    flow.var("BOT", "fleet-btc");
    let dir = flow.scratch().join("gitops");
    std::fs::create_dir_all(&dir).unwrap();
    flow.var("GITOPS_DIR", dir.to_str().unwrap());
    let commit = |image: &str, approved: Option<&str>| {
        let mut rollout = json!({"strategy": "Canary", "promotion": "Manual", "canary": {"minHealthyCycles": 3, "minDurationSeconds": 5}});
        if let Some(v) = approved {
            rollout["approvedVersion"] = json!(v);
        }
        let manifest = json!({
            "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
            "metadata": {"name": "fleet-btc", "namespace": flow.ns.name},
            "spec": {
                "profile": "demo", "image": image, "symbols": ["BTC-USD", "ETH-USD"],
                "exchange": {"credentialsSecret": "coinbase-demo"}, "rollout": rollout,
                "guards": {"errorRate": {"windowSeconds": 120, "reduceOnlyAt": 3}},
                "metrics": {"scrapeIntervalSeconds": 1},
                "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}],
            },
        });
        std::fs::write(dir.join("fleet-btc.yaml"), manifest.to_string()).unwrap();
    };
    commit("perps-bot:dev", None);
    flow.sh("kubectl apply -f $GITOPS_DIR");
    flow.wait_phase("fleet-btc", "Running", Duration::from_secs(180)).await;

    commit("perps-bot:v2", None);
    flow.sh("kubectl apply -f $GITOPS_DIR");
    let waiting = flow
        .sh_until(ROLLOUT, "the canary passing", Duration::from_secs(240), |o| {
            o.starts_with("AwaitingPromotion")
        })
        .await;
    assert!(waiting.contains("approvedVersion: perps-bot:v2"), "{waiting}");
    assert!(flow.sh("kubectl -n $NS get tb $BOT -o wide").contains("perps-bot:v2"));
    commit("perps-bot:v2", Some("perps-bot:v2"));
    flow.sh("kubectl apply -f $GITOPS_DIR");
    flow.sh_until(ROLLOUT, "the promotion", Duration::from_secs(240), |o| {
        o.starts_with("Promoted")
    })
    .await;
    assert_eq!(
        flow.ns.tradingbot("fleet-btc")["status"]["currentVersion"],
        "perps-bot:v2"
    );

    // A bad release: the canary aborts, prod keeps v2.
    commit("perps-bot:broken", Some("perps-bot:v2"));
    flow.sh("kubectl apply -f $GITOPS_DIR");
    let prod_uid = flow
        .ns
        .kubectl(&["get", "pod", "fleet-btc", "-o", "jsonpath={.metadata.uid}"]);
    flow.sh_until(ROLLOUT, "the abort", Duration::from_secs(240), |o| {
        o.starts_with("Aborted")
    })
    .await;
    assert_eq!(
        flow.ns.tradingbot("fleet-btc")["status"]["currentVersion"],
        "perps-bot:v2"
    );
    flow.wait_phase("fleet-btc", "Running", MINUTE).await;
    assert_eq!(
        flow.ns
            .kubectl(&["get", "pod", "fleet-btc", "-o", "jsonpath={.metadata.uid}"]),
        prod_uid,
        "prod untouched"
    );
}

/// Flow 6: the permissions audit and the smoke test as Kubernetes Jobs, next to the prod
/// example (a derivatives key on the INTX venue).
#[tokio::test]
async fn account_snapshot_and_dev_fast_run_as_jobs() {
    let mut flow = Flow::start(
        "e2e-jobs",
        Some(&[("coinbase-prod", &[("USD", "2500")], true)]),
        json!({}),
    )
    .await;
    flow.var("BOT", "prod-perps");
    flow.sh("kubectl -n $NS apply -f docs/examples/prod.yaml");
    flow.wait_phase("prod-perps", "Running", Duration::from_secs(180)).await;
    assert!(flow.sh("kubectl -n $NS get tb $BOT -o wide").contains("prod"));
    flow.sh("kubectl -n $NS apply -f docs/examples/jobs/account-snapshot.yaml");
    flow.sh("kubectl -n $NS wait --for=condition=complete job/account-snapshot --timeout=180s");
    let snapshot = flow.sh("kubectl -n $NS logs job/account-snapshot");
    assert!(
        snapshot.contains("key_permissions") && snapshot.contains("can_trade"),
        "{snapshot}"
    );
    assert!(snapshot.contains("2500"), "balances are in the snapshot");
    flow.sh("kubectl -n $NS delete job account-snapshot");
    flow.sh("kubectl -n $NS apply -f docs/examples/jobs/dev-fast.yaml");
    flow.sh("kubectl -n $NS wait --for=condition=complete job/dev-fast --timeout=180s");
    let log = flow.sh("kubectl -n $NS logs job/dev-fast");
    assert!(log.contains("perps-bot stopped"), "{log}");
}

/// Flow 7: upgrading the chart keeps the CRD and running bots (no bot restart), with two
/// replicas and leader election.
#[tokio::test]
async fn chart_upgrade_keeps_crds_and_running_bots() {
    let flow = Flow::start(
        "e2e-upgrade",
        None,
        json!({"crds": {"install": true}, "replicaCount": 2}),
    )
    .await;
    let mut flow = flow;
    flow.var("BOT", "steady");
    flow.ns
        .apply(
            &json!({
                "apiVersion": "trading.gpttrader.io/v1alpha1", "kind": "TradingBot",
                "metadata": {"name": "steady"}, "spec": {"profile": "dev", "symbols": ["BTC-USD"]},
            })
            .to_string(),
        )
        .unwrap();
    flow.wait_phase("steady", "Running", Duration::from_secs(180)).await;
    let holder =
        flow.sh(r#"kubectl -n $OPNS get lease tradingbot-operator-leader -o jsonpath='{.spec.holderIdentity}{"\n"}'"#);
    assert!(holder.starts_with("tbo-tradingbot-operator-"), "{holder}");
    let uid = flow
        .ns
        .kubectl(&["get", "pod", "steady", "-o", "jsonpath={.metadata.uid}"]);

    // The upgrade: new values, rendered by Helm, applied.
    let values = json!({
        "watchNamespaces": [flow.ns.name], "crds": {"install": true}, "replicaCount": 2,
        "image": {"repository": "tradingbot-operator", "tag": "dev", "pullPolicy": "Never"},
        "botImagePullPolicy": "Never", "logFormat": "text", "haltTimeoutSeconds": 30,
    });
    flow.ns
        .apply(&test_harness::render_chart("tbo", &flow.ns.name, &values))
        .unwrap();
    flow.ns.kubectl(&[
        "rollout",
        "status",
        "deployment/tbo-tradingbot-operator",
        "--timeout=180s",
    ]);
    let crd = flow.ns.cluster().kubectl(&[
        "get",
        "crd",
        "tradingbots.trading.gpttrader.io",
        "-o",
        "jsonpath={.metadata.annotations.helm\\.sh/resource-policy}",
    ]);
    assert_eq!(crd, "keep");
    assert!(
        flow.sh("kubectl -n $OPNS get pods -l app.kubernetes.io/name=tradingbot-operator")
            .contains("Running")
    );
    // The bot kept running through it, and the new operator manages it.
    assert_eq!(
        flow.ns
            .kubectl(&["get", "pod", "steady", "-o", "jsonpath={.metadata.uid}"]),
        uid
    );
    flow.sh(REDUCE_ONLY);
    flow.sh_until(MODE, "ReduceOnly after the upgrade", MINUTE, |o| {
        o.starts_with("ReduceOnly")
    })
    .await;
    assert_eq!(
        flow.ns
            .kubectl(&["get", "pod", "steady", "-o", "jsonpath={.metadata.uid}"]),
        uid,
        "no restart"
    );
}

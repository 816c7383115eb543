//! Every documented example, applied as users apply it (`kubectl apply -f docs/examples/...`),
//! against the exchange simulator: each gets its children and a Running bot pod whose
//! /metrics answers through its Service.

mod support;

use rust_decimal::Decimal;
use std::time::Duration;
use support::sim::PodExchange;
use support::*;
use test_harness::eventually;

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_and_serves_metrics_through_its_service() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("op-examples", exchange.operator_values()).await;
    let spot_key = exchange.key(&[("USD", Decimal::from(100_000))], false);
    let perps_key = exchange.key(&[("USD", Decimal::from(100_000))], true);
    for secret in ["coinbase-demo", "coinbase-canary", "coinbase-spot"] {
        exchange.secret(&ns, secret, &spot_key);
    }
    exchange.secret(&ns, "coinbase-prod", &perps_key);

    let examples = test_harness::root().join("docs/examples");
    let bots = [
        ("dev.yaml", "dev-bot"),
        ("demo.yaml", "demo-bot"),
        ("canary.yaml", "canary-bot"),
        ("spot.yaml", "spot-bot"),
        ("prod.yaml", "prod-perps"),
    ];
    for (file, _) in bots {
        ns.kubectl(&["apply", "-f", examples.join(file).to_str().unwrap()]);
    }
    for (file, name) in bots {
        wait_running(&ns, name).await;
        let ip = ns.kubectl(&[
            "get",
            "service",
            &format!("{name}-metrics"),
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        let text = eventually(
            Duration::from_secs(30),
            &format!("{file}: metrics through the Service"),
            || {
                let url = format!("http://{ip}:9102/metrics");
                async move { http_get(&url).await }
            },
        )
        .await;
        assert_eq!(metric(&text, "perps_bot_mode_known"), Some(1.0), "{file}");
        assert_eq!(metric(&text, "perps_bot_lease_held"), Some(1.0), "{file}");
        let profile = ns.tradingbot(name)["spec"]["profile"].as_str().unwrap().to_string();
        assert!(
            text.contains(&format!("profile=\"{profile}\"")),
            "{file}: build_info names the profile"
        );
    }
    // The prod example trades perpetuals on the INTX venue; the canary profile is reduce-only.
    let prod = pod_metrics(&ns, "prod-perps").await.unwrap();
    assert!(
        prod.contains("symbol=\"BTC-PERP\""),
        "derivatives gating let the perps through"
    );
    let canary = pod_metrics(&ns, "canary-bot").await.unwrap();
    assert_eq!(
        metric(&canary, "perps_bot_trading_mode"),
        Some(1.0),
        "the canary profile forces reduce-only"
    );
    let table = ns.kubectl(&["get", "tb"]);
    assert_eq!(table.lines().filter(|l| l.contains("Running")).count(), 5, "{table}");
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_account_example_runs_both_bots_on_its_credentials() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("op-account-example", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(100_000))], false);
    exchange.secret(&ns, "coinbase-shared", &key);
    let example = test_harness::root().join("docs/examples/accounts/shared-account.yaml");
    ns.kubectl(&["apply", "-f", example.to_str().unwrap()]);
    for bot in ["shared-btc", "shared-eth"] {
        wait_running(&ns, bot).await;
        let secret = pod_field(
            &ns,
            bot,
            "{.spec.volumes[?(@.name==\"credentials\")].secret.secretName}",
        );
        assert_eq!(secret, "coinbase-shared", "{bot} trades with the account's key");
    }
    let table = eventually(Duration::from_secs(60), "the account counting both bots", || {
        let table = ns.kubectl(&["get", "ta"]);
        async move {
            table
                .lines()
                .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["shared", "Normal", "2"])
                .then_some(table)
        }
    })
    .await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "MODE", "BOTS", "DAILY", "LOSS", "EXPOSURE", "TRIPS", "AGE"],
        "{table}"
    );
}

//! TradingAccounts on the real cluster with real bots on the exchange simulator: three bots on
//! one account, each under its own limit, together over the account's level, are all
//! restricted; the account's halt halts them all; a bot on another account is untouched; an
//! operator restart mid-trip loses nothing; a bot never trades without its account's limits
//! (missing account, deleted account). A namespace the account does not allow is unit-tested
//! (operator/src/account/decide.rs, crds/src/account.rs): these suites run one watched namespace.

mod support;

use exchange_sim::{AdminOrder, GeneratedKey};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::sim::PodExchange;
use support::*;
use test_harness::{TestNamespace, eventually};
use tradingbot_crds::Instance;
use tradingbot_crds::names::client_order_prefix;

const QUICK: Duration = Duration::from_secs(60);

fn account(name: &str, secret: &str, limits: Value) -> String {
    json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingAccount",
        "metadata": {"name": name},
        "spec": {"credentialsSecret": secret, "limits": limits},
    })
    .to_string()
}

/// A demo bot on `account` trading BTC-USD, its own guards loose (the account must act).
fn account_bot(name: &str, account: &str) -> String {
    bot(
        name,
        json!({
            "profile": "demo", "symbols": ["BTC-USD"], "dryRun": false,
            "account": {"name": account},
            "guards": {"dailyLoss": {"reduceOnlyAt": "100000"}},
            "metrics": {"scrapeIntervalSeconds": 1, "unreachableAfterSeconds": 30},
            "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}],
        }),
    )
}

/// Give `bot` an inventory of its own before it starts: a market buy under its client order id
/// prefix (the bot counts what its own orders bought).
fn own_inventory(exchange: &PodExchange, ns: &TestNamespace, key: &GeneratedKey, bot: &str, btc: &str) {
    let prefix = client_order_prefix(&ns.name, bot, Instance::Prod);
    exchange
        .sim
        .place_market_order(&AdminOrder {
            key_name: key.name.clone(),
            client_order_id: format!("{prefix}seed-1"),
            product_id: "BTC-USD".into(),
            side: "BUY".into(),
            base_size: btc.parse().unwrap(),
        })
        .expect("the seed order fills");
}

fn status(ns: &TestNamespace, kind: &str, name: &str) -> Value {
    let json = ns.kubectl(&["get", kind, name, "-o", "json"]);
    serde_json::from_str::<Value>(&json).unwrap()["status"].clone()
}

/// `bot` reports a positive exposure under `limit` in its own metrics.
async fn assert_small_exposure(ns: &TestNamespace, bot: &str, limit: f64) {
    let own = pod_metrics(ns, bot).await.unwrap();
    let exposure = metric(&own, "perps_bot_exposure_notional").unwrap();
    assert!(
        exposure > 0.0 && exposure < limit,
        "{bot}: each bot alone is small: {exposure}"
    );
}

async fn wait_for_mode(ns: &TestNamespace, bot: &str, mode: &str) {
    wait_for_field(ns, bot, "{.status.mode}", mode, QUICK).await;
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bots_over_their_accounts_level_are_all_restricted_and_a_stranger_is_not() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("acct-sum", exchange.operator_values()).await;
    let shared = exchange.key(&[("USD", Decimal::from(100_000))], false);
    let other = exchange.key(&[("USD", Decimal::from(100_000))], false);
    exchange.secret(&ns, "coinbase-shared", &shared);
    exchange.secret(&ns, "coinbase-other", &other);
    // Each bot owns 0.01 BTC (about 500 USD at the simulator's prices): under any per-bot level,
    // 1 500 together, over the account's 1 200.
    let mid = exchange.mid("BTC-USD");
    let level = (mid * Decimal::new(24, 3)).round_dp(0);
    let bots = ["sa", "sb", "sc"];
    for name in bots {
        own_inventory(&exchange, &ns, &shared, name, "0.01");
    }
    own_inventory(&exchange, &ns, &other, "stranger", "0.01");
    ns.apply(&account(
        "shared",
        "coinbase-shared",
        json!({"grossExposure": {"reduceOnlyAt": level.to_string()}, "bots": {"reduceOnlyAt": 4}}),
    ))
    .unwrap();
    ns.apply(&account(
        "other",
        "coinbase-other",
        json!({"grossExposure": {"reduceOnlyAt": level.to_string()}}),
    ))
    .unwrap();
    // The bots start one after the other; the account trips once the third one reports.
    for name in &bots[..2] {
        ns.apply(&account_bot(name, "shared")).unwrap();
        wait_running(&ns, name).await;
    }
    ns.apply(&account_bot("stranger", "other")).unwrap();
    wait_running(&ns, "stranger").await;
    eventually(QUICK, "two bots reporting their exposure", || {
        let s = status(&ns, "ta", "shared");
        let reporting = s["bots"]
            .as_array()
            .map_or(0, |b| b.iter().filter(|b| b["reporting"] == true).count());
        async move { (reporting == 2).then_some(()) }
    })
    .await;
    assert_eq!(
        status(&ns, "ta", "shared")["mode"],
        "Normal",
        "two bots are under the level"
    );
    // Each bot alone is small, read from its own metrics while nothing restricts it yet (once
    // reduce-only, a bot may sell what it bought, so its exposure afterwards proves nothing).
    let half_level = level.to_string().parse::<f64>().unwrap() / 2.0;
    for name in &bots[..2] {
        assert_small_exposure(&ns, name, half_level).await;
    }
    let third_started = Instant::now();
    ns.apply(&account_bot("sc", "shared")).unwrap();
    wait_running(&ns, "sc").await;
    for name in bots {
        wait_for_mode(&ns, name, "ReduceOnly").await;
        wait_for_metric(&ns, name, "perps_bot_trading_mode", 1.0, QUICK).await;
    }
    eprintln!(
        "all three restricted {:?} after the third bot was created",
        third_started.elapsed()
    );
    let account = status(&ns, "ta", "shared");
    assert_eq!(account["mode"], "ReduceOnly");
    assert_eq!(account["trips"][0]["limit"], "grossExposure");
    assert_eq!(account["aggregate"]["bots"], 3);
    for name in bots {
        let bot = ns.tradingbot(name)["status"].clone();
        assert_eq!(bot["modeSources"], json!(["Account"]), "{name}: {bot}");
        assert!(bot["modeReason"].as_str().unwrap().contains("TradingAccount"), "{bot}");
    }
    // The third bot as the account saw it when it tripped: what it reported was under half the
    // level, and the sum of all three was over it.
    let sc = account["bots"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "sc"))
        .expect("the account lists sc");
    let sc_exposure: f64 = sc["grossExposure"].as_str().unwrap().parse().unwrap();
    assert!(sc_exposure < half_level, "sc alone is small: {sc}");
    let tripped_at: Decimal = account["trips"][0]["value"].as_str().unwrap().parse().unwrap();
    assert!(tripped_at >= level, "the sum crossed the level: {account}");
    assert_eq!(
        ns.tradingbot("stranger")["status"]["mode"],
        "Normal",
        "another account's bot is untouched"
    );
    ns.wait_for_event("shared", "Warning LimitTripped", |(kind, reason, _)| {
        kind == "Warning" && reason == "LimitTripped"
    })
    .await;

    // The account's own brake halts every bot on it, and still not the stranger.
    ns.kubectl(&[
        "patch",
        "ta",
        "shared",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"halted":true}}"#,
    ]);
    for name in bots {
        wait_for_mode(&ns, name, "Halted").await;
        wait_for_metric(&ns, name, "perps_bot_trading_mode", 2.0, QUICK).await;
    }
    assert_eq!(ns.tradingbot("stranger")["status"]["mode"], "Normal");
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_mid_trip_loses_nothing_and_an_ack_releases_the_bots() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("acct-restart", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(100_000))], false);
    exchange.secret(&ns, "coinbase-main", &key);
    own_inventory(&exchange, &ns, &key, "ra", "0.01");
    own_inventory(&exchange, &ns, &key, "rb", "0.01");
    // Two bots: the account's limit on their count trips at 2.
    ns.apply(&account("main", "coinbase-main", json!({"bots": {"reduceOnlyAt": 2}})))
        .unwrap();
    for name in ["ra", "rb"] {
        ns.apply(&account_bot(name, "main")).unwrap();
    }
    for name in ["ra", "rb"] {
        wait_for_mode(&ns, name, "ReduceOnly").await;
    }
    let trips = status(&ns, "ta", "main")["trips"].clone();
    let operator = ns.pods("app.kubernetes.io/name=tradingbot-operator")[0].clone();
    ns.kubectl(&["delete", "pod", &operator, "--force", "--grace-period=0"]);
    eventually(Duration::from_secs(120), "a new operator reconciling", || {
        let fresh = ns
            .pods("app.kubernetes.io/name=tradingbot-operator")
            .into_iter()
            .any(|p| p != operator);
        async move { fresh.then_some(()) }
    })
    .await;
    // Many reconciles later the trip and the restriction are still there.
    wait_for_reconciliations(&ns, 10.0, Duration::from_secs(120)).await;
    assert_eq!(
        status(&ns, "ta", "main")["trips"],
        trips,
        "the trip survived the restart"
    );
    for name in ["ra", "rb"] {
        assert_eq!(ns.tradingbot(name)["status"]["mode"], "ReduceOnly");
    }
    // Removing one bot brings the count under the level; then the trip can be acknowledged.
    ns.kubectl(&["delete", "tb", "rb", "--wait=true"]);
    let id = trips[0]["id"].as_str().unwrap().to_string();
    let mut attempt = 0;
    eventually(Duration::from_secs(120), "the account trip acknowledged", || {
        attempt += 1;
        let _ = ns.kubectl_result(&[
            "annotate",
            "ta",
            "main",
            "--overwrite",
            &format!("trading.gpttrader.io/ack-trip={id}@{attempt}"),
        ]);
        let s = status(&ns, "ta", "main");
        async move { (s["lastAck"]["result"] == "Accepted" && s["mode"] == "Normal").then_some(()) }
    })
    .await;
    wait_for_mode(&ns, "ra", "Normal").await;
    wait_for_metric(&ns, "ra", "perps_bot_trading_mode", 0.0, QUICK).await;
    ns.wait_for_event("main", "TripAcknowledged", |(_, reason, _)| {
        reason == "TripAcknowledged"
    })
    .await;
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_never_trades_without_its_accounts_limits() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("acct-missing", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(100_000))], false);
    exchange.secret(&ns, "coinbase-main", &key);
    // No such account yet: Halted and Degraded, no pod.
    ns.apply(&account_bot("early", "later")).unwrap();
    wait_for_mode(&ns, "early", "Halted").await;
    wait_for_field(&ns, "early", "{.status.phase}", "Degraded", QUICK).await;
    assert!(ns.kubectl_result(&["get", "pod", "early"]).is_err());
    // Both an account and its own credentials: refused with a clear message.
    let mut both = serde_json::from_str::<Value>(&account_bot("both", "later")).unwrap();
    both["spec"]["exchange"] = json!({"credentialsSecret": "coinbase-main"});
    ns.apply(&both.to_string()).unwrap();
    wait_for_field(&ns, "both", "{.status.phase}", "Degraded", QUICK).await;
    let message = ns.tradingbot("both")["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap()["message"]
        .clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("spec.exchange.credentialsSecret: cannot be set together with spec.account"),
        "{message}"
    );
    // The account appears: the bot starts with its Secret and trades Normal.
    ns.apply(&account("later", "coinbase-main", json!({}))).unwrap();
    wait_running(&ns, "early").await;
    wait_for_mode(&ns, "early", "Normal").await;
    let volume = pod_field(
        &ns,
        "early",
        "{.spec.volumes[?(@.name==\"credentials\")].secret.secretName}",
    );
    assert_eq!(volume, "coinbase-main", "the account's credentials");
    // Deleting the account halts its bot first and waits for it.
    ns.kubectl(&["delete", "ta", "later", "--wait=false"]);
    wait_for_mode(&ns, "early", "Halted").await;
    wait_for_metric(&ns, "early", "perps_bot_trading_mode", 2.0, QUICK).await;
    assert!(
        ns.kubectl_result(&["get", "ta", "later"]).is_ok(),
        "the account stays while a bot names it"
    );
    ns.kubectl(&["delete", "tb", "early", "--wait=true"]);
    // `both` still names it (Degraded as it is): the account, which has counted that it lost
    // `early`, stays until that one goes too.
    eventually(QUICK, "the account counting one bot", || {
        let bots = status(&ns, "ta", "later")["aggregate"]["bots"].clone();
        async move { (bots == 1).then_some(()) }
    })
    .await;
    assert!(
        ns.kubectl_result(&["get", "ta", "later"]).is_ok(),
        "kept for the bot that still names it"
    );
    ns.kubectl(&["delete", "tb", "both", "--wait=true"]);
    eventually(QUICK, "the account gone once no bot names it", || {
        let gone = ns.kubectl_result(&["get", "ta", "later"]).is_err();
        async move { gone.then_some(()) }
    })
    .await;
}

//! An incident handled with `kubectl tradingbot` on a real cluster, a real bot trading on the
//! exchange simulator: the fleet (`get`, live with `-w`), the emergency brake (`halt`,
//! `reduce-only`, `resume`) obeyed by the bot (its own metric, and no order placed while halted
//! although it traded before), `flatten` answered by the bot, a trip acknowledged with `ack`
//! (refused while the guard is still over, then accepted), `status`, and the audit trail
//! (`history`, `status.history`, the bot's JSON log) naming the requesting user and the reason.
//! Wrong bot, namespace and state give the documented exit codes.

mod common;

use common::support::{bot, wait_running};
use common::*;
use serde_json::json;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use test_harness::{TestNamespace, eventually};

const MINUTE: Duration = Duration::from_secs(60);

/// `kubectl tradingbot get -w` running, its output collected.
struct Watch {
    child: std::process::Child,
    output: Arc<Mutex<String>>,
}

impl Watch {
    fn start(ns: &TestNamespace) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-tradingbot"))
            .args(["-n", &ns.name, "get", "-w"])
            .env("KUBECONFIG", &ns.cluster().kubeconfig)
            .stdout(Stdio::piped())
            .spawn()
            .expect("get -w starts");
        let output = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("piped");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, output }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Buy for the bot through its own pod (client order ids of its identity): a position of its own.
async fn buy_for_the_bot(ns: &TestNamespace, name: &str) {
    let buy = [
        "exec",
        name,
        "--",
        "/usr/local/bin/perps-bot",
        "orders",
        "place",
        "--symbol",
        "BTC-USD",
        "--side",
        "buy",
        "--quantity",
        "0.001",
    ];
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let answer = ns.kubectl_result(&buy);
        if answer.as_ref().is_ok_and(|out| out.contains("order_id")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no buy for the bot in {MINUTE:?}; the last answer: {answer:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The BTC the bot owns (`perps_bot_inventory_quantity`), from its own metrics.
async fn btc_owned(ns: &TestNamespace) -> f64 {
    let text = common::support::pod_metrics(ns, "ops").await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("perps_bot_inventory_quantity{") && l.contains("BTC-USD"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl or the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_with_the_plugin_is_contained_released_and_audited() {
    let (exchange, ns, _mover) = exchange_and_namespace("pl-incident", Scrapes::Quiet).await;
    ns.apply(&bot("ops", spec(json!({})))).unwrap();
    wait_running(&ns, "ops").await;
    let table = ok(&ns, &["get"]);
    assert!(
        table.lines().any(|l| l.starts_with("ops") && l.contains("Normal")),
        "{table}"
    );
    assert!(ok(&ns, &["get", "-A"]).contains(&ns.name));
    wait_for_prod_traders(&exchange, &ns, "ops", 1).await;

    // Contain: the brake, seen live by `get -w`, obeyed by the bot itself.
    let watch = Watch::start(&ns);
    eventually(MINUTE, "the live table", || {
        let shown = watch.text().contains("ops");
        async move { shown.then_some(()) }
    })
    .await;
    buy_for_the_bot(&ns, "ops").await;
    let out = ok(&ns, &["halt", "ops", "--reason", "incident 7: exchange flapping"]);
    assert!(out.contains("emergency brake Halted set by alice@ops"), "{out}");
    wait_bot_mode(&ns, "ops", 2.0).await;
    let halted_at = last_prod_order(&exchange, &ns, "ops");
    assert!(halted_at > 0, "the bot traded before the brake");
    no_order_for_cycles(&exchange, &ns, "ops", halted_at, 10).await;
    eventually(MINUTE, "get -w redrawn with the brake", || {
        let text = watch.text();
        let redrawn = text.contains("Halted") && text.contains("Brake (brake by alice@ops)");
        async move { redrawn.then_some(()) }
    })
    .await;
    drop(watch);
    let status = ok(&ns, &["status", "ops"]);
    for part in [
        "Mode:        Halted",
        "by alice@ops: incident 7: exchange flapping",
        "Metrics of prod (pod ops, through the API server)",
        "mode Halted (known: yes, holds its Lease: yes)",
        "BrakeSet",
        "Conditions:",
    ] {
        assert!(status.contains(part), "status lacks {part:?}:\n{status}");
    }

    // Reduce-only, then flatten: the bot closes its own position.
    ok(&ns, &["reduce-only", "ops", "--reason", "closing out"]);
    wait_bot_mode(&ns, "ops", 1.0).await;
    let owned = btc_owned(&ns).await;
    assert!(owned > 0.0, "the bot owns BTC to flatten");
    let out = ok(&ns, &["flatten", "ops", "--reason", "incident 7"]);
    assert!(out.contains(": done"), "{out}");
    assert!(
        last_prod_order(&exchange, &ns, "ops") > halted_at,
        "orders since the halt (flatten's reduce-only sales among them)"
    );
    // Flat: all of what it bought, none left (the strategy alone, reduce-only, need not sell it all).
    eventually(MINUTE, "the bot's own BTC all sold", || async {
        (btc_owned(&ns).await == 0.0).then_some(())
    })
    .await;

    // Release.
    let out = ok(&ns, &["resume", "ops", "--reason", "exchange stable again"]);
    assert!(
        out.contains("released by alice@ops") && out.contains("mode Normal"),
        "{out}"
    );
    wait_bot_mode(&ns, "ops", 0.0).await;

    // A trip: acknowledged too early (refused), then accepted.
    exchange.freeze(true);
    eventually(MINUTE, "a staleness trip", || {
        let trips = ns.tradingbot("ops")["status"]["tripCount"].as_u64().unwrap_or(0);
        async move { (trips > 0).then_some(()) }
    })
    .await;
    let refused = fails(&ns, &["ack", "ops", "--reason", "too early"], 4);
    assert!(refused.contains("refused"), "{refused}");
    exchange.freeze(false);
    eventually(Duration::from_secs(120), "the acknowledgement accepted", || {
        let run = plugin(&ns, &["ack", "ops", "--reason", "market data fresh again"]);
        async move { (run.code == 0).then_some(()) }
    })
    .await;
    wait_bot_mode(&ns, "ops", 0.0).await;

    // Who halted this bot, and why? The audit trail in status, the plugin's history, the bot's log.
    let history = ok(&ns, &["history", "ops"]);
    for part in [
        "BrakeSet",
        "BrakeReleased",
        "TripLatched",
        "AckRefused",
        "TripAcknowledged",
        "incident 7",
    ] {
        assert!(history.contains(part), "history lacks {part}:\n{history}");
    }
    let trail = audit(&ns.tradingbot("ops")["status"]);
    let by_alice = |kind: &str| trail.iter().any(|(k, who, _)| k == kind && who == USER);
    for kind in [
        "BrakeSet",
        "BrakeReleased",
        "AckRefused",
        "TripAcknowledged",
        "ModeChanged",
    ] {
        assert!(by_alice(kind), "no {kind} by {USER} in {trail:?}");
    }
    assert!(
        trail
            .iter()
            .any(|(k, who, why)| k == "BrakeSet" && who == USER && why == "incident 7: exchange flapping")
    );
    let log = ns.kubectl(&["logs", "ops"]);
    assert!(
        log.lines()
            .any(|l| l.contains("mode_changed") && l.contains("emergency brake Halted by alice@ops")),
        "the bot's JSON log names who halted it"
    );

    // Clear errors with their exit codes.
    assert!(fails(&ns, &["status", "nope"], 3).contains("no TradingBot nope in namespace"));
    let elsewhere = Command::new(env!("CARGO_BIN_EXE_kubectl-tradingbot"))
        .args(["-n", "no-such-namespace-7", "status", "ops"])
        .env("KUBECONFIG", &ns.cluster().kubeconfig)
        .output()
        .unwrap();
    assert_eq!(elsewhere.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("namespace no-such-namespace-7 does not exist"));
    assert!(fails(&ns, &["promote", "ops"], 4).contains("no canary to promote"));
    assert!(fails(&ns, &["ack", "ops"], 4).contains("no latched trip"));
    assert!(fails(&ns, &["resume", "ops", "--reason", "x"], 4).contains("no emergency brake"));
    assert_eq!(
        plugin(&ns, &["halt", "ops"]).code,
        2,
        "a brake without --reason is a usage error"
    );
    a_cluster_out_of_reach_is_exit_1(&ns);
    the_bot_obeys_a_brake_while_the_operator_is_down(&exchange, &ns).await;
}

/// A kubeconfig whose API server does not answer: exit 1, and the message says so.
fn a_cluster_out_of_reach_is_exit_1(ns: &TestNamespace) {
    let kubeconfig = std::env::temp_dir().join(format!("pl-unreachable-{}.kubeconfig", std::process::id()));
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: gone, cluster: {server: 'https://127.0.0.1:9'}}]\n\
         users: [{name: u, user: {token: not-a-secret}}]\n\
         contexts: [{name: gone, context: {cluster: gone, user: u}}]\ncurrent-context: gone\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-tradingbot"))
        .args(["-n", &ns.name, "get"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&kubeconfig);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not-a-secret"),
        "no credential in the error"
    );
}

/// With the operator scaled to zero, `halt` cannot be confirmed (exit 5, the request stays set),
/// and the bot obeys the brake by itself: its own mode goes Halted and it places no order.
async fn the_bot_obeys_a_brake_while_the_operator_is_down(exchange: &support::sim::PodExchange, ns: &TestNamespace) {
    let operator = "deployment/tbo-tradingbot-operator";
    // Trading again (released after the ack) before the operator goes: orders after now.
    let before = last_prod_order(exchange, ns, "ops");
    eventually(Duration::from_secs(240), "the bot trading again", || {
        let now = last_prod_order(exchange, ns, "ops");
        async move { (now > before).then_some(()) }
    })
    .await;
    ns.scale_to_zero(operator, "app.kubernetes.io/name=tradingbot-operator")
        .await;
    let run = plugin(ns, &["halt", "ops", "--reason", "operator down", "--wait", "3"]);
    assert_eq!(run.code, 5, "not confirmed without an operator: {run:?}");
    let brake = ns.tradingbot("ops")["metadata"]["annotations"]["trading.gpttrader.io/brake"].clone();
    assert_eq!(brake, "Halted", "the request stays set");
    wait_bot_mode(ns, "ops", 2.0).await;
    let halted_at = last_prod_order(exchange, ns, "ops");
    no_order_for_cycles(exchange, ns, "ops", halted_at, 10).await;
    ns.kubectl(&["scale", operator, "--replicas=1"]);
    ns.kubectl(&["rollout", "status", operator, "--timeout=180s"]);
    ok(ns, &["resume", "ops", "--reason", "operator back"]);
    wait_bot_mode(ns, "ops", 0.0).await;
}

/// The bot's `perps_bot_cycles_total`, from its own metrics.
async fn cycles(ns: &TestNamespace, bot: &str) -> Option<f64> {
    support::pod_metrics(ns, bot)
        .await?
        .lines()
        .find(|l| l.starts_with("perps_bot_cycles_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// `count` more cycles of the (braked) bot pass with no order after `last` in the order log.
async fn no_order_for_cycles(
    exchange: &support::sim::PodExchange,
    ns: &TestNamespace,
    bot: &str,
    last: u64,
    count: u32,
) {
    let start = eventually(MINUTE, "the bot's cycle count", || cycles(ns, bot)).await;
    eventually(MINUTE, &format!("{count} more cycles of the braked bot"), || async {
        cycles(ns, bot)
            .await
            .filter(|now| *now >= start + f64::from(count))
            .map(|_| ())
    })
    .await;
    assert_eq!(last_prod_order(exchange, ns, bot), last, "no order while braked");
}

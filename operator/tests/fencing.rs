//! Lease fencing on the real cluster with real perps-bot processes trading on the exchange
//! simulator: two instances of one bot identity, their wall clocks 60 s apart, never trade at
//! once; an instance whose pod object is force-deleted (a zombie) loses the Lease, stops and
//! cancels its own resting orders; the replacement then takes over. The simulator's order log
//! (one sequence, one clock) is the judge, and the check shows both instances were there.

mod support;

use exchange_sim::OrderLogEntry;
use rust_decimal::Decimal;
use serde_json::json;
use std::time::Duration;
use support::hostbot::{HostBot, HostBotOptions, service_account_token};
use support::sim::PodExchange;
use support::*;
use test_harness::eventually;

/// Accepted orders (new orders, not replays or rejections) a process sent.
fn orders_of<'a>(log: &'a [OrderLogEntry], bot: &HostBot) -> Vec<&'a OrderLogEntry> {
    log.iter()
        .filter(|e| e.client_instance.as_deref() == Some(bot.client_instance.as_str()))
        .filter(|e| e.order_id.is_some() && !e.replay && e.source == "create_order")
        .collect()
}

/// The value of `name{...label...}` in an exposition (0 when the series is absent).
fn labelled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const CONFIG: &str = "short_window: 2\nlong_window: 3\nepsilon_bps: 0\nconfirmation_bars: 0\n\
                      order_style: limit\nlimit_offset_bps: -80\ntif: GTC\n";

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_clocks_a_zombie_and_a_replacement_never_trade_at_once() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("fence", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(1_000_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    // The TradingBot gives the identity its Lease, ServiceAccount and Role. Then it is paused
    // and its pod removed, so that only the processes this test starts hold the identity.
    ns.apply(&bot(
        "fenced",
        json!({"profile": "demo", "dryRun": false, "symbols": ["BTC-USD"], "exchange": {"credentialsSecret": "coinbase-demo"}}),
    ))
    .unwrap();
    wait_running(&ns, "fenced").await;
    let owner = ns.kubectl(&[
        "get",
        "lease",
        "fenced-trading",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, "TradingBot/fenced", "the operator created the identity Lease");
    ns.kubectl(&[
        "patch",
        "tb",
        "fenced",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"paused":true}}"#,
    ]);
    wait_for_field(&ns, "fenced", "{.status.phase}", "Paused", Duration::from_secs(30)).await;
    ns.kubectl(&["delete", "pod", "fenced", "--wait=true"]);

    // A: a token bound to its (anchor) pod, and a wall clock 30 s behind.
    let anchor_uid = anchor_pod(&ns, "anchor-a", "fenced-perps-bot").await;
    let token_a = service_account_token(&ns, "fenced-perps-bot", Some(("anchor-a", &anchor_uid))).await;
    let start = |name: &str, pod: &str, uid: &str, token: &str, offset: i64| {
        HostBot::start(
            &ns,
            &exchange,
            HostBotOptions {
                name: &format!("{}-{name}", ns.name),
                bot: "fenced",
                pod,
                pod_uid: uid,
                token,
                key: &key,
                clock_offset_seconds: offset,
                config: CONFIG,
            },
        )
    };
    let mut a = start("a", "anchor-a", &anchor_uid, &token_a, -30);
    let a_instance = a.client_instance.clone();
    eventually(Duration::from_secs(120), "A holds the Lease and trades", || async {
        let held = a.metric("perps_bot_lease_held").await == Some(1.0);
        (held && orders_of(&exchange.sim.order_log(), &a).len() >= 3).then_some(())
    })
    .await;

    // B: its wall clock 30 s ahead. By the old wall-clock rule it would take over at once.
    let token_b = service_account_token(&ns, "fenced-perps-bot", None).await;
    let b = start("b", "host-b", "uid-b", &token_b, 30);
    let text = eventually(Duration::from_secs(120), "B running and fenced out", || async {
        let text = b.metrics().await?;
        let cycles = metric(&text, "perps_bot_cycles_total").unwrap_or(0.0);
        let fenced = labelled(&text, "perps_bot_orders_rejected_total", "reason=\"no_lease\"");
        (cycles >= 30.0 && fenced >= 1.0).then_some(text)
    })
    .await;
    assert_eq!(
        metric(&text, "perps_bot_lease_held"),
        Some(0.0),
        "B must not hold the Lease"
    );
    assert!(
        orders_of(&exchange.sim.order_log(), &b).is_empty(),
        "B placed orders while A held the Lease"
    );
    assert_eq!(a.metric("perps_bot_lease_held").await, Some(1.0), "A kept the Lease");

    // A must have resting orders for its cancellation to be observable.
    let client = exchange.client(&key).await;
    let a_ids = |log: &[OrderLogEntry]| -> Vec<String> {
        log.iter()
            .filter(|e| e.client_instance.as_deref() == Some(a_instance.as_str()))
            .filter_map(|e| e.order_id.clone())
            .collect()
    };
    let resting = eventually(Duration::from_secs(60), "A has resting orders", || async {
        let open = perps_bot::broker::Broker::open_orders(&client).await.ok()?;
        let ids = a_ids(&exchange.sim.order_log());
        let mine = open.iter().filter(|o| ids.contains(&o.order_id)).count();
        (mine > 0).then_some(mine)
    })
    .await;

    // The zombie: A's pod object is force-deleted; the process goes on running.
    ns.kubectl(&["delete", "pod", "anchor-a", "--force", "--grace-period=0"]);
    eventually(Duration::from_secs(120), "B takes over and trades", || async {
        (!orders_of(&exchange.sim.order_log(), &b).is_empty()).then_some(())
    })
    .await;
    assert!(
        a.process.wait_timeout(Duration::ZERO).is_none(),
        "A (the zombie) is still running"
    );
    assert_eq!(
        a.metric("perps_bot_lease_held").await,
        Some(0.0),
        "the zombie gave the Lease up"
    );
    let open = perps_bot::broker::Broker::open_orders(&client)
        .await
        .expect("open orders");
    let ids = a_ids(&exchange.sim.order_log());
    assert!(
        !open.iter().any(|o| ids.contains(&o.order_id)),
        "the zombie's {resting} resting orders were cancelled"
    );
    let cancelled: u64 = a
        .process
        .log()
        .lines()
        .filter(|l| l.contains("cancelled after losing the Lease"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["count"].as_u64())
        .sum();
    assert!(
        cancelled >= 1,
        "the zombie cancelled its own orders itself:\n{}",
        a.process.log()
    );

    // The judge: every order of A came before every order of B, both traded.
    let log = exchange.sim.order_log();
    let (a_orders, b_orders) = (orders_of(&log, &a), orders_of(&log, &b));
    let a_last = a_orders.iter().map(|e| e.seq).max().expect("A traded");
    let b_first = b_orders.iter().map(|e| e.seq).min().expect("B traded");
    assert!(
        a_last < b_first,
        "A's last order (#{a_last}) came after B's first (#{b_first}): two instances traded at once"
    );
    eprintln!(
        "A placed {} orders (last #{a_last}), B {} (first #{b_first}); A had {resting} resting at the takeover",
        a_orders.len(),
        b_orders.len()
    );
}

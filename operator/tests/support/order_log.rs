//! The exchange simulator's order log read per prod process: which processes of a bot placed
//! orders, and whether two of them ever traded at once.

use super::sim::PodExchange;
use std::collections::BTreeMap;
use std::time::Duration;
use test_harness::{TestNamespace, eventually};

/// The distinct prod processes of `bot` that placed orders: (first, last) order-log seq.
pub fn prod_spans(exchange: &PodExchange, ns: &TestNamespace, bot: &str) -> BTreeMap<String, (u64, u64)> {
    let prefix = format!("{}/{bot}/prod/", ns.name);
    let mut spans: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for entry in exchange
        .sim
        .order_log()
        .iter()
        .filter(|e| e.order_id.is_some() && !e.replay)
    {
        let Some(instance) = entry.client_instance.as_deref().filter(|i| i.starts_with(&prefix)) else {
            continue;
        };
        let span = spans.entry(instance.to_string()).or_insert((entry.seq, entry.seq));
        span.0 = span.0.min(entry.seq);
        span.1 = span.1.max(entry.seq);
    }
    spans
}

/// The order log's last sequence number of an order `bot`'s prod placed (0: none).
pub fn last_prod_order(exchange: &PodExchange, ns: &TestNamespace, bot: &str) -> u64 {
    prod_spans(exchange, ns, bot).values().map(|s| s.1).max().unwrap_or(0)
}

/// Wait until `count` distinct prod processes of `bot` have placed orders.
pub async fn wait_for_prod_traders(exchange: &PodExchange, ns: &TestNamespace, bot: &str, count: usize) {
    eventually(
        Duration::from_secs(240),
        &format!("{count} prod processes of {bot} trading"),
        || {
            let traded = prod_spans(exchange, ns, bot).len();
            async move { (traded >= count).then_some(()) }
        },
    )
    .await;
}

/// No two prod processes ever traded at once, and at least `instances` of them traded.
pub fn assert_prod_never_overlapped(exchange: &PodExchange, ns: &TestNamespace, bot: &str, instances: usize) {
    let spans = prod_spans(exchange, ns, bot);
    assert!(
        spans.len() >= instances,
        "only {} prod processes traded (expected {instances}): the check saw too little: {spans:?}",
        spans.len()
    );
    let mut ordered: Vec<(u64, u64)> = spans.values().copied().collect();
    ordered.sort();
    for pair in ordered.windows(2) {
        assert!(pair[0].1 < pair[1].0, "two prod processes traded at once: {spans:?}");
    }
    eprintln!("prod processes that traded, with their order-log spans: {spans:?}");
}

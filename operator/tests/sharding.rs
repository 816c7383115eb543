//! Two shards split the bots by the documented rule (each bot reconciled by its shard's leader
//! only), a bot whose account moves it changes shard, each shard elects its leader on a Lease of
//! its own, and a shard whose leader is killed is taken over by its standby while the other
//! shard keeps enforcing.

mod support;

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::*;
use test_harness::{TestNamespace, eventually};
use tradingbot_crds::TradingBot;
use tradingbot_operator::shard::{Shard, bot_key};

const SHARDS: u32 = 2;
const BOTS_PER_SHARD: usize = 2;
const SHARD_LABEL: &str = "tradingbot.gpttrader.io/shard";

/// The shard the documented rule gives bot `name` of `namespace` (on `account`, if any).
fn shard_of_bot_on(namespace: &str, name: &str, account: Option<&str>) -> u32 {
    let mut spec = json!({"profile": "dev", "symbols": ["BTC-USD"]});
    if let Some(account) = account {
        spec["account"] = json!({"name": account});
    }
    let bot: TradingBot = serde_json::from_value(json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("a TradingBot");
    Shard::of_key(&bot_key(&bot), SHARDS)
}

fn shard_of(namespace: &str, name: &str) -> u32 {
    shard_of_bot_on(namespace, name, None)
}

/// A TradingAccount name that puts bot `name` into `shard`.
fn account_in_shard(namespace: &str, name: &str, shard: u32) -> String {
    (0..)
        .map(|i| format!("acct-{i}"))
        .find(|account| shard_of_bot_on(namespace, name, Some(account)) == shard)
        .expect("some account name hashes to every shard")
}

/// BOTS_PER_SHARD bot names for every shard.
fn names_per_shard(namespace: &str) -> BTreeMap<u32, Vec<String>> {
    let mut per_shard: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for i in 0.. {
        let name = format!("sh-{i}");
        let list = per_shard.entry(shard_of(namespace, &name)).or_default();
        if list.len() < BOTS_PER_SHARD {
            list.push(name);
        }
        if per_shard.len() == SHARDS as usize && per_shard.values().all(|l| l.len() == BOTS_PER_SHARD) {
            break;
        }
    }
    per_shard
}

/// The one pod of `shard` whose metrics say it leads (panics on two).
async fn leader_of_shard(ns: &TestNamespace, shard: u32) -> Option<String> {
    let mut leaders = Vec::new();
    for pod in ns.pods(&format!(
        "app.kubernetes.io/name=tradingbot-operator,{SHARD_LABEL}={shard}"
    )) {
        let ip = pod_field(ns, &pod, "{.status.podIP}");
        if let Some(text) = http_get(&format!("http://{ip}:8080/metrics")).await
            && metric(&text, "tradingbot_operator_leader") == Some(1.0)
        {
            leaders.push(pod);
        }
    }
    assert!(leaders.len() <= 1, "two leaders in shard {shard}: {leaders:?}");
    leaders.pop()
}

/// The bots an operator pod reports in its per-bot rollout gauge.
async fn bots_reported_by(ns: &TestNamespace, pod: &str) -> BTreeSet<String> {
    let ip = pod_field(ns, pod, "{.status.podIP}");
    let text = http_get(&format!("http://{ip}:8080/metrics")).await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("tradingbot_operator_rollout_phase{") && l.ends_with(" 1"))
        .filter_map(|l| l.split("tradingbot=\"").nth(1)?.split('"').next().map(str::to_string))
        .collect()
}

/// The operator pods that published Events about the TradingBot `bot` (its pod has the same
/// name: the scheduler's and kubelet's Events about it are left out by kind).
fn reporters_of(ns: &TestNamespace, bot: &str) -> BTreeSet<String> {
    let jsonpath = format!(
        "jsonpath={{range .items[?(@.regarding.name==\"{bot}\")]}}{{.regarding.kind}} {{.reportingInstance}}{{\"\\n\"}}{{end}}"
    );
    // Empty when the list fails: callers poll until the reporter they wait for is in it.
    ns.kubectl_result(&["get", "events.v1.events.k8s.io", "-o", &jsonpath])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("TradingBot "))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Wait (up to 30 s) until `who` is among the operator pods that published Events about `bot`;
/// all of them then. Events follow the status write of their reconcile, so they are waited for.
async fn reporters_including(ns: &TestNamespace, bot: &str, who: &str) -> BTreeSet<String> {
    eventually(
        Duration::from_secs(30),
        &format!("an Event about {bot} from {who}"),
        || {
            let seen = reporters_of(ns, bot);
            async move { seen.contains(who).then_some(seen) }
        },
    )
    .await
}

fn lease_holder(ns: &TestNamespace, shard: u32) -> String {
    let lease = format!("lease/tradingbot-operator-leader-shard-{shard}");
    ns.kubectl_result(&["get", &lease, "-o", "jsonpath={.spec.holderIdentity}"])
        .unwrap_or_default()
}

async fn reduce_only(ns: &TestNamespace, bot: &str) {
    ns.kubectl(&[
        "patch",
        "tb",
        bot,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"reduceOnly":true}}"#,
    ]);
    wait_for_field(ns, bot, "{.status.mode}", "ReduceOnly", Duration::from_secs(90)).await;
}

#[tokio::test]
async fn two_shards_split_the_bots_and_a_killed_shard_leader_hands_over() {
    let ns = namespace_with_operator("op-shards", json!({"shards": SHARDS, "replicaCount": 2})).await;
    let per_shard = names_per_shard(&ns.name);
    for name in per_shard.values().flatten() {
        ns.apply(&bot(name, json!({}))).unwrap();
    }
    for name in per_shard.values().flatten() {
        wait_running(&ns, name).await;
    }
    let mut leaders = BTreeMap::new();
    for shard in 0..SHARDS {
        let what = format!("a leader of shard {shard}");
        let leader = eventually(Duration::from_secs(60), &what, || leader_of_shard(&ns, shard)).await;
        assert!(
            lease_holder(&ns, shard).starts_with(&leader),
            "shard {shard}'s Lease is held by its leader {leader}"
        );
        leaders.insert(shard, leader);
    }

    // Each leader reconciled exactly its shard's bots, and only it acted on them.
    for (shard, names) in &per_shard {
        let leader = &leaders[shard];
        let reported = bots_reported_by(&ns, leader).await;
        let expected: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(reported, expected, "shard {shard} ({leader}) reports exactly its bots");
        for name in names {
            assert_eq!(
                reporters_including(&ns, name, leader).await,
                BTreeSet::from([leader.clone()]),
                "only shard {shard}'s leader acted on {name}"
            );
        }
    }

    // A bot whose new account puts it into shard 1: shard 0 lets it go (its series go from
    // shard 0's metrics) and shard 1 takes it (and halts it: the account does not exist).
    let mover = per_shard[&0][1].clone();
    let account = account_in_shard(&ns.name, &mover, 1);
    ns.kubectl(&[
        "patch",
        "tb",
        &mover,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"account":{{"name":"{account}"}}}}}}"#),
    ]);
    wait_for_field(&ns, &mover, "{.status.mode}", "Halted", Duration::from_secs(90)).await;
    eventually(Duration::from_secs(60), "shard 0 letting the moved bot go", || async {
        (!bots_reported_by(&ns, &leaders[&0]).await.contains(&mover)).then_some(())
    })
    .await;
    assert!(
        bots_reported_by(&ns, &leaders[&1]).await.contains(&mover),
        "shard 1 reconciles {mover} now"
    );
    // Shard 1's leader acted on it.
    reporters_including(&ns, &mover, &leaders[&1]).await;

    // Shard 1's leader dies without handing over; shard 0 keeps enforcing meanwhile.
    let killed = leaders[&1].clone();
    ns.kubectl(&["delete", "pod", &killed, "--grace-period=0", "--force"]);
    reduce_only(&ns, &per_shard[&0][0]).await;
    assert_eq!(
        reporters_including(&ns, &per_shard[&0][0], &leaders[&0]).await,
        BTreeSet::from([leaders[&0].clone()]),
        "shard 0 was untouched by shard 1's outage"
    );
    let successor = eventually(Duration::from_secs(90), "a new leader of shard 1", || {
        let ns = &ns;
        let killed = killed.clone();
        async move { leader_of_shard(ns, 1).await.filter(|l| *l != killed) }
    })
    .await;
    let shard_one_bot = &per_shard[&1][0];
    reduce_only(&ns, shard_one_bot).await;
    // Shard 1's standby took it over.
    assert!(
        reporters_including(&ns, shard_one_bot, &successor)
            .await
            .is_subset(&BTreeSet::from([killed.clone(), successor.clone()])),
        "only shard 1's operators ever acted on {shard_one_bot}"
    );
    assert!(
        lease_holder(&ns, 1).starts_with(&successor),
        "shard 1's Lease moved to {successor}"
    );
    assert_eq!(
        leader_of_shard(&ns, 0).await.as_deref(),
        Some(leaders[&0].as_str()),
        "shard 0's leader never changed"
    );
}

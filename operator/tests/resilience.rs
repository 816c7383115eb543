//! The operator survives its own failures: SIGKILL in the middle of creating bots converges
//! with nothing duplicated, and with two replicas only the leader reconciles and a new leader
//! takes over when the old one goes.

mod support;

use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use support::*;
use test_harness::eventually;

#[tokio::test]
async fn sigkill_mid_reconcile_converges_without_duplicates() {
    let ns = namespace_with_operator("op-sigkill", json!({})).await;
    let since = test_harness::audit_now();
    let bots: Vec<String> = (0..8).map(|i| format!("burst-{i}")).collect();
    for name in &bots {
        ns.apply(&bot(name, json!({"symbols": ["ETH-USD"]}))).unwrap();
    }
    // Kill the operator once it is at work on the burst (its first bot pod exists) and before
    // every bot converged; a kill after the last bot went Running would prove nothing.
    eventually(Duration::from_secs(60), "the operator's first bot pod", || {
        let pods = ns.pods("trading.gpttrader.io/bot");
        async move { (!pods.is_empty()).then_some(()) }
    })
    .await;
    let operator = ns.pods("app.kubernetes.io/name=tradingbot-operator")[0].clone();
    let killed = kill_counted(&ns, &operator);
    let after_kill = test_harness::audit_now();
    // Nothing writes a TradingBot's status while its operator is down; a second lets a write the
    // killed process had sent settle before the phases are read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let phases = ns.kubectl(&[
        "get",
        "tb",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.status.phase}{\"\\n\"}{end}",
    ]);
    let unconverged: BTreeSet<String> = phases
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(_, phase)| *phase != "Running")
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(
        !unconverged.is_empty(),
        "the kill landed before every bot converged: {phases:?}"
    );
    killed.restarted(&ns).await;
    // When the new process started (the kubelet's time, to the second): writes received since then
    // and since the kill are the restarted process's.
    let started = pod_field(&ns, &operator, "{.status.containerStatuses[0].state.running.startedAt}");
    let started = started.replace('Z', ".000000Z");
    let restarted_at = after_kill.clone().max(started);
    for name in &bots {
        wait_running(&ns, name).await;
    }
    // The restarted process carried on: each bot the kill left unconverged got its status
    // written by it.
    let carried_on: BTreeSet<String> = test_harness::audited_writes(&operator_user(&ns), &restarted_at)
        .into_iter()
        .filter(|w| w.resource == "tradingbots" && w.subresource == "status" && w.code < 300)
        .map(|w| w.name)
        .collect();
    assert!(
        unconverged.is_subset(&carried_on),
        "status written after the kill for {carried_on:?}, left unconverged {unconverged:?}"
    );
    let restarts = pod_field(&ns, &operator, "{.status.containerStatuses[0].restartCount}");
    assert_eq!(
        restarts,
        (killed.restarts_before + 1).to_string(),
        "the operator container was killed once and restarted once"
    );
    let creates: Vec<_> = test_harness::audited_writes(&operator_user(&ns), &since)
        .into_iter()
        .filter(|w| w.verb == "create" && w.resource == "pods" && w.code < 300)
        .collect();
    assert_eq!(
        creates.len(),
        bots.len(),
        "exactly one pod created per bot: {creates:?}"
    );
    for name in &bots {
        let pods = ns.pods(&format!("trading.gpttrader.io/bot={name}"));
        assert_eq!(pods, vec![name.clone()], "one pod for {name}");
        let tb = ns.tradingbot(name);
        assert_eq!(tb["status"]["mode"], "Normal");
        assert_eq!(
            tb["metadata"]["finalizers"][0],
            "trading.gpttrader.io/halt-before-delete"
        );
    }
}

async fn leader_of(ns: &test_harness::TestNamespace) -> Option<String> {
    let mut leaders = Vec::new();
    for pod in ns.pods("app.kubernetes.io/name=tradingbot-operator") {
        let ip = pod_field(ns, &pod, "{.status.podIP}");
        if let Some(text) = http_get(&format!("http://{ip}:8080/metrics")).await
            && metric(&text, "tradingbot_operator_leader") == Some(1.0)
        {
            leaders.push(pod);
        }
    }
    assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
    leaders.pop()
}

#[tokio::test]
async fn two_replicas_one_leader_and_hand_over() {
    let ns = namespace_with_operator("op-leader", json!({"replicaCount": 2})).await;
    let first = eventually(Duration::from_secs(60), "a leader", || leader_of(&ns)).await;
    ns.apply(&bot("led", json!({}))).unwrap();
    wait_running(&ns, "led").await;
    // Empty when the list fails: every use below polls until the reporter it waits for is in it.
    let reporters = || {
        let json = ns
            .kubectl_result(&[
                "get",
                "events.v1.events.k8s.io",
                "-o",
                "jsonpath={range .items[?(@.regarding.kind==\"TradingBot\")]}{.reportingInstance}{\"\\n\"}{end}",
            ])
            .unwrap_or_default();
        json.lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect::<std::collections::BTreeSet<_>>()
    };
    // Events follow the status write they belong to: wait for the first one.
    let acted = eventually(Duration::from_secs(30), "an Event about led", || {
        let seen = reporters();
        async move { (!seen.is_empty()).then_some(seen) }
    })
    .await;
    assert_eq!(
        acted.into_iter().collect::<Vec<_>>(),
        vec![first.clone()],
        "only the leader acted"
    );

    // Graceful stop of the leader: it releases the Lease and the standby takes over at once.
    ns.kubectl(&["delete", "pod", &first, "--wait=false"]);
    let second = eventually(Duration::from_secs(60), "a new leader", || {
        let first = first.clone();
        let ns = &ns;
        async move { leader_of(ns).await.filter(|l| *l != first) }
    })
    .await;
    ns.kubectl(&[
        "patch",
        "tb",
        "led",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"reduceOnly":true}}"#,
    ]);
    wait_for_field(&ns, "led", "{.status.mode}", "ReduceOnly", Duration::from_secs(60)).await;
    eventually(
        Duration::from_secs(30),
        "an Event about led from the new leader",
        || {
            let acted = reporters().contains(&second);
            async move { acted.then_some(()) }
        },
    )
    .await;
}

//! The operator under restarts and upgrades on the real cluster: killed at random points
//! through trip -> acknowledgement -> rollout it loses nothing; an operator-side change rolls
//! bot restarts across the fleet one at a time; a restarted operator is ready in seconds.

mod support;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::sim::PodExchange;
use support::*;
use test_harness::{TestNamespace, eventually};
use tradingbot_crds::TradingBot;

const OPERATOR: &str = "app.kubernetes.io/name=tradingbot-operator";

/// The statuses a watch of one TradingBot delivered, and how many watch errors it met.
struct StatusRecord {
    seen: Arc<Mutex<Vec<Value>>>,
    gaps: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusRecord {
    /// Stop recording; the statuses seen and the watch errors met. A recorder that ended early
    /// (a panic) fails the test here instead of being lost in the aborted task.
    async fn finish(self) -> (Vec<Value>, usize) {
        if self.task.is_finished() {
            self.task.await.expect("the status recorder");
        } else {
            self.task.abort();
        }
        let seen = self.seen.lock().unwrap().clone();
        (seen, self.gaps.load(Ordering::Relaxed))
    }
}

/// Every status the TradingBot had, as the watch delivered them. A watch error is counted and
/// the watch goes on: the watcher lists the TradingBot again, so only statuses that came and
/// went inside such a gap are not seen.
fn record_statuses(client: kube::Client, ns: &str, bot: &str) -> StatusRecord {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let gaps = Arc::new(AtomicUsize::new(0));
    let api: kube::Api<TradingBot> = kube::Api::namespaced(client, ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={bot}"));
    let task = {
        let (seen, gaps) = (seen.clone(), gaps.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(tb) | watcher::Event::InitApply(tb)) => {
                        let status = serde_json::to_value(tb.status.unwrap_or_default()).unwrap_or_default();
                        seen.lock().unwrap().push(status);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        gaps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    StatusRecord { seen, gaps, task }
}

/// Force-delete the operator pod every few (random) seconds until `stop`; returns the count.
fn kill_operator_repeatedly(ns: &TestNamespace, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let (cluster, namespace) = (ns.cluster().clone(), ns.name.clone());
    tokio::spawn(async move {
        let mut kills = 0;
        while !stop.load(Ordering::Relaxed) {
            let wait = 3 + rand::random::<u64>() % 7;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let pods = cluster
                .kubectl_result(&["-n", &namespace, "get", "pods", "-l", OPERATOR, "-o", "name"])
                .unwrap_or_default();
            if let Some(pod) = pods.split_whitespace().next() {
                let deleted = cluster.kubectl_result(&["-n", &namespace, "delete", pod, "--force", "--grace-period=0"]);
                kills += usize::from(deleted.is_ok());
            }
        }
        kills
    })
}

/// Nothing latched, acknowledged or rolled out was ever lost between two consecutive statuses.
fn assert_nothing_lost(statuses: &[Value], released_by_ack: &BTreeSet<String>) {
    let mut acks: Vec<String> = Vec::new();
    let mut versions: Vec<String> = Vec::new();
    for pair in statuses.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        for gone in trip_ids(before).difference(&trip_ids(after)) {
            let acked = after["lastAck"]["result"] == "Accepted"
                && after["lastAck"]["value"].as_str().unwrap_or_default().split('@').next() == Some(gone.as_str());
            assert!(
                acked || released_by_ack.contains(gone),
                "trip {gone} vanished without an acknowledgement:\n{before}\n->\n{after}"
            );
        }
        if let Some(value) = after["lastAck"]["value"].as_str()
            && acks.last().map(String::as_str) != Some(value)
        {
            assert!(
                !acks.contains(&value.to_string()),
                "acknowledgement {value} came back: {acks:?}"
            );
            acks.push(value.to_string());
        }
        if !before["currentVersion"].is_null() {
            assert!(
                !after["currentVersion"].is_null(),
                "currentVersion was dropped:\n{after}"
            );
        }
        if let Some(version) = after["currentVersion"].as_str()
            && versions.last().map(String::as_str) != Some(version)
        {
            versions.push(version.to_string());
        }
    }
    assert_eq!(
        versions,
        ["perps-bot:dev", "perps-bot:v2"],
        "no version skipped or undone"
    );
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_at_random_points_loses_no_trip_ack_or_version() {
    let exchange = PodExchange::start().await;
    let ns = namespace_with_operator("durable", exchange.operator_values()).await;
    let key = exchange.key(&[("USD", Decimal::from(10_000))], false);
    exchange.secret(&ns, "coinbase-demo", &key);
    let spec = json!({
        "profile": "demo", "symbols": ["BTC-USD"], "dryRun": true, "image": "perps-bot:dev",
        "exchange": {"credentialsSecret": "coinbase-demo"},
        "rollout": {"strategy": "Canary", "promotion": "Auto", "canary": {"minHealthyCycles": 3, "minDurationSeconds": 10}},
        "guards": {"marketDataStalenessSeconds": {"reduceOnlyAt": 4, "haltAt": 8}},
        "metrics": {"scrapeIntervalSeconds": 1, "unreachableAfterSeconds": 30},
        "env": [{"name": "PERPS_BOT_INTERVAL", "value": "0.5"}, {"name": "PERPS_BOT_DISABLE_GUARDS", "value": "true"}],
    });
    ns.apply(&bot("durable", spec)).unwrap();
    wait_running(&ns, "durable").await;
    let recorder = record_statuses(ns.cluster().client().await, &ns.name, "durable");
    let stop = Arc::new(AtomicBool::new(false));
    let killer = kill_operator_repeatedly(&ns, stop.clone());

    exchange.freeze(true);
    wait_for_field(&ns, "durable", "{.status.mode}", "Halted", Duration::from_secs(180)).await;
    let latched = trip_ids(&ns.tradingbot("durable")["status"]);
    exchange.freeze(false);
    acknowledge_all(&ns, "durable").await;
    ns.kubectl(&[
        "patch",
        "tb",
        "durable",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(
        &ns,
        "durable",
        "{.status.rollout.phase}",
        "Promoted",
        Duration::from_secs(400),
    )
    .await;
    wait_for_field(
        &ns,
        "durable",
        "{.status.currentVersion}",
        "perps-bot:v2",
        Duration::from_secs(60),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let kills = killer.await.unwrap();
    let (statuses, gaps) = recorder.finish().await;

    assert!(kills >= 3, "the operator was killed only {kills} times");
    assert!(!latched.is_empty(), "a trip was latched");
    let acknowledged = |events: &[(String, String, String)]| -> BTreeSet<String> {
        events
            .iter()
            .filter(|(_, reason, _)| reason == "TripAcknowledged")
            .filter_map(|(_, _, note)| note.split_whitespace().nth(1).map(str::to_string))
            .collect()
    };
    let events = ns
        .wait_for_events(
            "durable",
            &format!("TripAcknowledged for each of {latched:?}"),
            |events| latched.is_subset(&acknowledged(events)),
        )
        .await;
    let released = acknowledged(&events);
    assert!(statuses.len() > 10, "the recorder saw {} statuses", statuses.len());
    assert_nothing_lost(&statuses, &released);
    let started = events.iter().filter(|(_, r, _)| r == "RolloutStarted").count();
    assert_eq!(started, 1, "the rollout was resumed, never restarted: {events:?}");
    eprintln!(
        "{kills} operator kills, {} statuses recorded, {gaps} watch errors (the watch listed again)",
        statuses.len()
    );
}

/// Tracks, per bot instance, whether a pod of it is Ready (and not stopping).
#[derive(Default)]
struct Availability {
    pods: BTreeMap<String, (String, bool)>,
    uids_seen: BTreeMap<String, BTreeSet<String>>,
}

impl Availability {
    fn update(&mut self, pod: &Pod, gone: bool) {
        let Some(bot) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("trading.gpttrader.io/bot"))
            .cloned()
        else {
            return;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ready = !gone
            && pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        self.uids_seen.entry(bot.clone()).or_default().insert(uid.clone());
        match self.pods.get(&bot) {
            Some((current, _)) if *current != uid && !ready => {}
            _ => {
                self.pods.insert(bot, (uid, ready));
            }
        }
    }

    fn unavailable(&self, bots: usize) -> usize {
        bots - self.pods.values().filter(|(_, ready)| *ready).count()
    }
}

#[tokio::test]
async fn an_operator_side_change_restarts_the_fleet_one_bot_at_a_time() {
    let ns = namespace_with_operator("fleet", json!({})).await;
    let bots = ["fa", "fb", "fc"];
    for name in bots {
        ns.apply(&bot(name, json!({}))).unwrap();
    }
    for name in bots {
        wait_running(&ns, name).await;
    }
    let before: BTreeMap<&str, String> = bots
        .iter()
        .map(|b| (*b, pod_field(&ns, b, "{.metadata.uid}")))
        .collect();
    let api: kube::Api<Pod> = kube::Api::namespaced(ns.cluster().client().await, &ns.name);
    let config = watcher::Config::default().labels("app.kubernetes.io/name=perps-bot");
    let worst = Arc::new(AtomicUsize::new(0));
    let availability = Arc::new(Mutex::new(Availability::default()));
    let watching = |a: &Arc<Mutex<Availability>>| a.lock().unwrap().pods.len() == 3;
    let watch = {
        let (worst, availability) = (worst.clone(), availability.clone());
        tokio::spawn(async move {
            let mut events = watcher(api, config).boxed();
            let mut listed = false;
            while let Some(event) = events.next().await {
                let mut a = availability.lock().unwrap();
                match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => a.update(&pod, false),
                    Ok(watcher::Event::Delete(pod)) => a.update(&pod, true),
                    Ok(watcher::Event::InitDone) => listed = true,
                    Ok(watcher::Event::Init) => {}
                    Err(error) => panic!("the pod watch failed: {error}"),
                }
                // Counted once the initial list is complete (every bot's pod is known).
                if listed {
                    worst.fetch_max(a.unavailable(bots.len()), Ordering::Relaxed);
                }
            }
        })
    };
    eventually(Duration::from_secs(30), "the pod watch listing every bot", || {
        let ok = watching(&availability) && worst.load(Ordering::Relaxed) == 0;
        async move { ok.then_some(()) }
    })
    .await;
    // An operator-side change: a chart value every bot pod carries (the default exchange URL).
    ns.deploy_operator(json!({"exchange": {"defaultApiBaseUrl": "http://127.0.0.1:1/api/v3/brokerage"}}));
    eventually(Duration::from_secs(400), "every bot restarted once and Ready", || {
        let done = bots.iter().all(|b| {
            let uid = pod_field(&ns, b, "{.metadata.uid}");
            let ready = pod_field(&ns, b, "{.status.conditions[?(@.type==\"Ready\")].status}");
            !uid.is_empty() && uid != before[b] && ready == "True"
        });
        async move { done.then_some(()) }
    })
    .await;
    assert!(!watch.is_finished(), "the pod watch ended early");
    watch.abort();
    let seen = availability.lock().unwrap().uids_seen.clone();
    for name in bots {
        assert!(seen[name].len() >= 2, "{name}: the watch saw both pods: {seen:?}");
    }
    let worst = worst.load(Ordering::Relaxed);
    assert_eq!(
        worst, 1,
        "at most one bot at a time was down (and one was: the watch saw it)"
    );
    let mut deferred = 0;
    for bot in bots {
        let events = ns
            .wait_for_event(bot, "a restart rolled across the fleet", |(_, _, note)| {
                note.contains("rolled across the fleet")
            })
            .await;
        deferred += events
            .iter()
            .filter(|(_, _, note)| note.contains("rolled across the fleet"))
            .count();
    }
    assert_eq!(deferred, bots.len(), "each restart was an operator-side one");
}

#[tokio::test]
async fn a_restarted_operator_is_ready_within_seconds() {
    let ns = namespace_with_operator("ready", json!({})).await;
    for name in ["ra", "rb"] {
        ns.apply(&bot(name, json!({}))).unwrap();
    }
    wait_running(&ns, "ra").await;
    wait_running(&ns, "rb").await;
    let old = ns.pods(OPERATOR);
    ns.kubectl(&["delete", "pod", &old[0], "--wait=false"]);
    let pod = eventually(Duration::from_secs(120), "a new operator pod Ready", || {
        let pods = ns.pods(OPERATOR);
        let fresh = pods.into_iter().find(|p| !old.contains(p));
        let ready = fresh
            .as_ref()
            .map(|p| pod_field(&ns, p, "{.status.conditions[?(@.type==\"Ready\")].status}"));
        async move { (ready.as_deref() == Some("True")).then_some(fresh).flatten() }
    })
    .await;
    // Both instants come from the kubelet's clock.
    let started = pod_field(&ns, &pod, "{.status.containerStatuses[0].state.running.startedAt}");
    let ready = pod_field(
        &ns,
        &pod,
        "{.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
    );
    let seconds = |t: &str| t.parse::<k8s_openapi::jiff::Timestamp>().expect("RFC 3339").as_second();
    let took = seconds(&ready) - seconds(&started);
    assert!(
        took <= 15,
        "the operator took {took} s from start to Ready (bound 15 s)"
    );
    let log = ns.kubectl(&["logs", &pod]);
    assert!(!log.contains("caches still syncing"), "a cache was late:\n{log}");
    // The gate learns at once that the caches are filled: with the lost wake-up of a store's
    // readiness it learned it only at its next timer (120 s, then the 5 s late-cache log).
    let synced_ms = log
        .lines()
        .find(|l| l.contains("\"caches synced\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|l| l["elapsed_ms"].as_u64())
        .unwrap_or_else(|| panic!("no caches synced line in:\n{log}"));
    assert!(
        synced_ms < 4000,
        "caches synced {synced_ms} ms after the controller started (bound 4 s)"
    );
    eprintln!("operator Ready {took} s after its container started, caches synced in {synced_ms} ms");
}

//! Rollout actions with `kubectl tradingbot` on a real cluster (annotations: Git's spec.image
//! never changes after the first commit): pause and unpause a canary, abort it, retry the
//! aborted version, promote it, undo the promotion, retry the rolled back version and promote it
//! at once with `promote --full` (skipping gates it would never pass). `history` lists every
//! revision with who asked. Four prod processes traded, never two at once.

mod common;

use common::support::{bot, wait_for_field, wait_running};
use common::*;
use serde_json::json;
use std::time::Duration;

const ROLLOUT: Duration = Duration::from_secs(300);

fn phase(ns: &test_harness::TestNamespace) -> String {
    ns.tradingbot("roll")["status"]["rollout"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl or the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rollout_action_from_the_plugin() {
    let (exchange, ns, _mover) = exchange_and_namespace("pl-actions", Scrapes::Quiet).await;
    let rollout = json!({"rollout": {
        "strategy": "Canary", "promotion": "Manual",
        "canary": {"minHealthyCycles": 3, "minDurationSeconds": 5, "maxErrors": 0},
    }});
    ns.apply(&bot("roll", spec(rollout))).unwrap();
    wait_running(&ns, "roll").await;
    wait_for_prod_traders(&exchange, &ns, "roll", 1).await;

    ns.kubectl(&[
        "patch",
        "tb",
        "roll",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"image":"perps-bot:v2"}}"#,
    ]);
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "CanaryRunning", ROLLOUT).await;
    let out = ok(&ns, &["pause", "roll", "--reason", "watching the canary"]);
    assert!(out.contains("pause accepted"), "{out}");
    assert_eq!(ns.tradingbot("roll")["status"]["rollout"]["pause"]["reason"], "Manual");
    assert!(ok(&ns, &["get"]).contains("paused"));
    assert!(fails(&ns, &["pause", "roll"], 4).contains("already paused"));
    ok(&ns, &["unpause", "roll"]);
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "AwaitingPromotion", ROLLOUT).await;

    let out = ok(&ns, &["abort", "roll", "--reason", "not today"]);
    assert!(out.contains("rollout Aborted"), "{out}");
    assert!(ns.tradingbot("roll")["status"]["canaryVersion"].is_null());
    ok(&ns, &["retry", "roll", "--reason", "today after all"]);
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "AwaitingPromotion", ROLLOUT).await;
    ok(&ns, &["promote", "roll", "--reason", "canary looks good"]);
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "Promoted", ROLLOUT).await;
    wait_for_field(&ns, "roll", "{.status.currentVersion}", "perps-bot:v2", ROLLOUT).await;
    wait_for_prod_traders(&exchange, &ns, "roll", 2).await;

    let out = ok(&ns, &["undo", "roll", "--reason", "v2 misbehaves"]);
    assert!(out.contains("prod goes back to perps-bot:dev"), "{out}");
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "RolledBack", ROLLOUT).await;
    wait_for_field(&ns, "roll", "{.status.currentVersion}", "perps-bot:dev", ROLLOUT).await;
    wait_for_prod_traders(&exchange, &ns, "roll", 3).await;
    assert!(fails(&ns, &["promote", "roll", "--full"], 4).contains("refused"));

    // A canary that would never pass its gates, promoted at once by a human.
    ns.kubectl(&[
        "patch",
        "tb",
        "roll",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"rollout":{"canary":{"minHealthyCycles":100000}}}}"#,
    ]);
    ok(&ns, &["retry", "roll"]);
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "CanaryRunning", ROLLOUT).await;
    let out = ok(&ns, &["promote", "roll", "--full", "--reason", "hotfix"]);
    assert!(out.contains("skipping its remaining gates"), "{out}");
    wait_for_field(&ns, "roll", "{.status.rollout.phase}", "Promoted", ROLLOUT).await;
    assert_eq!(phase(&ns), "Promoted");
    wait_for_prod_traders(&exchange, &ns, "roll", 4).await;

    let history = ok(&ns, &["history", "roll"]);
    let revisions: Vec<(String, String)> = ns.tradingbot("roll")["status"]["rolloutHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        revisions,
        [
            ("perps-bot:v2".to_string(), "Aborted".to_string()),
            ("perps-bot:v2".into(), "Promoted".into()),
            ("perps-bot:dev".into(), "Promoted".into()),
            ("perps-bot:v2".into(), "Promoted".into()),
        ],
        "{history}"
    );
    assert!(
        history.contains("undo to perps-bot:dev by alice@ops: v2 misbehaves"),
        "{history}"
    );
    let trail = audit(&ns.tradingbot("roll")["status"]);
    for why in [
        "watching the canary",
        "not today",
        "today after all",
        "canary looks good",
        "hotfix",
    ] {
        assert!(
            trail.iter().any(|(_, who, w)| who == USER && w.contains(why)),
            "no entry by {USER} for {why:?}: {trail:?}"
        );
    }
    assert_prod_never_overlapped(&exchange, &ns, "roll", 4);
}

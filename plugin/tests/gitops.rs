//! An emergency brake survives GitOps self-heal. The bot's Git manifest (with labels and an
//! annotation of its own, as Git manifests have) is applied as Argo CD applies it (client-side
//! apply), the bot is halted with `kubectl tradingbot halt`, then the Git manifest is applied
//! again, changed, with client-side apply and with server-side apply under Argo CD's and Flux's
//! field managers: each apply takes effect (its change is visible) and the bot stays halted (the
//! annotation, status.mode, the bot's own metric, and no order placed) until a deliberate resume.

mod common;

use common::support;
use common::support::{wait_for_reconciliations, wait_running};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use test_harness::{TestNamespace, eventually};

/// The Git manifest, revision `revision` (a label that changes with it).
fn manifest(ns: &TestNamespace, revision: u32) -> String {
    json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {
            "name": "synced",
            "namespace": ns.name,
            "labels": {"team": "desk-1", "git-revision": format!("r{revision}")},
            "annotations": {"owner": "desk-1@example.com"},
        },
        "spec": spec(json!({"symbols": ["BTC-USD", "ETH-USD", "SOL-USD"], "rollout": {"strategy": "Direct"}})),
    })
    .to_string()
}

fn write_manifest(ns: &TestNamespace, revision: u32) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}-synced-r{revision}.json", ns.name));
    std::fs::write(&path, manifest(ns, revision)).unwrap();
    path
}

fn annotations(bot: &Value) -> Value {
    bot["metadata"]["annotations"].clone()
}

/// After a sync: the sync took effect, the brake is still there and still obeyed, for a while.
async fn still_halted_after(exchange: &support::sim::PodExchange, ns: &TestNamespace, revision: u32, halted_at: u64) {
    let label = format!("r{revision}");
    let bot = ns.tradingbot("synced");
    assert_eq!(
        bot["metadata"]["labels"]["git-revision"],
        label.as_str(),
        "the sync was applied"
    );
    assert_eq!(annotations(&bot)["owner"], "desk-1@example.com");
    assert_eq!(
        annotations(&bot)["trading.gpttrader.io/brake"],
        "Halted",
        "the sync kept the brake: {}",
        annotations(&bot)
    );
    // Ten more reconciles (each scrape triggers one): the operator and the bot keep it.
    wait_for_reconciliations(ns, 10.0, Duration::from_secs(120)).await;
    let status = ns.tradingbot("synced")["status"].clone();
    assert_eq!(status["mode"], "Halted");
    assert_eq!(status["modeSources"], json!(["Brake"]));
    assert_eq!(
        bot_mode(ns, "synced").await,
        Some(2.0),
        "the bot itself is still halted"
    );
    assert_eq!(
        last_prod_order(exchange, ns, "synced"),
        halted_at,
        "no order placed while halted"
    );
}

// Multi-threaded: the simulator serves the bots from this process while a step blocks on kubectl or the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brake_survives_client_and_server_side_apply_of_the_git_manifest() {
    let (exchange, ns, _mover) = exchange_and_namespace("pl-gitops", Scrapes::EveryReconciles).await;
    let git = write_manifest(&ns, 1);
    let git_path = git.to_str().unwrap();
    // What Argo CD does by default (and Flux before server-side apply): client-side apply.
    ns.cluster().kubectl(&["apply", "-f", git_path]);
    wait_running(&ns, "synced").await;
    wait_for_prod_traders(&exchange, &ns, "synced", 1).await;

    ok(&ns, &["halt", "synced", "--reason", "incident 12: runaway orders"]);
    wait_bot_mode(&ns, "synced", 2.0).await;
    let halted_at = last_prod_order(&exchange, &ns, "synced");
    assert!(
        halted_at > 0,
        "the bot traded before the brake: the no-order check below means something"
    );

    // Self-heal with client-side apply (kubectl apply: a three-way merge with last-applied).
    let r2 = write_manifest(&ns, 2);
    ns.cluster().kubectl(&["apply", "-f", r2.to_str().unwrap()]);
    still_halted_after(&exchange, &ns, 2, halted_at).await;

    // Argo CD with ServerSideApply=true, then Flux's kustomize-controller: server-side apply
    // taking ownership of everything the manifest carries (--force-conflicts, as they do).
    let mut written = vec![git.clone(), r2];
    for (revision, manager) in [(3, "argocd-controller"), (4, "kustomize-controller")] {
        let path = write_manifest(&ns, revision);
        written.push(path.clone());
        let manager_flag = format!("--field-manager={manager}");
        ns.cluster().kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            &manager_flag,
            "-f",
            path.to_str().unwrap(),
        ]);
        still_halted_after(&exchange, &ns, revision, halted_at).await;
    }
    // The spec fields Git owns are Git's, the brake the plugin's (managedFields).
    let bot = ns.tradingbot("synced");
    let managers: Vec<(String, String)> = bot["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap_or_default().to_string(),
                m["fieldsV1"].to_string(),
            )
        })
        .collect();
    assert!(
        managers
            .iter()
            .any(|(m, f)| m == "kubectl-tradingbot" && f.contains("trading.gpttrader.io/brake")),
        "{managers:?}"
    );
    assert!(
        !managers
            .iter()
            .any(|(m, f)| m == "kustomize-controller" && f.contains("trading.gpttrader.io/brake"))
    );

    // Only a deliberate resume releases it.
    ok(&ns, &["resume", "synced", "--reason", "incident 12 closed"]);
    wait_bot_mode(&ns, "synced", 0.0).await;
    eventually(Duration::from_secs(180), "the bot trading again", || {
        let traded = last_prod_order(&exchange, &ns, "synced") > halted_at;
        async move { traded.then_some(()) }
    })
    .await;
    for path in written {
        let _ = std::fs::remove_file(path);
    }
}

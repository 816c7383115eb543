//! `make demo` as a user runs it (tests/demo/demo.sh), then the commands it prints and the
//! README shows, then `make demo-down` (tests/demo/demo-down.sh, keeping the cluster for the
//! other suites). Its own test binary: the demo installs and removes the CRD.

use std::process::Command;
use std::time::Duration;
use test_harness::{eventually, root};

fn run(script: &str, envs: &[(&str, &str)]) -> String {
    let output = Command::new(root().join(script))
        .envs(envs.iter().copied())
        .current_dir(root())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{script} failed:\n{text}");
    text
}

fn sh(sim: &str, command: &str) -> Result<String, String> {
    let cluster = test_harness::cluster();
    let bin = cluster.kubectl_path.parent().unwrap().display().to_string();
    let output = Command::new("bash")
        .args(["-o", "pipefail", "-c", command])
        .current_dir(root())
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("PATH", format!("{bin}:{}", std::env::var("PATH").unwrap_or_default()))
        .env("SIM", sim)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("`{command}`: {}", String::from_utf8_lossy(&output.stderr)))
    }
}

#[tokio::test]
async fn the_demo_and_the_commands_it_suggests() {
    let _ = test_harness::cluster();
    let transcript = run("tests/demo/demo.sh", &[("DEMO_WATCH_SECONDS", "0")]);
    for step in ["[1/7]", "[4/7]", "[6/7]", "[7/7] Try next", "make demo-down"] {
        assert!(transcript.contains(step), "the demo prints {step}:\n{transcript}");
    }
    let sim = transcript
        .lines()
        .find_map(|l| l.strip_prefix("simulator: http://"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the demo prints the simulator's address")
        .to_string();
    let table = || sh(&sim, "kubectl -n tradingbot-demo get tb -o wide").unwrap_or_default();
    eventually(Duration::from_secs(180), "both demo bots Running", || {
        let t = table();
        async move { (t.matches("Running").count() == 2).then_some(()) }
    })
    .await;

    sh(
        &sim,
        r#"kubectl -n tradingbot-demo patch tb dev-bot --type merge -p '{"spec":{"reduceOnly":true}}'"#,
    )
    .unwrap();
    eventually(Duration::from_secs(30), "dev-bot ReduceOnly", || {
        let t = table();
        async move {
            t.lines()
                .any(|l| l.starts_with("dev-bot") && l.contains("ReduceOnly"))
                .then_some(())
        }
    })
    .await;
    let shock = sh(&sim, r#"curl -s -X POST http://$SIM/admin/faults -H 'content-type: application/json' -d '{"price_shock":{"product_id":"BTC-USD","percent":-10}}'"#).unwrap();
    assert!(shock.contains("frozen_products"), "{shock}");

    sh(
        &sim,
        r#"kubectl -n tradingbot-demo patch tb btc-canary --type merge -p '{"spec":{"image":"perps-bot:v2"}}'"#,
    )
    .unwrap();
    let phase = r#"kubectl -n tradingbot-demo get tb btc-canary -o jsonpath='{.status.rollout.phase}{"\n"}'"#;
    eventually(Duration::from_secs(240), "the canary awaiting promotion", || {
        let p = sh(&sim, phase).unwrap_or_default();
        async move { (p.trim() == "AwaitingPromotion").then_some(()) }
    })
    .await;
    sh(&sim, r#"kubectl -n tradingbot-demo patch tb btc-canary --type merge -p '{"spec":{"rollout":{"approvedVersion":"perps-bot:v2"}}}'"#).unwrap();
    eventually(Duration::from_secs(240), "the promotion", || {
        let p = sh(&sim, phase).unwrap_or_default();
        async move { (p.trim() == "Promoted").then_some(()) }
    })
    .await;

    let down = run("tests/demo/demo-down.sh", &[("KEEP_CLUSTER", "1")]);
    assert!(down.contains("demo-down: done"), "{down}");
    assert!(
        sh(&sim, "kubectl get namespace tradingbot-demo").is_err()
            || sh(&sim, "kubectl get namespace tradingbot-demo")
                .unwrap()
                .contains("Terminating")
    );
}

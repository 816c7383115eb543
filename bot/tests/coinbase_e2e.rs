//! The built `perps-bot` binary against the exchange simulator: the canary's credential-less
//! dry run on simulated live market data, the missing-credentials exit code, and the account
//! snapshot command (Coinbase and paper).

use exchange_sim::{KeyAlgorithm, Permissions, SimConfig, Simulator, generate_key};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_perps-bot");

async fn start_sim() -> Simulator {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Simulator::start(SimConfig {
        tick: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts")
}

/// Run the binary with only the given environment (nothing inherited: no stray credentials).
async fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command.args(args).env_clear().current_dir(cwd).kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("perps-bot finishes within 3 minutes")
        .expect("perps-bot runs")
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn the_canary_dry_runs_three_cycles_on_simulated_quotes_without_credentials() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.json");
    let metrics_arg = metrics.display().to_string();
    let output = run(
        &[
            "--profile",
            "canary",
            "--dry-run",
            "--cycles",
            "3",
            "--interval",
            "0.5",
            "--dev-fast",
            "--metrics-file",
            &metrics_arg,
            "--log-format",
            "json",
        ],
        &[
            ("COINBASE_API_BASE", &sim.api_url()),
            ("COINBASE_WS_URL", &sim.ws_url()),
        ],
        dir.path(),
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));

    let snapshot: Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!(snapshot["cycles"], 3, "{snapshot:#}");
    assert_eq!(snapshot["profile"], "canary");
    assert_eq!(snapshot["dry_run"], true);
    let decision = &snapshot["decisions"]["BTC-USD"];
    assert!(decision.is_object(), "{snapshot:#}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        !reason.contains("no market data") && !reason.contains("account state unavailable"),
        "{reason}"
    );
    assert_eq!(snapshot["equity"], "100000", "the synthetic account: {snapshot:#}");
    let health: Value = serde_json::from_slice(&std::fs::read(dir.path().join("health.json")).unwrap()).unwrap();
    assert_eq!(health["ok"], true, "every cycle had its quotes: {health:#}");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("synthetic_account"), "the synthetic account is logged");
    assert!(!stderr.contains("order_placed"));
    let stats = sim.stats();
    assert!(
        stats.requests.keys().any(|r| r.contains("/market/products")),
        "product rules came from the public endpoints: {:?}",
        stats.requests.keys()
    );
    assert!(stats.ws_connections_total >= 1, "live quotes over the WebSocket");
    assert!(stats.jwt_rejections.is_empty());
    assert!(sim.order_log().is_empty(), "a dry run sends no orders");
    sim.shutdown().await;
}

#[tokio::test]
async fn trading_without_credentials_exits_3_naming_them() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.json").display().to_string();
    let env = [("COINBASE_API_BASE", sim.api_url()), ("COINBASE_WS_URL", sim.ws_url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let output = run(
        &["--profile", "canary", "--dev-fast", "--metrics-file", &metrics],
        &env,
        dir.path(),
    )
    .await;
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("credentials"),
        "{}",
        describe(&output)
    );

    let output = run(&["--profile", "prod", "account", "snapshot"], &env, dir.path()).await;
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("credentials"));

    // A key the exchange does not know: rejected, exit 3, the key never printed.
    let stranger = generate_key(KeyAlgorithm::Es256);
    let mut with_key = env.clone();
    with_key.push(("COINBASE_CDP_API_KEY", &stranger.name));
    with_key.push(("COINBASE_CDP_PRIVATE_KEY", &stranger.private_key_pem));
    let output = run(&["--profile", "prod", "--account-snapshot"], &with_key, dir.path()).await;
    assert_eq!(output.status.code(), Some(3), "{}", describe(&output));
    let text = describe(&output);
    assert!(text.contains("credentials") && text.contains(&stranger.name), "{text}");
    assert!(
        !text.contains(stranger.private_key_pem.lines().nth(1).unwrap()),
        "the key leaked: {text}"
    );
    assert!(sim.order_log().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn the_account_snapshot_command_for_coinbase_and_paper() {
    let sim = start_sim().await;
    let key = generate_key(KeyAlgorithm::EdDsa);
    sim.register_key(key.key_spec().with_permissions(Permissions {
        can_view: true,
        can_trade: true,
        can_transfer: true,
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("cdp_api_key.json"), key.cdp_key_json()).unwrap();
    let secret_arg = secret.display().to_string();
    let api = sim.api_url();
    let output = run(
        &[
            "--profile",
            "prod",
            "account",
            "snapshot",
            "--credentials-dir",
            &secret_arg,
        ],
        &[("COINBASE_API_BASE", &api)],
        dir.path(),
    )
    .await;
    assert!(output.status.success(), "{}", describe(&output));
    let snapshot: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(snapshot["broker"], "coinbase");
    assert_eq!(snapshot["key"]["name"], key.name.as_str());
    assert_eq!(snapshot["key"]["algorithm"], "EdDSA");
    assert_eq!(snapshot["key_permissions"]["can_transfer"], true);
    assert!(
        snapshot["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("can_transfer")),
        "{snapshot:#}"
    );
    for field in [
        "fee_tier",
        "balances",
        "portfolios",
        "server_time",
        "clock_skew_ms",
        "local_time",
        "timestamp",
    ] {
        assert!(!snapshot[field].is_null(), "{field}: {snapshot:#}");
    }
    assert!(!describe(&output).contains(&key.private_key_pem[..24]));

    let output = run(&["--profile", "dev", "--account-snapshot"], &[], dir.path()).await;
    assert!(output.status.success(), "{}", describe(&output));
    let paper: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(paper["broker"], "paper");
    assert_eq!(paper["cash"], "100000");
    sim.shutdown().await;
}

//! The `perps-bot` binary as users run it: the offline smoke test, configuration errors and
//! exit codes, `--help`, `/metrics` over HTTP, live mode changes from the control file and the
//! HTTP endpoint, and SIGTERM behaviour against the exchange simulator.

use exchange_sim::{KeyAlgorithm, SimConfig, Simulator, generate_key};
use perps_bot::broker::Broker;
use perps_bot::coinbase::credentials::Credentials;
use perps_bot::coinbase::{ConnectOptions, connect};
use perps_bot::config::{BotConfig, ConfigOverrides};
use perps_bot::domain::{OrderKind, OrderRequest, OrderStatus, Side, TimeInForce};
use rust_decimal::Decimal;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use test_harness::HostProcess;
use tradingbot_crds::Profile;

const BIN: &str = env!("CARGO_BIN_EXE_perps-bot");

fn run(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .output()
        .expect("perps-bot runs")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(url: &str) -> Option<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split(['{', ' ']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn dev_fast_runs_one_offline_cycle_and_writes_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&["--profile", "dev", "--dev-fast"], dir.path());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("var/data/perps_bot/dev/metrics.json")).unwrap())
            .unwrap();
    for field in [
        "timestamp",
        "profile",
        "equity",
        "positions",
        "decisions",
        "order_stats",
        "open_orders",
        "uptime_seconds",
        "system",
    ] {
        assert!(metrics.get(field).is_some(), "metrics.json lacks {field}: {metrics}");
    }
    assert_eq!(metrics["cycles"], 1);
    assert_eq!(
        metrics["decisions"].as_object().unwrap().len(),
        10,
        "one decision per dev symbol"
    );
    assert_eq!(metrics["order_stats"]["attempted"], 0);
    let health: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("var/data/perps_bot/dev/health.json")).unwrap())
            .unwrap();
    assert_eq!(health["ok"], true);
    assert!(health.get("error").is_some() && health.get("message").is_some());

    let file = dir.path().join("custom.json");
    let output = run(
        &[
            "--profile",
            "dev",
            "--dev-fast",
            "--cycles",
            "3",
            "--interval",
            "0.05",
            "--metrics-file",
            file.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(output.status.success());
    let metrics: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(metrics["cycles"], 3);
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (
            vec!["--profile", "canary", "--leverage", "3", "--dev-fast"],
            &["leverage", "canary"],
        ),
        (
            vec!["--profile", "canary", "--tif", "gtc", "--dev-fast"],
            &["tif", "canary"],
        ),
        (
            vec!["--profile", "dev", "--symbols", "btc", "--dev-fast"],
            &["--symbols", "BTC-USD"],
        ),
        (vec!["--profile", "dev", "--interval", "0", "--dev-fast"], &["interval"]),
    ];
    for (args, words) in cases {
        let output = run(&args, dir.path());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let line = stderr.lines().last().unwrap_or_default();
        for word in words {
            assert!(line.contains(word), "{args:?}: {line}");
        }
    }
    std::fs::write(dir.path().join("bad.yaml"), "profile: dev\nintervall_seconds: 3\n").unwrap();
    let output = run(&["--config", "bad.yaml", "--dev-fast"], dir.path());
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("intervall_seconds"));
    let output = run(&["--profile", "yolo"], dir.path());
    assert_eq!(output.status.code(), Some(2), "clap refuses unknown profiles");
}

/// A bot id names a bot run by hand: beside a TradingBot's identity it is refused at start,
/// before anything trades.
#[test]
fn a_bot_id_beside_a_tradingbot_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["--profile", "dev", "--dev-fast", "--metrics-addr", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_clear()
        .envs([
            ("TRADINGBOT_NAME", "btc"),
            ("TRADINGBOT_NAMESPACE", "trading"),
            ("PERPS_BOT_ID", "mine"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("TradingBot btc") && stderr.contains("remove PERPS_BOT_ID"),
        "{stderr}"
    );
    assert!(!dir.path().join("var").exists(), "nothing ran: no files written");
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--profile",
        "--config",
        "--dev-fast",
        "--cycles",
        "--dry-run",
        "--reduce-only",
        "--symbols",
        "--interval",
        "--leverage",
        "--tif",
        "--enable-preview",
        "--metrics-file",
        "--metrics-addr",
        "--account-snapshot",
        "--broker",
        "--control-file",
        "--control-token-file",
        "--keep-orders-on-exit",
        "--disable-guards",
        "--account-interval",
        "--bot-id",
    ] {
        assert!(help.contains(flag), "--help does not document {flag}");
    }
    assert!(help.contains("9102"), "the default metrics address is documented");
    for command in ["orders", "account", "backtest", "flatten", "exporter"] {
        assert!(help.contains(command), "--help does not list `{command}`");
    }
}

#[tokio::test]
async fn metrics_over_http_include_every_documented_name() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut bot = HostProcess::start(
        "bot-metrics",
        Path::new(BIN),
        &[
            "--profile",
            "dev",
            "--interval",
            "0.2",
            "--metrics-addr",
            &addr,
            "--metrics-file",
            dir.path().join("m.json").to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    let url = format!("http://{addr}/metrics");
    wait_for("two cycles", Duration::from_secs(30), async || {
        get(&url)
            .await
            .and_then(|t| metric(&t, "perps_bot_cycles_total"))
            .is_some_and(|c| c >= 2.0)
    })
    .await;
    let text = get(&url).await.unwrap();
    for def in tradingbot_crds::bot_metrics::ALL {
        assert!(text.contains(def.name), "{} is not exported", def.name);
    }
    let playbook =
        std::fs::read_to_string(test_harness::root().join("docs/MONITORING_PLAYBOOK.md")).unwrap_or_default();
    for def in tradingbot_crds::bot_metrics::ALL {
        assert!(
            playbook.contains(def.name),
            "{} is not documented in docs/MONITORING_PLAYBOOK.md",
            def.name
        );
    }
    assert_eq!(get(&format!("http://{addr}/healthz")).await.as_deref(), Some("ok\n"));
    assert_eq!(get(&format!("http://{addr}/readyz")).await.as_deref(), Some("ready\n"));
    let json: Value = serde_json::from_str(&get(&format!("http://{addr}/metrics.json")).await.unwrap()).unwrap();
    assert_eq!(json["profile"], "dev");
    bot.signal(libc::SIGTERM);
    assert!(bot.wait_timeout(Duration::from_secs(20)).is_some_and(|s| s.success()));
}

#[tokio::test]
async fn mode_changes_apply_while_running_from_the_file_and_the_authenticated_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.yaml");
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef-secret\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut bot = HostProcess::start(
        "bot-control",
        Path::new(BIN),
        &[
            "--profile",
            "dev",
            "--interval",
            "1",
            "--metrics-addr",
            &addr,
            "--control-file",
            control.to_str().unwrap(),
            "--control-token-file",
            token.to_str().unwrap(),
            "--metrics-file",
            dir.path().join("m.json").to_str().unwrap(),
        ],
        &[],
    )
    .unwrap();
    let metrics = format!("http://{addr}/metrics");
    let mode = async || get(&metrics).await.and_then(|t| metric(&t, "perps_bot_trading_mode"));
    wait_for("the mode known", Duration::from_secs(30), async || {
        get(&metrics).await.and_then(|t| metric(&t, "perps_bot_mode_known")) == Some(1.0)
    })
    .await;
    assert_eq!(mode().await, Some(0.0));

    // The file: applied within one cycle (1 s), no restart.
    std::fs::write(&control, "mode: ReduceOnly\nreason: venue degraded\n").unwrap();
    let changed = Instant::now();
    wait_for("ReduceOnly from the file", Duration::from_secs(5), async || {
        mode().await == Some(1.0)
    })
    .await;
    assert!(
        changed.elapsed() < Duration::from_millis(1500),
        "applied within one cycle: {:?}",
        changed.elapsed()
    );

    // The endpoint refuses callers without the token and obeys those with it.
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/control/mode");
    let refused = client
        .post(&url)
        .json(&serde_json::json!({"mode": "Halted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let accepted = client
        .post(&url)
        .bearer_auth("0123456789abcdef-secret")
        .json(&serde_json::json!({"mode": "Halted", "reason": "on-call"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    wait_for("Halted from HTTP", Duration::from_secs(5), async || {
        mode().await == Some(2.0)
    })
    .await;
    // Clearing one source leaves the stricter other in force.
    client
        .post(&url)
        .bearer_auth("0123456789abcdef-secret")
        .json(&serde_json::json!({"mode": "Normal"}))
        .send()
        .await
        .unwrap();
    wait_for("back to ReduceOnly", Duration::from_secs(5), async || {
        mode().await == Some(1.0)
    })
    .await;
    std::fs::write(&control, "mode: Normal\n").unwrap();
    wait_for("Normal", Duration::from_secs(5), async || mode().await == Some(0.0)).await;
    // An unreadable control file halts (fail safe).
    std::fs::write(&control, "mode: [").unwrap();
    wait_for("Halted on a broken file", Duration::from_secs(5), async || {
        mode().await == Some(2.0)
    })
    .await;
    assert!(
        bot.log().contains("\"event\":\"mode_changed\""),
        "every mode change is one log event"
    );
    bot.signal(libc::SIGTERM);
    bot.wait_timeout(Duration::from_secs(20));
}

// Multi-threaded: the simulator keeps serving on one worker while the test waits on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_orders_cancels_open_ones_flushes_metrics_and_exits_0() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig {
        tick: Duration::from_millis(200),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let key = generate_key(KeyAlgorithm::Es256);
    sim.register_key(key.key_spec()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("cdp_api_key.json"), key.cdp_key_json()).unwrap();

    // A resting order of this bot (its client order ids start with "pb.local.").
    let flags = ConfigOverrides {
        dry_run: Some(false),
        symbols: Some(vec!["BTC-USD".parse().unwrap()]),
        ..Default::default()
    };
    let config = BotConfig::resolve(Some(Profile::Demo), &Default::default(), &flags).unwrap();
    let options = ConnectOptions::new(sim.api_url(), None, "test")
        .with_credentials(Credentials::from_json(&key.cdp_key_json(), "test").unwrap());
    let client = connect(options, &config).await.unwrap().1;
    let price = (sim.mid_price("BTC-USD").unwrap() / Decimal::TWO).round_dp(2);
    let resting = client
        .place_order(&OrderRequest {
            client_order_id: "pb.local.earlier-1".into(),
            symbol: "BTC-USD".parse().unwrap(),
            side: Side::Buy,
            quantity: Decimal::new(1, 3),
            kind: OrderKind::Limit { limit_price: price },
            tif: TimeInForce::Gtc,
            reduce_only: false,
            leverage: None,
            preview_id: None,
        })
        .await
        .unwrap();
    let foreign = client
        .place_order(&OrderRequest {
            client_order_id: "manual-human-1".into(),
            symbol: "BTC-USD".parse().unwrap(),
            side: Side::Buy,
            quantity: Decimal::new(1, 3),
            kind: OrderKind::Limit { limit_price: price },
            tif: TimeInForce::Gtc,
            reduce_only: false,
            leverage: None,
            preview_id: None,
        })
        .await
        .unwrap();

    let addr = format!("127.0.0.1:{}", free_port());
    let metrics_file = dir.path().join("metrics.json");
    let mut bot = HostProcess::start(
        "bot-sigterm",
        Path::new(BIN),
        &[
            "--profile",
            "demo",
            "--symbols",
            "BTC-USD",
            "--interval",
            "0.5",
            "--dry-run=false",
            "--metrics-addr",
            &addr,
            "--metrics-file",
            metrics_file.to_str().unwrap(),
        ],
        &[
            ("COINBASE_API_BASE", sim.api_url().as_str()),
            ("COINBASE_WS_URL", sim.ws_url().as_str()),
            ("COINBASE_CREDENTIALS_DIR", credentials.to_str().unwrap()),
        ],
    )
    .unwrap();
    let url = format!("http://{addr}/metrics");
    wait_for("two cycles", Duration::from_secs(60), async || {
        get(&url)
            .await
            .and_then(|t| metric(&t, "perps_bot_cycles_total"))
            .is_some_and(|c| c >= 2.0)
    })
    .await;
    bot.signal(libc::SIGTERM);
    let status =
        tokio::task::block_in_place(|| bot.wait_timeout(Duration::from_secs(30))).expect("the bot exits after SIGTERM");
    assert!(status.success(), "exit code {status:?}\n{}", bot.log());
    assert_eq!(
        client.get_order(&resting.order_id).await.unwrap().status,
        OrderStatus::Cancelled,
        "its open order was cancelled"
    );
    assert_eq!(
        client.get_order(&foreign.order_id).await.unwrap().status,
        OrderStatus::Open,
        "a human's order is left alone"
    );
    let flushed: Value = serde_json::from_str(&std::fs::read_to_string(&metrics_file).unwrap()).unwrap();
    assert_eq!(flushed["trading_mode"], "Halted");
    assert!(bot.log().contains("open orders cancelled on shutdown"));
}

//! Fail closed, leak nothing: a guard state that cannot be persisted restricts the bot (and
//! fails /readyz) until it can be written again; `--dev-fast` fails on a metrics or health file
//! it cannot write, naming the path; a trace-level run against the simulator (signed REST
//! requests and WebSocket subscriptions in flight) prints no JWT and no key text.

mod support;

use rust_decimal_macros::dec;
use std::path::Path;
use std::time::Duration;
use support::{BotProcess, Exchange, describe, run, wait_until};

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn get(url: &str) -> Option<(u16, String)> {
    let response = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "2", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&response.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

/// A path under a regular file: no one (root included) can create it.
fn unwritable(dir: &Path, name: &str) -> std::path::PathBuf {
    let blocker = dir.join("not-a-directory");
    std::fs::write(&blocker, "a file where a folder should be").unwrap();
    blocker.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_state_that_cannot_be_persisted_restricts_the_bot_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let state = unwritable(dir.path(), "guard-state.json");
    let addr = free_addr();
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "dev",
            "--interval",
            "0.2",
            "--metrics-addr",
            &addr,
            "--metrics-file",
            dir.path().join("metrics.json").to_str().unwrap(),
            "--state-file",
            state.to_str().unwrap(),
        ],
        &[],
        dir.path(),
        &dir.path().join("bot.log"),
    );
    let metrics = format!("http://{addr}/metrics");
    let value = |name: &str| get(&metrics).and_then(|(_, t)| test_harness::metric(&t, name));
    wait_until("ReduceOnly from the state", Duration::from_secs(60), || {
        value("perps_bot_trading_mode") == Some(1.0)
    })
    .await;
    assert!(value("perps_bot_state_write_errors_total").is_some_and(|n| n >= 1.0));
    let (code, body) = get(&format!("http://{addr}/readyz")).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("cannot persist the guard state") && body.contains(&state.display().to_string()),
        "the reason names the path: {body}"
    );
    let (_, control) = get(&format!("http://{addr}/control")).unwrap();
    assert!(control.contains("\"source\":\"state\""), "{control}");

    // The folder becomes writable: the state is persisted and the restriction lifts.
    std::fs::remove_file(dir.path().join("not-a-directory")).unwrap();
    std::fs::create_dir(dir.path().join("not-a-directory")).unwrap();
    wait_until("Normal again", Duration::from_secs(60), || {
        value("perps_bot_trading_mode") == Some(0.0)
    })
    .await;
    assert!(state.exists());
    wait_until("ready", Duration::from_secs(30), || {
        get(&format!("http://{addr}/readyz")).is_some_and(|(code, _)| code == 200)
    })
    .await;
    let log = bot.log();
    assert!(log.contains("\"event\":\"file_write_failed\"") && log.contains("\"event\":\"file_write_recovered\""));
    tokio::task::block_in_place(|| bot.stop());
}

#[test]
fn an_unreadable_guard_state_at_start_restricts_the_bot_for_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("guard-state.json");
    std::fs::write(&state, "{\"trips\": [ truncated").unwrap();
    let metrics = dir.path().join("metrics.json");
    let output = run(
        &[
            "--profile",
            "dev",
            "--dev-fast",
            "--cycles",
            "2",
            "--interval",
            "0.1",
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--state-file",
            state.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    assert!(output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let restricted = stderr
        .lines()
        .find(|l| l.contains("\"event\":\"mode_changed\"") && l.contains("\"to\":\"ReduceOnly\""))
        .unwrap_or_else(|| panic!("no change to ReduceOnly: {stderr}"));
    assert!(
        restricted.contains("is unreadable") && restricted.contains("guard-state.json"),
        "{restricted}"
    );
    assert!(stderr.contains("\"event\":\"guard_state_unreadable\""), "{stderr}");
}

#[test]
fn dev_fast_exits_non_zero_with_one_line_naming_a_file_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = unwritable(dir.path(), "metrics.json");
    let output = run(
        &[
            "--profile",
            "dev",
            "--dev-fast",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("perps-bot: cannot write --metrics-file") && last.contains(&metrics.display().to_string()),
        "{last}"
    );
    // The same for the health file (next to the metrics file): a health.json that is a folder.
    let fine = dir.path().join("ok");
    std::fs::create_dir_all(fine.join("health.json")).unwrap();
    let output = run(
        &[
            "--profile",
            "dev",
            "--dev-fast",
            "--metrics-file",
            fine.join("metrics.json").to_str().unwrap(),
        ],
        &[],
        dir.path(),
    );
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.lines().last().unwrap_or_default().contains("health.json"),
        "{stderr}"
    );
    // And a good path still passes.
    let output = run(&["--profile", "dev", "--dev-fast"], &[], dir.path());
    assert!(output.status.success(), "{}", describe(&output));
}

/// `RUST_LOG=trace` while the bot signs REST requests and subscribes to the WebSocket with a
/// JWT: the libraries that would print frames and headers are capped, so the output holds no
/// token (`eyJ…`, base64 of `{"`), no `Bearer` header and no line of the private key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_level_run_shows_no_jwt_or_key_text() {
    let exchange = Exchange::start(Duration::from_millis(200), &[("USD", dec!(10000))]).await;
    let mut env = exchange.env();
    env.push(("RUST_LOG".into(), "trace".into()));
    let output = tokio::task::block_in_place(|| {
        run(
            &[
                "--profile",
                "demo",
                "--symbols",
                "BTC-USD",
                "--dry-run=false",
                "--dev-fast",
                "--cycles",
                "6",
                "--interval",
                "0.3",
                "--metrics-file",
                exchange.path("metrics.json").to_str().unwrap(),
            ],
            &env,
            exchange.dir.path(),
        )
    });
    let text = describe(&output);
    assert!(output.status.success(), "{text}");
    let stats = exchange.sim.stats();
    assert!(
        stats.ws_connections_total >= 1,
        "the WebSocket was used (subscribe frames carry a JWT)"
    );
    assert!(
        stats.requests.keys().any(|r| r.contains("/accounts")),
        "signed private requests were sent: {:?}",
        stats.requests.keys()
    );
    assert!(stats.jwt_rejections.is_empty());
    assert!(
        text.contains("\"level\":\"DEBUG\"") && text.contains("subscribing") && text.contains("Coinbase request"),
        "trace logging was on while requests were signed and subscriptions sent: {text}"
    );
    for line in text
        .lines()
        .filter(|l| l.contains("\"level\":\"DEBUG\"") || l.contains("\"level\":\"TRACE\""))
    {
        assert!(
            line.contains("\"target\":\"perps_bot"),
            "a library logged below INFO: {line}"
        );
    }
    assert!(!text.contains("eyJ"), "a JWT was logged:\n{text}");
    assert!(
        !text.to_ascii_lowercase().contains("bearer "),
        "an Authorization header was logged"
    );
    for line in exchange.key.private_key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(line), "key text was logged");
    }
}

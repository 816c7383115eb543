//! The reference bot's commands and flags, verbatim, as scripts pass them: `--tif` in any case,
//! `run` with the run flags, `--account-interval`, the `--order-*` aliases of the order tools,
//! `orders edit-preview` / `orders apply-edit` (and the legacy `--edit-order-preview` /
//! `--apply-order-edit`) against the simulator's edit-order API, treasury flags refused with
//! the reason, and the stand-alone exporter serving a running bot's metrics file.

mod support;

use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::Value;
use std::time::Duration;
use support::{BotProcess, Exchange, describe, run, wait_until};

fn offline(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    run(args, &[], dir.path())
}

#[test]
fn reference_flags_work_or_answer_with_a_clear_error() {
    for args in [
        &["--profile", "dev", "--tif", "IOC", "--dev-fast"][..],
        &["--profile", "dev", "--tif", "fok", "--dev-fast"],
        &["--profile", "dev", "--tif", "GTC", "--dev-fast"],
        &["run", "--profile", "dev", "--dev-fast"],
        &["run", "--profile", "dev", "--dev-fast", "--account-interval", "60"],
        &["--profile", "dev", "--dev-fast", "--account-interval", "300"],
    ] {
        let output = offline(args);
        assert!(output.status.success(), "{args:?}: {}", describe(&output));
    }
    // Previews with the reference's --preview-order and --order-* flags.
    let output = offline(&[
        "--preview-order",
        "--order-symbol",
        "BTC-USD",
        "--order-side",
        "BUY",
        "--order-type",
        "limit",
        "--order-quantity",
        "0.01",
        "--order-price",
        "49000",
        "--order-tif",
        "IOC",
        "--profile",
        "dev",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let preview: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(preview["order"]["tif"], "IOC");
    assert_eq!(preview["order"]["kind"]["limit_price"], "49000");
    assert!(preview["preview"]["order_total"].is_string());
    // What perps-bot does not do is refused with one line saying why (exit 2).
    for args in [
        &["--convert", "USD:USDC:100"][..],
        &["--move-funds", "a:b:1"],
        &["treasury", "convert", "USD:USDC:100"],
    ] {
        let output = offline(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr
                .lines()
                .last()
                .unwrap_or_default()
                .contains("treasury operations"),
            "{stderr}"
        );
    }
    let output = offline(&["--profile", "dev", "--tif", "DAY", "--dev-fast"]);
    assert_eq!(output.status.code(), Some(2), "an unknown time in force is refused");
}

/// The bot rests a limit buy (its own, through `orders place`), previews an edit, applies it
/// by `ORDER_ID:PREVIEW_ID` with the reference's flag, and the exchange shows the new terms.
/// An order that is not the bot's is not edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_of_a_resting_order_through_the_exchanges_edit_api() {
    let exchange = Exchange::start(Duration::from_millis(500), &[("USD", dec!(10000))]).await;
    let env = exchange.env();
    let common = ["--profile", "spot", "--symbols", "BTC-USD", "--dry-run=false"];
    let low = (exchange.sim.mid_price("BTC-USD").unwrap() * dec!(0.8)).round_dp(2);
    let cli = |extra: &[&str]| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(common);
        tokio::task::block_in_place(|| run(&args, &env, exchange.dir.path()))
    };
    let low_text = low.to_string();
    let output = cli(&[
        "orders",
        "place",
        "--symbol",
        "BTC-USD",
        "--side",
        "buy",
        "--type",
        "limit",
        "--price",
        &low_text,
        "--quantity",
        "0.0005",
        "--order-tif",
        "gtc",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let placed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let order_id = placed["order"]["order_id"].as_str().unwrap().to_string();
    assert!(
        placed["order"]["client_order_id"]
            .as_str()
            .unwrap()
            .starts_with(support::LOCAL)
    );

    let lower = (low - Decimal::ONE).to_string();
    let output = cli(&[
        "orders",
        "edit-preview",
        &order_id,
        "--price",
        &lower,
        "--size",
        "0.001",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let preview: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(preview["preview"]["errors"], serde_json::json!([]), "{preview:#}");
    let preview_id = preview["preview_id"].as_str().unwrap().to_string();
    assert_eq!(preview_id, format!("{lower}@0.001"));

    let edit = format!("{order_id}:{preview_id}");
    let output = cli(&["--apply-order-edit", &edit]);
    assert!(output.status.success(), "{}", describe(&output));
    let edited: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(edited["order"]["quantity"], "0.001", "{edited:#}");
    assert_eq!(edited["order"]["kind"]["limit_price"], lower);
    let log = exchange.sim.order_log();
    assert!(
        log.iter()
            .any(|e| e.source == "edit_order" && e.failure_reason.is_none()),
        "{log:?}"
    );

    // The legacy preview flag, and an order that is not the bot's.
    let output = cli(&["--edit-order-preview", &order_id, "--order-price", &low_text]);
    assert!(output.status.success(), "{}", describe(&output));
    let rest = exchange.rest();
    let foreign = serde_json::json!({
        "client_order_id": "human-1", "product_id": "BTC-USD", "side": "BUY",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": low_text}},
    });
    let answer: Value = serde_json::from_slice(&rest.post("/orders", &foreign, None).await.unwrap()).unwrap();
    let foreign_id = answer["success_response"]["order_id"].as_str().unwrap().to_string();
    let output = cli(&["orders", "apply-edit", &format!("{foreign_id}:{lower}@-")]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not this bot's"));
    assert_eq!(
        exchange
            .sim
            .order_log()
            .iter()
            .filter(|e| e.source == "edit_order")
            .count(),
        1,
        "the foreign order was never sent an edit"
    );
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

async fn scrape(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

/// The runbook's stand-alone exporter against a running bot's metrics file: the file's figures
/// on /metrics, the file itself on /metrics.json, and its age growing once the bot stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_serves_a_running_bots_file_and_shows_a_stalled_writer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.json");
    let file_arg = file.to_str().unwrap().to_string();
    let mut bot = BotProcess::start(
        &[
            "--profile",
            "dev",
            "--interval",
            "0.2",
            "--metrics-file",
            &file_arg,
            "--metrics-addr",
            &free_addr(),
        ],
        &[],
        dir.path(),
        &dir.path().join("bot.log"),
    );
    let addr = free_addr();
    let mut exporter = BotProcess::start(
        &["exporter", "--metrics-file", &file_arg, "--metrics-addr", &addr],
        &[],
        dir.path(),
        &dir.path().join("exporter.log"),
    );
    let url = format!("http://{addr}/metrics");
    let value = async |name: &str| scrape(&url).await.and_then(|t| test_harness::metric(&t, name));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while value("perps_bot_cycles_total").await.unwrap_or(0.0) < 3.0 {
        assert!(std::time::Instant::now() < deadline, "{}", exporter.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(value("perps_bot_metrics_file_readable").await, Some(1.0));
    assert!(value("perps_bot_metrics_file_age_seconds").await.unwrap() < 5.0);
    assert!(value("perps_bot_equity").await.unwrap() > 0.0);
    assert_eq!(value("perps_bot_trading_mode").await, Some(0.0));
    let json: Value = serde_json::from_str(&scrape(&format!("http://{addr}/metrics.json")).await.unwrap()).unwrap();
    assert_eq!(json["profile"], "dev");

    // The writer stops: the file stays, its age grows; the exporter keeps serving.
    tokio::task::block_in_place(|| bot.stop());
    let age = value("perps_bot_metrics_file_age_seconds").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = value("perps_bot_metrics_file_age_seconds").await.unwrap();
    assert!(later >= age + 2.5, "{age} -> {later}");
    // Restarting the exporter touches nothing.
    tokio::task::block_in_place(|| exporter.stop());
    let mut again = BotProcess::start(
        &["exporter", "--metrics-file", &file_arg, "--metrics-addr", &addr],
        &[],
        dir.path(),
        &dir.path().join("exporter-2.log"),
    );
    wait_until("the restarted exporter", Duration::from_secs(30), || {
        std::net::TcpStream::connect(&addr).is_ok()
    })
    .await;
    assert!(value("perps_bot_metrics_file_age_seconds").await.unwrap() >= later);
    let status = tokio::task::block_in_place(|| again.stop());
    assert!(status.success());
}

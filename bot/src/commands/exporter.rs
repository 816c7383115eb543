//! `perps-bot exporter`: the runbook's stand-alone exporter. It serves the figures of a
//! metrics file a bot writes (`--metrics-file`, the reference's metrics.json) on
//! `--metrics-addr` (`:9102` by default): `/metrics` in the Prometheus text format,
//! `/metrics.json` as written, `/healthz`. The file's age is a gauge
//! (`perps_bot_metrics_file_age_seconds`), so a stalled writer is visible; restarting the
//! exporter never touches the bot.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

/// Gauges the exporter adds (documented in docs/MONITORING_PLAYBOOK.md).
pub const FILE_AGE: &str = "perps_bot_metrics_file_age_seconds";
pub const FILE_READABLE: &str = "perps_bot_metrics_file_readable";
pub const FILE_TIMESTAMP: &str = "perps_bot_metrics_file_timestamp_seconds";

/// The metrics.json figures re-exported, with the bot's own metric names: (file field, name, help).
const FIGURES: [(&str, &str, &str); 7] = [
    (
        "equity",
        "perps_bot_equity",
        "Account equity in quote currency, from the metrics file.",
    ),
    (
        "pnl_today",
        "perps_bot_pnl_today",
        "PnL since the UTC day started, from the metrics file.",
    ),
    (
        "drawdown_percent",
        "perps_bot_drawdown_percent",
        "Drop of equity from its peak, from the metrics file.",
    ),
    (
        "open_orders",
        "perps_bot_open_orders",
        "Orders resting on the exchange, from the metrics file.",
    ),
    (
        "uptime_seconds",
        "perps_bot_uptime_seconds",
        "Seconds the bot had run, from the metrics file.",
    ),
    (
        "cycles",
        "perps_bot_cycles_total",
        "Cycles the bot had completed, from the metrics file.",
    ),
    (
        "mode_known",
        "perps_bot_mode_known",
        "1 once the bot knew its mode, from the metrics file.",
    ),
];

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => Decimal::from_str(s).ok().and_then(|d| d.to_f64()),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: f64) {
    if !out.contains(&format!("# TYPE {name} ")) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
    let _ = writeln!(out, "{name}{labels} {value}");
}

/// The Prometheus text for the file at `path` as it is now.
pub fn render(path: &Path) -> String {
    let mut out = String::new();
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let parsed: Option<Value> = std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let readable = parsed.is_some();
    gauge(
        &mut out,
        FILE_READABLE,
        "1 when the metrics file exists and parses.",
        "",
        f64::from(u8::from(readable)),
    );
    if let Some(age) = modified.and_then(|m| SystemTime::now().duration_since(m).ok()) {
        gauge(
            &mut out,
            FILE_AGE,
            "Seconds since the bot last wrote its metrics file (a stalled writer grows this).",
            "",
            age.as_secs_f64(),
        );
    }
    let Some(file) = parsed else { return out };
    if let Some(ms) = file["timestamp"]
        .as_str()
        .and_then(|t| crate::coinbase::wire::parse_time_ms("timestamp", t).ok())
    {
        gauge(
            &mut out,
            FILE_TIMESTAMP,
            "The timestamp the bot wrote into the metrics file (unix seconds).",
            "",
            ms as f64 / 1000.0,
        );
    }
    for (field, name, help) in FIGURES {
        if let Some(value) = number(&file[field]) {
            gauge(&mut out, name, help, "", value);
        }
    }
    if let Some(mode) = file["trading_mode"]
        .as_str()
        .and_then(|m| m.parse::<tradingbot_crds::TradingMode>().ok())
    {
        gauge(
            &mut out,
            "perps_bot_trading_mode",
            "Trading mode (0 Normal, 1 ReduceOnly, 2 Halted), from the metrics file.",
            "",
            mode.gauge_value() as f64,
        );
    }
    for result in ["attempted", "successful", "failed"] {
        if let Some(value) = number(&file["order_stats"][result]) {
            gauge(
                &mut out,
                "perps_bot_file_orders",
                "The bot's order counts (order_stats), from the metrics file.",
                &format!("{{result=\"{result}\"}}"),
                value,
            );
        }
    }
    for position in file["positions"].as_array().into_iter().flatten() {
        if let (Some(symbol), Some(quantity)) = (position["symbol"].as_str(), number(&position["quantity"])) {
            gauge(
                &mut out,
                "perps_bot_file_position_quantity",
                "Position quantity per symbol, from the metrics file.",
                &format!("{{symbol=\"{symbol}\"}}"),
                quantity,
            );
        }
    }
    out
}

async fn metrics(State(path): State<Arc<PathBuf>>) -> Response {
    let text = tokio::task::spawn_blocking(move || render(&path))
        .await
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn metrics_json(State(path): State<Arc<PathBuf>>) -> Response {
    match tokio::fs::read(path.as_path()).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}: {error}\n", path.display()),
        )
            .into_response(),
    }
}

/// Serve until SIGTERM or SIGINT.
pub async fn serve(path: PathBuf, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: cannot listen: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, file = %path.display(), "exporter serving /metrics, /metrics.json and /healthz from the metrics file");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics.json", get(metrics_json))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Arc::new(path));
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("exporter stopping");
    };
    axum::serve(listener, app).with_graceful_shutdown(stop).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metrics_file_becomes_gauges_with_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        let text = render(&path);
        assert!(text.contains("perps_bot_metrics_file_readable 0"), "{text}");
        std::fs::write(
            &path,
            r#"{"timestamp":"2026-01-01T00:00:00.000Z","equity":"1000.5","cycles":7,"trading_mode":"ReduceOnly","order_stats":{"attempted":3,"successful":2,"failed":1},"positions":[{"symbol":"BTC-USD","quantity":"0.1"}]}"#,
        )
        .unwrap();
        let text = render(&path);
        for line in [
            "perps_bot_metrics_file_readable 1",
            "perps_bot_equity 1000.5",
            "perps_bot_cycles_total 7",
            "perps_bot_trading_mode 1",
            "perps_bot_file_orders{result=\"failed\"} 1",
            "perps_bot_file_position_quantity{symbol=\"BTC-USD\"} 0.1",
            "perps_bot_metrics_file_timestamp_seconds 1767225600",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.contains("perps_bot_metrics_file_age_seconds "), "{text}");
    }
}

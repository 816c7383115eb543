//! The bot's HTTP server: `/metrics`, `/metrics.json`, `/healthz`, `/readyz` and the
//! authenticated control endpoint (`POST /control/mode`, `POST /control/ack`,
//! `POST /control/flatten`, `GET /control`).

use super::metrics::BotMetrics;
use super::snapshot::Snapshot;
use crate::control::{AckRequest, ModeHandle, source};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tradingbot_crds::TradingMode;

/// What `/readyz` and `/healthz` look at, updated by the engine.
#[derive(Debug, Clone)]
pub struct Vitals {
    /// The main loop's last sign of life.
    pub heartbeat: Instant,
    pub market_data_fresh: bool,
    /// Whether this instance holds its identity Lease (always true when not managed).
    pub lease_held: bool,
}

pub struct AppState {
    pub metrics: Arc<BotMetrics>,
    pub snapshot: RwLock<Option<Snapshot>>,
    pub vitals: RwLock<Vitals>,
    pub mode: ModeHandle,
    pub acks: mpsc::Sender<AckRequest>,
    pub control_token: Option<String>,
    /// `/healthz` fails when the main loop has shown no sign of life for this long.
    pub liveness_timeout: Duration,
    pub started: Instant,
}

impl AppState {
    pub fn update_vitals(&self, update: impl FnOnce(&mut Vitals)) {
        let mut vitals = self.vitals.write().unwrap_or_else(|p| p.into_inner());
        update(&mut vitals);
    }

    pub fn set_snapshot(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
    }

    fn vitals(&self) -> Vitals {
        self.vitals.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics.json", get(metrics_json))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/control", get(control_view))
        .route("/control/mode", post(control_mode))
        .route("/control/ack", post(control_ack))
        .route("/control/flatten", post(control_flatten))
        .with_state(state)
}

/// Serve until `stop` fires. Binding errors are returned before serving starts.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = router(state);
    let handle = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(%error, "metrics server failed");
        }
    });
    Ok((local, handle))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.uptime.set(state.started.elapsed().as_secs_f64());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

async fn metrics_json(State(state): State<Arc<AppState>>) -> Response {
    match state.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone() {
        Some(snapshot) => Json(snapshot).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no cycle has completed yet\n").into_response(),
    }
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let silent_for = state.vitals().heartbeat.elapsed();
    if silent_for <= state.liveness_timeout {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("main loop silent for {} s\n", silent_for.as_secs()),
        )
            .into_response()
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let vitals = state.vitals();
    let mode = state.mode.current();
    let mut missing = Vec::new();
    if !mode.known {
        missing.push(format!(
            "trading mode not known yet (waiting for {})",
            state.mode.awaiting().join(", ")
        ));
    }
    if !vitals.market_data_fresh {
        missing.push("market data is not fresh".to_string());
    }
    if !vitals.lease_held {
        missing.push("identity Lease not held".to_string());
    }
    // The bot's own state files: a guard state it cannot persist makes it not ready.
    missing.extend(
        state
            .mode
            .inputs()
            .into_iter()
            .filter(|(name, mode, _)| name == source::STATE && *mode != TradingMode::Normal)
            .map(|(_, _, reason)| reason),
    );
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join("; ")),
        )
            .into_response()
    }
}

async fn control_view(State(state): State<Arc<AppState>>) -> Response {
    let current = state.mode.current();
    let inputs: Vec<serde_json::Value> = state
        .mode
        .inputs()
        .into_iter()
        .map(|(source, mode, reason)| serde_json::json!({"source": source, "mode": mode, "reason": reason}))
        .collect();
    Json(serde_json::json!({
        "mode": current.mode,
        "reason": current.reason,
        "known": current.known,
        "awaiting": state.mode.awaiting(),
        "inputs": inputs,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeCommand {
    mode: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckCommand {
    trip_id: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FlattenCommand {
    /// Acted on once; repeating the same id does nothing more (default: a fresh id).
    #[serde(default)]
    request_id: Option<String>,
}

/// Bearer-token check in constant time. No token configured = the endpoint is off.
fn authorise(state: &AppState, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
    let Some(expected) = state.control_token.as_deref() else {
        return Err((
            StatusCode::FORBIDDEN,
            "control endpoint disabled: no control token configured
",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same_length = given.len() == expected.len();
    let difference = given
        .bytes()
        .zip(expected.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if same_length && difference == 0 {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, "Unauthorized\n"))
    }
}

async fn control_mode(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ModeCommand>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refusal) = authorise(&state, &headers) {
        return refusal.into_response();
    }
    let Json(command) = match body {
        Ok(body) => body,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let mode: TradingMode = match command.mode.parse() {
        Ok(mode) => mode,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("mode: {error}\n")).into_response(),
    };
    let reason = command.reason.unwrap_or_else(|| "set over HTTP".into());
    tracing::info!(source = "http", %mode, %reason, "mode command received");
    state.mode.set(source::HTTP, mode, reason);
    control_view(State(state)).await
}

async fn control_ack(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<AckCommand>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(refusal) = authorise(&state, &headers) {
        return refusal.into_response();
    }
    match body {
        Ok(Json(command)) => {
            tracing::info!(source = "http", trip_id = %command.trip_id, "trip acknowledgement received");
            match state.acks.send(AckRequest::Trip(command.trip_id)).await {
                Ok(()) => (StatusCode::ACCEPTED, "acknowledgement queued for the next cycle\n").into_response(),
                Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the bot is shutting down\n").into_response(),
            }
        }
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    }
}

async fn control_flatten(State(state): State<Arc<AppState>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if let Err(refusal) = authorise(&state, &headers) {
        return refusal.into_response();
    }
    let command: FlattenCommand = if body.iter().all(u8::is_ascii_whitespace) {
        FlattenCommand::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(command) => command,
            Err(error) => return (StatusCode::BAD_REQUEST, format!("invalid JSON body: {error}\n")).into_response(),
        }
    };
    let id = command
        .request_id
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("http-{}", uuid::Uuid::new_v4()));
    if id.len() > 200 {
        return (StatusCode::BAD_REQUEST, "request_id: at most 200 characters\n").into_response();
    }
    tracing::info!(source = "http", request_id = %id, "flatten request received");
    match state.acks.send(AckRequest::Flatten(id.clone())).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"request_id": id, "status": "queued for the next cycle"})),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the bot is shutting down\n").into_response(),
    }
}

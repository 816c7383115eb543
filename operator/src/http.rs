//! The operator's HTTP endpoints: `/metrics`, `/healthz` (the process serves) and `/readyz`
//! (caches synced when leading; always ready as a standby replica).

use crate::metrics::OperatorMetrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

pub struct Health {
    pub metrics: Arc<OperatorMetrics>,
    /// One flag per controller (namespace).
    pub synced: Vec<Arc<AtomicBool>>,
    pub leading: Arc<AtomicBool>,
}

pub async fn serve(addr: SocketAddr, health: Arc<Health>, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    Ok(())
}

async fn metrics(State(health): State<Arc<Health>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        health.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let leading = health.leading.load(Ordering::Relaxed);
    if !leading {
        return (StatusCode::OK, "standby\n").into_response();
    }
    if health.synced.iter().all(|s| s.load(Ordering::Relaxed)) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n").into_response()
    }
}

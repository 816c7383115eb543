//! Middleware in front of the REST handlers: authentication, scopes, rate limits, injected
//! failures, latency and statistics.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{self, AuthFailure, Expectation};
use crate::error::{ApiError, add_rate_limit_headers};
use crate::keys::RegisteredKey;
use crate::ratelimit::Decision;
use crate::state::{AppState, lock};

/// The authenticated key of a private request (a request extension).
pub type Authed = RegisteredKey;

/// Verifies the JWT, applies the per-key rate limit and `fail_next` injections.
pub async fn private(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let key = match authenticate(&state, &request) {
        Ok(key) => key,
        Err(failure) => {
            state.stats.jwt_rejected(failure.label());
            tracing::debug!(reason = %failure, path = request.uri().path(), "rejected request JWT");
            return ApiError::Unauthorized.into_response();
        }
    };
    let decision = lock(&state.limiter).check(
        &format!("key:{}", key.name),
        state.config.private_rate_limit,
        Instant::now(),
    );
    if !decision.allowed {
        state.stats.rate_limited();
        return ApiError::RateLimited { decision, html: false }.into_response();
    }
    let injected = lock(&state.faults).take_failure();
    if let Some((status, html)) = injected {
        state.stats.injected_failure();
        return injected_response(status, html, state.config.private_rate_limit);
    }
    request.extensions_mut().insert(key);
    let mut response = next.run(request).await;
    if state.config.private_rate_limit > 0 {
        add_rate_limit_headers(&mut response, &decision);
    }
    response
}

fn injected_response(status: u16, html: bool, limit: u32) -> Response {
    if status == 429 {
        let decision = Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_epoch: u64::try_from(crate::clock::now().timestamp()).unwrap_or_default() + 1,
            retry_after_secs: 1,
        };
        return ApiError::RateLimited { decision, html }.into_response();
    }
    ApiError::Injected { status, html }.into_response()
}

fn authenticate(state: &AppState, request: &Request) -> Result<Authed, AuthFailure> {
    let headers = request.headers();
    let token = auth::bearer_token(headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()))?;
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthFailure::MissingHost)?;
    let uri = format!("{} {}{}", request.method(), host, request.uri().path());
    let expectation = Expectation {
        uri: Some(&uri),
        now_secs: state.now_secs(),
        leeway_secs: state.config.jwt_leeway_secs,
    };
    auth::verify(&state.keys(), token, &expectation)
}

/// Per-IP rate limit of the public endpoints.
pub async fn public(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |ConnectInfo(addr)| addr.ip().to_string());
    let decision = lock(&state.limiter).check(&format!("ip:{ip}"), state.config.public_rate_limit, Instant::now());
    if !decision.allowed {
        state.stats.rate_limited();
        return ApiError::RateLimited { decision, html: false }.into_response();
    }
    let mut response = next.run(request).await;
    if state.config.public_rate_limit > 0 {
        add_rate_limit_headers(&mut response, &decision);
    }
    response
}

/// Requires the `view` scope.
pub async fn require_view(request: Request, next: Next) -> Response {
    let allowed = request
        .extensions()
        .get::<Authed>()
        .is_some_and(|k| k.permissions.can_view);
    if !allowed {
        return ApiError::MissingScopes.into_response();
    }
    next.run(request).await
}

/// Requires the `trade` scope.
pub async fn require_trade(request: Request, next: Next) -> Response {
    let allowed = request
        .extensions()
        .get::<Authed>()
        .is_some_and(|k| k.permissions.can_trade);
    if !allowed {
        return ApiError::MissingScopes.into_response();
    }
    next.run(request).await
}

/// Delays every API response by the injected `latency_ms`.
pub async fn latency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let delay = lock(&state.faults).latency_ms;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    response
}

/// Largest request body read.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Reads every request body in full before routing, whatever the method. Clients (Coinbase's
/// own Python SDK among them) send a JSON body `{}` with GET requests; a handler that ignores
/// it would leave it unread, and the connection would then be closed instead of kept alive,
/// breaking the client's next request on it. Coinbase keeps such connections open.
pub async fn read_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(_) => ApiError::BadRequest(format!("request body larger than {MAX_BODY_BYTES} bytes")).into_response(),
    }
}

/// Counts requests by route template and status.
pub async fn record_stats(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let label = format!("{} {route}", request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    tracing::debug!(request = %label, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    state.stats.request(label, status);
    response
}

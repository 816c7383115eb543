//! HTTP to the Advanced Trade REST API: a fresh JWT per request, client-side pacing,
//! timeouts, and retries.
//!
//! Retried: connection failures, timeouts and 5xx (jittered exponential backoff), and 429
//! (after the `Retry-After` / `x-ratelimit-reset` the exchange names, whatever the body: it
//! may be an HTML page). Not retried: 401 (→ [`BrokerError::Unauthorized`]), 403
//! (→ `Forbidden`), 404 (→ `NotFound`), 400 (→ `Rejected`). Every POST the client sends is
//! idempotent (orders carry their `client_order_id`, so a replay returns the original order),
//! which is what makes retrying a timed-out order safe.

use super::credentials::Credentials;
use super::jwt::JwtSigner;
use super::rate_limit::{PRIVATE_PER_SECOND, PUBLIC_PER_SECOND, RateLimiter};
use super::wire::{self, ErrorBody};
use crate::broker::BrokerError;
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Largest response body read (a product list with every level is far smaller).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Longest wait a 429 may impose before we give up waiting for it.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);

/// How the REST client behaves.
#[derive(Debug, Clone)]
pub struct RestOptions {
    /// e.g. `https://api.coinbase.com/api/v3/brokerage`.
    pub base_url: String,
    /// Sent as `X-Client-Instance` on every request.
    pub client_instance: String,
    pub request_timeout: Duration,
    /// Timeout of one create-order attempt (a timed-out attempt is retried with the same
    /// client order id).
    pub order_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub private_per_second: u32,
    pub public_per_second: u32,
    /// Seconds added to the local clock when signing (clock skew).
    pub clock_offset_secs: i64,
    /// Sign for this host instead of the base URL's.
    pub sign_host_override: Option<String>,
}

impl RestOptions {
    pub fn new(base_url: impl Into<String>, client_instance: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            client_instance: client_instance.into(),
            request_timeout: Duration::from_secs(10),
            order_timeout: Duration::from_secs(10),
            max_attempts: 5,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            private_per_second: PRIVATE_PER_SECOND,
            public_per_second: PUBLIC_PER_SECOND,
            clock_offset_secs: 0,
            sign_host_override: None,
        }
    }
}

/// Which limit and authentication a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `/market/*` and `/time`: no JWT, the per-IP limit.
    Public,
    /// Everything else: a JWT, the per-key limit.
    Private,
}

/// Counters for tests and logs.
#[derive(Debug, Default)]
pub struct RestStats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub timeouts: AtomicU64,
}

/// A snapshot of [`RestStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestCounts {
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub timeouts: u64,
}

/// Send times remembered for [`RestClient::busiest_second`].
const SENT_MEMORY: usize = 512;

pub struct RestClient {
    http: reqwest::Client,
    /// When the most recent requests left (newest last).
    sent: std::sync::Mutex<std::collections::VecDeque<Instant>>,
    base: Url,
    /// `host[:port]` of the base URL, as signed in the `uri` claim.
    host: String,
    signer: Option<JwtSigner>,
    private: RateLimiter,
    public: RateLimiter,
    options: RestOptions,
    stats: RestStats,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("base", &self.base.as_str())
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// What one attempt came to.
enum Attempt {
    Done(Vec<u8>),
    Fail(BrokerError),
    Retry { error: BrokerError, wait: Option<Duration> },
}

impl RestClient {
    pub fn new(options: RestOptions, credentials: Option<Arc<Credentials>>) -> Result<Self, BrokerError> {
        // Idempotent; main installs it too. Without a provider rustls cannot build a client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let trimmed = options.base_url.trim().trim_end_matches('/');
        let base = Url::parse(trimmed)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| BrokerError::Protocol(format!("API base URL {trimmed:?} is not an http(s) URL")))?;
        let host = match (base.host_str(), base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => String::new(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
        let instance = HeaderValue::from_str(&options.client_instance)
            .map_err(|_| BrokerError::Protocol("the client instance is not a valid header value".into()))?;
        headers.insert("X-Client-Instance", instance);
        let http = reqwest::Client::builder()
            .user_agent(concat!("perps-bot/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(Duration::from_secs(5).min(options.request_timeout))
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| BrokerError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        let signer = credentials.map(|c| {
            JwtSigner::new(c)
                .with_clock_offset(options.clock_offset_secs)
                .with_host_override(options.sign_host_override.clone())
        });
        Ok(Self {
            http,
            sent: std::sync::Mutex::new(std::collections::VecDeque::with_capacity(SENT_MEMORY)),
            host,
            signer,
            private: RateLimiter::new(options.private_per_second),
            public: RateLimiter::new(options.public_per_second),
            base,
            options,
            stats: RestStats::default(),
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.signer.is_some()
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.signer.as_ref().map(JwtSigner::credentials)
    }

    pub fn signer(&self) -> Option<&JwtSigner> {
        self.signer.as_ref()
    }

    pub fn options(&self) -> &RestOptions {
        &self.options
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    pub fn counts(&self) -> RestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RestCounts {
            requests: get(&self.stats.requests),
            retries: get(&self.stats.retries),
            rate_limited: get(&self.stats.rate_limited),
            server_errors: get(&self.stats.server_errors),
            timeouts: get(&self.stats.timeouts),
        }
    }

    /// The most requests (of the last 512) that left within any one second: what the
    /// exchange's per-second limit sees, give or take network jitter.
    pub fn busiest_second(&self) -> usize {
        let sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let times: Vec<Instant> = sent.iter().copied().collect();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    fn record_send(&self) {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.len() == SENT_MEMORY {
            sent.pop_front();
        }
        sent.push_back(Instant::now());
    }

    /// The URL of `path` (relative to the base, starting with `/`).
    fn url(&self, path: &str) -> Result<Url, BrokerError> {
        Url::parse(&format!("{}{path}", self.base.as_str().trim_end_matches('/')))
            .map_err(|_| BrokerError::Protocol(format!("cannot build a URL for {path:?}")))
    }

    /// The JWT this client would send for `METHOD path` right now (tests decode it).
    pub fn token_for(&self, method: &str, path: &str) -> Option<String> {
        let url = self.url(path).ok()?;
        self.signer
            .as_ref()
            .map(|s| s.rest_token(method, &self.host, url.path()))
    }

    /// `GET` a private endpoint (needs credentials).
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, BrokerError> {
        self.send(
            Method::GET,
            path,
            query,
            None,
            Access::Private,
            self.options.request_timeout,
        )
        .await
    }

    /// `GET` a public endpoint.
    pub async fn get_public(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, BrokerError> {
        self.send(
            Method::GET,
            path,
            query,
            None,
            Access::Public,
            self.options.request_timeout,
        )
        .await
    }

    /// `POST` JSON to a private endpoint; a `success: false` answer becomes `Rejected`.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<Vec<u8>, BrokerError> {
        let timeout = timeout.unwrap_or(self.options.request_timeout);
        let bytes = self
            .send(Method::POST, path, &[], Some(body), Access::Private, timeout)
            .await?;
        check_business_failure(&bytes)?;
        Ok(bytes)
    }

    /// One request with pacing, authentication and retries.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        access: Access,
        timeout: Duration,
    ) -> Result<Vec<u8>, BrokerError> {
        let signer = match (access, &self.signer) {
            (Access::Private, Some(signer)) => Some(signer),
            (Access::Private, None) => {
                return Err(BrokerError::Unauthorized(format!(
                    "{path} needs Coinbase credentials and none are configured"
                )));
            }
            (Access::Public, _) => None,
        };
        let mut url = self.url(path)?;
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let limiter = match access {
            Access::Private => &self.private,
            Access::Public => &self.public,
        };
        let attempts = self.options.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            limiter.acquire().await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            // Method and path only: the Authorization header carries a bearer credential.
            tracing::debug!(method = %method, path, attempt, signed = signer.is_some(), "Coinbase request");
            let mut request = self.http.request(method.clone(), url.clone()).timeout(timeout);
            if let Some(signer) = signer {
                request = request.bearer_auth(signer.rest_token(method.as_str(), &self.host, url.path()));
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            self.record_send();
            let outcome = match request.send().await {
                Ok(response) => self.classify(path, response).await,
                Err(error) => {
                    if error.is_timeout() {
                        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    Attempt::Retry {
                        error: BrokerError::Unavailable(describe_transport(path, &error)),
                        wait: None,
                    }
                }
            };
            match outcome {
                Attempt::Done(bytes) => return Ok(bytes),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, .. } if attempt >= attempts => return Err(error),
                Attempt::Retry { error, wait } => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let wait = match wait {
                        Some(wait) => {
                            limiter.pause_until(Instant::now() + wait).await;
                            wait + jitter(Duration::from_millis(100))
                        }
                        None => self.backoff(attempt),
                    };
                    tracing::warn!(method = %method, path, attempt, wait_ms = wait.as_millis() as u64, error = %error, "Coinbase request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Exponential backoff with jitter (between half and all of the step).
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .options
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.options.backoff_max);
        step / 2 + jitter(step / 2)
    }

    async fn classify(&self, path: &str, mut response: reqwest::Response) -> Attempt {
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Attempt::Fail(BrokerError::Protocol(format!(
                            "{path}: response larger than {} MiB",
                            MAX_BODY_BYTES / 1024 / 1024
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) => {
                    if error.is_timeout() {
                        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    return Attempt::Retry {
                        error: BrokerError::Unavailable(describe_transport(path, &error)),
                        wait: None,
                    };
                }
            }
        }
        if status.is_success() {
            return Attempt::Done(body);
        }
        let detail = describe_body(&headers, &body);
        match status {
            StatusCode::UNAUTHORIZED => {
                let key = self.credentials().map_or("(none)", Credentials::key_name);
                Attempt::Fail(BrokerError::Unauthorized(format!(
                    "Coinbase refused the credentials of key {key} on {path} (HTTP 401: {detail}); check the key name, the private key, the key's IP allow-list and the clock"
                )))
            }
            StatusCode::FORBIDDEN => Attempt::Fail(BrokerError::Forbidden(format!(
                "{path} (HTTP 403: {detail}); the key lacks a permission this needs"
            ))),
            StatusCode::NOT_FOUND => Attempt::Fail(BrokerError::NotFound(format!("{path}: {detail}"))),
            StatusCode::TOO_MANY_REQUESTS => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                Attempt::Retry {
                    error: BrokerError::RateLimited(format!("{path}: HTTP 429 ({detail})")),
                    wait: Some(rate_limit_wait(&headers)),
                }
            }
            s if s.is_server_error() => {
                self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
                Attempt::Retry {
                    error: BrokerError::Unavailable(format!("{path}: HTTP {} ({detail})", s.as_u16())),
                    wait: None,
                }
            }
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
                Attempt::Fail(BrokerError::Rejected {
                    reason: parsed
                        .error
                        .filter(|e| !e.trim().is_empty())
                        .unwrap_or_else(|| "INVALID_ARGUMENT".into()),
                    message: format!("{path}: {detail}"),
                })
            }
            s => Attempt::Fail(BrokerError::Protocol(format!("{path}: HTTP {} ({detail})", s.as_u16()))),
        }
    }
}

fn jitter(max: Duration) -> Duration {
    let max_ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::thread_rng().gen_range(0..=max_ms))
}

/// How long a 429 asks us to wait: `Retry-After` seconds, else `x-ratelimit-reset` (unix
/// seconds), else one second; at most [`MAX_RATE_LIMIT_WAIT`].
fn rate_limit_wait(headers: &HeaderMap) -> Duration {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let from_retry_after = header("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_millis((s.min(3600.0) * 1000.0) as u64));
    let from_reset = || {
        header("x-ratelimit-reset")
            .and_then(|v| v.parse::<i64>().ok())
            .map(|reset| {
                let ms = reset.saturating_mul(1000).saturating_sub(crate::clock::unix_ms());
                Duration::from_millis(ms.clamp(0, 3_600_000) as u64)
            })
    };
    from_retry_after
        .or_else(from_reset)
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(100), MAX_RATE_LIMIT_WAIT)
}

/// A transport failure in words (no headers, so no token).
fn describe_transport(path: &str, error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() {
        "response body interrupted"
    } else {
        "request failed"
    };
    // The URL holds nothing secret, but the path is already named.
    let mut source = String::new();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(c) = cause {
        source = c.to_string();
        cause = c.source();
    }
    if source.is_empty() {
        format!("{path}: {kind}")
    } else {
        format!("{path}: {kind} ({})", source.chars().take(200).collect::<String>())
    }
}

/// A short description of an error body: the JSON message, an HTML page's title, or text.
fn describe_body(headers: &HeaderMap, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let trimmed = text.trim();
    let html = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("html"))
        || trimmed.starts_with('<');
    if html {
        let title = trimmed
            .split_once("<title>")
            .and_then(|(_, rest)| rest.split_once("</title>"))
            .map(|(t, _)| t.trim().to_string())
            .unwrap_or_default();
        return format!("HTML page {:?}", title.chars().take(80).collect::<String>());
    }
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        let parts: Vec<String> = [parsed.error, parsed.message, parsed.error_details]
            .into_iter()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            let mut unique: Vec<String> = Vec::new();
            for p in parts {
                if !unique.contains(&p) {
                    unique.push(p);
                }
            }
            return unique.join(": ").chars().take(300).collect();
        }
    }
    let clean: String = trimmed.chars().filter(|c| !c.is_control()).take(120).collect();
    if clean.is_empty() { "empty body".into() } else { clean }
}

/// An HTTP 200 that says `success: false` is a business rejection.
fn check_business_failure(body: &[u8]) -> Result<(), BrokerError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Outcome {
        success: wire::Flag,
        error_response: Option<wire::OrderError>,
        failure_reason: Option<serde_json::Value>,
    }
    let Ok(outcome) = serde_json::from_slice::<Outcome>(body) else {
        return Ok(());
    };
    if outcome.success.0 != Some(false) {
        return Ok(());
    }
    let error = outcome.error_response.unwrap_or_default();
    let failure_reason = outcome
        .failure_reason
        .as_ref()
        .map(wire::value_text)
        .filter(|r| !wire::is_placeholder_reason(r));
    Err(BrokerError::Rejected {
        reason: error
            .reason()
            .or(failure_reason)
            .unwrap_or_else(|| "UNKNOWN_FAILURE_REASON".into()),
        message: error.text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_waits_follow_the_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_limit_wait(&h), Duration::from_secs(1));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(rate_limit_wait(&h), Duration::from_secs(2));
        h.insert("retry-after", HeaderValue::from_static("999999"));
        assert_eq!(rate_limit_wait(&h), MAX_RATE_LIMIT_WAIT);
        let mut h = HeaderMap::new();
        let reset = (crate::clock::unix_seconds() + 3).to_string();
        h.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let wait = rate_limit_wait(&h);
        assert!(
            wait > Duration::from_millis(1500) && wait <= Duration::from_secs(3),
            "{wait:?}"
        );
    }

    #[test]
    fn bodies_are_described_briefly() {
        let mut html = HeaderMap::new();
        html.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let page = b"<html><head><title>429 Too Many Requests</title></head><body>x</body></html>";
        assert_eq!(describe_body(&html, page), "HTML page \"429 Too Many Requests\"");
        let json = br#"{"error":"NOT_FOUND","error_details":"order x","message":"order x"}"#;
        assert_eq!(describe_body(&HeaderMap::new(), json), "NOT_FOUND: order x");
        assert_eq!(describe_body(&HeaderMap::new(), b"Unauthorized\n"), "Unauthorized");
    }

    #[test]
    fn success_false_is_a_rejection_with_the_reason() {
        let body = br#"{"success":false,"error_response":{"error":"INSUFFICIENT_FUND","message":"Insufficient balance","new_order_failure_reason":"INSUFFICIENT_FUND"}}"#;
        let err = check_business_failure(body).unwrap_err();
        assert_eq!(
            err,
            BrokerError::Rejected {
                reason: "INSUFFICIENT_FUND".into(),
                message: "Insufficient balance".into()
            }
        );
        assert!(check_business_failure(br#"{"success":true}"#).is_ok());
        assert!(check_business_failure(b"[1,2]").is_ok());
        let bare = check_business_failure(br#"{"success":false,"failure_reason":"UNKNOWN_CANCEL_ORDER"}"#).unwrap_err();
        assert!(matches!(bare, BrokerError::Rejected { ref reason, .. } if reason == "UNKNOWN_CANCEL_ORDER"));
        let none = check_business_failure(br#"{"success":false}"#).unwrap_err();
        assert!(matches!(none, BrokerError::Rejected { ref reason, .. } if reason == "UNKNOWN_FAILURE_REASON"));
    }
}

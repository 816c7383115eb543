//! Shared helpers for the simulator's integration tests: JWTs are built here with
//! `jsonwebtoken` directly, independent of any production client code.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use exchange_sim::{GeneratedKey, KeyAlgorithm, KeySpec, SimConfig, Simulator, generate_key};
use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde::Serialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Signing key for `jsonwebtoken` from a generated CDP key.
pub fn encoding_key(key: &GeneratedKey) -> EncodingKey {
    match key.algorithm {
        KeyAlgorithm::Es256 => {
            let secret = p256::SecretKey::from_sec1_pem(&key.private_key_pem).expect("sec1 pem");
            let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).expect("pkcs8");
            EncodingKey::from_ec_pem(pkcs8.as_bytes()).expect("ec key")
        }
        KeyAlgorithm::EdDsa => {
            let bytes = BASE64.decode(&key.private_key_pem).expect("base64");
            let pair: [u8; 64] = bytes.try_into().expect("64 bytes");
            let signing = ed25519_dalek::SigningKey::from_keypair_bytes(&pair).expect("keypair");
            let der = signing.to_pkcs8_der().expect("pkcs8");
            EncodingKey::from_ed_der(der.as_bytes())
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// Every part of a CDP JWT, so tests can break exactly one.
#[derive(Debug, Clone)]
pub struct JwtParts {
    pub kid: Option<String>,
    pub nonce: Option<String>,
    pub typ: Option<String>,
    pub claims: Claims,
}

impl JwtParts {
    /// A valid REST token for `METHOD host/path`.
    pub fn rest(key: &GeneratedKey, method: &str, host: &str, path: &str) -> Self {
        let mut parts = Self::ws(key);
        parts.claims.uri = Some(format!("{method} {host}{path}"));
        parts
    }

    /// A valid WebSocket token (no `uri`).
    pub fn ws(key: &GeneratedKey) -> Self {
        let now = now_secs();
        Self {
            kid: Some(key.name.clone()),
            nonce: Some(hex::encode(rand::random::<[u8; 16]>())),
            typ: Some("JWT".into()),
            claims: Claims {
                sub: Some(key.name.clone()),
                iss: Some("cdp".into()),
                nbf: Some(now),
                exp: Some(now + 120),
                uri: None,
            },
        }
    }

    pub fn sign(&self, key: &GeneratedKey) -> String {
        self.sign_with(key.algorithm, &encoding_key(key))
    }

    pub fn sign_with(&self, algorithm: KeyAlgorithm, encoding: &EncodingKey) -> String {
        let mut header = Header::new(match algorithm {
            KeyAlgorithm::Es256 => Algorithm::ES256,
            KeyAlgorithm::EdDsa => Algorithm::EdDSA,
        });
        header.kid = self.kid.clone();
        header.nonce = self.nonce.clone();
        header.typ = self.typ.clone();
        jsonwebtoken::encode(&header, &self.claims, encoding).expect("sign jwt")
    }
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A running simulator plus a trading key and an HTTP client.
pub struct TestSim {
    pub sim: Simulator,
    pub key: GeneratedKey,
    pub http: reqwest::Client,
}

/// Config for tests: manual ticks, short history, deterministic seed.
pub fn test_config() -> SimConfig {
    SimConfig {
        tick: Duration::ZERO,
        history_minutes: 400,
        ..SimConfig::default()
    }
}

impl TestSim {
    pub async fn start() -> Self {
        Self::with(test_config(), |spec| spec).await
    }

    pub async fn with(config: SimConfig, customize: impl FnOnce(KeySpec) -> KeySpec) -> Self {
        let key = generate_key(KeyAlgorithm::Es256);
        let sim = Simulator::start(config).await.expect("start simulator");
        sim.register_key(customize(key.key_spec())).expect("register key");
        Self { sim, key, http: http() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    /// A request to `path` (which may carry a query) signed for `key`.
    pub fn signed(&self, key: &GeneratedKey, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let bare = path.split('?').next().unwrap_or(path);
        let token = JwtParts::rest(key, method.as_str(), &self.sim.host(), bare).sign(key);
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .signed(&self.key, reqwest::Method::GET, path)
            .send()
            .await
            .expect("send");
        status_json(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .signed(&self.key, reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("send");
        status_json(response).await
    }

    pub async fn public_get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("send");
        status_json(response).await
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(self.url(path)).json(body).send().await.expect("send");
        status_json(response).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("send");
        status_json(response).await
    }

    /// Places an order and returns the response body.
    pub async fn order(&self, body: Value) -> Value {
        let (status, json) = self.post("/api/v3/brokerage/orders", &body).await;
        assert_eq!(status, 200, "{json}");
        json
    }

    pub async fn order_by_id(&self, order_id: &str) -> Value {
        let (status, json) = self
            .get(&format!("/api/v3/brokerage/orders/historical/{order_id}"))
            .await;
        assert_eq!(status, 200, "{json}");
        json["order"].clone()
    }

    /// Available balance of `currency`.
    pub async fn available(&self, currency: &str) -> rust_decimal::Decimal {
        let (_, json) = self.get("/api/v3/brokerage/accounts?limit=250").await;
        json["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .find(|a| a["currency"] == currency)
            .map(|a| dec(&a["available_balance"]["value"]))
            .unwrap_or_default()
    }

    pub async fn best_bid_ask(&self, product_id: &str) -> (rust_decimal::Decimal, rust_decimal::Decimal) {
        let (_, json) = self
            .get(&format!("/api/v3/brokerage/best_bid_ask?product_ids={product_id}"))
            .await;
        let book = &json["pricebooks"][0];
        (dec(&book["bids"][0]["price"]), dec(&book["asks"][0]["price"]))
    }
}

pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Parses a decimal string field.
pub fn dec(value: &Value) -> rust_decimal::Decimal {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a decimal string: {value}"))
}

pub async fn ws_connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
    ws
}

pub async fn ws_send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.expect("ws send");
}

/// Next JSON text message (None on close or after `timeout`).
pub async fn ws_next(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.checked_duration_since(tokio::time::Instant::now())?;
        match tokio::time::timeout(remaining, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(text.as_str()).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Next message on `channel`, skipping others.
pub async fn ws_next_on(ws: &mut Ws, channel: &str, timeout: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.checked_duration_since(tokio::time::Instant::now())?;
        let message = ws_next(ws, remaining).await?;
        if message["channel"] == channel {
            return Some(message);
        }
    }
}

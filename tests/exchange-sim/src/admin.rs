//! Test control: key registration, balances, product flags, fault injection, the order log,
//! statistics and reset. Available in-process (methods on [`SimState`], wrapped by
//! [`crate::Simulator`]) and over HTTP under `/admin/`.

use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::auth::bearer_token;
use crate::clock;
use crate::config::KeySpec;
use crate::error::ApiError;
use crate::faults::{self, FaultRequest, FaultState};
use crate::keys::parse_public_key;
use crate::order_log::OrderLogEntry;
use crate::products::{ProductFlags, ProductFlagsUpdate};
use crate::rest::extract::JsonBody;
use crate::state::{AppState, SimState, lock};
use crate::stats::StatsSnapshot;

/// Largest balance the admin API accepts (keeps arithmetic far from overflow).
const MAX_BALANCE: i64 = 1_000_000_000_000_000;

/// Why an admin operation failed (HTTP 400 / 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) => ApiError::BadRequest(m),
            AdminError::NotFound(m) => ApiError::NotFound(m),
        }
    }
}

/// A registered key as reported back by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub name: String,
    pub algorithm: String,
    pub portfolio_uuid: String,
    pub portfolio_type: String,
}

/// Body of `POST /admin/orders`: a market order placed for a key without its client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOrder {
    pub key_name: String,
    pub client_order_id: String,
    pub product_id: String,
    /// `BUY` or `SELL`.
    pub side: String,
    pub base_size: Decimal,
}

/// Body of `POST /admin/transfers`: money moved into (`amount` > 0, a deposit) or out of
/// (`amount` < 0, a withdrawal) a key's portfolio from outside the exchange, not by trading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub key_name: String,
    pub currency: String,
    pub amount: Decimal,
}

/// A currency's balance after a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResult {
    pub currency: String,
    pub total: Decimal,
    pub available: Decimal,
}

/// Body of `POST /admin/balances`: totals to set per currency for one key's portfolio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetBalances {
    pub key_name: String,
    #[serde(deserialize_with = "decimal_map")]
    pub balances: BTreeMap<String, Decimal>,
}

fn decimal_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Decimal>, D::Error> {
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(currency, value)| {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(serde::de::Error::custom(format!(
                        "balance of {currency} must be a decimal, got {other}"
                    )));
                }
            };
            crate::num::parse_decimal(&text)
                .map(|d| (currency.clone(), d))
                .ok_or_else(|| serde::de::Error::custom(format!("invalid decimal {text}")))
        })
        .collect()
}

fn check_balances(balances: &BTreeMap<String, Decimal>) -> Result<(), AdminError> {
    for (currency, amount) in balances {
        if currency.is_empty() || currency.len() > 16 {
            return Err(AdminError::Invalid(format!("invalid currency {currency:?}")));
        }
        if *amount < Decimal::ZERO || *amount > Decimal::from(MAX_BALANCE) {
            return Err(AdminError::Invalid(format!(
                "balance of {currency} must be between 0 and {MAX_BALANCE}"
            )));
        }
    }
    Ok(())
}

impl SimState {
    /// Registers (or replaces) an API key and creates its portfolio.
    pub fn register_key(&self, spec: KeySpec) -> Result<KeyInfo, AdminError> {
        let (algorithm, _) = parse_public_key(&spec.public_key_pem).map_err(|e| AdminError::Invalid(e.to_string()))?;
        if spec.name.trim().is_empty() {
            return Err(AdminError::Invalid("key name must not be empty".into()));
        }
        check_balances(&spec.balances)?;
        let portfolio_uuid = lock(&self.exchange).upsert_portfolio(&spec, clock::now());
        self.keys_mut()
            .insert(&spec, portfolio_uuid.clone())
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        tracing::info!(key = %spec.name, %algorithm, portfolio = %portfolio_uuid, "registered API key");
        Ok(KeyInfo {
            name: spec.name,
            algorithm: algorithm.to_string(),
            portfolio_uuid,
            portfolio_type: spec.portfolio_type,
        })
    }

    /// Sets balances of a key's portfolio (they also become its reset balances).
    pub fn set_balances(&self, request: &SetBalances) -> Result<(), AdminError> {
        check_balances(&request.balances)?;
        let mut exchange = lock(&self.exchange);
        let portfolio = exchange
            .accounts
            .by_key_mut(&request.key_name)
            .ok_or_else(|| AdminError::NotFound(format!("unknown key {}", request.key_name)))?;
        portfolio.set_balances(&request.balances, clock::now());
        Ok(())
    }

    /// Deposits or withdraws money on a key's portfolio (the reset balances stay). A
    /// withdrawal takes only what is available (not what open orders hold).
    pub fn transfer(&self, request: &Transfer) -> Result<TransferResult, AdminError> {
        check_balances(&BTreeMap::from([(request.currency.clone(), request.amount.abs())]))?;
        if request.amount.is_zero() {
            return Err(AdminError::Invalid("amount must not be zero".into()));
        }
        let now = clock::now();
        let mut exchange = lock(&self.exchange);
        let portfolio = exchange
            .accounts
            .by_key_mut(&request.key_name)
            .ok_or_else(|| AdminError::NotFound(format!("unknown key {}", request.key_name)))?;
        let available = portfolio.available(&request.currency);
        if available + request.amount < Decimal::ZERO {
            return Err(AdminError::Invalid(format!(
                "cannot withdraw {} {}: only {available} available",
                -request.amount, request.currency
            )));
        }
        let balance = portfolio.balance_mut(&request.currency, now);
        if balance.total + request.amount > Decimal::from(MAX_BALANCE) {
            return Err(AdminError::Invalid(format!(
                "the balance of {} may not exceed {MAX_BALANCE}",
                request.currency
            )));
        }
        balance.total += request.amount;
        tracing::info!(key = %request.key_name, currency = %request.currency, amount = %request.amount, "transfer");
        Ok(TransferResult {
            currency: request.currency.clone(),
            total: balance.total,
            available: balance.available(),
        })
    }

    /// Changes a product's trading status flags.
    pub fn set_product_flags(&self, product_id: &str, update: &ProductFlagsUpdate) -> Result<ProductFlags, AdminError> {
        if let Some(status) = &update.status
            && !matches!(status.as_str(), "online" | "offline" | "delisted")
        {
            return Err(AdminError::Invalid("status must be online, offline or delisted".into()));
        }
        lock(&self.exchange)
            .update_flags(product_id, update)
            .ok_or_else(|| AdminError::NotFound(format!("unknown product {product_id}")))
    }

    /// Applies a fault request and returns the resulting fault state.
    pub fn apply_faults(&self, request: &FaultRequest) -> Result<FaultState, AdminError> {
        faults::validate(request).map_err(AdminError::Invalid)?;
        let now = clock::now();
        if let Some(shock) = &request.price_shock
            && lock(&self.exchange).spec(&shock.product_id).is_none()
        {
            return Err(AdminError::NotFound(format!("unknown product {}", shock.product_id)));
        }
        {
            let mut faults = lock(&self.faults);
            if request.clear {
                *faults = FaultState::default();
            }
            if let Some(ms) = request.latency_ms {
                faults.latency_ms = ms;
            }
            if let Some(fail) = &request.fail_next {
                faults.fail_next = (fail.count > 0).then(|| fail.clone());
            }
            if let Some(timeout) = &request.timeout_next_orders {
                faults.timeout_next_orders = (timeout.count > 0).then(|| timeout.clone());
            }
            if let Some(drop) = &request.ws_drop_every {
                faults.ws_drop_every = (drop.n > 0).then_some(drop.n);
            }
        }
        {
            let mut exchange = lock(&self.exchange);
            if request.clear {
                exchange.set_frozen(None, false, now);
            }
            if let Some(freeze) = &request.freeze {
                exchange.set_frozen(freeze.products.as_deref(), freeze.frozen, now);
            }
            if let Some(shock) = &request.price_shock {
                exchange
                    .shock(&shock.product_id, shock.percent, now)
                    .map_err(|e| AdminError::Invalid(e.to_string()))?;
            }
        }
        if request.ws_disconnect {
            self.disconnect.send_modify(|generation| *generation += 1);
        }
        tracing::info!(faults = ?request, "faults applied");
        Ok(self.fault_state())
    }

    /// Current faults, including frozen products.
    pub fn fault_state(&self) -> FaultState {
        let mut state = lock(&self.faults).clone();
        state.frozen_products = lock(&self.exchange).market.frozen();
        state
    }

    pub fn order_log(&self) -> Vec<OrderLogEntry> {
        lock(&self.order_log).entries().to_vec()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Back to the startup state: fresh market from the seed, registered keys with their
    /// starting balances, no orders, fills, faults, log entries, statistics or rate windows.
    pub fn reset(&self) {
        let market = self.new_market();
        {
            let mut exchange = lock(&self.exchange);
            exchange.reset(market, clock::now());
            lock(&self.order_log).clear();
        }
        *lock(&self.faults) = FaultState::default();
        lock(&self.limiter).clear();
        self.stats.reset();
        tracing::info!("simulator reset");
    }

    /// Places a market order for a key as if its client had sent it (no JWT): tests use it to
    /// give a bot identity history (an earlier fill under its client order id prefix). The
    /// order log records it with `source` `admin`. Returns the order id.
    pub fn place_market_order(&self, request: &AdminOrder) -> Result<String, AdminError> {
        let portfolio = self
            .keys()
            .get(&request.key_name)
            .map(|k| k.portfolio_uuid.clone())
            .ok_or_else(|| AdminError::NotFound(format!("unknown key {}", request.key_name)))?;
        let side = crate::side::Side::parse(&request.side)
            .ok_or_else(|| AdminError::Invalid("side must be BUY or SELL".into()))?;
        let intent = crate::orders::OrderIntent {
            client_order_id: request.client_order_id.clone(),
            product_id: request.product_id.clone(),
            side,
            config: crate::orders::OrderConfig::MarketIoc(crate::orders::MarketSize::Base(request.base_size)),
            leverage: None,
            margin_type: None,
        };
        let now = clock::now();
        let mut exchange = lock(&self.exchange);
        let caller = crate::engine::Caller {
            key_name: &request.key_name,
            portfolio_uuid: &portfolio,
        };
        let outcome = exchange.place_order(caller, &intent, now);
        let entry = crate::rest::orders::admin_log_entry(&request.key_name, &intent, &outcome, now);
        lock(&self.order_log).record(entry);
        match outcome {
            crate::engine::PlaceOutcome::Accepted { order_id, .. } => Ok(order_id),
            crate::engine::PlaceOutcome::Rejected(r) => {
                Err(AdminError::Invalid(format!("{}: {}", r.reason.error(), r.message)))
            }
        }
    }

    /// Advances the market `steps` ticks immediately.
    pub fn tick(&self, steps: u32) {
        let mut exchange = lock(&self.exchange);
        for _ in 0..steps {
            exchange.tick(clock::now());
        }
    }
}

/// The `/admin` router.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/keys", post(register_key))
        .route("/admin/balances", post(set_balances))
        .route("/admin/transfers", post(transfer))
        .route("/admin/products/{product_id}", post(set_product))
        .route("/admin/faults", post(set_faults).get(get_faults))
        .route("/admin/orders", get(order_log).post(place_order))
        .route("/admin/stats", get(stats))
        .route("/admin/reset", post(reset))
        .route("/admin/tick", post(tick))
        .route_layer(from_fn_with_state(state, require_admin_token))
}

async fn require_admin_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.config.admin_token {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if bearer_token(header).ok() != Some(expected.as_str()) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn register_key(
    State(state): State<AppState>,
    JsonBody(spec): JsonBody<KeySpec>,
) -> Result<Json<KeyInfo>, ApiError> {
    Ok(Json(state.register_key(spec)?))
}

async fn set_balances(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SetBalances>,
) -> Result<Json<Value>, ApiError> {
    state.set_balances(&request)?;
    Ok(Json(json!({ "ok": true })))
}

async fn transfer(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<Transfer>,
) -> Result<Json<TransferResult>, ApiError> {
    Ok(Json(state.transfer(&request)?))
}

async fn set_product(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    JsonBody(update): JsonBody<ProductFlagsUpdate>,
) -> Result<Json<ProductFlags>, ApiError> {
    Ok(Json(state.set_product_flags(&product_id, &update)?))
}

async fn set_faults(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<FaultRequest>,
) -> Result<Json<FaultState>, ApiError> {
    Ok(Json(state.apply_faults(&request)?))
}

async fn get_faults(State(state): State<AppState>) -> Json<FaultState> {
    Json(state.fault_state())
}

async fn order_log(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "orders": state.order_log() }))
}

async fn place_order(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<AdminOrder>,
) -> Result<Json<Value>, ApiError> {
    let order_id = state.place_market_order(&request)?;
    Ok(Json(json!({ "order_id": order_id })))
}

async fn stats(State(state): State<AppState>) -> Json<StatsSnapshot> {
    Json(state.stats())
}

async fn reset(State(state): State<AppState>) -> Json<Value> {
    state.reset();
    Json(json!({ "ok": true }))
}

#[derive(Debug, Deserialize)]
struct TickRequest {
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn tick(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    let count = if body.is_empty() {
        1
    } else {
        serde_json::from_slice::<TickRequest>(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
            .count
    };
    if count > 10_000 {
        return Err(ApiError::BadRequest("count must be at most 10000".into()));
    }
    // Many steps can take a while; keep them off the async workers.
    let worker = state.clone();
    tokio::task::spawn_blocking(move || worker.tick(count))
        .await
        .map_err(|_| ApiError::BadRequest("tick failed".into()))?;
    Ok(Json(json!({ "ticks": count })))
}

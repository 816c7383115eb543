//! Order entry, cancellation, order and fill history.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::{self, parse_rfc3339, rfc3339_millis};
use crate::engine::{Caller, EditFailure, Exchange, PlaceOutcome, RejectReason, Rejection};
use crate::error::ApiError;
use crate::num::{parse_decimal, plain};
use crate::order_log::OrderLogEntry;
use crate::orders::{CreateOrderBody, IntentError, OrderIntent, OrderStatus};
use crate::rest::extract::{JsonBody, Params, paginate};
use crate::rest::gate::Authed;
use crate::side::Side;
use crate::state::{AppState, lock};

/// Header naming the bot instance that sent a request (recorded in the order log).
pub const CLIENT_INSTANCE_HEADER: &str = "x-client-instance";
/// Order ids per `batch_cancel` request.
const MAX_BATCH_CANCEL: usize = 100;

fn caller(key: &Authed) -> Caller<'_> {
    Caller {
        key_name: &key.name,
        portfolio_uuid: &key.portfolio_uuid,
    }
}

fn failure_json(rejection: &Rejection, configuration: Value) -> Value {
    let reason = rejection.reason;
    json!({
        "success": false,
        "failure_reason": "UNKNOWN_FAILURE_REASON",
        "order_id": "",
        "error_response": {
            "error": reason.error(),
            "message": rejection.message,
            "error_details": rejection.message,
            "preview_failure_reason": reason.preview_failure_reason(),
            "new_order_failure_reason": reason.new_order_failure_reason(),
        },
        "order_configuration": configuration,
    })
}

/// Renders an outcome; for a replay the *original* order's fields are echoed.
fn outcome_json(exchange: &Exchange, key: &Authed, outcome: &PlaceOutcome, intent: &OrderIntent) -> Value {
    match outcome {
        PlaceOutcome::Rejected(rejection) => failure_json(rejection, intent.config.to_json()),
        PlaceOutcome::Accepted { order_id, .. } => {
            let Some(order) = exchange.order(&key.portfolio_uuid, order_id) else {
                return json!({ "success": false, "failure_reason": "UNKNOWN_FAILURE_REASON" });
            };
            json!({
                "success": true,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": order.id,
                "success_response": {
                    "order_id": order.id,
                    "product_id": order.product_id,
                    "side": order.side.as_str(),
                    "client_order_id": order.client_order_id,
                },
                "order_configuration": order.config.to_json(),
            })
        }
    }
}

fn log_entry(
    key_name: &str,
    client_instance: Option<String>,
    intent: &OrderIntent,
    outcome: &PlaceOutcome,
    received_at: DateTime<Utc>,
    source: &str,
) -> OrderLogEntry {
    let (order_id, status, replay, failure) = match outcome {
        PlaceOutcome::Accepted {
            order_id,
            status,
            replay,
        } => (Some(order_id.clone()), status.as_str(), *replay, None),
        PlaceOutcome::Rejected(r) => (
            None,
            OrderStatus::Failed.as_str(),
            false,
            Some(r.reason.error().to_string()),
        ),
    };
    OrderLogEntry {
        seq: 0,
        received_at: rfc3339_millis(received_at),
        key_name: key_name.to_string(),
        client_instance,
        client_order_id: intent.client_order_id.clone(),
        order_id,
        product_id: intent.product_id.clone(),
        side: intent.side.as_str().to_string(),
        order_type: intent.config.order_type().to_string(),
        base_size: intent.config.base_size().map(|d| d.to_string()),
        quote_size: intent.config.quote_size().map(|d| d.to_string()),
        limit_price: intent.config.limit_price().map(|d| d.to_string()),
        status: status.to_string(),
        replay,
        failure_reason: failure,
        source: source.to_string(),
    }
}

/// The order log entry of an order the admin API placed for a key.
pub fn admin_log_entry(
    key_name: &str,
    intent: &OrderIntent,
    outcome: &PlaceOutcome,
    received_at: DateTime<Utc>,
) -> OrderLogEntry {
    log_entry(key_name, None, intent, outcome, received_at, "admin")
}

fn client_instance(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CLIENT_INSTANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(200).collect())
}

/// Holds the HTTP answer back when a `timeout_next_orders` fault is armed.
async fn maybe_delay(state: &AppState) {
    let delay = lock(&state.faults).take_order_delay();
    if let Some(ms) = delay {
        tracing::info!(delay_ms = ms, "delaying create-order response (injected timeout)");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// `POST /orders`. Business outcomes are HTTP 200 with `success` true or false.
pub async fn create_order(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateOrderBody>,
) -> Result<Json<Value>, ApiError> {
    let configuration = body.order_configuration.clone().unwrap_or(Value::Null);
    let intent = match body.into_intent(true) {
        Ok(intent) => intent,
        Err(IntentError::BadRequest(message)) => return Err(ApiError::BadRequest(message)),
        Err(IntentError::Unsupported(message)) => {
            let rejection = Rejection {
                reason: RejectReason::UnsupportedOrderConfiguration,
                message,
            };
            return Ok(Json(failure_json(&rejection, configuration)));
        }
    };
    let now = clock::now();
    let response = {
        let mut exchange = lock(&state.exchange);
        let outcome = exchange.place_order(caller(&key), &intent, now);
        let entry = log_entry(
            &key.name,
            client_instance(&headers),
            &intent,
            &outcome,
            now,
            "create_order",
        );
        lock(&state.order_log).record(entry);
        tracing::info!(
            key = %key.name,
            client_order_id = %intent.client_order_id,
            product = %intent.product_id,
            outcome = ?outcome,
            "create order"
        );
        outcome_json(&exchange, &key, &outcome, &intent)
    };
    maybe_delay(&state).await;
    Ok(Json(response))
}

/// `POST /orders/preview`.
pub async fn preview_order(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    JsonBody(body): JsonBody<CreateOrderBody>,
) -> Result<Json<Value>, ApiError> {
    let intent = match body.into_intent(false) {
        Ok(intent) => intent,
        Err(IntentError::BadRequest(message)) => return Err(ApiError::BadRequest(message)),
        Err(IntentError::Unsupported(_)) => {
            return Ok(Json(json!({
                "errs": [RejectReason::UnsupportedOrderConfiguration.preview_failure_reason()],
                "warning": [],
                "preview_id": uuid::Uuid::new_v4().to_string(),
            })));
        }
    };
    let preview = lock(&state.exchange).preview(caller(&key), &intent, clock::now());
    let leverage = plain(preview.leverage);
    Ok(Json(json!({
        "order_total": plain(preview.order_total),
        "commission_total": plain(preview.commission_total),
        "errs": preview.errs.iter().map(|r| r.preview_failure_reason()).collect::<Vec<_>>(),
        "warning": [],
        "quote_size": plain(preview.quote_size),
        "base_size": plain(preview.base_size),
        "best_bid": plain(preview.best_bid),
        "best_ask": plain(preview.best_ask),
        "is_max": false,
        "order_margin_total": "0",
        "leverage": leverage,
        "long_leverage": leverage,
        "short_leverage": leverage,
        "slippage": plain(preview.slippage),
        "preview_id": uuid::Uuid::new_v4().to_string(),
        "current_liquidation_buffer": plain(preview.current_liquidation_buffer),
        "projected_liquidation_buffer": plain(preview.projected_liquidation_buffer),
        "max_leverage": plain(preview.max_leverage),
        "pnl_configuration": null,
        "twap_bucket_metadata": null,
        "position_notional_limit": "",
        "max_notional_at_requested_leverage": "",
        "margin_ratio_data": null,
        "message": preview.message,
    })))
}

#[derive(Debug, Deserialize)]
pub struct BatchCancelBody {
    #[serde(default)]
    order_ids: Vec<String>,
}

/// `POST /orders/batch_cancel`.
pub async fn batch_cancel(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    JsonBody(body): JsonBody<BatchCancelBody>,
) -> Result<Json<Value>, ApiError> {
    if body.order_ids.is_empty() {
        return Err(ApiError::BadRequest("order_ids is required".into()));
    }
    if body.order_ids.len() > MAX_BATCH_CANCEL {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH_CANCEL} order_ids per request"
        )));
    }
    let now = clock::now();
    let mut exchange = lock(&state.exchange);
    let results: Vec<Value> = body
        .order_ids
        .iter()
        .map(|id| match exchange.cancel(&key.portfolio_uuid, id, now) {
            Ok(()) => json!({ "success": true, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": id }),
            Err(f) => json!({ "success": false, "failure_reason": f.as_str(), "order_id": id }),
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

#[derive(Debug, Deserialize)]
pub struct ClosePositionBody {
    #[serde(default)]
    client_order_id: Option<String>,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    size: Option<String>,
}

/// `POST /orders/close_position`: a market order flattening (part of) a perpetual position.
pub async fn close_position(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ClosePositionBody>,
) -> Result<Json<Value>, ApiError> {
    let client_order_id = body
        .client_order_id
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("client_order_id is required".into()))?;
    let product_id = body
        .product_id
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::BadRequest("product_id is required".into()))?;
    let size = match body.size.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            parse_decimal(s)
                .filter(|d| *d > Decimal::ZERO)
                .ok_or_else(|| ApiError::BadRequest("size must be a positive decimal".into()))?,
        ),
    };
    let now = clock::now();
    let response = {
        let mut exchange = lock(&state.exchange);
        let (outcome, intent) = exchange.close_position(caller(&key), &client_order_id, &product_id, size, now);
        let intent = intent.unwrap_or_else(|| OrderIntent {
            client_order_id: client_order_id.clone(),
            product_id: product_id.clone(),
            side: Side::Sell,
            config: crate::orders::OrderConfig::MarketIoc(crate::orders::MarketSize::Base(size.unwrap_or_default())),
            leverage: None,
            margin_type: None,
        });
        let entry = log_entry(
            &key.name,
            client_instance(&headers),
            &intent,
            &outcome,
            now,
            "close_position",
        );
        lock(&state.order_log).record(entry);
        outcome_json(&exchange, &key, &outcome, &intent)
    };
    maybe_delay(&state).await;
    Ok(Json(response))
}

#[derive(Debug, Deserialize)]
pub struct EditOrderBody {
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    price: Option<String>,
    #[serde(default)]
    size: Option<String>,
}

/// The validated fields of an edit request: order id, new price, new size.
type EditTerms = (String, Option<Decimal>, Option<Decimal>);

impl EditOrderBody {
    fn terms(self) -> Result<EditTerms, ApiError> {
        let order_id = self
            .order_id
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| ApiError::BadRequest("order_id is required".into()))?;
        let decimal = |name: &str, value: Option<String>| match value.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => parse_decimal(text)
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest(format!("{name} must be a decimal string"))),
        };
        let price = decimal("price", self.price)?;
        let size = decimal("size", self.size)?;
        if price.is_none() && size.is_none() {
            return Err(ApiError::BadRequest("price or size is required".into()));
        }
        Ok((order_id, price, size))
    }
}

fn edit_errors(failure: EditFailure) -> Value {
    json!([{
        "edit_failure_reason": failure.edit_failure_reason(),
        "preview_failure_reason": failure.preview_failure_reason(),
    }])
}

/// `POST /orders/edit_preview`: what an edit of a resting limit order would look like.
pub async fn edit_order_preview(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    JsonBody(body): JsonBody<EditOrderBody>,
) -> Result<Json<Value>, ApiError> {
    let (order_id, price, size) = body.terms()?;
    let exchange = lock(&state.exchange);
    Ok(Json(
        match exchange.preview_edit(&key.portfolio_uuid, &order_id, price, size) {
            Ok(p) => json!({
                "errors": [],
                "slippage": plain(p.slippage),
                "order_total": plain(p.order_total),
                "commission_total": plain(p.commission_total),
                "quote_size": plain(p.quote_size),
                "base_size": plain(p.base_size),
                "best_bid": plain(p.best_bid),
                "best_ask": plain(p.best_ask),
                "average_filled_price": plain(p.average_filled_price),
            }),
            Err(failure) => json!({ "errors": edit_errors(failure) }),
        },
    ))
}

/// `POST /orders/edit`: a new price and/or size for a resting `limit_limit_gtc` order.
pub async fn edit_order(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<EditOrderBody>,
) -> Result<Json<Value>, ApiError> {
    let (order_id, price, size) = body.terms()?;
    let now = clock::now();
    let mut exchange = lock(&state.exchange);
    let result = exchange.edit(&key.portfolio_uuid, &order_id, price, size, now);
    if let Some(order) = exchange.order(&key.portfolio_uuid, &order_id) {
        let entry = OrderLogEntry {
            seq: 0,
            received_at: rfc3339_millis(now),
            key_name: key.name.clone(),
            client_instance: client_instance(&headers),
            client_order_id: order.client_order_id.clone(),
            order_id: Some(order.id.clone()),
            product_id: order.product_id.clone(),
            side: order.side.as_str().to_string(),
            order_type: order.config.order_type().to_string(),
            base_size: order.config.base_size().map(|d| d.to_string()),
            quote_size: None,
            limit_price: order.config.limit_price().map(|d| d.to_string()),
            status: order.status.as_str().to_string(),
            replay: false,
            failure_reason: result.err().map(|f| f.edit_failure_reason().to_string()),
            source: "edit_order".to_string(),
        };
        lock(&state.order_log).record(entry);
    }
    tracing::info!(key = %key.name, %order_id, outcome = ?result, "edit order");
    Ok(Json(match result {
        Ok(()) => json!({ "success": true, "success_response": { "order_id": order_id }, "errors": [] }),
        Err(failure) => json!({
            "success": false,
            "error_response": {
                "error_details": failure.edit_failure_reason(),
                "edit_order_failure_reason": failure.edit_failure_reason(),
            },
            "errors": edit_errors(failure),
        }),
    }))
}

/// `GET /orders/historical/{order_id}`.
pub async fn get_order(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    Path(order_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let order = exchange
        .order(&key.portfolio_uuid, &order_id)
        .ok_or_else(|| ApiError::NotFound("order with this orderID was not found".into()))?;
    Ok(Json(json!({ "order": order.to_json() })))
}

fn time_param(params: &Params, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .get(name)
        .map(|raw| parse_rfc3339(raw).ok_or_else(|| ApiError::BadRequest(format!("{name} must be an RFC 3339 time"))))
        .transpose()
}

/// `GET /orders/historical/batch`, newest first.
pub async fn list_orders(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let statuses = params
        .all("order_status")
        .iter()
        .map(|s| OrderStatus::parse(s).ok_or_else(|| ApiError::BadRequest(format!("invalid order_status {s}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let product_ids = params.all("product_ids");
    let order_ids = params.all("order_ids");
    let side = match params.get("order_side") {
        None => None,
        Some(s) => Some(Side::parse(s).ok_or_else(|| ApiError::BadRequest(format!("invalid order_side {s}")))?),
    };
    let order_types = params.all("order_types");
    let product_type = params.get("product_type");
    let start = time_param(&params, "start_date")?;
    let end = time_param(&params, "end_date")?;
    let limit = params.limit("limit", 100, 1_000)?;
    let exchange = lock(&state.exchange);
    let orders: Vec<Value> = exchange
        .orders_of(&key.portfolio_uuid)
        .into_iter()
        .filter(|o| statuses.is_empty() || statuses.contains(&o.status))
        .filter(|o| product_ids.is_empty() || product_ids.contains(&o.product_id))
        .filter(|o| order_ids.is_empty() || order_ids.contains(&o.id))
        .filter(|o| side.is_none_or(|s| s == o.side))
        .filter(|o| order_types.is_empty() || order_types.iter().any(|t| t == o.config.order_type()))
        .filter(|o| product_type.is_none_or(|t| t == o.product_type))
        .filter(|o| start.is_none_or(|s| o.created_at >= s))
        .filter(|o| end.is_none_or(|e| o.created_at <= e))
        .map(|o| o.to_json())
        .collect();
    let (page, next) = paginate(orders, params.get("cursor"), limit)?;
    Ok(Json(json!({
        "orders": page,
        "sequence": "0",
        "has_next": next.is_some(),
        "cursor": next.unwrap_or_default(),
    })))
}

/// `GET /orders/historical/fills`, newest first.
pub async fn list_fills(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let order_ids = params.all("order_ids");
    let product_ids = params.all("product_ids");
    let trade_ids = params.all("trade_ids");
    let start = time_param(&params, "start_sequence_timestamp")?;
    let end = time_param(&params, "end_sequence_timestamp")?;
    let limit = params.limit("limit", 100, 1_000)?;
    let exchange = lock(&state.exchange);
    let fills: Vec<Value> = exchange
        .fills_of(&key.portfolio_uuid)
        .filter(|f| order_ids.is_empty() || order_ids.contains(&f.order_id))
        .filter(|f| product_ids.is_empty() || product_ids.contains(&f.product_id))
        .filter(|f| trade_ids.is_empty() || trade_ids.contains(&f.trade_id))
        .filter(|f| start.is_none_or(|s| f.time >= s))
        .filter(|f| end.is_none_or(|e| f.time <= e))
        .map(|f| f.to_json(exchange.spec(&f.product_id)))
        .collect();
    let (page, next) = paginate(fills, params.get("cursor"), limit)?;
    Ok(Json(json!({ "fills": page, "cursor": next.unwrap_or_default() })))
}

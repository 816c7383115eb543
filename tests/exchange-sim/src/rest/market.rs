//! Public market data: server time, products, candles, books and tickers.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::clock::{self, rfc3339};
use crate::error::ApiError;
use crate::market::candles::granularity_secs;
use crate::num::{plain, price_str};
use crate::rest::extract::Params;
use crate::rest::render;
use crate::state::{AppState, lock};

/// Candle buckets per request.
const MAX_CANDLES: usize = 350;
/// Accepted unix-time range of candle parameters (1970 .. 2100).
const MAX_UNIX: i64 = 4_102_444_800;
/// Trades kept on the tape, the cap of ticker `limit`.
const MAX_TICKER_TRADES: usize = 500;

fn unknown_product(product_id: &str) -> ApiError {
    ApiError::NotFound(format!("ProductID {product_id} could not be found"))
}

/// `GET /time`.
pub async fn time() -> Json<Value> {
    let now = clock::now();
    Json(json!({
        "iso": rfc3339(now),
        "epochSeconds": now.timestamp().to_string(),
        "epochMillis": now.timestamp_millis().to_string(),
    }))
}

/// `GET /products` and `GET /market/products`.
pub async fn list_products(State(state): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    let product_type = params.get("product_type");
    if let Some(t) = product_type
        && !matches!(t, "SPOT" | "FUTURE" | "UNKNOWN_PRODUCT_TYPE")
    {
        return Err(ApiError::BadRequest(format!("invalid product_type {t}")));
    }
    let expiry = params.get("contract_expiry_type");
    if let Some(e) = expiry
        && !matches!(e, "PERPETUAL" | "EXPIRING" | "UNKNOWN_CONTRACT_EXPIRY_TYPE")
    {
        return Err(ApiError::BadRequest(format!("invalid contract_expiry_type {e}")));
    }
    let venue = params.get("product_venue");
    let ids = params.all("product_ids");
    let limit = params.limit("limit", usize::MAX, usize::MAX)?;
    let offset = params.limit("offset", 0, usize::MAX)?;
    let exchange = lock(&state.exchange);
    let products: Vec<Value> = exchange
        .market
        .iter()
        .filter(|p| product_type.is_none_or(|t| t == "UNKNOWN_PRODUCT_TYPE" || t == p.spec.product_type()))
        .filter(|p| match expiry {
            None | Some("UNKNOWN_CONTRACT_EXPIRY_TYPE") => true,
            Some("PERPETUAL") => p.spec.is_perpetual(),
            Some(_) => false,
        })
        .filter(|p| venue.is_none_or(|v| v == p.spec.venue()))
        .filter(|p| ids.is_empty() || ids.contains(&p.spec.id))
        .skip(offset)
        .take(limit)
        .map(render::product)
        .collect();
    Ok(Json(json!({ "num_products": products.len(), "products": products })))
}

/// `GET /products/{product_id}`: the product object itself.
pub async fn get_product(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let product = exchange
        .market
        .get(&product_id)
        .ok_or_else(|| unknown_product(&product_id))?;
    Ok(Json(render::product(product)))
}

/// `GET /products/{product_id}/candles?start&end&granularity&limit`, newest first.
pub async fn candles(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let granularity_name = params
        .get("granularity")
        .ok_or_else(|| ApiError::BadRequest("granularity is required".into()))?;
    let granularity = granularity_secs(granularity_name)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid granularity {granularity_name}")))?;
    let limit = params.limit("limit", MAX_CANDLES, MAX_CANDLES)?;
    let now = clock::now().timestamp();
    let end = params.int("end", 0..=MAX_UNIX)?.unwrap_or(now);
    let start = params
        .int("start", 0..=MAX_UNIX)?
        .unwrap_or(end - granularity * limit as i64);
    if start >= end {
        return Err(ApiError::BadRequest("start must be before end".into()));
    }
    let buckets = (end - start + granularity - 1) / granularity;
    if buckets > MAX_CANDLES as i64 {
        return Err(ApiError::BadRequest(format!(
            "number of candles requested should be less than or equal to {MAX_CANDLES}, got {buckets}"
        )));
    }
    let exchange = lock(&state.exchange);
    let product = exchange
        .market
        .get(&product_id)
        .ok_or_else(|| unknown_product(&product_id))?;
    let qi = product.spec.quote_increment;
    let candles: Vec<Value> = product
        .candles
        .aggregate(start, end, granularity)
        .into_iter()
        .take(limit)
        .map(|c| {
            json!({
                "start": c.start.to_string(),
                "low": price_str(c.low, qi),
                "high": price_str(c.high, qi),
                "open": price_str(c.open, qi),
                "close": price_str(c.close, qi),
                "volume": plain(c.volume),
            })
        })
        .collect();
    Ok(Json(json!({ "candles": candles })))
}

/// `GET /best_bid_ask?product_ids=..` (all products when none given; unknown ids skipped).
pub async fn best_bid_ask(State(state): State<AppState>, params: Params) -> Json<Value> {
    let ids = params.all("product_ids");
    let exchange = lock(&state.exchange);
    let books: Vec<Value> = exchange
        .market
        .iter()
        .filter(|p| ids.is_empty() || ids.contains(&p.spec.id))
        .map(|p| render::pricebook(p, 1))
        .collect();
    Json(json!({ "pricebooks": books }))
}

/// `GET /product_book?product_id&limit` and `GET /market/product_book`.
pub async fn product_book(State(state): State<AppState>, params: Params) -> Result<Json<Value>, ApiError> {
    let product_id = params
        .get("product_id")
        .ok_or_else(|| ApiError::BadRequest("product_id is required".into()))?;
    let depth = params.limit("limit", usize::MAX, usize::MAX)?;
    let exchange = lock(&state.exchange);
    let product = exchange
        .market
        .get(product_id)
        .ok_or_else(|| unknown_product(product_id))?;
    let qi = product.spec.quote_increment;
    let bid = product.book.best_bid().map(|l| l.price).unwrap_or_default();
    let ask = product.book.best_ask().map(|l| l.price).unwrap_or_default();
    let mid = (bid + ask) / rust_decimal::Decimal::TWO;
    let spread = ask - bid;
    let spread_bps = if mid.is_zero() {
        rust_decimal::Decimal::ZERO
    } else {
        (spread * rust_decimal::Decimal::from(10_000) / mid).round_dp(4)
    };
    Ok(Json(json!({
        "pricebook": render::pricebook(product, depth),
        "last": price_str(product.last_price(), qi),
        "mid_market": price_str(mid, qi),
        "spread_bps": plain(spread_bps),
        "spread_absolute": price_str(spread, qi),
    })))
}

/// `GET /products/{product_id}/ticker?limit`: recent trades plus best bid/ask.
pub async fn ticker(
    State(state): State<AppState>,
    Path(product_id): Path<String>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit("limit", 100, MAX_TICKER_TRADES)?;
    let start = params.int("start", 0..=MAX_UNIX)?;
    let end = params.int("end", 0..=MAX_UNIX)?;
    let exchange = lock(&state.exchange);
    let product = exchange
        .market
        .get(&product_id)
        .ok_or_else(|| unknown_product(&product_id))?;
    let qi = product.spec.quote_increment;
    let trades: Vec<Value> = product
        .recent_trades(MAX_TICKER_TRADES)
        .into_iter()
        .filter(|t| start.is_none_or(|s| t.time.timestamp() >= s))
        .filter(|t| end.is_none_or(|e| t.time.timestamp() < e))
        .take(limit)
        .map(|t| {
            json!({
                "trade_id": t.trade_id,
                "product_id": t.product_id,
                "price": price_str(t.price, qi),
                "size": plain(t.size),
                "time": rfc3339(t.time),
                "side": t.side.as_str(),
                "bid": "",
                "ask": "",
                "exchange": "",
            })
        })
        .collect();
    let best_bid = product
        .book
        .best_bid()
        .map(|l| price_str(l.price, qi))
        .unwrap_or_default();
    let best_ask = product
        .book
        .best_ask()
        .map(|l| price_str(l.price, qi))
        .unwrap_or_default();
    Ok(Json(
        json!({ "trades": trades, "best_bid": best_bid, "best_ask": best_ask }),
    ))
}

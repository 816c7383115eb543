//! Accounts, portfolios, fees and key permissions.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};

use crate::accounts::{Balance, Portfolio};
use crate::clock::rfc3339;
use crate::engine::Exchange;
use crate::error::ApiError;
use crate::num::plain;
use crate::rest::extract::{Params, paginate};
use crate::rest::gate::Authed;
use crate::rest::render::{JsonNumber, money};
use crate::state::{AppState, lock};

const FIAT: [&str; 2] = ["USD", "EUR"];

fn portfolio_of<'a>(exchange: &'a Exchange, key: &Authed) -> Result<&'a Portfolio, ApiError> {
    exchange
        .accounts
        .get(&key.portfolio_uuid)
        .ok_or_else(|| ApiError::NotFound("portfolio not found".into()))
}

fn account_json(portfolio: &Portfolio, balance: &Balance) -> Value {
    let currency = &balance.currency;
    json!({
        "uuid": balance.account_uuid,
        "name": format!("{currency} Wallet"),
        "currency": currency,
        "available_balance": money(balance.available(), currency),
        "default": currency == "USD",
        "active": true,
        "created_at": rfc3339(balance.created_at),
        "updated_at": rfc3339(balance.created_at),
        "deleted_at": null,
        "type": if FIAT.contains(&currency.as_str()) { "ACCOUNT_TYPE_FIAT" } else { "ACCOUNT_TYPE_CRYPTO" },
        "ready": true,
        "hold": money(balance.hold, currency),
        "retail_portfolio_id": portfolio.uuid,
        "platform": if portfolio.portfolio_type == "INTX" { "ACCOUNT_PLATFORM_INTX" } else { "ACCOUNT_PLATFORM_CONSUMER" },
    })
}

/// `GET /accounts?limit&cursor` (limit 1..=250, default 49).
pub async fn list_accounts(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit("limit", 49, 250)?;
    let exchange = lock(&state.exchange);
    let portfolio = portfolio_of(&exchange, &key)?;
    let all: Vec<Value> = portfolio
        .balances
        .values()
        .map(|b| account_json(portfolio, b))
        .collect();
    let (page, next) = paginate(all, params.get("cursor"), limit)?;
    Ok(Json(json!({
        "size": page.len(),
        "has_next": next.is_some(),
        "cursor": next.unwrap_or_default(),
        "accounts": page,
    })))
}

/// `GET /accounts/{account_uuid}`.
pub async fn get_account(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    Path(account_uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = portfolio_of(&exchange, &key)?;
    let balance = portfolio
        .balances
        .values()
        .find(|b| b.account_uuid == account_uuid)
        .ok_or_else(|| ApiError::NotFound(format!("account {account_uuid} not found")))?;
    Ok(Json(json!({ "account": account_json(portfolio, balance) })))
}

/// `GET /key_permissions` (any valid key).
pub async fn key_permissions(Extension(key): Extension<Authed>) -> Json<Value> {
    Json(json!({
        "can_view": key.permissions.can_view,
        "can_trade": key.permissions.can_trade,
        "can_transfer": key.permissions.can_transfer,
        "portfolio_uuid": key.portfolio_uuid,
        "portfolio_type": key.portfolio_type,
    }))
}

#[derive(Serialize)]
struct FeeTier {
    pricing_tier: String,
    usd_from: &'static str,
    usd_to: &'static str,
    taker_fee_rate: String,
    maker_fee_rate: String,
    aop_from: &'static str,
    aop_to: &'static str,
}

#[derive(Serialize)]
struct TransactionSummary {
    total_volume: JsonNumber,
    total_fees: JsonNumber,
    fee_tier: FeeTier,
    margin_rate: Option<Value>,
    goods_and_services_tax: Option<Value>,
    advanced_trade_only_volume: JsonNumber,
    advanced_trade_only_fees: JsonNumber,
    coinbase_pro_volume: JsonNumber,
    coinbase_pro_fees: JsonNumber,
    total_balance: String,
    has_promo_fee: bool,
}

/// `GET /transaction_summary`: volume and fees as JSON numbers, rates as strings.
pub async fn transaction_summary(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
) -> Result<Json<impl Serialize>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = portfolio_of(&exchange, &key)?;
    let fees = exchange.fees();
    let volume = portfolio.total_volume.round_dp(8);
    let paid = portfolio.total_fees.round_dp(8);
    Ok(Json(TransactionSummary {
        total_volume: JsonNumber(volume),
        total_fees: JsonNumber(paid),
        fee_tier: FeeTier {
            pricing_tier: fees.pricing_tier.clone(),
            usd_from: "0",
            usd_to: "10000",
            taker_fee_rate: fees.taker_fee_rate.to_string(),
            maker_fee_rate: fees.maker_fee_rate.to_string(),
            aop_from: "",
            aop_to: "",
        },
        margin_rate: None,
        goods_and_services_tax: None,
        advanced_trade_only_volume: JsonNumber(volume),
        advanced_trade_only_fees: JsonNumber(paid),
        coinbase_pro_volume: JsonNumber(Decimal::ZERO),
        coinbase_pro_fees: JsonNumber(Decimal::ZERO),
        total_balance: plain(portfolio.available("USD")),
        has_promo_fee: false,
    }))
}

fn portfolio_summary(portfolio: &Portfolio) -> Value {
    json!({
        "name": portfolio.name,
        "uuid": portfolio.uuid,
        "type": portfolio.portfolio_type,
        "deleted": false,
    })
}

/// `GET /portfolios`: the key's own portfolio.
pub async fn list_portfolios(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = portfolio_of(&exchange, &key)?;
    let wanted = params.get("portfolio_type");
    let list: Vec<Value> = std::iter::once(portfolio)
        .filter(|p| wanted.is_none_or(|t| t == p.portfolio_type))
        .map(portfolio_summary)
        .collect();
    Ok(Json(json!({ "portfolios": list })))
}

#[derive(Serialize)]
struct SpotPosition {
    asset: String,
    account_uuid: String,
    total_balance_fiat: JsonNumber,
    total_balance_crypto: JsonNumber,
    available_to_trade_fiat: JsonNumber,
    available_to_trade_crypto: JsonNumber,
    available_to_transfer_fiat: JsonNumber,
    available_to_transfer_crypto: JsonNumber,
    allocation: JsonNumber,
    cost_basis: Value,
    asset_img_url: &'static str,
    is_cash: bool,
    account_type: &'static str,
}

#[derive(Serialize)]
struct Breakdown {
    portfolio: Value,
    portfolio_balances: Value,
    spot_positions: Vec<SpotPosition>,
    perp_positions: Vec<Value>,
    futures_positions: Vec<Value>,
}

#[derive(Serialize)]
struct BreakdownResponse {
    breakdown: Breakdown,
}

/// USD value of `amount` of `currency` at the current mid.
fn usd_value(exchange: &Exchange, currency: &str, amount: Decimal) -> Decimal {
    if FIAT.contains(&currency) || currency == "USDC" {
        return amount;
    }
    exchange
        .mid(&format!("{currency}-USD"))
        .map_or(Decimal::ZERO, |mid| (amount * mid).round_dp(2))
}

/// `GET /portfolios/{portfolio_uuid}`: balances and positions breakdown.
pub async fn portfolio_breakdown(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    Path(portfolio_uuid): Path<String>,
) -> Result<Json<impl Serialize>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = portfolio_of(&exchange, &key)?;
    if portfolio.uuid != portfolio_uuid {
        return Err(ApiError::NotFound(format!("portfolio {portfolio_uuid} not found")));
    }
    let valued: Vec<(&Balance, Decimal)> = portfolio
        .balances
        .values()
        .map(|b| (b, usd_value(&exchange, &b.currency, b.total)))
        .collect();
    let total: Decimal = valued.iter().map(|(_, v)| *v).sum();
    let cash: Decimal = valued
        .iter()
        .filter(|(b, _)| FIAT.contains(&b.currency.as_str()) || b.currency == "USDC")
        .map(|(_, v)| *v)
        .sum();
    let mut perp_upnl = Decimal::ZERO;
    let perp_positions: Vec<Value> = portfolio
        .open_positions()
        .map(|p| {
            let mark = exchange.mid(&p.product_id).unwrap_or(p.entry_price);
            let upnl = p.unrealized_pnl(mark);
            perp_upnl += upnl;
            json!({
                "product_id": p.product_id,
                "symbol": p.product_id,
                "position_side": if p.net_size.is_sign_positive() { "FUTURES_POSITION_SIDE_LONG" } else { "FUTURES_POSITION_SIDE_SHORT" },
                "net_size": plain(p.net_size),
                "vwap": money(p.entry_price, "USD"),
                "mark_price": money(mark, "USD"),
                "unrealized_pnl": money(upnl.round_dp(8), "USD"),
                "liquidation_price": money(p.liquidation_price(), "USD"),
                "leverage": plain(p.leverage),
                "im_notional": money(p.initial_margin().round_dp(8), "USD"),
                "position_notional": money(p.notional(mark).round_dp(8), "USD"),
                "margin_type": "MARGIN_TYPE_CROSS",
            })
        })
        .collect();
    let spot_positions = valued
        .iter()
        .filter(|(b, _)| !b.total.is_zero())
        .map(|(b, value)| {
            let available_fiat = usd_value(&exchange, &b.currency, b.available());
            SpotPosition {
                asset: b.currency.clone(),
                account_uuid: b.account_uuid.clone(),
                total_balance_fiat: JsonNumber(*value),
                total_balance_crypto: JsonNumber(b.total),
                available_to_trade_fiat: JsonNumber(available_fiat),
                available_to_trade_crypto: JsonNumber(b.available()),
                available_to_transfer_fiat: JsonNumber(available_fiat),
                available_to_transfer_crypto: JsonNumber(b.available()),
                allocation: JsonNumber(if total.is_zero() {
                    Decimal::ZERO
                } else {
                    (*value / total).round_dp(8)
                }),
                cost_basis: money(Decimal::ZERO, "USD"),
                asset_img_url: "",
                is_cash: FIAT.contains(&b.currency.as_str()) || b.currency == "USDC",
                account_type: if FIAT.contains(&b.currency.as_str()) {
                    "ACCOUNT_TYPE_FIAT"
                } else {
                    "ACCOUNT_TYPE_CRYPTO"
                },
            }
        })
        .collect();
    Ok(Json(BreakdownResponse {
        breakdown: Breakdown {
            portfolio: portfolio_summary(portfolio),
            portfolio_balances: json!({
                "total_balance": money(total + perp_upnl, "USD"),
                "total_futures_balance": money(Decimal::ZERO, "USD"),
                "total_cash_equivalent_balance": money(cash, "USD"),
                "total_crypto_balance": money(total - cash, "USD"),
                "futures_unrealized_pnl": money(Decimal::ZERO, "USD"),
                "perp_unrealized_pnl": money(perp_upnl.round_dp(8), "USD"),
            }),
            spot_positions,
            perp_positions,
            futures_positions: Vec::new(),
        },
    }))
}

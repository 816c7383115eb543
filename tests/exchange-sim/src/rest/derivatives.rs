//! CFM futures and INTX perpetuals endpoints.
//!
//! The simulator lists no dated (CFM) futures, so CFM positions are always empty and the
//! balance summary reflects the USD collateral. Perpetuals live in INTX portfolios.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::accounts::{Portfolio, Position};
use crate::engine::{COLLATERAL_CURRENCY, Exchange};
use crate::error::ApiError;
use crate::num::plain;
use crate::rest::gate::Authed;
use crate::rest::render::money;
use crate::side::Side;
use crate::state::{AppState, lock};

fn own_portfolio<'a>(exchange: &'a Exchange, key: &Authed) -> Result<&'a Portfolio, ApiError> {
    exchange
        .accounts
        .get(&key.portfolio_uuid)
        .ok_or_else(|| ApiError::NotFound("portfolio not found".into()))
}

/// The caller's INTX portfolio addressed by uuid.
fn intx_portfolio<'a>(exchange: &'a Exchange, key: &Authed, uuid: &str) -> Result<&'a Portfolio, ApiError> {
    let portfolio = own_portfolio(exchange, key)?;
    if portfolio.uuid != uuid || portfolio.portfolio_type != "INTX" {
        return Err(ApiError::NotFound(format!("INTX portfolio {uuid} not found")));
    }
    Ok(portfolio)
}

/// `GET /cfm/balance_summary`.
pub async fn cfm_balance_summary(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = own_portfolio(&exchange, &key)?;
    let usd = portfolio
        .balances
        .get("USD")
        .map_or((Decimal::ZERO, Decimal::ZERO), |b| (b.total, b.hold));
    let zero = || money(Decimal::ZERO, "USD");
    Ok(Json(json!({
        "balance_summary": {
            "futures_buying_power": money(usd.0 - usd.1, "USD"),
            "total_usd_balance": money(usd.0, "USD"),
            "cbi_usd_balance": money(usd.0, "USD"),
            "cfm_usd_balance": zero(),
            "total_open_orders_hold_amount": money(usd.1, "USD"),
            "unrealized_pnl": zero(),
            "daily_realized_pnl": zero(),
            "initial_margin": zero(),
            "available_margin": money(usd.0 - usd.1, "USD"),
            "liquidation_threshold": zero(),
            "liquidation_buffer_amount": money(usd.0 - usd.1, "USD"),
            "liquidation_buffer_percentage": "1000",
            "intraday_margin_window_measure": null,
            "overnight_margin_window_measure": null,
        }
    })))
}

/// `GET /cfm/positions`: no dated futures are listed, so always empty.
pub async fn cfm_positions(Extension(_key): Extension<Authed>) -> Json<Value> {
    Json(json!({ "positions": [] }))
}

/// `GET /cfm/positions/{product_id}`.
pub async fn cfm_position(Path(product_id): Path<String>) -> ApiError {
    ApiError::NotFound(format!("no CFM position in {product_id}"))
}

fn open_order_sizes(exchange: &Exchange, portfolio: &Portfolio, product_id: &str) -> (Decimal, Decimal) {
    exchange
        .orders_of(&portfolio.uuid)
        .into_iter()
        .filter(|o| o.is_open() && o.product_id == product_id)
        .fold((Decimal::ZERO, Decimal::ZERO), |(buy, sell), o| match o.side {
            Side::Buy => (buy + o.remaining(), sell),
            Side::Sell => (buy, sell + o.remaining()),
        })
}

fn intx_position(exchange: &Exchange, portfolio: &Portfolio, p: &Position) -> Value {
    let mark = exchange.mid(&p.product_id).unwrap_or(p.entry_price);
    let upnl = p.unrealized_pnl(mark).round_dp(8);
    let (buys, sells) = open_order_sizes(exchange, portfolio, &p.product_id);
    let usd = COLLATERAL_CURRENCY;
    json!({
        "product_id": p.product_id,
        "product_uuid": "",
        "portfolio_uuid": portfolio.uuid,
        "symbol": p.product_id,
        "vwap": money(p.entry_price, usd),
        "entry_vwap": money(p.entry_price, usd),
        "position_side": match p.side() {
            Some(Side::Buy) => "POSITION_SIDE_LONG",
            Some(Side::Sell) => "POSITION_SIDE_SHORT",
            None => "POSITION_SIDE_UNKNOWN",
        },
        "margin_type": "MARGIN_TYPE_CROSS",
        "net_size": plain(p.net_size),
        "buy_order_size": plain(buys),
        "sell_order_size": plain(sells),
        "im_contribution": plain((Decimal::ONE / p.leverage.max(Decimal::ONE)).round_dp(8)),
        "unrealized_pnl": money(upnl, usd),
        "mark_price": money(mark, usd),
        "liquidation_price": money(p.liquidation_price(), usd),
        "leverage": plain(p.leverage),
        "im_notional": money(p.initial_margin().round_dp(8), usd),
        "mm_notional": money((p.notional(mark) * p.maintenance_rate()).round_dp(8), usd),
        "position_notional": money(p.notional(mark).round_dp(8), usd),
        "aggregated_pnl": money((upnl + p.realized_pnl).round_dp(8), usd),
    })
}

/// `GET /intx/positions/{portfolio_uuid}`.
pub async fn intx_positions(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    Path(portfolio_uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = intx_portfolio(&exchange, &key, &portfolio_uuid)?;
    let mut aggregated = Decimal::ZERO;
    let positions: Vec<Value> = portfolio
        .open_positions()
        .map(|p| {
            let mark = exchange.mid(&p.product_id).unwrap_or(p.entry_price);
            aggregated += p.unrealized_pnl(mark) + p.realized_pnl;
            intx_position(&exchange, portfolio, p)
        })
        .collect();
    Ok(Json(json!({
        "positions": positions,
        "summary": { "aggregated_pnl": money(aggregated.round_dp(8), COLLATERAL_CURRENCY) },
    })))
}

/// `GET /intx/positions/{portfolio_uuid}/{symbol}`.
pub async fn intx_position_by_symbol(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    Path((portfolio_uuid, symbol)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = intx_portfolio(&exchange, &key, &portfolio_uuid)?;
    let position = portfolio
        .open_positions()
        .find(|p| p.product_id == symbol)
        .ok_or_else(|| ApiError::NotFound(format!("no open position in {symbol}")))?;
    Ok(Json(
        json!({ "position": intx_position(&exchange, portfolio, position) }),
    ))
}

/// `GET /intx/portfolio/{portfolio_uuid}`: margin summary.
pub async fn intx_portfolio_summary(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    Path(portfolio_uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = intx_portfolio(&exchange, &key, &portfolio_uuid)?;
    let usd = COLLATERAL_CURRENCY;
    let collateral = portfolio.balances.get(usd).map_or(Decimal::ZERO, |b| b.total);
    let (mut notional, mut initial, mut maintenance, mut upnl) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for p in portfolio.open_positions() {
        let mark = exchange.mid(&p.product_id).unwrap_or(p.entry_price);
        notional += p.notional(mark);
        initial += p.initial_margin();
        maintenance += p.notional(mark) * p.maintenance_rate();
        upnl += p.unrealized_pnl(mark);
    }
    let equity = collateral + upnl;
    let buffer = (equity - maintenance).max(Decimal::ZERO);
    let free = exchange.free_collateral(portfolio).max(Decimal::ZERO);
    let r = |d: Decimal| d.round_dp(8);
    Ok(Json(json!({
        "portfolios": [{
            "portfolio_uuid": portfolio.uuid,
            "collateral": plain(r(collateral)),
            "position_notional": plain(r(notional)),
            "open_position_notional": plain(r(notional)),
            "pending_fees": "0",
            "borrow": "0",
            "accrued_interest": "0",
            "rolling_debt": "0",
            "portfolio_initial_margin": plain(if equity.is_zero() { Decimal::ZERO } else { r(initial / equity) }),
            "portfolio_im_notional": money(r(initial), usd),
            "portfolio_maintenance_margin": plain(if equity.is_zero() { Decimal::ZERO } else { r(maintenance / equity) }),
            "portfolio_mm_notional": money(r(maintenance), usd),
            "liquidation_percentage": plain(if equity.is_zero() { Decimal::ZERO } else { r(maintenance / equity * Decimal::ONE_HUNDRED) }),
            "liquidation_buffer": plain(r(buffer)),
            "margin_type": "MARGIN_TYPE_CROSS",
            "margin_flags": "PORTFOLIO_MARGIN_FLAGS_UNSPECIFIED",
            "liquidation_status": "PORTFOLIO_LIQUIDATION_STATUS_NOT_LIQUIDATING",
            "unrealized_pnl": money(r(upnl), usd),
            "total_balance": money(r(equity), usd),
        }],
        "summary": {
            "unrealized_pnl": money(r(upnl), usd),
            "buying_power": money(r(free), usd),
            "total_balance": money(r(equity), usd),
            "max_withdrawal_amount": money(r(free), usd),
        },
    })))
}

/// `GET /intx/balances/{portfolio_uuid}`.
pub async fn intx_balances(
    State(state): State<AppState>,
    Extension(key): Extension<Authed>,
    Path(portfolio_uuid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let exchange = lock(&state.exchange);
    let portfolio = intx_portfolio(&exchange, &key, &portfolio_uuid)?;
    let balances: Vec<Value> = portfolio
        .balances
        .values()
        .filter(|b| !b.total.is_zero())
        .map(|b| {
            let collateral_weight = if b.currency == COLLATERAL_CURRENCY || b.currency == "USDC" {
                "1"
            } else {
                "0"
            };
            json!({
                "asset": {
                    "asset_id": b.account_uuid,
                    "asset_uuid": b.account_uuid,
                    "asset_name": b.currency,
                    "status": "ASSET_STATUS_ACTIVE",
                    "collateral_weight": collateral_weight,
                    "account_collateral_limit": "",
                    "ecosystem_collateral_limit_breached": false,
                },
                "quantity": plain(b.total),
                "hold": plain(b.hold),
                "transfer_hold": "0",
                "collateral_value": if collateral_weight == "1" { plain(b.total) } else { "0".to_string() },
                "collateral_weight": collateral_weight,
                "max_withdraw_amount": plain(b.available()),
                "loan": "0",
                "loan_collateral_requirement_usd": "0",
                "pledged_quantity": "0",
            })
        })
        .collect();
    Ok(Json(json!({
        "portfolio_balances": [{
            "portfolio_uuid": portfolio.uuid,
            "balances": balances,
            "is_margin_limit_reached": false,
        }]
    })))
}

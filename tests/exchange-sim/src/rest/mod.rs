//! The Advanced Trade REST API under `/api/v3/brokerage`.

pub mod account;
pub mod derivatives;
pub mod extract;
pub mod gate;
pub mod market;
pub mod orders;
pub mod render;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::AppState;

/// Path prefix of every REST endpoint.
pub const BASE: &str = "/api/v3/brokerage";

fn path(p: &str) -> String {
    format!("{BASE}{p}")
}

/// Public endpoints (no authentication, per-IP rate limit).
fn public(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(&path("/time"), get(market::time))
        .route(&path("/market/products"), get(market::list_products))
        .route(&path("/market/products/{product_id}"), get(market::get_product))
        .route(&path("/market/products/{product_id}/candles"), get(market::candles))
        .route(&path("/market/products/{product_id}/ticker"), get(market::ticker))
        .route(&path("/market/product_book"), get(market::product_book))
        .route_layer(from_fn_with_state(state.clone(), gate::public))
}

/// Read endpoints: need the `view` scope.
fn view() -> Router<AppState> {
    Router::new()
        .route(&path("/accounts"), get(account::list_accounts))
        .route(&path("/accounts/{account_uuid}"), get(account::get_account))
        .route(&path("/products"), get(market::list_products))
        .route(&path("/products/{product_id}"), get(market::get_product))
        .route(&path("/products/{product_id}/candles"), get(market::candles))
        .route(&path("/products/{product_id}/ticker"), get(market::ticker))
        .route(&path("/best_bid_ask"), get(market::best_bid_ask))
        .route(&path("/product_book"), get(market::product_book))
        .route(&path("/orders/historical/batch"), get(orders::list_orders))
        .route(&path("/orders/historical/fills"), get(orders::list_fills))
        .route(&path("/orders/historical/{order_id}"), get(orders::get_order))
        .route(&path("/transaction_summary"), get(account::transaction_summary))
        .route(&path("/portfolios"), get(account::list_portfolios))
        .route(&path("/portfolios/{portfolio_uuid}"), get(account::portfolio_breakdown))
        .route(&path("/cfm/balance_summary"), get(derivatives::cfm_balance_summary))
        .route(&path("/cfm/positions"), get(derivatives::cfm_positions))
        .route(&path("/cfm/positions/{product_id}"), get(derivatives::cfm_position))
        .route(
            &path("/intx/portfolio/{portfolio_uuid}"),
            get(derivatives::intx_portfolio_summary),
        )
        .route(
            &path("/intx/positions/{portfolio_uuid}"),
            get(derivatives::intx_positions),
        )
        .route(
            &path("/intx/positions/{portfolio_uuid}/{symbol}"),
            get(derivatives::intx_position_by_symbol),
        )
        .route(
            &path("/intx/balances/{portfolio_uuid}"),
            get(derivatives::intx_balances),
        )
        .route_layer(from_fn(gate::require_view))
}

/// Order entry endpoints: need the `trade` scope.
fn trade() -> Router<AppState> {
    Router::new()
        .route(&path("/orders"), post(orders::create_order))
        .route(&path("/orders/preview"), post(orders::preview_order))
        .route(&path("/orders/batch_cancel"), post(orders::batch_cancel))
        .route(&path("/orders/close_position"), post(orders::close_position))
        .route(&path("/orders/edit"), post(orders::edit_order))
        .route(&path("/orders/edit_preview"), post(orders::edit_order_preview))
        .route_layer(from_fn(gate::require_trade))
}

/// All REST routes with their middleware.
pub fn router(state: &AppState) -> Router<AppState> {
    let private = view()
        .merge(trade())
        .route(&path("/key_permissions"), get(account::key_permissions))
        .route_layer(from_fn_with_state(state.clone(), gate::private));
    public(state)
        .merge(private)
        .layer(from_fn_with_state(state.clone(), gate::latency))
}

/// Fallback for unknown paths.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

/// Fallback for known paths with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

//! The boundary between the bot and an exchange. The paper exchange and the Coinbase client
//! both implement [`Broker`]; the engine knows nothing else about them.

pub mod paper;

use crate::domain::{AccountState, Candle, Order, OrderRequest, Product, Quote, Symbol};
use rust_decimal::Decimal;
use serde::Serialize;
use std::future::Future;

/// Candle widths the exchange serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    OneMinute,
    FiveMinute,
    FifteenMinute,
    OneHour,
    OneDay,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::OneMinute => "ONE_MINUTE",
            Granularity::FiveMinute => "FIVE_MINUTE",
            Granularity::FifteenMinute => "FIFTEEN_MINUTE",
            Granularity::OneHour => "ONE_HOUR",
            Granularity::OneDay => "ONE_DAY",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Granularity::OneMinute => 60,
            Granularity::FiveMinute => 300,
            Granularity::FifteenMinute => 900,
            Granularity::OneHour => 3600,
            Granularity::OneDay => 86_400,
        }
    }
}

/// What can go wrong talking to an exchange. Messages never contain credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The exchange refused the request on business grounds (e.g. INSUFFICIENT_FUND).
    #[error("rejected by the exchange: {reason}: {message}")]
    Rejected { reason: String, message: String },
    /// Credentials missing, malformed or refused (HTTP 401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The key lacks a permission (HTTP 403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Still rate limited after backing off.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// Timeouts, connection failures and 5xx after retries.
    #[error("exchange unavailable: {0}")]
    Unavailable(String),
    /// A response we could not understand.
    #[error("unexpected response: {0}")]
    Protocol(String),
}

/// The exchange's preview of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderPreview {
    pub order_total: Decimal,
    pub commission_total: Decimal,
    pub slippage: Option<Decimal>,
    pub best_bid: Option<Decimal>,
    pub best_ask: Option<Decimal>,
    pub preview_id: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CancelResult {
    pub order_id: String,
    pub success: bool,
    pub failure_reason: Option<String>,
}

/// An exchange as the bot sees it.
pub trait Broker: Send + Sync + 'static {
    /// Short name for logs ("paper", "coinbase").
    fn name(&self) -> &'static str;

    /// Called once at the start of every cycle (the paper exchange moves its prices here).
    fn begin_cycle(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    fn products(&self, symbols: &[Symbol]) -> impl Future<Output = Result<Vec<Product>, BrokerError>> + Send;

    /// Best bid/ask with sizes and the time of the data.
    fn quote(&self, symbol: &Symbol) -> impl Future<Output = Result<Quote, BrokerError>> + Send;

    /// The last `count` closed candles, oldest first.
    fn candles(
        &self,
        symbol: &Symbol,
        granularity: Granularity,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Candle>, BrokerError>> + Send;

    /// Cash (quote currency) and the bot's own positions (in spot: what its own orders bought,
    /// never coins on the account it did not buy).
    fn account(&self) -> impl Future<Output = Result<AccountState, BrokerError>> + Send;

    /// Place an order; returns the order as the exchange reports it right after. Retrying
    /// with the same `client_order_id` never creates a second order.
    fn place_order(&self, order: &OrderRequest) -> impl Future<Output = Result<Order, BrokerError>> + Send;

    fn preview_order(&self, order: &OrderRequest) -> impl Future<Output = Result<OrderPreview, BrokerError>> + Send;

    fn cancel_orders(
        &self,
        order_ids: &[String],
    ) -> impl Future<Output = Result<Vec<CancelResult>, BrokerError>> + Send;

    fn open_orders(&self) -> impl Future<Output = Result<Vec<Order>, BrokerError>> + Send;

    /// The bot's own inventory figures, for brokers that keep one apart from the account's
    /// balances (the paper exchange's account is the bot's alone: `None`).
    fn inventory(&self) -> Option<crate::inventory::InventoryReport> {
        None
    }
}

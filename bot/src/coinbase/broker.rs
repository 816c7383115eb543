//! [`CoinbaseBroker`]: the Advanced Trade API as the bot's [`Broker`].
//!
//! Symbols are the bot's (`BTC-USD`, `BTC-PERP`); each maps to an exchange product id
//! (`BTC-USD`, `BTC-PERP-INTX`), decided once at connect time (see [`super::connect`]).
//!
//! Accounting (how [`Broker::account`] makes the engine's equity right): the engine computes
//! equity as `cash + Σ (mark − entry_price) · quantity`.
//! - Perpetuals (INTX) carry their exchange entry price (`entry_vwap`); cash is the
//!   collateral balance (USD, plus USDC at par when perpetuals are traded: INTX collateral is
//!   USDC), so equity is collateral plus unrealised PnL, as the exchange reports it.
//! - Spot positions are the bot's own inventory ([`crate::inventory`]): what its own orders
//!   bought net of what they sold, capped to the balance, never the account's whole balance.
//!   Coins the bot did not buy are not a position, not in equity, not sellable (a spot SELL
//!   beyond the own inventory is refused here, before the exchange). A position's entry price
//!   is the bot's cost basis (volume-weighted price of its buys); that cost is folded into
//!   cash, so equity is exactly `own cash + Σ own inventory · mark`.
//! - Spot cash is the bot's own ([`crate::cash`]): the account's quote balance when its books
//!   were opened plus the cash flows of its own fills since, not the account's balance (other
//!   bots on the account, deposits and withdrawals are not its PnL). What of it the account
//!   does not hold available is reported as `unbacked_cash`, which the bot never sizes on.
//! - Only the quote currency and the bases of configured symbols count; other holdings are
//!   outside the bot's equity (they are not its to trade).
//! - A bot trading perpetuals keeps the account-level cash: the collateral's total balance
//!   (available + on hold), as the exchange reports it.

use super::inventory::{InventoryBook, InventoryOptions};
use super::rest::RestClient;
use super::wire::{self, Num};
use super::ws::MarketFeed;
use crate::broker::{Broker, BrokerError, CancelResult, Granularity, OrderPreview};
use crate::domain::{
    AccountState, Candle, Order, OrderKind, OrderRequest, OrderStatus, Position, Product, Quote, Side, Symbol,
    TimeInForce,
};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Candle buckets per request (the API's limit).
pub const CANDLES_PER_REQUEST: usize = 350;
/// Largest `count` of candles served.
const MAX_CANDLES: usize = 10_000;
/// Order ids per batch_cancel request.
const CANCEL_BATCH: usize = 100;
/// Smallest increment accepted: quantities divided by it stay far inside `Decimal`'s range.
const MIN_INCREMENT: Decimal = Decimal::from_parts(1, 0, 0, false, 12);
/// Pages followed before giving up on a paginated list (a loop guard).
const MAX_PAGES: usize = 1_000;

/// One tradable market: the bot's symbol and the exchange's product id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Market {
    pub symbol: Symbol,
    pub product_id: String,
}

/// The Coinbase Advanced Trade client.
pub struct CoinbaseBroker {
    rest: Arc<RestClient>,
    feed: Option<MarketFeed>,
    by_symbol: BTreeMap<Symbol, String>,
    by_product: HashMap<String, Symbol>,
    quote_currency: String,
    /// Without credentials (dry run only): the synthetic cash `account()` reports.
    synthetic_cash: Option<Decimal>,
    /// The INTX portfolio perpetual positions live in, when perpetuals are traded.
    intx_portfolio: Option<String>,
    /// A dry run: never change anything on the exchange (no orders, no cancels), even with
    /// credentials that could.
    read_only: bool,
    /// The bot's own spot inventory (with credentials).
    inventory: Option<Arc<InventoryBook>>,
}

impl std::fmt::Debug for CoinbaseBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoinbaseBroker")
            .field("rest", &self.rest)
            .field("markets", &self.by_symbol)
            .field("feed", &self.feed)
            .finish_non_exhaustive()
    }
}

/// A path segment built from exchange or user data: only characters ids actually use.
fn segment(what: &str, value: &str) -> Result<String, BrokerError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != "..";
    if ok {
        Ok(value.to_string())
    } else {
        Err(BrokerError::Protocol(format!(
            "{what} {:?} is not a valid id",
            wire::value_text(&Value::from(value))
        )))
    }
}

impl CoinbaseBroker {
    /// A broker over `rest` for `markets`. `feed` serves quotes when it has data; without
    /// credentials, `synthetic_cash` is the account's cash.
    pub fn new(
        rest: Arc<RestClient>,
        feed: Option<MarketFeed>,
        markets: &[Market],
        synthetic_cash: Option<Decimal>,
        intx_portfolio: Option<String>,
        read_only: bool,
    ) -> Self {
        let quote_currency = markets
            .iter()
            .find(|m| !m.symbol.is_perpetual())
            .map_or("USD", |m| m.symbol.quote())
            .to_string();
        Self {
            by_symbol: markets
                .iter()
                .map(|m| (m.symbol.clone(), m.product_id.clone()))
                .collect(),
            by_product: markets
                .iter()
                .map(|m| (m.product_id.clone(), m.symbol.clone()))
                .collect(),
            rest,
            feed,
            quote_currency,
            synthetic_cash,
            intx_portfolio,
            read_only,
            inventory: None,
        }
    }

    /// Keep the bot's own inventory (orders whose client order id starts with
    /// `options.prefix`); without it, no spot holding counts as the bot's.
    pub fn with_inventory(mut self, options: InventoryOptions) -> Self {
        if self.rest.has_credentials() {
            self.inventory = Some(Arc::new(InventoryBook::new(options)));
        }
        self
    }

    pub(super) fn inventory_book(&self) -> Option<&InventoryBook> {
        self.inventory.as_deref()
    }

    /// Product ids of the bot's spot markets.
    pub(super) fn spot_product_ids(&self) -> Vec<String> {
        self.by_symbol
            .iter()
            .filter(|(s, _)| !s.is_perpetual())
            .map(|(_, id)| id.clone())
            .collect()
    }

    pub(super) fn order_from_wire(&self, w: wire::WireOrder) -> Result<Order, BrokerError> {
        self.to_order(w)
    }

    fn record_own(&self, order: &Order) {
        if let Some(book) = &self.inventory {
            book.record([order]);
        }
    }

    /// Whether this broker refuses to change anything on the exchange (a dry run).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn rest(&self) -> &RestClient {
        &self.rest
    }

    pub fn feed(&self) -> Option<&MarketFeed> {
        self.feed.as_ref()
    }

    pub fn markets(&self) -> Vec<Market> {
        self.by_symbol
            .iter()
            .map(|(symbol, product_id)| Market {
                symbol: symbol.clone(),
                product_id: product_id.clone(),
            })
            .collect()
    }

    pub fn quote_currency(&self) -> &str {
        &self.quote_currency
    }

    /// The exchange product id of `symbol`. Spot symbols outside the configured set pass
    /// through unchanged (the manual order tool); perpetuals must have been enabled.
    pub fn product_id(&self, symbol: &Symbol) -> Result<String, BrokerError> {
        if let Some(id) = self.by_symbol.get(symbol) {
            return Ok(id.clone());
        }
        if symbol.is_perpetual() {
            return Err(BrokerError::NotFound(format!(
                "{symbol}: perpetuals are not enabled for this client (derivatives gating)"
            )));
        }
        Ok(symbol.to_string())
    }

    fn symbol_of(&self, product_id: &str) -> Result<Symbol, BrokerError> {
        if let Some(symbol) = self.by_product.get(product_id) {
            return Ok(symbol.clone());
        }
        if let Some(base) = product_id.strip_suffix("-PERP-INTX")
            && let Ok(symbol) = format!("{base}-PERP").parse()
        {
            return Ok(symbol);
        }
        product_id.parse().map_err(|_| {
            BrokerError::Protocol(format!(
                "product id {:?} does not map to a symbol",
                wire::value_text(&Value::from(product_id))
            ))
        })
    }

    fn needs_credentials(&self, what: &str) -> Result<(), BrokerError> {
        if self.rest.has_credentials() {
            Ok(())
        } else {
            Err(BrokerError::Unauthorized(format!(
                "{what} needs Coinbase credentials (running dry without them)"
            )))
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, BrokerError> {
        if self.rest.has_credentials() {
            self.rest.get(path, query).await
        } else {
            self.rest.get_public(&format!("/market{path}"), query).await
        }
    }

    /// `GET /orders/historical/{id}` as a domain order.
    pub async fn get_order(&self, order_id: &str) -> Result<Order, BrokerError> {
        self.needs_credentials("reading an order")?;
        let path = format!("/orders/historical/{}", segment("order id", order_id)?);
        let envelope: wire::OrderEnvelope = wire::decode("order", &self.rest.get(&path, &[]).await?)?;
        let order = envelope
            .order
            .ok_or_else(|| BrokerError::Protocol(format!("{path}: no order in the answer")))?;
        let order = self.to_order(order)?;
        self.record_own(&order);
        Ok(order)
    }

    fn to_product(&self, symbol: &Symbol, p: &wire::Product) -> Result<Product, BrokerError> {
        let field = |name: &str| format!("{symbol} {name}");
        let base_increment = p.base_increment.req(&field("base_increment"))?;
        let quote_increment = p.quote_increment.req(&field("quote_increment"))?;
        if base_increment < MIN_INCREMENT || quote_increment < MIN_INCREMENT {
            return Err(BrokerError::Protocol(format!(
                "{symbol}: increments must be at least {MIN_INCREMENT} (base {base_increment}, quote {quote_increment})"
            )));
        }
        let base_min_size = p
            .base_min_size
            .opt(&field("base_min_size"))?
            .unwrap_or(base_increment)
            .max(Decimal::ZERO);
        let base_max_size = p
            .base_max_size
            .opt(&field("base_max_size"))?
            .filter(|m| *m > Decimal::ZERO)
            .unwrap_or(wire::MAX_MAGNITUDE);
        let min_notional = p
            .quote_min_size
            .opt(&field("quote_min_size"))?
            .unwrap_or_default()
            .max(Decimal::ZERO);
        let status = p.status.as_deref().map(|s| s.trim().to_ascii_lowercase());
        let offline = status.as_deref().is_some_and(|s| !s.is_empty() && s != "online");
        let is_perpetual = p.is_perpetual();
        let max_leverage = match p
            .future_product_details
            .as_ref()
            .and_then(|d| d.perpetual_details.as_ref())
        {
            Some(d) => d
                .max_leverage
                .opt(&field("max_leverage"))?
                .filter(|l| *l > Decimal::ZERO),
            None => None,
        };
        Ok(Product {
            symbol: symbol.clone(),
            base_increment,
            quote_increment,
            base_min_size,
            base_max_size,
            min_notional,
            trading_disabled: p.trading_disabled.is_true() || p.is_disabled.is_true() || offline,
            cancel_only: p.cancel_only.is_true(),
            limit_only: p.limit_only.is_true(),
            post_only: p.post_only.is_true(),
            is_perpetual,
            max_leverage,
        })
    }

    fn to_order(&self, w: wire::WireOrder) -> Result<Order, BrokerError> {
        let order_id = w
            .order_id
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| BrokerError::Protocol("an order without order_id".into()))?;
        let id = order_id.clone();
        let field = |name: &str| format!("order {id} {name}");
        let product_id = w.product_id.unwrap_or_default();
        let symbol = self.symbol_of(&product_id)?;
        let side = match w.side.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("BUY") => Side::Buy,
            Some("SELL") => Side::Sell,
            _ => {
                return Err(BrokerError::Protocol(format!(
                    "{}: side is not BUY or SELL",
                    field("side")
                )));
            }
        };
        let filled_quantity = w.filled_size.opt(&field("filled_size"))?.unwrap_or_default();
        let (kind, quantity) = order_kind(w.order_configuration.as_ref(), &field("order_configuration"))?;
        let quantity = quantity.unwrap_or(filled_quantity);
        let status = match w.status.as_deref().unwrap_or_default() {
            "PENDING" | "QUEUED" => OrderStatus::Pending,
            "OPEN" | "CANCEL_QUEUED" | "EDIT_QUEUED" => OrderStatus::Open,
            "FILLED" => OrderStatus::Filled,
            "CANCELLED" => OrderStatus::Cancelled,
            "EXPIRED" => OrderStatus::Expired,
            "FAILED" => OrderStatus::Failed,
            other => {
                // Unknown means "maybe live": treat it as open so it can be cancelled.
                let status = wire::value_text(&Value::from(other));
                tracing::warn!(order_id = %order_id, status = %status, "unknown order status; treating the order as pending");
                OrderStatus::Pending
            }
        };
        let average_fill_price = w
            .average_filled_price
            .opt(&field("average_filled_price"))?
            .filter(|p| *p > Decimal::ZERO && filled_quantity > Decimal::ZERO);
        Ok(Order {
            order_id,
            client_order_id: w.client_order_id.unwrap_or_default(),
            symbol,
            side,
            quantity,
            kind,
            status,
            filled_quantity,
            average_fill_price,
            fees: w.total_fees.opt(&field("total_fees"))?.unwrap_or_default(),
        })
    }

    /// The `POST /orders` body (the preview uses it without `client_order_id`).
    fn order_body(&self, order: &OrderRequest, end_time: Option<&str>) -> Result<Value, BrokerError> {
        let product_id = self.product_id(&order.symbol)?;
        if order.quantity <= Decimal::ZERO {
            return Err(BrokerError::Rejected {
                reason: "INVALID_SIZE".into(),
                message: "order quantity must be positive".into(),
            });
        }
        let size = order.quantity.normalize().to_string();
        let price = |p: Decimal| -> Result<String, BrokerError> {
            if p <= Decimal::ZERO {
                return Err(BrokerError::Rejected {
                    reason: "INVALID_LIMIT_PRICE".into(),
                    message: "prices must be positive".into(),
                });
            }
            Ok(p.normalize().to_string())
        };
        let configuration = match (order.kind, order.tif, end_time) {
            (OrderKind::Market, _, _) => json!({ "market_market_ioc": { "base_size": size } }),
            (OrderKind::Limit { limit_price }, _, Some(end)) => json!({
                "limit_limit_gtd": { "base_size": size, "limit_price": price(limit_price)?, "end_time": end, "post_only": false }
            }),
            (OrderKind::Limit { limit_price }, TimeInForce::Gtc, None) => json!({
                "limit_limit_gtc": { "base_size": size, "limit_price": price(limit_price)?, "post_only": false }
            }),
            (OrderKind::Limit { limit_price }, TimeInForce::Fok, None) => json!({
                "limit_limit_fok": { "base_size": size, "limit_price": price(limit_price)? }
            }),
            (OrderKind::Limit { limit_price }, TimeInForce::Ioc, None) => json!({
                "sor_limit_ioc": { "base_size": size, "limit_price": price(limit_price)? }
            }),
            (
                OrderKind::StopLimit {
                    stop_price,
                    limit_price,
                },
                TimeInForce::Gtc,
                None,
            ) => json!({
                "stop_limit_stop_limit_gtc": {
                    "base_size": size,
                    "limit_price": price(limit_price)?,
                    "stop_price": price(stop_price)?,
                    // A buy stop triggers on a rise, a sell stop (stop-loss) on a fall.
                    "stop_direction": match order.side {
                        Side::Buy => "STOP_DIRECTION_STOP_UP",
                        Side::Sell => "STOP_DIRECTION_STOP_DOWN",
                    },
                }
            }),
            (OrderKind::StopLimit { .. }, tif, _) => {
                return Err(BrokerError::Rejected {
                    reason: "UNSUPPORTED_ORDER_CONFIGURATION".into(),
                    message: format!("stop-limit orders are good-till-cancelled only, not {}", tif.as_str()),
                });
            }
        };
        let mut body = json!({
            "client_order_id": order.client_order_id,
            "product_id": product_id,
            "side": order.side.as_str(),
            "order_configuration": configuration,
        });
        let map = body.as_object_mut().expect("a JSON object literal");
        if order.symbol.is_perpetual() {
            if let Some(leverage) = order.leverage {
                map.insert("leverage".into(), leverage.normalize().to_string().into());
            }
            map.insert("margin_type".into(), "CROSS".into());
        }
        if let Some(preview_id) = &order.preview_id {
            map.insert("preview_id".into(), preview_id.clone().into());
        }
        Ok(body)
    }

    /// Place a limit order good until `end_time` (RFC 3339): `limit_limit_gtd`.
    pub async fn place_order_until(&self, order: &OrderRequest, end_time: &str) -> Result<Order, BrokerError> {
        self.place(order, Some(end_time)).await
    }

    async fn place(&self, order: &OrderRequest, end_time: Option<&str>) -> Result<Order, BrokerError> {
        self.needs_credentials("placing an order")?;
        if self.read_only {
            return Err(BrokerError::Rejected {
                reason: "DRY_RUN".into(),
                message: "this is a dry run: no order is sent to the exchange".into(),
            });
        }
        if order.client_order_id.trim().is_empty() || order.client_order_id.len() > 128 {
            return Err(BrokerError::Rejected {
                reason: "INVALID_CLIENT_ORDER_ID".into(),
                message: "client_order_id must be 1 to 128 characters".into(),
            });
        }
        self.check_own_sell(&order.symbol, order.side, order.quantity).await?;
        let body = self.order_body(order, end_time)?;
        let timeout = Some(self.rest.options().order_timeout);
        // Retried inside with the same body, hence the same client_order_id: a replay
        // returns the original order instead of creating a second one.
        let bytes = self.rest.post("/orders", &body, timeout).await?;
        let response: wire::CreateOrderResponse = wire::decode("create order", &bytes)?;
        let order_id = response
            .success_response
            .and_then(|s| s.order_id)
            .or(response.order_id)
            .filter(|id| !id.trim().is_empty())
            .ok_or_else(|| {
                tracing::error!(client_order_id = %order.client_order_id, "order accepted without an order id; look it up by client order id");
                BrokerError::Protocol(format!(
                    "order {} accepted without an order id",
                    order.client_order_id
                ))
            })?;
        match self.get_order(&order_id).await {
            Ok(placed) => Ok(placed),
            Err(error) => {
                // The order exists; its status is unknown for now. Report it as pending
                // rather than as a failure (which could lead to placing it again).
                tracing::warn!(order_id = %order_id, %error, "order placed but its status could not be read");
                let pending = Order {
                    order_id,
                    client_order_id: order.client_order_id.clone(),
                    symbol: order.symbol.clone(),
                    side: order.side,
                    quantity: order.quantity,
                    kind: order.kind,
                    status: OrderStatus::Pending,
                    filled_quantity: Decimal::ZERO,
                    average_fill_price: None,
                    fees: Decimal::ZERO,
                };
                // Pending in the ledger: the next refresh reads what it became.
                self.record_own(&pending);
                Ok(pending)
            }
        }
    }

    /// All accounts (every page).
    pub async fn accounts(&self) -> Result<Vec<wire::Account>, BrokerError> {
        all_accounts(&self.rest).await
    }

    async fn quote_rest(&self, symbol: &Symbol, product_id: &str) -> Result<Quote, BrokerError> {
        let book = if self.rest.has_credentials() {
            let bytes = self
                .rest
                .get("/best_bid_ask", &[("product_ids", product_id.to_string())])
                .await?;
            let books: wire::BestBidAsk = wire::decode("best_bid_ask", &bytes)?;
            books
                .pricebooks
                .into_iter()
                .find(|b| b.product_id.as_deref() == Some(product_id))
        } else {
            let query = [("product_id", product_id.to_string()), ("limit", "1".to_string())];
            let bytes = self.rest.get_public("/market/product_book", &query).await?;
            wire::decode::<wire::ProductBook>("product_book", &bytes)?.pricebook
        };
        let book = book.ok_or_else(|| BrokerError::NotFound(format!("{symbol}: no order book for {product_id}")))?;
        let level = |levels: &[wire::Level], side: &str| -> Result<(Decimal, Decimal), BrokerError> {
            let level = levels
                .first()
                .ok_or_else(|| BrokerError::Unavailable(format!("{symbol}: the book has no {side}")))?;
            let price = level.price.req(&format!("{symbol} {side} price"))?;
            let size = level.size.opt(&format!("{symbol} {side} size"))?.unwrap_or_default();
            Ok((price, size.max(Decimal::ZERO)))
        };
        let (bid, bid_size) = level(&book.bids, "bid")?;
        let (ask, ask_size) = level(&book.asks, "ask")?;
        if bid <= Decimal::ZERO || ask <= bid {
            return Err(BrokerError::Protocol(format!(
                "{symbol}: unusable book (bid {bid}, ask {ask})"
            )));
        }
        let time = book
            .time
            .as_deref()
            .ok_or_else(|| BrokerError::Protocol(format!("{symbol}: the book has no time")))?;
        let time_ms = wire::parse_time_ms(&format!("{symbol} book time"), time)?;
        Ok(Quote {
            bid,
            bid_size,
            ask,
            ask_size,
            time_ms,
        })
    }

    /// A perpetuals bot's cash, account-level: the collateral's total balance (the quote
    /// currency, plus USDC at par for USD: INTX collateral is USDC). Nothing is unbacked.
    fn collateral(&self, accounts: &[wire::Account]) -> Result<(Decimal, Decimal), BrokerError> {
        let total_of = |currency: &str| balance_of(accounts, currency).map(|(a, h)| a + h);
        let mut cash = total_of(&self.quote_currency)?;
        if self.quote_currency == "USD" {
            cash += total_of("USDC")?;
        }
        Ok((cash, Decimal::ZERO))
    }

    /// A spot bot's own cash and the part of it the account does not hold available (see
    /// [`crate::cash`]). Without a book (no credentials) the account's balance is all there is.
    fn own_cash(&self, accounts: &[wire::Account]) -> Result<(Decimal, Decimal), BrokerError> {
        let (available, hold) = balance_of(accounts, &self.quote_currency)?;
        match self.inventory_book() {
            Some(book) => {
                let report = book.own_cash(&self.quote_currency, available + hold, available);
                Ok((report.cash, report.unbacked))
            }
            None => Ok((available + hold, Decimal::ZERO)),
        }
    }

    async fn intx_positions(&self, portfolio: &str) -> Result<Vec<Position>, BrokerError> {
        let path = format!("/intx/positions/{}", segment("portfolio", portfolio)?);
        let list: wire::IntxPositions = wire::decode("intx positions", &self.rest.get(&path, &[]).await?)?;
        let mut positions = Vec::new();
        for p in list.positions {
            let product_id = p.product_id.or(p.symbol).unwrap_or_default();
            let Ok(symbol) = self.symbol_of(&product_id) else {
                continue;
            };
            if !self.by_symbol.contains_key(&symbol) {
                continue;
            }
            let quantity = p.net_size.req(&format!("{product_id} net_size"))?;
            if quantity.is_zero() {
                continue;
            }
            let entry = p
                .entry_vwap
                .or(p.vwap)
                .map(|m| m.value)
                .unwrap_or_default()
                .req(&format!("{product_id} entry_vwap"))?;
            positions.push(Position {
                symbol,
                quantity,
                entry_price: entry,
            });
        }
        Ok(positions)
    }
}

/// The balance of `currency` over `accounts`: `(available, on hold)`.
fn balance_of(accounts: &[wire::Account], currency: &str) -> Result<(Decimal, Decimal), BrokerError> {
    let in_range = |t: Option<Decimal>| {
        t.filter(|t| t.abs() <= wire::MAX_MAGNITUDE)
            .ok_or_else(|| BrokerError::Protocol(format!("{currency}: balance out of range")))
    };
    let (mut available, mut hold) = (Decimal::ZERO, Decimal::ZERO);
    for a in accounts.iter().filter(|a| a.currency.as_deref() == Some(currency)) {
        let free = a
            .available_balance
            .value
            .opt(&format!("{currency} available_balance"))?;
        let held = a.hold.value.opt(&format!("{currency} hold"))?;
        available = in_range(available.checked_add(free.unwrap_or_default()))?;
        hold = in_range(hold.checked_add(held.unwrap_or_default()))?;
    }
    in_range(available.checked_add(hold))?;
    Ok((available, hold))
}

/// Every account of the key's portfolio, following `cursor` until `has_next` is false.
pub async fn all_accounts(rest: &RestClient) -> Result<Vec<wire::Account>, BrokerError> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = vec![("limit", "250".to_string())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page: wire::AccountsPage = wire::decode("accounts", &rest.get("/accounts", &query).await?)?;
        all.extend(page.accounts);
        match page.cursor.filter(|c| !c.is_empty()) {
            Some(next) if page.has_next.is_true() && cursor.as_ref() != Some(&next) => cursor = Some(next),
            _ => return Ok(all),
        }
    }
    Err(BrokerError::Protocol(format!("accounts: more than {MAX_PAGES} pages")))
}

/// The kind and base size of an `order_configuration`.
fn order_kind(
    configuration: Option<&Map<String, Value>>,
    field: &str,
) -> Result<(OrderKind, Option<Decimal>), BrokerError> {
    let Some((name, params)) = configuration.and_then(|c| c.iter().next()) else {
        return Ok((OrderKind::Market, None));
    };
    let num = |key: &str| -> Result<Option<Decimal>, BrokerError> {
        match params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value::<Num>(v.clone())
                .map_err(|_| BrokerError::Protocol(format!("{field}.{name}.{key} is not a decimal")))?
                .opt(&format!("{field}.{name}.{key}")),
        }
    };
    let base = num("base_size")?;
    let limit = num("limit_price")?;
    let kind = if name.starts_with("market_") {
        OrderKind::Market
    } else if name.starts_with("stop_limit_") {
        OrderKind::StopLimit {
            stop_price: num("stop_price")?.unwrap_or_default(),
            limit_price: limit.unwrap_or_default(),
        }
    } else if let Some(limit_price) = limit {
        OrderKind::Limit { limit_price }
    } else {
        OrderKind::Market
    };
    Ok((kind, base))
}

impl Broker for CoinbaseBroker {
    fn name(&self) -> &'static str {
        "coinbase"
    }

    async fn begin_cycle(&self) {
        if let Err(error) = self.refresh_inventory().await {
            tracing::warn!(%error, "own inventory not refreshed this cycle (the last ledger, capped to balances, stays in force)");
        }
    }

    fn inventory(&self) -> Option<crate::inventory::InventoryReport> {
        self.inventory.as_ref().map(|book| book.report())
    }

    async fn products(&self, symbols: &[Symbol]) -> Result<Vec<Product>, BrokerError> {
        if symbols.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<(Symbol, String)> = symbols
            .iter()
            .map(|s| Ok((s.clone(), self.product_id(s)?)))
            .collect::<Result<_, BrokerError>>()?;
        let query: Vec<(&str, String)> = ids.iter().map(|(_, id)| ("product_ids", id.clone())).collect();
        let page: wire::ProductsPage = wire::decode("products", &self.get("/products", &query).await?)?;
        ids.iter()
            .map(|(symbol, id)| {
                let product = page
                    .products
                    .iter()
                    .find(|p| p.product_id.as_deref() == Some(id.as_str()))
                    .ok_or_else(|| BrokerError::NotFound(format!("{symbol}: product {id} is not listed")))?;
                self.to_product(symbol, product)
            })
            .collect()
    }

    async fn quote(&self, symbol: &Symbol) -> Result<Quote, BrokerError> {
        let product_id = self.product_id(symbol)?;
        if let Some(quote) = self.feed.as_ref().and_then(|f| f.quote(&product_id)) {
            return Ok(quote);
        }
        self.quote_rest(symbol, &product_id).await
    }

    async fn candles(
        &self,
        symbol: &Symbol,
        granularity: Granularity,
        count: usize,
    ) -> Result<Vec<Candle>, BrokerError> {
        let count = count.min(MAX_CANDLES);
        if count == 0 {
            return Ok(Vec::new());
        }
        let product_id = segment("product id", &self.product_id(symbol)?)?;
        let step = granularity.seconds();
        let now = crate::clock::unix_seconds();
        // Start of the bucket still in progress: everything before it is closed.
        let open_bucket = now - now.rem_euclid(step);
        let mut bars: BTreeMap<i64, Candle> = BTreeMap::new();
        let mut end = open_bucket;
        let mut remaining = count;
        while remaining > 0 {
            let n = remaining.min(CANDLES_PER_REQUEST);
            let start = end - step * n as i64;
            let query = [
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("granularity", granularity.as_str().to_string()),
                ("limit", n.to_string()),
            ];
            let path = format!("/products/{product_id}/candles");
            let page: wire::CandlesPage = wire::decode("candles", &self.get(&path, &query).await?)?;
            let received = page.candles.len();
            for c in page.candles {
                let f = |name: &str| format!("{symbol} candle {name}");
                let bar_start = c.start.int(&f("start"))?;
                if bar_start < start || bar_start >= end {
                    continue;
                }
                bars.insert(
                    bar_start,
                    Candle {
                        start: bar_start,
                        open: c.open.req(&f("open"))?,
                        high: c.high.req(&f("high"))?,
                        low: c.low.req(&f("low"))?,
                        close: c.close.req(&f("close"))?,
                        volume: c.volume.opt(&f("volume"))?.unwrap_or_default(),
                    },
                );
            }
            if received == 0 {
                break; // no older history
            }
            end = start;
            remaining -= n;
        }
        let skip = bars.len().saturating_sub(count);
        Ok(bars.into_values().skip(skip).collect())
    }

    async fn account(&self) -> Result<AccountState, BrokerError> {
        if let Some(cash) = self.synthetic_cash {
            return Ok(AccountState {
                cash,
                ..AccountState::default()
            });
        }
        let accounts = self.accounts().await?;
        let total_of =
            |currency: &str| -> Result<Decimal, BrokerError> { balance_of(&accounts, currency).map(|b| b.0 + b.1) };
        let holdings = self
            .by_symbol
            .keys()
            .filter(|s| !s.is_perpetual())
            .map(|s| Ok((s.clone(), total_of(s.base())?)))
            .collect::<Result<Vec<_>, BrokerError>>()?;
        let own = self.own_spot(&holdings).await?;
        let trades_perpetuals = self.intx_portfolio.is_some() && self.by_symbol.keys().any(Symbol::is_perpetual);
        let (mut cash, unbacked_cash) = if trades_perpetuals {
            self.collateral(&accounts)?
        } else {
            self.own_cash(&accounts)?
        };
        let mut positions = Vec::new();
        for (symbol, quantity, cost) in own {
            if quantity.is_zero() {
                continue;
            }
            let entry_price = match cost {
                Some(cost) => cost,
                None => self.quote(&symbol).await?.mid(),
            };
            let value = quantity
                .checked_mul(entry_price)
                .filter(|v| v.abs() <= wire::MAX_MAGNITUDE)
                .ok_or_else(|| BrokerError::Protocol(format!("{symbol}: holding value out of range")))?;
            cash += value;
            positions.push(Position {
                symbol,
                quantity,
                entry_price,
            });
        }
        if let Some(portfolio) = self.intx_portfolio.as_deref().filter(|_| trades_perpetuals) {
            positions.extend(self.intx_positions(portfolio).await?);
        }
        Ok(AccountState {
            cash,
            positions,
            unbacked_cash,
        })
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<Order, BrokerError> {
        self.place(order, None).await
    }

    async fn preview_order(&self, order: &OrderRequest) -> Result<OrderPreview, BrokerError> {
        self.needs_credentials("previewing an order")?;
        let mut body = self.order_body(order, None)?;
        if let Some(map) = body.as_object_mut() {
            map.remove("client_order_id");
            map.remove("preview_id");
        }
        let bytes = self.rest.post("/orders/preview", &body, None).await?;
        let p: wire::PreviewResponse = wire::decode("order preview", &bytes)?;
        let strings = |values: &[Value]| -> Vec<String> {
            values
                .iter()
                .map(wire::value_text)
                .filter(|s| !wire::is_placeholder_reason(s))
                .collect()
        };
        let mut errors = strings(&p.errs);
        if p.success.0 == Some(false)
            && let Some(reason) = p.error_response.as_ref().and_then(wire::OrderError::reason)
        {
            errors.push(reason);
        }
        Ok(OrderPreview {
            order_total: p.order_total.opt("preview order_total")?.unwrap_or_default(),
            commission_total: p.commission_total.opt("preview commission_total")?.unwrap_or_default(),
            slippage: p.slippage.opt("preview slippage")?,
            best_bid: p.best_bid.opt("preview best_bid")?,
            best_ask: p.best_ask.opt("preview best_ask")?,
            preview_id: p.preview_id.filter(|id| !id.is_empty()),
            errors,
            warnings: strings(&p.warning),
        })
    }

    async fn cancel_orders(&self, order_ids: &[String]) -> Result<Vec<CancelResult>, BrokerError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.needs_credentials("cancelling orders")?;
        if self.read_only {
            // A dry run may see the account's real orders; they are not its to cancel.
            tracing::warn!(
                count = order_ids.len(),
                "dry run: not cancelling orders on the exchange"
            );
            return Ok(order_ids
                .iter()
                .map(|id| CancelResult {
                    order_id: id.clone(),
                    success: false,
                    failure_reason: Some("DRY_RUN".into()),
                })
                .collect());
        }
        let mut results = Vec::with_capacity(order_ids.len());
        for chunk in order_ids.chunks(CANCEL_BATCH) {
            let bytes = self
                .rest
                .post("/orders/batch_cancel", &json!({ "order_ids": chunk }), None)
                .await?;
            let response: wire::BatchCancelResponse = wire::decode("batch cancel", &bytes)?;
            for id in chunk {
                let item = response
                    .results
                    .iter()
                    .find(|r| r.order_id.as_deref() == Some(id.as_str()));
                results.push(match item {
                    Some(r) => CancelResult {
                        order_id: id.clone(),
                        success: r.success.is_true(),
                        failure_reason: (!r.success.is_true()).then(|| {
                            r.failure_reason
                                .clone()
                                .unwrap_or_else(|| "UNKNOWN_FAILURE_REASON".into())
                        }),
                    },
                    None => CancelResult {
                        order_id: id.clone(),
                        success: false,
                        failure_reason: Some("NO_RESULT".into()),
                    },
                });
            }
        }
        Ok(results)
    }

    async fn open_orders(&self) -> Result<Vec<Order>, BrokerError> {
        if !self.rest.has_credentials() {
            // A dry run without credentials never placed anything.
            return Ok(Vec::new());
        }
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query: Vec<(&str, String)> = vec![("order_status", "OPEN".into()), ("limit", "250".into())];
            query.extend(self.by_product.keys().map(|id| ("product_ids", id.clone())));
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let bytes = self.rest.get("/orders/historical/batch", &query).await?;
            let page: wire::OrdersPage = wire::decode("open orders", &bytes)?;
            for w in page.orders {
                // Only the bot's markets: other orders on the account are not ours to manage.
                if w.product_id.as_deref().is_some_and(|p| self.by_product.contains_key(p)) {
                    let order = self.to_order(w)?;
                    self.record_own(&order);
                    if order.status.is_open() {
                        orders.push(order);
                    }
                }
            }
            match page.cursor.filter(|c| !c.is_empty()) {
                Some(next) if page.has_next.is_true() && cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => return Ok(orders),
            }
        }
        Err(BrokerError::Protocol(format!(
            "open orders: more than {MAX_PAGES} pages"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coinbase::rest::{RestClient, RestOptions};
    use rust_decimal_macros::dec;

    fn broker() -> CoinbaseBroker {
        let rest =
            Arc::new(RestClient::new(RestOptions::new("http://127.0.0.1:9/api/v3/brokerage", "t"), None).unwrap());
        let markets = [
            Market {
                symbol: "BTC-USD".parse().unwrap(),
                product_id: "BTC-USD".into(),
            },
            Market {
                symbol: "ETH-PERP".parse().unwrap(),
                product_id: "ETH-PERP-INTX".into(),
            },
        ];
        CoinbaseBroker::new(rest, None, &markets, Some(dec!(1000)), None, false)
    }

    fn request(kind: OrderKind, tif: TimeInForce, symbol: &str) -> OrderRequest {
        OrderRequest {
            client_order_id: "c1".into(),
            symbol: symbol.parse().unwrap(),
            side: Side::Sell,
            quantity: dec!(0.010),
            kind,
            tif,
            reduce_only: false,
            leverage: Some(dec!(2)),
            preview_id: Some("p".into()),
        }
    }

    #[test]
    fn order_bodies_per_kind() {
        let b = broker();
        let body = b
            .order_body(&request(OrderKind::Market, TimeInForce::Ioc, "BTC-USD"), None)
            .unwrap();
        assert_eq!(
            body["order_configuration"],
            json!({"market_market_ioc": {"base_size": "0.01"}})
        );
        assert!(body.get("leverage").is_none(), "no leverage on spot");
        assert_eq!(body["preview_id"], "p");
        let limit = OrderKind::Limit {
            limit_price: dec!(100.50),
        };
        let fok = b
            .order_body(&request(limit, TimeInForce::Fok, "ETH-PERP"), None)
            .unwrap();
        assert_eq!(fok["product_id"], "ETH-PERP-INTX");
        assert_eq!(fok["order_configuration"]["limit_limit_fok"]["limit_price"], "100.5");
        assert_eq!(
            (fok["leverage"].as_str(), fok["margin_type"].as_str()),
            (Some("2"), Some("CROSS"))
        );
        let gtd = b
            .order_body(
                &request(limit, TimeInForce::Gtc, "BTC-USD"),
                Some("2030-01-01T00:00:00Z"),
            )
            .unwrap();
        assert_eq!(
            gtd["order_configuration"]["limit_limit_gtd"]["end_time"],
            "2030-01-01T00:00:00Z"
        );
        let stop = OrderKind::StopLimit {
            stop_price: dec!(90),
            limit_price: dec!(89),
        };
        let s = b.order_body(&request(stop, TimeInForce::Gtc, "BTC-USD"), None).unwrap();
        assert_eq!(
            s["order_configuration"]["stop_limit_stop_limit_gtc"]["stop_direction"],
            "STOP_DIRECTION_STOP_DOWN"
        );
        assert!(b.order_body(&request(stop, TimeInForce::Ioc, "BTC-USD"), None).is_err());
        assert!(
            b.order_body(&request(OrderKind::Market, TimeInForce::Ioc, "SOL-PERP"), None)
                .is_err()
        );
    }

    #[test]
    fn wire_orders_map_to_domain_orders() {
        let b = broker();
        let w: wire::WireOrder = serde_json::from_value(json!({
            "order_id": "o1", "client_order_id": "c1", "product_id": "ETH-PERP-INTX", "side": "BUY",
            "status": "OPEN", "filled_size": "0", "average_filled_price": "0", "total_fees": "0",
            "order_configuration": {"limit_limit_gtc": {"base_size": "1.5", "limit_price": "3000", "post_only": false}}
        }))
        .unwrap();
        let o = b.to_order(w).unwrap();
        assert_eq!(o.symbol.as_str(), "ETH-PERP");
        assert_eq!(
            (o.quantity, o.status, o.average_fill_price),
            (dec!(1.5), OrderStatus::Open, None)
        );
        assert_eq!(
            o.kind,
            OrderKind::Limit {
                limit_price: dec!(3000)
            }
        );
        let odd: wire::WireOrder = serde_json::from_value(json!({
            "order_id": "o2", "product_id": "BTC-USD", "side": "SELL", "status": "SOMETHING_NEW",
            "order_configuration": {"trigger_bracket_gtc": {"base_size": "1", "limit_price": "5", "stop_trigger_price": "4"}}
        }))
        .unwrap();
        assert_eq!(b.to_order(odd).unwrap().status, OrderStatus::Pending);
        assert!(segment("order id", "../accounts").is_err());
        assert_eq!(MIN_INCREMENT, dec!(0.000000000001));
    }
}

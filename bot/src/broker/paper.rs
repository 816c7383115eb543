//! The embedded paper exchange: deterministic seeded price paths, a top-of-book quote around
//! each mid, fills with fees and slippage, resting limit and stop-limit orders, idempotent
//! client order ids, and margin-style accounting (cash moves by realised PnL and fees; equity
//! is cash plus unrealised PnL).
//!
//! Everything is synchronous under one lock, so the backtest can drive it directly; the async
//! [`Broker`] impl is a thin wrapper.

use super::{Broker, BrokerError, CancelResult, Granularity, OrderPreview};
use crate::config::PaperConfig;
use crate::domain::{
    AccountState, Candle, Fill, Order, OrderKind, OrderRequest, OrderStatus, Position, Product, Quote, Side, Symbol,
    TimeInForce,
};
use crate::execution::quantize::floor_to;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Starting prices and rules of the symbols the paper exchange knows (others start at 100).
fn listing(symbol: &Symbol) -> (Decimal, Decimal, Decimal, Decimal) {
    // (price, base increment, quote increment, base min size)
    match symbol.base() {
        "BTC" => (dec!(50000), dec!(0.00000001), dec!(0.01), dec!(0.00001)),
        "ETH" => (dec!(3000), dec!(0.00000001), dec!(0.01), dec!(0.0001)),
        "SOL" => (dec!(150), dec!(0.001), dec!(0.01), dec!(0.01)),
        "XRP" => (dec!(0.6), dec!(0.1), dec!(0.0001), dec!(1)),
        "LTC" => (dec!(80), dec!(0.0001), dec!(0.01), dec!(0.01)),
        "ADA" => (dec!(0.45), dec!(0.1), dec!(0.0001), dec!(1)),
        "DOGE" => (dec!(0.15), dec!(0.1), dec!(0.00001), dec!(1)),
        "BCH" => (dec!(400), dec!(0.0001), dec!(0.01), dec!(0.001)),
        "AVAX" => (dec!(35), dec!(0.001), dec!(0.01), dec!(0.01)),
        "LINK" => (dec!(15), dec!(0.01), dec!(0.001), dec!(0.1)),
        _ => (dec!(100), dec!(0.001), dec!(0.01), dec!(0.001)),
    }
}

/// Notional resting at each side of the paper book.
const TOUCH_NOTIONAL: Decimal = dec!(5000000);
const BPS: Decimal = dec!(10000);

struct Market {
    product: Product,
    mid: Decimal,
    rng: ChaCha8Rng,
}

/// How many finished orders (and fills) a paper exchange remembers at least, unless told
/// otherwise ([`PaperExchange::remembering`]): a client order id sent again within them is
/// answered with the order it placed, as the exchange does. Older ones are forgotten (at most
/// twice this many are kept), so a paper run of weeks holds bounded memory.
pub const HISTORY: usize = 1000;

struct PaperState {
    config: PaperConfig,
    markets: BTreeMap<Symbol, Market>,
    cash: Decimal,
    positions: BTreeMap<Symbol, Position>,
    /// Every open order and the latest finished ones, oldest first.
    orders: Vec<Order>,
    /// Indices of orders still resting (so matching never scans the whole history).
    resting: Vec<usize>,
    by_client_id: HashMap<String, usize>,
    /// Orders placed so far (their ids count on).
    placed: u64,
    /// The latest fills, oldest first.
    fills: Vec<Fill>,
    /// Fills so far.
    filled: usize,
    realized_pnl: Decimal,
    fees: Decimal,
    allow_shorts: bool,
    clock_ms: i64,
    tick: u64,
    /// Finished orders (and fills) remembered at least; at most twice as many are kept.
    history: usize,
}

/// The paper exchange. Cheap to clone (shared state).
#[derive(Clone)]
pub struct PaperExchange {
    state: Arc<Mutex<PaperState>>,
}

impl PaperExchange {
    /// A paper exchange listing `symbols`; shorts are allowed when `derivatives` is set.
    pub fn new(config: &PaperConfig, symbols: &[Symbol], derivatives: bool) -> Self {
        let markets = symbols
            .iter()
            .enumerate()
            .map(|(i, symbol)| {
                let (price, base_increment, quote_increment, base_min_size) = listing(symbol);
                let mut product = Product::spot("BTC-USD", base_increment, quote_increment, base_min_size);
                product.symbol = symbol.clone();
                product.is_perpetual = symbol.is_perpetual();
                product.max_leverage = product.is_perpetual.then_some(dec!(20));
                let rng = ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
                (
                    symbol.clone(),
                    Market {
                        product,
                        mid: price,
                        rng,
                    },
                )
            })
            .collect();
        let state = PaperState {
            config: config.clone(),
            markets,
            cash: config.starting_cash,
            positions: BTreeMap::new(),
            orders: Vec::new(),
            resting: Vec::new(),
            by_client_id: HashMap::new(),
            placed: 0,
            fills: Vec::new(),
            filled: 0,
            realized_pnl: Decimal::ZERO,
            fees: Decimal::ZERO,
            allow_shorts: derivatives,
            clock_ms: 0,
            tick: 0,
            history: HISTORY,
        };
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The same exchange remembering at least `finished` finished orders and fills instead of
    /// [`HISTORY`] (at least one). A replay, whose client order ids never repeat, needs few.
    pub fn remembering(self, finished: usize) -> Self {
        self.lock().history = finished.max(1);
        self
    }

    fn lock(&self) -> MutexGuard<'_, PaperState> {
        // A panic while holding the lock cannot leave the books half-updated in a way that
        // matters more than stopping; keep serving with the last state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Move every price one step along its seeded path and match resting orders.
    pub fn advance(&self) {
        let mut s = self.lock();
        let step = i64::from(s.config.step_bps) * 100;
        s.tick += 1;
        for market in s.markets.values_mut() {
            // A step in hundredths of a basis point: integers only, no floats.
            let hundredths_bp = if step > 0 {
                market.rng.gen_range(-step..=step)
            } else {
                0
            };
            let factor = Decimal::ONE + Decimal::new(hundredths_bp, 6);
            market.mid = (market.mid * factor).max(market.product.quote_increment);
        }
        s.match_resting();
    }

    /// Set a symbol's mid price (tests, backtests, price shocks) and match resting orders.
    pub fn set_mark(&self, symbol: &Symbol, price: Decimal) {
        let mut s = self.lock();
        if let Some(market) = s.markets.get_mut(symbol) {
            market.mid = price;
        }
        s.match_resting();
    }

    /// Set the simulated clock (unix milliseconds) quotes and fills are stamped with; zero
    /// means the wall clock.
    pub fn set_clock_ms(&self, clock_ms: i64) {
        self.lock().clock_ms = clock_ms;
    }

    pub fn quote_now(&self, symbol: &Symbol) -> Result<Quote, BrokerError> {
        let s = self.lock();
        s.quote(symbol)
    }

    pub fn product_of(&self, symbol: &Symbol) -> Option<Product> {
        self.lock().markets.get(symbol).map(|m| m.product.clone())
    }

    pub fn account_now(&self) -> AccountState {
        let s = self.lock();
        AccountState {
            cash: s.cash,
            positions: s.positions.values().cloned().collect(),
            unbacked_cash: Decimal::ZERO,
        }
    }

    /// Realised PnL (before fees) and fees paid so far.
    pub fn totals(&self) -> (Decimal, Decimal) {
        let s = self.lock();
        (s.realized_pnl, s.fees)
    }

    /// The latest fills (at least the last [`HISTORY`], or as many as [`Self::remembering`]
    /// says), oldest first.
    pub fn fills(&self) -> Vec<Fill> {
        self.lock().fills.clone()
    }

    /// How many fills there were in all.
    pub fn fill_count(&self) -> usize {
        self.lock().filled
    }

    /// Every open order and the latest finished ones (at least the last [`HISTORY`], or as
    /// many as [`Self::remembering`] says).
    pub fn orders(&self) -> Vec<Order> {
        self.lock().orders.clone()
    }

    /// Place an order synchronously.
    pub fn place(&self, request: &OrderRequest) -> Result<Order, BrokerError> {
        self.lock().place(request)
    }

    pub fn cancel(&self, order_ids: &[String]) -> Vec<CancelResult> {
        let mut s = self.lock();
        order_ids
            .iter()
            .map(|id| match s.orders.iter_mut().find(|o| &o.order_id == id) {
                Some(order) if order.status.is_open() => {
                    order.status = OrderStatus::Cancelled;
                    CancelResult {
                        order_id: id.clone(),
                        success: true,
                        failure_reason: None,
                    }
                }
                Some(_) => CancelResult {
                    order_id: id.clone(),
                    success: false,
                    failure_reason: Some("ORDER_NOT_OPEN".into()),
                },
                None => CancelResult {
                    order_id: id.clone(),
                    success: false,
                    failure_reason: Some("UNKNOWN_ORDER".into()),
                },
            })
            .collect()
    }
}

impl PaperState {
    fn now_ms(&self) -> i64 {
        if self.clock_ms != 0 {
            self.clock_ms
        } else {
            crate::clock::unix_ms()
        }
    }

    fn quote(&self, symbol: &Symbol) -> Result<Quote, BrokerError> {
        let market = self
            .markets
            .get(symbol)
            .ok_or_else(|| BrokerError::NotFound(format!("the paper exchange does not list {symbol}")))?;
        let half_spread = market.mid * self.config.spread_bps / BPS / Decimal::TWO;
        let increment = market.product.quote_increment;
        let bid = floor_to(market.mid - half_spread, increment).max(increment);
        let ask = crate::execution::quantize::ceil_to(market.mid + half_spread, increment).max(bid);
        Ok(Quote {
            bid,
            bid_size: floor_to(TOUCH_NOTIONAL / bid, market.product.base_increment),
            ask,
            ask_size: floor_to(TOUCH_NOTIONAL / ask, market.product.base_increment),
            time_ms: self.now_ms(),
        })
    }

    fn reject(reason: &str, message: impl Into<String>) -> BrokerError {
        BrokerError::Rejected {
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    fn place(&mut self, request: &OrderRequest) -> Result<Order, BrokerError> {
        if let Some(&index) = self.by_client_id.get(&request.client_order_id) {
            return Ok(self.orders[index].clone());
        }
        let market = self
            .markets
            .get(&request.symbol)
            .ok_or_else(|| Self::reject("INVALID_PRODUCT_ID", format!("{} is not listed", request.symbol)))?;
        let product = &market.product;
        if request.quantity <= Decimal::ZERO || (request.quantity / product.base_increment).fract() != Decimal::ZERO {
            return Err(Self::reject(
                "INVALID_SIZE_PRECISION",
                "size is not a multiple of the base increment",
            ));
        }
        if request.quantity < product.base_min_size {
            return Err(Self::reject("INVALID_SIZE", "size is below the minimum"));
        }
        if let Some(price) = request.kind.limit_price()
            && (price <= Decimal::ZERO || (price / product.quote_increment).fract() != Decimal::ZERO)
        {
            return Err(Self::reject(
                "INVALID_PRICE_PRECISION",
                "price is not a multiple of the quote increment",
            ));
        }
        let position = self
            .positions
            .get(&request.symbol)
            .map(|p| p.quantity)
            .unwrap_or_default();
        let after = position + request.side.sign() * request.quantity;
        if after < Decimal::ZERO && !self.allow_shorts && !product.is_perpetual {
            return Err(Self::reject(
                "INSUFFICIENT_FUND",
                format!("cannot sell more {} than held", request.symbol.base()),
            ));
        }
        self.placed += 1;
        let order = Order {
            order_id: format!("paper-{}", self.placed),
            client_order_id: request.client_order_id.clone(),
            symbol: request.symbol.clone(),
            side: request.side,
            quantity: request.quantity,
            kind: request.kind,
            status: OrderStatus::Open,
            filled_quantity: Decimal::ZERO,
            average_fill_price: None,
            fees: Decimal::ZERO,
        };
        let index = self.orders.len();
        self.orders.push(order);
        self.by_client_id.insert(request.client_order_id.clone(), index);
        let filled = self.try_fill(index, true)?;
        if !filled && matches!(request.tif, TimeInForce::Ioc | TimeInForce::Fok) {
            self.orders[index].status = OrderStatus::Cancelled;
        } else if !filled {
            self.resting.push(index);
        }
        let placed = self.orders[index].clone();
        self.forget_old_orders();
        Ok(placed)
    }

    /// Once twice `history` orders have finished, keep of them only the latest `history` (and
    /// every open one): amortised, each order is copied at most once more.
    fn forget_old_orders(&mut self) {
        let history = self.history;
        if self.orders.len() - self.resting.len() < 2 * history {
            return;
        }
        let mut finished_kept = 0;
        let mut kept: Vec<Order> = std::mem::take(&mut self.orders)
            .into_iter()
            .rev()
            .filter(|order| {
                let keep = order.status.is_open() || finished_kept < history;
                finished_kept += usize::from(keep && !order.status.is_open());
                keep
            })
            .collect();
        kept.reverse();
        self.by_client_id = kept
            .iter()
            .enumerate()
            .map(|(index, order)| (order.client_order_id.clone(), index))
            .collect();
        self.resting = (0..kept.len()).filter(|&i| kept[i].status.is_open()).collect();
        self.orders = kept;
    }

    /// Fill order `index` if its price condition holds. Market orders always fill.
    fn try_fill(&mut self, index: usize, taker: bool) -> Result<bool, BrokerError> {
        let order = self.orders[index].clone();
        let quote = self.quote(&order.symbol)?;
        let touch = quote.taker_price(order.side);
        let marketable = |limit: Decimal| match order.side {
            Side::Buy => touch <= limit,
            Side::Sell => touch >= limit,
        };
        let price = match order.kind {
            OrderKind::Market => {
                let slip = touch * self.config.slippage_bps / BPS;
                match order.side {
                    Side::Buy => touch + slip,
                    Side::Sell => touch - slip,
                }
            }
            OrderKind::Limit { limit_price } if marketable(limit_price) => {
                if taker {
                    touch
                } else {
                    limit_price
                }
            }
            OrderKind::StopLimit {
                stop_price,
                limit_price,
            } => {
                let triggered = match order.side {
                    Side::Buy => quote.ask >= stop_price,
                    Side::Sell => quote.bid <= stop_price,
                };
                if !(triggered && marketable(limit_price)) {
                    return Ok(false);
                }
                limit_price
            }
            OrderKind::Limit { .. } => return Ok(false),
        };
        let fee = order.quantity * price * self.config.fee_bps / BPS;
        if order.side == Side::Buy && !self.allow_shorts && !order.symbol.is_perpetual() {
            let committed: Decimal = self
                .positions
                .values()
                .filter(|p| !p.symbol.is_perpetual() && p.quantity > Decimal::ZERO)
                .map(|p| p.quantity * p.entry_price)
                .sum();
            if order.quantity * price + fee > self.cash - committed {
                self.orders[index].status = OrderStatus::Failed;
                return Err(Self::reject("INSUFFICIENT_FUND", "not enough quote currency"));
            }
        }
        self.apply_fill(&order.symbol, order.side, order.quantity, price, fee);
        let time_ms = self.now_ms();
        if self.fills.len() >= 2 * self.history {
            self.fills.drain(..self.fills.len() - self.history);
        }
        self.filled += 1;
        self.fills.push(Fill {
            order_id: order.order_id.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            quantity: order.quantity,
            price,
            fee,
            time_ms,
        });
        let filled = &mut self.orders[index];
        filled.status = OrderStatus::Filled;
        filled.filled_quantity = order.quantity;
        filled.average_fill_price = Some(price);
        filled.fees = fee;
        Ok(true)
    }

    fn match_resting(&mut self) {
        if self.resting.is_empty() {
            return;
        }
        for index in std::mem::take(&mut self.resting) {
            if self.orders[index].status == OrderStatus::Open {
                // A resting order that cannot be funded any more is failed, not retried.
                let _ = self.try_fill(index, false);
            }
            if self.orders[index].status == OrderStatus::Open {
                self.resting.push(index);
            }
        }
    }

    /// Margin-style accounting: realised PnL on the closed part, average price on the rest.
    fn apply_fill(&mut self, symbol: &Symbol, side: Side, quantity: Decimal, price: Decimal, fee: Decimal) {
        self.cash -= fee;
        self.fees += fee;
        let signed = side.sign() * quantity;
        let position = self.positions.entry(symbol.clone()).or_insert_with(|| Position {
            symbol: symbol.clone(),
            quantity: Decimal::ZERO,
            entry_price: price,
        });
        let old = position.quantity;
        if old.is_zero() || old.is_sign_positive() == signed.is_sign_positive() {
            let new_quantity = old + signed;
            position.entry_price = (old * position.entry_price + signed * price) / new_quantity;
            position.quantity = new_quantity;
        } else {
            let closed = signed.abs().min(old.abs());
            let realized = (price - position.entry_price)
                * closed
                * if old.is_sign_negative() {
                    Decimal::NEGATIVE_ONE
                } else {
                    Decimal::ONE
                };
            self.cash += realized;
            self.realized_pnl += realized;
            position.quantity = old + signed;
            if position.quantity.is_zero() {
                self.positions.remove(symbol);
            } else if position.quantity.is_sign_positive() != old.is_sign_positive() {
                position.entry_price = price;
            }
        }
    }

    /// Deterministic history of `count` bars ending at the current mid.
    fn candles(&self, symbol: &Symbol, granularity: Granularity, count: usize) -> Result<Vec<Candle>, BrokerError> {
        let market = self
            .markets
            .get(symbol)
            .ok_or_else(|| BrokerError::NotFound(format!("the paper exchange does not list {symbol}")))?;
        let symbol_seed = symbol
            .as_str()
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ symbol_seed ^ self.tick);
        let now = self.now_ms() / 1000;
        let mut close = market.mid;
        let mut bars = Vec::with_capacity(count);
        // Bar-to-bar moves uniform in ±range bps: about 45% a year at every granularity.
        let range = match granularity {
            Granularity::OneMinute => 12,
            Granularity::FiveMinute => 27,
            Granularity::FifteenMinute => 46,
            Granularity::OneHour => 80,
            Granularity::OneDay => 400,
        };
        for i in 0..count {
            let open = close * (Decimal::ONE + Decimal::new(rng.gen_range(-range..=range), 4));
            let (high, low) = (open.max(close) * dec!(1.002), open.min(close) * dec!(0.998));
            let volume = Decimal::from(rng.gen_range(50..150));
            let start = now - granularity.seconds() * (i as i64 + 1);
            bars.push(Candle {
                start,
                open,
                high,
                low,
                close,
                volume,
            });
            close = open;
        }
        bars.reverse();
        Ok(bars)
    }
}

impl Broker for PaperExchange {
    fn name(&self) -> &'static str {
        "paper"
    }

    async fn begin_cycle(&self) {
        self.advance();
    }

    async fn products(&self, symbols: &[Symbol]) -> Result<Vec<Product>, BrokerError> {
        symbols
            .iter()
            .map(|s| {
                self.product_of(s)
                    .ok_or_else(|| BrokerError::NotFound(format!("the paper exchange does not list {s}")))
            })
            .collect()
    }

    async fn quote(&self, symbol: &Symbol) -> Result<Quote, BrokerError> {
        self.quote_now(symbol)
    }

    async fn candles(
        &self,
        symbol: &Symbol,
        granularity: Granularity,
        count: usize,
    ) -> Result<Vec<Candle>, BrokerError> {
        self.lock().candles(symbol, granularity, count)
    }

    async fn account(&self) -> Result<AccountState, BrokerError> {
        Ok(self.account_now())
    }

    async fn place_order(&self, order: &OrderRequest) -> Result<Order, BrokerError> {
        self.place(order)
    }

    async fn preview_order(&self, order: &OrderRequest) -> Result<OrderPreview, BrokerError> {
        let s = self.lock();
        let quote = s.quote(&order.symbol)?;
        let price = order.kind.limit_price().unwrap_or(quote.taker_price(order.side));
        let total = order.quantity * price;
        Ok(OrderPreview {
            order_total: total,
            commission_total: total * s.config.fee_bps / BPS,
            slippage: Some(s.config.slippage_bps),
            best_bid: Some(quote.bid),
            best_ask: Some(quote.ask),
            preview_id: None,
            errors: Vec::new(),
            warnings: Vec::new(),
        })
    }

    async fn cancel_orders(&self, order_ids: &[String]) -> Result<Vec<CancelResult>, BrokerError> {
        Ok(self.cancel(order_ids))
    }

    async fn open_orders(&self) -> Result<Vec<Order>, BrokerError> {
        Ok(self
            .lock()
            .orders
            .iter()
            .filter(|o| o.status.is_open())
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> (PaperExchange, Symbol) {
        let config = PaperConfig {
            fee_bps: dec!(10),
            spread_bps: Decimal::ZERO,
            slippage_bps: Decimal::ZERO,
            ..Default::default()
        };
        let btc: Symbol = "BTC-PERP".parse().unwrap();
        (PaperExchange::new(&config, std::slice::from_ref(&btc), true), btc)
    }

    fn market(symbol: &Symbol, side: Side, quantity: Decimal, id: &str) -> OrderRequest {
        OrderRequest {
            client_order_id: id.into(),
            symbol: symbol.clone(),
            side,
            quantity,
            kind: OrderKind::Market,
            tif: TimeInForce::Ioc,
            reduce_only: false,
            leverage: None,
            preview_id: None,
        }
    }

    /// The reference's scenario: buy 1 BTC at 50000, sell at 51000, fees 50 + 51.
    #[test]
    fn round_trip_pnl_matches_the_reference() {
        let (ex, btc) = exchange();
        ex.set_mark(&btc, dec!(50000));
        ex.place(&market(&btc, Side::Buy, dec!(1), "a")).unwrap();
        ex.set_mark(&btc, dec!(51000));
        ex.place(&market(&btc, Side::Sell, dec!(1), "b")).unwrap();
        let (pnl, fees) = ex.totals();
        assert_eq!((pnl, fees, pnl - fees), (dec!(1000), dec!(101), dec!(899)));
        assert_eq!(ex.account_now().cash, dec!(100000) + dec!(899));
        assert!(ex.account_now().positions.is_empty());
    }

    #[test]
    fn short_loss_and_stop_loss_scenarios() {
        let (ex, btc) = exchange();
        ex.set_mark(&btc, dec!(50000));
        ex.place(&market(&btc, Side::Sell, dec!(1), "s1")).unwrap();
        ex.set_mark(&btc, dec!(50200));
        ex.place(&market(&btc, Side::Buy, dec!(1), "s2")).unwrap();
        assert_eq!(ex.totals().0, dec!(-200));

        let (ex, btc) = exchange();
        ex.set_mark(&btc, dec!(50000));
        ex.place(&market(&btc, Side::Buy, dec!(1), "l1")).unwrap();
        let mut stop = market(&btc, Side::Sell, dec!(1), "stop");
        stop.kind = OrderKind::StopLimit {
            stop_price: dec!(49500),
            limit_price: dec!(49500),
        };
        stop.tif = TimeInForce::Gtc;
        assert_eq!(ex.place(&stop).unwrap().status, OrderStatus::Open);
        ex.set_mark(&btc, dec!(49500));
        assert_eq!(ex.totals().0, dec!(-500));
        assert_eq!(ex.orders()[1].status, OrderStatus::Filled);
    }

    #[test]
    fn replaying_a_client_order_id_returns_the_original_order() {
        let (ex, btc) = exchange();
        let first = ex.place(&market(&btc, Side::Buy, dec!(0.1), "same")).unwrap();
        let again = ex.place(&market(&btc, Side::Buy, dec!(0.1), "same")).unwrap();
        assert_eq!(first.order_id, again.order_id);
        assert_eq!(ex.orders().len(), 1);
        assert_eq!(ex.account_now().position(&btc), dec!(0.1));
    }

    #[test]
    fn a_long_run_remembers_the_latest_orders_and_every_open_one_in_bounded_memory() {
        let (ex, btc) = exchange();
        ex.set_mark(&btc, dec!(50000));
        let mut resting = market(&btc, Side::Buy, dec!(0.1), "resting");
        resting.kind = OrderKind::Limit { limit_price: dec!(1) };
        resting.tif = TimeInForce::Gtc;
        let open = ex.place(&resting).unwrap();
        let orders = 5 * HISTORY;
        for i in 0..orders {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            ex.place(&market(&btc, side, dec!(0.1), &format!("o-{i}"))).unwrap();
        }
        assert_eq!(ex.fill_count(), orders, "every fill counted");
        let kept = ex.orders();
        assert!(kept.len() <= 2 * HISTORY + 1, "{} orders kept", kept.len());
        assert!(ex.fills().len() <= 2 * HISTORY);
        assert_eq!(kept[0].order_id, open.order_id, "the open order is never forgotten");
        assert!(ex.cancel(std::slice::from_ref(&open.order_id))[0].success);
        // The latest ones are still answered as placed, without a second fill.
        let last = format!("o-{}", orders - 1);
        let again = ex.place(&market(&btc, Side::Sell, dec!(0.1), &last)).unwrap();
        assert_eq!(again.order_id, format!("paper-{}", orders + 1));
        assert_eq!(ex.fill_count(), orders);
        assert!(ex.account_now().positions.is_empty(), "buys and sells matched");
        // Ids keep counting after old orders are forgotten.
        let next = ex.place(&market(&btc, Side::Buy, dec!(0.1), "next")).unwrap();
        assert_eq!(next.order_id, format!("paper-{}", orders + 2));
    }

    #[test]
    fn an_exchange_told_to_remember_few_keeps_few_and_still_answers_the_latest_ids() {
        let (ex, btc) = exchange();
        let ex = ex.remembering(8);
        ex.set_mark(&btc, dec!(50000));
        let orders = 100;
        for i in 0..orders {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            ex.place(&market(&btc, side, dec!(0.1), &format!("o-{i}"))).unwrap();
        }
        assert_eq!(ex.fill_count(), orders, "every fill counted");
        assert!(ex.orders().len() <= 16, "{} orders kept", ex.orders().len());
        assert!(ex.fills().len() <= 16, "{} fills kept", ex.fills().len());
        let last = format!("o-{}", orders - 1);
        let again = ex.place(&market(&btc, Side::Sell, dec!(0.1), &last)).unwrap();
        assert_eq!(
            again.order_id,
            format!("paper-{orders}"),
            "the latest id answered as placed"
        );
        assert_eq!(ex.fill_count(), orders, "without a second fill");
    }

    #[test]
    fn price_paths_are_deterministic_per_seed() {
        let path = || {
            let (ex, btc) = exchange();
            (0..50)
                .map(|_| {
                    ex.advance();
                    ex.quote_now(&btc).unwrap().bid
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(path(), path());
    }

    #[test]
    fn bad_precision_and_spot_shorts_are_rejected_with_reasons() {
        let config = PaperConfig::default();
        let eth: Symbol = "ETH-USD".parse().unwrap();
        let ex = PaperExchange::new(&config, std::slice::from_ref(&eth), false);
        let err = ex.place(&market(&eth, Side::Buy, dec!(0.000000001), "p")).unwrap_err();
        assert!(matches!(err, BrokerError::Rejected { ref reason, .. } if reason == "INVALID_SIZE_PRECISION"));
        let err = ex.place(&market(&eth, Side::Sell, dec!(1), "q")).unwrap_err();
        assert!(matches!(err, BrokerError::Rejected { ref reason, .. } if reason == "INSUFFICIENT_FUND"));
    }
}

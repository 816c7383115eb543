//! The matching engine: order validation, execution against the synthetic book, resting
//! orders, stops, expiry, balances, holds and perpetual positions.

mod edit;
mod rejection;
mod validate;
mod walk;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::sync::broadcast;

pub use self::edit::EditFailure;
pub use self::rejection::{RejectReason, Rejection};
use self::validate::Plan;
use self::walk::{Want, crosses, walk};
use crate::accounts::{Accounts, Portfolio};
use crate::config::{FeeRates, KeySpec};
use crate::events::{Event, UserOrder};
use crate::market::{Market, ProductTick, ShockError};
use crate::num::{floor_to, plain, round_amount};
use crate::orders::{
    Fill, Liquidity, MarketSize, Order, OrderConfig, OrderIntent, OrderStatus, StopDirection, TriggerStatus,
};
use crate::products::{ProductFlags, ProductFlagsUpdate, ProductSpec};
use crate::side::Side;

/// Open orders allowed per product and portfolio.
pub const MAX_OPEN_ORDERS_PER_PRODUCT: usize = 500;
/// Currency that collateralises perpetual positions.
pub const COLLATERAL_CURRENCY: &str = "USD";

/// Result of a create-order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceOutcome {
    /// The order exists (`replay` when an earlier order with the same client_order_id
    /// was returned instead of creating a new one).
    Accepted {
        order_id: String,
        status: OrderStatus,
        replay: bool,
    },
    Rejected(Rejection),
}

/// Why a cancel failed, as in `batch_cancel` results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelFailure {
    UnknownOrder,
    AlreadyDone,
}

impl CancelFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelFailure::UnknownOrder => "UNKNOWN_CANCEL_ORDER",
            CancelFailure::AlreadyDone => "COMMANDER_REJECTED_CANCEL_ORDER",
        }
    }
}

/// The identity an order request is made under.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub key_name: &'a str,
    pub portfolio_uuid: &'a str,
}

/// Estimated economics of an order, for `POST /orders/preview`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub order_total: Decimal,
    pub commission_total: Decimal,
    pub base_size: Decimal,
    pub quote_size: Decimal,
    pub best_bid: Decimal,
    pub best_ask: Decimal,
    pub slippage: Decimal,
    pub leverage: Decimal,
    pub max_leverage: Decimal,
    pub current_liquidation_buffer: Decimal,
    pub projected_liquidation_buffer: Decimal,
    pub errs: Vec<RejectReason>,
    pub message: String,
}

/// The exchange: market, portfolios, orders and fills, guarded by one mutex.
#[derive(Debug)]
pub struct Exchange {
    pub market: Market,
    pub accounts: Accounts,
    orders: HashMap<String, Order>,
    /// Open orders by creation sequence.
    open: BTreeMap<u64, String>,
    client_ids: HashMap<(String, String), String>,
    fills: Vec<Fill>,
    next_seq: u64,
    fees: FeeRates,
    currencies: Vec<String>,
    events: broadcast::Sender<Event>,
}

impl Exchange {
    pub fn new(market: Market, fees: FeeRates, events: broadcast::Sender<Event>) -> Self {
        let mut currencies = vec!["USD".to_string(), "USDC".to_string()];
        for p in market.iter() {
            if !p.spec.is_perpetual() && !currencies.contains(&p.spec.base) {
                currencies.push(p.spec.base.clone());
            }
        }
        Self {
            market,
            accounts: Accounts::default(),
            orders: HashMap::new(),
            open: BTreeMap::new(),
            client_ids: HashMap::new(),
            fills: Vec::new(),
            next_seq: 1,
            fees,
            currencies,
            events,
        }
    }

    pub fn fees(&self) -> &FeeRates {
        &self.fees
    }

    /// Creates (or reconfigures) the portfolio of a key; returns its uuid.
    pub fn upsert_portfolio(&mut self, key: &KeySpec, now: DateTime<Utc>) -> String {
        self.accounts.upsert(key, &self.currencies, now)
    }

    /// Clears orders and fills, restores starting balances and regenerates the market.
    pub fn reset(&mut self, market: Market, now: DateTime<Utc>) {
        self.market = market;
        self.accounts.reset(now);
        self.orders.clear();
        self.open.clear();
        self.client_ids.clear();
        self.fills.clear();
    }

    pub fn order(&self, portfolio_uuid: &str, order_id: &str) -> Option<&Order> {
        self.orders.get(order_id).filter(|o| o.portfolio_uuid == portfolio_uuid)
    }

    /// A portfolio's orders, newest first.
    pub fn orders_of(&self, portfolio_uuid: &str) -> Vec<&Order> {
        let mut orders: Vec<&Order> = self
            .orders
            .values()
            .filter(|o| o.portfolio_uuid == portfolio_uuid)
            .collect();
        orders.sort_by_key(|o| std::cmp::Reverse(o.seq));
        orders
    }

    /// A portfolio's fills, newest first.
    pub fn fills_of(&self, portfolio_uuid: &str) -> impl Iterator<Item = &Fill> {
        self.fills
            .iter()
            .rev()
            .filter(move |f| f.portfolio_uuid == portfolio_uuid)
    }

    /// Open orders of a key, oldest first (for the `user` channel snapshot).
    pub fn open_orders_of_key(&self, key_name: &str) -> Vec<&Order> {
        self.open
            .values()
            .filter_map(|id| self.orders.get(id))
            .filter(|o| o.key_name == key_name)
            .collect()
    }

    pub fn spec(&self, product_id: &str) -> Option<&ProductSpec> {
        self.market.get(product_id).map(|p| &p.spec)
    }

    /// Mid price of a product (the perpetual mark price).
    pub fn mid(&self, product_id: &str) -> Option<Decimal> {
        self.market.get(product_id).map(|p| p.mid())
    }

    /// Collateral free for new perpetual margin and for spending USD.
    pub fn free_collateral(&self, portfolio: &Portfolio) -> Decimal {
        let mut used = Decimal::ZERO;
        let mut upnl = Decimal::ZERO;
        for position in portfolio.open_positions() {
            used += position.initial_margin();
            if let Some(mark) = self.mid(&position.product_id) {
                upnl += position.unrealized_pnl(mark);
            }
        }
        portfolio.available(COLLATERAL_CURRENCY) - used + upnl.min(Decimal::ZERO)
    }

    // ----- order entry -------------------------------------------------------------------

    /// Validates and executes a create-order request.
    pub fn place_order(&mut self, caller: Caller<'_>, intent: &OrderIntent, now: DateTime<Utc>) -> PlaceOutcome {
        let client_key = (caller.key_name.to_string(), intent.client_order_id.clone());
        if let Some(order) = self.client_ids.get(&client_key).and_then(|id| self.orders.get(id)) {
            return PlaceOutcome::Accepted {
                order_id: order.id.clone(),
                status: order.status,
                replay: true,
            };
        }
        let plan = match self.plan(caller, intent, now) {
            Ok(plan) => plan,
            Err(rejection) => return PlaceOutcome::Rejected(rejection),
        };
        let order = Order {
            id: uuid::Uuid::new_v4().to_string(),
            seq: self.next_seq,
            client_order_id: intent.client_order_id.clone(),
            key_name: caller.key_name.to_string(),
            portfolio_uuid: caller.portfolio_uuid.to_string(),
            product_id: intent.product_id.clone(),
            product_type: plan.spec.product_type(),
            side: intent.side,
            config: intent.config.clone(),
            status: OrderStatus::Pending,
            trigger: if plan.stop {
                TriggerStatus::StopPending
            } else {
                TriggerStatus::InvalidOrderType
            },
            created_at: now,
            last_fill_time: None,
            filled_size: Decimal::ZERO,
            filled_value: Decimal::ZERO,
            total_fees: Decimal::ZERO,
            number_of_fills: 0,
            hold: Decimal::ZERO,
            hold_per_unit: plan.hold_per_unit,
            hold_currency: plan.hold_currency.clone(),
            leverage: plan.leverage,
            margin_type: intent.margin_type.clone(),
            cancel_message: String::new(),
            edit_history: Vec::new(),
        };
        self.next_seq += 1;
        let order_id = order.id.clone();
        self.client_ids.insert(client_key, order_id.clone());
        self.orders.insert(order_id.clone(), order);
        let status = self.execute(&order_id, &plan, now);
        PlaceOutcome::Accepted {
            order_id,
            status,
            replay: false,
        }
    }

    /// Estimates an order without placing it.
    pub fn preview(&self, caller: Caller<'_>, intent: &OrderIntent, now: DateTime<Utc>) -> Preview {
        let product = self.market.get(&intent.product_id);
        let best_bid = product
            .and_then(|p| p.book.best_bid())
            .map_or(Decimal::ZERO, |l| l.price);
        let best_ask = product
            .and_then(|p| p.book.best_ask())
            .map_or(Decimal::ZERO, |l| l.price);
        let max_leverage = product.map_or(Decimal::ONE, |p| p.spec.max_leverage());
        let mut preview = Preview {
            order_total: Decimal::ZERO,
            commission_total: Decimal::ZERO,
            base_size: intent.config.base_size().unwrap_or(Decimal::ZERO),
            quote_size: intent.config.quote_size().unwrap_or(Decimal::ZERO),
            best_bid,
            best_ask,
            slippage: Decimal::ZERO,
            leverage: intent.leverage.unwrap_or(Decimal::ONE),
            max_leverage,
            current_liquidation_buffer: Decimal::ZERO,
            projected_liquidation_buffer: Decimal::ZERO,
            errs: Vec::new(),
            message: String::new(),
        };
        let plan = match self.plan(caller, intent, now) {
            Ok(plan) => plan,
            Err(rejection) => {
                preview.errs.push(rejection.reason);
                preview.message = rejection.message;
                return preview;
            }
        };
        let taker_value = plan.taker_value();
        let rest_value = plan.rest * plan.reference_price;
        let commission = round_amount((taker_value + rest_value) * self.fees.taker_fee_rate);
        let base = plan.taker_size() + plan.rest;
        preview.base_size = base;
        preview.quote_size = round_amount(taker_value + rest_value);
        preview.commission_total = commission;
        preview.order_total = round_amount(match intent.side {
            Side::Buy => taker_value + rest_value + commission,
            Side::Sell => taker_value + rest_value - commission,
        });
        preview.leverage = plan.leverage;
        let mid = product.map_or(Decimal::ZERO, |p| p.mid());
        if !plan.taker.is_empty() && !mid.is_zero() && !base.is_zero() {
            let average = taker_value / plan.taker_size();
            preview.slippage = round_amount(((average - mid) / mid).abs());
        }
        if let Some(portfolio) = self.accounts.get(caller.portfolio_uuid)
            && plan.spec.is_perpetual()
        {
            let equity = portfolio.available(COLLATERAL_CURRENCY).max(Decimal::ZERO);
            let free = self.free_collateral(portfolio).max(Decimal::ZERO);
            if !equity.is_zero() {
                preview.current_liquidation_buffer = round_amount(free / equity);
                preview.projected_liquidation_buffer =
                    round_amount(((free - plan.required).max(Decimal::ZERO)) / equity);
            }
        }
        preview
    }

    /// Closes (part of) a perpetual position with a market order.
    pub fn close_position(
        &mut self,
        caller: Caller<'_>,
        client_order_id: &str,
        product_id: &str,
        size: Option<Decimal>,
        now: DateTime<Utc>,
    ) -> (PlaceOutcome, Option<OrderIntent>) {
        let client_key = (caller.key_name.to_string(), client_order_id.to_string());
        if let Some(order) = self.client_ids.get(&client_key).and_then(|id| self.orders.get(id)) {
            let outcome = PlaceOutcome::Accepted {
                order_id: order.id.clone(),
                status: order.status,
                replay: true,
            };
            return (outcome, None);
        }
        let position = self
            .accounts
            .get(caller.portfolio_uuid)
            .and_then(|p| p.positions.get(product_id))
            .filter(|p| !p.net_size.is_zero())
            .cloned();
        let Some(position) = position else {
            let rejection = Rejection {
                reason: RejectReason::NoOpenPosition,
                message: format!("no open position in {product_id}"),
            };
            return (PlaceOutcome::Rejected(rejection), None);
        };
        let size = size.unwrap_or(position.net_size.abs());
        if size > position.net_size.abs() {
            let rejection = Rejection {
                reason: RejectReason::BaseSizeTooLarge,
                message: format!(
                    "size {size} exceeds the open position {}",
                    plain(position.net_size.abs())
                ),
            };
            return (PlaceOutcome::Rejected(rejection), None);
        }
        let side = if position.net_size.is_sign_positive() {
            Side::Sell
        } else {
            Side::Buy
        };
        let intent = OrderIntent {
            client_order_id: client_order_id.to_string(),
            product_id: product_id.to_string(),
            side,
            config: OrderConfig::MarketIoc(MarketSize::Base(size)),
            leverage: Some(position.leverage),
            margin_type: None,
        };
        (self.place_order(caller, &intent, now), Some(intent))
    }

    /// Cancels an open order of the caller's portfolio.
    pub fn cancel(&mut self, portfolio_uuid: &str, order_id: &str, now: DateTime<Utc>) -> Result<(), CancelFailure> {
        let order = self
            .orders
            .get(order_id)
            .filter(|o| o.portfolio_uuid == portfolio_uuid)
            .ok_or(CancelFailure::UnknownOrder)?;
        if order.status.is_terminal() {
            return Err(CancelFailure::AlreadyDone);
        }
        self.finish(order_id, OrderStatus::Cancelled, "User requested cancel", now);
        Ok(())
    }

    // ----- market driven processing --------------------------------------------------------

    /// One market step: move prices, publish, fill resting orders, trigger stops, expire GTDs.
    pub fn tick(&mut self, now: DateTime<Utc>) {
        let ticks = self.market.tick(now);
        self.after_market_change(ticks, now);
        self.expire(now);
    }

    /// Jumps a product's price by `percent` and processes the consequences at once.
    pub fn shock(&mut self, product_id: &str, percent: Decimal, now: DateTime<Utc>) -> Result<(), ShockError> {
        let tick = self.market.shock(product_id, percent, now)?;
        self.after_market_change(tick.into_iter().collect(), now);
        Ok(())
    }

    /// Freezes or thaws market data for `products` (all when `None`).
    pub fn set_frozen(&mut self, products: Option<&[String]>, frozen: bool, now: DateTime<Utc>) {
        let ticks = self.market.set_frozen(products, frozen, now);
        self.after_market_change(ticks, now);
    }

    /// Updates a product's status flags and announces it on the `status` channel.
    pub fn update_flags(&mut self, product_id: &str, update: &ProductFlagsUpdate) -> Option<ProductFlags> {
        let product = self.market.get_mut(product_id)?;
        product.flags.apply(update);
        let flags = product.flags.clone();
        let _ = self.events.send(Event::Status(Arc::new(vec![product_id.to_string()])));
        Some(flags)
    }

    fn after_market_change(&mut self, ticks: Vec<ProductTick>, now: DateTime<Utc>) {
        if ticks.is_empty() {
            return;
        }
        let products: Vec<String> = ticks.iter().map(|t| t.product_id.clone()).collect();
        let _ = self.events.send(Event::Market(Arc::new(ticks)));
        for product_id in products {
            self.process_resting(&product_id, now);
        }
    }

    /// Triggers stops and fills resting limit orders the new book crosses.
    fn process_resting(&mut self, product_id: &str, now: DateTime<Utc>) {
        let Some(product) = self.market.get(product_id) else {
            return;
        };
        let mid = product.mid();
        let bids = product.book.bids();
        let asks = product.book.asks();
        let spec = product.spec.clone();
        let candidates: Vec<String> = self
            .open
            .values()
            .filter(|id| self.orders.get(*id).is_some_and(|o| o.product_id == product_id))
            .cloned()
            .collect();
        for order_id in candidates {
            let Some(order) = self.orders.get(&order_id) else {
                continue;
            };
            let Some(limit) = order.config.limit_price() else {
                continue;
            };
            let side = order.side;
            let mut changed = false;
            if order.trigger == TriggerStatus::StopPending {
                let triggered = match order.config {
                    OrderConfig::StopLimitGtc {
                        stop_price,
                        stop_direction: StopDirection::Up,
                        ..
                    } => mid >= stop_price,
                    OrderConfig::StopLimitGtc {
                        stop_price,
                        stop_direction: StopDirection::Down,
                        ..
                    } => mid <= stop_price,
                    _ => false,
                };
                if !triggered {
                    continue;
                }
                if let Some(order) = self.orders.get_mut(&order_id) {
                    order.trigger = TriggerStatus::StopTriggered;
                }
                let levels = if side == Side::Buy { &asks } else { &bids };
                let remaining = self.orders.get(&order_id).map_or(Decimal::ZERO, Order::remaining);
                let fills = walk(levels, side, Want::Base(remaining), Some(limit), &spec, false);
                for (price, size) in fills {
                    self.settle(&order_id, &spec, price, size, Liquidity::Taker, now);
                }
                changed = true;
            } else {
                let levels = if side == Side::Buy { &asks } else { &bids };
                let crossing: Decimal = levels
                    .iter()
                    .take_while(|l| crosses(side, l.price, limit))
                    .map(|l| l.size)
                    .sum();
                let remaining = order.remaining();
                let size = floor_to(remaining.min(crossing), spec.base_increment);
                if !size.is_zero() {
                    self.settle(&order_id, &spec, limit, size, Liquidity::Maker, now);
                    changed = true;
                }
            }
            let done = self.orders.get(&order_id).is_some_and(|o| o.remaining().is_zero());
            if done {
                self.finish(&order_id, OrderStatus::Filled, "", now);
            } else if changed {
                self.emit(&order_id);
            }
        }
    }

    /// Expires good-till-date orders whose end time passed.
    fn expire(&mut self, now: DateTime<Utc>) {
        let expired: Vec<String> = self
            .open
            .values()
            .filter(|id| {
                self.orders
                    .get(*id)
                    .and_then(|o| o.config.end_time())
                    .is_some_and(|end| end <= now)
            })
            .cloned()
            .collect();
        for order_id in expired {
            self.finish(&order_id, OrderStatus::Expired, "Order expired", now);
        }
    }

    // ----- execution -----------------------------------------------------------------------

    /// Applies a plan to a freshly created order; returns its resulting status.
    fn execute(&mut self, order_id: &str, plan: &Plan, now: DateTime<Utc>) -> OrderStatus {
        for (price, size) in &plan.taker {
            self.settle(order_id, &plan.spec, *price, *size, Liquidity::Taker, now);
        }
        let (status, message) = if plan.killed {
            (
                OrderStatus::Cancelled,
                "Fill-or-kill order could not be filled completely",
            )
        } else if plan.stop || plan.rest > Decimal::ZERO {
            let reserve = plan.rest * plan.hold_per_unit;
            if let Some(order) = self.orders.get_mut(order_id) {
                order.status = OrderStatus::Open;
                order.hold = reserve;
                let (portfolio_uuid, currency, seq) =
                    (order.portfolio_uuid.clone(), order.hold_currency.clone(), order.seq);
                if let Some(portfolio) = self.accounts.get_mut(&portfolio_uuid) {
                    portfolio.add_hold(&currency, reserve, now);
                }
                self.open.insert(seq, order_id.to_string());
            }
            self.emit(order_id);
            return OrderStatus::Open;
        } else {
            let filled_all = self
                .orders
                .get(order_id)
                .is_some_and(|o| o.config.base_size().is_none_or(|_| o.remaining().is_zero()));
            if filled_all {
                (OrderStatus::Filled, "")
            } else {
                (OrderStatus::Cancelled, "Immediate-or-cancel remainder cancelled")
            }
        };
        self.finish(order_id, status, message, now);
        status
    }

    /// Executes one fill: balances, holds, position, order totals and the fill record.
    fn settle(
        &mut self,
        order_id: &str,
        spec: &ProductSpec,
        price: Decimal,
        size: Decimal,
        liquidity: Liquidity,
        now: DateTime<Utc>,
    ) {
        let Some(order) = self.orders.get_mut(order_id) else {
            return;
        };
        let Some(portfolio) = self.accounts.get_mut(&order.portfolio_uuid) else {
            return;
        };
        let value = price * size;
        let rate = match liquidity {
            Liquidity::Maker => self.fees.maker_fee_rate,
            Liquidity::Taker => self.fees.taker_fee_rate,
        };
        let fee = round_amount(value * rate);
        let release = order.hold.min(size * order.hold_per_unit);
        order.hold -= release;
        portfolio.release_hold(&order.hold_currency, release, now);

        if spec.is_perpetual() {
            let realized = portfolio.apply_perp_fill(&spec.id, order.side, price, size, order.leverage);
            portfolio.adjust(COLLATERAL_CURRENCY, realized - fee, now);
        } else {
            match order.side {
                Side::Buy => {
                    portfolio.adjust(&spec.quote, -(value + fee), now);
                    portfolio.adjust(&spec.base, size, now);
                }
                Side::Sell => {
                    portfolio.adjust(&spec.base, -size, now);
                    portfolio.adjust(&spec.quote, value - fee, now);
                }
            }
        }
        portfolio.total_volume += value;
        portfolio.total_fees += fee;

        order.filled_size += size;
        order.filled_value += value;
        order.total_fees += fee;
        order.number_of_fills += 1;
        order.last_fill_time = Some(now);
        self.fills.push(Fill {
            entry_id: uuid::Uuid::new_v4().to_string(),
            trade_id: uuid::Uuid::new_v4().to_string(),
            order_id: order.id.clone(),
            portfolio_uuid: order.portfolio_uuid.clone(),
            key_name: order.key_name.clone(),
            product_id: spec.id.clone(),
            side: order.side,
            price,
            size,
            commission: fee,
            liquidity,
            time: now,
        });
    }

    /// Moves an order to a terminal status and releases what it still holds.
    fn finish(&mut self, order_id: &str, status: OrderStatus, message: &str, now: DateTime<Utc>) {
        let Some(order) = self.orders.get_mut(order_id) else {
            return;
        };
        order.status = status;
        order.cancel_message = message.to_string();
        let release = std::mem::take(&mut order.hold);
        self.open.remove(&order.seq);
        if let Some(portfolio) = self.accounts.get_mut(&order.portfolio_uuid) {
            portfolio.release_hold(&order.hold_currency, release, now);
        }
        self.emit(order_id);
    }

    fn emit(&self, order_id: &str) {
        if let Some(order) = self.orders.get(order_id) {
            let _ = self.events.send(Event::UserOrder(Arc::new(UserOrder {
                key_name: order.key_name.clone(),
                product_id: order.product_id.clone(),
                order: order.to_ws_json(),
            })));
        }
    }
}

#[cfg(test)]
mod properties;

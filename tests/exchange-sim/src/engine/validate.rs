//! Order validation: product rules, sizes, prices, leverage and funds, producing a [`Plan`].

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::rejection::{RejectReason, Rejection, reject};
use super::walk::{Want, crosses, walk};
use super::{COLLATERAL_CURRENCY, Caller, Exchange, MAX_OPEN_ORDERS_PER_PRODUCT};
use crate::accounts::Portfolio;
use crate::num::{is_multiple_of, round_amount};
use crate::orders::{MarketSize, OrderConfig, OrderIntent, StopDirection};
use crate::products::{ProductFlags, ProductSpec};
use crate::side::Side;

/// Highest accepted limit or stop price.
const MAX_PRICE: i64 = 1_000_000_000_000;

/// Validated execution plan of an order.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub spec: ProductSpec,
    /// Immediate (taker) executions: `(price, size)`.
    pub taker: Vec<(Decimal, Decimal)>,
    /// Base size left resting on the book.
    pub rest: Decimal,
    /// A stop order waiting for its trigger.
    pub stop: bool,
    /// Fill-or-kill that could not fill completely.
    pub killed: bool,
    pub hold_per_unit: Decimal,
    pub hold_currency: String,
    pub leverage: Decimal,
    /// Funds the order needs (quote, base or margin).
    pub required: Decimal,
    /// Reference price for estimates.
    pub reference_price: Decimal,
}

impl Plan {
    pub fn taker_value(&self) -> Decimal {
        self.taker.iter().map(|(p, s)| p * s).sum()
    }

    pub fn taker_size(&self) -> Decimal {
        self.taker.iter().map(|(_, s)| *s).sum()
    }
}

impl Exchange {
    /// Validates an order and works out how it would execute.
    pub(super) fn plan(&self, caller: Caller<'_>, intent: &OrderIntent, now: DateTime<Utc>) -> Result<Plan, Rejection> {
        let Some(product) = self.market.get(&intent.product_id) else {
            return reject(
                RejectReason::InvalidProductId,
                format!("product {} does not exist", intent.product_id),
            );
        };
        let Some(portfolio) = self.accounts.get(caller.portfolio_uuid) else {
            return reject(RejectReason::InvalidProductId, "portfolio not found");
        };
        let spec = &product.spec;
        if spec.is_perpetual() && !portfolio.trades_perpetuals() {
            return reject(
                RejectReason::InvalidProductId,
                format!(
                    "{} is an INTX perpetual; it is not tradable from a {} portfolio without derivatives",
                    spec.id, portfolio.portfolio_type
                ),
            );
        }
        check_flags(&product.flags, &intent.config, spec)?;
        let leverage = self.check_leverage(portfolio, spec, intent)?;
        check_sizes(spec, &intent.config, now)?;

        let taker_rate = self.fees.taker_fee_rate;
        let buying = intent.side == Side::Buy;
        let levels = product.book.liquidity_for(buying);
        let mid = product.mid();
        let mut plan = Plan {
            spec: spec.clone(),
            taker: Vec::new(),
            rest: Decimal::ZERO,
            stop: false,
            killed: false,
            hold_per_unit: Decimal::ZERO,
            hold_currency: spec.quote.clone(),
            leverage,
            required: Decimal::ZERO,
            reference_price: mid,
        };
        let post_only = intent.config.post_only() || product.flags.post_only;
        match intent.config {
            OrderConfig::MarketIoc(size) => {
                let want = match size {
                    MarketSize::Base(b) => Want::Base(b),
                    MarketSize::Quote(q) if buying && !spec.is_perpetual() => Want::QuoteWithFees {
                        budget: q,
                        rate: taker_rate,
                    },
                    MarketSize::Quote(q) => Want::QuoteValue(q),
                };
                plan.taker = walk(&levels, intent.side, want, None, spec, true);
                if plan.taker.is_empty() {
                    return reject(
                        RejectReason::BaseSizeTooSmall,
                        format!("quote size is too small to buy {} {}", spec.base_increment, spec.base),
                    );
                }
                let notional = plan.taker_value();
                if notional < spec.quote_min_size {
                    return reject(
                        RejectReason::QuoteSizeTooSmall,
                        format!(
                            "order notional {} {} is below the minimum quote size {} {}",
                            round_amount(notional),
                            spec.quote,
                            spec.quote_min_size,
                            spec.quote
                        ),
                    );
                }
                plan.reference_price = notional / plan.taker_size();
            }
            OrderConfig::StopLimitGtc {
                base_size,
                limit_price,
                stop_price,
                stop_direction,
            } => {
                let wrong_side = match stop_direction {
                    StopDirection::Up => stop_price <= mid,
                    StopDirection::Down => stop_price >= mid,
                };
                if wrong_side {
                    return reject(
                        RejectReason::InvalidStopPrice,
                        format!(
                            "stop_price {stop_price} must be {} the current price {mid} for {}",
                            if stop_direction == StopDirection::Up {
                                "above"
                            } else {
                                "below"
                            },
                            stop_direction.as_str()
                        ),
                    );
                }
                plan.stop = true;
                plan.rest = base_size;
                plan.reference_price = limit_price;
            }
            OrderConfig::LimitGtc {
                base_size, limit_price, ..
            }
            | OrderConfig::LimitGtd {
                base_size, limit_price, ..
            }
            | OrderConfig::LimitFok { base_size, limit_price }
            | OrderConfig::SorLimitIoc { base_size, limit_price } => {
                let crossing = levels
                    .first()
                    .is_some_and(|best| crosses(intent.side, best.price, limit_price));
                if crossing && post_only {
                    return reject(
                        RejectReason::InvalidLimitPricePostOnly,
                        format!(
                            "post-only {} at {limit_price} would cross the book (best {} {})",
                            intent.side,
                            if buying { "ask" } else { "bid" },
                            levels.first().map_or(Decimal::ZERO, |l| l.price)
                        ),
                    );
                }
                plan.taker = walk(
                    &levels,
                    intent.side,
                    Want::Base(base_size),
                    Some(limit_price),
                    spec,
                    false,
                );
                let unfilled = base_size - plan.taker_size();
                match intent.config {
                    OrderConfig::LimitFok { .. } if !unfilled.is_zero() => {
                        plan.taker.clear();
                        plan.killed = true;
                    }
                    OrderConfig::LimitGtc { .. } | OrderConfig::LimitGtd { .. } => plan.rest = unfilled,
                    _ => {}
                }
                plan.reference_price = limit_price;
            }
        }

        if plan.rest > Decimal::ZERO {
            let open_here = self
                .open
                .values()
                .filter_map(|id| self.orders.get(id))
                .filter(|o| o.portfolio_uuid == caller.portfolio_uuid && o.product_id == spec.id)
                .count();
            if open_here >= MAX_OPEN_ORDERS_PER_PRODUCT {
                return reject(
                    RejectReason::TooManyOpenOrders,
                    format!("at most {MAX_OPEN_ORDERS_PER_PRODUCT} open orders per product"),
                );
            }
        }
        self.check_funds(portfolio, intent, &mut plan)?;
        Ok(plan)
    }

    fn check_leverage(
        &self,
        portfolio: &Portfolio,
        spec: &ProductSpec,
        intent: &OrderIntent,
    ) -> Result<Decimal, Rejection> {
        if !spec.is_perpetual() {
            return match intent.leverage {
                Some(l) if l != Decimal::ONE => reject(
                    RejectReason::InvalidLeverage,
                    format!("leverage {l} is not available on spot product {}", spec.id),
                ),
                _ => Ok(Decimal::ONE),
            };
        }
        let current = portfolio
            .positions
            .get(&spec.id)
            .filter(|p| !p.net_size.is_zero())
            .map(|p| p.leverage);
        let leverage = intent.leverage.or(current).unwrap_or(Decimal::ONE);
        if leverage < Decimal::ONE || leverage > spec.max_leverage() {
            return reject(
                RejectReason::InvalidLeverage,
                format!(
                    "leverage {leverage} is outside 1..={} for {}",
                    spec.max_leverage(),
                    spec.id
                ),
            );
        }
        Ok(leverage)
    }

    fn check_funds(&self, portfolio: &Portfolio, intent: &OrderIntent, plan: &mut Plan) -> Result<(), Rejection> {
        let spec = &plan.spec;
        let taker_rate = self.fees.taker_fee_rate;
        let taker_value = plan.taker_value();
        let taker_fee = taker_value * taker_rate;
        let resting_price = plan.reference_price;
        let (required, available, currency) = if spec.is_perpetual() {
            let position = portfolio.positions.get(&spec.id);
            let reducible = position
                .filter(|p| p.side() == Some(intent.side.opposite()))
                .map_or(Decimal::ZERO, |p| p.net_size.abs());
            let total = plan.taker_size() + plan.rest;
            let increasing = (total - reducible).max(Decimal::ZERO);
            let margin = increasing * plan.reference_price / plan.leverage;
            let fees = taker_fee + plan.rest * resting_price * taker_rate;
            plan.hold_per_unit = resting_price / plan.leverage + resting_price * taker_rate;
            plan.hold_currency = COLLATERAL_CURRENCY.to_string();
            (
                margin + fees,
                self.free_collateral(portfolio),
                COLLATERAL_CURRENCY.to_string(),
            )
        } else if intent.side == Side::Buy {
            plan.hold_per_unit = resting_price * (Decimal::ONE + taker_rate);
            plan.hold_currency = spec.quote.clone();
            let required = taker_value + taker_fee + plan.rest * plan.hold_per_unit;
            let available = if spec.quote == COLLATERAL_CURRENCY {
                self.free_collateral(portfolio)
            } else {
                portfolio.available(&spec.quote)
            };
            (required, available, spec.quote.clone())
        } else {
            plan.hold_per_unit = Decimal::ONE;
            plan.hold_currency = spec.base.clone();
            let required = plan.taker_size() + plan.rest;
            (required, portfolio.available(&spec.base), spec.base.clone())
        };
        plan.required = round_amount(required);
        if required > available {
            return reject(
                RejectReason::InsufficientFund,
                format!(
                    "Insufficient balance in source account: need {} {currency}, available {}",
                    round_amount(required),
                    round_amount(available.max(Decimal::ZERO))
                ),
            );
        }
        Ok(())
    }
}

/// Product status rules.
fn check_flags(flags: &ProductFlags, config: &OrderConfig, spec: &ProductSpec) -> Result<(), Rejection> {
    if flags.trading_disabled || flags.status != "online" {
        return reject(
            RejectReason::UntradableProduct,
            format!("{} is not tradable (status {})", spec.id, flags.status),
        );
    }
    if flags.cancel_only {
        return reject(
            RejectReason::OrderEntryDisabled,
            format!("{} is in cancel-only mode", spec.id),
        );
    }
    let market = matches!(config, OrderConfig::MarketIoc(_));
    if market && (flags.limit_only || flags.post_only) {
        return reject(
            RejectReason::UnsupportedOrderConfiguration,
            format!(
                "{} is in {} mode; market orders are not accepted",
                spec.id,
                if flags.post_only { "post-only" } else { "limit-only" }
            ),
        );
    }
    Ok(())
}

/// Size, price and time rules that need no market data.
fn check_sizes(spec: &ProductSpec, config: &OrderConfig, now: DateTime<Utc>) -> Result<(), Rejection> {
    if let Some(base) = config.base_size() {
        if base < spec.base_min_size {
            return reject(
                RejectReason::BaseSizeTooSmall,
                format!(
                    "base_size {base} is below the minimum {} {}",
                    spec.base_min_size, spec.base
                ),
            );
        }
        if base > spec.base_max_size {
            return reject(
                RejectReason::BaseSizeTooLarge,
                format!(
                    "base_size {base} is above the maximum {} {}",
                    spec.base_max_size, spec.base
                ),
            );
        }
        if !is_multiple_of(base, spec.base_increment) {
            return reject(
                RejectReason::InvalidSizePrecision,
                format!(
                    "base_size {base} is not a multiple of base_increment {}",
                    spec.base_increment
                ),
            );
        }
    }
    if let Some(quote) = config.quote_size() {
        if quote < spec.quote_min_size {
            return reject(
                RejectReason::QuoteSizeTooSmall,
                format!(
                    "quote_size {quote} is below the minimum {} {}",
                    spec.quote_min_size, spec.quote
                ),
            );
        }
        if quote > spec.quote_max_size {
            return reject(
                RejectReason::QuoteSizeTooLarge,
                format!(
                    "quote_size {quote} is above the maximum {} {}",
                    spec.quote_max_size, spec.quote
                ),
            );
        }
        if !is_multiple_of(quote, spec.quote_increment) {
            return reject(
                RejectReason::InvalidQuoteSizePrecision,
                format!(
                    "quote_size {quote} is not a multiple of quote_increment {}",
                    spec.quote_increment
                ),
            );
        }
    }
    for (name, price) in [
        ("limit_price", config.limit_price()),
        ("stop_price", config.stop_price()),
    ] {
        let Some(price) = price else { continue };
        if price <= Decimal::ZERO || price > Decimal::from(MAX_PRICE) {
            let reason = if name == "stop_price" {
                RejectReason::InvalidStopPrice
            } else {
                RejectReason::InvalidLimitPrice
            };
            return reject(reason, format!("{name} {price} is out of range"));
        }
        if !is_multiple_of(price, spec.quote_increment) {
            return reject(
                RejectReason::InvalidPricePrecision,
                format!(
                    "{name} {price} is not a multiple of quote_increment {}",
                    spec.quote_increment
                ),
            );
        }
    }
    if let (Some(base), Some(limit)) = (config.base_size(), config.limit_price()) {
        let notional = base * limit;
        if notional < spec.quote_min_size {
            return reject(
                RejectReason::QuoteSizeTooSmall,
                format!(
                    "order notional {notional} {} is below the minimum quote size {} {}",
                    spec.quote, spec.quote_min_size, spec.quote
                ),
            );
        }
    }
    if let Some(end) = config.end_time()
        && end <= now
    {
        return reject(RejectReason::InvalidEndTime, "end_time must be in the future");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::catalogue;

    fn btc() -> ProductSpec {
        catalogue().remove(0)
    }

    #[test]
    fn size_rules() {
        let spec = btc();
        let now = Utc::now();
        let cfg = |b: &str, p: &str| OrderConfig::LimitGtc {
            base_size: b.parse().unwrap(),
            limit_price: p.parse().unwrap(),
            post_only: false,
        };
        let reason = |c: OrderConfig| check_sizes(&spec, &c, now).err().map(|r| r.reason);
        assert_eq!(reason(cfg("0.000000001", "100")), Some(RejectReason::BaseSizeTooSmall));
        assert_eq!(
            reason(cfg("0.123456789", "100")),
            Some(RejectReason::InvalidSizePrecision)
        );
        assert_eq!(reason(cfg("0.1", "100.001")), Some(RejectReason::InvalidPricePrecision));
        assert_eq!(reason(cfg("0.00001", "100")), Some(RejectReason::QuoteSizeTooSmall));
        assert_eq!(reason(cfg("5000", "100")), Some(RejectReason::BaseSizeTooLarge));
        assert_eq!(reason(cfg("0.1", "100")), None);
    }
}

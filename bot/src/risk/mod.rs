//! Pre-trade risk: the checks an order that passed the trading state must also pass. Orders
//! that reduce a position skip the checks that only guard against *more* exposure (so an exit
//! is never trapped by a cap), but never the kill switch or product status.

use crate::config::RiskConfig;
use crate::domain::{AccountState, Product, Quote, Side, Symbol};
use crate::trading_state::is_reducing;
use rust_decimal::Decimal;
use std::fmt;
use tradingbot_crds::spec::Guards;

/// Why an order was refused: a small fixed set, used as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    Halted,
    ReduceOnly,
    KillSwitch,
    NoLease,
    ModeUnknown,
    Untradable,
    StaleMarketData,
    OutsideSession,
    SymbolNotional,
    SymbolExposure,
    TotalExposure,
    Leverage,
    LiquidationBuffer,
    Slippage,
    NoEquity,
    DuplicateClientOrderId,
    BelowMinSize,
    BelowMinNotional,
    InvalidPrice,
    /// A spot SELL beyond the bot's own inventory (no shorting without derivatives).
    SpotShort,
    Exchange,
}

impl RejectReason {
    pub const ALL: [RejectReason; 21] = [
        RejectReason::Halted,
        RejectReason::ReduceOnly,
        RejectReason::KillSwitch,
        RejectReason::NoLease,
        RejectReason::ModeUnknown,
        RejectReason::Untradable,
        RejectReason::StaleMarketData,
        RejectReason::OutsideSession,
        RejectReason::SymbolNotional,
        RejectReason::SymbolExposure,
        RejectReason::TotalExposure,
        RejectReason::Leverage,
        RejectReason::LiquidationBuffer,
        RejectReason::Slippage,
        RejectReason::NoEquity,
        RejectReason::DuplicateClientOrderId,
        RejectReason::BelowMinSize,
        RejectReason::BelowMinNotional,
        RejectReason::InvalidPrice,
        RejectReason::SpotShort,
        RejectReason::Exchange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Halted => "halted",
            RejectReason::ReduceOnly => "reduce_only",
            RejectReason::KillSwitch => "kill_switch",
            RejectReason::NoLease => "no_lease",
            RejectReason::ModeUnknown => "mode_unknown",
            RejectReason::Untradable => "untradable",
            RejectReason::StaleMarketData => "stale_market_data",
            RejectReason::OutsideSession => "outside_session",
            RejectReason::SymbolNotional => "symbol_notional_cap",
            RejectReason::SymbolExposure => "symbol_exposure_cap",
            RejectReason::TotalExposure => "total_exposure_cap",
            RejectReason::Leverage => "leverage_cap",
            RejectReason::LiquidationBuffer => "liquidation_buffer",
            RejectReason::Slippage => "slippage_guard",
            RejectReason::NoEquity => "no_equity",
            RejectReason::DuplicateClientOrderId => "duplicate_client_order_id",
            RejectReason::BelowMinSize => "below_min_size",
            RejectReason::BelowMinNotional => "below_min_notional",
            RejectReason::InvalidPrice => "invalid_price",
            RejectReason::SpotShort => "spot_short",
            RejectReason::Exchange => "exchange",
        }
    }
}

/// A refused order: the reason (for metrics) and a sentence (for logs and humans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

impl std::error::Error for Rejection {}

/// The clock the time-dependent checks read (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcClock {
    pub minute_of_day: u32,
    pub weekday: bool,
}

impl UtcClock {
    pub fn at_unix(seconds: i64) -> Self {
        let minute_of_day = u32::try_from(seconds.rem_euclid(86_400) / 60).unwrap_or(0);
        // 1970-01-01 was a Thursday (day 0 -> Thu).
        let day = seconds.div_euclid(86_400).rem_euclid(7);
        let weekday = !matches!(day, 2 | 3); // Sat, Sun
        Self { minute_of_day, weekday }
    }
}

/// Everything the checks look at for one (already quantised) order.
pub struct RiskInput<'a> {
    pub symbol: &'a Symbol,
    pub side: Side,
    pub quantity: Decimal,
    /// Expected execution price.
    pub price: Decimal,
    pub product: &'a Product,
    pub quote: &'a Quote,
    pub quote_age_seconds: u64,
    pub account: &'a AccountState,
    pub marks: &'a dyn Fn(&Symbol) -> Option<Decimal>,
    pub clock: UtcClock,
}

/// Run every pre-trade check, in order; the first failure refuses the order.
pub fn check(config: &RiskConfig, guards: &Guards, input: &RiskInput<'_>) -> Result<(), Rejection> {
    let refuse = |reason, message: String| Err(Rejection::new(reason, message));
    if config.kill_switch {
        return refuse(RejectReason::KillSwitch, "the kill switch is on".into());
    }
    if let Some(why) = input.product.untradable_reason() {
        return refuse(RejectReason::Untradable, format!("{}: {why}", input.symbol));
    }
    if input.price <= Decimal::ZERO {
        return refuse(
            RejectReason::InvalidPrice,
            format!("no usable price for {}", input.symbol),
        );
    }
    let position = input.account.position(input.symbol);
    if !input.product.is_perpetual {
        crate::inventory::check_spot_sell(input.symbol, input.side, input.quantity, position)?;
    }
    if is_reducing(input.side, input.quantity, position) {
        return Ok(());
    }
    if input.quote_age_seconds > config.max_staleness_seconds {
        return refuse(
            RejectReason::StaleMarketData,
            format!(
                "{} market data is {} s old (limit {} s)",
                input.symbol, input.quote_age_seconds, config.max_staleness_seconds
            ),
        );
    }
    if let Some(session) = config.session {
        let open =
            session.window.contains(input.clock.minute_of_day) && (!session.weekdays_only || input.clock.weekday);
        if !open {
            return refuse(
                RejectReason::OutsideSession,
                "outside the trading session: only reducing orders".into(),
            );
        }
    }
    let marks = |s: &Symbol| {
        if s == input.symbol {
            Some(input.price)
        } else {
            (input.marks)(s)
        }
    };
    // Sized on what the account can back: the bot's cash others spent is not there to risk.
    let equity = input.account.sizing_equity(marks);
    if equity <= Decimal::ZERO {
        return refuse(
            RejectReason::NoEquity,
            format!(
                "equity the account can back is {equity} ({} of the bot's cash is not on the account)",
                input.account.unbacked_cash
            ),
        );
    }
    let position_after = position + input.side.sign() * input.quantity;
    let symbol_notional = (position_after * input.price).abs();
    let other_exposure: Decimal = input
        .account
        .positions
        .iter()
        .filter(|p| &p.symbol != input.symbol)
        .map(|p| p.notional(marks(&p.symbol).unwrap_or(p.entry_price)))
        .sum();
    let total_exposure = other_exposure + symbol_notional;
    let hundred = Decimal::ONE_HUNDRED;

    let cap = [
        config.max_notional_per_symbol.get(input.symbol).copied(),
        guards
            .max_notional_per_symbol
            .get(input.symbol.as_str())
            .map(|v| v.value()),
    ]
    .into_iter()
    .flatten()
    .min();
    if let Some(cap) = cap
        && symbol_notional > cap
    {
        return refuse(
            RejectReason::SymbolNotional,
            format!(
                "{} notional would be {} (cap {cap})",
                input.symbol,
                symbol_notional.round_dp(2)
            ),
        );
    }
    if let Some(limit) = config.max_symbol_exposure_percent {
        let percent = symbol_notional / equity * hundred;
        if percent > limit {
            return refuse(
                RejectReason::SymbolExposure,
                format!(
                    "{} exposure would be {}% of equity (limit {limit}%)",
                    input.symbol,
                    percent.round_dp(2)
                ),
            );
        }
    }
    let total_limit = [
        config.max_exposure_percent,
        guards.max_exposure_percent.map(|v| v.value()),
    ]
    .into_iter()
    .flatten()
    .min();
    if let Some(limit) = total_limit {
        let percent = total_exposure / equity * hundred;
        if percent > limit {
            return refuse(
                RejectReason::TotalExposure,
                format!(
                    "total exposure would be {}% of equity (limit {limit}%)",
                    percent.round_dp(2)
                ),
            );
        }
    }
    let leverage_cap = leverage_cap(config, guards, input);
    let leverage = total_exposure / equity;
    if leverage > leverage_cap {
        return refuse(
            RejectReason::Leverage,
            format!("leverage would be {} (cap {leverage_cap})", leverage.round_dp(3)),
        );
    }
    if input.product.is_perpetual {
        let buffer = (equity - total_exposure * config.maintenance_margin_percent / hundred) / equity * hundred;
        if buffer < config.min_liquidation_buffer_percent {
            return refuse(
                RejectReason::LiquidationBuffer,
                format!(
                    "liquidation buffer would be {}% (minimum {}%)",
                    buffer.round_dp(2),
                    config.min_liquidation_buffer_percent
                ),
            );
        }
    }
    let order_notional = input.quantity * input.price;
    let depth = input.quote.touch_notional(input.side);
    let impact_bps = if depth.is_zero() {
        Decimal::MAX
    } else {
        input.quote.spread_bps() + Decimal::from(5_000) * order_notional / depth
    };
    if impact_bps > config.slippage_guard_bps {
        return refuse(
            RejectReason::Slippage,
            format!(
                "expected slippage {} bps exceeds {} bps (spread plus size against top-of-book depth)",
                if impact_bps == Decimal::MAX {
                    "unbounded".to_string()
                } else {
                    impact_bps.round_dp(1).to_string()
                },
                config.slippage_guard_bps
            ),
        );
    }
    Ok(())
}

/// The lowest applicable leverage cap: global, the spec's, the product's and the symbol's
/// day or night cap.
pub fn leverage_cap(config: &RiskConfig, guards: &Guards, input: &RiskInput<'_>) -> Decimal {
    let by_time = if config.day_window.contains(input.clock.minute_of_day) {
        &config.day_leverage
    } else {
        &config.night_leverage
    };
    [
        Some(config.max_leverage),
        guards.max_leverage.map(|v| v.value()),
        input.product.max_leverage,
        by_time.get(input.symbol).copied(),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(config.max_leverage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profiles::builtin;
    use crate::domain::Position;
    use rust_decimal_macros::dec;
    use tradingbot_crds::Profile;

    struct World {
        config: RiskConfig,
        guards: Guards,
        product: Product,
        quote: Quote,
        account: AccountState,
        symbol: Symbol,
    }

    fn world() -> World {
        let mut config = builtin(Profile::Prod).risk;
        config.max_leverage = dec!(2);
        World {
            config,
            guards: Guards::default(),
            product: Product::spot("BTC-USD", dec!(0.0001), dec!(0.01), dec!(0.0001)),
            quote: Quote {
                bid: dec!(99.99),
                bid_size: dec!(1000000),
                ask: dec!(100.01),
                ask_size: dec!(1000000),
                time_ms: 0,
            },
            account: AccountState {
                cash: dec!(10000),
                ..AccountState::default()
            },
            symbol: "BTC-USD".parse().unwrap(),
        }
    }

    fn run(w: &World, side: Side, quantity: Decimal) -> Result<(), Rejection> {
        let marks = |_: &Symbol| Some(dec!(100));
        check(
            &w.config,
            &w.guards,
            &RiskInput {
                symbol: &w.symbol,
                side,
                quantity,
                price: dec!(100),
                product: &w.product,
                quote: &w.quote,
                quote_age_seconds: 1,
                account: &w.account,
                marks: &marks,
                clock: UtcClock {
                    minute_of_day: 600,
                    weekday: true,
                },
            },
        )
    }

    fn reason(r: Result<(), Rejection>) -> Option<RejectReason> {
        r.err().map(|r| r.reason)
    }

    #[test]
    fn leverage_cap_is_the_lowest_applicable() {
        let mut w = world();
        assert!(run(&w, Side::Buy, dec!(150)).is_ok()); // 1.5x
        assert_eq!(reason(run(&w, Side::Buy, dec!(250))), Some(RejectReason::Leverage));
        w.guards.max_leverage = Some("1".parse().unwrap());
        assert_eq!(reason(run(&w, Side::Buy, dec!(150))), Some(RejectReason::Leverage));
    }

    #[test]
    fn limits_are_measured_on_the_equity_the_account_can_back() {
        let mut w = world();
        w.config.max_symbol_exposure_percent = Some(dec!(18));
        // 15 BTC at 100 is 15% of 10,000 but 30% of the 5,000 the account still holds.
        assert!(run(&w, Side::Buy, dec!(15)).is_ok());
        w.account.unbacked_cash = dec!(5000);
        assert_eq!(reason(run(&w, Side::Buy, dec!(15))), Some(RejectReason::SymbolExposure));
        w.account.unbacked_cash = dec!(10000);
        let refused = run(&w, Side::Buy, dec!(1)).unwrap_err();
        assert_eq!(refused.reason, RejectReason::NoEquity);
        assert!(refused.message.contains("10000 of the bot's cash"), "{refused}");
    }

    #[test]
    fn exposure_caps_per_symbol_and_total() {
        let mut w = world();
        w.config.max_notional_per_symbol.insert(w.symbol.clone(), dec!(5000));
        assert_eq!(reason(run(&w, Side::Buy, dec!(60))), Some(RejectReason::SymbolNotional));
        w.guards
            .max_notional_per_symbol
            .insert("BTC-USD".into(), "1000".parse().unwrap());
        assert_eq!(reason(run(&w, Side::Buy, dec!(20))), Some(RejectReason::SymbolNotional));
        let mut w = world();
        w.config.max_symbol_exposure_percent = Some(dec!(18));
        assert_eq!(reason(run(&w, Side::Buy, dec!(20))), Some(RejectReason::SymbolExposure));
        let mut w = world();
        w.config.max_exposure_percent = Some(dec!(60));
        w.account.positions.push(Position {
            symbol: "ETH-USD".parse().unwrap(),
            quantity: dec!(50),
            entry_price: dec!(100),
        });
        assert_eq!(reason(run(&w, Side::Buy, dec!(20))), Some(RejectReason::TotalExposure));
    }

    #[test]
    fn reducing_orders_skip_exposure_checks_but_not_the_kill_switch() {
        let mut w = world();
        w.account.positions.push(Position {
            symbol: w.symbol.clone(),
            quantity: dec!(500),
            entry_price: dec!(100),
        });
        w.config.max_leverage = dec!(1);
        assert!(run(&w, Side::Sell, dec!(100)).is_ok());
        w.config.kill_switch = true;
        assert_eq!(reason(run(&w, Side::Sell, dec!(100))), Some(RejectReason::KillSwitch));
    }

    #[test]
    fn spot_sells_beyond_the_own_inventory_are_refused_before_the_exchange() {
        let mut w = world();
        assert_eq!(reason(run(&w, Side::Sell, dec!(1))), Some(RejectReason::SpotShort));
        w.account.positions.push(Position {
            symbol: w.symbol.clone(),
            quantity: dec!(2),
            entry_price: dec!(100),
        });
        assert!(run(&w, Side::Sell, dec!(2)).is_ok());
        assert_eq!(reason(run(&w, Side::Sell, dec!(2.5))), Some(RejectReason::SpotShort));
        w.product.is_perpetual = true;
        assert_ne!(reason(run(&w, Side::Sell, dec!(2.5))), Some(RejectReason::SpotShort));
    }

    #[test]
    fn slippage_guard_uses_spread_and_depth() {
        let mut w = world();
        w.quote.ask_size = dec!(1); // 100.1 of depth at the touch
        assert_eq!(reason(run(&w, Side::Buy, dec!(1))), Some(RejectReason::Slippage));
        w.quote.ask_size = dec!(0);
        assert_eq!(reason(run(&w, Side::Buy, dec!(1))), Some(RejectReason::Slippage));
    }

    #[test]
    fn stale_data_session_and_status() {
        let mut w = world();
        w.config.session = Some(crate::config::TradingSession {
            window: crate::config::UtcWindow {
                start_minute: 14 * 60,
                end_minute: 15 * 60,
            },
            weekdays_only: true,
        });
        assert_eq!(reason(run(&w, Side::Buy, dec!(1))), Some(RejectReason::OutsideSession));
        let mut w = world();
        w.product.trading_disabled = true;
        assert_eq!(reason(run(&w, Side::Buy, dec!(1))), Some(RejectReason::Untradable));
        let mut w = world();
        w.config.max_staleness_seconds = 0;
        assert_eq!(reason(run(&w, Side::Buy, dec!(1))), Some(RejectReason::StaleMarketData));
    }

    #[test]
    fn liquidation_buffer_on_perpetuals() {
        let mut w = world();
        w.product.is_perpetual = true;
        w.config.max_leverage = dec!(20);
        w.config.maintenance_margin_percent = dec!(10);
        // Exposure 9x equity: buffer = 1 - 0.9 = 10% < 15%.
        assert_eq!(
            reason(run(&w, Side::Buy, dec!(900))),
            Some(RejectReason::LiquidationBuffer)
        );
        assert!(run(&w, Side::Buy, dec!(100)).is_ok());
    }

    #[test]
    fn clock_knows_weekends() {
        // 2026-11-21 was a Saturday.
        assert!(!UtcClock::at_unix(1_795_219_200 + 3600).weekday);
        assert!(UtcClock::at_unix(1_795_219_200 - 86_400 * 3).weekday);
        assert_eq!(UtcClock::at_unix(1_795_219_200 + 3600).minute_of_day, 60);
    }
}

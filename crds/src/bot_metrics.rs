//! The bot's Prometheus metrics: the contract between the bot (which exports them), the
//! operator (which scrapes them to enforce guards and gate rollouts), the chart's alert rules
//! and `docs/MONITORING_PLAYBOOK.md` (a test checks every name is documented there).

/// A metric the bot exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    pub name: &'static str,
    pub help: &'static str,
    /// Label names, in order.
    pub labels: &'static [&'static str],
}

macro_rules! metrics {
    ($($ident:ident = $name:literal [$($label:literal),*] $help:literal;)*) => {
        $(pub const $ident: MetricDef = MetricDef { name: $name, help: $help, labels: &[$($label),*] };)*
        /// Every metric the bot exports.
        pub const ALL: &[MetricDef] = &[$($ident),*];
    };
}

metrics! {
    BUILD_INFO = "perps_bot_build_info" ["version", "profile", "instance"] "Always 1; labels carry the bot version, profile and instance.";
    CYCLE_DURATION = "perps_bot_cycle_duration_seconds" [] "Wall time of one trading cycle (all symbols).";
    CYCLES = "perps_bot_cycles_total" [] "Trading cycles completed, with or without errors.";
    CYCLE_ERRORS = "perps_bot_cycle_errors_total" [] "Trading cycles that ended with an error.";
    ERRORS = "perps_bot_errors_total" ["kind"] "Errors by kind (cycle, exchange, order); the errorRate guard counts their sum.";
    LAST_CYCLE = "perps_bot_last_cycle_timestamp_seconds" [] "Unix time the last cycle finished.";
    EQUITY = "perps_bot_equity" [] "The bot's own equity in quote currency: its cash plus unrealised PnL (in spot, its own cash and inventory, never other bots' trades, deposits or withdrawals).";
    EQUITY_PEAK = "perps_bot_equity_peak" [] "Highest equity seen, the drawdown reference.";
    PNL_TODAY = "perps_bot_pnl_today" [] "Realised plus unrealised PnL since the UTC day started (negative = loss).";
    DAILY_LOSS = "perps_bot_daily_loss" [] "Loss since the UTC day started (0 when in profit); the dailyLoss guard's value.";
    DAILY_LOSS_RATIO = "perps_bot_daily_loss_ratio" [] "Daily loss divided by the lowest configured dailyLoss level (0 when none).";
    DRAWDOWN = "perps_bot_drawdown_percent" [] "Percentage drop of equity from its peak.";
    STALENESS = "perps_bot_market_data_staleness_seconds" ["symbol"] "Age of the newest good market data per symbol.";
    VOLATILITY = "perps_bot_volatility" ["symbol"] "Annualised standard deviation of one-minute returns over the guard window (window one-minute returns, whatever the cycle interval), per symbol.";
    CONCENTRATION = "perps_bot_concentration" [] "Herfindahl index of position notionals as shares of equity, sum of (notional / equity)^2: 0 flat, 1 all equity in one symbol.";
    OPEN_ORDERS = "perps_bot_open_orders" [] "Orders resting on the exchange.";
    POSITION_NOTIONAL = "perps_bot_position_notional" ["symbol"] "Absolute notional of the open position per symbol, in quote currency.";
    EXPOSURE = "perps_bot_exposure_notional" [] "Sum of absolute position notionals, in quote currency.";
    ORDERS_SUBMITTED = "perps_bot_orders_submitted_total" ["symbol", "side"] "Orders submitted to the exchange.";
    ORDERS_FILLED = "perps_bot_orders_filled_total" ["symbol", "side"] "Orders filled (fully).";
    ORDERS_REJECTED = "perps_bot_orders_rejected_total" ["reason"] "Orders refused by the trading state, risk checks, quantisation or the exchange, by reason.";
    ORDERS_DRY_RUN = "perps_bot_orders_dry_run_total" ["symbol", "side"] "Orders decided but not submitted because of dry-run.";
    GUARD_TRIPS = "perps_bot_guard_trips_total" ["guard", "level"] "Guard trips latched by the bot's in-process guards.";
    GUARD_LATCHED = "perps_bot_guard_latched" ["guard", "level"] "Unix time a still-latched in-process trip tripped (0 when none).";
    TRADING_MODE = "perps_bot_trading_mode" [] "Effective trading mode: 0 Normal, 1 ReduceOnly, 2 Halted.";
    MODE_KNOWN = "perps_bot_mode_known" [] "1 once the bot knows its effective mode (it trades only then).";
    LEASE_HELD = "perps_bot_lease_held" [] "1 while the bot holds its identity Lease (it trades only then).";
    ACCOUNT_AGE = "perps_bot_account_telemetry_age_seconds" [] "Age of the last successful balances/positions refresh.";
    INVENTORY = "perps_bot_inventory_quantity" ["symbol"] "Base quantity the bot owns in spot: what its own orders bought net of what they sold, capped to the account.";
    INVENTORY_UNOWNED = "perps_bot_inventory_unowned_quantity" ["symbol"] "Base currency on the account the bot did not buy: never sold, never counted in its equity.";
    CASH_UNBACKED = "perps_bot_cash_unbacked" [] "Of the bot's own spot cash, what the account does not hold available (other bots spent it, it was withdrawn): in its equity, never sized or risked on.";
    INVENTORY_CAPPED = "perps_bot_inventory_capped_total" ["symbol"] "Times the account held less than the bot's ledger (coins moved away) and the ledger was capped to what exists.";
    STATE_WRITE_ERRORS = "perps_bot_state_write_errors_total" ["file"] "Failed writes of the bot's files (guard_state, metrics, health); a guard state that cannot be written restricts the bot to ReduceOnly.";
    FLATTENS = "perps_bot_flatten_requests_total" ["result"] "Flatten requests acted on (done: own positions closed with reduce-only orders; refused: the trading state or a check refused).";
    UPTIME = "perps_bot_uptime_seconds" [] "Seconds since the bot started.";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_prefixed() {
        let names: HashSet<&str> = ALL.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|m| m.name.starts_with("perps_bot_")));
        assert!(
            ALL.iter()
                .filter(|m| m.name.ends_with("_total"))
                .all(|m| !m.help.is_empty())
        );
    }
}

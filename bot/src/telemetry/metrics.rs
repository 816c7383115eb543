//! The Prometheus registry with every `perps_bot_*` metric (names and help from the shared
//! contract in `tradingbot_crds::bot_metrics`). Every series a dashboard or alert needs exists
//! from the start (at zero), so "absent" always means "not scraped", never "nothing happened".

use crate::domain::{Side, Symbol};
use crate::risk::RejectReason;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use tradingbot_crds::TradingMode;
use tradingbot_crds::bot_metrics::{self as m, MetricDef};
use tradingbot_crds::guards::GuardKind;

pub struct BotMetrics {
    registry: Registry,
    pub cycle_duration: Histogram,
    pub cycles: IntCounter,
    pub cycle_errors: IntCounter,
    pub errors: IntCounterVec,
    pub last_cycle: Gauge,
    pub equity: Gauge,
    pub equity_peak: Gauge,
    pub pnl_today: Gauge,
    pub daily_loss: Gauge,
    pub daily_loss_ratio: Gauge,
    pub drawdown: Gauge,
    pub staleness: GaugeVec,
    pub volatility: GaugeVec,
    pub concentration: Gauge,
    pub open_orders: IntGauge,
    pub position_notional: GaugeVec,
    pub exposure: Gauge,
    pub orders_submitted: IntCounterVec,
    pub orders_filled: IntCounterVec,
    pub orders_rejected: IntCounterVec,
    pub orders_dry_run: IntCounterVec,
    pub guard_trips: IntCounterVec,
    pub guard_latched: GaugeVec,
    pub trading_mode: IntGauge,
    pub mode_known: IntGauge,
    pub lease_held: IntGauge,
    pub account_age: Gauge,
    pub uptime: Gauge,
    pub inventory: GaugeVec,
    pub inventory_unowned: GaugeVec,
    pub inventory_capped: IntCounterVec,
    pub cash_unbacked: Gauge,
    pub state_write_errors: IntCounterVec,
    pub flattens: IntCounterVec,
}

fn opts(def: MetricDef) -> Opts {
    Opts::new(def.name, def.help)
}

/// Error kinds counted by `perps_bot_errors_total`.
pub const ERROR_KINDS: [&str; 3] = ["cycle", "exchange", "order"];
/// Files counted by `perps_bot_state_write_errors_total`.
pub const OUTPUT_FILES: [&str; 3] = ["guard_state", "metrics", "health"];
/// Results counted by `perps_bot_flatten_requests_total`.
pub const FLATTEN_RESULTS: [&str; 2] = ["done", "refused"];

impl BotMetrics {
    pub fn new(version: &str, profile: &str, instance: &str, symbols: &[Symbol]) -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($metric:expr) => {{
                let metric = $metric.expect("metric definitions are valid");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("metric names are unique");
                metric
            }};
        }
        let build_info: IntGaugeVec = reg!(IntGaugeVec::new(opts(m::BUILD_INFO), m::BUILD_INFO.labels));
        build_info.with_label_values(&[version, profile, instance]).set(1);
        let buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 6.0, 10.0, 30.0];
        let metrics = Self {
            cycle_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(m::CYCLE_DURATION.name, m::CYCLE_DURATION.help).buckets(buckets)
            )),
            cycles: reg!(IntCounter::with_opts(opts(m::CYCLES))),
            cycle_errors: reg!(IntCounter::with_opts(opts(m::CYCLE_ERRORS))),
            errors: reg!(IntCounterVec::new(opts(m::ERRORS), m::ERRORS.labels)),
            last_cycle: reg!(Gauge::with_opts(opts(m::LAST_CYCLE))),
            equity: reg!(Gauge::with_opts(opts(m::EQUITY))),
            equity_peak: reg!(Gauge::with_opts(opts(m::EQUITY_PEAK))),
            pnl_today: reg!(Gauge::with_opts(opts(m::PNL_TODAY))),
            daily_loss: reg!(Gauge::with_opts(opts(m::DAILY_LOSS))),
            daily_loss_ratio: reg!(Gauge::with_opts(opts(m::DAILY_LOSS_RATIO))),
            drawdown: reg!(Gauge::with_opts(opts(m::DRAWDOWN))),
            staleness: reg!(GaugeVec::new(opts(m::STALENESS), m::STALENESS.labels)),
            volatility: reg!(GaugeVec::new(opts(m::VOLATILITY), m::VOLATILITY.labels)),
            concentration: reg!(Gauge::with_opts(opts(m::CONCENTRATION))),
            open_orders: reg!(IntGauge::with_opts(opts(m::OPEN_ORDERS))),
            position_notional: reg!(GaugeVec::new(opts(m::POSITION_NOTIONAL), m::POSITION_NOTIONAL.labels)),
            exposure: reg!(Gauge::with_opts(opts(m::EXPOSURE))),
            orders_submitted: reg!(IntCounterVec::new(
                opts(m::ORDERS_SUBMITTED),
                m::ORDERS_SUBMITTED.labels
            )),
            orders_filled: reg!(IntCounterVec::new(opts(m::ORDERS_FILLED), m::ORDERS_FILLED.labels)),
            orders_rejected: reg!(IntCounterVec::new(opts(m::ORDERS_REJECTED), m::ORDERS_REJECTED.labels)),
            orders_dry_run: reg!(IntCounterVec::new(opts(m::ORDERS_DRY_RUN), m::ORDERS_DRY_RUN.labels)),
            guard_trips: reg!(IntCounterVec::new(opts(m::GUARD_TRIPS), m::GUARD_TRIPS.labels)),
            guard_latched: reg!(GaugeVec::new(opts(m::GUARD_LATCHED), m::GUARD_LATCHED.labels)),
            trading_mode: reg!(IntGauge::with_opts(opts(m::TRADING_MODE))),
            mode_known: reg!(IntGauge::with_opts(opts(m::MODE_KNOWN))),
            lease_held: reg!(IntGauge::with_opts(opts(m::LEASE_HELD))),
            account_age: reg!(Gauge::with_opts(opts(m::ACCOUNT_AGE))),
            uptime: reg!(Gauge::with_opts(opts(m::UPTIME))),
            inventory: reg!(GaugeVec::new(opts(m::INVENTORY), m::INVENTORY.labels)),
            inventory_unowned: reg!(GaugeVec::new(opts(m::INVENTORY_UNOWNED), m::INVENTORY_UNOWNED.labels)),
            inventory_capped: reg!(IntCounterVec::new(
                opts(m::INVENTORY_CAPPED),
                m::INVENTORY_CAPPED.labels
            )),
            cash_unbacked: reg!(Gauge::with_opts(opts(m::CASH_UNBACKED))),
            state_write_errors: reg!(IntCounterVec::new(
                opts(m::STATE_WRITE_ERRORS),
                m::STATE_WRITE_ERRORS.labels
            )),
            flattens: reg!(IntCounterVec::new(opts(m::FLATTENS), m::FLATTENS.labels)),
            registry,
        };
        metrics.create_series(symbols);
        metrics
    }

    /// Create every labelled series at zero.
    pub fn create_series(&self, symbols: &[Symbol]) {
        for kind in ERROR_KINDS {
            self.errors.with_label_values(&[kind]);
        }
        for file in OUTPUT_FILES {
            self.state_write_errors.with_label_values(&[file]);
        }
        for result in FLATTEN_RESULTS {
            self.flattens.with_label_values(&[result]);
        }
        for symbol in symbols {
            self.inventory.with_label_values(&[symbol.as_str()]);
            self.inventory_unowned.with_label_values(&[symbol.as_str()]);
            self.inventory_capped.with_label_values(&[symbol.as_str()]);
            self.staleness.with_label_values(&[symbol.as_str()]);
            self.volatility.with_label_values(&[symbol.as_str()]);
            self.position_notional.with_label_values(&[symbol.as_str()]);
            for side in [Side::Buy, Side::Sell] {
                let labels = [symbol.as_str(), side.as_str()];
                self.orders_submitted.with_label_values(&labels);
                self.orders_filled.with_label_values(&labels);
                self.orders_dry_run.with_label_values(&labels);
            }
        }
        for reason in RejectReason::ALL {
            self.orders_rejected.with_label_values(&[reason.as_str()]);
        }
        for guard in GuardKind::ALL {
            for level in [TradingMode::ReduceOnly, TradingMode::Halted] {
                self.guard_trips.with_label_values(&[guard.as_str(), level.as_str()]);
                self.guard_latched
                    .with_label_values(&[guard.as_str(), level.as_str()])
                    .set(0.0);
            }
        }
    }

    pub fn set_mode(&self, mode: TradingMode, known: bool) {
        self.trading_mode.set(mode.gauge_value());
        self.mode_known.set(i64::from(known));
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Decimal to the float Prometheus exposes (export only; no arithmetic happens on it).
pub fn f(value: Decimal) -> f64 {
    value.to_f64().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_metric_is_exported_from_the_start() {
        let metrics = BotMetrics::new("0.1.0", "dev", "prod", &["BTC-USD".parse().unwrap()]);
        let text = metrics.render();
        for def in m::ALL {
            assert!(text.contains(def.name), "{} missing from /metrics", def.name);
        }
    }
}

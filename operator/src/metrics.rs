//! The operator's own Prometheus metrics.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use rust_decimal::prelude::ToPrimitive;
use std::collections::HashMap;
use std::sync::Mutex;
use tradingbot_crds::TradingMode;
use tradingbot_crds::account::{AccountLimit, AccountLimits, TradingAccountStatus};
use tradingbot_crds::status::{Phase, RolloutPhase};

/// Each bot's (namespace, name) and its (mode, phase, rollout phase).
/// Every bot's last recorded state, and how many bots are in each (mode, phase).
#[derive(Default)]
struct BotIndex {
    bots: HashMap<(String, String), (TradingMode, Phase, RolloutPhase)>,
    counts: HashMap<(TradingMode, &'static str), i64>,
}

pub struct OperatorMetrics {
    registry: Registry,
    pub reconciliations: IntCounterVec,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub bots: IntGaugeVec,
    pub guard_trips: IntCounterVec,
    pub scrape_failures: IntCounterVec,
    pub scrape_duration: Histogram,
    pub scrapes_unchanged: IntCounter,
    pub prometheus_queries: IntCounterVec,
    pub rollout_phase: IntGaugeVec,
    pub rollouts_started: IntCounter,
    pub rollouts_promoted: IntCounter,
    pub rollouts_aborted: IntCounter,
    pub writes: IntCounterVec,
    pub api_requests: IntCounterVec,
    pub leader: IntGaugeVec,
    pub account_mode: IntGaugeVec,
    pub account_total: GaugeVec,
    pub account_limit: GaugeVec,
    pub account_trips: IntCounterVec,
    pub child_write_failures: IntCounterVec,
    index: Mutex<BotIndex>,
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl OperatorMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($metric:expr) => {{
                let metric = $metric.expect("valid metric");
                registry
                    .register(Box::new(metric.clone()))
                    .expect("unique metric");
                metric
            }};
        }
        let seconds = vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        Self {
            reconciliations: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_reconciliations_total",
                    "Reconciliations by result (ok, error)."
                ),
                &["result"]
            )),
            reconcile_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_reconcile_errors_total",
                    "Failed reconciliations by reason."
                ),
                &["reason"]
            )),
            reconcile_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "tradingbot_operator_reconcile_duration_seconds",
                    "Time one reconciliation takes."
                )
                .buckets(seconds.clone())
            )),
            bots: reg!(IntGaugeVec::new(
                Opts::new("tradingbot_operator_bots", "TradingBots by effective mode and phase."),
                &["mode", "phase"]
            )),
            guard_trips: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_guard_trips_total",
                    "Guard trips latched by the operator, by guard and level."
                ),
                &["guard", "level"]
            )),
            scrape_failures: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_scrape_failures_total",
                    "Failed scrapes of bot metrics."
                ),
                &["namespace", "tradingbot"]
            )),
            scrapes_unchanged: reg!(IntCounter::new(
                "tradingbot_operator_scrapes_unchanged_total",
                "Scrapes of quiet bots that changed nothing a decision reads (no reconcile asked)."
            )),
            prometheus_queries: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_prometheus_queries_total",
                    "Guard queries to Prometheus (guard source prometheus), by result."
                ),
                &["result"]
            )),
            scrape_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "tradingbot_operator_scrape_duration_seconds",
                    "Time one scrape of a bot takes."
                )
                .buckets(seconds)
            )),
            rollout_phase: reg!(IntGaugeVec::new(
                Opts::new(
                    "tradingbot_operator_rollout_phase",
                    "1 for the rollout phase each TradingBot is in."
                ),
                &["namespace", "tradingbot", "phase"]
            )),
            rollouts_started: reg!(IntCounter::new(
                "tradingbot_operator_rollouts_started_total",
                "Canary rollouts started."
            )),
            rollouts_promoted: reg!(IntCounter::new(
                "tradingbot_operator_rollouts_promoted_total",
                "Rollouts promoted to prod."
            )),
            rollouts_aborted: reg!(IntCounter::new(
                "tradingbot_operator_rollouts_aborted_total",
                "Rollouts aborted."
            )),
            writes: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_api_writes_total",
                    "Write requests the operator sent to the API server."
                ),
                &["verb", "resource"]
            )),
            api_requests: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_api_requests_total",
                    "Requests the operator sent to the API server, by verb."
                ),
                &["verb"]
            )),
            leader: reg!(IntGaugeVec::new(
                Opts::new(
                    "tradingbot_operator_leader",
                    "1 while this replica leads its shard (or runs without election), 0 while it stands by."
                ),
                &["shard"]
            )),
            account_mode: reg!(IntGaugeVec::new(
                Opts::new(
                    "tradingbot_operator_account_mode",
                    "Each TradingAccount's mode: 0 Normal, 1 ReduceOnly, 2 Halted (every bot on it is at least this)."
                ),
                &["namespace", "account"]
            )),
            account_total: reg!(GaugeVec::new(
                Opts::new(
                    "tradingbot_operator_account_value",
                    "Each TradingAccount's total over its bots, by limit (dailyLoss and grossExposure in quote currency, openOrders, bots)."
                ),
                &["namespace", "account", "limit"]
            )),
            account_limit: reg!(GaugeVec::new(
                Opts::new(
                    "tradingbot_operator_account_limit",
                    "Each TradingAccount's configured limit levels, by limit and level (ReduceOnly, Halted)."
                ),
                &["namespace", "account", "limit", "level"]
            )),
            account_trips: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_account_trips_total",
                    "TradingAccount limit trips latched by the operator, by limit and level."
                ),
                &["limit", "level"]
            )),
            child_write_failures: reg!(IntCounterVec::new(
                Opts::new(
                    "tradingbot_operator_child_write_failures_total",
                    "Child objects the operator could not write (refused by the API server, timed out, or owned by another object), by kind; counted per attempt."
                ),
                &["kind"]
            )),
            index: Mutex::new(BotIndex::default()),
            registry,
        }
    }

    /// Record a bot's mode, phase and rollout phase (None = the bot is gone). O(1) in the fleet's
    /// size: the (mode, phase) counts move by one, and only this bot's rollout series change.
    pub fn record_bot(&self, namespace: &str, bot: &str, state: Option<(TradingMode, Phase, RolloutPhase)>) {
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), bot.to_string());
        let before = match state {
            Some(state) => index.bots.insert(key, state),
            None => index.bots.remove(&key),
        };
        if before == state {
            return;
        }
        if let Some((mode, phase, rollout)) = before {
            self.count_bot(&mut index.counts, mode, phase, -1);
            let _ = self
                .rollout_phase
                .remove_label_values(&[namespace, bot, rollout.as_str()]);
        }
        if let Some((mode, phase, rollout)) = state {
            self.count_bot(&mut index.counts, mode, phase, 1);
            self.rollout_phase
                .with_label_values(&[namespace, bot, rollout.as_str()])
                .set(1);
        }
    }

    /// Move the number of bots in (mode, phase) by `delta`; a combination no bot is in has no series.
    fn count_bot(
        &self,
        counts: &mut HashMap<(TradingMode, &'static str), i64>,
        mode: TradingMode,
        phase: Phase,
        delta: i64,
    ) {
        let count = counts.entry((mode, phase.as_str())).or_default();
        *count += delta;
        if *count > 0 {
            self.bots
                .with_label_values(&[mode.as_str(), phase.as_str()])
                .set(*count);
        } else {
            counts.remove(&(mode, phase.as_str()));
            let _ = self.bots.remove_label_values(&[mode.as_str(), phase.as_str()]);
        }
    }

    /// Record an account's mode, totals and limits (None = the account is gone).
    pub fn record_account(
        &self,
        namespace: &str,
        account: &str,
        state: Option<(&TradingAccountStatus, &AccountLimits)>,
    ) {
        for limit in AccountLimit::ALL {
            let _ = self
                .account_total
                .remove_label_values(&[namespace, account, limit.as_str()]);
            for level in [TradingMode::ReduceOnly, TradingMode::Halted] {
                let _ = self
                    .account_limit
                    .remove_label_values(&[namespace, account, limit.as_str(), level.as_str()]);
            }
        }
        let Some((status, limits)) = state else {
            let _ = self.account_mode.remove_label_values(&[namespace, account]);
            return;
        };
        self.account_mode
            .with_label_values(&[namespace, account])
            .set(status.mode.unwrap_or_default().gauge_value());
        let Some(aggregate) = &status.aggregate else { return };
        let number = |text: &str| {
            text.parse::<rust_decimal::Decimal>()
                .ok()
                .and_then(|d| d.to_f64())
                .unwrap_or(0.0)
        };
        for (limit, value) in [
            (AccountLimit::DailyLoss, number(&aggregate.daily_loss)),
            (AccountLimit::GrossExposure, number(&aggregate.gross_exposure)),
            (AccountLimit::OpenOrders, aggregate.open_orders as f64),
            (AccountLimit::Bots, f64::from(aggregate.bots)),
        ] {
            self.account_total
                .with_label_values(&[namespace, account, limit.as_str()])
                .set(value);
            let levels = limits.levels(limit);
            for (level, at) in [
                (TradingMode::ReduceOnly, levels.reduce_only_at),
                (TradingMode::Halted, levels.halt_at),
            ] {
                if let Some(at) = at.and_then(|d| d.to_f64()) {
                    self.account_limit
                        .with_label_values(&[namespace, account, limit.as_str(), level.as_str()])
                        .set(at);
                }
            }
        }
    }

    pub fn wrote(&self, verb: &str, resource: &str) {
        self.writes.with_label_values(&[verb, resource]).inc();
    }

    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_by_mode_and_phase_follow_the_index() {
        let m = OperatorMetrics::new();
        m.record_bot(
            "a",
            "x",
            Some((TradingMode::Halted, Phase::Running, RolloutPhase::Idle)),
        );
        m.record_bot(
            "a",
            "y",
            Some((TradingMode::Halted, Phase::Running, RolloutPhase::CanaryRunning)),
        );
        assert_eq!(m.bots.with_label_values(&["Halted", "Running"]).get(), 2);
        m.record_bot("a", "x", None);
        assert_eq!(m.bots.with_label_values(&["Halted", "Running"]).get(), 1);
        assert!(
            m.render().contains(
                "tradingbot_operator_rollout_phase{namespace=\"a\",phase=\"CanaryRunning\",tradingbot=\"y\"} 1"
            )
        );
        // A bot moving between states moves one count; a state no bot is in has no series.
        m.record_bot(
            "a",
            "y",
            Some((TradingMode::Normal, Phase::Running, RolloutPhase::Promoted)),
        );
        let text = m.render();
        assert!(!text.contains("mode=\"Halted\""), "{text}");
        assert!(!text.contains("phase=\"CanaryRunning\""), "{text}");
        assert!(
            text.contains("tradingbot_operator_rollout_phase{namespace=\"a\",phase=\"Promoted\",tradingbot=\"y\"} 1")
        );
        assert_eq!(m.bots.with_label_values(&["Normal", "Running"]).get(), 1);
        m.record_bot("a", "y", None);
        assert!(!m.render().contains("tradingbot_operator_rollout_phase{"));
    }
}

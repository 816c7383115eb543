//! The bot's in-process runtime guards: it measures what the guards look at (daily loss from
//! equity, drawdown from the equity peak, market data staleness, volatility, concentration,
//! error rate), evaluates the levels every cycle with the shared rules, latches trips and
//! releases them only by acknowledgement or, with `resume: Auto`, after healthy cycles.
//!
//! - Volatility is measured on one-minute closes (whatever the cycle interval): the sample
//!   standard deviation of the last `window` one-minute returns, annualised with
//!   √(minutes per year). Crypto majors run at 40–80% a year; see the profiles for the levels.
//! - Concentration is the Herfindahl index of position notionals *as shares of equity*:
//!   Σ (notionalᵢ / equity)². One position worth 18% of equity is 0.0324 whatever the number
//!   of symbols; everything in one coin is 1. A single-symbol bot is not concentrated by
//!   construction, only by size.
//! - Equity and its day-start and peak references are the bot's own (its own cash plus its
//!   own inventory, see `crate::cash` and `crate::inventory`); coins taken off its books
//!   because they left the account lower the references by their value, so a transfer is not
//!   a trading loss. The references belong to one set of cash books: when the books are opened
//!   anew (their file was lost or removed), the references restart from the next measurement.

use crate::clock;
use crate::domain::Symbol;
use rust_decimal::Decimal;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use tradingbot_crds::TradingMode;
use tradingbot_crds::guards::{self, GuardObservation, HealthyStreaks};
use tradingbot_crds::spec::Guards;
use tradingbot_crds::status::{GuardTrip, Instance};

const SECONDS_PER_YEAR: i64 = 365 * 24 * 3600;
/// The horizon of the returns the volatility guard measures: one-minute closes.
pub const VOLATILITY_HORIZON_SECONDS: i64 = 60;

/// What happened to the latch this cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum GuardEvent {
    Tripped(GuardTrip),
    Released { trip: GuardTrip, why: String },
}

/// State that must survive a container restart (a latched trip must not vanish with it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PersistedGuardState {
    pub utc_day: i64,
    pub day_start_equity: Option<Decimal>,
    pub peak_equity: Option<Decimal>,
    pub trips: Vec<GuardTrip>,
    /// The last flatten request acted on (each request id is acted on once, across restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_flatten_request: Option<String>,
    /// The cash books the equity references were measured against (`crate::cash::CashBooks::id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub books: Option<String>,
}

/// The numbers the guards and metrics look at, for one cycle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measurements {
    pub equity: Decimal,
    pub pnl_today: Decimal,
    pub daily_loss: Decimal,
    pub drawdown_percent: Decimal,
    pub staleness: BTreeMap<Symbol, Decimal>,
    pub volatility: BTreeMap<Symbol, Decimal>,
    pub concentration: Decimal,
    pub errors_in_window: u64,
}

impl Measurements {
    pub fn observation(&self) -> GuardObservation {
        GuardObservation {
            daily_loss: Some(self.daily_loss),
            drawdown_percent: Some(self.drawdown_percent),
            market_data_staleness_seconds: self.staleness.values().max().copied(),
            volatility: self.volatility.values().max().copied(),
            concentration: Some(self.concentration),
            errors_in_window: Some(Decimal::from(self.errors_in_window)),
        }
    }
}

pub struct GuardMonitor {
    levels: Guards,
    enabled: bool,
    state: PersistedGuardState,
    /// The latest one-minute closes per symbol (oldest first).
    closes: BTreeMap<Symbol, Vec<Decimal>>,
    errors: VecDeque<i64>,
    streaks: HealthyStreaks,
    last: Measurements,
}

impl GuardMonitor {
    pub fn new(levels: Guards, enabled: bool, restored: Option<PersistedGuardState>) -> Self {
        Self {
            levels,
            enabled,
            state: restored.unwrap_or_default(),
            closes: BTreeMap::new(),
            errors: VecDeque::new(),
            streaks: HealthyStreaks::default(),
            last: Measurements::default(),
        }
    }

    pub fn set_levels(&mut self, levels: Guards) {
        self.levels = levels;
    }

    pub fn levels(&self) -> &Guards {
        &self.levels
    }

    pub fn persisted(&self) -> &PersistedGuardState {
        &self.state
    }

    pub fn trips(&self) -> &[GuardTrip] {
        &self.state.trips
    }

    /// Remember that flatten request `id` was acted on.
    pub fn set_last_flatten_request(&mut self, id: &str) {
        self.state.last_flatten_request = Some(id.to_string());
    }

    pub fn last(&self) -> &Measurements {
        &self.last
    }

    /// The restriction latched trips impose.
    pub fn mode(&self) -> (TradingMode, String) {
        (
            guards::mode_of_trips(&self.state.trips),
            guards::reason_of_trips(&self.state.trips).unwrap_or_else(|| "no latched trips".into()),
        )
    }

    /// Count an error (failed cycle, exchange error, exchange rejection) at `now_ms`.
    pub fn record_error(&mut self, now_ms: i64) {
        self.errors.push_back(now_ms);
    }

    /// The returns window of the volatility guard (one-minute returns).
    pub fn volatility_window(&self) -> usize {
        self.levels
            .volatility
            .as_ref()
            .map_or(DEFAULT_VOLATILITY_WINDOW, |v| v.window) as usize
    }

    /// The latest one-minute closes of `symbol` (oldest first); the last `window + 1` count.
    pub fn record_closes(&mut self, symbol: &Symbol, closes: &[Decimal]) {
        let keep = self.volatility_window() + 1;
        let skip = closes.len().saturating_sub(keep);
        self.closes.insert(symbol.clone(), closes[skip..].to_vec());
    }

    /// Coins worth `value` left the bot's books without a trade (moved off the account): the
    /// day-start and peak references drop by it, so the loss guards see no trading loss.
    pub fn record_transfer_out(&mut self, value: Decimal) {
        if value <= Decimal::ZERO {
            return;
        }
        if let Some(start) = self.state.day_start_equity.as_mut() {
            *start -= value;
        }
        if let Some(peak) = self.state.peak_equity.as_mut() {
            *peak -= value;
        }
    }

    /// The equity is measured against the cash books `id` from now on. Returns true when the
    /// references belonged to other books (opened anew): they restart at the next measurement.
    pub fn use_books(&mut self, id: &str) -> bool {
        let other = match self.state.books.as_deref() {
            Some(known) if known == id => return false,
            Some(_) => true,
            // A fresh state, or one from before books were kept (they are then opened on the
            // balance its references were measured on): adopt them.
            None => false,
        };
        if other {
            self.state.day_start_equity = None;
            self.state.peak_equity = None;
        }
        self.state.books = Some(id.to_string());
        other
    }

    /// Measure everything for this cycle.
    pub fn measure(
        &mut self,
        equity: Decimal,
        now_ms: i64,
        staleness: BTreeMap<Symbol, Decimal>,
        notionals: &[Decimal],
    ) -> &Measurements {
        let day = clock::utc_day(now_ms);
        if self.state.utc_day != day || self.state.day_start_equity.is_none() {
            self.state.utc_day = day;
            self.state.day_start_equity = Some(equity);
        }
        let day_start = self.state.day_start_equity.unwrap_or(equity);
        let peak = self.state.peak_equity.map_or(equity, |p| p.max(equity));
        self.state.peak_equity = Some(peak);
        let pnl_today = equity - day_start;
        let drawdown_percent = if peak > Decimal::ZERO {
            ((peak - equity) / peak * Decimal::ONE_HUNDRED).max(Decimal::ZERO)
        } else {
            Decimal::ZERO
        };
        let window_ms = i64::from(self.levels.error_rate.as_ref().map(|e| e.window_seconds).unwrap_or(300)) * 1000;
        while self.errors.front().is_some_and(|t| *t < now_ms - window_ms) {
            self.errors.pop_front();
        }
        let volatility = self
            .closes
            .iter()
            .filter_map(|(s, closes)| {
                annualised_stdev(&returns_of(closes), VOLATILITY_HORIZON_SECONDS).map(|v| (s.clone(), v))
            })
            .collect();
        self.last = Measurements {
            equity,
            pnl_today,
            daily_loss: (-pnl_today).max(Decimal::ZERO),
            drawdown_percent,
            staleness,
            volatility,
            concentration: concentration(notionals, equity),
            errors_in_window: self.errors.len() as u64,
        };
        &self.last
    }

    /// Evaluate the levels against the last measurements; latch and (Auto) release trips.
    pub fn evaluate(&mut self, instance: Instance, now_ms: i64) -> Vec<GuardEvent> {
        if !self.enabled {
            return Vec::new();
        }
        let observed = self.last.observation();
        let breaches = guards::evaluate(&self.levels, &observed);
        let new = guards::new_trips(
            &self.state.trips,
            &breaches,
            instance,
            now_ms / 1000,
            &clock::rfc3339_ms(now_ms),
        );
        let mut events: Vec<GuardEvent> = new.iter().cloned().map(GuardEvent::Tripped).collect();
        self.state.trips.extend(new);
        let released = self
            .streaks
            .observe(&self.state.trips, &self.levels, |_| observed.clone());
        for trip in released {
            self.state.trips.retain(|t| t.id != trip.id);
            let why = format!(
                "{} healthy cycles in a row (resume: Auto)",
                self.levels.healthy_cycles_needed()
            );
            events.push(GuardEvent::Released { trip, why });
        }
        events
    }

    /// Release a trip by id, if its guard is back under the trip's level.
    pub fn acknowledge_trip(&mut self, trip_id: &str) -> Result<GuardTrip, String> {
        let observed = self.last.observation();
        let trip = guards::decide_ack(trip_id, &self.state.trips, &self.levels, |_| observed.clone())?;
        self.state.trips.retain(|t| t.id != trip.id);
        Ok(trip)
    }

    /// Release every trip of a guard that is back under its level (the operator accepted an
    /// acknowledgement for that guard).
    pub fn acknowledge_guard(&mut self, guard: &str) -> Vec<GuardTrip> {
        let observed = self.last.observation();
        let (released, kept): (Vec<GuardTrip>, Vec<GuardTrip>) = self
            .state
            .trips
            .drain(..)
            .partition(|t| t.guard == guard && guards::has_recovered(t, &self.levels, &observed).is_ok());
        self.state.trips = kept;
        released
    }

    /// The unix time of each latched trip, by guard and level (the `perps_bot_guard_latched` gauge).
    pub fn latched(&self) -> Vec<(String, TradingMode, i64)> {
        self.state
            .trips
            .iter()
            .map(|t| (t.guard.clone(), t.level, trip_unix_seconds(&t.id)))
            .collect()
    }
}

fn trip_unix_seconds(id: &str) -> i64 {
    id.rsplit('-').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The default returns window of the volatility guard (the CRD's default).
pub const DEFAULT_VOLATILITY_WINDOW: u32 = 20;

/// Simple returns of consecutive closes (zero or negative closes are skipped).
pub fn returns_of(closes: &[Decimal]) -> Vec<Decimal> {
    closes
        .windows(2)
        .filter(|pair| pair[0] > Decimal::ZERO && pair[1] > Decimal::ZERO)
        .map(|pair| (pair[1] - pair[0]) / pair[0])
        .collect()
}

/// Sample standard deviation of returns over `horizon_seconds` each, annualised
/// (× √(horizons per year)).
pub fn annualised_stdev(returns: &[Decimal], horizon_seconds: i64) -> Option<Decimal> {
    let n = returns.len();
    if n < 2 || horizon_seconds <= 0 {
        return None;
    }
    let count = Decimal::from(n);
    let mean = returns.iter().sum::<Decimal>() / count;
    let variance = returns.iter().map(|r| (r - mean) * (r - mean)).sum::<Decimal>() / (count - Decimal::ONE);
    // The square roots are of a statistic, not of money: f64 is fine here.
    let periods = SECONDS_PER_YEAR as f64 / horizon_seconds as f64;
    let annual = (variance.to_f64()? * periods).sqrt();
    Decimal::from_f64(annual).map(|v| v.round_dp(6))
}

/// Herfindahl index of position notionals as shares of equity, Σ (|notionalᵢ| / equity)²:
/// 0 when flat, 1 when the whole equity sits in one symbol (more with leverage). With no
/// equity left, any position counts as fully concentrated.
pub fn concentration(notionals: &[Decimal], equity: Decimal) -> Decimal {
    if notionals.iter().all(|n| n.is_zero()) {
        return Decimal::ZERO;
    }
    if equity <= Decimal::ZERO {
        return Decimal::ONE;
    }
    notionals
        .iter()
        .map(|n| {
            let share = n.abs() / equity;
            share * share
        })
        .sum::<Decimal>()
        .round_dp(6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use tradingbot_crds::spec::{ErrorRateGuard, Levels, ResumePolicy, SecondsLevels, VolatilityGuard};

    const DAY_MS: i64 = 86_400_000;

    fn levels() -> Guards {
        Guards {
            daily_loss: Some(Levels {
                reduce_only_at: Some("100".parse().unwrap()),
                halt_at: Some("200".parse().unwrap()),
            }),
            drawdown_percent: Some(Levels {
                reduce_only_at: Some("5".parse().unwrap()),
                halt_at: Some("10".parse().unwrap()),
            }),
            market_data_staleness_seconds: Some(SecondsLevels {
                reduce_only_at: Some(10),
                halt_at: Some(30),
            }),
            volatility: Some(VolatilityGuard {
                window: 5,
                reduce_only_at: Some("1".parse().unwrap()),
                halt_at: Some("3".parse().unwrap()),
            }),
            concentration: Some(Levels {
                reduce_only_at: Some("0.9".parse().unwrap()),
                halt_at: None,
            }),
            error_rate: Some(ErrorRateGuard {
                window_seconds: 60,
                reduce_only_at: Some(2),
                halt_at: Some(4),
            }),
            ..Guards::default()
        }
    }

    fn monitor() -> GuardMonitor {
        GuardMonitor::new(levels(), true, None)
    }

    fn daily_loss_only() -> Guards {
        Guards {
            daily_loss: levels().daily_loss,
            ..Guards::default()
        }
    }

    fn cycle(m: &mut GuardMonitor, equity: Decimal, now_ms: i64) -> Vec<GuardEvent> {
        m.measure(equity, now_ms, BTreeMap::new(), &[]);
        m.evaluate(Instance::Prod, now_ms)
    }

    fn tripped(events: &[GuardEvent]) -> Vec<(String, TradingMode)> {
        events
            .iter()
            .filter_map(|e| match e {
                GuardEvent::Tripped(t) => Some((t.guard.clone(), t.level)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn daily_loss_counts_equity_since_the_utc_day_started() {
        let mut m = monitor();
        let t0 = 20_000 * DAY_MS + 1000;
        assert!(cycle(&mut m, dec!(10000), t0).is_empty());
        assert_eq!(
            tripped(&cycle(&mut m, dec!(9900), t0 + 1)),
            [("dailyLoss".into(), TradingMode::ReduceOnly)]
        );
        assert_eq!(
            tripped(&cycle(&mut m, dec!(9800), t0 + 2)),
            [("dailyLoss".into(), TradingMode::Halted)]
        );
        assert_eq!(m.mode().0, TradingMode::Halted);
        // A new UTC day resets the reference but not the latch.
        cycle(&mut m, dec!(9800), t0 + DAY_MS);
        assert_eq!(m.last().daily_loss, Decimal::ZERO);
        assert_eq!(m.mode().0, TradingMode::Halted);
    }

    #[test]
    fn drawdown_from_the_peak() {
        let mut m = GuardMonitor::new(
            Guards {
                drawdown_percent: levels().drawdown_percent,
                ..Guards::default()
            },
            true,
            None,
        );
        let t = 20_000 * DAY_MS;
        cycle(&mut m, dec!(1000), t);
        cycle(&mut m, dec!(2000), t + 1);
        assert_eq!(
            tripped(&cycle(&mut m, dec!(1890), t + 2)),
            [("drawdownPercent".into(), TradingMode::ReduceOnly)]
        );
        assert_eq!(m.last().drawdown_percent, dec!(5.5));
    }

    #[test]
    fn staleness_error_rate_concentration_and_volatility_trip() {
        let mut m = monitor();
        let t = 20_000 * DAY_MS;
        let btc: Symbol = "BTC-USD".parse().unwrap();
        m.measure(dec!(1000), t, BTreeMap::from([(btc.clone(), dec!(31))]), &[dec!(960)]);
        let events = m.evaluate(Instance::Prod, t);
        let kinds = tripped(&events);
        assert!(
            kinds.contains(&("marketDataStalenessSeconds".into(), TradingMode::Halted)),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("concentration".into(), TradingMode::ReduceOnly)),
            "{kinds:?}"
        );

        let mut m = monitor();
        for i in 0..4 {
            m.record_error(t + i);
        }
        assert_eq!(
            tripped(&cycle(&mut m, dec!(1000), t + 10)),
            [("errorRate".into(), TradingMode::Halted)]
        );
        // Errors outside the window no longer count.
        cycle(&mut m, dec!(1000), t + 120_000);
        assert_eq!(m.last().errors_in_window, 0);

        let mut m = monitor();
        let closes: Vec<Decimal> = [100, 101, 99, 102, 98, 103].iter().map(|p| Decimal::from(*p)).collect();
        m.record_closes(&btc, &closes);
        cycle(&mut m, dec!(1000), t);
        assert!(m.last().volatility[&btc] > dec!(3));
        assert_eq!(m.mode().0, TradingMode::Halted);
    }

    #[test]
    fn manual_ack_only_after_recovery_and_auto_after_healthy_cycles() {
        let mut m = GuardMonitor::new(daily_loss_only(), true, None);
        let t = 20_000 * DAY_MS;
        cycle(&mut m, dec!(1000), t);
        let events = cycle(&mut m, dec!(890), t + 1);
        let GuardEvent::Tripped(trip) = &events[0] else {
            panic!("expected a trip")
        };
        assert!(m.acknowledge_trip(&trip.id).unwrap_err().contains("still at"));
        cycle(&mut m, dec!(950), t + 2);
        // Still latched without an ack, even though the value recovered.
        assert_eq!(m.mode().0, TradingMode::ReduceOnly);
        assert_eq!(m.acknowledge_trip(&trip.id).unwrap().id, trip.id);
        assert_eq!(m.mode().0, TradingMode::Normal);

        let mut levels = daily_loss_only();
        levels.resume = ResumePolicy::Auto;
        levels.healthy_cycles_before_resume = Some(2);
        let mut m = GuardMonitor::new(levels, true, None);
        cycle(&mut m, dec!(1000), t);
        cycle(&mut m, dec!(890), t + 1);
        assert!(cycle(&mut m, dec!(950), t + 2).is_empty());
        let events = cycle(&mut m, dec!(950), t + 3);
        assert!(matches!(&events[0], GuardEvent::Released { .. }));
        assert_eq!(m.mode().0, TradingMode::Normal);
    }

    #[test]
    fn operator_accepted_acks_release_recovered_trips_of_that_guard() {
        let mut m = GuardMonitor::new(daily_loss_only(), true, None);
        let t = 20_000 * DAY_MS;
        cycle(&mut m, dec!(1000), t);
        cycle(&mut m, dec!(890), t + 1);
        assert!(m.acknowledge_guard("dailyLoss").is_empty());
        cycle(&mut m, dec!(990), t + 2);
        assert_eq!(m.acknowledge_guard("dailyLoss").len(), 1);
        assert!(m.trips().is_empty());
    }

    #[test]
    fn disabled_guards_never_trip_but_still_measure() {
        let mut m = GuardMonitor::new(levels(), false, None);
        let t = 20_000 * DAY_MS;
        cycle(&mut m, dec!(1000), t);
        assert!(cycle(&mut m, dec!(100), t + 1).is_empty());
        assert_eq!(m.last().daily_loss, dec!(900));
    }

    /// Every guard trips at its ReduceOnly level and at its Halted level, and each trip resets
    /// both ways: a manual acknowledgement (once recovered) and, with `resume: Auto`, healthy
    /// cycles.
    #[test]
    fn every_guard_trips_at_both_levels_and_resets_by_both_paths() {
        use tradingbot_crds::guards::GuardKind;
        // Each feed measures one guard at level 0 (healthy), 1 (ReduceOnly) or 2 (Halted).
        type Feed = fn(&mut GuardMonitor, u8, i64);
        let feeds: [(GuardKind, Feed); 6] = [
            (GuardKind::DailyLoss, |m, level, t| {
                m.measure(
                    dec!(1000) - Decimal::from([0, 100, 200][level as usize]),
                    t,
                    BTreeMap::new(),
                    &[],
                );
            }),
            (GuardKind::DrawdownPercent, |m, level, t| {
                m.measure(
                    dec!(1000) * (Decimal::ONE - Decimal::from([0, 5, 10][level as usize]) / dec!(100)),
                    t,
                    BTreeMap::new(),
                    &[],
                );
            }),
            (GuardKind::MarketDataStalenessSeconds, |m, level, t| {
                let age = Decimal::from([1, 10, 30][level as usize]);
                m.measure(dec!(1000), t, BTreeMap::from([("BTC-USD".parse().unwrap(), age)]), &[]);
            }),
            (GuardKind::Volatility, |m, level, t| {
                let swing = [dec!(1000), dec!(1010), dec!(1030)][level as usize];
                let closes = [dec!(1000), swing, dec!(1000), swing, dec!(1000), swing];
                m.record_closes(&"BTC-USD".parse::<Symbol>().unwrap(), &closes);
                m.measure(dec!(1000), t, BTreeMap::new(), &[]);
            }),
            (GuardKind::Concentration, |m, level, t| {
                // Shares of an equity of 1000: 4 x 10% (0.04), 85% (0.7225), 100% (1).
                let notionals = [
                    vec![dec!(100), dec!(100), dec!(100), dec!(100)],
                    vec![dec!(850)],
                    vec![dec!(1000)],
                ][level as usize]
                    .clone();
                m.measure(dec!(1000), t, BTreeMap::new(), &notionals);
            }),
            (GuardKind::ErrorRate, |m, level, t| {
                for _ in 0..[0, 2, 4][level as usize] {
                    m.record_error(t);
                }
                m.measure(dec!(1000), t, BTreeMap::new(), &[]);
            }),
        ];
        for (guard, feed) in feeds {
            for auto in [false, true] {
                let mut levels = levels();
                levels.concentration = Some(Levels {
                    reduce_only_at: Some("0.7".parse().unwrap()),
                    halt_at: Some("0.95".parse().unwrap()),
                });
                levels.volatility = Some(VolatilityGuard {
                    window: 5,
                    reduce_only_at: Some("5".parse().unwrap()),
                    halt_at: Some("15".parse().unwrap()),
                });
                if auto {
                    levels.resume = ResumePolicy::Auto;
                    levels.healthy_cycles_before_resume = Some(2);
                }
                // Only the guard under test is configured.
                let only = |g: GuardKind, l: &Guards| -> Guards {
                    let mut o = Guards {
                        resume: l.resume,
                        healthy_cycles_before_resume: l.healthy_cycles_before_resume,
                        ..Guards::default()
                    };
                    match g {
                        GuardKind::DailyLoss => o.daily_loss = l.daily_loss.clone(),
                        GuardKind::DrawdownPercent => o.drawdown_percent = l.drawdown_percent.clone(),
                        GuardKind::MarketDataStalenessSeconds => {
                            o.market_data_staleness_seconds = l.market_data_staleness_seconds.clone()
                        }
                        GuardKind::Volatility => o.volatility = l.volatility.clone(),
                        GuardKind::Concentration => o.concentration = l.concentration.clone(),
                        GuardKind::ErrorRate => o.error_rate = l.error_rate.clone(),
                    }
                    o
                };
                let mut m = GuardMonitor::new(only(guard, &levels), true, None);
                let mut t = 20_000 * DAY_MS;
                feed(&mut m, 0, t);
                assert!(m.evaluate(Instance::Prod, t).is_empty(), "{guard}: healthy start");
                t += 1;
                feed(&mut m, 1, t);
                assert_eq!(
                    tripped(&m.evaluate(Instance::Prod, t)),
                    [(guard.as_str().to_string(), TradingMode::ReduceOnly)],
                    "{guard} ReduceOnly level"
                );
                t += 1;
                feed(&mut m, 2, t);
                assert_eq!(
                    tripped(&m.evaluate(Instance::Prod, t)),
                    [(guard.as_str().to_string(), TradingMode::Halted)],
                    "{guard} Halted level"
                );
                assert_eq!(m.mode().0, TradingMode::Halted);
                // Recover (errors age out of their window; a fresh monitor state for volatility).
                t += 600_000;
                let mut m2 = m;
                if guard == GuardKind::Volatility {
                    m2.record_closes(&"BTC-USD".parse::<Symbol>().unwrap(), &[dec!(1000); 6]);
                }
                if auto {
                    feed(&mut m2, 0, t);
                    assert!(
                        m2.evaluate(Instance::Prod, t).is_empty(),
                        "{guard}: one healthy cycle is not enough"
                    );
                    t += 1;
                    feed(&mut m2, 0, t);
                    let released = m2.evaluate(Instance::Prod, t);
                    assert_eq!(
                        released.len(),
                        2,
                        "{guard}: both trips released automatically: {released:?}"
                    );
                } else {
                    feed(&mut m2, 0, t);
                    assert!(m2.evaluate(Instance::Prod, t).is_empty());
                    let ids: Vec<String> = m2.trips().iter().map(|t| t.id.clone()).collect();
                    for id in ids {
                        m2.acknowledge_trip(&id).unwrap_or_else(|e| panic!("{guard}: {e}"));
                    }
                }
                assert_eq!(m2.mode().0, TradingMode::Normal, "{guard} auto={auto}");
            }
        }
    }

    #[test]
    fn concentration_is_measured_in_shares_of_equity() {
        assert_eq!(concentration(&[], dec!(1000)), Decimal::ZERO);
        // One symbol, 18% of equity: far from concentrated, however few symbols the bot trades.
        assert_eq!(concentration(&[dec!(180)], dec!(1000)), dec!(0.0324));
        assert_eq!(concentration(&[dec!(1000)], dec!(1000)), Decimal::ONE);
        assert_eq!(concentration(&[dec!(500), dec!(-500)], dec!(1000)), dec!(0.5));
        assert_eq!(concentration(&[dec!(10)], Decimal::ZERO), Decimal::ONE);
    }

    #[test]
    fn a_transfer_out_is_not_a_trading_loss() {
        let mut m = GuardMonitor::new(daily_loss_only(), true, None);
        let t = 20_000 * DAY_MS;
        cycle(&mut m, dec!(10000), t);
        m.record_transfer_out(dec!(5000));
        assert!(cycle(&mut m, dec!(5000), t + 1).is_empty());
        assert_eq!(m.last().daily_loss, Decimal::ZERO);
        assert_eq!(m.last().drawdown_percent, Decimal::ZERO);
    }

    #[test]
    fn references_belong_to_one_set_of_cash_books() {
        let mut m = GuardMonitor::new(daily_loss_only(), true, None);
        let t = 20_000 * DAY_MS;
        assert!(!m.use_books("USD@1"), "adopted");
        cycle(&mut m, dec!(10000), t);
        assert!(!m.use_books("USD@1"));
        cycle(&mut m, dec!(9950), t + 1);
        assert_eq!(m.last().daily_loss, dec!(50));
        // Books opened anew on another balance: the references restart there, no trip.
        assert!(m.use_books("USD@2"));
        assert!(cycle(&mut m, dec!(4000), t + 2).is_empty());
        assert_eq!(
            (m.last().daily_loss, m.last().drawdown_percent),
            (Decimal::ZERO, Decimal::ZERO)
        );
        assert_eq!(m.persisted().books.as_deref(), Some("USD@2"));
        let text = serde_json::to_string(m.persisted()).unwrap();
        assert_eq!(
            serde_json::from_str::<PersistedGuardState>(&text).unwrap(),
            *m.persisted()
        );
    }

    /// Closes of a random walk with annualised volatility `sigma`, one per minute (Gaussian
    /// log returns from a seeded generator; the prices are decimals).
    fn minute_closes(sigma: f64, minutes: usize, seed: u64) -> Vec<Decimal> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let per_minute = sigma / (525_600f64).sqrt();
        let mut price = 100_000f64;
        let mut closes = vec![Decimal::from(100_000)];
        for _ in 0..minutes {
            // Box-Muller: a standard normal from two uniforms.
            let (u1, u2): (f64, f64) = (rng.gen_range(1e-12..1.0), rng.gen_range(0.0..1.0));
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            price *= (per_minute * z).exp();
            closes.push(Decimal::from_f64(price).unwrap().round_dp(2));
        }
        closes
    }

    /// Slide the spot profile's volatility guard over `closes`: (windows, ReduceOnly or worse,
    /// Halted, mean measured value).
    fn slide(closes: &[Decimal]) -> (usize, usize, usize, f64) {
        let levels = Guards {
            volatility: Some(crate::config::profiles::spot_volatility()),
            ..Guards::default()
        };
        let window = levels.volatility.as_ref().unwrap().window as usize;
        let btc: Symbol = "BTC-USD".parse().unwrap();
        let (mut windows, mut restricted, mut halted, mut sum) = (0, 0, 0, 0.0);
        for end in (window + 1)..=closes.len() {
            let mut m = GuardMonitor::new(levels.clone(), true, None);
            m.record_closes(&btc, &closes[..end]);
            m.measure(dec!(1000), 20_000 * DAY_MS, BTreeMap::new(), &[]);
            let value = m.last().volatility[&btc];
            sum += value.to_f64().unwrap();
            match m.evaluate(Instance::Prod, 20_000 * DAY_MS).first() {
                Some(GuardEvent::Tripped(t)) if t.level == TradingMode::Halted => {
                    restricted += 1;
                    halted += 1;
                }
                Some(GuardEvent::Tripped(_)) => restricted += 1,
                _ => {}
            }
            windows += 1;
        }
        (windows, restricted, halted, sum / windows as f64)
    }

    /// The spot profile's levels: normal crypto volatility (40–80% a year) never trips over
    /// thousands of one-minute windows; a regime of about 3× that does. The measurement is
    /// right whatever the cycle interval: it only sees one-minute closes.
    #[test]
    fn spot_volatility_levels_hold_for_normal_crypto_and_trip_at_three_times_that() {
        for (i, sigma) in [0.4, 0.6, 0.8].into_iter().enumerate() {
            let (windows, restricted, _, mean) = slide(&minute_closes(sigma, 3_000, 7 + i as u64));
            assert!(windows > 2_900);
            assert_eq!(
                restricted, 0,
                "normal volatility {sigma} tripped in {restricted} of {windows} windows"
            );
            assert!((mean / sigma - 1.0).abs() < 0.05, "measured {mean} for a true {sigma}");
        }
        // 3x the middle of the band: ReduceOnly (or worse) nearly always.
        let (windows, restricted, _, mean) = slide(&minute_closes(3.0 * 0.5, 1_000, 21));
        assert!(
            restricted * 100 >= windows * 95,
            "{restricted} of {windows} windows at 150% ({mean})"
        );
        // 3x the top of the band: Halted nearly always, never below ReduceOnly.
        let (windows, restricted, halted, mean) = slide(&minute_closes(3.0 * 0.8, 1_000, 22));
        assert_eq!(restricted, windows, "240% always restricts ({mean})");
        assert!(
            halted * 100 >= windows * 95,
            "{halted} of {windows} windows halted at 240%"
        );
    }

    #[test]
    fn volatility_reads_one_minute_closes_and_annualises_them() {
        // Returns alternating +1% / -1% a minute: stdev ~1.03% a minute = ~7.5 a year.
        let closes: Vec<Decimal> = (0..21)
            .map(|i| if i % 2 == 0 { dec!(100) } else { dec!(101) })
            .collect();
        let returns = returns_of(&closes);
        assert_eq!(returns.len(), 20);
        let annual = annualised_stdev(&returns, VOLATILITY_HORIZON_SECONDS).unwrap();
        assert!(annual > dec!(7) && annual < dec!(8), "{annual}");
        // The window keeps the last `window + 1` closes only.
        let mut m = monitor();
        let btc: Symbol = "BTC-USD".parse().unwrap();
        m.record_closes(&btc, &closes);
        assert_eq!(m.closes[&btc].len(), 6, "window 5 in these levels");
        assert!(
            annualised_stdev(&[dec!(0.01)], 60).is_none(),
            "one return is no estimate"
        );
    }
}

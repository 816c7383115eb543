//! The bot's in-process runtime guards: it measures what the guards look at (daily loss from
//! equity, drawdown from the equity peak, market data staleness, volatility, concentration,
//! error rate), evaluates the levels every cycle with the shared rules, latches trips and
//! releases them only by acknowledgement or, with `resume: Auto`, after healthy cycles.

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
    interval_seconds: Decimal,
    state: PersistedGuardState,
    returns: BTreeMap<Symbol, (Decimal, VecDeque<Decimal>)>,
    errors: VecDeque<i64>,
    streaks: HealthyStreaks,
    last: Measurements,
}

impl GuardMonitor {
    pub fn new(
        levels: Guards,
        enabled: bool,
        interval_seconds: Decimal,
        restored: Option<PersistedGuardState>,
    ) -> Self {
        Self {
            levels,
            enabled,
            interval_seconds: interval_seconds.max(Decimal::new(1, 3)),
            state: restored.unwrap_or_default(),
            returns: BTreeMap::new(),
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

    /// Add this cycle's marks to the volatility windows.
    pub fn record_marks<'a>(&mut self, marks: impl Iterator<Item = (&'a Symbol, Decimal)>) {
        let window = self.levels.volatility.as_ref().map(|v| v.window).unwrap_or(20) as usize;
        for (symbol, mark) in marks {
            match self.returns.get_mut(symbol) {
                None => {
                    self.returns
                        .insert(symbol.clone(), (mark, VecDeque::with_capacity(window + 1)));
                }
                Some((previous, returns)) => {
                    if !previous.is_zero() {
                        returns.push_back((mark - *previous) / *previous);
                        while returns.len() > window {
                            returns.pop_front();
                        }
                    }
                    *previous = mark;
                }
            }
        }
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
            .returns
            .iter()
            .filter_map(|(s, (_, r))| annualised_stdev(r, self.interval_seconds).map(|v| (s.clone(), v)))
            .collect();
        self.last = Measurements {
            equity,
            pnl_today,
            daily_loss: (-pnl_today).max(Decimal::ZERO),
            drawdown_percent,
            staleness,
            volatility,
            concentration: herfindahl(notionals),
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

/// Sample standard deviation of per-cycle returns, annualised by the cycle interval.
pub fn annualised_stdev(returns: &VecDeque<Decimal>, interval_seconds: Decimal) -> Option<Decimal> {
    let n = returns.len();
    if n < 2 {
        return None;
    }
    let count = Decimal::from(n);
    let mean = returns.iter().sum::<Decimal>() / count;
    let variance = returns.iter().map(|r| (r - mean) * (r - mean)).sum::<Decimal>() / (count - Decimal::ONE);
    // The square roots are of a statistic, not of money: f64 is fine here.
    let periods = Decimal::from(SECONDS_PER_YEAR) / interval_seconds;
    let annual = (variance.to_f64()? * periods.to_f64()?).sqrt();
    Decimal::from_f64(annual).map(|v| v.round_dp(6))
}

/// Herfindahl index of position notionals: 1 when everything is in one symbol, 0 when flat.
pub fn herfindahl(notionals: &[Decimal]) -> Decimal {
    let total: Decimal = notionals.iter().map(|n| n.abs()).sum();
    if total.is_zero() {
        return Decimal::ZERO;
    }
    notionals
        .iter()
        .map(|n| {
            let share = n.abs() / total;
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
        GuardMonitor::new(levels(), true, dec!(5), None)
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
            dec!(5),
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
        m.measure(dec!(1000), t, BTreeMap::from([(btc.clone(), dec!(31))]), &[dec!(100)]);
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
        for (i, p) in [100, 101, 99, 102, 98, 103].iter().enumerate() {
            m.record_marks(std::iter::once((&btc, Decimal::from(*p))));
            cycle(&mut m, dec!(1000), t + i as i64);
        }
        assert!(m.last().volatility[&btc] > dec!(3));
        assert_eq!(m.mode().0, TradingMode::Halted);
    }

    #[test]
    fn manual_ack_only_after_recovery_and_auto_after_healthy_cycles() {
        let mut m = GuardMonitor::new(daily_loss_only(), true, dec!(5), None);
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
        let mut m = GuardMonitor::new(levels, true, dec!(5), None);
        cycle(&mut m, dec!(1000), t);
        cycle(&mut m, dec!(890), t + 1);
        assert!(cycle(&mut m, dec!(950), t + 2).is_empty());
        let events = cycle(&mut m, dec!(950), t + 3);
        assert!(matches!(&events[0], GuardEvent::Released { .. }));
        assert_eq!(m.mode().0, TradingMode::Normal);
    }

    #[test]
    fn operator_accepted_acks_release_recovered_trips_of_that_guard() {
        let mut m = GuardMonitor::new(daily_loss_only(), true, dec!(5), None);
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
        let mut m = GuardMonitor::new(levels(), false, dec!(5), None);
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
                for p in [dec!(1000), swing, dec!(1000), swing, dec!(1000), swing] {
                    m.record_marks(std::iter::once((&"BTC-USD".parse::<Symbol>().unwrap(), p)));
                }
                m.measure(dec!(1000), t, BTreeMap::new(), &[]);
            }),
            (GuardKind::Concentration, |m, level, t| {
                let notionals = [
                    vec![dec!(1), dec!(1), dec!(1), dec!(1)],
                    vec![dec!(9), dec!(1)],
                    vec![dec!(1)],
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
                let mut m = GuardMonitor::new(only(guard, &levels), true, dec!(60), None);
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
                    for _ in 0..6 {
                        m2.record_marks(std::iter::once((&"BTC-USD".parse::<Symbol>().unwrap(), dec!(1000))));
                    }
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
    fn herfindahl_index() {
        assert_eq!(herfindahl(&[]), Decimal::ZERO);
        assert_eq!(herfindahl(&[dec!(5)]), Decimal::ONE);
        assert_eq!(herfindahl(&[dec!(5), dec!(-5)]), dec!(0.5));
    }
}

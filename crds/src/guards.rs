//! Guard evaluation and trip latching: pure decisions shared by the bot (in-process guards,
//! every cycle) and the operator (from scraped metrics, every scrape). Both sides feed their
//! own observations in; neither trusts the other's verdict.

use crate::mode::TradingMode;
use crate::spec::{Guards, Levels, ResumePolicy};
use crate::status::{GuardTrip, Instance};
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt;

/// The runtime guards, named as in `spec.guards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GuardKind {
    DailyLoss,
    DrawdownPercent,
    MarketDataStalenessSeconds,
    Volatility,
    Concentration,
    ErrorRate,
}

impl GuardKind {
    pub const ALL: [GuardKind; 6] = [
        GuardKind::DailyLoss,
        GuardKind::DrawdownPercent,
        GuardKind::MarketDataStalenessSeconds,
        GuardKind::Volatility,
        GuardKind::Concentration,
        GuardKind::ErrorRate,
    ];

    /// The spec field name, also used in metrics labels, trips and events.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardKind::DailyLoss => "dailyLoss",
            GuardKind::DrawdownPercent => "drawdownPercent",
            GuardKind::MarketDataStalenessSeconds => "marketDataStalenessSeconds",
            GuardKind::Volatility => "volatility",
            GuardKind::Concentration => "concentration",
            GuardKind::ErrorRate => "errorRate",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        GuardKind::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

impl fmt::Display for GuardKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The values the guards look at, as measured by whoever evaluates them. `None` means
/// "not measured": such a guard cannot trip (and does not count as healthy either).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuardObservation {
    /// Loss since the UTC day started, positive = money lost.
    pub daily_loss: Option<Decimal>,
    pub drawdown_percent: Option<Decimal>,
    /// Age of the stalest symbol's market data, in seconds.
    pub market_data_staleness_seconds: Option<Decimal>,
    /// Highest annualised volatility over the configured window across symbols.
    pub volatility: Option<Decimal>,
    pub concentration: Option<Decimal>,
    /// Errors counted inside `errorRate.windowSeconds`.
    pub errors_in_window: Option<Decimal>,
}

impl GuardObservation {
    pub fn value(&self, guard: GuardKind) -> Option<Decimal> {
        match guard {
            GuardKind::DailyLoss => self.daily_loss,
            GuardKind::DrawdownPercent => self.drawdown_percent,
            GuardKind::MarketDataStalenessSeconds => self.market_data_staleness_seconds,
            GuardKind::Volatility => self.volatility,
            GuardKind::Concentration => self.concentration,
            GuardKind::ErrorRate => self.errors_in_window,
        }
    }
}

/// A level a guard's value has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    pub guard: GuardKind,
    pub level: TradingMode,
    pub value: Decimal,
    pub threshold: Decimal,
}

/// The two levels of one guard as plain decimals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelPair {
    pub reduce_only_at: Option<Decimal>,
    pub halt_at: Option<Decimal>,
}

impl LevelPair {
    fn from_levels<T: Copy + Into<Decimal>>(levels: &Levels<T>) -> Self {
        Self {
            reduce_only_at: levels.reduce_only_at.map(Into::into),
            halt_at: levels.halt_at.map(Into::into),
        }
    }

    fn from_u32(reduce_only_at: Option<u32>, halt_at: Option<u32>) -> Self {
        Self {
            reduce_only_at: reduce_only_at.map(Decimal::from),
            halt_at: halt_at.map(Decimal::from),
        }
    }

    /// The highest level `value` has reached (a value equal to a level has reached it).
    pub fn breach(&self, value: Decimal) -> Option<(TradingMode, Decimal)> {
        if let Some(halt) = self.halt_at.filter(|h| value >= *h) {
            return Some((TradingMode::Halted, halt));
        }
        self.reduce_only_at
            .filter(|r| value >= *r)
            .map(|r| (TradingMode::ReduceOnly, r))
    }

    pub fn threshold(&self, level: TradingMode) -> Option<Decimal> {
        match level {
            TradingMode::Normal => None,
            TradingMode::ReduceOnly => self.reduce_only_at,
            TradingMode::Halted => self.halt_at,
        }
    }

    pub fn is_configured(&self) -> bool {
        self.reduce_only_at.is_some() || self.halt_at.is_some()
    }
}

macro_rules! into_decimal {
    ($($t:ty),*) => {$(
        impl From<$t> for Decimal {
            fn from(v: $t) -> Decimal { v.value() }
        }
    )*};
}
into_decimal!(
    crate::decimal::NonNegativeDecimal,
    crate::decimal::Percent,
    crate::decimal::Fraction,
    crate::decimal::PositiveDecimal
);

impl Guards {
    /// The levels of one guard, if configured.
    pub fn levels(&self, guard: GuardKind) -> LevelPair {
        match guard {
            GuardKind::DailyLoss => self.daily_loss.as_ref().map(LevelPair::from_levels),
            GuardKind::DrawdownPercent => self.drawdown_percent.as_ref().map(LevelPair::from_levels),
            GuardKind::MarketDataStalenessSeconds => self
                .market_data_staleness_seconds
                .as_ref()
                .map(|l| LevelPair::from_u32(l.reduce_only_at, l.halt_at)),
            GuardKind::Volatility => self.volatility.as_ref().map(|v| LevelPair {
                reduce_only_at: v.reduce_only_at.map(Into::into),
                halt_at: v.halt_at.map(Into::into),
            }),
            GuardKind::Concentration => self.concentration.as_ref().map(LevelPair::from_levels),
            GuardKind::ErrorRate => self
                .error_rate
                .as_ref()
                .map(|e| LevelPair::from_u32(e.reduce_only_at, e.halt_at)),
        }
        .unwrap_or_default()
    }

    /// Healthy evaluations in a row needed before an `Auto` trip is released.
    pub fn healthy_cycles_needed(&self) -> u32 {
        self.healthy_cycles_before_resume
            .unwrap_or(DEFAULT_HEALTHY_CYCLES_BEFORE_RESUME)
    }
}

pub const DEFAULT_HEALTHY_CYCLES_BEFORE_RESUME: u32 = 5;

/// Every level the observation reaches: at most one breach per guard (its highest level).
pub fn evaluate(guards: &Guards, observed: &GuardObservation) -> Vec<Breach> {
    GuardKind::ALL
        .into_iter()
        .filter_map(|guard| {
            let value = observed.value(guard)?;
            let (level, threshold) = guards.levels(guard).breach(value)?;
            Some(Breach {
                guard,
                level,
                value,
                threshold,
            })
        })
        .collect()
}

/// The mode latched trips impose.
pub fn mode_of_trips(trips: &[GuardTrip]) -> TradingMode {
    trips.iter().map(|t| t.level).max().unwrap_or_default()
}

/// A short reason naming the trips that impose the strictest level.
pub fn reason_of_trips(trips: &[GuardTrip]) -> Option<String> {
    let mode = mode_of_trips(trips);
    let names: Vec<String> = trips
        .iter()
        .filter(|t| t.level == mode && mode != TradingMode::Normal)
        .map(|t| format!("guard {} at {} (>= {}) [trip {}]", t.guard, t.value, t.threshold, t.id))
        .collect();
    (!names.is_empty()).then(|| names.join("; "))
}

/// The id of a new trip: readable, unique per guard, level, instance and second.
pub fn trip_id(instance: Instance, guard: GuardKind, level: TradingMode, unix_seconds: i64) -> String {
    let level = match level {
        TradingMode::Normal => "normal",
        TradingMode::ReduceOnly => "reduceonly",
        TradingMode::Halted => "halted",
    };
    match instance {
        Instance::Prod => format!("{}-{level}-{unix_seconds}", guard.as_str().to_ascii_lowercase()),
        Instance::Canary => format!("canary-{}-{level}-{unix_seconds}", guard.as_str().to_ascii_lowercase()),
    }
}

/// Trips to latch for these breaches: a breach latches a trip unless one for the same guard
/// at the same or a stricter level is already latched.
pub fn new_trips(
    latched: &[GuardTrip],
    breaches: &[Breach],
    instance: Instance,
    unix_seconds: i64,
    rfc3339_now: &str,
) -> Vec<GuardTrip> {
    breaches
        .iter()
        .filter(|b| {
            !latched
                .iter()
                .any(|t| t.guard == b.guard.as_str() && t.level >= b.level && t.instance == instance)
        })
        .map(|b| GuardTrip {
            id: trip_id(instance, b.guard, b.level, unix_seconds),
            guard: b.guard.as_str().to_string(),
            level: b.level,
            value: b.value.normalize().to_string(),
            threshold: b.threshold.normalize().to_string(),
            time: rfc3339_now.to_string(),
            instance,
        })
        .collect()
}

/// Is this trip's guard back under the trip's level, by this observation? A guard that is
/// not measured is not considered recovered.
pub fn has_recovered(trip: &GuardTrip, guards: &Guards, observed: &GuardObservation) -> Result<(), String> {
    let Some(guard) = GuardKind::parse(&trip.guard) else {
        return Err(format!("unknown guard {:?}", trip.guard));
    };
    let Some(value) = observed.value(guard) else {
        return Err(format!("guard {guard} has no fresh measurement"));
    };
    match guards.levels(guard).breach(value) {
        Some((level, threshold)) if level >= trip.level => Err(format!(
            "guard {guard} is still at {} (>= {} level {threshold})",
            value.normalize(),
            level
        )),
        _ => Ok(()),
    }
}

/// Decide a manual acknowledgement of trip `trip_id`.
pub fn decide_ack(
    trip_id: &str,
    trips: &[GuardTrip],
    guards: &Guards,
    observed_for: impl Fn(Instance) -> GuardObservation,
) -> Result<GuardTrip, String> {
    let Some(trip) = trips.iter().find(|t| t.id == trip_id) else {
        return Err(format!("no latched trip has id {trip_id:?}"));
    };
    has_recovered(trip, guards, &observed_for(trip.instance))
        .map(|()| trip.clone())
        .map_err(|why| format!("trip {trip_id} not released: {why}"))
}

/// Counts healthy evaluations in a row per latched trip, for `resume: Auto`.
#[derive(Debug, Clone, Default)]
pub struct HealthyStreaks {
    streaks: BTreeMap<String, u32>,
}

impl HealthyStreaks {
    /// Record one evaluation; returns the trips to release now. Only `Auto` policy releases.
    pub fn observe(
        &mut self,
        trips: &[GuardTrip],
        guards: &Guards,
        observed_for: impl Fn(Instance) -> GuardObservation,
    ) -> Vec<GuardTrip> {
        self.streaks.retain(|id, _| trips.iter().any(|t| &t.id == id));
        if guards.resume != ResumePolicy::Auto {
            self.streaks.clear();
            return Vec::new();
        }
        let needed = guards.healthy_cycles_needed();
        let mut release = Vec::new();
        for trip in trips {
            let healthy = has_recovered(trip, guards, &observed_for(trip.instance)).is_ok();
            let streak = self.streaks.entry(trip.id.clone()).or_default();
            *streak = if healthy { *streak + 1 } else { 0 };
            if *streak >= needed {
                release.push(trip.clone());
            }
        }
        for trip in &release {
            self.streaks.remove(&trip.id);
        }
        release
    }

    pub fn streak(&self, trip_id: &str) -> u32 {
        self.streaks.get(trip_id).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ErrorRateGuard, SecondsLevels};
    use rust_decimal_macros::dec;

    fn guards() -> Guards {
        Guards {
            daily_loss: Some(Levels {
                reduce_only_at: Some("500".parse().unwrap()),
                halt_at: Some("1000".parse().unwrap()),
            }),
            market_data_staleness_seconds: Some(SecondsLevels {
                reduce_only_at: Some(10),
                halt_at: None,
            }),
            error_rate: Some(ErrorRateGuard {
                window_seconds: 60,
                reduce_only_at: None,
                halt_at: Some(3),
            }),
            ..Guards::default()
        }
    }

    fn loss(v: Decimal) -> GuardObservation {
        GuardObservation {
            daily_loss: Some(v),
            ..Default::default()
        }
    }

    #[test]
    fn each_level_trips_at_its_threshold_and_not_below() {
        let g = guards();
        assert!(evaluate(&g, &loss(dec!(499.99))).is_empty());
        let at = evaluate(&g, &loss(dec!(500)));
        assert_eq!((at[0].level, at[0].threshold), (TradingMode::ReduceOnly, dec!(500)));
        let over = evaluate(&g, &loss(dec!(1200)));
        assert_eq!((over[0].level, over[0].threshold), (TradingMode::Halted, dec!(1000)));
        let stale = GuardObservation {
            market_data_staleness_seconds: Some(dec!(11)),
            ..Default::default()
        };
        assert_eq!(evaluate(&g, &stale)[0].guard, GuardKind::MarketDataStalenessSeconds);
        let errors = GuardObservation {
            errors_in_window: Some(dec!(3)),
            ..Default::default()
        };
        assert_eq!(evaluate(&g, &errors)[0].level, TradingMode::Halted);
    }

    #[test]
    fn unmeasured_and_unconfigured_guards_never_trip() {
        let obs = GuardObservation {
            drawdown_percent: Some(dec!(99)),
            ..Default::default()
        };
        assert!(evaluate(&guards(), &obs).is_empty());
        assert!(evaluate(&Guards::default(), &loss(dec!(1e9))).is_empty());
    }

    #[test]
    fn latching_adds_a_trip_only_when_no_equal_or_stricter_one_exists() {
        let g = guards();
        let first = new_trips(&[], &evaluate(&g, &loss(dec!(600))), Instance::Prod, 100, "t1");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, "dailyloss-reduceonly-100");
        assert!(new_trips(&first, &evaluate(&g, &loss(dec!(700))), Instance::Prod, 101, "t2").is_empty());
        let halted = new_trips(&first, &evaluate(&g, &loss(dec!(1000))), Instance::Prod, 102, "t3");
        assert_eq!(halted[0].level, TradingMode::Halted);
        let all: Vec<GuardTrip> = first.iter().chain(&halted).cloned().collect();
        assert_eq!(mode_of_trips(&all), TradingMode::Halted);
        assert!(reason_of_trips(&all).unwrap().contains("dailyLoss at 1000"));
        // The canary's trips are its own.
        assert_eq!(
            new_trips(&all, &evaluate(&g, &loss(dec!(600))), Instance::Canary, 103, "t").len(),
            1
        );
    }

    #[test]
    fn manual_ack_is_refused_until_the_value_is_back_under_the_level() {
        let g = guards();
        let trips = new_trips(&[], &evaluate(&g, &loss(dec!(1500))), Instance::Prod, 1, "t");
        let id = trips[0].id.clone();
        let refused = decide_ack(&id, &trips, &g, |_| loss(dec!(1001))).unwrap_err();
        assert!(refused.contains("still at 1001"), "{refused}");
        assert!(decide_ack(&id, &trips, &g, |_| GuardObservation::default()).is_err());
        assert!(
            decide_ack("nope", &trips, &g, |_| loss(dec!(0)))
                .unwrap_err()
                .contains("no latched trip")
        );
        // Back under the Halted level (even if still over ReduceOnly): the Halted trip goes.
        assert_eq!(decide_ack(&id, &trips, &g, |_| loss(dec!(700))).unwrap().id, id);
    }

    #[test]
    fn auto_resume_needs_consecutive_healthy_evaluations() {
        let mut g = guards();
        g.resume = ResumePolicy::Auto;
        g.healthy_cycles_before_resume = Some(3);
        let trips = new_trips(&[], &evaluate(&g, &loss(dec!(600))), Instance::Prod, 1, "t");
        let mut streaks = HealthyStreaks::default();
        assert!(streaks.observe(&trips, &g, |_| loss(dec!(10))).is_empty());
        assert!(streaks.observe(&trips, &g, |_| loss(dec!(10))).is_empty());
        assert!(streaks.observe(&trips, &g, |_| loss(dec!(600))).is_empty()); // streak broken
        assert_eq!(streaks.streak(&trips[0].id), 0);
        for _ in 0..2 {
            assert!(streaks.observe(&trips, &g, |_| loss(dec!(10))).is_empty());
        }
        assert_eq!(streaks.observe(&trips, &g, |_| loss(dec!(10))).len(), 1);
    }

    #[test]
    fn manual_policy_never_releases_by_itself() {
        let g = guards();
        let trips = new_trips(&[], &evaluate(&g, &loss(dec!(600))), Instance::Prod, 1, "t");
        let mut streaks = HealthyStreaks::default();
        for _ in 0..100 {
            assert!(streaks.observe(&trips, &g, |_| loss(dec!(0))).is_empty());
        }
    }
}

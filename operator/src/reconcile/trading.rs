//! The operator's trading decisions for one bot, pure: guard trips from scraped metrics
//! (independently of the bot's own guards), acknowledgements, auto-resume and the effective
//! mode written to status (which the bot obeys).

use super::notice::{Notice, Reason};
use crate::scrape::Observation;
use k8s_openapi::jiff::Timestamp;
use rust_decimal::Decimal;
use std::time::{Duration, Instant};
use tradingbot_crds::guards::{self, Breach, GuardKind, GuardObservation, HealthyStreaks};
use tradingbot_crds::mode::{ModeSource, most_restrictive_of};
use tradingbot_crds::spec::Guards;
use tradingbot_crds::status::{AckRecord, AckResult, GuardTrip, TradingBotStatus};
use tradingbot_crds::{Instance, TradingBotSpec, TradingMode};

/// What the guards see of one instance right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceView {
    pub observed: GuardObservation,
    /// A scrape happened since the last evaluation (counts as a cycle for auto-resume).
    pub new_scrape: bool,
    /// In-process trips the bot reports: (guard, level, unix time).
    pub bot_latched: Vec<(String, TradingMode, i64)>,
    /// Metrics have not been readable for this long (beyond the configured allowance).
    pub unreachable_for: Option<Duration>,
}

/// Turn a scrape observation into what the guards evaluate. Only a fresh (the latest attempt
/// succeeded) sample counts: a failed scrape measures nothing, so it can neither trip, release
/// nor justify an acknowledgement. A bot whose metrics cannot be read for longer than
/// `unreachable_after` counts as stale market data: its staleness is at least the time it has
/// been silent.
pub fn view_of(
    observation: &Observation,
    now: Instant,
    unreachable_after: Duration,
    last_ok_count: u64,
) -> InstanceView {
    let silent = observation.silent_for(now);
    let unreachable = silent > unreachable_after;
    let fresh = observation.last_error.is_none();
    let mut observed = observation.guard_observation();
    if unreachable {
        let silent_seconds = Decimal::from(silent.as_secs());
        let reported = observation
            .sample
            .as_ref()
            .and_then(|s| s.staleness_max)
            .unwrap_or_default();
        observed.market_data_staleness_seconds = Some(reported + silent_seconds);
    }
    InstanceView {
        observed,
        new_scrape: fresh && observation.ok_count > last_ok_count,
        bot_latched: observation
            .sample
            .as_ref()
            .map(|s| s.latched.clone())
            .unwrap_or_default(),
        unreachable_for: unreachable.then_some(silent),
    }
}

/// Margin past a silence deadline, so the reconcile that runs then is past it.
const PAST_THE_DEADLINE: Duration = Duration::from_millis(100);

/// How long until the silence of an instance whose latest scrape failed next changes what the
/// guards see: when it turns unreachable (silent over `unreachable_after`), then each time its
/// staleness as the guards see it (reported + whole seconds silent) reaches one of `staleness`'s
/// levels. None while the latest scrape succeeded, or when no level is left to reach.
pub fn until_silence_changes(
    observation: &Observation,
    now: Instant,
    unreachable_after: Duration,
    staleness: &guards::LevelPair,
) -> Option<Duration> {
    observation.last_error.as_ref()?;
    let silent = observation.silent_for(now);
    if silent <= unreachable_after {
        return Some(unreachable_after - silent + PAST_THE_DEADLINE);
    }
    let reported = observation
        .sample
        .as_ref()
        .and_then(|s| s.staleness_max)
        .unwrap_or_default();
    let seen = reported + Decimal::from(silent.as_secs());
    [staleness.reduce_only_at, staleness.halt_at]
        .into_iter()
        .flatten()
        .filter(|level| seen < *level)
        .filter_map(|level| u64::try_from((level - reported).ceil()).ok())
        .map(|seconds| Duration::from_secs(seconds).saturating_sub(silent) + PAST_THE_DEADLINE)
        .min()
}

pub struct TradingInputs<'a> {
    pub spec: &'a TradingBotSpec,
    pub status: &'a TradingBotStatus,
    pub deleting: bool,
    /// The value of the `trading.gpttrader.io/ack-trip` annotation.
    pub ack_annotation: Option<&'a str>,
    pub prod: Option<&'a InstanceView>,
    pub canary: Option<&'a InstanceView>,
    /// What the bot's TradingAccount imposes (mode, why), when it names one.
    pub account: Option<&'a (TradingMode, String)>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TradingOutcome {
    pub trips: Vec<GuardTrip>,
    pub last_ack: Option<AckRecord>,
    pub mode: EffectiveMode,
    pub canary_mode: Option<TradingMode>,
    pub notices: Vec<Notice>,
    /// Trips latched this time (for metrics).
    pub tripped: Vec<GuardTrip>,
}

/// When the operator last accepted an acknowledgement for `guard` (unix seconds).
fn last_accepted_ack(status: &TradingBotStatus, guard: &str) -> i64 {
    status
        .last_ack
        .as_ref()
        .filter(|a| a.result == AckResult::Accepted && a.guard.as_deref() == Some(guard))
        .and_then(|a| a.time.parse::<Timestamp>().ok())
        .map_or(i64::MIN, |t| t.as_second())
}

/// Breaches from the bot's own latched trips the operator has not seen yet.
fn adopted_breaches(status: &TradingBotStatus, guards: &Guards, view: &InstanceView) -> Vec<Breach> {
    view.bot_latched
        .iter()
        .filter(|(guard, _, at)| *at > last_accepted_ack(status, guard))
        .filter_map(|(guard, level, _)| {
            let kind = GuardKind::parse(guard)?;
            let value = view.observed.value(kind).unwrap_or_default();
            let threshold = guards.levels(kind).threshold(*level).unwrap_or(value);
            Some(Breach {
                guard: kind,
                level: *level,
                value,
                threshold,
            })
        })
        .collect()
}

/// Decide trips, acknowledgements, auto-resume and modes.
pub fn decide(input: &TradingInputs<'_>, streaks: &mut HealthyStreaks) -> TradingOutcome {
    let guards = &input.spec.guards;
    let now_seconds = input.now.as_second();
    let now_text = format!("{:.0}", input.now);
    let mut trips = input.status.trips.clone();
    let mut notices = Vec::new();
    let mut tripped = Vec::new();

    for (instance, view) in [(Instance::Prod, input.prod), (Instance::Canary, input.canary)] {
        let Some(view) = view else { continue };
        let mut breaches = guards::evaluate(guards, &view.observed);
        for adopted in adopted_breaches(input.status, guards, view) {
            if !breaches
                .iter()
                .any(|b| b.guard == adopted.guard && b.level >= adopted.level)
            {
                breaches.push(adopted);
            }
        }
        for trip in guards::new_trips(&trips, &breaches, instance, now_seconds, &now_text) {
            let unreachable = view
                .unreachable_for
                .filter(|_| trip.guard == GuardKind::MarketDataStalenessSeconds.as_str())
                .map(|d| format!(" (metrics unreachable for {} s)", d.as_secs()))
                .unwrap_or_default();
            notices.push(Notice::warning(
                Reason::GuardTripped,
                format!(
                    "{instance} guard {} reached {} >= {} level {}{unreachable}: trip {} latched; the bot is now at least {}",
                    trip.guard, trip.value, trip.level, trip.threshold, trip.id, trip.level
                ),
            ));
            tripped.push(trip.clone());
            trips.push(trip);
        }
    }

    // resume: Auto — count healthy scrapes per trip; only new scrapes count as cycles.
    let any_new_scrape = [input.prod, input.canary].iter().flatten().any(|v| v.new_scrape);
    if any_new_scrape {
        let observed_for = |instance| match instance {
            Instance::Prod => input.prod.map(|v| v.observed.clone()).unwrap_or_default(),
            Instance::Canary => input.canary.map(|v| v.observed.clone()).unwrap_or_default(),
        };
        for trip in streaks.observe(&trips, guards, observed_for) {
            trips.retain(|t| t.id != trip.id);
            notices.push(Notice::normal(
                Reason::TripReleased,
                format!(
                    "trip {} ({} {}) released after {} healthy scrapes in a row (resume: Auto)",
                    trip.id,
                    trip.guard,
                    trip.level,
                    guards.healthy_cycles_needed()
                ),
            ));
        }
    }

    let mut last_ack = input.status.last_ack.clone();
    if let Some(value) = input.ack_annotation.map(str::trim).filter(|v| !v.is_empty())
        && last_ack.as_ref().is_none_or(|a| a.value != value)
    {
        let trip_id = value.split('@').next().unwrap_or_default();
        let observed_for = |instance| match instance {
            Instance::Prod => input.prod.map(|v| v.observed.clone()).unwrap_or_default(),
            Instance::Canary => input.canary.map(|v| v.observed.clone()).unwrap_or_default(),
        };
        let record = match guards::decide_ack(trip_id, &trips, guards, observed_for) {
            Ok(trip) => {
                trips.retain(|t| t.id != trip.id);
                let message = format!(
                    "trip {} ({} {}) acknowledged and released",
                    trip.id, trip.guard, trip.level
                );
                notices.push(Notice::normal(
                    Reason::TripAcknowledged,
                    format!("{message} by annotation"),
                ));
                AckRecord {
                    value: value.to_string(),
                    guard: Some(trip.guard),
                    result: AckResult::Accepted,
                    message,
                    time: now_text.clone(),
                }
            }
            Err(why) => {
                notices.push(Notice::warning(
                    Reason::AckRefused,
                    format!("acknowledgement {value:?} refused: {why}"),
                ));
                let guard = trips.iter().find(|t| t.id == trip_id).map(|t| t.guard.clone());
                AckRecord {
                    value: value.to_string(),
                    guard,
                    result: AckResult::Refused,
                    message: why,
                    time: now_text.clone(),
                }
            }
        };
        last_ack = Some(record);
    }

    let mode = effective_mode(input.spec, input.deleting, &trips, Instance::Prod, input.account);
    let canary_mode = input
        .canary
        .map(|_| effective_mode(input.spec, input.deleting, &trips, Instance::Canary, input.account).mode);
    TradingOutcome {
        trips,
        last_ack,
        mode,
        canary_mode,
        notices,
        tripped,
    }
}

/// The effective mode of one instance, why, and what imposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveMode {
    pub mode: TradingMode,
    /// In words, naming every source of the restriction (`status.modeReason`).
    pub reason: String,
    /// Every source of the restriction (empty when Normal).
    pub sources: Vec<ModeSource>,
}

/// The most restrictive of the spec's switches, a deletion in progress, the latched trips of
/// `instance` and what the bot's TradingAccount imposes.
pub fn effective_mode(
    spec: &TradingBotSpec,
    deleting: bool,
    trips: &[GuardTrip],
    instance: Instance,
    account: Option<&(TradingMode, String)>,
) -> EffectiveMode {
    let mine: Vec<GuardTrip> = trips.iter().filter(|t| t.instance == instance).cloned().collect();
    let trip_mode = guards::mode_of_trips(&mine);
    let trip_reason = guards::reason_of_trips(&mine).unwrap_or_default();
    let mut inputs = vec![
        (
            TradingMode::from_switches(false, spec.halted),
            ModeSource::SpecHalted,
            "spec.halted".to_string(),
        ),
        (
            TradingMode::from_switches(spec.reduce_only, false),
            ModeSource::SpecReduceOnly,
            "spec.reduceOnly".to_string(),
        ),
        (trip_mode, ModeSource::GuardTrip, trip_reason),
    ];
    if deleting {
        inputs.push((
            TradingMode::Halted,
            ModeSource::Deleting,
            "the TradingBot is being deleted".to_string(),
        ));
    }
    if let Some((mode, why)) = account {
        inputs.push((*mode, ModeSource::Account, why.clone()));
    }
    let (mode, sources, reason) = most_restrictive_of(&inputs);
    EffectiveMode { mode, reason, sources }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use tradingbot_crds::Profile;
    use tradingbot_crds::spec::{Levels, ResumePolicy};

    fn spec() -> TradingBotSpec {
        let mut s = TradingBotSpec::for_profile(Profile::Dev);
        s.guards.daily_loss = Some(Levels {
            reduce_only_at: Some("500".parse().unwrap()),
            halt_at: Some("1000".parse().unwrap()),
        });
        s
    }

    fn view(loss: Decimal) -> InstanceView {
        InstanceView {
            observed: GuardObservation {
                daily_loss: Some(loss),
                ..Default::default()
            },
            new_scrape: true,
            ..Default::default()
        }
    }

    fn run(
        spec: &TradingBotSpec,
        status: &TradingBotStatus,
        prod: InstanceView,
        ack: Option<&str>,
        streaks: &mut HealthyStreaks,
    ) -> TradingOutcome {
        decide(
            &TradingInputs {
                spec,
                status,
                deleting: false,
                ack_annotation: ack,
                prod: Some(&prod),
                canary: None,
                account: None,
                now: Timestamp::from_second(1_795_219_200).unwrap(),
            },
            streaks,
        )
    }

    fn apply(status: &mut TradingBotStatus, out: &TradingOutcome) {
        status.trips = out.trips.clone();
        status.last_ack = out.last_ack.clone();
        status.mode = Some(out.mode.mode);
    }

    #[test]
    fn loss_trips_reduce_only_then_halted_and_a_manual_ack_needs_recovery() {
        let s = spec();
        let mut status = TradingBotStatus::default();
        let mut streaks = HealthyStreaks::default();
        let out = run(&s, &status, view(dec!(600)), None, &mut streaks);
        assert_eq!(out.mode.mode, TradingMode::ReduceOnly);
        assert_eq!(out.notices[0].reason, Reason::GuardTripped);
        apply(&mut status, &out);
        let out = run(&s, &status, view(dec!(1200)), None, &mut streaks);
        assert_eq!(out.mode.mode, TradingMode::Halted);
        apply(&mut status, &out);
        let halted_id = status
            .trips
            .iter()
            .find(|t| t.level == TradingMode::Halted)
            .unwrap()
            .id
            .clone();
        // Acknowledging while the loss is still over the level is refused and recorded.
        let out = run(&s, &status, view(dec!(1100)), Some(&halted_id), &mut streaks);
        assert_eq!(out.mode.mode, TradingMode::Halted);
        assert_eq!(out.last_ack.as_ref().unwrap().result, AckResult::Refused);
        assert!(out.notices.iter().any(|n| n.reason == Reason::AckRefused && n.warning));
        apply(&mut status, &out);
        // The same annotation value is not processed twice.
        let out = run(&s, &status, view(dec!(100)), Some(&halted_id), &mut streaks);
        assert_eq!(out.mode.mode, TradingMode::Halted);
        // Re-acknowledging (a new value) after recovery releases it; the ReduceOnly trip stays.
        let out = run(
            &s,
            &status,
            view(dec!(100)),
            Some(&format!("{halted_id}@2")),
            &mut streaks,
        );
        assert_eq!(out.last_ack.as_ref().unwrap().result, AckResult::Accepted);
        assert_eq!(out.mode.mode, TradingMode::ReduceOnly);
    }

    #[test]
    fn a_trip_never_loosens_manual_intent() {
        let mut s = spec();
        s.halted = true;
        let out = run(
            &s,
            &TradingBotStatus::default(),
            view(dec!(600)),
            None,
            &mut HealthyStreaks::default(),
        );
        assert_eq!(out.mode.mode, TradingMode::Halted);
        assert_eq!(out.mode.sources, [ModeSource::SpecHalted]);
    }

    #[test]
    fn an_accounts_restriction_is_never_loosened_by_the_bot() {
        let s = spec();
        let account = (
            TradingMode::ReduceOnly,
            "TradingAccount trading/main: limit grossExposure".to_string(),
        );
        let mode = effective_mode(&s, false, &[], Instance::Prod, Some(&account));
        assert_eq!(
            (mode.mode, mode.sources),
            (TradingMode::ReduceOnly, vec![ModeSource::Account])
        );
        assert!(mode.reason.contains("TradingAccount trading/main"));
        let mut halted = s.clone();
        halted.halted = true;
        let mode = effective_mode(&halted, false, &[], Instance::Prod, Some(&account));
        assert_eq!(mode.sources, [ModeSource::SpecHalted], "the stricter source wins");
    }

    #[test]
    fn auto_resume_counts_only_new_scrapes() {
        let mut s = spec();
        s.guards.resume = ResumePolicy::Auto;
        s.guards.healthy_cycles_before_resume = Some(2);
        let mut status = TradingBotStatus::default();
        let mut streaks = HealthyStreaks::default();
        let out = run(&s, &status, view(dec!(600)), None, &mut streaks);
        apply(&mut status, &out);
        let mut stale = view(dec!(0));
        stale.new_scrape = false;
        for _ in 0..5 {
            assert_eq!(
                run(&s, &status, stale.clone(), None, &mut streaks).mode.mode,
                TradingMode::ReduceOnly
            );
        }
        assert_eq!(
            run(&s, &status, view(dec!(0)), None, &mut streaks).mode.mode,
            TradingMode::ReduceOnly
        );
        let out = run(&s, &status, view(dec!(0)), None, &mut streaks);
        assert_eq!(out.mode.mode, TradingMode::Normal);
        assert!(out.notices.iter().any(|n| n.reason == Reason::TripReleased));
    }

    #[test]
    fn a_failing_instance_is_rechecked_when_it_turns_unreachable_and_at_each_staleness_level() {
        let start = Instant::now();
        let mut failing = Observation {
            ok_count: 1,
            since: start,
            last_attempt: start,
            last_ok: Some(start),
            last_ok_at: None,
            last_error: Some("connection refused".into()),
            unheld: false,
            sample: Some(crate::scrape::BotSample {
                staleness_max: Some(dec!(2.5)),
                ..Default::default()
            }),
            errors_in_window: None,
        };
        let levels = guards::LevelPair {
            reduce_only_at: Some(dec!(40)),
            halt_at: Some(dec!(120)),
        };
        let after = Duration::from_secs(30);
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let until = |o: &Observation, now| until_silence_changes(o, now, after, &levels);
        let ms = Duration::from_millis;
        // Silent 10 s: unreachable after 30 s, just past it.
        assert_eq!(until(&failing, at(10)), Some(ms(20_100)));
        // Unreachable at 31 s: 2.5 + 31 is under 40 until silent 38 s; then 118 s for Halted.
        assert_eq!(until(&failing, at(31)), Some(ms(7_100)));
        assert_eq!(until(&failing, at(38)), Some(ms(80_100)));
        assert_eq!(until(&failing, at(118)), None, "every level reached");
        // No staleness levels: nothing after turning unreachable.
        let none = guards::LevelPair::default();
        assert_eq!(until_silence_changes(&failing, at(31), after, &none), None);
        // A successful latest scrape: a scrape round comes before its silence matters (with
        // Prometheus, its answer ages into a failure after prometheusMaxAgeSeconds).
        failing.last_error = None;
        assert_eq!(until(&failing, at(10)), None);
    }

    #[test]
    fn unreachable_metrics_count_as_stale_market_data() {
        let mut s = spec();
        s.guards.market_data_staleness_seconds = Some(tradingbot_crds::spec::SecondsLevels {
            reduce_only_at: Some(30),
            halt_at: Some(120),
        });
        let start = Instant::now();
        let observation = Observation {
            ok_count: 0,
            since: start,
            last_attempt: start,
            last_ok: None,
            last_ok_at: None,
            last_error: Some("connection refused".into()),
            unheld: false,
            sample: None,
            errors_in_window: None,
        };
        let v = view_of(
            &observation,
            start + Duration::from_secs(45),
            Duration::from_secs(20),
            0,
        );
        assert_eq!(v.observed.market_data_staleness_seconds, Some(dec!(45)));
        let out = run(
            &s,
            &TradingBotStatus::default(),
            v,
            None,
            &mut HealthyStreaks::default(),
        );
        assert_eq!(out.mode.mode, TradingMode::ReduceOnly);
        assert!(
            out.notices[0].note.contains("metrics unreachable for 45 s"),
            "{}",
            out.notices[0].note
        );
        let fresh = view_of(
            &observation,
            start + Duration::from_secs(10),
            Duration::from_secs(20),
            0,
        );
        assert_eq!(fresh.observed.market_data_staleness_seconds, None);
    }

    #[test]
    fn the_bots_own_latched_trips_are_adopted_until_acknowledged() {
        let s = spec();
        let mut v = view(dec!(10));
        v.bot_latched = vec![("dailyLoss".into(), TradingMode::ReduceOnly, 1_795_219_000)];
        let mut status = TradingBotStatus::default();
        let out = run(&s, &status, v.clone(), None, &mut HealthyStreaks::default());
        assert_eq!(out.mode.mode, TradingMode::ReduceOnly);
        // After an accepted ack for that guard, the same (older) bot latch is not re-adopted.
        status.last_ack = Some(AckRecord {
            value: "x".into(),
            guard: Some("dailyLoss".into()),
            result: AckResult::Accepted,
            message: String::new(),
            time: "2026-11-21T00:00:00Z".into(),
        });
        assert_eq!(
            run(&s, &status, v, None, &mut HealthyStreaks::default()).mode.mode,
            TradingMode::Normal
        );
    }
}

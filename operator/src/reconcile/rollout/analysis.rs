//! The analysis (pure): every `intervalSeconds`, one measurement of each metric over the interval
//! since the last one, from the bots' counters (a counter that went down means the pod restarted:
//! all of its count is new). A measurement fails when any metric is above `max`, is inconclusive
//! when one is above `inconclusiveAbove` or cannot be measured (no fresh scrape, no prod to
//! compare with, no cycle to time); the analysis ends Failed, Inconclusive or Successful by the
//! limits. Everything it needs between reconciles is in its status.

use super::MetricsSample;
use k8s_openapi::jiff::Timestamp;
use rust_decimal::Decimal;
use std::time::Duration;
use tradingbot_crds::Instance;
use tradingbot_crds::progressive::{
    AnalysisBaseline, AnalysisMetric, AnalysisMetricName, AnalysisPhase, AnalysisSpec, AnalysisStatus, Comparison,
    CounterSnapshot, MeasurementOutcome, MetricMeasurement,
};

/// How often an analysis waiting for its first sample looks again.
const WAITING: Duration = Duration::from_secs(5);

pub fn start(subject: Instance, now: &str) -> AnalysisStatus {
    AnalysisStatus {
        phase: AnalysisPhase::Running,
        subject,
        measurements: 0,
        successful: 0,
        failed: 0,
        inconclusive: 0,
        started_at: now.to_string(),
        last_measured_at: None,
        baseline: None,
        last: Vec::new(),
        message: Some("waiting for the first interval".into()),
    }
}

fn delta(now: u64, base: u64) -> u64 {
    if now >= base { now - base } else { now }
}

/// The value of `metric` over the interval from `base` to `sample`, if it can be measured.
pub fn value_of(metric: AnalysisMetricName, sample: &MetricsSample, base: &CounterSnapshot) -> Option<Decimal> {
    let c = &sample.counters;
    match metric {
        AnalysisMetricName::CycleErrors => Some(delta(c.cycle_errors, base.cycle_errors).into()),
        AnalysisMetricName::OrderRejections => Some(delta(c.orders_rejected, base.orders_rejected).into()),
        AnalysisMetricName::GuardTrips => Some(delta(c.guard_trips, base.guard_trips).into()),
        AnalysisMetricName::MarketDataStaleness => sample.staleness,
        AnalysisMetricName::CycleDuration => {
            let cycles = delta(c.cycles_timed, base.cycles_timed);
            let millis = delta(c.cycle_millis, base.cycle_millis);
            (cycles > 0).then(|| (Decimal::from(millis) / Decimal::from(1000) / Decimal::from(cycles)).round_dp(3))
        }
    }
}

/// The samples of one measurement, each only if scraped since the previous measurement.
struct Fresh<'a> {
    subject: Option<&'a MetricsSample>,
    prod: Option<&'a MetricsSample>,
}

fn outcome_of(metric: &AnalysisMetric, value: Decimal) -> (MeasurementOutcome, String) {
    let max = metric.max.value();
    if value > max {
        return (
            MeasurementOutcome::Failed,
            format!("{} {value} > max {max}", metric.name),
        );
    }
    match metric.inconclusive_above.map(|t| t.value()) {
        Some(gray) if value > gray => (
            MeasurementOutcome::Inconclusive,
            format!("{} {value} > inconclusiveAbove {gray}", metric.name),
        ),
        _ => (
            MeasurementOutcome::Successful,
            format!("{} {value} <= {max}", metric.name),
        ),
    }
}

fn inconclusive(metric: &AnalysisMetric, why: &str) -> MetricMeasurement {
    MetricMeasurement {
        name: metric.name,
        value: None,
        outcome: MeasurementOutcome::Inconclusive,
        message: format!("{}: {why}", metric.name),
    }
}

fn measure(metric: &AnalysisMetric, fresh: &Fresh<'_>, base: &AnalysisBaseline) -> MetricMeasurement {
    let Some(subject) = fresh.subject else {
        return inconclusive(metric, "no scrape since the last measurement");
    };
    let Some(own) = value_of(metric.name, subject, &base.subject) else {
        return inconclusive(metric, "no cycle in the interval");
    };
    let value = match metric.comparison {
        Comparison::Absolute => own,
        Comparison::VsProd => {
            let prod = fresh
                .prod
                .zip(base.prod.as_ref())
                .and_then(|(p, b)| value_of(metric.name, p, b));
            match prod {
                Some(prod) => own - prod,
                None => return inconclusive(metric, "prod's value cannot be read for the comparison"),
            }
        }
    };
    let (outcome, message) = outcome_of(metric, value);
    MetricMeasurement {
        name: metric.name,
        value: Some(value.normalize().to_string()),
        outcome,
        message,
    }
}

/// The worst of a measurement's metrics.
fn worst(measurements: &[MetricMeasurement]) -> MeasurementOutcome {
    let has = |o| measurements.iter().any(|m| m.outcome == o);
    if has(MeasurementOutcome::Failed) {
        MeasurementOutcome::Failed
    } else if has(MeasurementOutcome::Inconclusive) {
        MeasurementOutcome::Inconclusive
    } else {
        MeasurementOutcome::Successful
    }
}

fn baseline(subject: Option<&MetricsSample>, prod: Option<&MetricsSample>) -> Option<AnalysisBaseline> {
    Some(AnalysisBaseline {
        subject: subject?.counters.clone(),
        prod: prod.map(|p| p.counters.clone()),
    })
}

fn seconds_since(at: Option<&String>, now: Timestamp) -> Option<i64> {
    let at = at?.parse::<Timestamp>().ok()?;
    Some(now.as_second() - at.as_second())
}

/// Count one measurement and decide the analysis' phase.
fn tally(spec: &AnalysisSpec, status: &mut AnalysisStatus, measured: Vec<MetricMeasurement>) {
    let outcome = worst(&measured);
    status.measurements += 1;
    match outcome {
        MeasurementOutcome::Successful => status.successful += 1,
        MeasurementOutcome::Failed => status.failed += 1,
        MeasurementOutcome::Inconclusive => status.inconclusive += 1,
    }
    let words: Vec<String> = measured.iter().map(|m| m.message.clone()).collect();
    status.last = measured;
    status.phase = if status.failed > spec.failure_limit {
        AnalysisPhase::Failed
    } else if status.inconclusive > spec.inconclusive_limit {
        AnalysisPhase::Inconclusive
    } else if status.measurements >= spec.count {
        AnalysisPhase::Successful
    } else {
        AnalysisPhase::Running
    };
    status.message = Some(format!(
        "measurement {}/{} {outcome:?} ({}); {} successful, {} failed (limit {}), {} inconclusive (limit {})",
        status.measurements,
        spec.count,
        words.join(", "),
        status.successful,
        status.failed,
        spec.failure_limit,
        status.inconclusive,
        spec.inconclusive_limit
    ));
}

/// Take the next measurement when it is due. Returns how long until the next one (None when the
/// analysis is over). Prod (`prod`) is only read for `VsProd` metrics; during the bake the
/// subject is prod and `VsProd` metrics are left out.
pub fn advance(
    spec: &AnalysisSpec,
    status: &mut AnalysisStatus,
    subject: Option<&MetricsSample>,
    prod: Option<&MetricsSample>,
    now: Timestamp,
) -> Option<Duration> {
    if status.phase != AnalysisPhase::Running {
        return None;
    }
    let interval = i64::from(spec.interval_seconds);
    let Some(base) = status.baseline.clone() else {
        // The interval starts with the first sample.
        status.baseline = baseline(subject, prod);
        return Some(match status.baseline {
            Some(_) => {
                status.last_measured_at = Some(format!("{now:.0}"));
                Duration::from_secs(spec.interval_seconds.into())
            }
            None => WAITING,
        });
    };
    let elapsed = seconds_since(status.last_measured_at.as_ref(), now).unwrap_or(interval);
    if elapsed < interval {
        return Some(Duration::from_secs((interval - elapsed).max(1) as u64));
    }
    let since = status
        .last_measured_at
        .as_ref()
        .and_then(|t| t.parse::<Timestamp>().ok());
    let is_fresh = |s: &&MetricsSample| since.is_none_or(|t| s.at > t);
    let fresh = Fresh {
        subject: subject.filter(is_fresh),
        prod: prod.filter(is_fresh),
    };
    let measured: Vec<MetricMeasurement> = spec
        .metrics
        .iter()
        .filter(|m| status.subject == Instance::Canary || m.comparison == Comparison::Absolute)
        .map(|m| measure(m, &fresh, &base))
        .collect();
    tally(spec, status, measured);
    if let Some(next) = baseline(fresh.subject, fresh.prod.or(prod)) {
        status.baseline = Some(next);
    }
    status.last_measured_at = Some(format!("{now:.0}"));
    (status.phase == AnalysisPhase::Running).then(|| Duration::from_secs(spec.interval_seconds.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: AnalysisMetricName, max: &str, gray: Option<&str>, comparison: Comparison) -> AnalysisMetric {
        AnalysisMetric {
            name,
            max: max.parse().unwrap(),
            inconclusive_above: gray.map(|g| g.parse().unwrap()),
            comparison,
        }
    }

    fn spec(metrics: Vec<AnalysisMetric>) -> AnalysisSpec {
        AnalysisSpec {
            interval_seconds: 10,
            count: 3,
            failure_limit: 0,
            inconclusive_limit: 1,
            metrics,
        }
    }

    fn sample(at: i64, errors: u64, rejected: u64, timed: u64, millis: u64) -> MetricsSample {
        MetricsSample {
            counters: CounterSnapshot {
                cycle_errors: errors,
                orders_rejected: rejected,
                guard_trips: 0,
                cycles_timed: timed,
                cycle_millis: millis,
            },
            staleness: Some(Decimal::from(2)),
            at: Timestamp::from_second(at).unwrap(),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn measurements_over_intervals_pass_after_count() {
        let spec = spec(vec![
            metric(AnalysisMetricName::CycleErrors, "0", None, Comparison::Absolute),
            metric(AnalysisMetricName::CycleDuration, "2", Some("1"), Comparison::Absolute),
        ]);
        let mut status = start(Instance::Canary, "1970-01-01T00:16:40Z");
        assert_eq!(
            advance(&spec, &mut status, None, None, t(1000)),
            Some(WAITING),
            "no sample yet"
        );
        assert_eq!(
            advance(&spec, &mut status, Some(&sample(1001, 4, 0, 10, 3000)), None, t(1001)),
            Some(Duration::from_secs(10)),
            "the first sample starts the first interval"
        );
        assert_eq!(status.measurements, 0);
        assert_eq!(
            advance(&spec, &mut status, Some(&sample(1005, 4, 0, 12, 3500)), None, t(1005)),
            Some(Duration::from_secs(6))
        );
        for (i, now) in [1011, 1021, 1031].into_iter().enumerate() {
            let i = i as u64;
            advance(
                &spec,
                &mut status,
                Some(&sample(now, 4, 0, 20 + 10 * i, 6000 + 5000 * i)),
                None,
                t(now),
            );
        }
        assert_eq!(status.phase, AnalysisPhase::Successful, "{:?}", status.message);
        assert_eq!((status.measurements, status.successful), (3, 3));
        assert_eq!(status.last[1].value.as_deref(), Some("0.5"), "5000 ms over 10 cycles");
    }

    #[test]
    fn a_failure_fails_it_and_missing_data_is_inconclusive() {
        let spec = spec(vec![metric(
            AnalysisMetricName::CycleErrors,
            "0",
            None,
            Comparison::Absolute,
        )]);
        let mut status = start(Instance::Canary, "x");
        advance(&spec, &mut status, Some(&sample(1000, 1, 0, 0, 0)), None, t(1000));
        // Stale sample (not scraped since): inconclusive, within the limit of 1.
        advance(&spec, &mut status, Some(&sample(1000, 9, 0, 0, 0)), None, t(1010));
        assert_eq!((status.phase, status.inconclusive), (AnalysisPhase::Running, 1));
        assert_eq!(status.last[0].outcome, MeasurementOutcome::Inconclusive);
        // The stale 9 was not taken as the next baseline: one error since the first sample.
        advance(&spec, &mut status, Some(&sample(1020, 2, 0, 0, 0)), None, t(1020));
        assert_eq!(status.phase, AnalysisPhase::Failed);
        assert_eq!(status.last[0].value.as_deref(), Some("1"));
        assert!(status.message.as_ref().unwrap().contains("CycleErrors 1 > max 0"));
        // A restarted pod's counter went down: all of its count is new.
        assert_eq!(delta(2, 9), 2);
        assert_eq!(advance(&spec, &mut status, None, None, t(2000)), None, "over");
    }

    #[test]
    fn vs_prod_compares_with_prod_and_needs_it() {
        let spec = AnalysisSpec {
            inconclusive_limit: 0,
            ..spec(vec![metric(
                AnalysisMetricName::OrderRejections,
                "2",
                None,
                Comparison::VsProd,
            )])
        };
        let mut status = start(Instance::Canary, "x");
        advance(
            &spec,
            &mut status,
            Some(&sample(1000, 0, 10, 0, 0)),
            Some(&sample(1000, 0, 100, 0, 0)),
            t(1000),
        );
        // Canary +5, prod +4: 1 more than prod, within max 2.
        advance(
            &spec,
            &mut status,
            Some(&sample(1010, 0, 15, 0, 0)),
            Some(&sample(1010, 0, 104, 0, 0)),
            t(1010),
        );
        assert_eq!((status.successful, status.last[0].value.as_deref()), (1, Some("1")));
        advance(&spec, &mut status, Some(&sample(1020, 0, 16, 0, 0)), None, t(1020));
        assert_eq!(status.phase, AnalysisPhase::Inconclusive, "{:?}", status.last);
        // During the bake prod is the subject: VsProd metrics are left out.
        let mut bake = start(Instance::Prod, "x");
        advance(&spec, &mut bake, Some(&sample(1000, 0, 0, 0, 0)), None, t(1000));
        advance(&spec, &mut bake, Some(&sample(1010, 0, 50, 0, 0)), None, t(1010));
        assert_eq!((bake.successful, bake.last.len()), (1, 0));
    }

    #[test]
    fn the_gray_zone_is_inconclusive() {
        let m = metric(
            AnalysisMetricName::MarketDataStaleness,
            "30",
            Some("10"),
            Comparison::Absolute,
        );
        assert_eq!(outcome_of(&m, Decimal::from(5)).0, MeasurementOutcome::Successful);
        assert_eq!(outcome_of(&m, Decimal::from(20)).0, MeasurementOutcome::Inconclusive);
        assert_eq!(outcome_of(&m, Decimal::from(31)).0, MeasurementOutcome::Failed);
    }
}

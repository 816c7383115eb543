//! What the rollout sees (pure, from what was gathered): the canary, prod, their metrics and
//! the pending action.

use super::{ActionRequest, CanaryView, MetricsSample, ProdView};
use crate::reconcile::actors::Actors;
use crate::reconcile::observe::Observed;
use crate::reconcile::trading::TradingOutcome;
use crate::scrape::Observation;
use rust_decimal::prelude::ToPrimitive;
use tradingbot_crds::actions::parse_rollout_action;
use tradingbot_crds::progressive::CounterSnapshot;
use tradingbot_crds::status::TradingBotStatus;
use tradingbot_crds::{Instance, names};

/// The counters of a fresh scrape (the latest attempt succeeded), for the analysis.
pub fn metrics_of(observation: Option<&Observation>) -> Option<MetricsSample> {
    let observation = observation.filter(|o| o.last_error.is_none())?;
    let sample = observation.sample.as_ref()?;
    let millis = sample
        .cycle_seconds_total
        .and_then(|s| (s * rust_decimal::Decimal::from(1000)).to_u64())
        .unwrap_or(0);
    Some(MetricsSample {
        counters: CounterSnapshot {
            cycle_errors: sample.cycle_errors.unwrap_or(0),
            orders_rejected: sample.orders_rejected.unwrap_or(0),
            guard_trips: sample.guard_trips.unwrap_or(0),
            cycles_timed: sample.cycles_timed.unwrap_or(0),
            cycle_millis: millis,
        },
        staleness: sample.staleness_max,
        at: observation.last_ok_at?,
    })
}

pub fn canary_view(observed: &Observed, trading: &TradingOutcome) -> CanaryView {
    let pod = observed.pods.canary.ours();
    let sample = observed.scrapes.canary.as_ref().and_then(|o| o.sample.clone());
    CanaryView {
        ready: pod.is_some_and(|p| p.ready) && sample.is_some(),
        cycles: sample.as_ref().and_then(|s| s.cycles),
        cycle_errors: sample.as_ref().and_then(|s| s.cycle_errors),
        trip: trading
            .trips
            .iter()
            .find(|t| t.instance == Instance::Canary)
            .map(|t| format!("{} {} at {} >= {}", t.guard, t.level, t.value, t.threshold)),
        restarts: pod.map_or(0, |p| p.restarts),
        metrics: metrics_of(observed.scrapes.canary.as_ref()),
    }
}

pub fn prod_view(observed: &Observed, trading: &TradingOutcome) -> ProdView {
    let pod = observed.pods.prod.ours();
    ProdView {
        ready_image: pod
            .filter(|p| p.ready && !p.terminating)
            .and_then(|p| p.version.clone()),
        restarts: pod.map_or(0, |p| p.restarts),
        trips: trading
            .trips
            .iter()
            .filter(|t| t.instance == Instance::Prod)
            .cloned()
            .collect(),
        metrics: metrics_of(observed.scrapes.prod.as_ref()),
    }
}

/// The rollout action the TradingBot carries, if it was not processed yet.
pub fn action_request(observed: &Observed, old: &TradingBotStatus, actors: &Actors) -> Option<ActionRequest> {
    let value = observed
        .bot
        .metadata
        .annotations
        .as_ref()?
        .get(names::ANNOTATION_ROLLOUT_ACTION)?
        .trim()
        .to_string();
    let seen = old.last_action.as_ref().is_some_and(|a| a.value == value);
    if value.is_empty() || seen {
        return None;
    }
    let requester = actors.requester(names::ANNOTATION_ROLLOUT_ACTION, &value);
    Some(ActionRequest {
        action: parse_rollout_action(&value),
        value,
        by: requester.by,
        reason: requester.reason,
    })
}

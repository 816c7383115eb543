//! Conditions and the Events that status transitions deserve. Pure. A condition's
//! `lastTransitionTime` moves only when its status flips.

use super::notice::{Notice, Reason};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use tradingbot_crds::TradingMode;
use tradingbot_crds::status::{Phase, TradingBotStatus};

pub mod types {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const REDUCE_ONLY: &str = "ReduceOnly";
    pub const HALTED: &str = "Halted";
    pub const METRICS_REACHABLE: &str = "MetricsReachable";
    pub const SERVICE_MONITOR: &str = "ServiceMonitor";
    /// Whether every child object is as desired: False names each child the API server refused
    /// (kind/name and its message) or that belongs to another owner.
    pub const CHILDREN_APPLIED: &str = "ChildrenApplied";
}

/// A condition as decided, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Wanted {
    pub fn new(type_: &'static str, status: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Turn wanted conditions into Conditions, keeping `lastTransitionTime` when the status is
/// unchanged.
pub fn conditions(
    previous: &[Condition],
    wanted: Vec<Wanted>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason,
                message: w.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Replace the conditions of the `wanted` types, keeping every other condition as it is.
pub fn update_conditions(
    previous: &[Condition],
    wanted: Vec<Wanted>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let replaced: Vec<&str> = wanted.iter().map(|w| w.type_).collect();
    let mut kept: Vec<Condition> = previous
        .iter()
        .filter(|c| !replaced.contains(&c.type_.as_str()))
        .cloned()
        .collect();
    kept.extend(conditions(previous, wanted, generation, now));
    kept
}

fn condition<'a>(status: &'a TradingBotStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn is_true(status: &TradingBotStatus, type_: &str) -> bool {
    condition(status, type_).is_some_and(|c| c.status == "True")
}

/// The Event for a change of the effective mode between two statuses, if it changed.
pub fn mode_notice(old: &TradingBotStatus, new: &TradingBotStatus) -> Option<Notice> {
    // A new bot starting Normal is not a change worth an Event.
    let first_and_normal = old.mode.is_none() && new.mode == Some(TradingMode::Normal);
    let mode = new.mode?;
    if old.mode == new.mode || first_and_normal {
        return None;
    }
    let reason = new.mode_reason.clone().unwrap_or_default();
    let note = format!(
        "trading mode {} -> {mode}: {reason}",
        old.mode.map_or("unset".into(), |m| m.to_string())
    );
    Some(if mode == TradingMode::Normal {
        Notice::normal(Reason::ModeChanged, note)
    } else {
        Notice::warning(Reason::ModeChanged, note)
    })
}

/// Events for what else changed between two statuses (degradation, reachability, phase).
pub fn transition_notices(old: &TradingBotStatus, new: &TradingBotStatus) -> Vec<Notice> {
    let mut notices = Vec::new();
    let degraded = condition(new, types::DEGRADED).filter(|c| c.status == "True");
    if let Some(c) = degraded
        && (!is_true(old, types::DEGRADED) || condition(old, types::DEGRADED).map(|o| &o.message) != Some(&c.message))
    {
        notices.push(if c.reason == Reason::CredentialsRejected.as_str() {
            Notice::warning(Reason::CredentialsRejected, c.message.clone())
        } else {
            Notice::warning(
                Reason::InvalidSpec,
                format!("{}; the operator changes nothing until this is fixed", c.message),
            )
        });
    } else if degraded.is_none() && is_true(old, types::DEGRADED) {
        let was = condition(old, types::DEGRADED)
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        notices.push(Notice::normal(
            Reason::Recovered,
            if was == Reason::CredentialsRejected.as_str() {
                "the bot accepts its credentials again"
            } else {
                "the spec is valid again"
            },
        ));
    }
    let unreachable =
        |s: &TradingBotStatus| condition(s, types::METRICS_REACHABLE).is_some_and(|c| c.status == "False");
    if unreachable(new) && !unreachable(old) {
        let message = condition(new, types::METRICS_REACHABLE)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        notices.push(Notice::warning(Reason::MetricsUnreachable, message));
    } else if !unreachable(new) && unreachable(old) {
        notices.push(Notice::normal(
            Reason::MetricsReachable,
            "bot metrics are readable again",
        ));
    }
    let monitor_missing = |s: &TradingBotStatus| {
        condition(s, types::SERVICE_MONITOR).is_some_and(|c| c.status == "False" && c.reason == "APIMissing")
    };
    if monitor_missing(new) && !monitor_missing(old) {
        notices.push(Notice::warning(
            Reason::ServiceMonitorAPIMissing,
            "metrics.serviceMonitor.enabled but the monitoring.coreos.com/v1 ServiceMonitor API is not installed; it will be created once it is",
        ));
    }
    let deferred = |s: &TradingBotStatus| {
        condition(s, types::PROGRESSING).is_some_and(|c| c.reason == Reason::RestartDeferred.as_str())
    };
    if deferred(new) && !deferred(old) {
        let message = condition(new, types::PROGRESSING)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        notices.push(Notice::normal(Reason::RestartDeferred, message));
    }
    if new.phase == Some(Phase::Running) && old.phase != Some(Phase::Running) {
        notices.push(Notice::normal(Reason::Running, "the bot pod is running and ready"));
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let first = conditions(
            &[],
            vec![Wanted::new(types::READY, false, "PodNotReady", "")],
            Some(1),
            t0,
        );
        let same = conditions(
            &first,
            vec![Wanted::new(types::READY, false, "PodNotReady", "still")],
            Some(2),
            t1,
        );
        assert_eq!(same[0].last_transition_time, Time(t0));
        let flipped = conditions(
            &same,
            vec![Wanted::new(types::READY, true, "PodReady", "")],
            Some(2),
            t1,
        );
        assert_eq!(flipped[0].last_transition_time, Time(t1));
    }

    #[test]
    fn notices_for_mode_and_degradation_changes_only() {
        let old = TradingBotStatus {
            mode: Some(TradingMode::Normal),
            ..Default::default()
        };
        let mut new = old.clone();
        assert!(transition_notices(&old, &new).is_empty() && mode_notice(&old, &new).is_none());
        new.mode = Some(TradingMode::Halted);
        new.mode_reason = Some("spec.halted".into());
        new.conditions = conditions(
            &[],
            vec![Wanted::new(
                types::DEGRADED,
                true,
                "CredentialsRejected",
                "Secret x not found",
            )],
            None,
            Timestamp::UNIX_EPOCH,
        );
        let mut notices: Vec<Notice> = mode_notice(&old, &new).into_iter().collect();
        notices.extend(transition_notices(&old, &new));
        let reasons: Vec<Reason> = notices.iter().map(|n| n.reason).collect();
        assert_eq!(reasons, [Reason::ModeChanged, Reason::CredentialsRejected]);
        assert!(notices.iter().all(|n| n.warning));
        assert!(transition_notices(&new, &new).is_empty(), "no repeats without a change");
        assert!(mode_notice(&new, &new).is_none());
    }
}

//! Step 6, report (pure): the status and the Events that follow from what was decided and what
//! the apply step managed to do.

use super::apply::{Applied, ChildIssue, PodStep};
use super::decide::{ChildrenPlan, Decision, RolloutRecords};
use super::notice::{Notice, Reason};
use super::observe::Observed;
use super::status::{self, Wanted, types};
use crate::cli::GuardSource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use tradingbot_crds::mode::ModeSource;
use tradingbot_crds::status::{Phase, RolloutPhase, RolloutStatus, TradingBotStatus};
use tradingbot_crds::{Instance, TradingMode};

/// The status to write and the Events to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub status: TradingBotStatus,
    pub notices: Vec<Notice>,
}

/// What the pods are doing, for phase and conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodProgress {
    /// The prod pod is being (re)started: the Progressing reason.
    prod: Option<&'static str>,
    deferred: Option<usize>,
}

/// The prod pod is ours and still being created: its phase is Pending (being scheduled, its
/// image pulled, its container started), and a pass converging the children left it as it is
/// (a pod being replaced or whose restart waits says so instead; a pass that skipped the
/// children while their retry waits, or left the pod because a dependency was refused, counts
/// as leaving it: the condition does not flip between such passes). `Progressing` says `PodCreating` from the pass that
/// created it until the pod runs, not only in that pass: a pod the cache shows for the first
/// time changes nothing, and a new bot's status is not written once more for it.
fn prod_pod_pending(observed: &Observed, decision: &Decision, applied: &Applied) -> bool {
    let left_as_is = matches!(decision.children, ChildrenPlan::Converge(_))
        && matches!(applied.pods.prod, Some(PodStep::Steady | PodStep::Blocked) | None);
    left_as_is
        && !observed.deleting()
        && observed.pods.prod.ours().is_some_and(|p| {
            !p.terminating
                && p.pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_none_or(|phase| phase == "Pending")
        })
}

fn pod_notices(observed: &Observed, decision: &Decision, applied: &Applied, notices: &mut Vec<Notice>) -> PodProgress {
    let mut progress = PodProgress::default();
    if prod_pod_pending(observed, decision, applied) {
        progress.prod = Some("PodCreating");
    }
    for (instance, step) in [
        (Instance::Canary, &applied.pods.canary),
        (Instance::Prod, &applied.pods.prod),
    ] {
        let prod = instance == Instance::Prod;
        match step {
            Some(PodStep::Created) => {
                notices.push(Notice::normal(Reason::PodCreated, format!("{instance} pod created")));
                if prod {
                    progress.prod.get_or_insert("PodCreating");
                }
            }
            Some(PodStep::Stopping { why }) => {
                notices.push(Notice::normal(
                    Reason::PodStopping,
                    format!("{instance} pod stopping ({why}); a replacement starts only once it is gone"),
                ));
                if prod {
                    progress.prod = Some("PodReplacing");
                }
            }
            Some(PodStep::WaitingForStop) if prod => progress.prod = Some("PodReplacing"),
            Some(PodStep::RestartDeferred { restarting }) => progress.deferred = Some(*restarting),
            _ => {}
        }
    }
    progress
}

fn phase(observed: &Observed, decision: &Decision, progress: &PodProgress) -> Phase {
    let spec = &observed.bot.spec;
    let prod_ready = observed.pods.prod.ours().is_some_and(|p| p.ready && !p.terminating);
    if observed.deleting() {
        Phase::Terminating
    } else if spec.paused {
        Phase::Paused
    } else if !decision.problems.is_empty() || !decision.credentials.is_empty() {
        Phase::Degraded
    } else if prod_ready && progress.prod.is_none() {
        Phase::Running
    } else {
        Phase::Pending
    }
}

fn ready_condition(phase: Phase, prod_ready: bool) -> Wanted {
    match phase {
        Phase::Running => Wanted::new(types::READY, true, "PodReady", "the bot pod is running and ready"),
        Phase::Paused => Wanted::new(
            types::READY,
            prod_ready,
            "Paused",
            "spec.paused: the operator changes nothing",
        ),
        Phase::Degraded => Wanted::new(types::READY, false, "Degraded", "see the Degraded condition"),
        Phase::Terminating => Wanted::new(types::READY, false, "Terminating", "the TradingBot is being deleted"),
        Phase::Pending => Wanted::new(
            types::READY,
            false,
            "PodNotReady",
            "waiting for the bot pod to be ready",
        ),
    }
}

fn progressing(rollout: Option<&RolloutStatus>, progress: &PodProgress) -> Wanted {
    match (rollout, progress.prod) {
        (Some(r), _) if r.phase.is_in_progress() => Wanted::new(
            types::PROGRESSING,
            true,
            r.phase.as_str(),
            r.message.clone().unwrap_or_default(),
        ),
        (_, Some(reason)) => Wanted::new(types::PROGRESSING, true, reason, "the bot pod is being (re)started"),
        _ if progress.deferred.is_some() => Wanted::new(
            types::PROGRESSING,
            true,
            Reason::RestartDeferred.as_str(),
            format!(
                "a restart for the operator's sake waits for the fleet's restart budget ({} bot pods restarting)",
                progress.deferred.unwrap_or_default()
            ),
        ),
        (Some(r), None) if r.phase == RolloutPhase::Aborted => Wanted::new(
            types::PROGRESSING,
            false,
            "RolloutAborted",
            r.message.clone().unwrap_or_default(),
        ),
        (Some(r), None) if r.phase == RolloutPhase::Promoted => Wanted::new(
            types::PROGRESSING,
            false,
            "RolloutComplete",
            r.message.clone().unwrap_or_default(),
        ),
        _ => Wanted::new(types::PROGRESSING, false, "Idle", "nothing to roll out"),
    }
}

fn degraded(decision: &Decision) -> Wanted {
    if !decision.problems.is_empty() {
        let text = decision.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        return Wanted::new(types::DEGRADED, true, Reason::InvalidSpec.as_str(), text.join("; "));
    }
    if !decision.credentials.is_empty() {
        return Wanted::new(
            types::DEGRADED,
            true,
            Reason::CredentialsRejected.as_str(),
            decision.credentials.join("; "),
        );
    }
    Wanted::new(types::DEGRADED, false, "AsExpected", "the spec is valid")
}

/// The ReduceOnly / Halted condition: True with what imposes it, when the mode is `level`.
pub fn mode_condition(
    type_: &'static str,
    level: TradingMode,
    mode: TradingMode,
    sources: &[ModeSource],
    reason: &str,
) -> Wanted {
    if mode != level {
        return Wanted::new(type_, false, "NotInForce", format!("mode is {mode}"));
    }
    let why = if sources.contains(&ModeSource::Deleting) {
        "Deleting"
    } else if sources.contains(&ModeSource::Brake) {
        "EmergencyBrake"
    } else if sources.contains(&ModeSource::GuardTrip) {
        "GuardTripped"
    } else {
        "ManualIntent"
    };
    Wanted::new(type_, true, why, reason)
}

fn metrics_reachable(observed: &Observed, decision: &Decision) -> Option<Wanted> {
    let Some(view) = decision.views.prod.as_ref() else {
        return reachability_before_the_first_scrape(observed);
    };
    Some(match view.unreachable_for {
        Some(_) if never_in_prometheus_without_a_monitor(observed) => Wanted::new(
            types::METRICS_REACHABLE,
            false,
            "NoServiceMonitor",
            "the guard source is Prometheus, which has held no series of this bot since the operator began \
             reading it, and the bot has no ServiceMonitor (set metrics.serviceMonitor.enabled with the \
             monitoring.coreos.com API installed, or have Prometheus scrape its metrics Service); treated as \
             stale market data",
        ),
        Some(_) => scrape_failing(observed),
        None if nothing_read_yet(observed) => return reachability_as_stored(observed),
        None => Wanted::new(types::METRICS_REACHABLE, true, "Scraped", "bot metrics are readable"),
    })
}

/// `ScrapeFailing`, with a stable text (no running counters: status is written only when it
/// changes). When no scrape has succeeded since the operator started and the status already said
/// so, its text (and the time of the last success it names) stays.
fn scrape_failing(observed: &Observed) -> Wanted {
    let last_ok_at = observed.scrapes.prod.as_ref().and_then(|o| o.last_ok_at);
    let stored = stored_reachability(observed).filter(|c| c.status == "False" && c.reason == "ScrapeFailing");
    let message = match (last_ok_at, stored) {
        (None, Some(stored)) => stored.message.clone(),
        (last_ok_at, _) => format!(
            "no successful scrape since {}; treated as stale market data",
            last_ok_at.map_or_else(|| "scraping started".to_string(), |t| format!("{t:.0}"))
        ),
    };
    Wanted::new(types::METRICS_REACHABLE, false, "ScrapeFailing", message)
}

/// Only failures since scraping began (the operator started, or the bot is new).
fn nothing_read_yet(observed: &Observed) -> bool {
    observed
        .scrapes
        .prod
        .as_ref()
        .is_some_and(|o| o.last_error.is_some() && o.last_ok.is_none())
}

/// A pod to scrape and no observation of it yet (the operator just started, or its scrapes of
/// this pod are just starting): what the status said stays, transition time and all, until the
/// first round says otherwise. Dropping it would write the status twice (gone, then back) for
/// every bot after each operator restart and lose when a bot really became unreachable.
fn reachability_before_the_first_scrape(observed: &Observed) -> Option<Wanted> {
    observed.scrape_target(Instance::Prod)?;
    reachability_as_stored(observed)
}

/// What the status says of the bot's metrics, kept while only failures, not yet long enough to
/// make it unreachable, were seen since scraping began: a failure measures nothing, so it neither
/// claims the metrics readable (a bot starting up, or one already unreachable before an operator
/// restart, would flip to True and back, an Event each way) nor unreachable before
/// `unreachableAfterSeconds`.
fn reachability_as_stored(observed: &Observed) -> Option<Wanted> {
    let stored = stored_reachability(observed)?;
    Some(Wanted::new(
        types::METRICS_REACHABLE,
        stored.status == "True",
        stored.reason.clone(),
        stored.message.clone(),
    ))
}

fn stored_reachability(observed: &Observed) -> Option<&Condition> {
    let status = observed.bot.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == types::METRICS_REACHABLE)
}

/// Guards read from Prometheus, which answers yet holds no series of this pod and never gave
/// one since its observation began, and the operator made no ServiceMonitor that would have it
/// scraped: most likely nothing scrapes it. (A Prometheus that is down, or holds the pod only
/// as down or old, is a failing scrape, not this.)
fn never_in_prometheus_without_a_monitor(observed: &Observed) -> bool {
    let unheld = observed
        .scrapes
        .prod
        .as_ref()
        .is_some_and(|o| o.unheld && o.last_ok_at.is_none());
    let monitored = observed.bot.spec.metrics.service_monitor.enabled && observed.service_monitor_api;
    observed.guard_source == GuardSource::Prometheus && unheld && !monitored
}

fn service_monitor(observed: &Observed, applied: &Applied) -> Option<Wanted> {
    if !observed.bot.spec.metrics.service_monitor.enabled {
        return None;
    }
    Some(match (observed.service_monitor_api, applied.service_monitor) {
        (false, _) => Wanted::new(
            types::SERVICE_MONITOR,
            false,
            "APIMissing",
            "the monitoring.coreos.com/v1 ServiceMonitor API is not installed",
        ),
        (true, Some(true)) => Wanted::new(
            types::SERVICE_MONITOR,
            true,
            "Created",
            "a ServiceMonitor selects the bot's metrics Services",
        ),
        (true, _) => Wanted::new(
            types::SERVICE_MONITOR,
            false,
            "NotApplied",
            "the ServiceMonitor could not be written (see ChildrenApplied)",
        ),
    })
}

fn children_applied(applied: &Applied) -> Wanted {
    if applied.problems.is_empty() {
        return Wanted::new(
            types::CHILDREN_APPLIED,
            true,
            "AsDesired",
            "every child object is as desired",
        );
    }
    let owned = applied
        .problems
        .iter()
        .any(|p| matches!(p.issue, ChildIssue::OwnedByOther(_)));
    let text: Vec<String> = applied.problems.iter().map(|p| p.to_string()).collect();
    Wanted::new(
        types::CHILDREN_APPLIED,
        false,
        if owned { "OwnedByOther" } else { "WriteFailed" },
        format!("{}; retried with backoff", text.join("; ")),
    )
}

/// Warning Events for child problems, once per change of what is wrong.
fn child_notices(old: &TradingBotStatus, new: &TradingBotStatus, applied: &Applied, notices: &mut Vec<Notice>) {
    let message = |s: &TradingBotStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == types::CHILDREN_APPLIED && c.status == "False")
            .map(|c| c.message.clone())
    };
    if message(new).is_none() || message(new) == message(old) {
        return;
    }
    for problem in &applied.problems {
        let reason = match problem.issue {
            ChildIssue::WriteFailed(_) => Reason::ChildWriteFailed,
            ChildIssue::OwnedByOther(_) => Reason::ChildOwnedByOther,
        };
        notices.push(Notice::warning(reason, problem.to_string()));
    }
}

/// The rollout's history, the action it processed and its audit entries.
fn add_records(status: &mut TradingBotStatus, records: &RolloutRecords) {
    if let Some(history) = &records.history {
        status.rollout_history = history.clone();
    }
    if let Some(action) = &records.action {
        status.last_action = Some(action.clone());
    }
    tradingbot_crds::audit::append(&mut status.history, records.audit.iter().cloned());
}

/// The status after this pass, and its Events.
pub fn report(observed: &Observed, decision: &Decision, applied: &Applied) -> Report {
    let old = observed.bot.status.clone().unwrap_or_default();
    let mut notices = decision.notices.clone();
    let progress = pod_notices(observed, decision, applied, &mut notices);
    let phase = phase(observed, decision, &progress);
    let prod_ready = observed.pods.prod.ours().is_some_and(|p| p.ready);
    let mode = &decision.trading.mode;
    let mut wanted = vec![
        ready_condition(phase, prod_ready),
        progressing(decision.rollout.as_ref(), &progress),
        degraded(decision),
        mode_condition(
            types::REDUCE_ONLY,
            TradingMode::ReduceOnly,
            mode.mode,
            &mode.sources,
            &mode.reason,
        ),
        mode_condition(
            types::HALTED,
            TradingMode::Halted,
            mode.mode,
            &mode.sources,
            &mode.reason,
        ),
    ];
    wanted.extend(metrics_reachable(observed, decision));
    if matches!(decision.children, ChildrenPlan::Converge(_)) {
        wanted.extend(service_monitor(observed, applied));
        wanted.push(children_applied(applied));
    }
    let generation = observed.bot.metadata.generation;
    let mut new = TradingBotStatus {
        observed_generation: generation,
        phase: Some(phase),
        current_version: decision.current_version.clone(),
        canary_version: decision.canary_version.clone(),
        rollout: decision.rollout.clone(),
        conditions: status::conditions(&old.conditions, wanted, generation, observed.now),
        ..decision.enforcement.clone()
    };
    add_records(&mut new, &decision.records);
    notices.extend(status::transition_notices(&old, &new));
    child_notices(&old, &new, applied, &mut notices);
    Report { status: new, notices }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Settings;
    use crate::context::BotMemory;
    use crate::reconcile::apply::{ChildProblem, PodStep};
    use crate::reconcile::decide::decide;
    use crate::reconcile::fixtures::{self, guarded_spec, observed, ours, pod, scrape};
    use crate::reconcile::observe::{PerInstance, Slot};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use std::time::{Duration, Instant};

    fn refused() -> Applied {
        Applied {
            pods: PerInstance {
                prod: Some(PodStep::Steady),
                canary: Some(PodStep::Blocked),
            },
            problems: vec![ChildProblem {
                kind: "ConfigMap".into(),
                name: "btc--canary-config".into(),
                issue: ChildIssue::WriteFailed("exceeded quota: no-canary (403 Forbidden)".into()),
            }],
            service_monitor: None,
        }
    }

    #[test]
    fn a_refused_child_is_named_in_a_condition_and_one_warning_while_the_mode_stands() {
        let status = TradingBotStatus {
            mode: Some(TradingMode::Normal),
            current_version: Some("bot:v1".into()),
            ..Default::default()
        };
        let o = observed(
            fixtures::bot("btc", guarded_spec(), status),
            ours(pod("btc", "bot:v1", true)),
            Some(scrape(45, TradingMode::Normal, 0)),
        );
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let report = report(&o, &d, &refused());
        let c = report
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == types::CHILDREN_APPLIED)
            .unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "WriteFailed"));
        assert!(
            c.message.contains("ConfigMap btc--canary-config: exceeded quota"),
            "{}",
            c.message
        );
        assert_eq!(
            report.status.mode,
            Some(TradingMode::Halted),
            "the refusal changes nothing about the mode"
        );
        let warnings: Vec<Reason> = report.notices.iter().filter(|n| n.warning).map(|n| n.reason).collect();
        assert!(warnings.contains(&Reason::ChildWriteFailed), "{warnings:?}");
        // The same refusal again: no second Event.
        let mut again = o.clone();
        let mut stored = (*o.bot).clone();
        stored.status = Some(report.status.clone());
        again.bot = std::sync::Arc::new(stored);
        let d = decide(&again, &Settings::for_tests(), &mut BotMemory::default());
        let report = super::report(&again, &d, &refused());
        assert!(!report.notices.iter().any(|n| n.reason == Reason::ChildWriteFailed));
    }

    fn progressing_of(status: &TradingBotStatus) -> (String, String) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == types::PROGRESSING)
            .expect("a Progressing condition");
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_created_pod_stays_podcreating_while_pending_so_the_next_pass_writes_nothing() {
        let new_bot = fixtures::bot("btc", guarded_spec(), TradingBotStatus::default());
        let o = observed(new_bot.clone(), Slot::Absent, None);
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let created = Applied {
            pods: PerInstance {
                prod: Some(PodStep::Created),
                canary: Some(PodStep::Steady),
            },
            ..Applied::default()
        };
        let first = report(&o, &d, &created);
        assert_eq!(progressing_of(&first.status), ("True".into(), "PodCreating".into()));
        assert!(first.notices.iter().any(|n| n.reason == Reason::PodCreated));

        // The next pass: the cache now shows the pod, Pending (unschedulable, pulling...).
        let mut pending = pod("btc", "bot:v1", false);
        pending.status.as_mut().expect("a status").phase = Some("Pending".into());
        let mut stored = new_bot;
        stored.status = Some(first.status.clone());
        let o = observed(stored.clone(), ours(pending), None);
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let steady = Applied {
            pods: PerInstance {
                prod: Some(PodStep::Steady),
                canary: Some(PodStep::Steady),
            },
            ..Applied::default()
        };
        let second = report(&o, &d, &steady);
        assert_eq!(second.status, first.status, "nothing changed: nothing to write");
        assert!(second.notices.is_empty(), "{:?}", second.notices);
        for (pass, prod) in [
            ("retry waiting", None),
            ("a dependency refused", Some(PodStep::Blocked)),
        ] {
            let left = Applied {
                pods: PerInstance { prod, canary: None },
                ..Applied::default()
            };
            let again = report(&o, &d, &left);
            assert_eq!(
                progressing_of(&again.status),
                ("True".into(), "PodCreating".into()),
                "{pass}: no flip to Idle and back"
            );
        }

        // Once it runs (not yet ready), it is no longer being created.
        let o = observed(stored, ours(pod("btc", "bot:v1", false)), None);
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let running = report(&o, &d, &steady);
        assert_eq!(progressing_of(&running.status), ("False".into(), "Idle".into()));
    }

    /// An observation of a bot no answer has carried for ten minutes (`seen`: one did before;
    /// `unheld`: Prometheus answers and holds no series of it).
    fn silent(seen: bool, unheld: bool) -> crate::scrape::Observation {
        let mut o = scrape(0, TradingMode::Normal, 0);
        let ten_minutes_ago = Instant::now()
            .checked_sub(Duration::from_secs(600))
            .expect("an instant ten minutes back");
        o.since = ten_minutes_ago;
        o.last_ok = seen.then_some(ten_minutes_ago);
        o.last_ok_at = seen.then(|| Timestamp::from_second(fixtures::NOW - 600).expect("a time"));
        if !seen {
            o.sample = None;
        }
        o.last_error = Some("no series of this bot".into());
        o.unheld = unheld;
        o
    }

    fn reachability(source: GuardSource, monitored: bool, seen: bool, unheld: bool) -> (String, String) {
        let mut spec = guarded_spec();
        spec.metrics.service_monitor.enabled = monitored;
        let mut o = observed(
            fixtures::bot("btc", spec, TradingBotStatus::default()),
            ours(pod("btc", "bot:v1", true)),
            Some(silent(seen, unheld)),
        );
        o.guard_source = source;
        o.service_monitor_api = true;
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let report = report(&o, &d, &Applied::default());
        let c = report
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == types::METRICS_REACHABLE)
            .expect("a MetricsReachable condition");
        assert_eq!(c.status, "False", "{c:?}");
        (c.reason.clone(), c.message.clone())
    }

    /// A scrape that failed just now, of a pod no scrape has reached since the operator started
    /// (under `unreachableAfterSeconds`: not unreachable yet).
    fn failing_just_now() -> crate::scrape::Observation {
        let mut o = scrape(0, TradingMode::Normal, 0);
        (o.since, o.ok_count, o.last_ok, o.last_ok_at) = (Instant::now(), 0, None, None);
        o.last_error = Some("connection refused".into());
        o
    }

    #[test]
    fn until_a_scrape_succeeds_or_the_bot_turns_unreachable_metrics_reachable_stays_as_stored() {
        // No observation yet (the operator has just restarted), or only failures that have not
        // made the bot unreachable yet: a bot unreachable before the restart must not flip to
        // True and back, nor a healthy one to False on one failure.
        let cases = [None, Some(failing_just_now())];
        for ((status, reason), scrape) in [("True", "Scraped"), ("False", "ScrapeFailing")]
            .into_iter()
            .flat_map(|c| cases.iter().map(move |s| (c, s.clone())))
        {
            let stored_condition = Condition {
                type_: types::METRICS_REACHABLE.into(),
                status: status.into(),
                reason: reason.into(),
                message: "as stored".into(),
                observed_generation: Some(1),
                last_transition_time: Time(Timestamp::from_second(fixtures::NOW - 3600).expect("a time")),
            };
            let stored = TradingBotStatus {
                conditions: vec![stored_condition.clone()],
                ..TradingBotStatus::default()
            };
            let o = observed(
                fixtures::bot("btc", guarded_spec(), stored),
                ours(pod("btc", "bot:v1", true)),
                scrape,
            );
            assert!(o.scrape_target(Instance::Prod).is_some(), "the pod can be scraped");
            let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
            let report = report(&o, &d, &Applied::default());
            let c = report
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == types::METRICS_REACHABLE)
                .unwrap_or_else(|| panic!("{status}: MetricsReachable kept"));
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                (status, reason, "as stored")
            );
            assert_eq!(
                c.last_transition_time, stored_condition.last_transition_time,
                "{status}"
            );
        }
        // No pod to scrape: nothing is claimed about its metrics.
        let stored = TradingBotStatus {
            conditions: vec![Condition {
                type_: types::METRICS_REACHABLE.into(),
                status: "True".into(),
                reason: "Scraped".into(),
                message: "as stored".into(),
                observed_generation: Some(1),
                last_transition_time: Time(Timestamp::from_second(fixtures::NOW - 3600).expect("a time")),
            }],
            ..TradingBotStatus::default()
        };
        let o = observed(fixtures::bot("btc", guarded_spec(), stored), Slot::Absent, None);
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let report = report(&o, &d, &Applied::default());
        assert!(
            !report
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == types::METRICS_REACHABLE)
        );
        // A new bot whose pod does not answer yet: nothing is claimed either way.
        let o = observed(
            fixtures::bot("btc", guarded_spec(), TradingBotStatus::default()),
            ours(pod("btc", "bot:v1", true)),
            Some(failing_just_now()),
        );
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let starting = super::report(&o, &d, &Applied::default());
        assert!(
            !starting
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == types::METRICS_REACHABLE),
            "{:?}",
            starting.status.conditions
        );
    }

    #[test]
    fn a_bot_unreachable_before_an_operator_restart_keeps_the_time_its_status_names() {
        let said = "no successful scrape since 2026-12-01T10:00:00Z; treated as stale market data";
        let stored = TradingBotStatus {
            conditions: vec![Condition {
                type_: types::METRICS_REACHABLE.into(),
                status: "False".into(),
                reason: "ScrapeFailing".into(),
                message: said.into(),
                observed_generation: Some(1),
                last_transition_time: Time(Timestamp::from_second(fixtures::NOW - 3600).expect("a time")),
            }],
            ..TradingBotStatus::default()
        };
        let message = |status: TradingBotStatus| {
            // Unreachable again, with no success since the restart: the time of the last one is
            // only in the status.
            let o = observed(
                fixtures::bot("btc", guarded_spec(), status),
                ours(pod("btc", "bot:v1", true)),
                Some(silent(false, false)),
            );
            let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
            let c = super::report(&o, &d, &Applied::default())
                .status
                .conditions
                .into_iter()
                .find(|c| c.type_ == types::METRICS_REACHABLE)
                .expect("a MetricsReachable condition");
            assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ScrapeFailing"));
            c.message
        };
        assert_eq!(message(stored), said);
        assert_eq!(
            message(TradingBotStatus::default()),
            "no successful scrape since scraping started; treated as stale market data"
        );
    }

    #[test]
    fn a_bot_prometheus_never_held_and_no_service_monitor_would_have_it_scraped_is_named_so() {
        let (reason, message) = reachability(GuardSource::Prometheus, false, false, true);
        assert_eq!(reason, "NoServiceMonitor");
        assert!(message.contains("metrics.serviceMonitor.enabled"), "{message}");
        // Otherwise the metrics are simply failing: another source, a ServiceMonitor made, a
        // bot seen before, or a Prometheus that is down or holds the pod only as down or old.
        for (source, monitored, seen, unheld) in [
            (GuardSource::Pods, false, false, true),
            (GuardSource::Prometheus, true, false, true),
            (GuardSource::Prometheus, false, true, true),
            (GuardSource::Prometheus, false, false, false),
        ] {
            assert_eq!(
                reachability(source, monitored, seen, unheld).0,
                "ScrapeFailing",
                "{source:?}, monitored {monitored}, seen before {seen}, unheld {unheld}"
            );
        }
    }

    #[test]
    fn mode_conditions_name_their_source_by_kind() {
        let c = mode_condition(
            types::HALTED,
            TradingMode::Halted,
            TradingMode::Halted,
            &[ModeSource::SpecHalted, ModeSource::GuardTrip],
            "x",
        );
        assert_eq!(c.reason, "GuardTripped");
        let c = mode_condition(
            types::HALTED,
            TradingMode::Halted,
            TradingMode::Halted,
            &[ModeSource::SpecHalted],
            "spec.halted",
        );
        assert_eq!(c.reason, "ManualIntent");
        let c = mode_condition(
            types::HALTED,
            TradingMode::Halted,
            TradingMode::Halted,
            &[ModeSource::Deleting],
            "d",
        );
        assert_eq!(c.reason, "Deleting");
        let c = mode_condition(types::HALTED, TradingMode::Halted, TradingMode::ReduceOnly, &[], "r");
        assert_eq!((c.status, c.reason.as_str()), (false, "NotInForce"));
    }

    #[test]
    fn credentials_refused_by_the_bot_make_it_degraded() {
        let mut spec = guarded_spec();
        spec.profile = tradingbot_crds::Profile::Prod;
        spec.exchange.credentials_secret = Some("coinbase-prod".into());
        let o = observed(
            fixtures::bot("btc", spec, TradingBotStatus::default()),
            ours(fixtures::pod_refusing_credentials(
                "btc",
                "credentials from Secret \"coinbase-prod\": empty",
            )),
            None,
        );
        let d = decide(&o, &Settings::for_tests(), &mut BotMemory::default());
        let report = report(&o, &d, &Applied::default());
        assert_eq!(report.status.phase, Some(Phase::Degraded));
        let c = report
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == types::DEGRADED)
            .unwrap();
        assert_eq!(c.reason, "CredentialsRejected");
        assert!(c.message.contains("coinbase-prod"));
        assert!(
            report
                .notices
                .iter()
                .any(|n| n.reason == Reason::CredentialsRejected && n.warning)
        );
    }
}

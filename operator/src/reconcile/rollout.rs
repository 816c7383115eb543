//! The canary → prod rollout as a state machine, pure. Everything it needs to resume after an
//! operator restart is in `status.rollout` and the canary's own metrics (counters since the
//! canary pod started), so a restart never restarts a rollout.

use super::notice::{Notice, Reason};
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;
use tradingbot_crds::TradingBotSpec;
use tradingbot_crds::spec::{Promotion, RolloutStrategy};
use tradingbot_crds::status::{RolloutPhase, RolloutStatus, TradingBotStatus};

/// A canary that is not ready after this long is given up.
pub const CANARY_READY_TIMEOUT: Duration = Duration::from_secs(600);

/// What the operator sees of the canary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CanaryView {
    pub ready: bool,
    pub cycles: Option<u64>,
    pub cycle_errors: Option<u64>,
    /// Why the canary failed a guard, when one of its trips is latched.
    pub trip: Option<String>,
    /// Restarts of the canary's container (a crash loop fails the canary).
    pub restarts: u32,
}

/// A canary container that restarts this often has failed.
pub const CANARY_MAX_RESTARTS: u32 = 3;

pub struct RolloutInputs<'a> {
    pub spec: &'a TradingBotSpec,
    pub default_image: &'a str,
    /// Status as last written, with `current_version` already the version prod is observed to run.
    pub status: &'a TradingBotStatus,
    pub canary: &'a CanaryView,
    /// The image of the prod pod when it is running and ready.
    pub prod_ready_image: Option<&'a str>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    /// The version prod should run (its pod is replaced when this differs from what it runs).
    pub prod_version: String,
    /// The version a canary pod runs, if there should be one.
    pub canary_version: Option<String>,
    pub rollout: RolloutStatus,
    pub notices: Vec<Notice>,
    /// Re-evaluate after this long even if nothing else happens (time-based gates).
    pub recheck_after: Option<Duration>,
}

fn idle(version: Option<String>, message: &str) -> RolloutStatus {
    RolloutStatus {
        phase: RolloutPhase::Idle,
        version,
        previous_version: None,
        started_at: None,
        canary_ready_at: None,
        healthy_cycles: 0,
        errors: 0,
        message: Some(message.to_string()),
        ..Default::default()
    }
}

fn elapsed_since(since: Option<&String>, now: Timestamp) -> Duration {
    since
        .and_then(|s| s.parse::<Timestamp>().ok())
        .map(|t| Duration::from_secs(now.as_second().saturating_sub(t.as_second()).max(0) as u64))
        .unwrap_or_default()
}

pub fn plan(input: &RolloutInputs<'_>) -> RolloutPlan {
    let spec = input.spec;
    let desired = spec.image.clone().unwrap_or_else(|| input.default_image.to_string());
    let current = input.status.current_version.clone().unwrap_or_else(|| desired.clone());
    let mut rollout = input
        .status
        .rollout
        .clone()
        .unwrap_or_else(|| idle(Some(current.clone()), "no rollout yet"));
    let now_text = format!("{:.0}", input.now);
    let mut notices = Vec::new();
    let out = |prod_version: String,
               canary_version: Option<String>,
               rollout: RolloutStatus,
               notices: Vec<Notice>,
               recheck_after| RolloutPlan {
        prod_version,
        canary_version,
        rollout,
        notices,
        recheck_after,
    };

    if spec.rollout.strategy == RolloutStrategy::Direct {
        // Prod moves straight to the desired version; status.rollout.version records it, so
        // the change is announced once (status.currentVersion follows once prod runs it).
        let keep = rollout.phase == RolloutPhase::Idle && rollout.version.as_deref() == Some(desired.as_str());
        if keep {
            return out(desired, None, rollout, notices, None);
        }
        if rollout.phase.has_canary() {
            notices.push(Notice::normal(
                Reason::RolloutCancelled,
                "rollout strategy is Direct: the canary is removed",
            ));
        }
        let message = if desired == current {
            "prod runs the desired version"
        } else {
            notices.push(Notice::normal(
                Reason::VersionChanged,
                format!("Direct rollout of {desired} (was {current})"),
            ));
            "Direct strategy: prod is replaced with the new version"
        };
        return out(desired.clone(), None, idle(Some(desired), message), notices, None);
    }

    let start = |previous: &str, notices: &mut Vec<Notice>, what: &str| {
        notices.push(Notice::normal(
            Reason::RolloutStarted,
            format!("{what}: canary of {desired} started (prod keeps {previous})"),
        ));
        RolloutStatus {
            phase: RolloutPhase::CanaryStarting,
            version: Some(desired.clone()),
            previous_version: Some(previous.to_string()),
            started_at: Some(now_text.clone()),
            canary_ready_at: None,
            healthy_cycles: 0,
            errors: 0,
            message: Some(format!("starting the canary of {desired}")),
            ..Default::default()
        }
    };

    match rollout.phase {
        RolloutPhase::Idle
        | RolloutPhase::Promoted
        | RolloutPhase::Aborted
        | RolloutPhase::Baking
        | RolloutPhase::RollingBack
        | RolloutPhase::RolledBack => {
            if desired == current {
                return out(current, None, rollout, notices, None);
            }
            if rollout.phase == RolloutPhase::Aborted && rollout.version.as_deref() == Some(desired.as_str()) {
                // Not retried until the spec names another version.
                return out(current, None, rollout, notices, None);
            }
            let started = start(&current, &mut notices, "new version");
            out(current, Some(desired.clone()), started, notices, None)
        }
        RolloutPhase::CanaryStarting | RolloutPhase::CanaryRunning | RolloutPhase::AwaitingPromotion => {
            let version = rollout.version.clone().unwrap_or_default();
            if current == version {
                // Observed: prod already runs the canary's version (a status write was lost).
                notices.push(Notice::normal(Reason::RolloutPromoted, format!("prod runs {version}")));
                rollout.phase = RolloutPhase::Promoted;
                rollout.message = Some(format!("prod runs {version}"));
                return out(version, None, rollout, notices, None);
            }
            if desired == current {
                notices.push(Notice::normal(
                    Reason::RolloutCancelled,
                    format!("spec.image is back to {current}: canary of {version} removed"),
                ));
                return out(
                    current.clone(),
                    None,
                    idle(
                        Some(current),
                        "rollout cancelled: the spec went back to the current version",
                    ),
                    notices,
                    None,
                );
            }
            if desired != version {
                let restarted = start(&current, &mut notices, &format!("superseded {version}"));
                return out(current, Some(desired.clone()), restarted, notices, None);
            }
            let canary = &spec.rollout.canary;
            if let (Some(cycles), Some(errors)) = (input.canary.cycles, input.canary.cycle_errors) {
                rollout.healthy_cycles = cycles.saturating_sub(errors);
                rollout.errors = errors;
            }
            let abort = |rollout: &mut RolloutStatus, notices: &mut Vec<Notice>, why: String| {
                notices.push(Notice::warning(
                    Reason::RolloutAborted,
                    format!("canary of {version} failed: {why}; prod keeps {current}"),
                ));
                rollout.phase = RolloutPhase::Aborted;
                rollout.message = Some(format!("aborted: {why}"));
            };
            if let Some(trip) = &input.canary.trip {
                abort(
                    &mut rollout,
                    &mut notices,
                    format!("guard trip during the canary ({trip})"),
                );
                return out(current, None, rollout, notices, None);
            }
            if input.canary.restarts >= CANARY_MAX_RESTARTS {
                let why = format!("the canary container restarted {} times", input.canary.restarts);
                abort(&mut rollout, &mut notices, why);
                return out(current, None, rollout, notices, None);
            }
            if rollout.errors > u64::from(canary.max_errors) {
                let why = format!("{} cycle errors (maxErrors {})", rollout.errors, canary.max_errors);
                abort(&mut rollout, &mut notices, why);
                return out(current, None, rollout, notices, None);
            }
            if rollout.phase == RolloutPhase::CanaryStarting {
                if !input.canary.ready {
                    if elapsed_since(rollout.started_at.as_ref(), input.now) > CANARY_READY_TIMEOUT {
                        abort(
                            &mut rollout,
                            &mut notices,
                            format!("not ready within {} s", CANARY_READY_TIMEOUT.as_secs()),
                        );
                        return out(current, None, rollout, notices, None);
                    }
                    return out(current, Some(version), rollout, notices, Some(Duration::from_secs(5)));
                }
                notices.push(Notice::normal(
                    Reason::CanaryReady,
                    format!("canary of {version} is ready; gates are being evaluated"),
                ));
                rollout.phase = RolloutPhase::CanaryRunning;
                rollout.canary_ready_at = Some(now_text.clone());
            }
            let ran_for = elapsed_since(rollout.canary_ready_at.as_ref(), input.now);
            let min_duration = Duration::from_secs(u64::from(canary.min_duration_seconds));
            let enough_cycles = rollout.healthy_cycles >= u64::from(canary.min_healthy_cycles);
            if rollout.phase == RolloutPhase::CanaryRunning {
                if !(enough_cycles && ran_for >= min_duration) {
                    let gate_opens = rollout
                        .canary_ready_at
                        .as_ref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .and_then(|t| {
                            t.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
                                canary.min_duration_seconds,
                            )))
                            .ok()
                        })
                        .map_or_else(String::new, |t| format!(", minimum duration reached at {t:.0}"));
                    rollout.message = Some(format!(
                        "canary of {version}: {}/{} healthy cycles{gate_opens}",
                        rollout.healthy_cycles, canary.min_healthy_cycles
                    ));
                    let wait = min_duration.saturating_sub(ran_for).max(Duration::from_secs(1));
                    return out(
                        current,
                        Some(version),
                        rollout,
                        notices,
                        Some(wait.min(Duration::from_secs(30))),
                    );
                }
                notices.push(Notice::normal(
                    Reason::CanaryPassed,
                    format!(
                        "canary of {version} passed: {} healthy cycles, {} errors, {} s",
                        rollout.healthy_cycles,
                        rollout.errors,
                        ran_for.as_secs()
                    ),
                ));
                rollout.phase = RolloutPhase::AwaitingPromotion;
            }
            let approved = spec.rollout.approved_version.as_deref() == Some(version.as_str());
            if spec.rollout.promotion == Promotion::Manual && !approved {
                let message =
                    format!("canary of {version} passed; promote by setting spec.rollout.approvedVersion: {version}");
                if rollout.message.as_deref() != Some(message.as_str()) {
                    notices.push(Notice::normal(Reason::AwaitingPromotion, message.clone()));
                }
                rollout.message = Some(message);
                return out(current, Some(version), rollout, notices, None);
            }
            notices.push(Notice::normal(
                Reason::Promoting,
                format!("promoting {version}: prod {current} is stopped, then started on {version}"),
            ));
            rollout.phase = RolloutPhase::Promoting;
            rollout.message = Some(format!("replacing prod {current} with {version}"));
            out(version, None, rollout, notices, Some(Duration::from_secs(2)))
        }
        RolloutPhase::Promoting => {
            let version = rollout.version.clone().unwrap_or_else(|| current.clone());
            if input.prod_ready_image == Some(version.as_str()) {
                notices.push(Notice::normal(Reason::RolloutPromoted, format!("prod runs {version}")));
                rollout.phase = RolloutPhase::Promoted;
                rollout.message = Some(format!("prod runs {version}"));
                return out(version, None, rollout, notices, None);
            }
            out(version, None, rollout, notices, Some(Duration::from_secs(2)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradingbot_crds::Profile;

    struct World {
        spec: TradingBotSpec,
        status: TradingBotStatus,
        canary: CanaryView,
        prod_image: Option<String>,
        /// Prod's pod becomes ready on its planned version before the next step.
        prod_follows: bool,
        now: i64,
    }

    impl World {
        fn new() -> Self {
            let mut spec = TradingBotSpec::for_profile(Profile::Dev);
            spec.image = Some("bot:v1".into());
            spec.rollout.canary.min_healthy_cycles = 3;
            spec.rollout.canary.min_duration_seconds = 60;
            World {
                spec,
                status: TradingBotStatus::default(),
                canary: CanaryView::default(),
                prod_image: None,
                prod_follows: true,
                now: 1_795_219_200,
            }
        }

        fn step(&mut self) -> RolloutPlan {
            // What prod runs is observed (the ready prod pod), never taken from the plan.
            self.status.current_version = self.prod_image.clone().or(self.status.current_version.clone());
            let plan = plan(&RolloutInputs {
                spec: &self.spec,
                default_image: "bot:default",
                status: &self.status,
                canary: &self.canary,
                prod_ready_image: self.prod_image.as_deref(),
                now: Timestamp::from_second(self.now).unwrap(),
            });
            self.status.rollout = Some(plan.rollout.clone());
            if self.prod_follows {
                // By the next look, prod runs what it was told to run.
                self.prod_image = Some(plan.prod_version.clone());
            }
            plan
        }

        fn phase(&self) -> RolloutPhase {
            self.status.rollout.as_ref().unwrap().phase
        }
    }

    fn reasons(plan: &RolloutPlan) -> Vec<&'static str> {
        plan.notices.iter().map(|n| n.reason.as_str()).collect()
    }

    #[test]
    fn first_deployment_needs_no_canary() {
        let mut w = World::new();
        let plan = w.step();
        assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v1", None));
        assert_eq!(w.phase(), RolloutPhase::Idle);
    }

    #[test]
    fn auto_promotion_after_the_gates() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        let plan = w.step();
        assert_eq!(plan.canary_version.as_deref(), Some("bot:v2"));
        assert_eq!(plan.prod_version, "bot:v1");
        assert_eq!(reasons(&plan), ["RolloutStarted"]);
        w.canary.ready = true;
        w.canary.cycles = Some(1);
        w.canary.cycle_errors = Some(0);
        assert_eq!(reasons(&w.step()), ["CanaryReady"]);
        assert_eq!(w.phase(), RolloutPhase::CanaryRunning);
        w.canary.cycles = Some(5);
        w.now += 30;
        assert_eq!(
            w.step().canary_version.as_deref(),
            Some("bot:v2"),
            "min duration not reached"
        );
        w.now += 31;
        let plan = w.step();
        assert_eq!(reasons(&plan), ["CanaryPassed", "Promoting"]);
        assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v2", None));
        w.prod_image = Some("bot:v2".into());
        assert_eq!(reasons(&w.step()), ["RolloutPromoted"]);
        assert_eq!(w.phase(), RolloutPhase::Promoted);
        assert!(w.step().notices.is_empty(), "a finished rollout stays quiet");
    }

    #[test]
    fn manual_promotion_waits_for_approved_version() {
        let mut w = World::new();
        w.spec.rollout.promotion = Promotion::Manual;
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.step();
        w.canary = CanaryView {
            ready: true,
            cycles: Some(10),
            cycle_errors: Some(0),
            ..Default::default()
        };
        w.step();
        w.now += 61;
        let plan = w.step();
        assert_eq!(w.phase(), RolloutPhase::AwaitingPromotion);
        assert!(reasons(&plan).contains(&"AwaitingPromotion"));
        assert_eq!(plan.prod_version, "bot:v1");
        assert!(w.step().notices.is_empty(), "waiting does not repeat the event");
        w.spec.rollout.approved_version = Some("bot:v2".into());
        let plan = w.step();
        assert_eq!(w.phase(), RolloutPhase::Promoting);
        assert_eq!(plan.prod_version, "bot:v2");
    }

    #[test]
    fn a_failing_canary_aborts_and_is_not_retried_until_the_spec_changes() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.step();
        w.canary = CanaryView {
            ready: true,
            cycles: Some(2),
            cycle_errors: Some(0),
            ..Default::default()
        };
        w.step();
        w.canary.trip = Some("dailyLoss Halted".into());
        let plan = w.step();
        assert_eq!(reasons(&plan), ["RolloutAborted"]);
        assert!(plan.notices[0].warning);
        assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v1", None));
        assert_eq!(w.phase(), RolloutPhase::Aborted);
        w.canary = CanaryView::default();
        assert_eq!(w.step().canary_version, None, "the same version is not retried");
        w.spec.image = Some("bot:v3".into());
        assert_eq!(w.step().canary_version.as_deref(), Some("bot:v3"));
    }

    #[test]
    fn too_many_errors_abort() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.step();
        w.canary = CanaryView {
            ready: true,
            cycles: Some(5),
            cycle_errors: Some(1),
            ..Default::default()
        };
        let plan = w.step();
        assert_eq!(w.phase(), RolloutPhase::Aborted);
        assert!(plan.notices[0].note.contains("maxErrors 0"));
    }

    #[test]
    fn a_crash_looping_canary_aborts() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.step();
        w.canary = CanaryView {
            restarts: CANARY_MAX_RESTARTS,
            ..Default::default()
        };
        let plan = w.step();
        assert_eq!(w.phase(), RolloutPhase::Aborted);
        assert!(plan.notices[0].note.contains("restarted 3 times"));
    }

    #[test]
    fn reverting_the_image_cancels_and_direct_skips_the_canary() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.step();
        w.spec.image = Some("bot:v1".into());
        let plan = w.step();
        assert_eq!((reasons(&plan), plan.canary_version), (vec!["RolloutCancelled"], None));
        w.spec.rollout.strategy = RolloutStrategy::Direct;
        w.spec.image = Some("bot:v9".into());
        let plan = w.step();
        assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v9", None));
    }

    #[test]
    fn current_version_is_what_prod_is_seen_running() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.spec.rollout.strategy = RolloutStrategy::Direct;
        w.prod_follows = false;
        let plan = w.step();
        assert_eq!(plan.prod_version, "bot:v2");
        assert_eq!(reasons(&plan), ["VersionChanged"]);
        for _ in 0..3 {
            let plan = w.step();
            assert!(plan.notices.is_empty(), "announced once: {:?}", plan.notices);
            assert_eq!(
                w.status.current_version.as_deref(),
                Some("bot:v1"),
                "prod still runs v1"
            );
        }
        w.prod_image = Some("bot:v2".into());
        w.step();
        assert_eq!(w.status.current_version.as_deref(), Some("bot:v2"));
    }

    #[test]
    fn a_lost_promotion_is_recovered_from_the_prod_pod() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.step();
        assert_eq!(w.phase(), RolloutPhase::CanaryStarting);
        // The status saying so was lost, but prod already runs the canary's version.
        w.prod_image = Some("bot:v2".into());
        let plan = w.step();
        assert_eq!(w.phase(), RolloutPhase::Promoted);
        assert_eq!((plan.prod_version.as_str(), plan.canary_version), ("bot:v2", None));
    }

    #[test]
    fn a_canary_that_never_gets_ready_is_given_up() {
        let mut w = World::new();
        w.step();
        w.spec.image = Some("bot:v2".into());
        w.step();
        w.now += 601;
        w.step();
        assert_eq!(w.phase(), RolloutPhase::Aborted);
    }
}

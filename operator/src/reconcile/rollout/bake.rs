//! Prod moves (`Promoting`), is watched (`Baking`) and, when the bake fails or a human asks,
//! goes back (`RollingBack` → `RolledBack`). Every move is a pod replacement, stop then start:
//! the apply step never runs two prod pods, and the identity Lease fences the processes.

use super::analysis;
use super::{RolloutPlan, Step};
use crate::reconcile::notice::{Notice, Reason};
use std::time::Duration;
use tradingbot_crds::Instance;
use tradingbot_crds::audit::AuditKind;
use tradingbot_crds::progressive::{AnalysisPhase, RolloutOutcome, RolloutRecord};
use tradingbot_crds::status::RolloutPhase;

/// How often a moving prod is looked at.
const MOVING: Duration = Duration::from_secs(2);

/// Replace prod with the canary's version (the canary goes first).
pub fn start_promotion(mut step: Step<'_>, who: &str, why: &str) -> RolloutPlan {
    let version = step.version();
    step.note(Notice::normal(
        Reason::Promoting,
        format!(
            "promoting {version}: prod {} is stopped, then started on {version}",
            step.current
        ),
    ));
    step.rollout.phase = RolloutPhase::Promoting;
    step.rollout.pause = None;
    step.rollout.analysis = None;
    step.progressed();
    step.rollout.message = Some(format!("replacing prod {} with {version}", step.current));
    if who != step.operator() {
        step.record(
            AuditKind::ActionAccepted,
            format!("promotion of {version} (prod {})", step.current),
            why.to_string(),
            who,
        );
    }
    step.done(version, None, Some(MOVING))
}

pub fn promoting(mut step: Step<'_>) -> RolloutPlan {
    let version = step.version();
    if step.input.prod.ready_image.as_deref() == Some(version.as_str()) {
        return promoted(step);
    }
    let deadline = step.deadline();
    if step.stalled_for() > deadline {
        let previous = step
            .rollout
            .previous_version
            .clone()
            .unwrap_or_else(|| step.current.clone());
        let why = format!(
            "progress deadline: prod not ready on {version} within {} s (progressDeadlineSeconds)",
            deadline.as_secs()
        );
        let operator = step.operator();
        step.roll_back(previous.clone(), why, operator);
        return step.done(previous, None, Some(MOVING));
    }
    step.done(version, None, Some(MOVING))
}

/// Prod runs the new version: bake it, or the rollout is done.
pub fn promoted(mut step: Step<'_>) -> RolloutPlan {
    let version = step.version();
    step.rollout.pause = None;
    let Some(bake) = step.input.spec.rollout.bake.clone() else {
        return complete(step, format!("prod runs {version}"));
    };
    step.note(Notice::normal(
        Reason::Baking,
        format!(
            "prod runs {version}; watching it for {} s (a guard trip, {} restarts or a failed analysis rolls it back to {})",
            bake.duration_seconds,
            bake.max_restarts,
            step.rollout.previous_version.clone().unwrap_or_default()
        ),
    ));
    step.rollout.phase = RolloutPhase::Baking;
    step.rollout.bake_until = Some(super::plus(step.input.now, bake.duration_seconds));
    step.rollout.analysis = (bake.analysis && step.input.spec.rollout.analysis.is_some())
        .then(|| analysis::start(Instance::Prod, &step.now));
    step.progressed();
    step.rollout.message = Some(format!(
        "baking {version} until {}",
        step.rollout.bake_until.clone().unwrap_or_default()
    ));
    step.done(
        version,
        None,
        Some(Duration::from_secs(u64::from(bake.duration_seconds).min(30))),
    )
}

fn complete(mut step: Step<'_>, why: String) -> RolloutPlan {
    let version = step.version();
    step.note(Notice::normal(Reason::RolloutPromoted, why.clone()));
    step.rollout.phase = RolloutPhase::Promoted;
    step.rollout.analysis = None;
    step.rollout.bake_until = None;
    step.rollout.message = Some(why.clone());
    step.finish(RolloutOutcome::Promoted, why.clone());
    let operator = step.operator();
    step.record(AuditKind::RolloutPromoted, format!("{version} promoted"), why, operator);
    step.done(version, None, None)
}

/// Why the bake fails, if it does.
fn bake_failure(step: &mut Step<'_>) -> Option<String> {
    let bake = step.input.spec.rollout.bake.clone().unwrap_or_default();
    let started = super::parse_time(step.rollout.bake_until.as_ref())
        .map(|until| until.as_second() - i64::from(bake.duration_seconds));
    let prod = step.input.prod;
    let since_bake = |time: &str| {
        time.parse::<k8s_openapi::jiff::Timestamp>()
            .is_ok_and(|t| started.is_some_and(|s| t.as_second() >= s))
    };
    if let Some(trip) = prod.trips.iter().find(|t| since_bake(&t.time)) {
        return Some(format!(
            "guard trip of prod during the bake ({} {} at {} >= {})",
            trip.guard, trip.level, trip.value, trip.threshold
        ));
    }
    if prod.restarts >= bake.max_restarts {
        return Some(format!(
            "crash loop: prod's container restarted {} times during the bake (maxRestarts {})",
            prod.restarts, bake.max_restarts
        ));
    }
    let spec = step.input.spec.rollout.analysis.as_ref()?;
    let mut status = step.rollout.analysis.clone()?;
    analysis::advance(spec, &mut status, prod.metrics.as_ref(), None, step.input.now);
    let message = status.message.clone().unwrap_or_default();
    let failed = status.phase == AnalysisPhase::Failed;
    step.rollout.analysis = Some(status);
    failed.then(|| format!("analysis of prod failed: {message}"))
}

pub fn baking(mut step: Step<'_>) -> RolloutPlan {
    let version = step.version();
    if let Some(why) = bake_failure(&mut step) {
        let previous = step
            .rollout
            .previous_version
            .clone()
            .unwrap_or_else(|| step.current.clone());
        let operator = step.operator();
        step.roll_back(previous.clone(), why, operator);
        return step.done(previous, None, Some(MOVING));
    }
    let remaining = super::parse_time(step.rollout.bake_until.as_ref())
        .map(|until| until.as_second() - step.input.now.as_second())
        .unwrap_or(0);
    if remaining <= 0 {
        let why = format!("prod runs {version}; the bake passed");
        return complete(step, why);
    }
    let wait = Duration::from_secs(remaining as u64).min(Duration::from_secs(10));
    step.done(version, None, Some(wait))
}

pub fn rolling_back(mut step: Step<'_>) -> RolloutPlan {
    let target = step
        .rollout
        .rollback_version
        .clone()
        .unwrap_or_else(|| step.current.clone());
    if step.input.prod.ready_image.as_deref() != Some(target.as_str()) {
        return step.done(target, None, Some(MOVING));
    }
    let from = step.version();
    step.note(Notice::warning(
        Reason::RolledBack,
        format!("prod runs {target} again (rolled back from {from})"),
    ));
    step.rollout.phase = RolloutPhase::RolledBack;
    let why = step.rollout.message.replace(format!(
        "rolled back to {target}; {from} is not tried again until spec.image names another version (or a retry)"
    ));
    if !step.recorded(step.rollout.revision) {
        // An undo: a revision of its own, which put an earlier version back on prod.
        let record = RolloutRecord {
            revision: step.rollout.revision.unwrap_or_else(|| step.next_revision()),
            version: target.clone(),
            previous_version: Some(from),
            outcome: RolloutOutcome::Promoted,
            reason: why.unwrap_or_default(),
            started_at: step.rollout.started_at.clone(),
            finished_at: step.now.clone(),
        };
        step.push_record(record);
    }
    step.done(target, None, None)
}

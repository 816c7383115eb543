//! A canary runs (`CanaryStarting`, `CanaryRunning`, `AwaitingPromotion`): it fails on a guard
//! trip, a crash loop, too many errors, a failed analysis or no progress within the deadline;
//! it passes on its counts and its analysis; then it waits for approval (promotion Manual) or
//! prod is replaced. A pause holds the gates and the deadline, never the failure checks.

use super::analysis;
use super::{CANARY_MAX_RESTARTS, RolloutPlan, Step};
use crate::reconcile::notice::{Notice, Reason};
use std::time::Duration;
use tradingbot_crds::Instance;
use tradingbot_crds::audit::AuditKind;
use tradingbot_crds::progressive::{AnalysisPhase, PauseReason, RolloutOutcome, RolloutPause};
use tradingbot_crds::spec::Promotion;
use tradingbot_crds::status::RolloutPhase;

/// How often a canary being waited for is looked at.
const WAIT: Duration = Duration::from_secs(5);

pub fn plan(mut step: Step<'_>) -> RolloutPlan {
    let version = step.version();
    if step.current == version {
        // Observed: prod already runs the canary's version (a status write was lost).
        return super::bake::promoted(step);
    }
    if step.desired == step.current {
        return cancelled(step, RolloutOutcome::Cancelled);
    }
    if step.desired != version {
        return cancelled(step, RolloutOutcome::Superseded);
    }
    count_cycles(&mut step);
    if let Some(why) = failure(&step) {
        let operator = step.operator();
        step.abort(why, operator);
        return step.hold();
    }
    if step.rollout.pause.is_some() {
        return step.done_with_canary(None);
    }
    if let Some(why) = deadline_passed(&step) {
        let operator = step.operator();
        step.abort(why, operator);
        return step.hold();
    }
    match step.rollout.phase {
        RolloutPhase::CanaryStarting => starting(step),
        RolloutPhase::CanaryRunning => running(step),
        _ => awaiting(step),
    }
}

/// The spec went back to prod's version (cancelled) or on to another one (superseded).
fn cancelled(mut step: Step<'_>, outcome: RolloutOutcome) -> RolloutPlan {
    let version = step.version();
    let who = step.input.image_by.to_string();
    if outcome == RolloutOutcome::Cancelled {
        step.note(Notice::normal(
            Reason::RolloutCancelled,
            format!("spec.image is back to {}: canary of {version} removed", step.current),
        ));
        step.finish(outcome, format!("spec.image went back to {}", step.current));
        step.rollout.phase = RolloutPhase::Idle;
        step.rollout.version = Some(step.current.clone());
        step.rollout.pause = None;
        step.rollout.message = Some("rollout cancelled: the spec went back to the current version".into());
        return step.hold();
    }
    step.finish(outcome, format!("spec.image moved on to {}", step.desired));
    step.start_canary(&format!("superseded {version}"), &who);
    let canary = step.desired.clone();
    step.done_with_canary_version(canary, None)
}

fn count_cycles(step: &mut Step<'_>) {
    let canary = step.input.canary;
    if let (Some(cycles), Some(errors)) = (canary.cycles, canary.cycle_errors) {
        let healthy = cycles.saturating_sub(errors);
        if healthy > step.rollout.healthy_cycles {
            step.progressed();
        }
        step.rollout.healthy_cycles = healthy;
        step.rollout.errors = errors;
    }
}

/// Why the canary has failed, whatever else (a pause included).
fn failure(step: &Step<'_>) -> Option<String> {
    let canary = step.input.canary;
    let max_errors = step.input.spec.rollout.canary.max_errors;
    if let Some(trip) = &canary.trip {
        return Some(format!("guard trip during the canary ({trip})"));
    }
    if canary.restarts >= CANARY_MAX_RESTARTS {
        return Some(format!("the canary container restarted {} times", canary.restarts));
    }
    (step.rollout.errors > u64::from(max_errors))
        .then(|| format!("{} cycle errors (maxErrors {max_errors})", step.rollout.errors))
}

/// The deadline counts while the canary starts and runs (not while it awaits approval).
fn deadline_passed(step: &Step<'_>) -> Option<String> {
    let counting = matches!(
        step.rollout.phase,
        RolloutPhase::CanaryStarting | RolloutPhase::CanaryRunning
    );
    let deadline = step.deadline();
    (counting && step.stalled_for() > deadline).then(|| {
        let what = match step.rollout.phase {
            RolloutPhase::CanaryStarting => "the canary not ready",
            _ => "no new healthy cycle or successful measurement",
        };
        format!(
            "progress deadline: {what} within {} s (progressDeadlineSeconds)",
            deadline.as_secs()
        )
    })
}

fn starting(mut step: Step<'_>) -> RolloutPlan {
    if !step.input.canary.ready {
        return step.done_with_canary(Some(WAIT));
    }
    let version = step.version();
    step.note(Notice::normal(
        Reason::CanaryReady,
        format!("canary of {version} is ready; gates are being evaluated"),
    ));
    step.rollout.phase = RolloutPhase::CanaryRunning;
    step.rollout.canary_ready_at = Some(step.now.clone());
    step.progressed();
    if step.input.spec.rollout.analysis.is_some() {
        step.rollout.analysis = Some(analysis::start(Instance::Canary, &step.now));
    }
    running(step)
}

/// The analysis, if any: a measurement when due. `Err` when it failed (the why).
fn analyse(step: &mut Step<'_>) -> Result<Option<Duration>, String> {
    let (Some(spec), Some(mut status)) = (step.input.spec.rollout.analysis.as_ref(), step.rollout.analysis.clone())
    else {
        return Ok(None);
    };
    let before = (status.phase, status.successful);
    let subject = step.input.canary.metrics.as_ref();
    let next = analysis::advance(
        spec,
        &mut status,
        subject,
        step.input.prod.metrics.as_ref(),
        step.input.now,
    );
    if status.successful > before.1 {
        step.progressed();
    }
    let changed = status.phase != before.0;
    let message = status.message.clone().unwrap_or_default();
    step.rollout.analysis = Some(status.clone());
    match status.phase {
        AnalysisPhase::Failed => Err(format!("analysis failed: {message}")),
        AnalysisPhase::Inconclusive if changed => {
            pause_inconclusive(step, message);
            Ok(None)
        }
        AnalysisPhase::Successful if changed => {
            step.note(Notice::normal(
                Reason::AnalysisPassed,
                format!("canary analysis passed: {message}"),
            ));
            Ok(None)
        }
        _ => Ok(next),
    }
}

fn pause_inconclusive(step: &mut Step<'_>, message: String) {
    let version = step.version();
    let text = format!(
        "canary analysis of {version} inconclusive ({message}): paused for a human: promote, abort, or resume to measure again"
    );
    step.note(Notice::warning(Reason::AnalysisInconclusive, text.clone()));
    step.rollout.pause = Some(RolloutPause {
        reason: PauseReason::AnalysisInconclusive,
        message: text.clone(),
        by: None,
        since: step.now.clone(),
    });
    step.rollout.message = Some(text.clone());
    let operator = step.operator();
    step.record(
        AuditKind::RolloutPaused,
        format!("canary of {version} paused"),
        text,
        operator,
    );
}

fn running(mut step: Step<'_>) -> RolloutPlan {
    let next_measurement = match analyse(&mut step) {
        Ok(next) => next,
        Err(why) => {
            let operator = step.operator();
            step.abort(why, operator);
            return step.hold();
        }
    };
    if step.rollout.pause.is_some() {
        return step.done_with_canary(None);
    }
    let canary = &step.input.spec.rollout.canary;
    let ran_for = step.since(step.rollout.canary_ready_at.as_ref());
    let min_duration = Duration::from_secs(u64::from(canary.min_duration_seconds));
    let enough_cycles = step.rollout.healthy_cycles >= u64::from(canary.min_healthy_cycles);
    let analysed = step
        .rollout
        .analysis
        .as_ref()
        .is_none_or(|a| a.phase == AnalysisPhase::Successful);
    if !(enough_cycles && ran_for >= min_duration && analysed) {
        step.rollout.message = Some(progress_message(&step, min_duration));
        let wait = min_duration.saturating_sub(ran_for).max(Duration::from_secs(1));
        let wait = next_measurement.map_or(wait, |m| wait.min(m));
        return step.done_with_canary(Some(wait.min(Duration::from_secs(30))));
    }
    let version = step.version();
    step.note(Notice::normal(
        Reason::CanaryPassed,
        format!(
            "canary of {version} passed: {} healthy cycles, {} errors, {} s{}",
            step.rollout.healthy_cycles,
            step.rollout.errors,
            ran_for.as_secs(),
            analysis_words(&step)
        ),
    ));
    step.rollout.phase = RolloutPhase::AwaitingPromotion;
    awaiting(step)
}

fn analysis_words(step: &Step<'_>) -> String {
    step.rollout.analysis.as_ref().map_or_else(String::new, |a| {
        format!(", analysis {}/{} measurements successful", a.successful, a.measurements)
    })
}

fn progress_message(step: &Step<'_>, min_duration: Duration) -> String {
    let canary = &step.input.spec.rollout.canary;
    let gate_opens = super::parse_time(step.rollout.canary_ready_at.as_ref())
        .map(|t| super::plus(t, min_duration.as_secs() as u32))
        .map_or_else(String::new, |t| format!(", minimum duration reached at {t}"));
    let analysis = match (
        step.rollout.analysis.as_ref(),
        step.input.spec.rollout.analysis.as_ref(),
    ) {
        (Some(a), Some(spec)) => format!(
            ", analysis {}/{} measurements ({} failed, {} inconclusive)",
            a.measurements, spec.count, a.failed, a.inconclusive
        ),
        _ => String::new(),
    };
    format!(
        "canary of {}: {}/{} healthy cycles{gate_opens}{analysis}",
        step.version(),
        step.rollout.healthy_cycles,
        canary.min_healthy_cycles
    )
}

fn awaiting(mut step: Step<'_>) -> RolloutPlan {
    let version = step.version();
    let spec = &step.input.spec.rollout;
    let by_spec = spec.approved_version.as_deref() == Some(version.as_str());
    let approved = spec.promotion == Promotion::Auto || by_spec || step.rollout.approved;
    if !approved {
        let message = format!("canary of {version} passed; promote by setting spec.rollout.approvedVersion: {version}");
        if step.rollout.message.as_deref() != Some(message.as_str()) {
            step.note(Notice::normal(Reason::AwaitingPromotion, message.clone()));
        }
        step.rollout.message = Some(message);
        return step.done_with_canary(None);
    }
    let who = if by_spec && spec.promotion == Promotion::Manual {
        step.input.approved_by.to_string()
    } else {
        step.operator().to_string()
    };
    super::bake::start_promotion(step, &who, "the canary passed its gates")
}

impl Step<'_> {
    /// Prod keeps its version, the canary runs on.
    pub fn done_with_canary(self, recheck: Option<Duration>) -> RolloutPlan {
        let version = self.version();
        self.done_with_canary_version(version, recheck)
    }

    pub fn done_with_canary_version(self, canary: String, recheck: Option<Duration>) -> RolloutPlan {
        let prod = self.current.clone();
        self.done(prod, Some(canary), recheck)
    }
}

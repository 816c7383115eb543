//! Rollout actions a human asked for (annotation `trading.gpttrader.io/rollout-action`), applied
//! before the phase's own step: each is accepted or refused once, recorded in
//! `status.lastAction`, and audited with who asked and why.

use super::{ActionRequest, Step, analysis};
use crate::reconcile::notice::{Notice, Reason};
use tradingbot_crds::Instance;
use tradingbot_crds::actions::RolloutAction;
use tradingbot_crds::audit::{ActionRecord, AuditKind};
use tradingbot_crds::progressive::{AnalysisPhase, PauseReason, RolloutOutcome, RolloutPause};
use tradingbot_crds::status::{AckResult, RolloutPhase, RolloutStatus};

/// What the requester said, for messages: `by alice: incident 42`.
fn by(request: &ActionRequest) -> String {
    match request.reason.is_empty() {
        true => format!("by {}", request.by),
        false => format!("by {}: {}", request.by, request.reason),
    }
}

pub fn apply(step: &mut Step<'_>, request: &ActionRequest) {
    let result = match &request.action {
        Ok(action) => act(step, *action, request),
        Err(why) => Err(why.clone()),
    };
    let (result, message, kind) = match result {
        Ok(message) => (AckResult::Accepted, message, AuditKind::ActionAccepted),
        Err(message) => (AckResult::Refused, message, AuditKind::ActionRefused),
    };
    let notice = match result {
        AckResult::Accepted => Notice::normal(
            Reason::ActionAccepted,
            format!("{} {}: {message}", request.value, by(request)),
        ),
        AckResult::Refused => Notice::warning(
            Reason::ActionRefused,
            format!("rollout action {:?} {} refused: {message}", request.value, by(request)),
        ),
    };
    step.note(notice);
    let why = match request.reason.is_empty() {
        true => message.clone(),
        false => format!("{message} ({})", request.reason),
    };
    step.record(kind, format!("rollout action {}", request.value), why, &request.by);
    step.action = Some(ActionRecord {
        value: request.value.clone(),
        result,
        message,
        by: request.by.clone(),
        reason: request.reason.clone(),
        time: step.now.clone(),
    });
}

fn act(step: &mut Step<'_>, action: RolloutAction, request: &ActionRequest) -> Result<String, String> {
    let phase = step.rollout.phase;
    match action {
        RolloutAction::Promote => promote(step),
        RolloutAction::PromoteFull => promote_full(step),
        RolloutAction::Abort => abort(step, request),
        RolloutAction::Retry => retry(step, request),
        RolloutAction::Pause => pause(step, request),
        RolloutAction::Resume => resume(step, request),
        RolloutAction::Undo(revision) if matches!(phase, RolloutPhase::Baking) => {
            let target = target_of(step, revision)?;
            let why = format!("undo {}", by(request));
            step.roll_back(target.clone(), why, &request.by);
            Ok(format!("prod goes back to {target}"))
        }
        RolloutAction::Undo(revision) => undo(step, revision, request),
    }
}

fn not_in(phase: RolloutPhase, what: &str) -> String {
    format!("{what} (the rollout is {})", phase.as_str())
}

fn promote(step: &mut Step<'_>) -> Result<String, String> {
    let phase = step.rollout.phase;
    if !phase.has_canary() {
        return Err(not_in(phase, "no canary to promote"));
    }
    step.rollout.approved = true;
    let mut message = format!("{} approved for promotion once its gates pass", step.version());
    if let Some(pause) = step.rollout.pause.take() {
        message = format!("{message}; the pause ({:?}) ends", pause.reason);
        if let Some(analysis) = step
            .rollout
            .analysis
            .as_mut()
            .filter(|a| a.phase == AnalysisPhase::Inconclusive)
        {
            analysis.phase = AnalysisPhase::Successful;
            analysis.message = Some(format!(
                "inconclusive, accepted by promote: {}",
                analysis.message.clone().unwrap_or_default()
            ));
        }
        step.progressed();
    }
    Ok(message)
}

fn promote_full(step: &mut Step<'_>) -> Result<String, String> {
    let phase = step.rollout.phase;
    if !matches!(phase, RolloutPhase::CanaryRunning | RolloutPhase::AwaitingPromotion) {
        return Err(not_in(phase, "only a ready canary can be promoted at once"));
    }
    if !step.input.canary.ready {
        return Err("the canary is not ready: nothing proves the version runs".into());
    }
    step.rollout.phase = RolloutPhase::AwaitingPromotion;
    step.rollout.approved = true;
    step.rollout.pause = None;
    step.rollout.analysis = None;
    Ok(format!("{} promoted now, skipping its remaining gates", step.version()))
}

fn abort(step: &mut Step<'_>, request: &ActionRequest) -> Result<String, String> {
    let phase = step.rollout.phase;
    let why = format!("aborted {}", by(request));
    if phase.has_canary() {
        step.abort(why, &request.by);
        return Ok("the canary is removed; prod keeps its version".into());
    }
    if matches!(phase, RolloutPhase::Promoting | RolloutPhase::Baking) {
        let previous = step
            .rollout
            .previous_version
            .clone()
            .ok_or("no previous version to go back to")?;
        step.roll_back(previous.clone(), why, &request.by);
        return Ok(format!("prod goes back to {previous}"));
    }
    Err(not_in(phase, "nothing to abort"))
}

fn retry(step: &mut Step<'_>, request: &ActionRequest) -> Result<String, String> {
    let phase = step.rollout.phase;
    let version = step.version();
    if !matches!(phase, RolloutPhase::Aborted | RolloutPhase::RolledBack) {
        return Err(not_in(phase, "only an aborted or rolled back version can be retried"));
    }
    if version != step.desired {
        return Err(format!(
            "spec.image names {}, not the {} version {version}: that rollout starts by itself",
            step.desired,
            phase.as_str()
        ));
    }
    step.start_canary(&format!("retry {}", by(request)), &request.by);
    Ok(format!("a new canary of {version} starts"))
}

fn pause(step: &mut Step<'_>, request: &ActionRequest) -> Result<String, String> {
    let phase = step.rollout.phase;
    if !phase.has_canary() {
        return Err(not_in(phase, "only a running canary can be paused"));
    }
    if step.rollout.pause.is_some() {
        return Err("the rollout is already paused".into());
    }
    let message = format!("paused {}", by(request));
    step.rollout.pause = Some(RolloutPause {
        reason: PauseReason::Manual,
        message: message.clone(),
        by: Some(request.by.clone()),
        since: step.now.clone(),
    });
    step.rollout.message = Some(format!("canary of {}: {message}", step.version()));
    step.note(Notice::normal(
        Reason::RolloutPaused,
        format!("canary of {} {message}", step.version()),
    ));
    Ok("the canary keeps running; gates and the deadline wait".into())
}

fn resume(step: &mut Step<'_>, request: &ActionRequest) -> Result<String, String> {
    let Some(pause) = step.rollout.pause.take() else {
        return Err(not_in(step.rollout.phase, "the rollout is not paused"));
    };
    step.progressed();
    let mut message = "gates are evaluated again".to_string();
    if pause.reason == PauseReason::AnalysisInconclusive && step.rollout.analysis.is_some() {
        step.rollout.analysis = Some(analysis::start(Instance::Canary, &step.now));
        message = "the analysis starts again from its first measurement".into();
    }
    step.note(Notice::normal(
        Reason::RolloutResumed,
        format!("canary of {} resumed {}: {message}", step.version(), by(request)),
    ));
    Ok(message)
}

/// The version `undo` goes back to: a revision's, or the one before what prod runs.
fn target_of(step: &Step<'_>, revision: Option<u32>) -> Result<String, String> {
    let prod = match step.rollout.phase {
        RolloutPhase::Baking => step.version(),
        _ => step.current.clone(),
    };
    let target = match revision {
        Some(revision) => {
            let record = step
                .history
                .iter()
                .find(|r| r.revision == revision)
                .ok_or(format!("no revision {revision} in status.rolloutHistory"))?;
            if record.outcome != RolloutOutcome::Promoted {
                return Err(format!(
                    "revision {revision} ({}) was {:?}: prod never ran it",
                    record.version, record.outcome
                ));
            }
            record.version.clone()
        }
        None if step.rollout.phase == RolloutPhase::Baking => step
            .rollout
            .previous_version
            .clone()
            .ok_or("no earlier version known")?,
        None => step
            .history
            .iter()
            .rev()
            .find(|r| r.outcome == RolloutOutcome::Promoted && r.version == prod)
            .and_then(|r| r.previous_version.clone())
            .ok_or(format!("no earlier version of prod ({prod}) in status.rolloutHistory"))?,
    };
    if target == prod {
        return Err(format!("prod already runs {target}"));
    }
    Ok(target)
}

fn undo(step: &mut Step<'_>, revision: Option<u32>, request: &ActionRequest) -> Result<String, String> {
    let phase = step.rollout.phase;
    if !phase.is_finished() {
        return Err(not_in(
            phase,
            "undo waits until no canary runs and prod is not moving (abort first)",
        ));
    }
    let target = target_of(step, revision)?;
    let from = step.current.clone();
    let why = match revision {
        Some(r) => format!("undo to revision {r} ({target}) {}", by(request)),
        None => format!("undo to {target} {}", by(request)),
    };
    step.note(Notice::warning(
        Reason::RollingBack,
        format!("rolling prod back from {from} to {target}: {why}"),
    ));
    step.rollout = RolloutStatus {
        phase: RolloutPhase::RollingBack,
        version: Some(from.clone()),
        previous_version: Some(from.clone()),
        rollback_version: Some(target.clone()),
        started_at: Some(step.now.clone()),
        progress_at: Some(step.now.clone()),
        revision: Some(step.next_revision()),
        message: Some(why.clone()),
        ..Default::default()
    };
    step.record(
        AuditKind::RolledBack,
        format!("prod {from} -> {target}"),
        why,
        &request.by,
    );
    Ok(format!("prod goes back to {target}"))
}

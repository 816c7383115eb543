//! No rollout running (`Idle`, `Promoted`, `Aborted`, `RolledBack`): a canary starts when the
//! spec names another version than prod runs, unless that version was just aborted or rolled
//! back (then only a spec change or a `retry` starts it again). And the `Direct` strategy.

use super::{RolloutPlan, Step, operator};
use crate::reconcile::notice::{Notice, Reason};
use tradingbot_crds::status::{RolloutPhase, RolloutStatus};

/// The version the last rollout rejected, which is not tried again by itself.
fn rejected(step: &Step<'_>) -> Option<String> {
    matches!(step.rollout.phase, RolloutPhase::Aborted | RolloutPhase::RolledBack)
        .then(|| step.rollout.version.clone())
        .flatten()
}

pub fn plan(mut step: Step<'_>) -> RolloutPlan {
    if step.desired == step.current || rejected(&step).as_deref() == Some(step.desired.as_str()) {
        return step.hold();
    }
    let who = step.input.image_by.to_string();
    step.start_canary("new version", &who);
    let (prod, canary) = (step.current.clone(), step.desired.clone());
    step.done_with(prod, Some(canary))
}

/// `strategy: Direct`: prod moves straight to the desired version; `status.rollout.version`
/// records it, so the change is announced once (`status.currentVersion` follows once prod runs
/// it). No canary, analysis or bake.
pub fn direct(mut step: Step<'_>) -> RolloutPlan {
    let desired = step.desired.clone();
    let keep = step.rollout.phase == RolloutPhase::Idle && step.rollout.version.as_deref() == Some(desired.as_str());
    if keep {
        return step.done_with(desired, None);
    }
    if step.rollout.phase.has_canary() {
        step.note(Notice::normal(
            Reason::RolloutCancelled,
            "rollout strategy is Direct: the canary is removed",
        ));
    }
    let message = if desired == step.current {
        "prod runs the desired version"
    } else {
        let note = format!("Direct rollout of {desired} (was {})", step.current);
        step.note(Notice::normal(Reason::VersionChanged, note));
        let who = step.input.image_by.to_string();
        step.record(
            tradingbot_crds::audit::AuditKind::RolloutStarted,
            format!("prod {} -> {desired} (Direct)", step.current),
            "strategy Direct: prod is replaced with the new version".into(),
            &who,
        );
        "Direct strategy: prod is replaced with the new version"
    };
    step.rollout = RolloutStatus {
        phase: RolloutPhase::Idle,
        version: Some(desired.clone()),
        message: Some(message.into()),
        ..Default::default()
    };
    step.done_with(desired, None)
}

impl Step<'_> {
    /// Finish planning with prod on `prod` and maybe a canary; no time-based recheck.
    pub fn done_with(self, prod: String, canary: Option<String>) -> RolloutPlan {
        self.done(prod, canary, None)
    }

    /// The operator's own name, for audit entries of its decisions.
    pub fn operator(&self) -> &'static str {
        operator()
    }
}

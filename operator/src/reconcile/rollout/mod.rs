//! The canary → prod rollout as a state machine, pure. Everything it needs to resume after an
//! operator restart is in status (`status.rollout`, `status.rolloutHistory`) and the bots' own
//! metrics (counters since each pod started), so a restart never restarts a rollout.
//!
//! Phases: `Idle`/`Promoted`/`Aborted`/`RolledBack` ([`idle`]) start a canary when the spec
//! names a new version; `CanaryStarting` → `CanaryRunning` → `AwaitingPromotion` ([`canary`])
//! gate it on its counts, its analysis ([`analysis`]) and the progress deadline; `Promoting` →
//! `Baking` → `Promoted`, or `RollingBack` → `RolledBack` ([`bake`]) move prod (always stopped,
//! then started). A human's action ([`actions`]) is applied first.

mod actions;
pub mod analysis;
mod bake;
mod canary;
mod idle;
#[cfg(test)]
mod tests;
pub mod views;

use super::actors::OPERATOR;
use super::notice::{Notice, Reason};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rust_decimal::Decimal;
use std::time::Duration;
use tradingbot_crds::TradingBotSpec;
use tradingbot_crds::actions::RolloutAction;
use tradingbot_crds::audit::{ActionRecord, AuditEntry, AuditKind};
use tradingbot_crds::progressive::{CounterSnapshot, DEFAULT_REVISION_HISTORY_LIMIT, RolloutOutcome, RolloutRecord};
use tradingbot_crds::spec::RolloutStrategy;
use tradingbot_crds::status::{GuardTrip, RolloutPhase, RolloutStatus, TradingBotStatus};

/// The progress deadline when `spec.rollout.progressDeadlineSeconds` is unset.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// A canary container that restarts this often has failed.
pub const CANARY_MAX_RESTARTS: u32 = 3;

/// What a bot instance's metrics said when last scraped, for the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSample {
    pub counters: CounterSnapshot,
    /// The largest market data age over the symbols.
    pub staleness: Option<Decimal>,
    /// When it was scraped.
    pub at: Timestamp,
}

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
    pub metrics: Option<MetricsSample>,
}

/// What the operator sees of prod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProdView {
    /// The image of the prod pod when it is running and ready.
    pub ready_image: Option<String>,
    /// Restarts of prod's container.
    pub restarts: u32,
    /// Prod's latched trips.
    pub trips: Vec<GuardTrip>,
    pub metrics: Option<MetricsSample>,
}

/// A rollout action not processed yet, with who asked and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRequest {
    /// The annotation's value.
    pub value: String,
    pub action: Result<RolloutAction, String>,
    pub by: String,
    pub reason: String,
}

pub struct RolloutInputs<'a> {
    pub spec: &'a TradingBotSpec,
    pub default_image: &'a str,
    /// Status as last written, with `current_version` already the version prod is observed to run.
    pub status: &'a TradingBotStatus,
    pub canary: &'a CanaryView,
    pub prod: &'a ProdView,
    pub action: Option<&'a ActionRequest>,
    /// Who set `spec.image` and `spec.rollout.approvedVersion` (field managers).
    pub image_by: &'a str,
    pub approved_by: &'a str,
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
    /// `status.rolloutHistory` after this step (bounded).
    pub history: Vec<RolloutRecord>,
    /// Audit entries for `status.history`.
    pub audit: Vec<AuditEntry>,
    /// The outcome of the action processed this time.
    pub action: Option<ActionRecord>,
}

/// One planning step: the rollout being changed and everything said about it.
pub(super) struct Step<'a> {
    pub input: &'a RolloutInputs<'a>,
    pub desired: String,
    /// The version prod is observed to run.
    pub current: String,
    pub rollout: RolloutStatus,
    pub now: String,
    pub notices: Vec<Notice>,
    pub audit: Vec<AuditEntry>,
    pub history: Vec<RolloutRecord>,
    pub action: Option<ActionRecord>,
}

pub(super) fn parse_time(text: Option<&String>) -> Option<Timestamp> {
    text.and_then(|s| s.parse::<Timestamp>().ok())
}

/// `seconds` after `at`, as RFC 3339.
pub(super) fn plus(at: Timestamp, seconds: u32) -> String {
    let later = at
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .unwrap_or(at);
    format!("{later:.0}")
}

impl<'a> Step<'a> {
    fn new(input: &'a RolloutInputs<'a>) -> Self {
        let desired = input
            .spec
            .image
            .clone()
            .unwrap_or_else(|| input.default_image.to_string());
        let current = input.status.current_version.clone().unwrap_or_else(|| desired.clone());
        let rollout = input.status.rollout.clone().unwrap_or_else(|| RolloutStatus {
            version: Some(current.clone()),
            message: Some("no rollout yet".into()),
            ..Default::default()
        });
        Step {
            input,
            desired,
            current,
            rollout,
            now: format!("{:.0}", input.now),
            notices: Vec::new(),
            audit: Vec::new(),
            history: input.status.rollout_history.clone(),
            action: None,
        }
    }

    /// The version this rollout is about.
    pub fn version(&self) -> String {
        self.rollout.version.clone().unwrap_or_else(|| self.current.clone())
    }

    pub fn since(&self, at: Option<&String>) -> Duration {
        parse_time(at)
            .map(|t| Duration::from_secs(self.input.now.as_second().saturating_sub(t.as_second()).max(0) as u64))
            .unwrap_or_default()
    }

    pub fn deadline(&self) -> Duration {
        self.input
            .spec
            .rollout
            .progress_deadline_seconds
            .map_or(DEFAULT_PROGRESS_DEADLINE, |s| Duration::from_secs(u64::from(s)))
    }

    /// Time without progress, judged from the last progress (or the rollout's start).
    pub fn stalled_for(&self) -> Duration {
        self.since(self.rollout.progress_at.as_ref().or(self.rollout.started_at.as_ref()))
    }

    pub fn progressed(&mut self) {
        self.rollout.progress_at = Some(self.now.clone());
    }

    pub fn note(&mut self, notice: Notice) {
        self.notices.push(notice);
    }

    pub fn record(&mut self, kind: AuditKind, what: String, why: String, who: &str) {
        self.audit.push(AuditEntry {
            time: self.now.clone(),
            kind,
            what,
            why,
            who: who.to_string(),
        });
    }

    fn next_revision(&self) -> u32 {
        let latest = self.history.iter().map(|r| r.revision).max().unwrap_or(0);
        latest.max(self.rollout.revision.unwrap_or(0)) + 1
    }

    fn recorded(&self, revision: Option<u32>) -> bool {
        revision.is_some_and(|r| self.history.iter().any(|h| h.revision == r))
    }

    /// Append this rollout's outcome to the history (once per revision), bounded.
    pub fn finish(&mut self, outcome: RolloutOutcome, reason: String) {
        if self.recorded(self.rollout.revision) {
            return;
        }
        let revision = self.rollout.revision.unwrap_or_else(|| self.next_revision());
        self.rollout.revision = Some(revision);
        self.push_record(RolloutRecord {
            revision,
            version: self.version(),
            previous_version: self.rollout.previous_version.clone(),
            outcome,
            reason,
            started_at: self.rollout.started_at.clone(),
            finished_at: self.now.clone(),
        });
    }

    fn push_record(&mut self, record: RolloutRecord) {
        self.history.push(record);
        let limit = self
            .input
            .spec
            .rollout
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT) as usize;
        if self.history.len() > limit {
            let excess = self.history.len() - limit;
            self.history.drain(..excess);
        }
    }

    /// A canary of the desired version starts (prod keeps what it runs).
    pub fn start_canary(&mut self, what: &str, who: &str) {
        let desired = self.desired.clone();
        let previous = self.current.clone();
        self.note(Notice::normal(
            Reason::RolloutStarted,
            format!("{what}: canary of {desired} started (prod keeps {previous})"),
        ));
        self.rollout = RolloutStatus {
            phase: RolloutPhase::CanaryStarting,
            version: Some(desired.clone()),
            previous_version: Some(previous.clone()),
            started_at: Some(self.now.clone()),
            progress_at: Some(self.now.clone()),
            revision: Some(self.next_revision()),
            message: Some(format!("starting the canary of {desired}")),
            ..Default::default()
        };
        self.record(
            AuditKind::RolloutStarted,
            format!("canary of {desired} (prod {previous})"),
            what.to_string(),
            who,
        );
    }

    /// The canary is given up; prod keeps its version.
    pub fn abort(&mut self, why: String, who: &str) {
        let version = self.version();
        self.note(Notice::warning(
            Reason::RolloutAborted,
            format!("canary of {version} failed: {why}; prod keeps {}", self.current),
        ));
        self.rollout.phase = RolloutPhase::Aborted;
        self.rollout.pause = None;
        self.rollout.message = Some(format!("aborted: {why}"));
        self.finish(RolloutOutcome::Aborted, why.clone());
        self.record(
            AuditKind::RolloutAborted,
            format!("canary of {version} aborted"),
            why,
            who,
        );
    }

    /// Prod goes back to `to` (stopped, then started); the version it leaves is not retried.
    pub fn roll_back(&mut self, to: String, why: String, who: &str) {
        let from = self.version();
        self.note(Notice::warning(
            Reason::RollingBack,
            format!("rolling prod back from {from} to {to}: {why}"),
        ));
        self.finish(RolloutOutcome::RolledBack, why.clone());
        self.rollout.phase = RolloutPhase::RollingBack;
        self.rollout.rollback_version = Some(to.clone());
        self.rollout.analysis = None;
        self.rollout.bake_until = None;
        self.rollout.progress_at = Some(self.now.clone());
        self.rollout.message = Some(format!("rolling back to {to}: {why}"));
        self.record(AuditKind::RolledBack, format!("prod {from} -> {to}"), why, who);
    }

    fn done(
        self,
        prod_version: String,
        canary_version: Option<String>,
        recheck_after: Option<Duration>,
    ) -> RolloutPlan {
        RolloutPlan {
            prod_version,
            canary_version,
            rollout: self.rollout,
            notices: self.notices,
            recheck_after,
            history: self.history,
            audit: self.audit,
            action: self.action,
        }
    }

    /// Prod stays on what it runs, no canary.
    pub fn hold(self) -> RolloutPlan {
        let prod = self.current.clone();
        self.done(prod, None, None)
    }
}

pub fn plan(input: &RolloutInputs<'_>) -> RolloutPlan {
    let mut step = Step::new(input);
    if let Some(request) = input.action {
        actions::apply(&mut step, request);
    }
    if input.spec.rollout.strategy == RolloutStrategy::Direct {
        return idle::direct(step);
    }
    match step.rollout.phase {
        RolloutPhase::Idle | RolloutPhase::Promoted | RolloutPhase::Aborted | RolloutPhase::RolledBack => {
            idle::plan(step)
        }
        RolloutPhase::CanaryStarting | RolloutPhase::CanaryRunning | RolloutPhase::AwaitingPromotion => {
            canary::plan(step)
        }
        RolloutPhase::Promoting => bake::promoting(step),
        RolloutPhase::Baking => bake::baking(step),
        RolloutPhase::RollingBack => bake::rolling_back(step),
    }
}

/// Who the operator names for its own decisions.
pub(super) fn operator() -> &'static str {
    OPERATOR
}

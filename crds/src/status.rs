//! `TradingBot.status`: written only by the operator, read by humans, GitOps health checks
//! and the bot itself (the bot obeys `mode` and `canaryMode`).

use crate::mode::TradingMode;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TradingBotStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Effective trading mode of the prod instance: the most restrictive of `spec.halted`,
    /// `spec.reduceOnly` and latched guard trips.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<TradingMode>,

    /// Why `mode` is what it is, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_reason: Option<String>,

    /// What imposes `mode` when it is not Normal (every source of the winning restriction).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mode_sources: Vec<crate::mode::ModeSource>,

    /// Effective trading mode of the canary instance while a rollout runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_mode: Option<TradingMode>,

    /// The version (image) prod runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,

    /// The version the canary runs, while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,

    /// Latched guard trips, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trips: Vec<GuardTrip>,

    /// Number of latched trips (a printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_count: Option<u32>,

    /// The last trip acknowledgement the operator processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ack: Option<AckRecord>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The emergency brake in force (annotation `trading.gpttrader.io/brake`), with who set it
    /// and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brake: Option<crate::audit::BrakeRecord>,

    /// The last rollout action the operator processed (annotation
    /// `trading.gpttrader.io/rollout-action`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<crate::audit::ActionRecord>,

    /// Finished rollouts, newest last (`spec.rollout.revisionHistoryLimit` of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout_history: Vec<crate::progressive::RolloutRecord>,

    /// The audit trail, newest last (the latest 50): every mode change, trip, acknowledgement,
    /// brake, promotion, abort and rollback with when, what, why and who.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<crate::audit::AuditEntry>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Children are being created or the bot pod is not ready yet.
    Pending,
    /// The bot pod is running and ready.
    Running,
    /// The spec cannot be acted on (invalid combination, missing Secret, ...): see conditions.
    Degraded,
    /// `spec.paused`: the operator changes no child object (pods, config, rollouts) but keeps
    /// reporting, and guard trips still latch and restrict the bot through `mode`.
    Paused,
    /// Being deleted: the bot is halted first, then removed.
    Terminating,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Degraded => "Degraded",
            Phase::Paused => "Paused",
            Phase::Terminating => "Terminating",
        }
    }
}

/// Which instance of a bot something refers to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Instance {
    Prod,
    Canary,
}

impl Instance {
    pub fn as_str(self) -> &'static str {
        match self {
            Instance::Prod => "prod",
            Instance::Canary => "canary",
        }
    }
}

impl std::str::FromStr for Instance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prod" => Ok(Instance::Prod),
            "canary" => Ok(Instance::Canary),
            other => Err(format!("unknown instance {other:?}: expected prod or canary")),
        }
    }
}

impl std::fmt::Display for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guard level crossed and latched.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardTrip {
    /// Unique id, used to acknowledge the trip.
    pub id: String,
    /// The guard (`dailyLoss`, `drawdownPercent`, `marketDataStalenessSeconds`, ...).
    pub guard: String,
    /// The level crossed: `ReduceOnly` or `Halted`.
    pub level: TradingMode,
    /// The observed value when it tripped.
    pub value: String,
    /// The level's threshold.
    pub threshold: String,
    /// When it tripped (RFC 3339).
    pub time: String,
    /// The instance whose metrics tripped it.
    pub instance: Instance,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AckResult {
    Accepted,
    Refused,
}

/// The outcome of a trip acknowledgement (annotation `trading.gpttrader.io/ack-trip`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AckRecord {
    /// The annotation value processed (a trip id, optionally followed by `@` and any text).
    pub value: String,
    /// The guard of the acknowledged trip, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    pub result: AckResult,
    pub message: String,
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// No rollout is running; prod runs `currentVersion`.
    #[default]
    Idle,
    /// The canary instance is being started.
    CanaryStarting,
    /// The canary runs; its gates are being evaluated.
    CanaryRunning,
    /// The canary passed; waiting for `spec.rollout.approvedVersion` to name its version.
    AwaitingPromotion,
    /// Prod is being replaced by the new version (old stopped, then new started).
    Promoting,
    /// The last rollout finished: prod runs the new version.
    Promoted,
    /// The last rollout was aborted; prod kept the old version.
    Aborted,
    /// Prod runs the new version and is watched for `spec.rollout.bake.durationSeconds`.
    Baking,
    /// Prod is being put back on an earlier version (stopped, then started).
    RollingBack,
    /// Prod went back to an earlier version; the version it left is not tried again until the
    /// spec names another one (or a `retry`).
    RolledBack,
}

impl RolloutPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Idle => "Idle",
            RolloutPhase::CanaryStarting => "CanaryStarting",
            RolloutPhase::CanaryRunning => "CanaryRunning",
            RolloutPhase::AwaitingPromotion => "AwaitingPromotion",
            RolloutPhase::Promoting => "Promoting",
            RolloutPhase::Promoted => "Promoted",
            RolloutPhase::Aborted => "Aborted",
            RolloutPhase::Baking => "Baking",
            RolloutPhase::RollingBack => "RollingBack",
            RolloutPhase::RolledBack => "RolledBack",
        }
    }

    /// Phases in which a canary instance exists.
    pub fn has_canary(self) -> bool {
        matches!(
            self,
            RolloutPhase::CanaryStarting | RolloutPhase::CanaryRunning | RolloutPhase::AwaitingPromotion
        )
    }

    pub fn is_in_progress(self) -> bool {
        self.has_canary()
            || matches!(
                self,
                RolloutPhase::Promoting | RolloutPhase::Baking | RolloutPhase::RollingBack
            )
    }

    /// Phases after which nothing happens until the spec (or an action) asks for more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RolloutPhase::Idle | RolloutPhase::Promoted | RolloutPhase::Aborted | RolloutPhase::RolledBack
        )
    }

    pub const ALL: [RolloutPhase; 10] = [
        RolloutPhase::Idle,
        RolloutPhase::CanaryStarting,
        RolloutPhase::CanaryRunning,
        RolloutPhase::AwaitingPromotion,
        RolloutPhase::Promoting,
        RolloutPhase::Promoted,
        RolloutPhase::Aborted,
        RolloutPhase::Baking,
        RolloutPhase::RollingBack,
        RolloutPhase::RolledBack,
    ];
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub phase: RolloutPhase,
    /// The version being rolled out (or last rolled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version prod ran when the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// When the current rollout started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the canary instance became ready (RFC 3339); gates count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_ready_at: Option<String>,
    /// Healthy canary cycles observed so far.
    #[serde(default)]
    pub healthy_cycles: u64,
    /// Canary cycle errors observed so far.
    #[serde(default)]
    pub errors: u64,
    /// Where the rollout is and why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// This rollout's number in `status.rolloutHistory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// During `RollingBack` and after `RolledBack`: the version prod goes (went) back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_version: Option<String>,
    /// When the rollout last made progress (RFC 3339): `progressDeadlineSeconds` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_at: Option<String>,
    /// The analysis of the canary, or of prod during the bake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::progressive::AnalysisStatus>,
    /// Set while the rollout is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<crate::progressive::RolloutPause>,
    /// A `promote` action approved the canary's version (as `approvedVersion` would).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub approved: bool,
    /// During `Baking`: when the bake ends (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<String>,
}

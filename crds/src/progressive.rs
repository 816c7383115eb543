//! Progressive delivery: the canary's analysis, the bake after promotion and the rollout
//! history. The spec side (`spec.rollout.analysis`, `spec.rollout.bake`) is a small, validated
//! vocabulary over the bot's own metrics, not free-form queries; the status side is everything
//! the operator needs to resume an analysis or a bake after a restart.

use crate::decimal::NonNegativeDecimal;
use crate::status::Instance;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What an analysis measures, read from the bot's metrics (names in `bot_metrics`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema)]
pub enum AnalysisMetricName {
    /// Trading cycles that ended with an error during the interval (`perps_bot_cycle_errors_total`).
    CycleErrors,
    /// Orders refused during the interval, every reason (`perps_bot_orders_rejected_total`).
    OrderRejections,
    /// Age of the newest market data when measured, in seconds, the largest over the symbols
    /// (`perps_bot_market_data_staleness_seconds`).
    MarketDataStaleness,
    /// Trips the bot's own guards latched during the interval (`perps_bot_guard_trips_total`).
    GuardTrips,
    /// Mean duration of the cycles of the interval, in seconds (`perps_bot_cycle_duration_seconds`);
    /// an interval without a cycle is inconclusive.
    CycleDuration,
}

impl AnalysisMetricName {
    pub const ALL: [AnalysisMetricName; 5] = [
        AnalysisMetricName::CycleErrors,
        AnalysisMetricName::OrderRejections,
        AnalysisMetricName::MarketDataStaleness,
        AnalysisMetricName::GuardTrips,
        AnalysisMetricName::CycleDuration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisMetricName::CycleErrors => "CycleErrors",
            AnalysisMetricName::OrderRejections => "OrderRejections",
            AnalysisMetricName::MarketDataStaleness => "MarketDataStaleness",
            AnalysisMetricName::GuardTrips => "GuardTrips",
            AnalysisMetricName::CycleDuration => "CycleDuration",
        }
    }
}

impl std::fmt::Display for AnalysisMetricName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a measurement is compared with.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Comparison {
    /// The measured instance's own value.
    #[default]
    Absolute,
    /// The canary's value minus prod's over the same interval (prod's must be readable, else
    /// the measurement is inconclusive). Not used during the bake, where prod is measured.
    VsProd,
}

/// One metric of an analysis and its thresholds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisMetric {
    pub name: AnalysisMetricName,
    /// A measurement above this fails.
    pub max: NonNegativeDecimal,
    /// A measurement above this, but not above `max`, is inconclusive: too close to call, a human
    /// decides. Must not be above `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_above: Option<NonNegativeDecimal>,
    #[serde(default)]
    pub comparison: Comparison,
}

/// The canary's analysis: `count` measurements, one every `intervalSeconds`, each of every
/// metric. More than `failureLimit` failed measurements fail it (the rollout aborts); more than
/// `inconclusiveLimit` inconclusive ones pause the rollout for a human (promote, abort or resume).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    #[serde(default = "default_interval")]
    #[schemars(range(min = 5, max = 3600))]
    pub interval_seconds: u32,
    #[serde(default = "default_count")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: u32,
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub failure_limit: u32,
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub inconclusive_limit: u32,
    #[schemars(length(min = 1, max = 10))]
    pub metrics: Vec<AnalysisMetric>,
}

fn default_interval() -> u32 {
    30
}
fn default_count() -> u32 {
    5
}

/// Watching prod after a promotion: a guard trip of prod, a crash loop or (with `analysis`) a
/// failed analysis of prod within `durationSeconds` rolls prod back to the previous version
/// (stopped, then started: never two prod instances).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BakeSpec {
    #[serde(default = "default_bake")]
    #[schemars(range(min = 10, max = 604800))]
    pub duration_seconds: u32,
    /// Restarts of prod's container during the bake that count as a crash loop.
    #[serde(default = "default_bake_restarts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_restarts: u32,
    /// Run `spec.rollout.analysis` (its `Absolute` metrics) on prod during the bake.
    #[serde(default = "default_bake_analysis")]
    pub analysis: bool,
}

fn default_bake() -> u32 {
    300
}
fn default_bake_restarts() -> u32 {
    2
}
fn default_bake_analysis() -> bool {
    true
}

impl Default for BakeSpec {
    fn default() -> Self {
        Self {
            duration_seconds: default_bake(),
            max_restarts: default_bake_restarts(),
            analysis: default_bake_analysis(),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AnalysisPhase {
    /// Measurements are being taken.
    Running,
    /// `count` measurements within the limits.
    Successful,
    /// More than `failureLimit` measurements failed.
    Failed,
    /// More than `inconclusiveLimit` measurements were inconclusive: a human decides.
    Inconclusive,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MeasurementOutcome {
    Successful,
    Failed,
    Inconclusive,
}

/// The latest measurement of one metric.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricMeasurement {
    pub name: AnalysisMetricName,
    /// The value compared with the thresholds (absent when it could not be measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub outcome: MeasurementOutcome,
    /// Why, in words.
    pub message: String,
}

/// Counters of one instance when last measured: the next interval is measured from them.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterSnapshot {
    #[serde(default)]
    pub cycle_errors: u64,
    #[serde(default)]
    pub orders_rejected: u64,
    #[serde(default)]
    pub guard_trips: u64,
    /// Cycles timed by the cycle duration histogram.
    #[serde(default)]
    pub cycles_timed: u64,
    /// Their total duration, in milliseconds.
    #[serde(default)]
    pub cycle_millis: u64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisBaseline {
    /// The measured instance's counters.
    pub subject: CounterSnapshot,
    /// Prod's, for `VsProd` comparisons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prod: Option<CounterSnapshot>,
}

/// An analysis in progress or finished (`status.rollout.analysis`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    pub phase: AnalysisPhase,
    /// The instance measured: the canary, or prod during the bake.
    pub subject: Instance,
    #[serde(default)]
    pub measurements: u32,
    #[serde(default)]
    pub successful: u32,
    #[serde(default)]
    pub failed: u32,
    #[serde(default)]
    pub inconclusive: u32,
    /// When measuring started (RFC 3339); the first measurement is one interval later.
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_measured_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<AnalysisBaseline>,
    /// The latest measurement of each metric.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last: Vec<MetricMeasurement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PauseReason {
    /// A human paused it (rollout action `pause`).
    Manual,
    /// The analysis was inconclusive.
    AnalysisInconclusive,
}

/// A paused rollout: the canary keeps running, gates and the progress deadline wait.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPause {
    pub reason: PauseReason,
    pub message: String,
    /// Who paused it (for `Manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub since: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutOutcome {
    /// Prod runs the version (and passed its bake, if any).
    Promoted,
    /// The canary failed or was aborted; prod kept its version.
    Aborted,
    /// Prod went back to an earlier version (failed bake, abort after promotion, or undo).
    RolledBack,
    /// The spec went back to the current version before the canary finished.
    Cancelled,
    /// The spec named yet another version before the canary finished.
    Superseded,
}

impl RolloutOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutOutcome::Promoted => "Promoted",
            RolloutOutcome::Aborted => "Aborted",
            RolloutOutcome::RolledBack => "RolledBack",
            RolloutOutcome::Cancelled => "Cancelled",
            RolloutOutcome::Superseded => "Superseded",
        }
    }
}

/// One finished rollout (`status.rolloutHistory`, newest last).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// Numbered from 1, one per rollout of this TradingBot (an undo is a rollout too).
    pub revision: u32,
    /// The version rolled out (for an undo: the version prod went back to).
    pub version: String,
    /// What prod ran before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    pub outcome: RolloutOutcome,
    /// Why, in words (who, for a human's action).
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub finished_at: String,
}

/// Default number of finished rollouts kept in `status.rolloutHistory`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: u32 = 10;

//! The audit trail in status: every decision about a bot's trading and rollouts, with when,
//! what, why and who, kept after Events expire (`status.history`, bounded), plus the records of
//! the brake and the last rollout action as the operator accepted them.

use crate::mode::TradingMode;
use crate::status::AckResult;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Entries kept in `status.history` (the oldest go first).
pub const HISTORY_LIMIT: usize = 50;

/// What an audit entry records.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AuditKind {
    /// The effective mode changed (`what`: `old -> new`).
    ModeChanged,
    /// An emergency brake was set or changed (annotation `trading.gpttrader.io/brake`).
    BrakeSet,
    /// The emergency brake was removed.
    BrakeReleased,
    /// A guard level was crossed and latched.
    TripLatched,
    /// A trip was released automatically (`resume: Auto`).
    TripReleased,
    /// A trip acknowledgement was accepted.
    TripAcknowledged,
    /// A trip acknowledgement was refused.
    AckRefused,
    /// A canary of a new version started.
    RolloutStarted,
    /// Prod runs the new version.
    RolloutPromoted,
    /// The canary was stopped; prod kept its version.
    RolloutAborted,
    /// Prod went back to an earlier version.
    RolledBack,
    /// A rollout was paused (by a human, or by an inconclusive analysis).
    RolloutPaused,
    /// A paused rollout goes on.
    RolloutResumed,
    /// A rollout action was accepted (promote, retry, undo, ...).
    ActionAccepted,
    /// A rollout action was refused (wrong state): nothing changed.
    ActionRefused,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::ModeChanged => "ModeChanged",
            AuditKind::BrakeSet => "BrakeSet",
            AuditKind::BrakeReleased => "BrakeReleased",
            AuditKind::TripLatched => "TripLatched",
            AuditKind::TripReleased => "TripReleased",
            AuditKind::TripAcknowledged => "TripAcknowledged",
            AuditKind::AckRefused => "AckRefused",
            AuditKind::RolloutStarted => "RolloutStarted",
            AuditKind::RolloutPromoted => "RolloutPromoted",
            AuditKind::RolloutAborted => "RolloutAborted",
            AuditKind::RolledBack => "RolledBack",
            AuditKind::RolloutPaused => "RolloutPaused",
            AuditKind::RolloutResumed => "RolloutResumed",
            AuditKind::ActionAccepted => "ActionAccepted",
            AuditKind::ActionRefused => "ActionRefused",
        }
    }
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision, as `status.history` keeps it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When the operator made or observed it (RFC 3339).
    pub time: String,
    pub kind: AuditKind,
    /// What happened, e.g. `Normal -> Halted` or `perps-bot:v2 promoted`.
    pub what: String,
    /// Why: the reason given, or the rule that decided.
    pub why: String,
    /// Who: the requesting user (recorded by the plugin `kubectl-tradingbot`), else the field manager of
    /// the change (`kubectl-patch`, `argocd-controller`, ...), or `tradingbot-operator` for its
    /// own decisions.
    pub who: String,
}

/// Append `entries` to `history`, keeping the newest [`HISTORY_LIMIT`].
pub fn append(history: &mut Vec<AuditEntry>, entries: impl IntoIterator<Item = AuditEntry>) {
    history.extend(entries);
    if history.len() > HISTORY_LIMIT {
        let excess = history.len() - HISTORY_LIMIT;
        history.drain(..excess);
    }
}

/// The emergency brake in force, as the operator accepted it (`status.brake`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BrakeRecord {
    pub mode: TradingMode,
    /// The annotation's value.
    pub value: String,
    pub by: String,
    pub reason: String,
    /// When the operator first saw it (RFC 3339).
    pub since: String,
}

/// The outcome of the last rollout action (annotation `trading.gpttrader.io/rollout-action`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// The annotation value processed.
    pub value: String,
    pub result: AckResult,
    pub message: String,
    pub by: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub time: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            time: format!("t{i}"),
            kind: AuditKind::ModeChanged,
            what: String::new(),
            why: String::new(),
            who: String::new(),
        }
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut history: Vec<AuditEntry> = (0..HISTORY_LIMIT - 1).map(entry).collect();
        append(&mut history, [entry(1000), entry(1001), entry(1002)]);
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history.last().unwrap().time, "t1002");
        assert_eq!(history[0].time, "t2");
    }
}

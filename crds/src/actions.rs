//! Requests people make by annotating a TradingBot (never by editing its spec, which Git owns):
//! the emergency brake, rollout actions and the audit note that says who asked and why. Pure
//! parsing, shared by the operator (which acts and records), the bot (which obeys the brake on
//! its own) and `kubectl tradingbot` (which writes them).

use crate::TradingMode;
use crate::names;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The emergency brake as read from `trading.gpttrader.io/brake`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brake {
    /// At least ReduceOnly; an unreadable value halts.
    pub mode: TradingMode,
    /// The value could be read (`Halted` or `ReduceOnly`); false: halted for safety.
    pub readable: bool,
}

/// Read a brake value: `Halted` / `halt` / `ReduceOnly` / `reduce-only` (any case). Anything
/// else (including `Normal`: a brake is removed, never set to Normal) halts, so a typo in an
/// incident never leaves a bot trading.
pub fn parse_brake(value: &str) -> Brake {
    let word: String = value
        .trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    match word.as_str() {
        "halted" | "halt" => Brake {
            mode: TradingMode::Halted,
            readable: true,
        },
        "reduceonly" => Brake {
            mode: TradingMode::ReduceOnly,
            readable: true,
        },
        _ => Brake {
            mode: TradingMode::Halted,
            readable: false,
        },
    }
}

/// The brake a TradingBot's annotations carry, if any.
pub fn brake_of(annotations: &BTreeMap<String, String>) -> Option<Brake> {
    annotations.get(names::ANNOTATION_BRAKE).map(|v| parse_brake(v))
}

/// A rollout action (`trading.gpttrader.io/rollout-action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    /// Let the rollout go on: approves the canary's version (promotion Manual), ends a pause,
    /// accepts an inconclusive analysis. Never skips a gate still being evaluated.
    Promote,
    /// Promote now: skip every remaining gate (cycles, duration, analysis, approval) of a ready
    /// canary.
    PromoteFull,
    /// Stop the canary (prod keeps its version); during promotion or the bake, roll prod back.
    Abort,
    /// Start the aborted (or rolled back) version again, without changing `spec.image`.
    Retry,
    /// Hold the canary where it is (it keeps running; gates and the deadline wait).
    Pause,
    /// End a pause (an inconclusive analysis is run again from the start).
    Resume,
    /// Roll prod back to the version before the current one, or to a revision of
    /// `status.rolloutHistory`.
    Undo(Option<u32>),
}

impl RolloutAction {
    /// The word as written in the annotation (without a revision).
    pub fn word(self) -> &'static str {
        match self {
            RolloutAction::Promote => "promote",
            RolloutAction::PromoteFull => "promote-full",
            RolloutAction::Abort => "abort",
            RolloutAction::Retry => "retry",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Undo(_) => "undo",
        }
    }

    /// The annotation value for this action (`undo:3`), before any `@` suffix.
    pub fn value(self) -> String {
        match self {
            RolloutAction::Undo(Some(revision)) => format!("undo:{revision}"),
            other => other.word().to_string(),
        }
    }
}

impl std::fmt::Display for RolloutAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.value())
    }
}

/// The part of an action value before `@` (the rest only makes the value new).
pub fn request_part(value: &str) -> &str {
    value.split('@').next().unwrap_or_default().trim()
}

/// Read a rollout action value: `<action>[:<revision>][@<anything>]`.
pub fn parse_rollout_action(value: &str) -> Result<RolloutAction, String> {
    let request = request_part(value);
    let (word, revision) = match request.split_once(':') {
        Some((word, revision)) => (word.trim(), Some(revision.trim())),
        None => (request, None),
    };
    let action = match word.to_ascii_lowercase().as_str() {
        "promote" => RolloutAction::Promote,
        "promote-full" | "promotefull" => RolloutAction::PromoteFull,
        "abort" => RolloutAction::Abort,
        "retry" => RolloutAction::Retry,
        "pause" => RolloutAction::Pause,
        "resume" => RolloutAction::Resume,
        "undo" => {
            let revision = revision
                .map(|r| {
                    r.parse::<u32>().map_err(|_| {
                        format!("undo:{r}: the revision must be a whole number from status.rolloutHistory")
                    })
                })
                .transpose()?;
            return Ok(RolloutAction::Undo(revision));
        }
        other => {
            return Err(format!(
                "unknown rollout action {other:?}: expected promote, promote-full, abort, retry, pause, resume or undo[:<revision>]"
            ));
        }
    };
    match revision {
        Some(_) => Err(format!("{word} takes no revision (only undo does)")),
        None => Ok(action),
    }
}

/// Who asked for an action and why, as `kubectl tradingbot` records it next to the action
/// (`trading.gpttrader.io/audit.<action>`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuditNote {
    /// The action annotation's value this note belongs to (empty: the annotation was removed).
    #[serde(default)]
    pub value: String,
    /// The requesting user.
    #[serde(default)]
    pub by: String,
    /// Why, in the requester's words.
    #[serde(default)]
    pub reason: String,
    /// When it was asked (RFC 3339).
    #[serde(default)]
    pub at: String,
}

/// Longest `by` and `reason` kept from a note (annotations are user input).
pub const MAX_NOTE_TEXT: usize = 300;

fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_NOTE_TEXT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// The audit note of `action_annotation`, when it belongs to `value` (the action's current
/// value, or "" for a removal). A note for another value (older, or of a later request the
/// operator has not seen yet) says nothing about this one.
pub fn note_for(annotations: &BTreeMap<String, String>, action_annotation: &str, value: &str) -> Option<AuditNote> {
    let raw = annotations.get(&names::audit_annotation(action_annotation))?;
    let note: AuditNote = serde_json::from_str(raw).ok()?;
    (note.value.trim() == value.trim()).then(|| AuditNote {
        value: note.value,
        by: clip(&note.by),
        reason: clip(&note.reason),
        at: note.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brakes_read_both_spellings_and_fail_closed() {
        for (value, mode, readable) in [
            ("Halted", TradingMode::Halted, true),
            ("halt", TradingMode::Halted, true),
            ("ReduceOnly", TradingMode::ReduceOnly, true),
            (" reduce-only ", TradingMode::ReduceOnly, true),
            ("REDUCE_ONLY", TradingMode::ReduceOnly, true),
            ("Normal", TradingMode::Halted, false),
            ("halted please", TradingMode::Halted, false),
            ("", TradingMode::Halted, false),
        ] {
            assert_eq!(parse_brake(value), Brake { mode, readable }, "{value:?}");
        }
    }

    #[test]
    fn rollout_actions_parse_with_revisions_and_suffixes() {
        assert_eq!(parse_rollout_action("promote"), Ok(RolloutAction::Promote));
        assert_eq!(parse_rollout_action("promote-full@2"), Ok(RolloutAction::PromoteFull));
        assert_eq!(parse_rollout_action("undo@x"), Ok(RolloutAction::Undo(None)));
        assert_eq!(parse_rollout_action("undo:3@alice"), Ok(RolloutAction::Undo(Some(3))));
        assert_eq!(parse_rollout_action("Abort"), Ok(RolloutAction::Abort));
        assert!(parse_rollout_action("undo:three").unwrap_err().contains("whole number"));
        assert!(parse_rollout_action("abort:2").unwrap_err().contains("only undo"));
        assert!(
            parse_rollout_action("rollback")
                .unwrap_err()
                .contains("unknown rollout action")
        );
        for action in [
            RolloutAction::Promote,
            RolloutAction::PromoteFull,
            RolloutAction::Abort,
            RolloutAction::Retry,
            RolloutAction::Pause,
            RolloutAction::Resume,
            RolloutAction::Undo(None),
            RolloutAction::Undo(Some(7)),
        ] {
            assert_eq!(parse_rollout_action(&action.value()), Ok(action));
        }
    }

    #[test]
    fn a_note_speaks_only_for_its_own_value() {
        let note = AuditNote {
            value: "Halted".into(),
            by: "alice".into(),
            reason: "x".repeat(400),
            at: "2026-11-21T10:00:00Z".into(),
        };
        let annotations = BTreeMap::from([(
            names::audit_annotation(names::ANNOTATION_BRAKE),
            serde_json::to_string(&note).unwrap(),
        )]);
        let found = note_for(&annotations, names::ANNOTATION_BRAKE, "Halted").unwrap();
        assert_eq!(found.by, "alice");
        assert_eq!(found.reason.chars().count(), MAX_NOTE_TEXT + 1, "clipped");
        assert_eq!(note_for(&annotations, names::ANNOTATION_BRAKE, "ReduceOnly"), None);
        let garbage = BTreeMap::from([(names::audit_annotation(names::ANNOTATION_BRAKE), "{".to_string())]);
        assert_eq!(note_for(&garbage, names::ANNOTATION_BRAKE, "Halted"), None);
        assert_eq!(
            names::audit_annotation(names::ANNOTATION_ROLLOUT_ACTION),
            "trading.gpttrader.io/audit.rollout-action"
        );
    }
}

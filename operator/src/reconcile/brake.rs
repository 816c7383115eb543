//! The emergency brake (pure): annotation `trading.gpttrader.io/brake`, which Git never carries,
//! so neither a GitOps sync nor the operator ever removes it. It becomes `status.brake` (with
//! who set it and why, from the audit note or the field manager) and a [`ModeSource::Brake`]
//! input to the effective mode of both instances.

use super::actors::{Actors, Requester};
use super::notice::{Notice, Reason};
use super::trading::{EffectiveMode, TradingOutcome};
use tradingbot_crds::TradingMode;
use tradingbot_crds::actions::parse_brake;
use tradingbot_crds::audit::{AuditEntry, AuditKind, BrakeRecord};
use tradingbot_crds::mode::ModeSource;
use tradingbot_crds::names;

/// The brake after this reconcile, and what to tell about a change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BrakeOutcome {
    pub record: Option<BrakeRecord>,
    pub notices: Vec<Notice>,
    pub audit: Vec<AuditEntry>,
}

/// The brake `value` (the annotation's, if present) against what status recorded.
pub fn decide(old: Option<&BrakeRecord>, value: Option<&str>, actors: &Actors, now: &str) -> BrakeOutcome {
    match (old, value) {
        (None, None) => BrakeOutcome::default(),
        (Some(old), Some(value)) if old.value == value => BrakeOutcome {
            record: Some(old.clone()),
            ..Default::default()
        },
        (old, Some(value)) => set(old, value, actors, now),
        (Some(old), None) => release(old, actors, now),
    }
}

fn set(old: Option<&BrakeRecord>, value: &str, actors: &Actors, now: &str) -> BrakeOutcome {
    let brake = parse_brake(value);
    let requester = actors.requester(names::ANNOTATION_BRAKE, value);
    let reason = match (brake.readable, requester.reason.is_empty()) {
        (false, _) => format!("unreadable brake value {value:?} (expected Halted or ReduceOnly): halted for safety"),
        (true, true) => "no reason given".to_string(),
        (true, false) => requester.reason.clone(),
    };
    let record = BrakeRecord {
        mode: brake.mode,
        value: value.to_string(),
        by: requester.by.clone(),
        reason,
        since: now.to_string(),
    };
    let what = match old {
        Some(old) => format!("emergency brake {} -> {}", old.mode, record.mode),
        None => format!("emergency brake {}", record.mode),
    };
    BrakeOutcome {
        notices: vec![Notice::warning(
            Reason::BrakeSet,
            format!("{what} set by {}: {}", record.by, record.reason),
        )],
        audit: vec![AuditEntry {
            time: now.to_string(),
            kind: AuditKind::BrakeSet,
            what,
            why: record.reason.clone(),
            who: record.by.clone(),
        }],
        record: Some(record),
    }
}

fn release(old: &BrakeRecord, actors: &Actors, now: &str) -> BrakeOutcome {
    let Requester { by, reason } = actors.requester(names::ANNOTATION_BRAKE, "");
    let why = if reason.is_empty() {
        "no reason given".to_string()
    } else {
        reason
    };
    BrakeOutcome {
        record: None,
        notices: vec![Notice::normal(
            Reason::BrakeReleased,
            format!(
                "emergency brake {} (set by {}) released by {by}: {why}",
                old.mode, old.by
            ),
        )],
        audit: vec![AuditEntry {
            time: now.to_string(),
            kind: AuditKind::BrakeReleased,
            what: format!("emergency brake {} released", old.mode),
            why,
            who: by,
        }],
    }
}

/// The brake the TradingBot carries, decided against status and applied to `trading` (its Events
/// join the trading ones: they are published with the mode, before any child is touched).
pub fn apply(
    bot: &tradingbot_crds::TradingBot,
    old: &tradingbot_crds::TradingBotStatus,
    actors: &Actors,
    now: &str,
    trading: &mut TradingOutcome,
) -> BrakeOutcome {
    let value = bot
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_BRAKE))
        .map(String::as_str);
    let outcome = decide(old.brake.as_ref(), value, actors, now);
    restrict(trading, outcome.record.as_ref());
    trading.notices.extend(outcome.notices.iter().cloned());
    outcome
}

/// The words `status.modeReason` uses for a brake.
pub fn reason_of(record: &BrakeRecord) -> String {
    format!("emergency brake {} by {}: {}", record.mode, record.by, record.reason)
}

/// Restrict `mode` by the brake: the most restrictive wins, and a brake as strict as the mode
/// is named among its sources.
pub fn restrict_mode(mode: &mut EffectiveMode, record: &BrakeRecord) {
    if record.mode > mode.mode {
        *mode = EffectiveMode {
            mode: record.mode,
            reason: reason_of(record),
            sources: vec![ModeSource::Brake],
        };
    } else if record.mode == mode.mode && record.mode != TradingMode::Normal {
        mode.sources.push(ModeSource::Brake);
        mode.reason = format!("{}; {}", mode.reason, reason_of(record));
    }
}

/// Both instances obey the brake (a canary with credentials of its own trades real money).
pub fn restrict(outcome: &mut TradingOutcome, record: Option<&BrakeRecord>) {
    let Some(record) = record else { return };
    restrict_mode(&mut outcome.mode, record);
    if let Some(canary) = outcome.canary_mode.as_mut() {
        *canary = (*canary).max(record.mode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;
    use tradingbot_crds::{Profile, TradingBot, TradingBotSpec};

    fn actors(note: Option<serde_json::Value>) -> Actors {
        let mut bot = TradingBot::new("btc", TradingBotSpec::for_profile(Profile::Dev));
        let mut annotations = BTreeMap::new();
        if let Some(note) = note {
            annotations.insert(names::audit_annotation(names::ANNOTATION_BRAKE), note.to_string());
        }
        bot.metadata.annotations = Some(annotations);
        Actors::of(&bot)
    }

    fn normal() -> EffectiveMode {
        EffectiveMode {
            mode: TradingMode::Normal,
            reason: "no restriction in force".into(),
            sources: vec![],
        }
    }

    #[test]
    fn a_brake_is_recorded_once_with_its_requester_and_released_with_its_releaser() {
        let who = actors(Some(
            json!({"value": "Halted", "by": "alice", "reason": "incident 42", "at": "t"}),
        ));
        let set = decide(None, Some("Halted"), &who, "t1");
        let record = set.record.clone().unwrap();
        assert_eq!(
            (record.mode, record.by.as_str(), record.reason.as_str()),
            (TradingMode::Halted, "alice", "incident 42")
        );
        assert_eq!(set.notices[0].reason, Reason::BrakeSet);
        assert_eq!(set.audit[0].kind, AuditKind::BrakeSet);
        // Seen again: nothing new, the first sighting stays.
        let again = decide(Some(&record), Some("Halted"), &actors(None), "t2");
        assert_eq!(again.record.as_ref().unwrap().since, "t1");
        assert!(again.notices.is_empty() && again.audit.is_empty());
        let bob = actors(Some(json!({"value": "", "by": "bob", "reason": "fixed", "at": "t"})));
        let released = decide(Some(&record), None, &bob, "t3");
        assert_eq!(released.record, None);
        assert_eq!(released.audit[0].who, "bob");
        assert_eq!(released.notices[0].reason, Reason::BrakeReleased);
    }

    #[test]
    fn an_unreadable_brake_halts() {
        let out = decide(None, Some("Normal"), &actors(None), "t");
        let record = out.record.unwrap();
        assert_eq!(record.mode, TradingMode::Halted);
        assert!(record.reason.contains("halted for safety"), "{}", record.reason);
        assert_eq!(record.by, "unknown");
    }

    #[test]
    fn the_brake_only_ever_restricts() {
        let record = |mode| BrakeRecord {
            mode,
            value: mode.to_string(),
            by: "alice".into(),
            reason: "r".into(),
            since: "t".into(),
        };
        let mut mode = normal();
        restrict_mode(&mut mode, &record(TradingMode::ReduceOnly));
        assert_eq!(
            (mode.mode, mode.sources.clone()),
            (TradingMode::ReduceOnly, vec![ModeSource::Brake])
        );
        assert!(mode.reason.contains("emergency brake ReduceOnly by alice"));
        let mut halted = EffectiveMode {
            mode: TradingMode::Halted,
            reason: "spec.halted".into(),
            sources: vec![ModeSource::SpecHalted],
        };
        restrict_mode(&mut halted, &record(TradingMode::ReduceOnly));
        assert_eq!(
            halted.sources,
            [ModeSource::SpecHalted],
            "a looser brake changes nothing"
        );
        restrict_mode(&mut halted, &record(TradingMode::Halted));
        assert_eq!(halted.sources, [ModeSource::SpecHalted, ModeSource::Brake]);
    }
}

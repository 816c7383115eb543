//! The audit trail of trading decisions (pure): trips, releases, acknowledgements, the brake and
//! every change of the effective mode become `status.history` entries naming who and why. The
//! rollout's entries come from the rollout plan; both are logged as JSON lines too.

use super::actors::{Actors, OPERATOR, Requester};
use super::brake::BrakeOutcome;
use super::notice::Reason;
use super::trading::TradingOutcome;
use tradingbot_crds::audit::{AuditEntry, AuditKind};
use tradingbot_crds::mode::ModeSource;
use tradingbot_crds::names;
use tradingbot_crds::status::{AckResult, TradingBotStatus};

fn entry(now: &str, kind: AuditKind, what: String, why: String, who: String) -> AuditEntry {
    AuditEntry {
        time: now.to_string(),
        kind,
        what,
        why,
        who,
    }
}

/// Who imposes (or, when the mode loosened, lifted) the mode through `source`.
fn who_of(source: ModeSource, actors: &Actors, brake: &BrakeOutcome, ack: Option<&Requester>) -> String {
    match source {
        ModeSource::SpecHalted => actors.spec_field(&["spec", "halted"]),
        ModeSource::SpecReduceOnly => actors.spec_field(&["spec", "reduceOnly"]),
        ModeSource::Brake => brake
            .audit
            .first()
            .map(|e| e.who.clone())
            .or_else(|| brake.record.as_ref().map(|r| r.by.clone()))
            .unwrap_or_else(|| "unknown".into()),
        ModeSource::GuardTrip => match ack {
            Some(ack) => ack.by.clone(),
            None => format!("{OPERATOR} (guards)"),
        },
        ModeSource::Deleting => "the TradingBot's deletion".into(),
        #[allow(unreachable_patterns)] // sources added later (an account's, ...)
        _ => format!("{source} ({OPERATOR})"),
    }
}

fn unique(mut names: Vec<String>) -> String {
    names.dedup();
    names.join(", ")
}

/// The mode change, when there is one: who imposes the new mode, or (loosening) who removed what
/// imposed the old one.
fn mode_entry(
    old: &TradingBotStatus,
    outcome: &TradingOutcome,
    actors: &Actors,
    brake: &BrakeOutcome,
    ack: Option<&Requester>,
    now: &str,
) -> Option<AuditEntry> {
    let mode = outcome.mode.mode;
    if old.mode == Some(mode) || (old.mode.is_none() && mode == tradingbot_crds::TradingMode::Normal) {
        return None;
    }
    let loosened = old.mode.is_some_and(|o| o > mode);
    let sources: Vec<ModeSource> = if loosened {
        old.mode_sources
            .iter()
            .filter(|s| !outcome.mode.sources.contains(s))
            .copied()
            .collect()
    } else {
        outcome.mode.sources.clone()
    };
    let who = unique(sources.iter().map(|s| who_of(*s, actors, brake, ack)).collect());
    let from = old.mode.map_or("unset".into(), |m| m.to_string());
    Some(entry(
        now,
        AuditKind::ModeChanged,
        format!("{from} -> {mode}"),
        outcome.mode.reason.clone(),
        if who.is_empty() { OPERATOR.into() } else { who },
    ))
}

/// Who sent the acknowledgement processed this time.
pub fn ack_requester(actors: &Actors, outcome: &TradingOutcome, old: &TradingBotStatus) -> Option<Requester> {
    let ack = outcome.last_ack.as_ref()?;
    (old.last_ack.as_ref() != Some(ack)).then(|| actors.requester(names::ANNOTATION_ACK_TRIP, &ack.value))
}

/// Every audit entry for what the trading decision changed.
pub fn trading_entries(
    old: &TradingBotStatus,
    outcome: &TradingOutcome,
    actors: &Actors,
    brake: &BrakeOutcome,
    now: &str,
) -> Vec<AuditEntry> {
    let ack = ack_requester(actors, outcome, old);
    let mut entries: Vec<AuditEntry> = outcome
        .tripped
        .iter()
        .map(|t| {
            entry(
                now,
                AuditKind::TripLatched,
                format!("trip {}: {} {} ({})", t.id, t.guard, t.level, t.instance),
                format!("{} >= {}", t.value, t.threshold),
                format!("{OPERATOR} (guards)"),
            )
        })
        .collect();
    entries.extend(
        outcome
            .notices
            .iter()
            .filter(|n| n.reason == Reason::TripReleased)
            .map(|n| {
                entry(
                    now,
                    AuditKind::TripReleased,
                    n.note.clone(),
                    "resume: Auto".into(),
                    OPERATOR.into(),
                )
            }),
    );
    if let (Some(record), Some(ack)) = (outcome.last_ack.as_ref(), ack.as_ref()) {
        let kind = match record.result {
            AckResult::Accepted => AuditKind::TripAcknowledged,
            AckResult::Refused => AuditKind::AckRefused,
        };
        let why = match ack.reason.is_empty() {
            true => record.message.clone(),
            false => format!("{} ({})", record.message, ack.reason),
        };
        entries.push(entry(
            now,
            kind,
            format!("acknowledgement {}", record.value),
            why,
            ack.by.clone(),
        ));
    }
    entries.extend(brake.audit.iter().cloned());
    entries.extend(mode_entry(old, outcome, actors, brake, ack.as_ref(), now));
    entries
}

/// Put the brake and the trading entries into the status written first; returns the entries.
pub fn enforce(
    enforcement: &mut TradingBotStatus,
    old: &TradingBotStatus,
    outcome: &TradingOutcome,
    actors: &Actors,
    brake: &BrakeOutcome,
    now: &str,
) -> Vec<AuditEntry> {
    enforcement.brake = brake.record.clone();
    let entries = trading_entries(old, outcome, actors, brake, now);
    tradingbot_crds::audit::append(&mut enforcement.history, entries.clone());
    entries
}

/// Log each entry as one JSON line (the operator's log outlives Events too).
pub fn log(namespace: &str, bot: &str, entries: &[AuditEntry]) {
    for e in entries {
        tracing::info!(
            event = "audit",
            tradingbot = %bot,
            namespace = %namespace,
            kind = e.kind.as_str(),
            what = %e.what,
            why = %e.why,
            who = %e.who,
            "audit: {} {}",
            e.kind,
            e.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::trading::EffectiveMode;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use serde_json::json;
    use tradingbot_crds::audit::BrakeRecord;
    use tradingbot_crds::{Profile, TradingBot, TradingBotSpec, TradingMode};

    fn outcome(mode: TradingMode, sources: Vec<ModeSource>) -> TradingOutcome {
        TradingOutcome {
            trips: vec![],
            last_ack: None,
            mode: EffectiveMode {
                mode,
                reason: "why".into(),
                sources,
            },
            canary_mode: None,
            notices: vec![],
            tripped: vec![],
        }
    }

    fn patched_by(manager: &str) -> Actors {
        let mut bot = TradingBot::new("btc", TradingBotSpec::for_profile(Profile::Dev));
        bot.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(json!({"f:spec": {"f:halted": {}}}))),
            ..Default::default()
        }]);
        Actors::of(&bot)
    }

    #[test]
    fn a_mode_change_names_who_imposed_it_and_who_lifted_it() {
        let normal = TradingBotStatus {
            mode: Some(TradingMode::Normal),
            ..Default::default()
        };
        let actors = patched_by("kubectl-patch");
        let halted = outcome(TradingMode::Halted, vec![ModeSource::SpecHalted]);
        let entries = trading_entries(&normal, &halted, &actors, &BrakeOutcome::default(), "t");
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].what.as_str(), entries[0].who.as_str()),
            ("Normal -> Halted", "kubectl-patch")
        );
        let was_halted = TradingBotStatus {
            mode: Some(TradingMode::Halted),
            mode_sources: vec![ModeSource::Brake],
            ..Default::default()
        };
        let released = BrakeOutcome {
            record: None,
            notices: vec![],
            audit: vec![entry(
                now(),
                AuditKind::BrakeReleased,
                "x".into(),
                "fixed".into(),
                "bob".into(),
            )],
        };
        let entries = trading_entries(
            &was_halted,
            &outcome(TradingMode::Normal, vec![]),
            &actors,
            &released,
            "t",
        );
        let kinds: Vec<AuditKind> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [AuditKind::BrakeReleased, AuditKind::ModeChanged]);
        assert_eq!(entries[1].who, "bob", "the brake's releaser lifted the mode");
    }

    fn now() -> &'static str {
        "t"
    }

    #[test]
    fn a_brake_names_its_requester() {
        let normal = TradingBotStatus {
            mode: Some(TradingMode::Normal),
            ..Default::default()
        };
        let brake = BrakeOutcome {
            record: Some(BrakeRecord {
                mode: TradingMode::Halted,
                value: "Halted".into(),
                by: "alice".into(),
                reason: "incident".into(),
                since: "t".into(),
            }),
            notices: vec![],
            audit: vec![],
        };
        let entries = trading_entries(
            &normal,
            &outcome(TradingMode::Halted, vec![ModeSource::Brake]),
            &Actors::default(),
            &brake,
            "t",
        );
        assert_eq!(entries[0].who, "alice");
        assert_eq!(entries[0].kind, AuditKind::ModeChanged);
        let first = trading_entries(
            &TradingBotStatus::default(),
            &outcome(TradingMode::Normal, vec![]),
            &Actors::default(),
            &BrakeOutcome::default(),
            "t",
        );
        assert!(first.is_empty(), "a new bot starting Normal is not a change");
    }
}

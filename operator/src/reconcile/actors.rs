//! Who asked for what (pure): the requesting user and reason `kubectl tradingbot` records next
//! to an action (`trading.gpttrader.io/audit.<action>`), else the field manager that last set the
//! field, from `metadata.managedFields` (`kubectl-patch`, `kubectl-client-side-apply`,
//! `argocd-controller`, ...). The cache keeps only the managed fields this needs
//! ([`trim_managed_fields`]): they are most of an object's size otherwise.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, ObjectMeta};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use tradingbot_crds::TradingBot;
use tradingbot_crds::actions::{self, AuditNote};
use tradingbot_crds::names;

/// What the operator names when it decided by itself.
pub const OPERATOR: &str = "tradingbot-operator";

/// Spec fields whose changes the audit trail attributes.
pub const SPEC_FIELDS: [&[&str]; 4] = [
    &["spec", "halted"],
    &["spec", "reduceOnly"],
    &["spec", "image"],
    &["spec", "rollout", "approvedVersion"],
];

/// A requester: who, and why in their words (empty when none was given).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requester {
    pub by: String,
    pub reason: String,
}

impl Requester {
    /// `alice: incident 42`, or `alice` without a reason.
    pub fn describe(&self) -> String {
        if self.reason.is_empty() {
            self.by.clone()
        } else {
            format!("{}: {}", self.by, self.reason)
        }
    }
}

/// The managed fields of one TradingBot, for attributing changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actors {
    /// (manager, fields) of each entry, in the API server's order.
    entries: Vec<(String, Value)>,
    annotations: BTreeMap<String, String>,
}

fn field_key(segment: &str) -> String {
    format!("f:{segment}")
}

fn has_path(fields: &Value, path: &[&str]) -> bool {
    path.iter()
        .try_fold(fields, |node, segment| node.get(field_key(segment)))
        .is_some()
}

impl Actors {
    pub fn of(bot: &TradingBot) -> Self {
        let entries = bot
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|e| Some((e.manager.clone()?, e.fields_v1.as_ref()?.0.clone())))
            .collect();
        Self {
            entries,
            annotations: bot.metadata.annotations.clone().unwrap_or_default(),
        }
    }

    /// The field manager that owns `path` (e.g. `["spec", "halted"]`).
    pub fn manager_of(&self, path: &[&str]) -> Option<String> {
        self.entries
            .iter()
            .rev()
            .find(|(_, fields)| has_path(fields, path))
            .map(|(manager, _)| manager.clone())
    }

    /// Who set a spec field, for the audit trail.
    pub fn spec_field(&self, path: &[&str]) -> String {
        self.manager_of(path).unwrap_or_else(|| "unknown".into())
    }

    /// Whether the audit note of `key` was written with it (by the same field manager): a note
    /// left from an earlier request says nothing about a value someone set by hand since.
    fn note_is_current(&self, key: &str, value: &str) -> bool {
        if value.is_empty() {
            return true; // a removal leaves only the note to tell
        }
        let action = self.manager_of(&["metadata", "annotations", key]);
        let note = self.manager_of(&["metadata", "annotations", &names::audit_annotation(key)]);
        match (action, note) {
            (Some(action), Some(note)) => action == note,
            _ => true,
        }
    }

    /// Who asked for the action in annotation `key` with `value` (`""`: who removed it).
    pub fn requester(&self, key: &str, value: &str) -> Requester {
        if let Some(AuditNote { by, reason, .. }) = actions::note_for(&self.annotations, key, value)
            && !by.is_empty()
            && self.note_is_current(key, value)
        {
            return Requester { by, reason };
        }
        let by = match value {
            "" => "unknown (removed without an audit note)".to_string(),
            _ => self
                .manager_of(&["metadata", "annotations", key])
                .unwrap_or_else(|| "unknown".into()),
        };
        Requester {
            by,
            reason: String::new(),
        }
    }
}

/// The annotations whose setters the audit trail names.
pub const ACTION_ANNOTATIONS: [&str; 4] = [
    names::ANNOTATION_BRAKE,
    names::ANNOTATION_ROLLOUT_ACTION,
    names::ANNOTATION_ACK_TRIP,
    names::ANNOTATION_FLATTEN,
];

/// Keep only what [`Actors`] reads: the action annotations and [`SPEC_FIELDS`], per manager.
fn trimmed(fields: &Value) -> Option<Value> {
    let mut out = Map::new();
    let wanted: Vec<String> = ACTION_ANNOTATIONS
        .iter()
        .flat_map(|a| [field_key(a), field_key(&names::audit_annotation(a))])
        .collect();
    let annotations: Map<String, Value> = fields
        .pointer("/f:metadata/f:annotations")
        .and_then(Value::as_object)
        .map(|a| {
            a.iter()
                .filter(|(k, _)| wanted.contains(k))
                .map(|(k, _)| (k.clone(), Value::Object(Map::new())))
                .collect()
        })
        .unwrap_or_default();
    if !annotations.is_empty() {
        out.insert(
            field_key("metadata"),
            serde_json::json!({ field_key("annotations"): annotations }),
        );
    }
    for path in SPEC_FIELDS {
        if has_path(fields, path) {
            let mut node = &mut out;
            for segment in path {
                node = node
                    .entry(field_key(segment))
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("built as objects");
            }
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The cache's copy of an object: managed fields reduced to what attribution needs (nothing,
/// for anything but a TradingBot).
pub fn trim_managed_fields(meta: &mut ObjectMeta) {
    let kept: Vec<ManagedFieldsEntry> = meta
        .managed_fields
        .take()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let fields = trimmed(&entry.fields_v1.as_ref()?.0)?;
            Some(ManagedFieldsEntry {
                fields_v1: Some(FieldsV1(fields)),
                ..entry
            })
        })
        .collect();
    meta.managed_fields = (!kept.is_empty()).then_some(kept);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tradingbot_crds::{Profile, TradingBotSpec};

    fn entry(manager: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    fn bot() -> TradingBot {
        let mut bot = TradingBot::new("btc", TradingBotSpec::for_profile(Profile::Dev));
        bot.metadata.managed_fields = Some(vec![
            entry(
                "argocd-controller",
                json!({"f:spec": {"f:image": {}, "f:halted": {}, "f:symbols": {}}, "f:metadata": {"f:labels": {"f:app": {}}}}),
            ),
            entry(
                "kubectl-annotate",
                json!({"f:metadata": {"f:annotations": {"f:trading.gpttrader.io/brake": {}, "f:other.io/x": {}}}}),
            ),
            entry("tradingbot-operator", json!({"f:status": {"f:mode": {}}})),
        ]);
        bot.metadata.annotations = Some(BTreeMap::from([(
            names::ANNOTATION_BRAKE.to_string(),
            "Halted".to_string(),
        )]));
        bot
    }

    #[test]
    fn changes_are_attributed_to_their_field_manager_without_a_note() {
        let actors = Actors::of(&bot());
        assert_eq!(actors.spec_field(&["spec", "halted"]), "argocd-controller");
        assert_eq!(actors.spec_field(&["spec", "reduceOnly"]), "unknown");
        let requester = actors.requester(names::ANNOTATION_BRAKE, "Halted");
        assert_eq!(requester.by, "kubectl-annotate");
        assert_eq!(requester.describe(), "kubectl-annotate");
    }

    #[test]
    fn a_note_for_the_same_value_names_the_user_and_the_reason() {
        let mut bot = bot();
        let note = json!({"value": "Halted", "by": "alice", "reason": "incident 42", "at": "t"});
        bot.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(names::audit_annotation(names::ANNOTATION_BRAKE), note.to_string());
        let actors = Actors::of(&bot);
        let requester = actors.requester(names::ANNOTATION_BRAKE, "Halted");
        assert_eq!(requester.describe(), "alice: incident 42");
        assert_eq!(
            actors.requester(names::ANNOTATION_BRAKE, "ReduceOnly").by,
            "kubectl-annotate",
            "a note for another value says nothing about this one"
        );
    }

    #[test]
    fn a_note_left_from_an_earlier_request_does_not_name_who_set_the_value_by_hand() {
        let mut bot = bot();
        let note = json!({"value": "Halted", "by": "alice", "reason": "old", "at": "t"});
        bot.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(names::audit_annotation(names::ANNOTATION_BRAKE), note.to_string());
        bot.metadata.managed_fields.as_mut().unwrap().push(entry(
            "kubectl-tradingbot",
            json!({"f:metadata": {"f:annotations": {"f:trading.gpttrader.io/audit.brake": {}}}}),
        ));
        // The brake's own manager is kubectl-annotate: the plugin's note is from before.
        assert_eq!(
            Actors::of(&bot).requester(names::ANNOTATION_BRAKE, "Halted").by,
            "kubectl-annotate"
        );
        let mut trimmed = bot.clone();
        trim_managed_fields(&mut trimmed.metadata);
        assert_eq!(
            Actors::of(&trimmed).requester(names::ANNOTATION_BRAKE, "Halted").by,
            "kubectl-annotate",
            "the cache keeps what this needs"
        );
    }

    #[test]
    fn the_cache_keeps_only_attributable_fields() {
        let mut bot = bot();
        trim_managed_fields(&mut bot.metadata);
        let kept = bot.metadata.managed_fields.as_ref().unwrap();
        assert_eq!(kept.len(), 2, "the status manager's entry goes");
        assert_eq!(
            kept[0].fields_v1.as_ref().unwrap().0,
            json!({"f:spec": {"f:image": {}, "f:halted": {}}})
        );
        assert_eq!(
            kept[1].fields_v1.as_ref().unwrap().0,
            json!({"f:metadata": {"f:annotations": {"f:trading.gpttrader.io/brake": {}}}})
        );
        let actors = Actors::of(&bot);
        assert_eq!(actors.spec_field(&["spec", "image"]), "argocd-controller");
    }
}

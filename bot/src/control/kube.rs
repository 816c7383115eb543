//! The Kubernetes side of a managed bot: it watches its own TradingBot (spec intent, the
//! operator's status, guard levels, accepted acknowledgements) and holds its identity Lease.

use super::{AckRequest, ModeHandle, source};
use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use std::collections::BTreeSet;
use tokio::sync::{mpsc, watch};
use tradingbot_crds::TradingMode;
use tradingbot_crds::mode::{ModeInput, most_restrictive};
use tradingbot_crds::spec::Guards;
use tradingbot_crds::status::AckResult;
use tradingbot_crds::{Instance, TradingBot};

/// Who this bot process is, when the operator runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub bot: String,
    pub namespace: String,
    pub instance: Instance,
    /// Unique per process: pod name plus a random suffix (a restarted container is a new holder).
    pub holder: String,
}

/// What the TradingBot says about this instance.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub mode: TradingMode,
    pub reason: String,
    pub guards: Guards,
    /// Guards whose trips the operator has accepted an acknowledgement for: (ack value, guard).
    pub accepted_ack: Option<(String, String)>,
    /// The flatten request the TradingBot carries (annotation `trading.gpttrader.io/flatten`).
    pub flatten_request: Option<String>,
}

/// Pure: the restriction a TradingBot imposes on `instance` (None = the object is gone).
pub fn interpret(bot: Option<&TradingBot>, instance: Instance) -> View {
    let Some(bot) = bot else {
        return View {
            mode: TradingMode::Halted,
            reason: "the TradingBot no longer exists".into(),
            guards: Guards::default(),
            accepted_ack: None,
            flatten_request: None,
        };
    };
    let spec = &bot.spec;
    let mut inputs = vec![ModeInput::new(
        TradingMode::from_switches(spec.reduce_only, spec.halted),
        if spec.halted { "spec.halted" } else { "spec.reduceOnly" },
    )];
    if bot.metadata.deletion_timestamp.is_some() {
        inputs.push(ModeInput::new(TradingMode::Halted, "the TradingBot is being deleted"));
    }
    inputs.extend(brake_input(bot));
    let status = bot.status.as_ref();
    let operator_mode = status.and_then(|s| match instance {
        Instance::Prod => s.mode.map(|m| (m, s.mode_reason.clone())),
        Instance::Canary => s.canary_mode.map(|m| (m, None)),
    });
    if let Some((mode, reason)) = operator_mode {
        inputs.push(ModeInput::new(
            mode,
            format!("operator status: {}", reason.unwrap_or_else(|| mode.to_string())),
        ));
    }
    let (mode, reason) = most_restrictive(&inputs);
    let accepted_ack = status
        .and_then(|s| s.last_ack.as_ref())
        .filter(|a| a.result == AckResult::Accepted)
        .and_then(|a| a.guard.clone().map(|g| (format!("{}@{}", a.value, a.time), g)));
    let flatten_request = bot
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(tradingbot_crds::names::ANNOTATION_FLATTEN))
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    View {
        mode,
        reason,
        guards: spec.guards.clone(),
        accepted_ack,
        flatten_request,
    }
}

/// The emergency brake (annotation `trading.gpttrader.io/brake`), obeyed directly: it holds
/// even while the operator is down. Who set it and why come from its audit note.
fn brake_input(bot: &TradingBot) -> Option<ModeInput> {
    let annotations = bot.metadata.annotations.as_ref()?;
    let brake = tradingbot_crds::actions::brake_of(annotations)?;
    let value = annotations
        .get(tradingbot_crds::names::ANNOTATION_BRAKE)
        .map(|v| v.trim())
        .unwrap_or_default();
    let who = tradingbot_crds::actions::note_for(annotations, tradingbot_crds::names::ANNOTATION_BRAKE, value)
        .map(|n| format!(" by {}: {}", n.by, n.reason))
        .unwrap_or_default();
    let unreadable = if brake.readable {
        ""
    } else {
        " (unreadable value: halted for safety)"
    };
    Some(ModeInput::new(
        brake.mode,
        format!("emergency brake {}{who}{unreadable}", brake.mode),
    ))
}

/// Watch the TradingBot until `stop`; report its restriction, guard levels and accepted acks.
pub async fn watch_tradingbot(
    client: Client,
    identity: Identity,
    mode: ModeHandle,
    guards: watch::Sender<Option<Guards>>,
    acks: mpsc::Sender<AckRequest>,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<TradingBot> = Api::namespaced(client, &identity.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", identity.bot));
    let mut events = watcher::watcher(api, config).boxed();
    let mut seen_acks = BTreeSet::new();
    let mut seen_flattens = BTreeSet::new();
    let mut first = true;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.changed() => return,
        };
        let object = match event {
            Some(Ok(Event::Apply(bot) | Event::InitApply(bot))) => Some(bot),
            Some(Ok(Event::Delete(_))) => None,
            Some(Ok(Event::Init)) => continue,
            Some(Ok(Event::InitDone)) => {
                if first {
                    // The object does not exist at all: halted until it does.
                    first = false;
                    let view = interpret(None, identity.instance);
                    mode.set(source::KUBERNETES, view.mode, view.reason);
                }
                continue;
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "TradingBot watch error; keeping the last known mode");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            None => return,
        };
        first = false;
        let view = interpret(object.as_ref(), identity.instance);
        mode.set(source::KUBERNETES, view.mode, view.reason);
        guards.send_replace(object.is_some().then_some(view.guards));
        if let Some((key, guard)) = view.accepted_ack
            && seen_acks.insert(key)
        {
            let _ = acks.send(AckRequest::Guard(guard)).await;
        }
        // The engine acts on each id once (persisted), so resending after a restart is safe.
        if let Some(id) = view.flatten_request
            && seen_flattens.insert(id.clone())
        {
            let _ = acks.send(AckRequest::Flatten(id)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tradingbot_crds::status::{AckRecord, TradingBotStatus};
    use tradingbot_crds::{Profile, TradingBotSpec};

    fn bot(reduce_only: bool, halted: bool, status: Option<TradingBotStatus>) -> TradingBot {
        let mut spec = TradingBotSpec::for_profile(Profile::Dev);
        spec.reduce_only = reduce_only;
        spec.halted = halted;
        let mut bot = TradingBot::new("btc", spec);
        bot.status = status;
        bot
    }

    #[test]
    fn spec_intent_applies_before_the_operator_writes_status() {
        let view = interpret(Some(&bot(true, false, None)), Instance::Prod);
        assert_eq!(view.mode, TradingMode::ReduceOnly);
        assert_eq!(
            interpret(Some(&bot(true, true, None)), Instance::Prod).mode,
            TradingMode::Halted
        );
        assert_eq!(interpret(None, Instance::Prod).mode, TradingMode::Halted);
    }

    #[test]
    fn operator_status_can_only_restrict() {
        let status = TradingBotStatus {
            mode: Some(TradingMode::Halted),
            mode_reason: Some("guard dailyLoss".into()),
            canary_mode: Some(TradingMode::ReduceOnly),
            ..Default::default()
        };
        let prod = interpret(Some(&bot(false, false, Some(status.clone()))), Instance::Prod);
        assert_eq!(prod.mode, TradingMode::Halted);
        assert!(prod.reason.contains("guard dailyLoss"));
        let canary = interpret(Some(&bot(false, false, Some(status))), Instance::Canary);
        assert_eq!(canary.mode, TradingMode::ReduceOnly);
    }

    #[test]
    fn the_emergency_brake_is_obeyed_without_the_operator() {
        let mut tb = bot(false, false, None);
        let note = r#"{"value":"ReduceOnly","by":"alice","reason":"incident 9","at":"t"}"#;
        tb.metadata.annotations = Some(
            [
                (
                    tradingbot_crds::names::ANNOTATION_BRAKE.to_string(),
                    "ReduceOnly".to_string(),
                ),
                (
                    tradingbot_crds::names::audit_annotation(tradingbot_crds::names::ANNOTATION_BRAKE),
                    note.to_string(),
                ),
            ]
            .into(),
        );
        let view = interpret(Some(&tb), Instance::Prod);
        assert_eq!(view.mode, TradingMode::ReduceOnly);
        assert!(
            view.reason.contains("emergency brake ReduceOnly by alice: incident 9"),
            "{}",
            view.reason
        );
        assert_eq!(interpret(Some(&tb), Instance::Canary).mode, TradingMode::ReduceOnly);
        tb.metadata.annotations.as_mut().unwrap().insert(
            tradingbot_crds::names::ANNOTATION_BRAKE.to_string(),
            "stop!".to_string(),
        );
        assert_eq!(
            interpret(Some(&tb), Instance::Prod).mode,
            TradingMode::Halted,
            "fails closed"
        );
    }

    #[test]
    fn accepted_acks_name_their_guard() {
        let status = TradingBotStatus {
            last_ack: Some(AckRecord {
                value: "dailyloss-halted-1".into(),
                guard: Some("dailyLoss".into()),
                result: AckResult::Accepted,
                message: String::new(),
                time: "t".into(),
            }),
            ..Default::default()
        };
        let view = interpret(Some(&bot(false, false, Some(status))), Instance::Prod);
        assert_eq!(view.accepted_ack.unwrap().1, "dailyLoss");
    }

    #[test]
    fn the_flatten_annotation_is_a_request_id() {
        let mut tb = bot(false, false, None);
        assert_eq!(interpret(Some(&tb), Instance::Prod).flatten_request, None);
        tb.metadata.annotations = Some(
            [(
                tradingbot_crds::names::ANNOTATION_FLATTEN.to_string(),
                " incident-9 ".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            interpret(Some(&tb), Instance::Prod).flatten_request.as_deref(),
            Some("incident-9")
        );
    }
}

//! Requests: the emergency brake, trip acknowledgements, flatten and rollout actions. Each is an
//! annotation (Git never carries them, so no GitOps sync undoes them) written together with an
//! audit note naming the requesting user and the reason; then the plugin waits until the operator
//! (for flatten: the bot) says what it did.

use crate::cluster::Cluster;
use crate::error::{Failure, Result};
use crate::identity;
use kube::ResourceExt;
use serde_json::{Map, Value};
use std::time::Duration;
use tradingbot_crds::actions::{AuditNote, RolloutAction};
use tradingbot_crds::names::{self, InstanceNames};
use tradingbot_crds::status::{AckResult, TradingBotStatus};
use tradingbot_crds::{Instance, TradingBot, TradingMode};

/// A new request id: when, plus a little randomness (a repeated request is a new value).
pub fn request_id() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    format!("{}-{:04x}", now.strftime("%Y%m%dT%H%M%SZ"), rand::random::<u16>())
}

/// The annotations of one request: the action and its audit note.
pub fn request(key: &str, value: Option<&str>, by: &str, reason: &str) -> Map<String, Value> {
    let note = AuditNote {
        value: value.unwrap_or_default().to_string(),
        by: by.to_string(),
        reason: reason.to_string(),
        at: format!("{:.0}", k8s_openapi::jiff::Timestamp::now()),
    };
    let mut annotations = Map::new();
    annotations.insert(key.to_string(), value.map_or(Value::Null, |v| Value::String(v.into())));
    annotations.insert(
        names::audit_annotation(key),
        Value::String(serde_json::to_string(&note).expect("a note serialises")),
    );
    annotations
}

fn status(bot: &TradingBot) -> TradingBotStatus {
    bot.status.clone().unwrap_or_default()
}

fn wait_of(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// What else keeps the bot restricted, in words (for after a brake is released).
pub fn other_restrictions(status: &TradingBotStatus) -> Option<String> {
    let mode = status.mode?;
    if mode == TradingMode::Normal {
        return None;
    }
    let owners: Vec<String> = status
        .mode_sources
        .iter()
        .map(|s| match s.as_str() {
            "SpecHalted" => "spec.halted (Git owns it: change it there)".to_string(),
            "SpecReduceOnly" => "spec.reduceOnly (Git owns it: change it there)".to_string(),
            "GuardTrip" => "latched guard trips (kubectl tradingbot ack)".to_string(),
            other => other.to_string(),
        })
        .collect();
    Some(format!("still {mode}: {}", owners.join("; ")))
}

/// `halt` / `reduce-only` (Some) or `resume` (None).
pub async fn brake(cluster: &Cluster, name: &str, mode: Option<TradingMode>, reason: &str, wait: u64) -> Result<()> {
    let bot = cluster.bot(name).await?;
    let current = bot.annotations().get(names::ANNOTATION_BRAKE).cloned();
    let value = mode.map(|m| m.as_str().to_string());
    match (&current, &value) {
        (None, None) => {
            let more = other_restrictions(&status(&bot)).map_or_else(String::new, |r| format!(" (the bot is {r})"));
            return Err(Failure::Refused(format!(
                "{name} has no emergency brake to release{more}"
            )));
        }
        (Some(c), Some(v)) if c == v => {
            let by = status(&bot)
                .brake
                .map(|b| format!(" (set by {}: {})", b.by, b.reason))
                .unwrap_or_default();
            println!("tradingbot {name}: the emergency brake is already {v}{by}; nothing changed");
            return Ok(());
        }
        _ => {}
    }
    let by = identity::requester(&cluster.client).await;
    cluster
        .annotate(name, request(names::ANNOTATION_BRAKE, value.as_deref(), &by, reason))
        .await?;
    let Some(wait) = wait_of(wait) else {
        println!("tradingbot {name}: brake request written by {by} (not waiting for the operator)");
        return Ok(());
    };
    let what = format!("the emergency brake on {name}");
    let status = cluster
        .wait_for(name, wait, &what, |b| {
            let s = status(b);
            let applied = s.brake.as_ref().map(|r| r.value.clone()) == value;
            let obeyed = mode.is_none_or(|m| s.mode.is_some_and(|now| now >= m));
            (applied && obeyed).then_some(s)
        })
        .await?;
    let mode_now = status.mode.map_or("-".into(), |m| m.to_string());
    match mode {
        Some(m) => println!(
            "tradingbot {name}: emergency brake {m} set by {by} ({reason}); mode {mode_now}. \
             Git never carries it: a sync does not undo it; kubectl tradingbot resume releases it."
        ),
        None => {
            let still = other_restrictions(&status).unwrap_or_else(|| "mode Normal".to_string());
            println!("tradingbot {name}: emergency brake released by {by} ({reason}); {still}");
        }
    }
    Ok(())
}

/// Acknowledge one trip and wait for the operator's answer.
async fn ack_one(cluster: &Cluster, name: &str, trip: &str, by: &str, reason: &str, wait: u64) -> Result<AckResult> {
    let value = format!("{trip}@{}", request_id());
    cluster
        .annotate(name, request(names::ANNOTATION_ACK_TRIP, Some(&value), by, reason))
        .await?;
    let Some(wait) = wait_of(wait) else {
        println!("trip {trip}: acknowledgement written (not waiting for the operator)");
        return Ok(AckResult::Accepted);
    };
    let what = format!("the acknowledgement of trip {trip}");
    let ack = cluster
        .wait_for(name, wait, &what, |b| status(b).last_ack.filter(|a| a.value == value))
        .await?;
    println!("trip {trip}: {:?}: {}", ack.result, ack.message);
    Ok(ack.result)
}

pub async fn ack(cluster: &Cluster, name: &str, trip: Option<&str>, reason: &str, wait: u64) -> Result<()> {
    let bot = cluster.bot(name).await?;
    let latched: Vec<String> = status(&bot).trips.iter().map(|t| t.id.clone()).collect();
    let trips = match trip {
        Some(id) if latched.iter().any(|t| t == id) => vec![id.to_string()],
        Some(id) => {
            return Err(Failure::NotFound(format!(
                "no latched trip {id} on {name} (latched: {})",
                if latched.is_empty() {
                    "none".into()
                } else {
                    latched.join(", ")
                }
            )));
        }
        None if latched.is_empty() => return Err(Failure::Refused(format!("{name} has no latched trip"))),
        None => latched,
    };
    let by = identity::requester(&cluster.client).await;
    let mut refused = Vec::new();
    for id in &trips {
        if ack_one(cluster, name, id, &by, reason, wait).await? == AckResult::Refused {
            refused.push(id.clone());
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(Failure::Refused(format!(
        "refused: {} (a trip is released only once its guard is back under the level; try again later)",
        refused.join(", ")
    )))
}

/// `perps_bot_flatten_requests_total` by result.
fn flatten_counts(metrics: &str) -> (f64, f64) {
    let samples = tradingbot_crds::exposition::parse(metrics);
    let count = |result: &str| {
        samples
            .iter()
            .filter(|s| s.name == tradingbot_crds::bot_metrics::FLATTENS.name && s.label("result") == Some(result))
            .map(|s| s.value)
            .sum::<f64>()
    };
    (count("done"), count("refused"))
}

pub async fn flatten(cluster: &Cluster, name: &str, id: Option<&str>, reason: &str, wait: u64) -> Result<()> {
    let bot = cluster.bot(name).await?;
    let pod = InstanceNames::new(name, Instance::Prod).pod;
    let port = bot.spec.metrics.port;
    let before = cluster.pod_metrics(&pod, port).await.map_err(|e| {
        Failure::Refused(format!(
            "the bot cannot be asked: {e} (is its pod running?); nothing was requested"
        ))
    })?;
    let before = flatten_counts(&before);
    let id = id.map_or_else(request_id, str::to_string);
    let by = identity::requester(&cluster.client).await;
    cluster
        .annotate(name, request(names::ANNOTATION_FLATTEN, Some(&id), &by, reason))
        .await?;
    let Some(wait) = wait_of(wait) else {
        println!("tradingbot {name}: flatten request {id} written (not waiting for the bot)");
        return Ok(());
    };
    let deadline = std::time::Instant::now() + wait;
    loop {
        if let Ok(text) = cluster.pod_metrics(&pod, port).await {
            let (done, refused) = flatten_counts(&text);
            if done > before.0 {
                println!("tradingbot {name}: flatten {id}: done (its own positions closed with reduce-only orders)");
                return Ok(());
            }
            if refused > before.1 {
                return Err(Failure::Refused(format!(
                    "flatten {id}: the bot refused (its log says why, flatten_refused; a Halted bot refuses: use reduce-only)"
                )));
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(Failure::TimedOut(format!(
                "flatten {id}: the bot did not act within {} s (it acts on the request once, when it can)",
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Why the operator would not act on a rollout action now.
fn held(bot: &TradingBot) -> Option<String> {
    if bot.spec.paused {
        return Some("spec.paused: the operator changes nothing about this bot until it is unpaused".into());
    }
    let degraded = status(bot)
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == "InvalidSpec");
    degraded.map(|c| format!("the spec is invalid, the operator holds the bot: {}", c.message))
}

pub async fn rollout(cluster: &Cluster, name: &str, action: RolloutAction, reason: &str, wait: u64) -> Result<()> {
    let bot = cluster.bot(name).await?;
    if let Some(why) = held(&bot) {
        return Err(Failure::Refused(format!("{name}: {why}")));
    }
    let value = format!("{}@{}", action.value(), request_id());
    let by = identity::requester(&cluster.client).await;
    cluster
        .annotate(
            name,
            request(names::ANNOTATION_ROLLOUT_ACTION, Some(&value), &by, reason),
        )
        .await?;
    let Some(wait) = wait_of(wait) else {
        println!("tradingbot {name}: {action} requested by {by} (not waiting for the operator)");
        return Ok(());
    };
    let what = format!("rollout action {action} on {name}");
    let (record, phase) = cluster
        .wait_for(name, wait, &what, |b| {
            let s = status(b);
            let phase = s.rollout.as_ref().map_or("Idle", |r| r.phase.as_str()).to_string();
            s.last_action.filter(|a| a.value == value).map(|a| (a, phase))
        })
        .await?;
    match record.result {
        AckResult::Accepted => {
            println!(
                "tradingbot {name}: {action} accepted: {}; rollout {phase}",
                record.message
            );
            Ok(())
        }
        AckResult::Refused => Err(Failure::Refused(format!("{action} refused: {}", record.message))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_its_note_and_a_release_removes_the_annotation() {
        let set = request(names::ANNOTATION_BRAKE, Some("Halted"), "alice", "incident 42");
        assert_eq!(set[names::ANNOTATION_BRAKE], "Halted");
        let note: AuditNote =
            serde_json::from_str(set[&names::audit_annotation(names::ANNOTATION_BRAKE)].as_str().unwrap()).unwrap();
        assert_eq!(
            (note.value.as_str(), note.by.as_str(), note.reason.as_str()),
            ("Halted", "alice", "incident 42")
        );
        let release = request(names::ANNOTATION_BRAKE, None, "bob", "fixed");
        assert_eq!(release[names::ANNOTATION_BRAKE], Value::Null);
        assert_ne!(request_id(), request_id(), "each request is new");
    }

    #[test]
    fn what_git_still_imposes_is_named_after_a_release() {
        let status = TradingBotStatus {
            mode: Some(TradingMode::Halted),
            mode_sources: vec![tradingbot_crds::mode::ModeSource::SpecHalted],
            ..Default::default()
        };
        assert!(
            other_restrictions(&status)
                .unwrap()
                .contains("spec.halted (Git owns it")
        );
        assert_eq!(other_restrictions(&TradingBotStatus::default()), None);
        assert_eq!(
            flatten_counts(
                "perps_bot_flatten_requests_total{result=\"done\"} 2\nperps_bot_flatten_requests_total{result=\"refused\"} 1\n"
            ),
            (2.0, 1.0)
        );
    }
}

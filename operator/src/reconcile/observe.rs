//! Step 1, gather: what the caches and the scraper know about one bot, without a single API
//! request. Every cached child is classified by its controller owner reference: only objects
//! whose controller is this TradingBot (by uid) are ever acted on or scraped.

use crate::cli::GuardSource;
use crate::context::Context;
use crate::fleet::AccountLookup;
use crate::scrape::{Observation, Target, TargetKey};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tradingbot_crds::names::{self, InstanceNames};
use tradingbot_crds::{Instance, TradingBot};

/// The bot exits with this code when its credentials are missing or refused (see perps-bot).
pub const CREDENTIALS_EXIT_CODE: i32 = 3;

/// Something per instance (prod and canary).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PerInstance<T> {
    pub prod: T,
    pub canary: T,
}

impl<T> PerInstance<T> {
    pub fn get(&self, instance: Instance) -> &T {
        match instance {
            Instance::Prod => &self.prod,
            Instance::Canary => &self.canary,
        }
    }

    pub fn map<U>(&self, f: impl Fn(Instance, &T) -> U) -> PerInstance<U> {
        PerInstance {
            prod: f(Instance::Prod, &self.prod),
            canary: f(Instance::Canary, &self.canary),
        }
    }
}

/// Who controls an object, judged by its controller owner reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Controlled by this TradingBot (same uid).
    Ours,
    /// Anything else: another owner, or no controller at all. Never touched.
    Other { owner: String },
}

/// Is `meta` controlled by the object with `uid`?
pub fn ownership(meta: &ObjectMeta, uid: &str) -> Ownership {
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(owner) if owner.uid == uid => Ownership::Ours,
        Some(owner) => Ownership::Other {
            owner: format!("{} {} (uid {})", owner.kind, owner.name, owner.uid),
        },
        None => Ownership::Other {
            owner: "no controller owner reference".into(),
        },
    }
}

/// A child slot: nothing there, ours, or an object we must not touch.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot<T> {
    Absent,
    Ours(T),
    Other { owner: String },
}

impl<T> Slot<T> {
    pub fn ours(&self) -> Option<&T> {
        match self {
            Slot::Ours(t) => Some(t),
            _ => None,
        }
    }
}

/// What the operator reads of one of its bot pods.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    pub pod: Arc<Pod>,
    pub ready: bool,
    pub terminating: bool,
    /// Where to scrape it, while it runs.
    pub ip: Option<String>,
    /// The version (image) it runs, from its annotation.
    pub version: Option<String>,
    pub restarts: u32,
    /// The bot's own one-line report, when its last run ended because of its credentials.
    pub credentials_problem: Option<String>,
}

impl PodView {
    pub fn of(pod: Arc<Pod>) -> Self {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let ip = status
            .filter(|s| s.phase.as_deref() == Some("Running") && !terminating)
            .and_then(|s| s.pod_ip.clone());
        let container = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first());
        let restarts = container.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0));
        let credentials_problem = container.and_then(|c| {
            let ended = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let running = c.state.as_ref().is_some_and(|s| s.running.is_some()) && c.ready;
            ended
                .or(last)
                .filter(|t| t.exit_code == CREDENTIALS_EXIT_CODE && !running)
                .map(|t| {
                    t.message
                        .clone()
                        .map(|m| m.trim().chars().take(400).collect::<String>())
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| "the bot exited: credentials missing or refused".into())
                })
        });
        Self {
            version: pod.annotations().get(names::ANNOTATION_VERSION).cloned(),
            pod,
            ready,
            terminating,
            ip,
            restarts,
            credentials_problem,
        }
    }

    pub fn name(&self) -> String {
        self.pod.name_any()
    }
}

/// Everything the decision about one bot is based on.
#[derive(Debug, Clone)]
pub struct Observed {
    pub bot: Arc<TradingBot>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Set while the TradingBot is being deleted: for how long.
    pub deleting_for: Option<Duration>,
    pub pods: PerInstance<Slot<PodView>>,
    /// A canary pod under the names operators before 0.2 used (removed when ours).
    pub legacy_canary_pod: Slot<PodView>,
    pub scrapes: PerInstance<Option<Observation>>,
    /// The TradingAccount `spec.account` names (None: the bot names none).
    pub account: Option<AccountLookup>,
    pub service_monitor_api: bool,
    /// Where the guards' observations come from.
    pub guard_source: GuardSource,
    pub now: Timestamp,
    pub instant: Instant,
}

fn pod_slot(ctx: &Context, name: &str, namespace: &str, uid: &str) -> Slot<PodView> {
    match ctx.stores.pods.get(&ObjectRef::new(name).within(namespace)) {
        None => Slot::Absent,
        Some(pod) => match ownership(&pod.metadata, uid) {
            Ownership::Ours => Slot::Ours(PodView::of(pod)),
            Ownership::Other { owner } => Slot::Other { owner },
        },
    }
}

pub fn target_key(namespace: &str, bot: &str, instance: Instance) -> TargetKey {
    TargetKey {
        namespace: namespace.to_string(),
        bot: bot.to_string(),
        instance,
    }
}

/// Gather what is known about `bot` (caches and scrapes only).
pub fn gather(bot: Arc<TradingBot>, ctx: &Context) -> Observed {
    let namespace = bot.namespace().unwrap_or_default();
    let name = bot.name_any();
    let uid = bot.uid().unwrap_or_default();
    let now = Timestamp::now();
    let deleting_for = bot
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| Duration::from_secs(now.as_second().saturating_sub(t.0.as_second()).max(0) as u64));
    let pod = |instance| pod_slot(ctx, &InstanceNames::new(&name, instance).pod, &namespace, &uid);
    let scrape = |instance| ctx.scraper.observation(&target_key(&namespace, &name, instance));
    Observed {
        pods: PerInstance {
            prod: pod(Instance::Prod),
            canary: pod(Instance::Canary),
        },
        legacy_canary_pod: pod_slot(ctx, &InstanceNames::legacy_canary(&name).pod, &namespace, &uid),
        scrapes: PerInstance {
            prod: scrape(Instance::Prod),
            canary: scrape(Instance::Canary),
        },
        account: bot.spec.account.as_ref().map(|a| {
            let (account_namespace, account) = a.resolve(&namespace);
            ctx.fleet.account(&account_namespace, &account)
        }),
        service_monitor_api: ctx.service_monitors_available(),
        guard_source: ctx.scraper.source(),
        now,
        instant: Instant::now(),
        deleting_for,
        namespace,
        name,
        uid,
        bot,
    }
}

impl Observed {
    /// Where to scrape `instance`: only a running pod this TradingBot controls.
    pub fn scrape_target(&self, instance: Instance) -> Option<Target> {
        let pod = self.pods.get(instance).ours()?;
        let ip = pod.ip.clone()?;
        let spec = &self.bot.spec;
        Some(Target {
            pod: pod.pod.name_any(),
            instance: format!("{ip}:{}", spec.metrics.port),
            url: format!("http://{ip}:{}/metrics", spec.metrics.port),
            interval: Duration::from_secs(u64::from(spec.metrics.scrape_interval_seconds)),
            error_window: Duration::from_secs(u64::from(
                spec.guards.error_rate.as_ref().map_or(300, |e| e.window_seconds),
            )),
        })
    }

    pub fn deleting(&self) -> bool {
        self.deleting_for.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(uid: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "trading.gpttrader.io/v1alpha1".into(),
                kind: "TradingBot".into(),
                name: "nc-canary".into(),
                uid: uid.into(),
                controller: Some(controller),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_controller_with_our_uid_makes_an_object_ours() {
        assert_eq!(ownership(&owned_by("u1", true), "u1"), Ownership::Ours);
        assert!(matches!(
            ownership(&owned_by("u2", true), "u1"),
            Ownership::Other { owner } if owner.contains("nc-canary") && owner.contains("u2")
        ));
        // A non-controller reference, or none at all, is not ours either.
        assert!(matches!(
            ownership(&owned_by("u1", false), "u1"),
            Ownership::Other { .. }
        ));
        assert!(matches!(
            ownership(&ObjectMeta::default(), "u1"),
            Ownership::Other { .. }
        ));
    }
}

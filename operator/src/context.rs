//! What every reconciliation shares: the client, settings, caches of children, the scraper,
//! the event publisher, metrics and the little in-memory state guards need between scrapes.

use crate::account::decide::AccountMemory;
use crate::cli::Settings;
use crate::events::EventPublisher;
use crate::fleet::Fleet;
use crate::metrics::OperatorMetrics;
use crate::reconcile::restarts::RestartBudget;
use crate::scrape::Scraper;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tradingbot_crds::guards::HealthyStreaks;

/// Caches of the operator's children (label-selected), fed by the controller's watches.
/// Children other than pods are cached as metadata only (their desired-hash annotation says
/// whether they need writing).
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub roles: Store<PartialObjectMeta<Role>>,
    pub role_bindings: Store<PartialObjectMeta<RoleBinding>>,
}

/// Per-bot memory that need not survive a restart (it only delays an automatic resume, or
/// costs a request to find out again).
#[derive(Default)]
pub struct BotMemory {
    pub streaks: HealthyStreaks,
    /// Successful scrapes already counted towards automatic resume.
    pub last_ok_prod: u64,
    pub last_ok_canary: u64,
    /// Identity Leases known to exist, and when that was checked.
    pub leases_verified: std::collections::HashMap<String, std::time::Instant>,
    /// The ServiceMonitor last found as desired: the desired hash, and when.
    pub service_monitor_verified: Option<crate::reconcile::apply::FoundServiceMonitor>,
    /// Reconciles in a row that could not write every child (for backoff).
    pub failed_passes: u32,
    /// While children keep failing, they are not tried again before this (a scrape-triggered
    /// reconcile in between still enforces guards), unless the spec changes.
    pub retry_children_at: Option<std::time::Instant>,
    pub children_tried_for: Option<i64>,
    pub last_problems: Vec<crate::reconcile::apply::ChildProblem>,
    /// Reconciles in a row that failed (for the error policy's backoff).
    pub errors: u32,
}

/// Whether the ServiceMonitor API (monitoring.coreos.com/v1) is served, and how many times it
/// has appeared: a ServiceMonitor found before the API last appeared may have gone with its CRD.
#[derive(Default)]
pub struct ServiceMonitorApi {
    available: AtomicBool,
    appearances: AtomicU64,
}

impl ServiceMonitorApi {
    /// Record whether the API is served now; true when that changed.
    pub fn set(&self, now: bool) -> bool {
        let was = self.available.swap(now, Ordering::Relaxed);
        if now && !was {
            self.appearances.fetch_add(1, Ordering::Relaxed);
        }
        was != now
    }

    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    pub fn appearances(&self) -> u64 {
        self.appearances.load(Ordering::Relaxed)
    }
}

/// Namespaces where this operator's TradingBot status writes are known to work: the last one
/// answered there, sent less than [`STATUS_PROOF_LIFETIME`] ago, succeeded. A new bot's first
/// status may wait for its children only there: a pod must never start where the operator
/// could not restrict it (RBAC without `tradingbots/status`, a webhook refusing status
/// writes). A proof from a quiet spell is too old: the next new bot writes first and renews it.
#[derive(Debug, Default)]
pub struct StatusWrites {
    by_namespace: Mutex<HashMap<String, StatusProof>>,
}

/// How long a successful status write proves that status writes work in its namespace.
pub const STATUS_PROOF_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Default, Clone, Copy)]
struct StatusProof {
    succeeded_sent_at: Option<std::time::Instant>,
    refused_sent_at: Option<std::time::Instant>,
}

impl StatusWrites {
    /// A status write in `namespace`, sent at `sent_at`, succeeded (true) or was refused other
    /// than by a conflict. A success sent before the latest refusal proves nothing.
    pub fn record(&self, namespace: &str, succeeded: bool, sent_at: std::time::Instant) {
        let mut by_namespace = self.by_namespace.lock().unwrap_or_else(|p| p.into_inner());
        let proof = by_namespace.entry(namespace.to_string()).or_default();
        let latest = |at: Option<std::time::Instant>| Some(at.map_or(sent_at, |at| at.max(sent_at)));
        if succeeded {
            proof.succeeded_sent_at = latest(proof.succeeded_sent_at);
        } else {
            proof.refused_sent_at = latest(proof.refused_sent_at);
        }
    }

    pub fn proven(&self, namespace: &str, now: std::time::Instant) -> bool {
        let by_namespace = self.by_namespace.lock().unwrap_or_else(|p| p.into_inner());
        by_namespace.get(namespace).is_some_and(|proof| {
            proof.succeeded_sent_at.is_some_and(|ok| {
                now.saturating_duration_since(ok) < STATUS_PROOF_LIFETIME
                    && proof.refused_sent_at.is_none_or(|refused| ok > refused)
            })
        })
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub events: EventPublisher,
    pub metrics: Arc<OperatorMetrics>,
    pub scraper: Arc<Scraper>,
    pub stores: Stores,
    pub service_monitor_api: Arc<ServiceMonitorApi>,
    /// True once every cache has its initial list: before that, reconciling could mistake a
    /// child the cache has not seen yet for a missing one.
    pub synced: Arc<AtomicBool>,
    /// Per-bot memory keyed by uid; use [`Context::with_memory`].
    pub memory: Mutex<HashMap<String, BotMemory>>,
    /// Operator-side pod restarts in flight across the fleet (shared by every controller).
    pub restarts: Arc<RestartBudget>,
    /// Every scope's caches and queues (TradingAccounts and their bots may be in different ones).
    pub fleet: Arc<Fleet>,
    /// Per-account memory keyed by uid.
    pub account_memory: Mutex<HashMap<String, AccountMemory>>,
    /// The share of the bots and accounts this operator reconciles.
    pub shard: crate::shard::Shard,
    pub status_writes: StatusWrites,
}

impl Context {
    /// This scope's caches, and every other scope's (accounts and their bots may be cached by
    /// different scopes), are filled.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && self.fleet.all_synced()
    }

    pub fn service_monitors_available(&self) -> bool {
        self.service_monitor_api.available()
    }

    /// Run `f` with the bot's memory (keyed by uid).
    pub fn with_memory<T>(&self, uid: &str, f: impl FnOnce(&mut BotMemory) -> T) -> T {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        f(memory.entry(uid.to_string()).or_default())
    }

    /// Take the bot's memory for one reconcile (the controller never runs two reconciles of
    /// one object at once); give it back with [`Context::keep_memory`].
    pub fn take_memory(&self, uid: &str) -> BotMemory {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory.remove(uid).unwrap_or_default()
    }

    pub fn keep_memory(&self, uid: &str, bot: BotMemory) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory.insert(uid.to_string(), bot);
    }

    /// Run `f` with an account's memory (keyed by uid).
    pub fn with_account_memory<T>(&self, uid: &str, f: impl FnOnce(&mut AccountMemory) -> T) -> T {
        let mut memory = self.account_memory.lock().unwrap_or_else(|p| p.into_inner());
        f(memory.entry(uid.to_string()).or_default())
    }

    pub fn forget_account(&self, uid: &str) {
        self.account_memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    pub fn forget(&self, uid: &str) {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::{STATUS_PROOF_LIFETIME, StatusWrites};
    use std::time::{Duration, Instant};

    #[test]
    fn status_writes_are_proven_per_namespace_by_a_recent_success_sent_after_the_last_refusal() {
        let writes = StatusWrites::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!writes.proven("trading", t0), "nothing written yet: unproven");
        writes.record("trading", true, t0);
        assert!(writes.proven("trading", at(1)));
        assert!(!writes.proven("other", at(1)), "proof is per namespace");
        assert!(
            !writes.proven("trading", t0 + STATUS_PROOF_LIFETIME),
            "a proof from a quiet spell is too old"
        );
        writes.record("trading", false, at(10));
        assert!(!writes.proven("trading", at(11)), "a refusal takes the proof away");
        writes.record("trading", true, at(9));
        assert!(
            !writes.proven("trading", at(12)),
            "a success sent before the refusal (answered after it) proves nothing"
        );
        writes.record("trading", true, at(12));
        assert!(writes.proven("trading", at(13)));
    }
}

//! Step 5, apply (I/O): one strategy for every child and one helper for removing the ones no
//! longer wanted. Nothing here fails the reconcile: each refusal is collected as a
//! [`ChildProblem`] (reported as a condition and an Event, retried with backoff), so no child
//! write can stand between a guard trip and `status.mode`.
//!
//! * Only objects whose controller owner reference is this TradingBot are ever updated or
//!   deleted; a same-named object of anyone else is reported and left alone.
//! * An unchanged child (cached desired-hash equal) is not written: an idle operator writes
//!   nothing. A missing one is created (never server-side applied over something unseen).
//! * Bot pods are replaced stop-then-start (one identity never has two pods); a replacement for
//!   the operator's own sake waits for the fleet's restart budget.

use super::desired::{DesiredChildren, InstanceChildren};
use super::observe::{Observed, Ownership, PerInstance, PodView, Slot, ownership};
use super::restarts::{self, InstanceKey};
use crate::context::{BotMemory, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::time::{Duration, Instant};
use tradingbot_crds::Instance;
use tradingbot_crds::names::{
    ANNOTATION_DESIRED_HASH, ANNOTATION_POD_TEMPLATE_HASH, ANNOTATION_SPEC_HASH, ANNOTATION_VERSION, FIELD_MANAGER,
    InstanceNames,
};

/// How long a verified Lease is trusted to exist before it is looked at again.
const LEASE_RECHECK: Duration = Duration::from_secs(300);

/// How long a ServiceMonitor found as desired is trusted before it is looked at again (the
/// operator has no cache of them: their API may come and go while it runs). A bot is
/// reconciled after every scrape; without this each would cost a GET. One deleted by hand is
/// back within this long.
pub const SERVICE_MONITOR_RECHECK: Duration = Duration::from_secs(60);

/// A bot's ServiceMonitor as last found: as desired with this hash, while the API had appeared
/// this many times, at this moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundServiceMonitor {
    pub hash: String,
    pub api_appearances: u64,
    pub at: Instant,
}

/// Why a child is not as desired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildIssue {
    /// The API server refused the write (quota, admission, RBAC, conflict, outage...).
    WriteFailed(String),
    /// An object of that name exists but is not controlled by this TradingBot.
    OwnedByOther(String),
}

/// One child that is not as desired, named by kind and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildProblem {
    pub kind: String,
    pub name: String,
    pub issue: ChildIssue,
}

impl std::fmt::Display for ChildProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.issue {
            ChildIssue::WriteFailed(message) => write!(f, "{} {}: {message}", self.kind, self.name),
            ChildIssue::OwnedByOther(owner) => write!(
                f,
                "{} {} exists but belongs to {owner}: not touched (rename or remove it)",
                self.kind, self.name
            ),
        }
    }
}

/// What happened to a bot pod this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStep {
    /// It is as desired (or absent and not wanted).
    Steady,
    Created,
    /// The old pod was asked to stop (it gets its grace period to cancel orders).
    Stopping {
        why: String,
    },
    /// An old pod is still terminating: the new one waits.
    WaitingForStop,
    /// A replacement for the operator's sake waits for the fleet's restart budget.
    RestartDeferred {
        restarting: usize,
    },
    /// Not touched: a dependency failed, or the pod belongs to someone else.
    Blocked,
}

impl PodStep {
    pub fn is_waiting(&self) -> bool {
        !matches!(self, PodStep::Steady | PodStep::Blocked)
    }
}

/// What the apply step did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    pub pods: PerInstance<Option<PodStep>>,
    pub problems: Vec<ChildProblem>,
    /// The ServiceMonitor is in place (None: not wanted or the API is missing).
    pub service_monitor: Option<bool>,
}

/// How long one child request may take: a slow API server must not hold up the next
/// reconcile of this bot (and with it the next guard trip) for long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A child request that did not succeed.
#[derive(Debug)]
enum WriteError {
    Api(kube::Error),
    TimedOut,
}

/// Run one child request within [`WRITE_TIMEOUT`].
async fn bounded<T>(request: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, WriteError> {
    match tokio::time::timeout(WRITE_TIMEOUT, request).await {
        Ok(result) => result.map_err(WriteError::Api),
        Err(_) => Err(WriteError::TimedOut),
    }
}

/// The API's own words for a refused request (never more: no request bodies, no secrets).
fn api_message(error: &WriteError) -> String {
    match error {
        WriteError::Api(kube::Error::Api(e)) => format!("{} ({} {})", e.message, e.code, e.reason),
        WriteError::Api(other) => other.to_string(),
        WriteError::TimedOut => format!("no answer within {} s", WRITE_TIMEOUT.as_secs()),
    }
}

fn is_code(error: &WriteError, code: u16) -> bool {
    matches!(error, WriteError::Api(kube::Error::Api(e)) if e.code == code)
}

/// A ServiceMonitor found as desired is trusted while the same thing is desired, its API has
/// not appeared again since (a CRD removed and installed again takes every ServiceMonitor
/// with it) and the recheck interval has not passed.
fn still_trusted(
    found: Option<&FoundServiceMonitor>,
    wanted_hash: Option<&str>,
    api_appearances: u64,
    now: Instant,
) -> bool {
    found.is_some_and(|f| {
        Some(f.hash.as_str()) == wanted_hash
            && f.api_appearances == api_appearances
            && now.saturating_duration_since(f.at) < SERVICE_MONITOR_RECHECK
    })
}

fn hash_of(meta: &kube::api::ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
}

/// Writes the children of one bot and collects what went wrong. Requests of one pass that do
/// not depend on each other run at once (`&self`: the problems are collected behind a lock).
pub struct Writer<'a> {
    ctx: &'a Context,
    namespace: String,
    uid: String,
    problems: std::sync::Mutex<Vec<ChildProblem>>,
}

impl<'a> Writer<'a> {
    pub fn new(ctx: &'a Context, observed: &Observed) -> Self {
        Self {
            ctx,
            namespace: observed.namespace.clone(),
            uid: observed.uid.clone(),
            problems: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// What went wrong, in a stable order (requests run concurrently finish in any order; the
    /// condition and Events built from these must not change when nothing else did).
    pub fn into_problems(self) -> Vec<ChildProblem> {
        let mut problems = self.problems.into_inner().unwrap_or_else(|p| p.into_inner());
        problems.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
        problems
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn problem(&self, kind: &str, name: &str, issue: ChildIssue) -> bool {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ChildProblem {
                kind: kind.to_string(),
                name: name.to_string(),
                issue,
            });
        false
    }

    /// Make the child named like `desired` match it. True when it does (or now will).
    pub async fn apply<K>(&self, store: &Store<PartialObjectMeta<K>>, desired: &K) -> bool
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + Debug,
    {
        let (kind, name) = (K::kind(&()).to_string(), desired.name_any());
        let cached = store.get(&ObjectRef::new(&name).within(&self.namespace));
        let api = self.api::<K>();
        match cached {
            Some(cached) => {
                if let Ownership::Other { owner } = ownership(&cached.metadata, &self.uid) {
                    return self.problem(&kind, &name, ChildIssue::OwnedByOther(owner));
                }
                let wanted = hash_of(desired.meta(), ANNOTATION_DESIRED_HASH);
                if hash_of(&cached.metadata, ANNOTATION_DESIRED_HASH) == wanted {
                    return true;
                }
                let params = PatchParams::apply(FIELD_MANAGER).force();
                match bounded(api.patch(&name, &params, &Patch::Apply(desired))).await {
                    Ok(_) => {
                        self.ctx.metrics.wrote("apply", &K::plural(&()));
                        true
                    }
                    Err(error) => self.problem(&kind, &name, ChildIssue::WriteFailed(api_message(&error))),
                }
            }
            None => self.create(&api, &kind, desired).await,
        }
    }

    /// Create `desired`; if something of that name exists (not in our cache), find out whose.
    async fn create<K>(&self, api: &Api<K>, kind: &str, desired: &K) -> bool
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let name = desired.name_any();
        match bounded(api.create(&PostParams::default(), desired)).await {
            Ok(_) => {
                self.ctx.metrics.wrote("create", &K::plural(&()));
                true
            }
            Err(error) if is_code(&error, 409) => match bounded(api.get_metadata_opt(&name)).await {
                Ok(Some(existing)) => match ownership(&existing.metadata, &self.uid) {
                    // Ours, and the cache has not seen it yet: the next pass compares hashes.
                    Ownership::Ours => true,
                    Ownership::Other { owner } => self.problem(kind, &name, ChildIssue::OwnedByOther(owner)),
                },
                Ok(None) => true,
                Err(error) => self.problem(kind, &name, ChildIssue::WriteFailed(api_message(&error))),
            },
            Err(error) => self.problem(kind, &name, ChildIssue::WriteFailed(api_message(&error))),
        }
    }

    /// Delete the child `name` if the cache has it and it is ours (the one orphan helper).
    pub async fn remove<K>(&self, store: &Store<PartialObjectMeta<K>>, name: &str)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let Some(cached) = store.get(&ObjectRef::new(name).within(&self.namespace)) else {
            return;
        };
        if ownership(&cached.metadata, &self.uid) != Ownership::Ours || cached.metadata.deletion_timestamp.is_some() {
            return;
        }
        let kind = K::kind(&()).to_string();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: cached.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match bounded(self.api::<K>().delete(name, &params)).await {
            Ok(_) => self.ctx.metrics.wrote("delete", &K::plural(&())),
            Err(error) if is_code(&error, 404) => {}
            Err(error) => {
                self.problem(&kind, name, ChildIssue::WriteFailed(api_message(&error)));
            }
        }
    }

    /// Make sure the identity Lease exists and is usable. Leases are not cached (bots renew
    /// them every few seconds): one verified (at `verified_at`) is trusted for a while. Some
    /// time when it was verified now. A bot never reconciled before (`new_bot`) most likely has
    /// none: it is created at once, and looked up only if that is refused.
    pub async fn lease(&self, desired: &Lease, verified_at: Option<Instant>, new_bot: bool) -> Option<Instant> {
        if verified_at.is_some_and(|at| at.elapsed() < LEASE_RECHECK) {
            return verified_at;
        }
        let name = desired.name_any();
        let api = self.api::<Lease>();
        // Any refusal (one there already, or a full quota that counts it) is looked into below.
        if new_bot && bounded(api.create(&PostParams::default(), desired)).await.is_ok() {
            self.ctx.metrics.wrote("create", "leases");
            return Some(Instant::now());
        }
        let ok = match bounded(api.get_metadata_opt(&name)).await {
            Ok(None) => self.create(&api, "Lease", desired).await,
            Ok(Some(existing)) => match ownership(&existing.metadata, &self.uid) {
                Ownership::Ours => true,
                // Bots before 0.2 created their own Lease without an owner: still usable.
                Ownership::Other { .. } if existing.metadata.owner_references.is_none() => true,
                Ownership::Other { owner } => self.problem("Lease", &name, ChildIssue::OwnedByOther(owner)),
            },
            Err(error) => self.problem("Lease", &name, ChildIssue::WriteFailed(api_message(&error))),
        };
        ok.then(Instant::now)
    }

    /// Apply (or, when switched off, remove the one it created: `had_one`) the ServiceMonitor.
    /// Some(true) when in place. A bot that never asked for one costs no request, and one
    /// found as desired is trusted for [`SERVICE_MONITOR_RECHECK`] (`verified`: the desired
    /// hash it was found with, and when) unless what is desired changes.
    pub async fn service_monitor(
        &self,
        desired: Option<&DynamicObject>,
        name: &str,
        had_one: bool,
        verified: &mut Option<FoundServiceMonitor>,
    ) -> Option<bool> {
        let wanted_hash = desired.and_then(|d| hash_of(&d.metadata, ANNOTATION_DESIRED_HASH));
        let api = &self.ctx.service_monitor_api;
        let now = Instant::now();
        if api.available() && still_trusted(verified.as_ref(), wanted_hash.as_deref(), api.appearances(), now) {
            return Some(true);
        }
        let result = self.check_service_monitor(desired, name, had_one).await;
        *verified = match (result, wanted_hash) {
            (Some(true), Some(hash)) => Some(FoundServiceMonitor {
                hash,
                api_appearances: api.appearances(),
                at: now,
            }),
            _ => None,
        };
        result
    }

    async fn check_service_monitor(&self, desired: Option<&DynamicObject>, name: &str, had_one: bool) -> Option<bool> {
        if !self.ctx.service_monitors_available() || (desired.is_none() && !had_one) {
            return None;
        }
        let resource = super::desired::service_monitor_resource();
        let api: Api<DynamicObject> = Api::namespaced_with(self.ctx.client.clone(), &self.namespace, &resource);
        let live = match bounded(api.get_metadata_opt(name)).await {
            Ok(live) => live,
            Err(error) => {
                self.problem("ServiceMonitor", name, ChildIssue::WriteFailed(api_message(&error)));
                return desired.map(|_| false);
            }
        };
        if let Some(live) = &live
            && let Ownership::Other { owner } = ownership(&live.metadata, &self.uid)
        {
            self.problem("ServiceMonitor", name, ChildIssue::OwnedByOther(owner));
            return desired.map(|_| false);
        }
        let result = match (desired, &live) {
            (None, None) => return None,
            (None, Some(_)) => bounded(api.delete(name, &DeleteParams::default()))
                .await
                .map(|_| "delete"),
            (Some(d), Some(l))
                if hash_of(&l.metadata, ANNOTATION_DESIRED_HASH) == hash_of(&d.metadata, ANNOTATION_DESIRED_HASH) =>
            {
                return Some(true);
            }
            (Some(d), _) => bounded(api.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(d)))
                .await
                .map(|_| "apply"),
        };
        match result {
            Ok(verb) => {
                self.ctx.metrics.wrote(verb, "servicemonitors");
                desired.map(|_| true)
            }
            Err(error) if is_code(&error, 404) => None,
            Err(error) => {
                self.problem("ServiceMonitor", name, ChildIssue::WriteFailed(api_message(&error)));
                desired.map(|_| false)
            }
        }
    }

    /// Delete `pod` (exactly that object: its uid is a precondition).
    async fn delete_pod(&self, pod: &PodView) -> bool {
        let name = pod.name();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match bounded(self.api::<Pod>().delete(&name, &params)).await {
            Ok(_) => {
                self.ctx.metrics.wrote("delete", "pods");
                true
            }
            Err(error) if is_code(&error, 404) => true,
            Err(error) => self.problem("Pod", &name, ChildIssue::WriteFailed(api_message(&error))),
        }
    }

    /// Stop `slot`'s pod when it is ours (None wanted).
    pub async fn stop_pod(&self, slot: &Slot<PodView>) -> PodStep {
        match slot {
            Slot::Absent | Slot::Other { .. } => PodStep::Steady,
            Slot::Ours(pod) if pod.terminating => PodStep::WaitingForStop,
            Slot::Ours(pod) => {
                if self.delete_pod(pod).await {
                    PodStep::Stopping {
                        why: "no longer wanted".into(),
                    }
                } else {
                    PodStep::Blocked
                }
            }
        }
    }

    /// Make the pod in `slot` match `desired`: create it when absent; when it differs, stop it
    /// and create the new one only once it is gone.
    pub async fn ensure_pod(&self, slot: &Slot<PodView>, desired: &Pod, key: InstanceKey) -> PodStep {
        let name = desired.name_any();
        let pod = match slot {
            Slot::Other { owner } => {
                self.problem("Pod", &name, ChildIssue::OwnedByOther(owner.clone()));
                return PodStep::Blocked;
            }
            Slot::Absent => return self.create_pod(desired).await,
            Slot::Ours(pod) => pod,
        };
        if pod.terminating {
            return PodStep::WaitingForStop;
        }
        if hash_of(&pod.pod.metadata, ANNOTATION_POD_TEMPLATE_HASH)
            == hash_of(&desired.metadata, ANNOTATION_POD_TEMPLATE_HASH)
        {
            if pod.ready {
                self.ctx.restarts.finish(&key);
            }
            return PodStep::Steady;
        }
        let spec_changed = hash_of(&pod.pod.metadata, ANNOTATION_SPEC_HASH)
            .is_some_and(|live| Some(live) != hash_of(&desired.metadata, ANNOTATION_SPEC_HASH));
        if !spec_changed {
            let busy = restarts::busy_instances(&self.ctx.stores.pods, self.ctx.restarts.ready_timeout());
            if let Err(restarting) = self.ctx.restarts.try_begin(&key, busy, Instant::now()) {
                return PodStep::RestartDeferred { restarting };
            }
        }
        let version = |p: &Pod| p.annotations().get(ANNOTATION_VERSION).cloned().unwrap_or_default();
        let (from, to) = (version(&pod.pod), version(desired));
        let why = match (from == to, spec_changed) {
            (false, _) => format!("version {from} -> {to}"),
            (true, true) => format!("its configuration changed (version {to})"),
            (true, false) => {
                format!("the operator's pod template changed (version {to}); restarts are rolled across the fleet")
            }
        };
        if self.delete_pod(pod).await {
            PodStep::Stopping { why }
        } else {
            PodStep::Blocked
        }
    }

    async fn create_pod(&self, desired: &Pod) -> PodStep {
        let name = desired.name_any();
        match bounded(self.api::<Pod>().create(&PostParams::default(), desired)).await {
            Ok(_) => {
                self.ctx.metrics.wrote("create", "pods");
                PodStep::Created
            }
            // Something of that name exists that the cache has not seen (or is not ours).
            Err(error) if is_code(&error, 409) => {
                let existing = bounded(self.api::<Pod>().get_metadata_opt(&name)).await;
                match existing.map(|e| e.map(|e| ownership(&e.metadata, &self.uid))) {
                    Ok(Some(Ownership::Other { owner })) => {
                        self.problem("Pod", &name, ChildIssue::OwnedByOther(owner));
                        PodStep::Blocked
                    }
                    _ => PodStep::WaitingForStop,
                }
            }
            Err(error) => {
                self.problem("Pod", &name, ChildIssue::WriteFailed(api_message(&error)));
                PodStep::Blocked
            }
        }
    }
}

fn key(observed: &Observed, instance: Instance) -> InstanceKey {
    (observed.namespace.clone(), observed.name.clone(), instance.to_string())
}

/// What one instance's pod needs besides the bot's shared children, made to match: its Lease,
/// ConfigMap and Service, at once. Whether the pod may be started (the Service is for
/// Prometheus: the pod does not wait for it), and when the Lease was verified.
async fn prepare_instance(
    writer: &Writer<'_>,
    wanted: &InstanceChildren,
    lease_verified_at: Option<Instant>,
    new_bot: bool,
) -> (bool, Option<Instant>) {
    let s = &writer.ctx.stores;
    let (lease, config_ok, _) = futures::join!(
        writer.lease(&wanted.lease, lease_verified_at, new_bot),
        writer.apply(&s.config_maps, &wanted.config_map),
        writer.apply(&s.services, &wanted.service),
    );
    (lease.is_some() && config_ok, lease)
}

/// Remove the children of an instance that is no longer wanted (and left-overs under legacy
/// names), pod first.
async fn remove_instance(writer: &Writer<'_>, slot: &Slot<PodView>, names: &InstanceNames) -> PodStep {
    let step = writer.stop_pod(slot).await;
    let s = &writer.ctx.stores;
    futures::join!(
        writer.remove(&s.config_maps, &names.config_map),
        writer.remove(&s.services, &names.service),
    );
    step
}

/// What a pass does with one instance.
enum InstancePlan<'a> {
    /// Make its children match these.
    Converge(&'a InstanceChildren),
    /// Remove its children (pod first): it is no longer wanted.
    Remove,
    /// Touch nothing of it this pass.
    Leave(PodStep),
}

/// Whether an instance's pod may be started (its dependencies are in place) and when its Lease
/// was verified; or, for one that is removed or left, its pod's step.
type FirstRound = Result<(bool, Option<Instant>), PodStep>;

/// One instance in the first round of a pass.
async fn first_round(
    writer: &Writer<'_>,
    observed: &Observed,
    instance: Instance,
    plan: &InstancePlan<'_>,
    memory: &BotMemory,
) -> FirstRound {
    match plan {
        InstancePlan::Converge(wanted) => {
            let verified = memory.leases_verified.get(&wanted.lease.name_any()).copied();
            let new_bot = observed.bot.status.is_none();
            Ok(prepare_instance(writer, wanted, verified, new_bot).await)
        }
        InstancePlan::Remove => {
            let names = InstanceNames::new(&observed.name, instance);
            Err(remove_instance(writer, observed.pods.get(instance), &names).await)
        }
        InstancePlan::Leave(step) => Err(step.clone()),
    }
}

/// The pod of one instance, once the first round is done (`shared`: the ServiceAccount and
/// Role are in place).
async fn pod_round(
    writer: &Writer<'_>,
    observed: &Observed,
    instance: Instance,
    plan: &InstancePlan<'_>,
    first: &FirstRound,
    shared: bool,
) -> PodStep {
    match (plan, first) {
        (_, Err(step)) => step.clone(),
        (InstancePlan::Converge(wanted), Ok((true, _))) if shared => {
            writer
                .ensure_pod(observed.pods.get(instance), &wanted.pod, key(observed, instance))
                .await
        }
        _ => PodStep::Blocked,
    }
}

/// Converge every child of the bot; never fails (see [`Applied::problems`]). Two rounds of
/// concurrent requests: first everything a pod depends on (ServiceAccount, Role then
/// RoleBinding, each instance's Lease, ConfigMap and Service), the ServiceMonitor and the removal of what is
/// no longer wanted (pods first); then the pods, each only when its dependencies are in place.
/// A canary no longer wanted is thus asked to stop before a promotion replaces prod's pod.
pub async fn converge(
    ctx: &Context,
    observed: &Observed,
    desired: &DesiredChildren,
    memory: &mut BotMemory,
) -> Applied {
    let writer = Writer::new(ctx, observed);
    let s = &ctx.stores;
    let monitor_name = tradingbot_crds::names::bot_service_account(&observed.name);
    let had_monitor = observed.bot.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == super::status::types::SERVICE_MONITOR && c.status == "True")
    });
    let legacy = InstanceNames::legacy_canary(&observed.name);
    let canary = match &desired.instances.canary {
        // A canary under the old names is gone before the new one starts (never two at once).
        Some(_) if observed.legacy_canary_pod.ours().is_some() => InstancePlan::Leave(PodStep::WaitingForStop),
        Some(wanted) => InstancePlan::Converge(wanted),
        None => InstancePlan::Remove,
    };
    let prod = match &desired.instances.prod {
        Some(wanted) => InstancePlan::Converge(wanted),
        None => InstancePlan::Leave(PodStep::Steady),
    };
    let mut service_monitor_verified = memory.service_monitor_verified.clone();
    let (shared, service_monitor, _, canary_first, prod_first) = futures::join!(
        async {
            // The RoleBinding after its Role: the API server checks a new binding against the
            // rules of the Role it names (the operator holds no `bind`), which must exist.
            let (account, role_and_binding) =
                futures::join!(writer.apply(&s.service_accounts, &desired.service_account), async {
                    writer.apply(&s.roles, &desired.role).await
                        & writer.apply(&s.role_bindings, &desired.role_binding).await
                },);
            account && role_and_binding
        },
        writer.service_monitor(
            desired.service_monitor.as_ref(),
            &monitor_name,
            had_monitor,
            &mut service_monitor_verified,
        ),
        remove_instance(&writer, &observed.legacy_canary_pod, &legacy),
        first_round(&writer, observed, Instance::Canary, &canary, memory),
        first_round(&writer, observed, Instance::Prod, &prod, memory),
    );
    memory.service_monitor_verified = service_monitor_verified;
    for (plan, first) in [(&canary, &canary_first), (&prod, &prod_first)] {
        if let (InstancePlan::Converge(wanted), Ok((_, Some(at)))) = (plan, first) {
            memory.leases_verified.insert(wanted.lease.name_any(), *at);
        }
    }
    let (canary_step, prod_step) = futures::join!(
        pod_round(&writer, observed, Instance::Canary, &canary, &canary_first, shared),
        pod_round(&writer, observed, Instance::Prod, &prod, &prod_first, shared),
    );
    Applied {
        pods: PerInstance {
            prod: Some(prod_step),
            canary: Some(canary_step),
        },
        problems: writer.into_problems(),
        service_monitor,
    }
}

/// Deletion: stop the pods the decision says to stop.
pub async fn stop(ctx: &Context, observed: &Observed, stops: &PerInstance<super::decide::Stop>) -> Applied {
    let writer = Writer::new(ctx, observed);
    let mut steps = PerInstance::default();
    for instance in [Instance::Prod, Instance::Canary] {
        let step = match stops.get(instance) {
            super::decide::Stop::Now { .. } => writer.stop_pod(observed.pods.get(instance)).await,
            super::decide::Stop::Wait => PodStep::WaitingForStop,
            super::decide::Stop::Nothing => PodStep::Steady,
        };
        match instance {
            Instance::Prod => steps.prod = Some(step),
            Instance::Canary => steps.canary = Some(step),
        }
    }
    Applied {
        pods: steps,
        problems: writer.into_problems(),
        service_monitor: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_monitor_found_as_desired_is_trusted_until_the_recheck_a_change_or_a_new_api() {
        let at = Instant::now();
        let found = FoundServiceMonitor {
            hash: "h1".into(),
            api_appearances: 1,
            at,
        };
        let later = |seconds| at + Duration::from_secs(seconds);
        assert!(
            still_trusted(Some(&found), Some("h1"), 1, later(59)),
            "same desire, same API, just checked"
        );
        assert!(!still_trusted(Some(&found), Some("h1"), 1, later(60)), "recheck due");
        assert!(
            !still_trusted(Some(&found), Some("h2"), 1, at),
            "what is desired changed"
        );
        assert!(
            !still_trusted(Some(&found), None, 1, at),
            "no longer desired: look (and remove)"
        );
        assert!(
            !still_trusted(Some(&found), Some("h1"), 2, at),
            "the API appeared again since"
        );
        assert!(!still_trusted(None, Some("h1"), 1, at), "never found: look");
    }
}

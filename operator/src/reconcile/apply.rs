//! Writing to the API server: server-side apply under one field manager, skipped when the
//! cached child already carries the desired hash (so an idle operator writes nothing), and
//! the stop-then-start replacement of bot pods (one identity never has two pods).

use crate::metrics::OperatorMetrics;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tradingbot_crds::names::{ANNOTATION_DESIRED_HASH, ANNOTATION_POD_TEMPLATE_HASH, FIELD_MANAGER};

fn hash_of(meta: &kube::api::ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
}

/// Server-side apply `desired` unless the cached copy already has its hash. Returns whether
/// a write happened.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    store: &Store<PartialObjectMeta<K>>,
    desired: &K,
    metrics: &OperatorMetrics,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    let cached = store.get(&ObjectRef::new(&name).within(&namespace));
    let wanted = hash_of(desired.meta(), ANNOTATION_DESIRED_HASH);
    if cached.is_some_and(|c| hash_of(&c.metadata, ANNOTATION_DESIRED_HASH) == wanted) {
        return Ok(false);
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    metrics.wrote("apply", &K::plural(&()));
    Ok(true)
}

/// Apply a ServiceMonitor unless the live one already carries the desired hash.
pub async fn apply_service_monitor(
    api: &Api<DynamicObject>,
    desired: &DynamicObject,
    metrics: &OperatorMetrics,
) -> Result<bool, kube::Error> {
    let name = desired.name_any();
    let live = api.get_opt(&name).await?;
    let wanted = hash_of(&desired.metadata, ANNOTATION_DESIRED_HASH);
    if live.is_some_and(|l| hash_of(&l.metadata, ANNOTATION_DESIRED_HASH) == wanted) {
        return Ok(false);
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(desired),
    )
    .await?;
    metrics.wrote("apply", "servicemonitors");
    Ok(true)
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
}

fn template_hash(pod: &Pod) -> Option<String> {
    hash_of(&pod.metadata, ANNOTATION_POD_TEMPLATE_HASH)
}

/// Make the pod named like `desired` match it: create it when absent, and when it differs,
/// stop the old one and only create the new one once the old one is gone.
pub async fn ensure_pod(
    api: &Api<Pod>,
    store: &Store<Pod>,
    name: &str,
    namespace: &str,
    desired: Option<&Pod>,
    metrics: &OperatorMetrics,
) -> Result<PodStep, kube::Error> {
    let observed = store.get(&ObjectRef::new(name).within(namespace));
    match (desired, observed) {
        (None, None) => Ok(PodStep::Steady),
        (None, Some(pod)) => {
            if pod.metadata.deletion_timestamp.is_some() {
                return Ok(PodStep::WaitingForStop);
            }
            delete_pod(api, name, metrics).await?;
            Ok(PodStep::Stopping {
                why: "no longer wanted".into(),
            })
        }
        (Some(desired), None) => match api.create(&PostParams::default(), desired).await {
            Ok(_) => {
                metrics.wrote("create", "pods");
                Ok(PodStep::Created)
            }
            // The cache has not seen a pod that still exists: wait for it.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(PodStep::WaitingForStop),
            Err(e) => Err(e),
        },
        (Some(desired), Some(pod)) => {
            if pod.metadata.deletion_timestamp.is_some() {
                return Ok(PodStep::WaitingForStop);
            }
            if template_hash(&pod) == template_hash(desired) {
                return Ok(PodStep::Steady);
            }
            let from = pod
                .annotations()
                .get(tradingbot_crds::names::ANNOTATION_VERSION)
                .cloned()
                .unwrap_or_default();
            let to = desired
                .annotations()
                .get(tradingbot_crds::names::ANNOTATION_VERSION)
                .cloned()
                .unwrap_or_default();
            delete_pod(api, name, metrics).await?;
            let why = if from == to {
                format!("its configuration changed (version {to})")
            } else {
                format!("version {from} -> {to}")
            };
            Ok(PodStep::Stopping { why })
        }
    }
}

async fn delete_pod(api: &Api<Pod>, name: &str, metrics: &OperatorMetrics) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            metrics.wrote("delete", "pods");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

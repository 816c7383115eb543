//! Writes to the operator's own objects (TradingBots, TradingAccounts): their status (always
//! conditional on the resourceVersion the decision was based on, so a decision made from a
//! stale cache can never overwrite a newer status: a latched trip or an accepted
//! acknowledgement is never dropped), and the finalizer that halts bots before they go.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use tradingbot_crds::names::{FIELD_MANAGER, FINALIZER};

/// The objects whose status and finalizer the operator writes.
pub trait Owned: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug {}
impl<K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug> Owned for K {}

/// The resourceVersion a write is conditional on; updated by each successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// Server-side apply of the whole status, refused (409) if the object changed since
/// `version`. Returns the new resourceVersion.
pub async fn write_status<K: Owned>(
    api: &Api<K>,
    object: &K,
    status: &impl Serialize,
    version: &Version,
) -> Result<Version, kube::Error> {
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": version.0},
        "status": status,
    });
    let written = api
        .patch_status(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(Version(written.resource_version().unwrap_or_default()))
}

/// Set the finalizer list, conditional on `version` (a merge patch carrying the
/// resourceVersion: refused with 409 if the TradingBot changed meanwhile).
async fn set_finalizers<K: Owned>(
    api: &Api<K>,
    bot: &K,
    finalizers: Vec<String>,
    version: &Version,
) -> Result<Version, kube::Error> {
    let patch = json!({"metadata": {"resourceVersion": version.0, "finalizers": finalizers}});
    let written = api
        .patch(&bot.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Version(written.resource_version().unwrap_or_default()))
}

/// Add the halt-before-delete finalizer if it is missing. Returns the new resourceVersion.
pub async fn ensure_finalizer<K: Owned>(api: &Api<K>, bot: &K, version: Version) -> Result<Version, kube::Error> {
    if bot.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(version);
    }
    let mut finalizers = bot.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    set_finalizers(api, bot, finalizers, &version).await
}

/// Remove the finalizer (the bot is halted and its pods are gone; no bot uses the account).
pub async fn remove_finalizer<K: Owned>(api: &Api<K>, bot: &K, version: &Version) -> Result<(), kube::Error> {
    if !bot.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let finalizers = bot.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    match set_finalizers(api, bot, finalizers, version).await {
        Ok(_) => Ok(()),
        // Already gone with its finalizers: nothing left to do.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

//! Writes to the TradingBot itself: its status (always conditional on the resourceVersion the
//! decision was based on, so a decision made from a stale cache can never overwrite a newer
//! status: a latched trip or an accepted acknowledgement is never dropped), and the finalizer
//! that halts the bot before its children go.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tradingbot_crds::names::{FIELD_MANAGER, FINALIZER};
use tradingbot_crds::{TradingBot, TradingBotStatus};

/// The resourceVersion a write is conditional on; updated by each successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// Server-side apply of the whole status, refused (409) if the TradingBot changed since
/// `version`. Returns the new resourceVersion.
pub async fn write_status(
    api: &Api<TradingBot>,
    bot: &TradingBot,
    status: &TradingBotStatus,
    version: &Version,
) -> Result<Version, kube::Error> {
    let patch = json!({
        "apiVersion": TradingBot::api_version(&()),
        "kind": TradingBot::kind(&()),
        "metadata": {"resourceVersion": version.0},
        "status": status,
    });
    let written = api
        .patch_status(
            &bot.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(Version(written.resource_version().unwrap_or_default()))
}

/// Set the finalizer list, conditional on `version` (a merge patch carrying the
/// resourceVersion: refused with 409 if the TradingBot changed meanwhile).
async fn set_finalizers(
    api: &Api<TradingBot>,
    bot: &TradingBot,
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
pub async fn ensure_finalizer(
    api: &Api<TradingBot>,
    bot: &TradingBot,
    version: Version,
) -> Result<Version, kube::Error> {
    if bot.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(version);
    }
    let mut finalizers = bot.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    set_finalizers(api, bot, finalizers, &version).await
}

/// Remove the finalizer (the bot is halted and its pods are gone).
pub async fn remove_finalizer(api: &Api<TradingBot>, bot: &TradingBot, version: &Version) -> Result<(), kube::Error> {
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

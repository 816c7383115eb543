//! Reconciling one TradingAccount: gather its bots and what their latest scrapes say, decide
//! (pure, [`decide`]) the totals, trips, acknowledgements and the account's mode, write status
//! (conditional on the resourceVersion), and have every bot on the account reconciled when the
//! account's mode changed, so each bot's `status.mode` is never looser than its account's.
//!
//! A finalizer keeps the account while bots still name it: a deleted account halts its bots
//! (they see it being deleted) and goes only once no bot uses it.

pub mod decide;

use crate::context::Context;
use crate::reconcile::backoff;
use crate::reconcile::enforce::{self, Version};
use decide::{AccountInputs, BotFigures};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::Duration;
use tradingbot_crds::Instance;
use tradingbot_crds::TradingBot;
use tradingbot_crds::account::TradingAccount;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{account}: writing status: {source}")]
    Status {
        account: String,
        #[source]
        source: kube::Error,
    },
    #[error("{account}: updating the finalizer: {source}")]
    Finalizer {
        account: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    fn source_error(&self) -> &kube::Error {
        match self {
            Error::Status { source, .. } | Error::Finalizer { source, .. } => source,
        }
    }

    pub fn reason(&self) -> String {
        let step = match self {
            Error::Status { .. } => "account_status",
            Error::Finalizer { .. } => "account_finalizer",
        };
        match self.source_error() {
            kube::Error::Api(e) => format!("{step}_api_{}", e.code),
            _ => format!("{step}_api_unreachable"),
        }
    }
}

/// An idle account is looked at again after this long anyway (its bots' scrapes trigger it).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

fn figures(ctx: &Context, bot: &TradingBot) -> BotFigures {
    let namespace = bot.namespace().unwrap_or_default();
    let name = bot.name_any();
    let observation = ctx.scraper.observation(&crate::reconcile::observe::target_key(
        &namespace,
        &name,
        Instance::Prod,
    ));
    // The last successful sample counts even when the latest scrape failed: a loss does not
    // disappear because its bot's metrics cannot be read for a moment.
    BotFigures::from_sample(
        namespace,
        name,
        observation.as_ref().and_then(|o| o.sample.as_ref()),
        bot.status.as_ref().and_then(|s| s.mode),
        observation.as_ref().map_or(0, |o| o.ok_count),
    )
}

pub async fn reconcile(account: Arc<TradingAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    if !ctx.shard.owns_account(&account) {
        return Ok(Action::await_change());
    }
    let namespace = account.namespace().unwrap_or_default();
    let name = account.name_any();
    let label = format!("{namespace}/{name}");
    let bots: Vec<BotFigures> = ctx
        .fleet
        .bots_on(&namespace, &name)
        .iter()
        .filter(|b| account.allows(&b.namespace().unwrap_or_default()))
        .map(|b| figures(&ctx, b))
        .collect();
    let uid = account.uid().unwrap_or_default();
    let decision = ctx.with_account_memory(&uid, |memory| {
        decide::decide(
            &AccountInputs {
                account: &account,
                bots: &bots,
                now: Timestamp::now(),
            },
            memory,
        )
    });
    let api: Api<TradingAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let old = account.status.clone().unwrap_or_default();
    let mut version = Version(account.resource_version().unwrap_or_default());
    if decision.status != old {
        version = enforce::write_status(&api, account.as_ref(), &decision.status, &version)
            .await
            .map_err(|source| Error::Status {
                account: label.clone(),
                source,
            })?;
        ctx.metrics.wrote("apply", "tradingaccounts/status");
    }
    if decision.status.mode != old.mode || decision.status.trips != old.trips {
        ctx.fleet.trigger_bots_on(&namespace, &name);
    }
    for notice in &decision.notices {
        ctx.events.publish(account.as_ref(), notice).await;
    }
    for trip in &decision.tripped {
        ctx.metrics
            .account_trips
            .with_label_values(&[&trip.limit, trip.level.as_str()])
            .inc();
    }
    ctx.metrics
        .record_account(&namespace, &name, Some((&decision.status, &account.spec.limits)));
    finalizer_step(&api, &account, version, bots.is_empty(), &ctx, &label).await
}

async fn finalizer_step(
    api: &Api<TradingAccount>,
    account: &TradingAccount,
    version: Version,
    no_bots: bool,
    ctx: &Context,
    label: &str,
) -> Result<Action, Error> {
    let failed = |source| Error::Finalizer {
        account: label.to_string(),
        source,
    };
    if account.metadata.deletion_timestamp.is_none() {
        enforce::ensure_finalizer(api, account, version).await.map_err(failed)?;
        return Ok(Action::requeue(IDLE_RECHECK));
    }
    if !no_bots {
        // Its bots are halted (they see the account going) until they are gone or moved.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    enforce::remove_finalizer(api, account, &version)
        .await
        .map_err(failed)?;
    ctx.forget_account(&account.uid().unwrap_or_default());
    ctx.metrics
        .record_account(&account.namespace().unwrap_or_default(), &account.name_any(), None);
    Ok(Action::await_change())
}

pub fn error_policy(_account: Arc<TradingAccount>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.with_label_values(&[&error.reason()]).inc();
    tracing::warn!(%error, "account reconcile failed; retrying");
    Action::requeue(backoff(2))
}

//! Reconciling one TradingBot, as a short pipeline over typed values:
//!
//! 1. gather ([`observe`]): caches and scrapes only, every child classified by its owner;
//! 2. validate and decide ([`decide`], pure): trips, acknowledgements and the mode
//!    ([`trading`]), the rollout ([`rollout`]), the desired children ([`desired`]);
//! 3. enforce ([`enforce`]): the mode, trips and acknowledgements reach status *first*,
//!    conditional on the resourceVersion decided from, before any child or Secret is touched
//!    (a new bot that nothing but its own spec restricts gets its first status in step 5:
//!    [`decide::enforcement_can_wait`]);
//! 4. apply ([`apply`]): children converge; a refused write is collected, never fatal;
//! 5. report ([`report`], pure): the rest of status and the Events, written only on change.
//!
//! Deletion is an input to the same steps: the mode becomes Halted, pods stop once their bot
//! reports it, then the finalizer goes and the children follow through owner references.

pub mod actors;
pub mod apply;
pub mod audit;
pub mod brake;
pub mod decide;
pub mod desired;
pub mod enforce;
#[cfg(test)]
mod fixtures;
pub mod notice;
pub mod observe;
pub mod report;
pub mod restarts;
pub mod rollout;
pub mod status;
pub mod trading;
pub mod validate;

use crate::context::{BotMemory, Context};
use crate::scrape::{QuietLevels, Relevance};
use apply::Applied;
use decide::{ChildrenPlan, Decision};
use enforce::Version;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use notice::{Notice, Reason};
use observe::{Observed, target_key};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tradingbot_crds::status::{Phase, RolloutPhase, TradingBotStatus};
use tradingbot_crds::{Instance, TradingBot};

/// What failed, with the TradingBot it concerns (`namespace/name`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{bot}: writing the trading state (mode, trips, acknowledgements) to status: {source}")]
    Enforce {
        bot: String,
        #[source]
        source: kube::Error,
    },
    #[error("{bot}: adding the halt-before-delete finalizer: {source}")]
    AddFinalizer {
        bot: String,
        #[source]
        source: kube::Error,
    },
    #[error("{bot}: writing status: {source}")]
    Report {
        bot: String,
        #[source]
        source: kube::Error,
    },
    #[error("{bot}: removing the finalizer: {source}")]
    RemoveFinalizer {
        bot: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    fn source_error(&self) -> &kube::Error {
        match self {
            Error::Enforce { source, .. }
            | Error::AddFinalizer { source, .. }
            | Error::Report { source, .. }
            | Error::RemoveFinalizer { source, .. } => source,
        }
    }

    /// The step that failed and how, as the metrics label.
    pub fn reason(&self) -> String {
        let step = match self {
            Error::Enforce { .. } => "enforce",
            Error::AddFinalizer { .. } => "add_finalizer",
            Error::Report { .. } => "report",
            Error::RemoveFinalizer { .. } => "remove_finalizer",
        };
        match self.source_error() {
            kube::Error::Api(e) => format!("{step}_api_{}", e.code),
            _ => format!("{step}_api_unreachable"),
        }
    }

    /// The TradingBot changed since the decision was made: decide again from the new one.
    pub fn is_conflict(&self) -> bool {
        matches!(self.source_error(), kube::Error::Api(e) if e.code == 409)
    }
}

/// How long an idle bot waits before it is looked at again anyway (reads only).
const IDLE_RECHECK: Duration = Duration::from_secs(300);

/// Exponential backoff with ±20 % jitter: 1 s, 2 s, 4 s ... up to 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1u64 << attempt.min(8)).min(Duration::from_secs(300));
    let jitter: f64 = rand::random::<f64>() * 0.4 + 0.8;
    base.mul_f64(jitter)
}

fn bot_ref(bot: &TradingBot) -> String {
    format!("{}/{}", bot.namespace().unwrap_or_default(), bot.name_any())
}

pub async fn reconcile(bot: Arc<TradingBot>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    if !ctx.shard.owns_bot(&bot) {
        return Ok(let_go(&bot, &ctx));
    }
    let started = Instant::now();
    let uid = bot.uid().unwrap_or_default();
    let (namespace, name) = (bot.namespace().unwrap_or_default(), bot.name_any());
    let mut memory = ctx.take_memory(&uid);
    let result = reconcile_bot(bot, &ctx, &mut memory).await;
    match &result {
        Ok(_) => memory.errors = 0,
        Err(_) => {
            memory.errors = memory.errors.saturating_add(1);
            every_scrape_counts(&ctx, &namespace, &name);
        }
    }
    ctx.keep_memory(&uid, memory);
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciliations.with_label_values(&[outcome]).inc();
    result
}

/// A bot of another shard (its account changed, or it never was ours): nothing of it is kept or
/// scraped here, and it is not reconciled again until it changes.
fn let_go(bot: &TradingBot, ctx: &Context) -> Action {
    forget_bot(
        ctx,
        &bot.namespace().unwrap_or_default(),
        &bot.name_any(),
        &bot.uid().unwrap_or_default(),
    );
    Action::await_change()
}

/// Drop everything this operator holds about a bot: its scrapes, memory, metric series and
/// restart slots.
fn forget_bot(ctx: &Context, namespace: &str, name: &str, uid: &str) {
    ctx.scraper.forget_bot(namespace, name);
    ctx.forget(uid);
    ctx.metrics.record_bot(namespace, name, None);
    let _ = ctx.metrics.scrape_failures.remove_label_values(&[namespace, name]);
    for instance in [Instance::Prod, Instance::Canary] {
        ctx.restarts
            .finish(&(namespace.to_string(), name.to_string(), instance.to_string()));
    }
}

pub fn error_policy(bot: Arc<TradingBot>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.with_label_values(&[&error.reason()]).inc();
    if error.is_conflict() {
        tracing::debug!(%error, "status changed meanwhile; deciding again");
        return Action::requeue(Duration::from_millis(200).mul_f64(rand::random::<f64>() + 1.0));
    }
    let attempts = ctx.with_memory(&bot.uid().unwrap_or_default(), |m| m.errors);
    let wait = backoff(attempts.saturating_sub(1));
    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "reconcile failed; retrying");
    Action::requeue(wait)
}

async fn reconcile_bot(bot: Arc<TradingBot>, ctx: &Context, memory: &mut BotMemory) -> Result<Action, Error> {
    let observed = observe::gather(bot, ctx);
    let decision = decide::decide(&observed, &ctx.settings, memory);
    let (version, stored) = enforce_step(&observed, &decision, ctx).await?;
    let version = finalizer_step(&observed, version, ctx).await?;
    let applied = apply_step(&observed, &decision, ctx, memory).await;
    let report = report::report(&observed, &decision, &applied);
    let written = write_report(&observed, &report.status, &stored, version, ctx).await?;
    publish(&observed, &report.notices, ctx).await;
    audit::log(&observed.namespace, &observed.name, &decision.records.audit);
    record_metrics(ctx, &observed, &report.status, &decision);
    follow_pods(&observed, &report.status, ctx);
    if let Some(account) = &observed.bot.spec.account {
        // The account's totals include this bot's latest scrape.
        let (namespace, name) = account.resolve(&observed.namespace);
        ctx.fleet.trigger_account(&namespace, &name);
    }
    if decision.deletion_complete() {
        return finish_deletion(&observed, &written, ctx).await;
    }
    Ok(next_action(&decision, &applied, memory))
}

fn api(observed: &Observed, ctx: &Context) -> Api<TradingBot> {
    Api::namespaced(ctx.client.clone(), &observed.namespace)
}

/// Step 3: the trading decisions reach status before anything else is attempted (unless
/// [`decide::enforcement_can_wait`], in a namespace where this operator's status writes are
/// known to work: [`crate::context::StatusWrites`]). Returns the version and the status now
/// stored.
async fn enforce_step(
    observed: &Observed,
    decision: &Decision,
    ctx: &Context,
) -> Result<(Version, TradingBotStatus), Error> {
    let bot = &observed.bot;
    let old = bot.status.clone().unwrap_or_default();
    let mut version = Version(bot.resource_version().unwrap_or_default());
    let mut stored = old.clone();
    let can_wait = decide::enforcement_can_wait(observed, decision)
        && ctx.status_writes.proven(&observed.namespace, Instant::now());
    if decision.enforcement != old && !can_wait {
        version = write_bot_status(observed, &decision.enforcement, &version, ctx)
            .await
            .map_err(|source| Error::Enforce {
                bot: bot_ref(bot),
                source,
            })?;
        stored = decision.enforcement.clone();
    }
    audit::log(&observed.namespace, &observed.name, &decision.audit);
    let mut notices = decision.trading.notices.clone();
    notices.extend(status::mode_notice(&old, &decision.enforcement));
    publish(observed, &notices, ctx).await;
    for trip in &decision.trading.tripped {
        ctx.metrics
            .guard_trips
            .with_label_values(&[&trip.guard, trip.level.as_str()])
            .inc();
    }
    Ok((version, stored))
}

async fn finalizer_step(observed: &Observed, version: Version, ctx: &Context) -> Result<Version, Error> {
    if observed.deleting() {
        return Ok(version);
    }
    enforce::ensure_finalizer(&api(observed, ctx), &observed.bot, version)
        .await
        .map_err(|source| Error::AddFinalizer {
            bot: bot_ref(&observed.bot),
            source,
        })
}

/// How long children that keep failing wait at most between attempts.
const CHILDREN_RETRY_CAP: Duration = Duration::from_secs(60);

/// Step 4: children converge (or pods stop, when deleting). Never fails. Children that keep
/// being refused are retried with backoff (not on every scrape-triggered reconcile), and at
/// once when the spec changes.
async fn apply_step(observed: &Observed, decision: &Decision, ctx: &Context, memory: &mut BotMemory) -> Applied {
    let generation = observed.bot.metadata.generation;
    let waiting = memory
        .retry_children_at
        .is_some_and(|at| Instant::now() < at && memory.children_tried_for == generation);
    let applied = match &decision.children {
        ChildrenPlan::Hold => Applied::default(),
        ChildrenPlan::Converge(_) if waiting => Applied {
            problems: memory.last_problems.clone(),
            ..Applied::default()
        },
        ChildrenPlan::Converge(desired) => apply::converge(ctx, observed, desired, memory).await,
        ChildrenPlan::Stop(stops) => apply::stop(ctx, observed, stops).await,
    };
    if waiting && matches!(decision.children, ChildrenPlan::Converge(_)) {
        return applied;
    }
    for problem in &applied.problems {
        tracing::warn!(tradingbot = %observed.name, namespace = %observed.namespace, child = %problem, "child not as desired");
        ctx.metrics
            .child_write_failures
            .with_label_values(&[&problem.kind])
            .inc();
    }
    if applied.problems.is_empty() {
        memory.failed_passes = 0;
        memory.retry_children_at = None;
    } else {
        memory.failed_passes = memory.failed_passes.saturating_add(1);
        let wait = backoff(memory.failed_passes - 1).min(CHILDREN_RETRY_CAP);
        memory.retry_children_at = Some(Instant::now() + wait);
    }
    memory.children_tried_for = generation;
    memory.last_problems = applied.problems.clone();
    applied
}

/// Step 5: the rest of status, when it differs from what is (now) stored: the enforcement
/// status (written, or equal to what was there), or for a new bot whose first status waited,
/// nothing yet.
async fn write_report(
    observed: &Observed,
    status: &TradingBotStatus,
    stored: &TradingBotStatus,
    version: Version,
    ctx: &Context,
) -> Result<Version, Error> {
    if status == stored {
        return Ok(version);
    }
    write_bot_status(observed, status, &version, ctx)
        .await
        .map_err(|source| Error::Report {
            bot: bot_ref(&observed.bot),
            source,
        })
}

/// Write the bot's status (conditional on `version`), counted, and noting whether status
/// writes work in its namespace (a conflict says nothing about that).
async fn write_bot_status(
    observed: &Observed,
    status: &TradingBotStatus,
    version: &Version,
    ctx: &Context,
) -> Result<Version, kube::Error> {
    let sent_at = Instant::now();
    let result = enforce::write_status(&api(observed, ctx), &observed.bot, status, version).await;
    match &result {
        Ok(_) => {
            ctx.metrics.wrote("apply", "tradingbots/status");
            ctx.status_writes.record(&observed.namespace, true, sent_at);
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(_) => ctx.status_writes.record(&observed.namespace, false, sent_at),
    }
    result
}

async fn publish(observed: &Observed, notices: &[Notice], ctx: &Context) {
    for notice in notices {
        ctx.events.publish(observed.bot.as_ref(), notice).await;
    }
}

/// Scrape what runs and is ours (also while paused, degraded or deleting: status stays true),
/// and say which scrapes can change a decision.
fn follow_pods(observed: &Observed, status: &TradingBotStatus, ctx: &Context) {
    let relevance = match ctx.settings.quiet_scrapes {
        true => relevance(observed, status),
        false => Relevance::Every,
    };
    for instance in [Instance::Prod, Instance::Canary] {
        let key = target_key(&observed.namespace, &observed.name, instance);
        ctx.scraper.ensure(key.clone(), observed.scrape_target(instance));
        ctx.scraper.set_relevance(&key, relevance.clone());
    }
}

/// After a failed reconcile, whatever it decided may not be stored (a trip whose status write
/// was refused): until one succeeds, every scrape of the bot asks again, not only one that
/// differs from the scrape the failed attempt was asked by.
fn every_scrape_counts(ctx: &Context, namespace: &str, name: &str) {
    for instance in [Instance::Prod, Instance::Canary] {
        ctx.scraper
            .set_relevance(&target_key(namespace, name, instance), Relevance::Every);
    }
}

/// Every scrape matters while something counts scrapes or reads values continuously: a trip
/// waiting for healthy scrapes, a rollout (gates, analysis, bake), a deletion (the bot reporting
/// Halted), an account (its totals add up the bots' values). A quiet bot's scrape matters only
/// when it changes what the guards see at their levels, or what the bot reports of itself.
pub fn relevance(observed: &Observed, status: &TradingBotStatus) -> Relevance {
    let rollout_quiet = status.rollout.as_ref().is_none_or(|r| {
        matches!(
            r.phase,
            RolloutPhase::Idle | RolloutPhase::Promoted | RolloutPhase::Aborted | RolloutPhase::RolledBack
        )
    });
    let quiet = !observed.deleting()
        && observed.bot.spec.account.is_none()
        && status.trips.is_empty()
        && status.canary_version.is_none()
        && observed.pods.canary.ours().is_none()
        && rollout_quiet;
    if quiet {
        Relevance::GuardLevels(Box::new(QuietLevels {
            guards: observed.bot.spec.guards.clone(),
            unreachable_after: Duration::from_secs(u64::from(observed.bot.spec.metrics.unreachable_after_seconds)),
        }))
    } else {
        Relevance::Every
    }
}

async fn finish_deletion(observed: &Observed, version: &Version, ctx: &Context) -> Result<Action, Error> {
    enforce::remove_finalizer(&api(observed, ctx), &observed.bot, version)
        .await
        .map_err(|source| Error::RemoveFinalizer {
            bot: bot_ref(&observed.bot),
            source,
        })?;
    forget_bot(ctx, &observed.namespace, &observed.name, &observed.uid);
    let removed = Notice::normal(
        Reason::Removed,
        "the bot is halted and its pods are gone; children are garbage-collected",
    );
    publish(observed, &[removed], ctx).await;
    Ok(Action::await_change())
}

fn next_action(decision: &Decision, applied: &Applied, memory: &BotMemory) -> Action {
    // The idle recheck is the safety net: nothing waits longer (a silence deadline can be a day).
    let mut wait = decision.recheck_after.unwrap_or(IDLE_RECHECK).min(IDLE_RECHECK);
    let pods = [&applied.pods.prod, &applied.pods.canary];
    if pods
        .iter()
        .any(|s| matches!(s, Some(apply::PodStep::RestartDeferred { .. })))
    {
        wait = wait.min(Duration::from_secs(5));
    }
    if pods.iter().any(|s| {
        s.as_ref()
            .is_some_and(|s| s.is_waiting() && !matches!(s, apply::PodStep::RestartDeferred { .. }))
    }) {
        wait = wait.min(Duration::from_secs(2));
    }
    if matches!(decision.children, ChildrenPlan::Stop(_)) {
        wait = wait.min(Duration::from_secs(1));
    }
    if let Some(at) = memory.retry_children_at {
        wait = wait.min(
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100)),
        );
    }
    Action::requeue(wait)
}

fn record_metrics(ctx: &Context, observed: &Observed, status: &TradingBotStatus, decision: &Decision) {
    for notice in &decision.notices {
        match notice.reason {
            Reason::RolloutStarted => ctx.metrics.rollouts_started.inc(),
            Reason::RolloutPromoted => ctx.metrics.rollouts_promoted.inc(),
            Reason::RolloutAborted => ctx.metrics.rollouts_aborted.inc(),
            _ => {}
        }
    }
    ctx.metrics.record_bot(
        &observed.namespace,
        &observed.name,
        Some((
            status.mode.unwrap_or_default(),
            status.phase.unwrap_or(Phase::Pending),
            status.rollout.as_ref().map_or(RolloutPhase::Idle, |r| r.phase),
        )),
    );
}

//! Reconciling one TradingBot, as a pipeline:
//!
//! 1. gather (I/O): cached pods and children, Secrets' existence, the latest scrapes;
//! 2. validate (pure, [`validate`]);
//! 3. decide (pure): trips, acknowledgements and modes ([`trading`]), the rollout
//!    ([`rollout`]), the desired children ([`desired`]);
//! 4. apply (I/O, [`apply`]): server-side apply of what changed, stop-then-start of pods;
//! 5. status: written only when it changed, with Events for every decision ([`status`]).
//!
//! Deletion goes through a finalizer that halts the bot before its children go.

pub mod apply;
pub mod desired;
pub mod rollout;
pub mod status;
pub mod trading;
pub mod validate;

use crate::context::Context;
use crate::scrape::{Target, TargetKey};
use apply::{PodStep, apply_if_changed, apply_service_monitor, ensure_pod};
use desired::InstancePlan;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use rollout::{CanaryView, RolloutInputs};
use status::{Wanted, types};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trading::{Notice, TradingInputs};
use tradingbot_crds::names::{self, InstanceNames};
use tradingbot_crds::status::{Phase, RolloutPhase, TradingBotStatus};
use tradingbot_crds::{Instance, TradingBot, TradingMode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Deletion is waiting for the bot to halt and its pods to stop (the finalizer helper
    /// removes the finalizer on success, so waiting is reported as a retryable outcome).
    #[error("waiting for the bot to halt and stop: {0}")]
    StillStopping(String),
}

impl Error {
    /// A short category, used as the metrics label.
    pub fn reason(&self) -> String {
        match self {
            Error::Kube(kube::Error::Api(e)) => format!("api_{}", e.code),
            Error::Kube(_) => "api_unreachable".into(),
            Error::Finalizer(_) => "finalizer".into(),
            Error::StillStopping(_) => "stopping".into(),
        }
    }
}

/// How long an idle bot waits before it is looked at again anyway (reads only).
const IDLE_RECHECK: Duration = Duration::from_secs(300);

pub async fn reconcile(bot: Arc<TradingBot>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !ctx.is_synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let started = Instant::now();
    let namespace = bot.namespace().unwrap_or_default();
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer::finalizer(&api, names::FINALIZER, bot, |event| async {
        match event {
            FinalizerEvent::Apply(bot) => reconcile_bot(&bot, &ctx).await,
            FinalizerEvent::Cleanup(bot) => cleanup_bot(&bot, &ctx).await,
        }
    })
    .await
    .map_err(|error| match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciliations
        .with_label_values(&[match &result {
            Ok(_) | Err(Error::StillStopping(_)) => "ok",
            Err(_) => "error",
        }])
        .inc();
    result
}

pub fn error_policy(bot: Arc<TradingBot>, error: &Error, ctx: Arc<Context>) -> Action {
    if let Error::StillStopping(why) = error {
        tracing::debug!(tradingbot = %bot.name_any(), namespace = %bot.namespace().unwrap_or_default(), %why, "deletion in progress");
        return Action::requeue(Duration::from_secs(1));
    }
    ctx.metrics.reconcile_errors.with_label_values(&[&error.reason()]).inc();
    tracing::warn!(tradingbot = %bot.name_any(), namespace = %bot.namespace().unwrap_or_default(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    (status.phase.as_deref() == Some("Running") && pod.metadata.deletion_timestamp.is_none())
        .then(|| status.pod_ip.clone())
        .flatten()
}

fn cached_pod(ctx: &Context, name: &str, namespace: &str) -> Option<Arc<Pod>> {
    ctx.stores.pods.get(&ObjectRef::new(name).within(namespace))
}

/// The scrape target of an instance's pod, if it can be scraped.
fn target_of(bot: &TradingBot, pod: Option<&Arc<Pod>>) -> Option<Target> {
    let ip = pod.and_then(|p| pod_ip(p))?;
    let spec = &bot.spec;
    Some(Target {
        url: format!("http://{ip}:{}/metrics", spec.metrics.port),
        interval: Duration::from_secs(u64::from(spec.metrics.scrape_interval_seconds)),
        error_window: Duration::from_secs(u64::from(
            spec.guards.error_rate.as_ref().map_or(300, |e| e.window_seconds),
        )),
    })
}

/// Missing Secrets are problems like invalid fields (the pod could not start).
async fn secret_problems(
    bot: &TradingBot,
    ctx: &Context,
    canary_needed: bool,
) -> Result<Vec<validate::Problem>, Error> {
    let namespace = bot.namespace().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut problems = Vec::new();
    let mut check = vec![(
        "spec.exchange.credentialsSecret",
        bot.spec.exchange.credentials_secret.clone(),
    )];
    if canary_needed {
        check.push((
            "spec.rollout.canary.credentialsSecret",
            bot.spec.rollout.canary.credentials_secret.clone(),
        ));
    }
    for (field, secret) in check {
        let Some(secret) = secret else { continue };
        // Metadata only: the operator never reads secret values.
        if api.get_metadata_opt(&secret).await?.is_none() {
            problems.push(validate::Problem {
                field: field.into(),
                message: format!("Secret {secret:?} not found in namespace {namespace}"),
            });
        }
    }
    Ok(problems)
}

async fn reconcile_bot(bot: &TradingBot, ctx: &Context) -> Result<Action, Error> {
    let name = bot.name_any();
    let namespace = bot.namespace().unwrap_or_default();
    let uid = bot.uid().unwrap_or_default();
    let old = bot.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let spec = &bot.spec;
    let prod_names = InstanceNames::new(&name, Instance::Prod);
    let canary_names = InstanceNames::new(&name, Instance::Canary);

    // 1. gather
    let prod_pod = cached_pod(ctx, &prod_names.pod, &namespace);
    let canary_pod = cached_pod(ctx, &canary_names.pod, &namespace);
    let rollout_has_canary = old.rollout.as_ref().is_some_and(|r| r.phase.has_canary())
        || spec
            .image
            .as_ref()
            .is_some_and(|i| old.current_version.as_ref().is_some_and(|c| c != i));
    // 2. validate
    let invalid = validate::validate(&name, spec);
    let missing = secret_problems(bot, ctx, rollout_has_canary).await?;
    let problems: Vec<validate::Problem> = invalid.iter().chain(&missing).cloned().collect();
    let active = problems.is_empty() && !spec.paused;

    // 3. decide: trading state (always: guards keep protecting even when paused or degraded)
    let key = |instance| TargetKey {
        namespace: namespace.clone(),
        bot: name.clone(),
        instance,
    };
    let prod_obs = ctx.scraper.observation(&key(Instance::Prod));
    let canary_obs = ctx.scraper.observation(&key(Instance::Canary));
    let unreachable_after = Duration::from_secs(u64::from(spec.metrics.unreachable_after_seconds));
    let instant = Instant::now();
    let (prod_view, canary_view) = ctx.with_memory(&uid, |m| {
        let prod = prod_obs
            .as_ref()
            .map(|o| trading::view_of(o, instant, unreachable_after, m.last_ok_prod));
        let canary = canary_obs
            .as_ref()
            .map(|o| trading::view_of(o, instant, unreachable_after, m.last_ok_canary));
        (prod, canary)
    });
    let ack = bot.annotations().get(names::ANNOTATION_ACK_TRIP).map(String::as_str);
    let mut decided = ctx.with_memory(&uid, |m| {
        let out = trading::decide(
            &TradingInputs {
                spec,
                status: &old,
                deleting: false,
                ack_annotation: ack,
                prod: prod_view.as_ref(),
                canary: canary_view.as_ref(),
                now,
            },
            &mut m.streaks,
        );
        m.last_ok_prod = prod_obs.as_ref().map_or(0, |o| o.ok_count);
        m.last_ok_canary = canary_obs.as_ref().map_or(0, |o| o.ok_count);
        out
    });

    // rollout
    let canary_trip = decided
        .trips
        .iter()
        .find(|t| t.instance == Instance::Canary)
        .map(|t| format!("{} {} at {} >= {}", t.guard, t.level, t.value, t.threshold));
    let canary_sample = canary_obs.as_ref().and_then(|o| o.sample.clone());
    let canary = CanaryView {
        ready: canary_pod.as_deref().is_some_and(pod_ready) && canary_sample.is_some(),
        cycles: canary_sample.as_ref().and_then(|s| s.cycles),
        cycle_errors: canary_sample.as_ref().and_then(|s| s.cycle_errors),
        trip: canary_trip,
        restarts: canary_pod
            .as_deref()
            .and_then(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()
                    .map(|c| c.restart_count)
            })
            .map_or(0, |r| u32::try_from(r).unwrap_or(0)),
    };
    let prod_ready_image = prod_pod
        .as_deref()
        .filter(|p| pod_ready(p))
        .and_then(|p| p.annotations().get(names::ANNOTATION_VERSION).cloned());
    let plan = active.then(|| {
        rollout::plan(&RolloutInputs {
            spec,
            default_image: &ctx.settings.bot_image,
            status: &old,
            canary: &canary,
            prod_ready_image: prod_ready_image.as_deref(),
            now,
        })
    });
    let current_version = plan
        .as_ref()
        .map(|p| p.current_version.clone())
        .or_else(|| old.current_version.clone())
        .unwrap_or_else(|| spec.image.clone().unwrap_or_else(|| ctx.settings.bot_image.clone()));
    let canary_version = match &plan {
        Some(p) => p.canary_version.clone(),
        None => old.canary_version.clone(),
    };
    let rollout_status = plan.as_ref().map(|p| p.rollout.clone()).or_else(|| old.rollout.clone());
    let mut notices: Vec<Notice> = decided.notices.clone();
    notices.extend(plan.iter().flat_map(|p| p.notices.clone()));

    // 4. apply
    let mut waiting = false;
    let mut progressing_pod: Option<String> = None;
    let monitor_enabled = spec.metrics.service_monitor.enabled;
    if active {
        let client = ctx.client.clone();
        let m = &ctx.metrics;
        let s = &ctx.stores;
        apply_if_changed(
            &Api::<ServiceAccount>::namespaced(client.clone(), &namespace),
            &s.service_accounts,
            &desired::service_account(bot),
            m,
        )
        .await?;
        apply_if_changed(
            &Api::<Role>::namespaced(client.clone(), &namespace),
            &s.roles,
            &desired::role(bot),
            m,
        )
        .await?;
        apply_if_changed(
            &Api::<RoleBinding>::namespaced(client.clone(), &namespace),
            &s.role_bindings,
            &desired::role_binding(bot),
            m,
        )
        .await?;
        let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
        let services = Api::<Service>::namespaced(client.clone(), &namespace);
        let pods = Api::<Pod>::namespaced(client.clone(), &namespace);
        let prod_plan = InstancePlan::prod(bot, current_version.clone());
        apply_if_changed(&config_maps, &s.config_maps, &desired::config_map(bot, &prod_plan), m).await?;
        apply_if_changed(&services, &s.services, &desired::service(bot, Instance::Prod), m).await?;
        if ctx.service_monitors_available() {
            let resource = desired::service_monitor_resource();
            let monitors: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
            let monitor = desired::service_monitor(bot);
            if monitor_enabled {
                apply_service_monitor(&monitors, &monitor, m).await?;
            } else if old
                .conditions
                .iter()
                .any(|c| c.type_ == types::SERVICE_MONITOR && c.status == "True")
            {
                // Switched off: remove the one we created.
                match monitors.delete(&monitor.name_any(), &DeleteParams::default()).await {
                    Ok(_) => m.wrote("delete", "servicemonitors"),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let canary_plan = canary_version.clone().map(|v| InstancePlan::canary(bot, v));
        if let Some(plan) = &canary_plan {
            apply_if_changed(&config_maps, &s.config_maps, &desired::config_map(bot, plan), m).await?;
            apply_if_changed(&services, &s.services, &desired::service(bot, Instance::Canary), m).await?;
        }
        // The canary goes first when it is no longer wanted (promotion replaces prod after).
        let canary_desired = canary_plan.as_ref().map(|p| desired::pod(bot, p, &ctx.settings));
        let canary_step = ensure_pod(
            &pods,
            &s.pods,
            &canary_names.pod,
            &namespace,
            canary_desired.as_ref(),
            m,
        )
        .await?;
        if canary_plan.is_none() {
            delete_if_cached(&config_maps, &s.config_maps, &canary_names.config_map, &namespace, m).await?;
            delete_if_cached(&services, &s.services, &canary_names.service, &namespace, m).await?;
        }
        let prod_desired = desired::pod(bot, &prod_plan, &ctx.settings);
        let prod_step = ensure_pod(&pods, &s.pods, &prod_names.pod, &namespace, Some(&prod_desired), m).await?;
        // Only prod's pod decides the phase; the canary's progress is the rollout's.
        for (instance, step) in [(Instance::Canary, &canary_step), (Instance::Prod, &prod_step)] {
            let prod = instance == Instance::Prod;
            match step {
                PodStep::Steady => {}
                PodStep::Created => {
                    notices.push(Notice::normal(
                        "PodCreated",
                        "CreatePod",
                        format!("{instance} pod created"),
                    ));
                    if prod {
                        progressing_pod.get_or_insert_with(|| "PodCreating".into());
                    }
                    waiting = true;
                }
                PodStep::Stopping { why } => {
                    notices.push(Notice::normal(
                        "PodStopping",
                        "ReplacePod",
                        format!("{instance} pod stopping ({why}); a replacement starts only once it is gone"),
                    ));
                    if prod {
                        progressing_pod = Some("PodReplacing".into());
                    }
                    waiting = true;
                }
                PodStep::WaitingForStop => {
                    if prod {
                        progressing_pod = Some("PodReplacing".into());
                    }
                    waiting = true;
                }
            }
        }
    }
    // Scrape what runs (also while paused or degraded: status stays current).
    ctx.scraper
        .ensure(key(Instance::Prod), target_of(bot, prod_pod.as_ref()));
    ctx.scraper
        .ensure(key(Instance::Canary), target_of(bot, canary_pod.as_ref()));

    // 5. status
    if canary_version.is_none() && canary_pod.is_none() {
        // The canary's trips go with it.
        decided.trips.retain(|t| t.instance == Instance::Prod);
    }
    let prod_ready = prod_pod.as_deref().is_some_and(pod_ready);
    let phase = if spec.paused {
        Phase::Paused
    } else if !problems.is_empty() {
        Phase::Degraded
    } else if prod_ready && progressing_pod.is_none() {
        Phase::Running
    } else {
        Phase::Pending
    };
    let mut wanted = vec![
        match phase {
            Phase::Running => Wanted::new(types::READY, true, "PodReady", "the bot pod is running and ready"),
            Phase::Paused => Wanted::new(
                types::READY,
                prod_ready,
                "Paused",
                "spec.paused: the operator changes nothing",
            ),
            Phase::Degraded => Wanted::new(types::READY, false, "Degraded", "see the Degraded condition"),
            _ => Wanted::new(
                types::READY,
                false,
                "PodNotReady",
                "waiting for the bot pod to be ready",
            ),
        },
        progressing(rollout_status.as_ref(), progressing_pod.as_deref()),
        match problems.first() {
            None => Wanted::new(types::DEGRADED, false, "AsExpected", "the spec is valid"),
            Some(_) => Wanted::new(
                types::DEGRADED,
                true,
                if invalid.is_empty() {
                    "SecretMissing"
                } else {
                    "InvalidSpec"
                },
                problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "),
            ),
        },
        mode_condition(
            types::REDUCE_ONLY,
            TradingMode::ReduceOnly,
            decided.mode,
            &decided.mode_reason,
        ),
        mode_condition(types::HALTED, TradingMode::Halted, decided.mode, &decided.mode_reason),
    ];
    if let Some(view) = prod_view.as_ref() {
        wanted.push(match view.unreachable_for {
            Some(_) => Wanted::new(
                types::METRICS_REACHABLE,
                false,
                "ScrapeFailing",
                // Stable text (no running counters): status is written only when it changes.
                format!(
                    "no successful scrape since {}; treated as stale market data",
                    prod_obs
                        .as_ref()
                        .and_then(|o| o.last_ok_at)
                        .map_or_else(|| "scraping started".to_string(), |t| format!("{t:.0}"))
                ),
            ),
            None => Wanted::new(types::METRICS_REACHABLE, true, "Scraped", "bot metrics are readable"),
        });
    }
    if monitor_enabled && active {
        wanted.push(if ctx.service_monitors_available() {
            Wanted::new(
                types::SERVICE_MONITOR,
                true,
                "Created",
                "a ServiceMonitor selects the bot's metrics Services",
            )
        } else {
            Wanted::new(
                types::SERVICE_MONITOR,
                false,
                "APIMissing",
                "the monitoring.coreos.com/v1 ServiceMonitor API is not installed",
            )
        });
    }
    let new = TradingBotStatus {
        observed_generation: bot.metadata.generation,
        phase: Some(phase),
        mode: Some(decided.mode),
        mode_reason: Some(decided.mode_reason.clone()),
        canary_mode: canary_version.as_ref().and(decided.canary_mode.or(Some(decided.mode))),
        current_version: Some(current_version),
        canary_version,
        trip_count: Some(decided.trips.len() as u32),
        trips: decided.trips.clone(),
        last_ack: decided.last_ack.clone(),
        rollout: rollout_status,
        conditions: status::conditions(&old.conditions, wanted, bot.metadata.generation, now),
    };
    notices.extend(status::transition_notices(&old, &new));
    if new != old {
        patch_status(bot, ctx, &new).await?;
    }
    for notice in &notices {
        ctx.events.publish(bot, notice).await;
    }
    record_metrics(
        ctx,
        &namespace,
        &name,
        &new,
        &decided.tripped,
        plan.as_ref().map(|p| p.notices.as_slice()).unwrap_or_default(),
    );

    let recheck = plan.and_then(|p| p.recheck_after).unwrap_or(IDLE_RECHECK);
    Ok(Action::requeue(if waiting {
        Duration::from_secs(2).min(recheck)
    } else {
        recheck
    }))
}

fn progressing(rollout: Option<&tradingbot_crds::status::RolloutStatus>, pod: Option<&str>) -> Wanted {
    match (rollout, pod) {
        (Some(r), _) if r.phase.is_in_progress() => Wanted::new(
            types::PROGRESSING,
            true,
            r.phase.as_str(),
            r.message.clone().unwrap_or_default(),
        ),
        (_, Some(reason)) => Wanted::new(types::PROGRESSING, true, reason, "the bot pod is being (re)started"),
        (Some(r), None) if r.phase == RolloutPhase::Aborted => Wanted::new(
            types::PROGRESSING,
            false,
            "RolloutAborted",
            r.message.clone().unwrap_or_default(),
        ),
        (Some(r), None) if r.phase == RolloutPhase::Promoted => Wanted::new(
            types::PROGRESSING,
            false,
            "RolloutComplete",
            r.message.clone().unwrap_or_default(),
        ),
        _ => Wanted::new(types::PROGRESSING, false, "Idle", "nothing to roll out"),
    }
}

fn mode_condition(type_: &'static str, level: TradingMode, mode: TradingMode, reason: &str) -> Wanted {
    if mode == level {
        let why = if reason.contains("guard") {
            "GuardTripped"
        } else if reason.contains("deleted") {
            "Deleting"
        } else {
            "ManualIntent"
        };
        Wanted::new(type_, true, why, reason)
    } else {
        Wanted::new(type_, false, "NotInForce", format!("mode is {mode}"))
    }
}

async fn delete_if_cached<K>(
    api: &Api<K>,
    store: &kube::runtime::reflector::Store<kube::core::PartialObjectMeta<K>>,
    name: &str,
    namespace: &str,
    metrics: &crate::metrics::OperatorMetrics,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if store.get(&ObjectRef::new(name).within(namespace)).is_none() {
        return Ok(());
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            metrics.wrote("delete", &K::plural(&()));
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn patch_status(bot: &TradingBot, ctx: &Context, status: &TradingBotStatus) -> Result<(), Error> {
    let api: Api<TradingBot> = Api::namespaced(ctx.client.clone(), &bot.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": TradingBot::api_version(&()),
        "kind": TradingBot::kind(&()),
        "status": status,
    });
    api.patch_status(
        &bot.name_any(),
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.wrote("apply", "tradingbots/status");
    Ok(())
}

fn record_metrics(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &TradingBotStatus,
    tripped: &[tradingbot_crds::status::GuardTrip],
    rollout_notices: &[Notice],
) {
    for trip in tripped {
        ctx.metrics
            .guard_trips
            .with_label_values(&[&trip.guard, trip.level.as_str()])
            .inc();
    }
    for notice in rollout_notices {
        match notice.reason {
            "RolloutStarted" => ctx.metrics.rollouts_started.inc(),
            "RolloutPromoted" => ctx.metrics.rollouts_promoted.inc(),
            "RolloutAborted" => ctx.metrics.rollouts_aborted.inc(),
            _ => {}
        }
    }
    ctx.metrics.record_bot(
        namespace,
        name,
        Some((
            status.mode.unwrap_or_default(),
            status.phase.unwrap_or(Phase::Pending),
            status.rollout.as_ref().map_or(RolloutPhase::Idle, |r| r.phase),
        )),
    );
}

/// Deletion: halt the bot (status says Halted, and the bot sees its TradingBot going), give it
/// time to report Halted with no open orders, then stop its pods; children go with the
/// TradingBot through their owner references.
async fn cleanup_bot(bot: &TradingBot, ctx: &Context) -> Result<Action, Error> {
    let name = bot.name_any();
    let namespace = bot.namespace().unwrap_or_default();
    let old = bot.status.clone().unwrap_or_default();
    let (mode, reason) = trading::effective_mode(&bot.spec, true, &old.trips, Instance::Prod);
    let mut new = old.clone();
    new.phase = Some(Phase::Terminating);
    new.mode = Some(mode);
    new.conditions = status::update_conditions(
        &old.conditions,
        vec![
            Wanted::new(types::READY, false, "Terminating", "the TradingBot is being deleted"),
            mode_condition(types::REDUCE_ONLY, TradingMode::ReduceOnly, mode, &reason),
            mode_condition(types::HALTED, TradingMode::Halted, mode, &reason),
        ],
        bot.metadata.generation,
        Timestamp::now(),
    );
    new.mode_reason = Some(reason);
    if new != old {
        patch_status(bot, ctx, &new).await?;
        ctx.events
            .publish(
                bot,
                &Notice::normal(
                    "Halting",
                    "Delete",
                    "TradingBot deleted: the bot is halted and its open orders cancelled before it is removed",
                ),
            )
            .await;
    }
    let deleting_for = bot
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| Duration::from_secs(Timestamp::now().as_second().saturating_sub(t.0.as_second()).max(0) as u64))
        .unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut remaining = false;
    for instance in [Instance::Prod, Instance::Canary] {
        let pod_name = InstanceNames::new(&name, instance).pod;
        let Some(pod) = cached_pod(ctx, &pod_name, &namespace) else {
            continue;
        };
        remaining = true;
        let key = TargetKey {
            namespace: namespace.clone(),
            bot: name.clone(),
            instance,
        };
        // After an operator restart nothing scrapes this pod yet: start, so its Halted state
        // can be seen instead of waiting out the halt timeout.
        ctx.scraper.ensure(key.clone(), target_of(bot, Some(&pod)));
        let halted = ctx
            .scraper
            .observation(&key)
            .and_then(|o| o.sample)
            .is_some_and(|s| s.trading_mode == Some(TradingMode::Halted) && s.open_orders.unwrap_or(0) == 0);
        let reachable = pod_ip(&pod).is_some();
        if reachable && !halted && deleting_for < ctx.settings.halt_timeout {
            continue;
        }
        if pod.metadata.deletion_timestamp.is_none() {
            if !halted && reachable {
                ctx.events
                    .publish(bot, &Notice::warning("HaltTimeout", "Delete", format!("{instance} bot did not report Halted within {} s; stopping its pod (SIGTERM cancels orders)", ctx.settings.halt_timeout.as_secs())))
                    .await;
            }
            ensure_pod(&pods, &ctx.stores.pods, &pod_name, &namespace, None, &ctx.metrics).await?;
        }
    }
    if remaining {
        return Err(Error::StillStopping("bot pods are still running".into()));
    }
    ctx.scraper.forget_bot(&namespace, &name);
    ctx.forget(&bot.uid().unwrap_or_default());
    ctx.metrics.record_bot(&namespace, &name, None);
    ctx.events
        .publish(
            bot,
            &Notice::normal(
                "Removed",
                "Delete",
                "the bot is halted and its pods are gone; children are garbage-collected",
            ),
        )
        .await;
    Ok(Action::await_change())
}

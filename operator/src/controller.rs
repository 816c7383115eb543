//! Wiring the reconciler into kube-runtime: watches of TradingBots and of the operator's
//! children (metadata-only where that is enough), scrape results and ServiceMonitor API
//! availability as extra triggers.

use crate::cli::Settings;
use crate::context::{Context, Stores};
use crate::events::EventPublisher;
use crate::metrics::OperatorMetrics;
use crate::reconcile::{error_policy, reconcile};
use crate::scrape::Scraper;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream_shim::UnboundedReceiverStream;
use tradingbot_crds::TradingBot;
use tradingbot_crds::names::{LABEL_MANAGED_BY, MANAGED_BY};

/// `tokio_stream::wrappers::UnboundedReceiverStream` without the extra crate.
mod tokio_stream_shim {
    use futures::Stream;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::sync::mpsc::UnboundedReceiver;

    pub struct UnboundedReceiverStream<T>(pub UnboundedReceiver<T>);

    impl<T> Stream for UnboundedReceiverStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}

fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"))
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A reflector store of `K` and the stream that feeds it (to trigger owners). Watch errors are
/// logged (a cache that cannot fill says why, instead of keeping the operator unready silently).
fn reflect<K>(api: Api<K>) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, managed()).modify(without_managed_fields))
        .inspect_err(log_watch_error::<K>)
        .default_backoff()
        .touched_objects();
    (store, stream)
}

fn log_watch_error<K: Resource<DynamicType = ()>>(error: &watcher::Error) {
    tracing::warn!(cache = %K::plural(&()), %error, "watch failed; retrying with backoff");
}

/// How long a controller may take to fill its caches before the operator gives up and exits.
pub const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(120);

fn ready<K: Resource + Clone + Send + Sync + 'static>(store: Store<K>) -> BoxFuture<'static, ()>
where
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    async move {
        // An error means the writer is gone (the controller stopped): never ready.
        if store.wait_until_ready().await.is_err() {
            futures::future::pending::<()>().await;
        }
    }
    .boxed()
}

/// How long a cache may take before the operator names it in a warning (then again each time
/// as long again passes).
pub const CACHE_LATE_AFTER: Duration = Duration::from_secs(5);

/// Wait until every named cache is ready, logging how long each took and naming those still
/// pending every `late_after`; after `timeout`, the names still pending.
pub async fn wait_for_caches(
    caches: Vec<(&'static str, BoxFuture<'static, ()>)>,
    late_after: Duration,
    timeout: Duration,
) -> Result<(), Vec<&'static str>> {
    let started = std::time::Instant::now();
    let pending = Arc::new(std::sync::Mutex::new(
        caches.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
    ));
    let all = futures::future::join_all(caches.into_iter().map(|(name, ready)| {
        let pending = pending.clone();
        async move {
            ready.await;
            tracing::debug!(
                cache = name,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "cache synced"
            );
            if let Ok(mut pending) = pending.lock() {
                pending.retain(|p| *p != name);
            }
        }
    }));
    let still_pending = || pending.lock().map(|p| p.clone()).unwrap_or_default();
    let watch_late = async {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + late_after, late_after);
        loop {
            tick.tick().await;
            tracing::warn!(pending = ?still_pending(), elapsed_s = started.elapsed().as_secs(), "caches still syncing");
        }
    };
    tokio::select! {
        result = tokio::time::timeout(timeout, all) => match result {
            Ok(_) => Ok(()),
            Err(_) => Err(still_pending()),
        },
        _ = watch_late => unreachable!("the late-cache log loops forever"),
    }
}

/// Cached objects keep of `metadata.managedFields` only who set the fields the audit trail
/// attributes (a TradingBot's action annotations and manual switches; nothing for others): with
/// server-side apply they are often the biggest part of an object (most of the cache's memory at
/// fleet scale).
fn without_managed_fields<K: Resource>(object: &mut K) {
    crate::reconcile::actors::trim_managed_fields(object.meta_mut());
}

/// What one controller runs with.
pub struct ControllerOptions {
    /// The namespace to manage (None = all).
    pub namespace: Option<String>,
    pub settings: Settings,
    pub scrape_timeout: Duration,
    pub concurrency: u16,
    /// This replica's name (Events' reporting instance).
    pub instance: String,
    /// The fleet's restart budget (one for every controller of this process).
    pub restarts: Arc<crate::reconcile::restarts::RestartBudget>,
}

/// Run the controller until `shutdown` fires; `synced` turns true once every cache is filled.
pub async fn run(
    client: Client,
    options: ControllerOptions,
    metrics: Arc<OperatorMetrics>,
    mut shutdown: watch::Receiver<bool>,
    synced: Arc<AtomicBool>,
) {
    let ControllerOptions {
        namespace,
        settings,
        scrape_timeout,
        concurrency,
        instance,
        restarts,
    } = options;
    let ns = namespace.as_deref();
    let (pods, pod_events) = reflect(scoped::<Pod>(&client, ns));
    let (config_maps, cm_events) = reflect(scoped::<PartialObjectMeta<ConfigMap>>(&client, ns));
    let (services, svc_events) = reflect(scoped::<PartialObjectMeta<Service>>(&client, ns));
    let (service_accounts, sa_events) = reflect(scoped::<PartialObjectMeta<ServiceAccount>>(&client, ns));
    let (roles, role_events) = reflect(scoped::<PartialObjectMeta<Role>>(&client, ns));
    let (role_bindings, rb_events) = reflect(scoped::<PartialObjectMeta<RoleBinding>>(&client, ns));
    let stores = Stores {
        pods: pods.clone(),
        config_maps: config_maps.clone(),
        services: services.clone(),
        service_accounts: service_accounts.clone(),
        roles: roles.clone(),
        role_bindings: role_bindings.clone(),
    };
    let (scraper, scrape_triggers) = Scraper::new(scrape_timeout, metrics.clone());
    let monitor_api = Arc::new(AtomicBool::new(false));
    let (monitor_tx, monitor_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_service_monitor_api(
        client.clone(),
        monitor_api.clone(),
        monitor_tx,
        shutdown.clone(),
    ));
    let context = Arc::new(Context {
        client: client.clone(),
        settings,
        events: EventPublisher::new(client.clone(), instance),
        metrics,
        scraper,
        stores,
        service_monitor_api: monitor_api,
        synced: synced.clone(),
        memory: Default::default(),
        restarts,
    });
    let bots = scoped::<TradingBot>(&client, ns);
    let (bot_store, bot_writer) = reflector::store();
    let bot_stream = reflector::reflector(
        bot_writer,
        watcher(bots, watcher::Config::default()).modify(without_managed_fields),
    )
    .inspect_err(log_watch_error::<TradingBot>)
    .default_backoff()
    .applied_objects();
    let controller = Controller::for_stream(bot_stream, bot_store)
        .owns_stream(pod_events)
        .owns_stream(cm_events)
        .owns_stream(svc_events)
        .owns_stream(sa_events)
        .owns_stream(role_events)
        .owns_stream(rb_events)
        .reconcile_on(UnboundedReceiverStream(scrape_triggers))
        .reconcile_all_on(UnboundedReceiverStream(monitor_rx))
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        });
    let bot_store = controller.store();
    let caches: Vec<(&'static str, BoxFuture<'static, ()>)> = vec![
        ("tradingbots", ready(bot_store)),
        ("pods", ready(pods)),
        ("configmaps", ready(config_maps)),
        ("services", ready(services)),
        ("serviceaccounts", ready(service_accounts)),
        ("roles", ready(roles)),
        ("rolebindings", ready(role_bindings)),
    ];
    let scope = ns.unwrap_or("(all)").to_string();
    tracing::info!(namespace = %scope, "controller started");
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match wait_for_caches(caches, CACHE_LATE_AFTER, CACHE_SYNC_TIMEOUT).await {
            Ok(()) => {
                synced.store(true, Ordering::Relaxed);
                tracing::info!(namespace = %scope, elapsed_ms = started.elapsed().as_millis() as u64, "caches synced");
            }
            Err(pending) => {
                // Nothing has been reconciled yet (reconciles wait for `synced`), so exiting is
                // safe; the kubelet restarts the pod with fresh watches, as controller-runtime
                // does after its CacheSyncTimeout.
                tracing::error!(
                    namespace = %scope,
                    ?pending,
                    timeout_seconds = CACHE_SYNC_TIMEOUT.as_secs(),
                    "caches not synced in time: exiting so the pod is restarted"
                );
                std::process::exit(1);
            }
        }
    });
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile request failed");
            }
        })
        .await;
    tracing::info!("controller stopped");
}

/// Watch for the ServiceMonitor API appearing or disappearing (checked every 30 s); when it
/// appears, every bot is reconciled so wanted ServiceMonitors get created.
async fn watch_service_monitor_api(
    client: Client,
    available: Arc<AtomicBool>,
    reconcile_all: mpsc::UnboundedSender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
            .is_ok_and(|list| list.resources.iter().any(|r| r.name == "servicemonitors"));
        if available.swap(now, Ordering::Relaxed) != now {
            tracing::info!(
                available = now,
                "ServiceMonitor API (monitoring.coreos.com/v1) availability changed"
            );
            let _ = reconcile_all.send(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caches_that_never_fill_are_named_after_the_timeout() {
        let caches: Vec<(&'static str, BoxFuture<'static, ()>)> = vec![
            ("pods", async {}.boxed()),
            ("roles", futures::future::pending().boxed()),
            ("tradingbots", tokio::time::sleep(Duration::from_millis(10)).boxed()),
        ];
        assert_eq!(
            wait_for_caches(caches, Duration::from_millis(100), Duration::from_millis(300)).await,
            Err(vec!["roles"])
        );
    }

    #[tokio::test]
    async fn caches_that_fill_in_time_are_synced() {
        let caches: Vec<(&'static str, BoxFuture<'static, ()>)> = vec![
            ("pods", async {}.boxed()),
            ("tradingbots", tokio::time::sleep(Duration::from_millis(10)).boxed()),
        ];
        assert_eq!(
            wait_for_caches(caches, Duration::from_secs(5), Duration::from_secs(60)).await,
            Ok(())
        );
    }
}

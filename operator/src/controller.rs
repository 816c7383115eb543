//! Wiring the reconciler into kube-runtime: watches of TradingBots and of the operator's
//! children (metadata-only where that is enough), scrape results and ServiceMonitor API
//! availability as extra triggers.

use crate::cli::Settings;
use crate::context::{Context, Stores};
use crate::events::EventPublisher;
use crate::fleet::{Fleet, Scope};
use crate::metrics::OperatorMetrics;
use crate::reconcile::{error_policy, reconcile};
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
use tradingbot_crds::account::TradingAccount;
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

/// Every watch lists from the API server's watch cache (`resourceVersion=0`) rather than with a
/// quorum read: its resourceVersion is then one the watch cache has, so the watch that follows
/// never asks for a version the cache has not reached. A quorum read returns etcd's newest
/// revision; on Kubernetes 1.20 a watch from that revision on a resource type without recent
/// events waits and fails with "Too large resource version" until some event of that type
/// arrives, and the watcher backs off further each time (up to 30 s between attempts).
fn watch_config() -> watcher::Config {
    watcher::Config::default().any_semantic()
}

fn managed() -> watcher::Config {
    watch_config().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"))
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

/// A reflector store of the operator's children of kind `K` (the ones it labelled; metadata
/// only for a `PartialObjectMeta`), each as `trim` leaves it, and the stream that feeds it (to
/// trigger owners). Watch errors are logged (a cache that cannot fill says why, instead of
/// keeping the operator unready silently).
fn reflect<K>(
    api: Api<K>,
    trim: fn(&mut K),
) -> (
    Store<K>,
    Filled,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let (mark, filled) = Filled::signal();
    let stream = reflector::reflector(writer, watcher(api, managed()).modify(trim))
        .inspect_ok(mark)
        .inspect_err(log_watch_error::<K>)
        .default_backoff()
        .touched_objects();
    (store, filled, stream)
}

/// Set once a reflector's store holds its initial list (the watcher's `InitDone` has been
/// applied), for any number of waiters.
///
/// Not `Store::wait_until_ready`: kube-runtime keeps the readiness of all clones of a store in
/// one oneshot receiver, which remembers only the waker of its last poller, so of several tasks
/// waiting at once only the last is woken. The Controller itself waits on the TradingBot and
/// TradingAccount stores; a second waiter there (this readiness gate) was woken only by its own
/// next timer: the 120 s cache-sync bound at first (the operator unready for about two minutes
/// after start), then the 5 s late-cache log.
#[derive(Clone)]
pub struct Filled(watch::Receiver<bool>);

impl Filled {
    /// The signal and what sets it, to run on every event of the reflector's stream.
    fn signal<K>() -> (impl FnMut(&watcher::Event<K>) + Send + 'static, Filled) {
        let (tx, rx) = watch::channel(false);
        let mark = move |event: &watcher::Event<K>| {
            if matches!(event, watcher::Event::InitDone) {
                tx.send_replace(true);
            }
        };
        (mark, Filled(rx))
    }

    /// Resolves once filled; never if the reflector is gone first (the controller stopped).
    fn wait(self) -> BoxFuture<'static, ()> {
        let mut rx = self.0;
        async move {
            if rx.wait_for(|filled| *filled).await.is_err() {
                futures::future::pending::<()>().await;
            }
        }
        .boxed()
    }
}

fn log_watch_error<K: Resource<DynamicType = ()>>(error: &watcher::Error) {
    tracing::warn!(cache = %K::plural(&()), %error, "watch failed; retrying with backoff");
}

/// How long a controller may take to fill its caches before the operator gives up and exits.
pub const CACHE_SYNC_TIMEOUT: Duration = Duration::from_secs(120);

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

/// A cached bot pod keeps what decisions read: its metadata (labels, the version and hash
/// annotations, owners, uid, creation and deletion times) and status (phase, IP, conditions,
/// container states). Its spec is never read from the cache (a changed pod is recognised by
/// its hash annotations) and is most of a pod's memory: at fleet scale, most of the cache's.
fn slim_pod(pod: &mut Pod) {
    without_managed_fields(pod);
    pod.spec = None;
    if let Some(status) = pod.status.as_mut() {
        for container in status.container_statuses.iter_mut().flatten() {
            container.image.clear();
            container.image_id.clear();
            container.container_id = None;
        }
    }
}

/// What one scope's controllers run with.
pub struct ControllerOptions {
    /// The namespace to manage (None = all).
    pub namespace: Option<String>,
    pub settings: Settings,
    pub concurrency: u16,
    /// This replica's name (Events' reporting instance).
    pub instance: String,
    /// The fleet's restart budget (one for every controller of this process).
    pub restarts: Arc<crate::reconcile::restarts::RestartBudget>,
    /// What every scope of this process shares (the scraper among it).
    pub fleet: Arc<Fleet>,
    /// The TradingAccount API is installed (checked at start).
    pub accounts: bool,
    /// The share of the bots (and accounts) this operator reconciles.
    pub shard: crate::shard::Shard,
}

/// The child caches of one scope and the streams feeding them.
fn child_caches(client: &Client, ns: Option<&str>) -> (Stores, Vec<(&'static str, Filled)>, Vec<ChildEvents>) {
    let (pods, pods_filled, pod_events) = reflect(scoped::<Pod>(client, ns), slim_pod);
    let (config_maps, cms_filled, cm_events) = reflect(
        scoped::<PartialObjectMeta<ConfigMap>>(client, ns),
        without_managed_fields,
    );
    let (services, svcs_filled, svc_events) =
        reflect(scoped::<PartialObjectMeta<Service>>(client, ns), without_managed_fields);
    let (service_accounts, sas_filled, sa_events) = reflect(
        scoped::<PartialObjectMeta<ServiceAccount>>(client, ns),
        without_managed_fields,
    );
    let (roles, roles_filled, role_events) =
        reflect(scoped::<PartialObjectMeta<Role>>(client, ns), without_managed_fields);
    let (role_bindings, rbs_filled, rb_events) = reflect(
        scoped::<PartialObjectMeta<RoleBinding>>(client, ns),
        without_managed_fields,
    );
    let filled = vec![
        ("pods", pods_filled),
        ("configmaps", cms_filled),
        ("services", svcs_filled),
        ("serviceaccounts", sas_filled),
        ("roles", roles_filled),
        ("rolebindings", rbs_filled),
    ];
    let stores = Stores {
        pods,
        config_maps,
        services,
        service_accounts,
        roles,
        role_bindings,
    };
    let events = vec![
        ChildEvents::Pods(pod_events.boxed()),
        ChildEvents::ConfigMaps(cm_events.boxed()),
        ChildEvents::Services(svc_events.boxed()),
        ChildEvents::ServiceAccounts(sa_events.boxed()),
        ChildEvents::Roles(role_events.boxed()),
        ChildEvents::RoleBindings(rb_events.boxed()),
    ];
    (stores, filled, events)
}

type Events<K> = futures::stream::BoxStream<'static, Result<K, watcher::Error>>;

/// The change streams of the children (they trigger their owner's reconcile).
enum ChildEvents {
    Pods(Events<Pod>),
    ConfigMaps(Events<PartialObjectMeta<ConfigMap>>),
    Services(Events<PartialObjectMeta<Service>>),
    ServiceAccounts(Events<PartialObjectMeta<ServiceAccount>>),
    Roles(Events<PartialObjectMeta<Role>>),
    RoleBindings(Events<PartialObjectMeta<RoleBinding>>),
}

/// The caches whose initial list must be complete before anything is reconciled.
fn readiness(
    children: Vec<(&'static str, Filled)>,
    bots: Filled,
    accounts: Option<Filled>,
) -> Vec<(&'static str, BoxFuture<'static, ()>)> {
    let mut caches = vec![("tradingbots", bots.wait())];
    caches.extend(children.into_iter().map(|(name, filled)| (name, filled.wait())));
    if let Some(accounts) = accounts {
        caches.push(("tradingaccounts", accounts.wait()));
    }
    caches
}

/// Mark the scope synced once its caches are, or exit after the bound.
fn gate_on_caches(caches: Vec<(&'static str, BoxFuture<'static, ()>)>, synced: Arc<AtomicBool>, scope: String) {
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
}

/// A reflector of `K` (all of them in the scope), its store and its stream of changes.
fn reflect_all<K>(api: Api<K>) -> (Store<K>, Filled, Events<K>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let (mark, filled) = Filled::signal();
    let stream = reflector::reflector(writer, watcher(api, watch_config()).modify(without_managed_fields))
        .inspect_ok(mark)
        .inspect_err(log_watch_error::<K>)
        .default_backoff()
        .applied_objects()
        .boxed();
    (store, filled, stream)
}

async fn log_results<T: Debug, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(error) = result {
        tracing::debug!(%error, "reconcile request failed");
    }
}

/// Run one scope's controllers (TradingBots and TradingAccounts) until `shutdown` fires;
/// `synced` turns true once every cache is filled.
pub async fn run(
    client: Client,
    options: ControllerOptions,
    metrics: Arc<OperatorMetrics>,
    shutdown: watch::Receiver<bool>,
    synced: Arc<AtomicBool>,
) {
    let ControllerOptions {
        namespace,
        settings,
        concurrency,
        instance,
        restarts,
        fleet,
        accounts,
        shard,
    } = options;
    let ns = namespace.as_deref();
    let (stores, children_filled, child_events) = child_caches(&client, ns);
    let (bot_store, bots_filled, bot_stream) = reflect_all(scoped::<TradingBot>(&client, ns));
    let (account_store, accounts_filled, account_stream) = match accounts {
        true => {
            let (store, filled, stream) = reflect_all(scoped::<TradingAccount>(&client, ns));
            (Some(store), Some(filled), Some(stream))
        }
        false => (None, None, None),
    };
    let (bot_tx, bot_rx) = mpsc::unbounded_channel();
    let (account_tx, account_rx) = mpsc::unbounded_channel();
    fleet.register(Scope {
        namespace: namespace.clone(),
        bots: bot_store.clone(),
        accounts: account_store.clone(),
        bot_triggers: bot_tx,
        account_triggers: account_tx,
    });
    let monitor_api = Arc::new(crate::context::ServiceMonitorApi::default());
    let (monitor_tx, monitor_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_service_monitor_api(
        client.clone(),
        monitor_api.clone(),
        monitor_tx,
        shutdown.clone(),
    ));
    let scope = ns.unwrap_or("(all)").to_string();
    gate_on_caches(
        readiness(children_filled, bots_filled, accounts_filled),
        synced.clone(),
        scope.clone(),
    );
    let context = Arc::new(Context {
        client: client.clone(),
        settings,
        events: EventPublisher::new(client.clone(), instance),
        metrics,
        scraper: fleet.scraper.clone(),
        stores,
        service_monitor_api: monitor_api,
        synced,
        memory: Default::default(),
        restarts,
        fleet,
        account_memory: Default::default(),
        status_writes: Default::default(),
        shard,
    });
    tracing::info!(namespace = %scope, accounts, %shard, "controller started");
    let config = kube::runtime::controller::Config::default().concurrency(concurrency);
    let mut bot_controller = Controller::for_stream(bot_stream, bot_store)
        .reconcile_on(UnboundedReceiverStream(bot_rx))
        .reconcile_all_on(UnboundedReceiverStream(monitor_rx))
        .with_config(config.clone());
    for events in child_events {
        bot_controller = match events {
            ChildEvents::Pods(s) => bot_controller.owns_stream(s),
            ChildEvents::ConfigMaps(s) => bot_controller.owns_stream(s),
            ChildEvents::Services(s) => bot_controller.owns_stream(s),
            ChildEvents::ServiceAccounts(s) => bot_controller.owns_stream(s),
            ChildEvents::Roles(s) => bot_controller.owns_stream(s),
            ChildEvents::RoleBindings(s) => bot_controller.owns_stream(s),
        };
    }
    let bots = bot_controller
        .graceful_shutdown_on(stopped(shutdown.clone()))
        .run(reconcile, error_policy, context.clone())
        .for_each(log_results);
    let accounts = async move {
        let (Some(store), Some(stream)) = (account_store, account_stream) else {
            return;
        };
        Controller::for_stream(stream, store)
            .reconcile_on(UnboundedReceiverStream(account_rx))
            .with_config(config)
            .graceful_shutdown_on(stopped(shutdown))
            .run(crate::account::reconcile, crate::account::error_policy, context)
            .for_each(log_results)
            .await;
    };
    futures::future::join(bots, accounts).await;
    tracing::info!("controller stopped");
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Watch for the ServiceMonitor API appearing or disappearing (checked every 30 s); when it
/// appears, every bot is reconciled so wanted ServiceMonitors get created.
async fn watch_service_monitor_api(
    client: Client,
    available: Arc<crate::context::ServiceMonitorApi>,
    reconcile_all: mpsc::UnboundedSender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let now = client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
            .is_ok_and(|list| list.resources.iter().any(|r| r.name == "servicemonitors"));
        if available.set(now) {
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

    /// A reflector over events sent by hand, driven in the background; its store and signal.
    fn hand_fed_reflector() -> (
        Store<ConfigMap>,
        Filled,
        futures::channel::mpsc::UnboundedSender<watcher::Event<ConfigMap>>,
    ) {
        let (store, writer) = reflector::store::<ConfigMap>();
        let (mark, filled) = Filled::signal();
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let stream = reflector::reflector(writer, rx.map(Ok::<_, watcher::Error>)).inspect_ok(mark);
        tokio::spawn(stream.for_each(|_| async {}));
        (store, filled, tx)
    }

    /// Why the gate has a signal of its own: of two tasks waiting on one store's readiness (the
    /// Controller and a gate), kube-runtime wakes only the one that polled last.
    #[tokio::test]
    async fn a_store_wakes_only_the_last_of_two_waiters_the_signal_wakes_all() {
        let (store, filled, tx) = hand_fed_reflector();
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.wait_until_ready().await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let last = tokio::spawn({
            let store = store.clone();
            async move { store.wait_until_ready().await.is_ok() }
        });
        let gates: Vec<_> = (0..3).map(|_| tokio::spawn(filled.clone().wait())).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.unbounded_send(watcher::Event::Init).unwrap();
        tx.unbounded_send(watcher::Event::InitDone).unwrap();
        for gate in gates {
            tokio::time::timeout(Duration::from_secs(2), gate)
                .await
                .expect("every gate woken at once")
                .unwrap();
        }
        assert!(
            tokio::time::timeout(Duration::from_secs(2), last)
                .await
                .expect("the last waiter woken")
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !first.is_finished(),
            "kube-runtime now wakes every waiter: the gate could wait on the stores again"
        );
        first.abort();
    }

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

//! Fleet scale on the real cluster: 1,000 TradingBots reconciled by the operator deployed with
//! its chart, against the floor of one client writing the same child objects directly.
//!
//! The bots ask for more memory than any node has, so their pods stay Pending: this measures the
//! operator and the API server, not the kubelet starting 1,000 containers on two cores (and,
//! unlike cordoning the node, it leaves everyone else's pods alone).

use crate::apiserver::{self, ServerTime};
use crate::operator_process::OperatorProcess;
use crate::report::{Row, RunLog};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};
use test_harness::{Cluster, TestNamespace};
use tradingbot_crds::TradingBot;
use tradingbot_operator::cli::Settings;
use tradingbot_operator::reconcile::desired::{self, InstancePlan};

const BOTS: usize = 1000;
const CONCURRENCY: usize = 16;
const CHILDREN_PER_BOT: usize = 7;
const IDLE_WINDOW: Duration = Duration::from_secs(60);

/// What each bot's pod requests: more memory than a node has, so it stays Pending.
const UNSCHEDULABLE_MEMORY: &str = "1Ti";
/// How often the floor retries a pod the API server refused (its ServiceAccount's token is not
/// there yet).
const FLOOR_RETRY: Duration = Duration::from_millis(100);

fn bot_name(i: usize) -> String {
    format!("bot-{i:04}")
}

fn tradingbot(namespace: &str, i: usize) -> anyhow::Result<TradingBot> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": bot_name(i), "namespace": namespace},
        "spec": {
            "profile": "dev", "symbols": ["BTC-USD"], "dryRun": true, "rollout": {"strategy": "Direct"},
            "resources": {"requests": {"memory": UNSCHEDULABLE_MEMORY}},
        },
    }))?)
}

/// Create `object`, retrying while the API server asks to (a new ServiceAccount's token
/// Secret is made asynchronously, and pods naming it are refused until then).
async fn create<K>(client: &Client, namespace: &str, object: &K) -> anyhow::Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match api.create(&PostParams::default(), object).await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() < deadline && error.to_string().to_lowercase().contains("service account") => {
                tokio::time::sleep(FLOOR_RETRY).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn without_owner<K: Resource>(mut object: K) -> K {
    object.meta_mut().owner_references = None;
    object
}

/// The floor: the same children the operator makes for BOTS bots (built by its own pure
/// builders), created by one client, CONCURRENCY bots at a time, each bot's in the operator's order.
async fn floor(client: &Client, namespace: &str) -> anyhow::Result<Duration> {
    let mut settings = Settings::for_tests();
    settings.bot_image = crate::images::bot_image()?;
    let started = Instant::now();
    stream::iter(0..BOTS)
        .map(|i| {
            let settings = settings.clone();
            async move {
                let mut bot = tradingbot(namespace, i)?;
                bot.metadata.uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
                let plan = InstancePlan::prod(&bot, settings.bot_image.clone());
                create::<ServiceAccount>(client, namespace, &without_owner(desired::service_account(&bot))).await?;
                create::<Lease>(client, namespace, &without_owner(desired::lease(&bot, plan.instance))).await?;
                create::<Role>(client, namespace, &without_owner(desired::role(&bot))).await?;
                create::<RoleBinding>(client, namespace, &without_owner(desired::role_binding(&bot))).await?;
                create::<ConfigMap>(client, namespace, &without_owner(desired::config_map(&bot, &plan))).await?;
                create::<Service>(client, namespace, &without_owner(desired::service(&bot, plan.instance))).await?;
                create::<Pod>(client, namespace, &without_owner(desired::pod(&bot, &plan, &settings))).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// The operator's ServiceAccount, as the chart names it (release `tbo`).
const OPERATOR_ACCOUNT: &str = "tbo-tradingbot-operator";

/// One run of the floor, in a namespace of its own (gone again when this returns).
struct FloorRun {
    took: Duration,
    spent: Vec<apiserver::Spent>,
}

/// Give the operator's ServiceAccount (of `operator_ns`) in `namespace` the rules the chart gives
/// it in its own: a copy of its Role, bound to it.
async fn grant_operator_rules(client: &Client, operator_ns: &str, namespace: &str) -> anyhow::Result<()> {
    let source: Role = Api::namespaced(client.clone(), operator_ns)
        .get(OPERATOR_ACCOUNT)
        .await?;
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": OPERATOR_ACCOUNT, "namespace": namespace},
        "rules": source.rules,
    }))?;
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": OPERATOR_ACCOUNT, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_ACCOUNT},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": operator_ns}],
    }))?;
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// The floor as `client`; `operator_ns`: first grant the operator's rules there (`client`
/// acts as the operator).
async fn timed_floor(cluster: &Cluster, client: &Client, operator_ns: Option<&str>) -> anyhow::Result<FloorRun> {
    let floor_ns = cluster.namespace("bench-floor").await;
    if let Some(operator_ns) = operator_ns {
        grant_operator_rules(&cluster.client().await, operator_ns, &floor_ns.name).await?;
    }
    let before = ServerTime::read(cluster)?;
    let took = floor(client, &floor_ns.name).await?;
    let spent = ServerTime::read(cluster)?.since(&before);
    let floor_name = floor_ns.name.clone();
    drop(floor_ns);
    wait_namespace_gone(cluster, &floor_name).await;
    Ok(FloorRun { took, spent })
}

fn admin_floor_row(floor: Duration, admin: Duration) -> Row {
    Row::new(
        format!(
            "floor as a cluster admin: the same {} children",
            BOTS * CHILDREN_PER_BOT
        ),
        format!("{:.1} s", admin.as_secs_f64()),
    )
    .baseline(format!(
        "{:.1} s: the floor with the operator's credentials (Role and RoleBinding creates checked for escalation)",
        floor.as_secs_f64()
    ))
    .ratio(admin.as_secs_f64() / floor.as_secs_f64().max(0.001))
}

/// The operator's own /metrics page, read from its pod IP.
pub(crate) async fn operator_metrics(ns: &TestNamespace) -> anyhow::Result<String> {
    let pod = ns
        .pods("app.kubernetes.io/name=tradingbot-operator")
        .into_iter()
        .next()
        .unwrap_or_default();
    let ip = ns.kubectl_result(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"])?;
    Ok(reqwest::get(format!("http://{}:8080/metrics", ip.trim()))
        .await?
        .text()
        .await?)
}

/// The value of one sample line (`name{labels} value`).
fn sample_value(line: &str) -> f64 {
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// The operator's API requests so far by verb, from its /metrics page.
pub(crate) fn requests_by_verb(text: &str) -> BTreeMap<String, f64> {
    let mut by_verb = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("tradingbot_operator_api_requests_total{"))
    {
        let verb = line
            .split("verb=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        *by_verb.entry(verb.to_string()).or_insert(0.0) += sample_value(line);
    }
    by_verb
}

/// The sum of every sample of `name`, whatever its labels.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .map(sample_value)
        .sum()
}

async fn api_requests_by_verb(ns: &TestNamespace) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(requests_by_verb(&operator_metrics(ns).await?))
}

async fn api_requests(ns: &TestNamespace) -> anyhow::Result<f64> {
    Ok(api_requests_by_verb(ns).await?.values().sum())
}

/// Counts, from a watch, how many objects of one kind pass a test: cheap for the API server
/// (it sends each change once), unlike listing 1,000 TradingBots every half second, which
/// would load the very server whose speed is measured.
struct Counted {
    count: tokio::sync::watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Counted {
    /// Count the objects `stream` shows that pass `test`; ready once the first listing is in.
    async fn start<K, S>(events: S, test: fn(&K) -> bool) -> anyhow::Result<Self>
    where
        K: Resource + Send + 'static,
        S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let (tx, count) = tokio::sync::watch::channel(0);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut passing = std::collections::HashSet::new();
            let mut ready_tx = Some(ready_tx);
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Init) => passing.clear(),
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready_tx.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        let name = o.meta().name.clone().unwrap_or_default();
                        match test(&o) {
                            true => passing.insert(name),
                            false => passing.remove(&name),
                        };
                    }
                    Ok(watcher::Event::Delete(o)) => {
                        passing.remove(&o.meta().name.clone().unwrap_or_default());
                    }
                    Err(error) => eprintln!("bench: a convergence watch failed (it retries): {error}"),
                }
                tx.send_replace(passing.len());
            }
        });
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .map_err(|_| anyhow::anyhow!("a convergence watch did not list within 60 s"))??;
        Ok(Self { count, task })
    }

    fn now(&self) -> usize {
        *self.count.borrow()
    }
}

async fn count<K>(client: &Client, namespace: &str) -> usize
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!(
        "{}={}",
        tradingbot_crds::names::LABEL_MANAGED_BY,
        tradingbot_crds::names::MANAGED_BY
    ));
    api.list_metadata(&params).await.map(|l| l.items.len()).unwrap_or(0)
}

/// Every child kind the operator makes, counted.
async fn children(client: &Client, namespace: &str) -> usize {
    count::<ServiceAccount>(client, namespace).await
        + count::<Lease>(client, namespace).await
        + count::<Role>(client, namespace).await
        + count::<RoleBinding>(client, namespace).await
        + count::<ConfigMap>(client, namespace).await
        + count::<Service>(client, namespace).await
        + count::<Pod>(client, namespace).await
}

/// The fleet's convergence: TradingBots whose status the operator has written for their
/// current generation, from one watch; once all are, the child objects of every kind it
/// makes, listed (the operator writes a bot's status after its children, so the lists are
/// read about once).
struct Progress {
    statuses: Counted,
    client: Client,
    namespace: String,
    listed_at: Option<Instant>,
}

impl Progress {
    async fn start(client: &Client, namespace: &str) -> anyhow::Result<Self> {
        let bots: Api<TradingBot> = Api::namespaced(client.clone(), namespace);
        let statuses = Counted::start(
            watcher(bots, watcher::Config::default()).default_backoff(),
            |b: &TradingBot| {
                b.status
                    .as_ref()
                    .is_some_and(|s| s.phase.is_some() && s.observed_generation == b.metadata.generation)
            },
        )
        .await?;
        Ok(Self {
            statuses,
            client: client.clone(),
            namespace: namespace.to_string(),
            listed_at: None,
        })
    }

    /// Every status is in and so is every child (listed at most every half second).
    async fn converged(&mut self) -> bool {
        if self.statuses.now() < BOTS
            || self
                .listed_at
                .is_some_and(|at| at.elapsed() < Duration::from_millis(500))
        {
            return false;
        }
        self.listed_at = Some(Instant::now());
        children(&self.client, &self.namespace).await >= BOTS * CHILDREN_PER_BOT
    }
}

async fn wait_namespace_gone(cluster: &Cluster, namespace: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline && cluster.kubectl_result(&["get", "namespace", namespace]).is_ok() {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What the convergence phase measured.
struct Converged {
    created: Duration,
    converged: Duration,
    busy_cpu: Duration,
    requests: f64,
    per_verb: Vec<String>,
    peak_rss: u64,
}

/// What the idle window measured.
struct Idle {
    writes: Result<usize, String>,
    cpu: Duration,
    requests: f64,
}

pub async fn run(run: &mut RunLog) -> anyhow::Result<Vec<Row>> {
    let cluster = test_harness::cluster();
    cluster.install_crd();
    let client = cluster.client().await;
    run.fact("kubernetes_version", kubernetes_version(&cluster)?);
    run.fact("floor_retry", format!("{} ms", FLOOR_RETRY.as_millis()));

    let ns = cluster.namespace("bench-fleet").await;
    ns.deploy_operator(crate::images::operator_values(json!({}))?);
    let concurrency = ns.kubectl(&[
        "get",
        "deployment/tbo-tradingbot-operator",
        "-o",
        r#"jsonpath={.spec.template.spec.containers[0].env[?(@.name=="RECONCILE_CONCURRENCY")].value}"#,
    ]);
    run.fact("reconcile_concurrency", concurrency.trim());
    let operator = OperatorProcess::find(&ns)?;

    // The floor's requests are authorised as the operator's: creating a Role or RoleBinding
    // makes the API server check that its writer holds every permission in it, a check
    // cluster admins skip. The admin's floor is measured too, to show what that check costs.
    let as_operator = cluster.client_as_service_account(&ns.name, OPERATOR_ACCOUNT).await;
    eprintln!(
        "bench: floor — {} child objects from one client with the operator's credentials",
        BOTS * CHILDREN_PER_BOT
    );
    let floor_run = timed_floor(&cluster, &as_operator, Some(&ns.name)).await?;
    eprintln!("bench: floor again, as a cluster admin");
    let admin_floor = timed_floor(&cluster, &client, None).await?;

    eprintln!("bench: {BOTS} TradingBots through the operator");
    let bots: Api<TradingBot> = Api::namespaced(client.clone(), &ns.name);
    let server_before = ServerTime::read(&cluster)?;
    let converged = converge(&ns, &client, &bots, &operator).await?;
    let operator_spent = ServerTime::read(&cluster)?.since(&server_before);
    let idle = idle_window(&ns, &operator).await?;
    let restarted = operator.still_the_same(&ns).err().map(|e| e.to_string());
    let peak_rss = operator.peak_rss().map(|p| p.max(converged.peak_rss));
    eprintln!("bench: deleting the fleet");
    let deleted = delete_fleet(&ns, &bots).await;

    run.note(format!(
        "Fleet: each bot's pod requests {UNSCHEDULABLE_MEMORY} of memory, so the {BOTS} bot pods stay Pending (nothing else \
         on the node is affected); the TradingBots are created by one client at concurrency {CONCURRENCY} (all accepted \
         after {:.1} s). Converged = every TradingBot has a status for its generation and all {} children exist \
         (ServiceAccount, identity Lease, Role, RoleBinding, ConfigMap, Service, Pod per bot). The floor creates the same {} children, built \
         by the operator's own builders, from one client at concurrency {CONCURRENCY}. Deleting the fleet (finalizer: halt, \
         then remove) took {:.1} s. Operator reconcile concurrency: {}. API requests per bot by verb while converging: {}.",
        converged.created.as_secs_f64(),
        BOTS * CHILDREN_PER_BOT,
        BOTS * CHILDREN_PER_BOT,
        deleted.as_secs_f64(),
        concurrency.trim(),
        converged.per_verb.join(", ")
    ));
    run.note(format!(
        "Fleet: the API server's time by request (its own histogram, most first; the cluster's own requests included: \
         scheduler, controllers, the bench's watches), while the floor ran with the operator's credentials: {}; as a \
         cluster admin: {}; while the operator converged: {}.",
        apiserver::summary(&floor_run.spent, 6),
        apiserver::summary(&admin_floor.spent, 6),
        apiserver::summary(&operator_spent, 8),
    ));
    let mut rows = fleet_rows(&converged, floor_run.took, peak_rss, &idle, restarted);
    rows.insert(1, admin_floor_row(floor_run.took, admin_floor.took));
    // The next part starts on a quiet API server: the fleet's children are gone, not still
    // being collected behind it.
    let fleet_name = ns.name.clone();
    drop(ns);
    wait_namespace_gone(&cluster, &fleet_name).await;
    Ok(rows)
}

fn kubernetes_version(cluster: &Cluster) -> anyhow::Result<String> {
    let json: serde_json::Value = serde_json::from_str(&cluster.kubectl_result(&["version", "-o", "json"])?)?;
    Ok(json["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or("(unknown)")
        .trim_start_matches('v')
        .to_string())
}

/// Create the fleet and wait until every bot has its children and a status.
async fn converge(
    ns: &TestNamespace,
    client: &Client,
    bots: &Api<TradingBot>,
    operator: &OperatorProcess,
) -> anyhow::Result<Converged> {
    let mut progress = Progress::start(client, &ns.name).await?;
    let verbs_before = api_requests_by_verb(ns).await?;
    let cpu_before = operator.cpu()?;
    let started = Instant::now();
    stream::iter(0..BOTS)
        .map(|i| {
            let bots = bots.clone();
            let namespace = ns.name.clone();
            async move {
                bots.create(&PostParams::default(), &tradingbot(&namespace, i)?)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let created = started.elapsed();
    let deadline = started + Duration::from_secs(1800);
    let mut peak_rss = operator.rss()?;
    loop {
        peak_rss = peak_rss.max(operator.rss()?);
        if progress.converged().await {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fleet did not converge within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = started.elapsed();
    let busy_cpu = operator.cpu()?.saturating_sub(cpu_before);
    let verbs_after = api_requests_by_verb(ns).await?;
    let requests = verbs_after.values().sum::<f64>() - verbs_before.values().sum::<f64>();
    let per_verb = verbs_after
        .iter()
        .map(|(verb, n)| (verb, (n - verbs_before.get(verb).copied().unwrap_or(0.0)) / BOTS as f64))
        .filter(|(_, per_bot)| *per_bot >= 0.05)
        .map(|(verb, per_bot)| format!("{verb} {per_bot:.1}"))
        .collect();
    Ok(Converged {
        created,
        converged,
        busy_cpu,
        requests,
        per_verb,
        peak_rss,
    })
}

/// A full idle window once the requeues after the last writes have passed.
async fn idle_window(ns: &TestNamespace, operator: &OperatorProcess) -> anyhow::Result<Idle> {
    // Let requeues after the last writes pass, then watch a full window.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let since = test_harness::audit_now();
    let cpu_before = operator.cpu()?;
    let requests_before = api_requests(ns).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let user = format!("system:serviceaccount:{}:tbo-tradingbot-operator", ns.name);
    let writes = test_harness::try_audited_writes(&user, &since)
        .map(|w| w.len())
        .map_err(|e| e.to_string());
    Ok(Idle {
        writes,
        cpu: operator.cpu()?.saturating_sub(cpu_before),
        requests: api_requests(ns).await? - requests_before,
    })
}

/// Delete every TradingBot (the operator halts each, then lets it go); how long it took.
pub(crate) async fn delete_fleet(ns: &TestNamespace, bots: &Api<TradingBot>) -> Duration {
    let deleting = Instant::now();
    ns.kubectl(&["delete", "tradingbots", "--all", "--wait=false"]);
    let gone_by = deleting + Duration::from_secs(900);
    while Instant::now() < gone_by
        && bots
            .list_metadata(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(1)
            > 0
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    deleting.elapsed()
}

/// The fleet rows; every operator figure is INVALID when the operator restarted during the run.
fn fleet_rows(
    c: &Converged,
    floor_time: Duration,
    peak_rss: Result<u64, crate::operator_process::OperatorChanged>,
    idle: &Idle,
    restarted: Option<String>,
) -> Vec<Row> {
    let ratio = c.converged.as_secs_f64() / floor_time.as_secs_f64().max(0.001);
    let rss_row = match peak_rss {
        Ok(peak) => Row::new(
            format!("operator peak RSS at {BOTS} bots"),
            format!("{:.1} MiB", peak as f64 / 1_048_576.0),
        )
        .target("<= 64 MiB", peak <= 64 * 1_048_576),
        Err(e) => Row::invalid(format!("operator peak RSS at {BOTS} bots"), e).target("<= 64 MiB", false),
    };
    let idle_row = match &idle.writes {
        Ok(writes) => Row::new(
            format!("operator once idle ({} s window)", IDLE_WINDOW.as_secs()),
            format!(
                "{:.0} writes/min (audit log), {:.0} API requests, {:.2} CPU-s",
                *writes as f64 * 60.0 / IDLE_WINDOW.as_secs_f64(),
                idle.requests,
                idle.cpu.as_secs_f64()
            ),
        )
        .target("0 writes/min", *writes == 0),
        Err(e) => Row::invalid(format!("operator once idle ({} s window)", IDLE_WINDOW.as_secs()), e)
            .target("0 writes/min", false),
    };
    let rows = vec![
        Row::new(
            format!("{BOTS} TradingBots → children exist and status written"),
            format!("{:.1} s", c.converged.as_secs_f64()),
        )
        .baseline(format!(
            "{:.1} s: one client with the operator's credentials creating the same {} children",
            floor_time.as_secs_f64(),
            BOTS * CHILDREN_PER_BOT
        ))
        .ratio(ratio)
        .target("<= 1.5x", ratio <= 1.5),
        rss_row,
        Row::new(
            "operator CPU while converging",
            format!(
                "{:.1} CPU-s ({:.2} cores on average)",
                c.busy_cpu.as_secs_f64(),
                c.busy_cpu.as_secs_f64() / c.converged.as_secs_f64().max(0.001)
            ),
        ),
        Row::new(
            "operator API requests per bot (to converge)",
            format!("{:.1}", c.requests / BOTS as f64),
        )
        .baseline(format!(
            "{CHILDREN_PER_BOT} child creates + 1 status write = {}",
            CHILDREN_PER_BOT + 1
        ))
        .ratio(c.requests / BOTS as f64 / (CHILDREN_PER_BOT + 1) as f64),
        idle_row,
    ];
    rows.into_iter().map(|r| r.invalid_if(restarted.clone())).collect()
}

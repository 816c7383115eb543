//! Fleet scale on the real cluster: 1,000 TradingBots reconciled by the operator deployed with
//! its chart, against the floor of one client writing the same child objects directly.
//!
//! The bots ask for more memory than any node has, so their pods stay Pending: this measures the
//! operator and the API server, not the kubelet starting 1,000 containers on two cores (and,
//! unlike cordoning the node, it leaves everyone else's pods alone).

use crate::operator_process::OperatorProcess;
use crate::report::{Row, RunLog};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, PostParams};
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
const CHILDREN_PER_BOT: usize = 6;
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

async fn count<K>(client: &Client, namespace: &str) -> usize
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + Debug + DeserializeOwned,
    K::DynamicType: Default,
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
        + count::<Role>(client, namespace).await
        + count::<RoleBinding>(client, namespace).await
        + count::<ConfigMap>(client, namespace).await
        + count::<Service>(client, namespace).await
        + count::<Pod>(client, namespace).await
}

/// TradingBots whose status the operator has written for their current generation.
async fn statuses_written(bots: &Api<TradingBot>) -> usize {
    let Ok(list) = bots.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|b| {
            b.status
                .as_ref()
                .is_some_and(|s| s.phase.is_some() && s.observed_generation == b.metadata.generation)
        })
        .count()
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

    eprintln!(
        "bench: floor — {} child objects from one client",
        BOTS * CHILDREN_PER_BOT
    );
    let floor_ns = cluster.namespace("bench-floor").await;
    let floor_time = floor(&client, &floor_ns.name).await?;
    let floor_name = floor_ns.name.clone();
    drop(floor_ns);
    wait_namespace_gone(&cluster, &floor_name).await;

    eprintln!("bench: {BOTS} TradingBots through the operator");
    let bots: Api<TradingBot> = Api::namespaced(client.clone(), &ns.name);
    let converged = converge(&ns, &client, &bots, &operator).await?;
    let idle = idle_window(&ns, &operator).await?;
    let restarted = operator.still_the_same(&ns).err().map(|e| e.to_string());
    let peak_rss = operator.peak_rss().map(|p| p.max(converged.peak_rss));
    eprintln!("bench: deleting the fleet");
    let deleted = delete_fleet(&ns, &bots).await;

    run.note(format!(
        "Fleet: each bot's pod requests {UNSCHEDULABLE_MEMORY} of memory, so the {BOTS} bot pods stay Pending (nothing else \
         on the node is affected); the TradingBots are created by one client at concurrency {CONCURRENCY} (all accepted \
         after {:.1} s). Converged = every TradingBot has a status for its generation and all {} children exist \
         (ServiceAccount, Role, RoleBinding, ConfigMap, Service, Pod per bot). The floor creates the same {} children, built \
         by the operator's own builders, from one client at concurrency {CONCURRENCY}. Deleting the fleet (finalizer: halt, \
         then remove) took {:.1} s. Operator reconcile concurrency: {}. API requests per bot by verb while converging: {}.",
        converged.created.as_secs_f64(),
        BOTS * CHILDREN_PER_BOT,
        BOTS * CHILDREN_PER_BOT,
        deleted.as_secs_f64(),
        concurrency.trim(),
        converged.per_verb.join(", ")
    ));
    let rows = fleet_rows(&converged, floor_time, peak_rss, &idle, restarted);
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
        if statuses_written(bots).await == BOTS && children(client, &ns.name).await >= BOTS * CHILDREN_PER_BOT {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fleet did not converge within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = started.elapsed();
    let busy_cpu = operator.cpu()?.saturating_sub(cpu_before);
    let verbs_after = api_requests_by_verb(ns).await?;
    let requests = verbs_after.values().sum::<f64>() - verbs_before.values().sum::<f64>();
    let per_verb = verbs_after
        .iter()
        .map(|(verb, n)| (verb, (n - verbs_before.get(verb).copied().unwrap_or(0.0)) / BOTS as f64))
        .filter(|(_, per_bot)| *per_bot != 0.0)
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
            "{:.1} s: one client creating the same {} children",
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

//! Fleet scale on the real cluster: 1,000 TradingBots reconciled by the operator deployed with
//! its chart, against the floor of one client writing the same child objects directly.
//!
//! The node is cordoned while the fleet exists, so bot pods stay Pending: this measures the
//! operator and the API server, not the kubelet starting 1,000 containers on two cores.

use crate::report::Row;
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

/// Keeps the node cordoned while alive.
struct Cordon(Cluster);

impl Cordon {
    fn new(cluster: &Cluster) -> anyhow::Result<Self> {
        cluster.kubectl_result(&["cordon", &cluster.node_name()])?;
        Ok(Self(cluster.clone()))
    }
}

impl Drop for Cordon {
    fn drop(&mut self) {
        let _ = self.0.kubectl_result(&["uncordon", &self.0.node_name()]);
    }
}

fn bot_name(i: usize) -> String {
    format!("bot-{i:04}")
}

fn tradingbot(namespace: &str, i: usize) -> anyhow::Result<TradingBot> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": bot_name(i), "namespace": namespace},
        "spec": {"profile": "dev", "symbols": ["BTC-USD"], "dryRun": true, "rollout": {"strategy": "Direct"}},
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
                tokio::time::sleep(Duration::from_millis(100)).await;
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
    let settings = Settings::for_tests();
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

/// The operator's process on this host (found through its pod's cgroup).
struct OperatorProcess {
    pid: u32,
}

impl OperatorProcess {
    fn find(ns: &TestNamespace) -> anyhow::Result<Self> {
        let pod = ns
            .pods("app.kubernetes.io/name=tradingbot-operator")
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("no operator pod"))?;
        // The chart gives the container its pod name in POD_NAME.
        let marker = format!("POD_NAME={pod}");
        let mut candidates = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains("tradingbot-operator") {
                continue;
            }
            candidates.push(pid);
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
                return Ok(Self { pid });
            }
        }
        anyhow::bail!("the operator's process (pod {pod}) is not visible from this host (candidates: {candidates:?})")
    }

    /// Peak resident set size (VmHWM), bytes.
    fn peak_rss(&self) -> u64 {
        self.status_kb("VmHWM:") * 1024
    }

    fn rss(&self) -> u64 {
        self.status_kb("VmRSS:") * 1024
    }

    fn status_kb(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }
}

/// The operator's API requests so far by verb, from its own /metrics.
async fn api_requests_by_verb(ns: &TestNamespace) -> anyhow::Result<BTreeMap<String, f64>> {
    let pod = ns
        .pods("app.kubernetes.io/name=tradingbot-operator")
        .into_iter()
        .next()
        .unwrap_or_default();
    let ip = ns.kubectl_result(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"])?;
    let text = reqwest::get(format!("http://{}:8080/metrics", ip.trim()))
        .await?
        .text()
        .await?;
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
        let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *by_verb.entry(verb.to_string()).or_insert(0.0) += value;
    }
    Ok(by_verb)
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

pub async fn run(notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let cluster = test_harness::cluster();
    cluster.install_crd();
    cluster.require_images();
    let client = cluster.client().await;

    // The operator first: its own pod must be scheduled before the node is cordoned.
    let ns = cluster.namespace("bench-fleet").await;
    ns.deploy_operator(json!({}));
    let operator = OperatorProcess::find(&ns)?;
    let cordon = Cordon::new(&cluster)?;

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
    let verbs_before = api_requests_by_verb(&ns).await?;
    let requests_before: f64 = verbs_before.values().sum();
    let cpu_before = operator.cpu();
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
    let mut peak_while_converging = operator.rss();
    loop {
        peak_while_converging = peak_while_converging.max(operator.rss());
        if statuses_written(&bots).await == BOTS && children(&client, &ns.name).await >= BOTS * CHILDREN_PER_BOT {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fleet did not converge within 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let converged = started.elapsed();
    let busy_cpu = operator.cpu().saturating_sub(cpu_before);
    let verbs_after = api_requests_by_verb(&ns).await?;
    let requests = verbs_after.values().sum::<f64>() - requests_before;
    let per_verb: Vec<String> = verbs_after
        .iter()
        .map(|(verb, n)| (verb, (n - verbs_before.get(verb).copied().unwrap_or(0.0)) / BOTS as f64))
        .filter(|(_, per_bot)| *per_bot > 0.0)
        .map(|(verb, per_bot)| format!("{verb} {per_bot:.1}"))
        .collect();

    // Idle: let requeues after the last writes pass, then watch a full window.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle_since = test_harness::audit_now();
    let idle_cpu_before = operator.cpu();
    let idle_requests_before = api_requests(&ns).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let user = format!("system:serviceaccount:{}:tbo-tradingbot-operator", ns.name);
    let idle_writes = test_harness::audited_writes(&user, &idle_since).len();
    let idle_cpu = operator.cpu().saturating_sub(idle_cpu_before);
    let idle_requests = api_requests(&ns).await? - idle_requests_before;
    let peak_rss = operator.peak_rss().max(peak_while_converging);

    eprintln!("bench: deleting the fleet");
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
    let deleted = deleting.elapsed();
    drop(cordon);

    let ratio = converged.as_secs_f64() / floor_time.as_secs_f64().max(0.001);
    let per_minute = idle_writes as f64 * 60.0 / IDLE_WINDOW.as_secs_f64();
    notes.push(format!(
        "Fleet: the node is cordoned so the {BOTS} bot pods stay Pending; the TradingBots are created by one client at \
         concurrency {CONCURRENCY} (all accepted after {:.1} s). Converged = every TradingBot has a status for its generation \
         and all {} children exist (ServiceAccount, Role, RoleBinding, ConfigMap, Service, Pod per bot). The floor creates the \
         same {} children, built by the operator's own builders, from one client at concurrency {CONCURRENCY}. Deleting the \
         fleet (finalizer: halt, then remove) took {:.1} s. Operator reconcile concurrency: chart default (16). API requests \
         per bot by verb while converging: {}.",
        created.as_secs_f64(),
        BOTS * CHILDREN_PER_BOT,
        BOTS * CHILDREN_PER_BOT,
        deleted.as_secs_f64(),
        per_verb.join(", ")
    ));
    Ok(vec![
        Row::new(
            format!("{BOTS} TradingBots → children exist and status written"),
            format!("{:.1} s", converged.as_secs_f64()),
        )
        .baseline(format!(
            "{:.1} s: one client creating the same {} children",
            floor_time.as_secs_f64(),
            BOTS * CHILDREN_PER_BOT
        ))
        .ratio(ratio)
        .target("<= 1.5x", ratio <= 1.5),
        Row::new(
            format!("operator peak RSS at {BOTS} bots"),
            format!("{:.1} MiB", peak_rss as f64 / 1_048_576.0),
        )
        .target("<= 64 MiB", peak_rss <= 64 * 1_048_576),
        Row::new(
            "operator CPU while converging",
            format!(
                "{:.1} CPU-s ({:.2} cores on average)",
                busy_cpu.as_secs_f64(),
                busy_cpu.as_secs_f64() / converged.as_secs_f64().max(0.001)
            ),
        ),
        Row::new(
            "operator API requests per bot (to converge)",
            format!("{:.1}", requests / BOTS as f64),
        )
        .baseline(format!(
            "{CHILDREN_PER_BOT} child creates + 1 status write = {}",
            CHILDREN_PER_BOT + 1
        ))
        .ratio(requests / BOTS as f64 / (CHILDREN_PER_BOT + 1) as f64),
        Row::new(
            "operator once idle (60 s window)",
            format!(
                "{per_minute:.0} writes/min (audit log), {idle_requests:.0} API requests, {:.2} CPU-s",
                idle_cpu.as_secs_f64()
            ),
        )
        .target("0 writes/min", idle_writes == 0),
    ])
}

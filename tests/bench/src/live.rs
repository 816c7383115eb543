//! A live fleet on the real cluster: the operator deployed by its chart scrapes as many real
//! perps-bot pods as this node holds (paper trading against the exchange simulator) plus a
//! synthetic fleet of bots whose metrics one server on this host answers (their pods are never
//! scheduled; the bench writes phase Running and an address of the synthetic fleet as pod IP
//! into each one's status). Measured at
//! steady state: the operator's CPU and RSS, its API requests by verb, the requests and writes
//! per bot, whether every bot is scraped on schedule; then the guard reaction of one probe bot
//! at fleet size against the same bot measured alone before the fleet existed.

mod prometheus;

use crate::fleet;
use crate::operator_process::OperatorProcess;
use crate::report::{Row, RunLog, Trials, distribution, percentile};
use crate::synthetic::{self, SyntheticFleet};
use anyhow::Context as _;
use exchange_sim::{SimConfig, Simulator};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use test_harness::AuditedWrite;
use test_harness::{Cluster, TestNamespace, host_from_pods};
use tokio::sync::watch;
use tradingbot_crds::{TradingBot, TradingMode};

/// Synthetic bots besides the probe (`BENCH_LIVE_SYNTHETIC` overrides).
const SYNTHETIC_BOTS: usize = 2000;
/// Pod slots of the node left free for everything else.
const NODE_MARGIN: usize = 8;
/// Real bot pods by default (`BENCH_LIVE_REAL` sets another number): on two cores, more paper
/// bots cycling every second would measure a saturated node rather than the operator.
const REAL_BOTS: usize = 100;
/// Node memory a real bot pod is counted at (bot, shim and pause, with room to spare).
const REAL_BOT_MEMORY: u64 = 64 << 20;
const CONCURRENCY: usize = 16;
/// The fleet's scrape interval: the CRD's default.
const FLEET_SCRAPE: Duration = Duration::from_secs(10);
/// The probe's scrape interval (as in the reaction bench).
const PROBE_SCRAPE: Duration = Duration::from_secs(2);
const PROBE: &str = "probe";
/// The probe is synthetic bot 0; the fleet's synthetic bots are 1..=SYNTHETIC_BOTS.
const PROBE_INDEX: usize = 0;
const LOSS_LEVEL: &str = "100";
const LOSS_OVER: &str = "150";
const TRIALS: usize = 30;
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);
const STEADY_WINDOW: Duration = Duration::from_secs(120);
const UNSCHEDULABLE_MEMORY: &str = "1Ti";

fn env_count(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn synthetic_name(index: usize) -> String {
    if index == PROBE_INDEX {
        PROBE.into()
    } else {
        format!("syn-{index:04}")
    }
}

fn real_name(i: usize) -> String {
    format!("live-{i:03}")
}

fn tradingbot(namespace: &str, name: &str, spec: Value) -> anyhow::Result<TradingBot> {
    let mut manifest = json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"profile": "dev", "symbols": ["BTC-USD"], "dryRun": true, "rollout": {"strategy": "Direct"}},
    });
    test_harness::merge_json(&mut manifest["spec"], spec);
    Ok(serde_json::from_value(manifest)?)
}

/// A synthetic bot: its pod is never scheduled, its metrics are the synthetic fleet's.
fn synthetic_bot(namespace: &str, index: usize) -> anyhow::Result<TradingBot> {
    let mut spec = json!({
        "resources": {"requests": {"memory": UNSCHEDULABLE_MEMORY}},
        "metrics": {"port": synthetic::PORT},
    });
    if index == PROBE_INDEX {
        spec = json!({
            "resources": {"requests": {"memory": UNSCHEDULABLE_MEMORY}},
            "metrics": {"port": synthetic::PORT, "scrapeIntervalSeconds": PROBE_SCRAPE.as_secs()},
            "guards": {"dailyLoss": {"reduceOnlyAt": LOSS_LEVEL}, "resume": "Auto", "healthyCyclesBeforeResume": 1},
        });
    }
    tradingbot(namespace, &synthetic_name(index), spec)
}

/// A real paper-trading bot, with a CPU request small enough that pod slots, not CPU, bound
/// how many this node runs.
fn real_bot(namespace: &str, i: usize) -> anyhow::Result<TradingBot> {
    tradingbot(
        namespace,
        &real_name(i),
        json!({"resources": {"requests": {"cpu": "1m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}}),
    )
}

/// Real bot pods this node can hold besides what runs: free pod slots, and memory.
fn real_bot_capacity(cluster: &Cluster) -> anyhow::Result<usize> {
    let available = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("MemAvailable in /proc/meminfo")?;
    // Half of what is available: the API server, etcd and the operator grow with the fleet.
    let by_memory = (available / 2 / REAL_BOT_MEMORY) as usize;
    Ok(free_pod_slots(cluster)?.min(by_memory))
}

/// Pod slots this node has free (allocatable pods minus the pods on it, minus a margin).
fn free_pod_slots(cluster: &Cluster) -> anyhow::Result<usize> {
    let node = cluster.node_name();
    let allocatable: usize = cluster
        .kubectl_result(&["get", "node", &node, "-o", "jsonpath={.status.allocatable.pods}"])?
        .trim()
        .parse()
        .context("the node's allocatable pods")?;
    let selector = format!("spec.nodeName={node},status.phase!=Succeeded,status.phase!=Failed");
    let on_node = cluster
        .kubectl_result(&["get", "pods", "-A", "--field-selector", &selector, "-o", "name"])?
        .lines()
        .count();
    Ok(allocatable.saturating_sub(on_node + NODE_MARGIN))
}

/// When the probe's TradingBot last changed mode, as this process saw it.
#[derive(Debug, Clone, Copy)]
struct ModeSeen {
    mode: Option<TradingMode>,
    at: Instant,
}

fn gauge(mode: TradingMode) -> u8 {
    match mode {
        TradingMode::Normal => 0,
        TradingMode::ReduceOnly => 1,
        TradingMode::Halted => 2,
    }
}

/// Watches the probe's status; the synthetic probe reports the mode its status gives (as a
/// real bot obeys it). Watch errors are counted: a phase that had one is not trusted.
struct ProbeWatch {
    modes: watch::Receiver<ModeSeen>,
    errors: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ProbeWatch {
    fn start(bots: Api<TradingBot>, fleet: Arc<SyntheticFleet>) -> Self {
        let (tx, modes) = watch::channel(ModeSeen {
            mode: None,
            at: Instant::now(),
        });
        let errors = Arc::new(AtomicU64::new(0));
        let counted = errors.clone();
        let config = watcher::Config::default().fields(&format!("metadata.name={PROBE}"));
        let task = tokio::spawn(async move {
            let mut events = watcher(bots, config).default_backoff().boxed();
            while let Some(event) = events.next().await {
                let bot = match event {
                    Ok(watcher::Event::Apply(bot) | watcher::Event::InitApply(bot)) => bot,
                    Ok(_) => continue,
                    Err(error) => {
                        eprintln!("bench: the probe's watch failed: {error}");
                        counted.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let at = Instant::now();
                let mode = bot.status.as_ref().and_then(|s| s.mode);
                if let Some(mode) = mode {
                    fleet.set_mode(PROBE_INDEX, gauge(mode));
                }
                tx.send_if_modified(|seen| {
                    let changed = seen.mode != mode;
                    if changed {
                        *seen = ModeSeen { mode, at };
                    }
                    changed
                });
            }
        });
        Self { modes, errors, task }
    }

    /// When the probe's status reached `want` (no earlier than `since`, when given), within
    /// `timeout`.
    async fn wait_for(&mut self, want: TradingMode, since: Option<Instant>, timeout: Duration) -> Option<Instant> {
        let reached = self
            .modes
            .wait_for(|seen| seen.mode == Some(want) && since.is_none_or(|since| seen.at >= since));
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(seen)) => Some(seen.at),
            _ => None,
        }
    }

    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for ProbeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The probe's guard, TRIALS times: its loss steps over the level at a random phase of its
/// scrape, and the time until its status says ReduceOnly is one sample; then the loss goes back
/// to 0 and the probe resumes (resume: Auto, one healthy evaluation).
async fn guard_trials(fleet: &SyntheticFleet, probe: &mut ProbeWatch) -> anyhow::Result<Trials<Duration>> {
    let mut trials = Trials::default();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for trial in 0..TRIALS {
        probe
            .wait_for(TradingMode::Normal, None, TRIAL_TIMEOUT * 3)
            .await
            .with_context(|| format!("guard trial {trial}: the probe did not return to Normal"))?;
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let jitter = Duration::from_millis(500 + (seed >> 33) % (PROBE_SCRAPE.as_millis() as u64 + 500));
        tokio::time::sleep(jitter).await;
        let started = Instant::now();
        set_loss(fleet, LOSS_OVER);
        match probe
            .wait_for(TradingMode::ReduceOnly, Some(started), TRIAL_TIMEOUT)
            .await
        {
            Some(at) => trials.samples.push(at.saturating_duration_since(started)),
            None => trials.timed_out += 1,
        }
        set_loss(fleet, "0");
    }
    Ok(trials)
}

fn set_loss(fleet: &SyntheticFleet, loss: &str) {
    fleet.set_loss(PROBE_INDEX, loss);
}

/// Give every synthetic bot's pod its address as pod IP (and phase Running), as the operator
/// creates the pods; returns once all `bots` have one.
async fn assign_addresses(client: &Client, namespace: &str, bots: &HashMap<String, usize>) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        // From the API server's cache (a stale answer only means another round): a full list
        // from etcd every two seconds at fleet size would load what is being measured.
        let list = pods.list(&ListParams::default().match_any()).await?;
        let mut assigned = 0;
        let mut missing = Vec::new();
        for pod in &list.items {
            let owner = pod
                .owner_references()
                .iter()
                .find(|o| o.kind == "TradingBot")
                .map(|o| o.name.clone());
            let Some(index) = owner.and_then(|o| bots.get(&o).copied()) else {
                continue;
            };
            let status = pod.status.as_ref();
            let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
            if running && status.and_then(|s| s.pod_ip.as_ref()).is_some() {
                assigned += 1;
            } else {
                missing.push((pod.name_any(), index));
            }
        }
        stream::iter(missing)
            .map(|(name, index)| {
                let pods = pods.clone();
                async move {
                    let ip = synthetic::address(index).to_string();
                    // The operator scrapes only Running pods with an IP; nothing else writes the
                    // phase of a pod no node runs (the scheduler only adds its condition).
                    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                        .with_context(|| format!("giving pod {name} the address {ip}"))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        if assigned == bots.len() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {assigned} of {} synthetic pods have an address after 30 minutes",
            bots.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Wait until every synthetic bot in `indices` was scraped at least `times` more times than in `before`.
async fn wait_scraped(fleet: &SyntheticFleet, indices: &[usize], before: &[u64], times: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let now = fleet.scrapes();
        let behind = indices
            .iter()
            .filter(|i| now[**i] < before.get(**i).copied().unwrap_or(0) + times)
            .count();
        if behind == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{behind} synthetic bots were not scraped {times} times within 15 minutes"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How many of `names` have status phase Running.
async fn running(bots: &Api<TradingBot>, names: &[String]) -> usize {
    let Ok(list) = bots.list(&ListParams::default().match_any()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|b| names.contains(&b.name_any()))
        .filter(|b| {
            b.status
                .as_ref()
                .and_then(|s| s.phase)
                .is_some_and(|p| p == tradingbot_crds::status::Phase::Running)
        })
        .count()
}

/// Wait until the real bots run (or stop coming up: then the fleet has the ones that did).
async fn wait_real_running(bots: &Api<TradingBot>, names: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut last = (0, Instant::now());
    loop {
        let now = running(bots, names).await;
        if now == names.len() || Instant::now() >= deadline {
            return now;
        }
        if now > last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(180) {
            return now;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn create_all(bots: &Api<TradingBot>, manifests: Vec<TradingBot>) -> anyhow::Result<()> {
    stream::iter(manifests)
        .map(|bot| {
            let bots = bots.clone();
            async move {
                bots.create(&PostParams::default(), &bot)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The operator's counters at one moment.
struct Counters {
    at: Instant,
    cpu: Duration,
    by_verb: BTreeMap<String, f64>,
    reconciles: f64,
    scrapes: f64,
    scrape_failures: f64,
    synthetic_scrapes: u64,
}

async fn counters(ns: &TestNamespace, operator: &OperatorProcess, fleet: &SyntheticFleet) -> anyhow::Result<Counters> {
    let text = fleet::operator_metrics(ns).await?;
    Ok(Counters {
        at: Instant::now(),
        cpu: operator.cpu()?,
        by_verb: fleet::requests_by_verb(&text),
        reconciles: fleet::metric_sum(&text, "tradingbot_operator_reconciliations_total"),
        scrapes: fleet::metric_sum(&text, "tradingbot_operator_scrape_duration_seconds_count"),
        scrape_failures: fleet::metric_sum(&text, "tradingbot_operator_scrape_failures_total"),
        synthetic_scrapes: fleet.scrapes().iter().sum(),
    })
}

/// What one steady-state window measured.
struct Steady {
    bots: usize,
    window: Duration,
    cpu: Duration,
    rss: u64,
    /// Requests per minute by verb (watches are long-lived and left out).
    per_minute: BTreeMap<String, f64>,
    reconciles_per_second: f64,
    scrapes_per_second: f64,
    synthetic_per_second: f64,
    scrape_failures: f64,
    scheduled_per_second: f64,
    writes: Result<Vec<AuditedWrite>, String>,
}

impl Steady {
    /// The window's writes, and what they were: "0", or "44 (patch tradingbots/status 22 on 11
    /// objects, create events 22 on 22 objects)".
    fn writes_told(&self) -> Result<(usize, String), &str> {
        let writes = self.writes.as_ref().map_err(String::as_str)?;
        let mut kinds: BTreeMap<(String, String), (usize, std::collections::BTreeSet<String>)> = BTreeMap::new();
        for write in writes {
            let resource = match write.subresource.as_str() {
                "" => write.resource.clone(),
                sub => format!("{}/{sub}", write.resource),
            };
            let refused = if write.code >= 400 {
                format!(" refused {}", write.code)
            } else {
                String::new()
            };
            let kind = kinds
                .entry((write.verb.clone(), format!("{resource}{refused}")))
                .or_default();
            kind.0 += 1;
            kind.1.insert(write.name.clone());
        }
        let told: Vec<String> = kinds
            .iter()
            .map(|((verb, resource), (n, names))| format!("{verb} {resource} {n} on {} objects", names.len()))
            .collect();
        let text = if told.is_empty() {
            "0".to_string()
        } else {
            format!("{} ({})", writes.len(), told.join(", "))
        };
        Ok((writes.len(), text))
    }

    fn minutes(&self) -> f64 {
        self.window.as_secs_f64() / 60.0
    }

    fn reads_per_bot_minute(&self) -> f64 {
        let reads: f64 = ["get", "list"].iter().filter_map(|v| self.per_minute.get(*v)).sum();
        reads / self.bots.max(1) as f64
    }

    fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / self.window.as_secs_f64()
    }
}

/// A window of `window` once nothing is converging any more: everything the operator costs.
async fn steady_window(
    ns: &TestNamespace,
    operator: &OperatorProcess,
    fleet: &SyntheticFleet,
    bots: usize,
    scheduled_per_second: f64,
    window: Duration,
) -> anyhow::Result<Steady> {
    let since = test_harness::audit_now();
    let before = counters(ns, operator, fleet).await?;
    tokio::time::sleep(window).await;
    let after = counters(ns, operator, fleet).await?;
    let elapsed = after.at.saturating_duration_since(before.at);
    let seconds = elapsed.as_secs_f64().max(0.001);
    let per_minute = after
        .by_verb
        .iter()
        .filter(|(verb, _)| verb.as_str() != "watch")
        .map(|(verb, n)| {
            let delta = n - before.by_verb.get(verb).copied().unwrap_or(0.0);
            (verb.clone(), delta * 60.0 / seconds)
        })
        .collect();
    let user = format!("system:serviceaccount:{}:tbo-tradingbot-operator", ns.name);
    let writes = test_harness::try_audited_writes(&user, &since).map_err(|e| e.to_string());
    Ok(Steady {
        bots,
        window: elapsed,
        cpu: after.cpu.saturating_sub(before.cpu),
        rss: operator.rss()?,
        per_minute,
        reconciles_per_second: (after.reconciles - before.reconciles) / seconds,
        // Failed scrapes are timed too: only the successful ones keep the schedule.
        scrapes_per_second: ((after.scrapes - before.scrapes) - (after.scrape_failures - before.scrape_failures))
            / seconds,
        synthetic_per_second: (after.synthetic_scrapes - before.synthetic_scrapes) as f64 / seconds,
        scrape_failures: after.scrape_failures - before.scrape_failures,
        scheduled_per_second,
        writes,
    })
}

/// The probe alone: created, given its address, scraped, Normal.
async fn start_probe(
    ns: &TestNamespace,
    client: &Client,
    bots: &Api<TradingBot>,
    fleet: &SyntheticFleet,
    probe: &mut ProbeWatch,
) -> anyhow::Result<()> {
    create_all(bots, vec![synthetic_bot(&ns.name, PROBE_INDEX)?]).await?;
    assign_addresses(client, &ns.name, &HashMap::from([(PROBE.to_string(), PROBE_INDEX)])).await?;
    wait_scraped(fleet, &[PROBE_INDEX], &[], 3).await?;
    probe
        .wait_for(TradingMode::Normal, None, Duration::from_secs(60))
        .await
        .ok_or_else(|| anyhow::anyhow!("the probe's status never said Normal"))?;
    Ok(())
}

/// What the live fleet was, and how long it took to get there.
struct FleetShape {
    synthetic: usize,
    real_wanted: usize,
    real_running: usize,
    page_bytes: usize,
    converged: Duration,
}

/// Create the synthetic and real bots, give the synthetic pods addresses and wait until every
/// bot is scraped.
async fn grow_fleet(
    ns: &TestNamespace,
    client: &Client,
    bots: &Api<TradingBot>,
    fleet: &SyntheticFleet,
    synthetic: usize,
    real: usize,
) -> anyhow::Result<FleetShape> {
    let started = Instant::now();
    let before = fleet.scrapes();
    let mut manifests = Vec::new();
    for i in 0..real {
        manifests.push(real_bot(&ns.name, i)?);
    }
    for index in 1..=synthetic {
        manifests.push(synthetic_bot(&ns.name, index)?);
    }
    create_all(bots, manifests).await?;
    let names: HashMap<String, usize> = (1..=synthetic).map(|i| (synthetic_name(i), i)).collect();
    assign_addresses(client, &ns.name, &names).await?;
    let indices: Vec<usize> = (1..=synthetic).collect();
    wait_scraped(fleet, &indices, &before, 2).await?;
    let real_names: Vec<String> = (0..real).map(real_name).collect();
    let real_running = wait_real_running(bots, &real_names).await;
    Ok(FleetShape {
        synthetic,
        real_wanted: real,
        real_running,
        page_bytes: fleet.page_bytes(),
        converged: started.elapsed(),
    })
}

pub async fn run(run: &mut RunLog) -> anyhow::Result<Vec<Row>> {
    let cluster = test_harness::cluster();
    cluster.install_crd();
    let client = cluster.client().await;
    let synthetic = env_count("BENCH_LIVE_SYNTHETIC").unwrap_or(SYNTHETIC_BOTS);
    let fleet = Arc::new(SyntheticFleet::start(synthetic + 1).await?);
    let sim = Simulator::start(SimConfig {
        bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        private_rate_limit: 0,
        public_rate_limit: 0,
        ..SimConfig::default()
    })
    .await?;
    let host = host_from_pods();
    let port = sim.addr().port();
    let ns = cluster.namespace("bench-live").await;
    let values = crate::images::operator_values(
        // Room above the chart's 256Mi limit: an out-of-memory kill at fleet size would end the
        // part instead of measuring it (the RSS row says what it really used).
        json!({"resources": {"limits": {"memory": "1Gi"}}, "exchange": {
            "defaultApiBaseUrl": format!("http://{host}:{port}/api/v3/brokerage"),
            "defaultWsUrl": format!("ws://{host}:{port}/ws"),
        }}),
    )?;
    ns.deploy_operator(values.clone());
    let operator = OperatorProcess::find(&ns)?;
    let bots: Api<TradingBot> = Api::namespaced(client.clone(), &ns.name);
    let mut probe = ProbeWatch::start(bots.clone(), fleet.clone());

    eprintln!("bench: live fleet — the probe bot alone");
    start_probe(&ns, &client, &bots, &fleet, &mut probe).await?;
    let alone_steady = steady_window(
        &ns,
        &operator,
        &fleet,
        1,
        1.0 / PROBE_SCRAPE.as_secs_f64(),
        Duration::from_secs(30),
    )
    .await?;
    let alone = guard_trials(&fleet, &mut probe).await?;
    let alone_errors = probe.errors();

    let capacity = real_bot_capacity(&cluster)?;
    let real_wanted = env_count("BENCH_LIVE_REAL").unwrap_or(REAL_BOTS).min(capacity);
    eprintln!("bench: live fleet — {real_wanted} real bot pods and {synthetic} synthetic bots");
    let shape = grow_fleet(&ns, &client, &bots, &fleet, synthetic, real_wanted).await?;
    let total = shape.synthetic + shape.real_running + 1;
    let scheduled =
        (shape.synthetic + shape.real_running) as f64 / FLEET_SCRAPE.as_secs_f64() + 1.0 / PROBE_SCRAPE.as_secs_f64();
    // Let the requeues after the last writes pass before the window.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let steady = steady_window(&ns, &operator, &fleet, total, scheduled, STEADY_WINDOW).await?;
    let at_fleet = guard_trials(&fleet, &mut probe).await?;
    let fleet_errors = probe.errors() - alone_errors;
    let restarted = operator.still_the_same(&ns).err().map(|e| e.to_string());
    let open_files = operator.open_files_limit();
    let too_few_files = match open_files {
        Some(limit) if limit < total as u64 + 256 => Some(format!(
            "the operator may open only {limit} files for {total} scraped bots"
        )),
        _ => None,
    };
    let peak_rss = operator.peak_rss().ok();

    eprintln!("bench: live fleet — the same fleet read through Prometheus");
    let by_prometheus = prometheus::measure(&ns, &fleet, &mut probe, total, &operator, values).await;

    eprintln!("bench: deleting the live fleet");
    // Every synthetic bot obeys the halt that deletion starts with.
    fleet.set_all_modes(2);
    let deleted = fleet::delete_fleet(&ns, &bots).await;
    drop(probe);
    sim.shutdown().await;

    run.note(format!(
        "Live fleet: {} real perps-bot pods running (paper trading against the exchange simulator, dev profile; {} \
         wanted) and {} synthetic bots whose /metrics one server on this \
         host answers ({} bytes per page, every metric of the bot's contract), their pods never scheduled (asking for \
         {UNSCHEDULABLE_MEMORY}) and given phase Running and an address of 10.201.0.0/20 as pod IP in their status; \
         plus the probe bot. Scrape interval {} s ({} s for the probe). The fleet was created \
         and every bot scraped after {:.0} s; deleting it took {:.0} s. Steady state measured over {:.0} s, {} s after \
         the last bot was scraped; operator peak RSS over the whole run {}. The probe's guard: its loss steps from 0 \
         to {LOSS_OVER} over the level {LOSS_LEVEL} at a random phase of its scrape; timed until a watch on its \
         TradingBot shows status ReduceOnly, {TRIALS} trials alone (before the fleet existed) and {TRIALS} at fleet \
         size.",
        shape.real_running,
        shape.real_wanted,
        shape.synthetic,
        shape.page_bytes,
        FLEET_SCRAPE.as_secs(),
        PROBE_SCRAPE.as_secs(),
        shape.converged.as_secs_f64(),
        deleted.as_secs_f64(),
        steady.window.as_secs_f64(),
        30,
        peak_rss.map_or("unknown".into(), |p| format!("{:.1} MiB", p as f64 / 1_048_576.0)),
    ));
    let reaction = Reaction {
        alone: &alone,
        at_fleet: &at_fleet,
        watch_errors: alone_errors + fleet_errors,
    };
    run.note(format!(
        "Live fleet: real bots are {REAL_BOTS} by default (BENCH_LIVE_REAL sets another number), at most what the node holds \
         ({capacity}: free pod slots but {NODE_MARGIN}, and half the available memory at {} MiB a pod). The operator's \
         open-file limit: {}.",
        REAL_BOT_MEMORY >> 20,
        open_files.map_or("unknown".into(), |l| l.to_string())
    ));
    let mut rows: Vec<Row> = live_rows(&steady, &alone_steady, &reaction)
        .into_iter()
        .map(|r| r.invalid_if(restarted.clone()).invalid_if(too_few_files.clone()))
        .collect();
    match &by_prometheus {
        Ok(measured) => {
            run.note(format!(
                "Guard source Prometheus: the same fleet, then Debian's Prometheus on this host discovering the \
                 namespace's bot pods through the API server (pod role, kept by the operator's managed-by label and \
                 the metrics port, with the namespace and pod target labels a ServiceMonitor gives) and scraping the \
                 probe every {} s and the rest every {} s; the operator redeployed with guardSource prometheus at the \
                 chart's query interval (5 s). Measured over {:.0} s once its first pass over every bot was over \
                 (a reconcile each, then no write for 10 s), then {TRIALS} guard trials.",
                PROBE_SCRAPE.as_secs(),
                FLEET_SCRAPE.as_secs(),
                measured.steady.window.as_secs_f64(),
            ));
            rows.extend(prometheus::rows(measured, &steady, &at_fleet));
        }
        Err(error) => rows.push(Row::invalid(
            format!("guard source Prometheus at fleet size ({total} bots)"),
            format!("{error:#}"),
        )),
    }
    Ok(rows)
}

struct Reaction<'a> {
    alone: &'a Trials<Duration>,
    at_fleet: &'a Trials<Duration>,
    watch_errors: u64,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn live_rows(steady: &Steady, alone: &Steady, reaction: &Reaction<'_>) -> Vec<Row> {
    let bots = steady.bots;
    let verbs: Vec<String> = steady
        .per_minute
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(verb, n)| format!("{verb} {n:.0}"))
        .collect();
    let writes_row = match steady.writes_told() {
        Ok((writes, told)) => {
            let per_bot = writes as f64 / steady.minutes() / bots as f64;
            let reads = steady.reads_per_bot_minute();
            Row::new(
                format!("operator API requests per bot per minute at steady state ({bots} bots)"),
                format!("{reads:.2} reads, {per_bot:.3} writes (audit log: {told} in the window)"),
            )
            .target("<= 1 read, ~0 writes", reads <= 1.0 && per_bot < 0.01)
        }
        Err(e) => Row::invalid(format!("operator API requests per bot per minute ({bots} bots)"), e)
            .target("<= 1 read, ~0 writes", false),
    };
    let rss_per_bot = (steady.rss.saturating_sub(alone.rss)) as f64 / 1024.0 / bots.saturating_sub(1).max(1) as f64;
    let mut rows = vec![
        Row::new(
            format!("live fleet: successful scrapes at steady state ({bots} bots)"),
            format!(
                "{:.1}/s ({:.1}/s answered by the synthetic server, {:.0} failed in the window)",
                steady.scrapes_per_second, steady.synthetic_per_second, steady.scrape_failures
            ),
        )
        .baseline(format!("{:.1}/s scheduled", steady.scheduled_per_second))
        .ratio(steady.scrapes_per_second / steady.scheduled_per_second.max(0.001))
        .target(
            ">= 0.95x",
            steady.scrapes_per_second >= 0.95 * steady.scheduled_per_second,
        ),
        Row::new(
            format!("live fleet: reconciles at steady state ({bots} bots)"),
            format!("{:.1}/s", steady.reconciles_per_second),
        )
        .baseline(format!("{:.1} scrapes/s", steady.scrapes_per_second))
        .ratio(steady.reconciles_per_second / steady.scrapes_per_second.max(0.001)),
        Row::new(
            format!("live fleet: operator CPU at steady state ({bots} bots)"),
            format!("{:.3} cores", steady.cores()),
        )
        .baseline(format!("{:.3} cores: the probe bot alone", alone.cores()))
        .ratio(steady.cores() / alone.cores().max(0.000_001)),
        Row::new(
            format!("live fleet: operator RSS at steady state ({bots} bots)"),
            format!("{:.1} MiB ({rss_per_bot:.1} KiB per bot)", mib(steady.rss)),
        )
        .baseline(format!("{:.1} MiB: the probe bot alone", mib(alone.rss)))
        .ratio(steady.rss as f64 / alone.rss.max(1) as f64),
        Row::new(
            format!("live fleet: operator API requests per minute at steady state ({bots} bots)"),
            if verbs.is_empty() {
                "none".into()
            } else {
                verbs.join(", ")
            },
        ),
        writes_row,
    ];
    rows.push(reaction_row(reaction, bots));
    rows.push(projection_row(steady, alone, rss_per_bot));
    rows
}

fn reaction_row(reaction: &Reaction<'_>, bots: usize) -> Row {
    let alone_p99 = percentile(&reaction.alone.samples, 99.0);
    let fleet_p99 = percentile(&reaction.at_fleet.samples, 99.0);
    let timeouts = reaction.alone.timed_out + reaction.at_fleet.timed_out;
    let mut problems = Vec::new();
    if timeouts > 0 {
        problems.push(format!(
            "{timeouts} trials timed out ({} alone, {} at fleet size)",
            reaction.alone.timed_out, reaction.at_fleet.timed_out
        ));
    }
    if reaction.watch_errors > 0 {
        problems.push(format!("{} watch errors", reaction.watch_errors));
    }
    if reaction.alone.samples.is_empty() || reaction.at_fleet.samples.is_empty() {
        problems.push("no trial completed".into());
    }
    Row::new(
        format!("operator guard at fleet size ({bots} bots): loss over the level → status ReduceOnly"),
        distribution(&reaction.at_fleet.samples),
    )
    .baseline(format!("{}: the same bot alone", distribution(&reaction.alone.samples)))
    .ratio(fleet_p99.as_secs_f64() / alone_p99.as_secs_f64().max(0.001))
    .invalid_if((!problems.is_empty()).then(|| problems.join(", ")))
}

/// The measured per-bot costs, times 10,000.
fn projection_row(steady: &Steady, alone: &Steady, rss_per_bot_kib: f64) -> Row {
    const FLEET: f64 = 10_000.0;
    let bots = steady.bots.max(1) as f64;
    let cores_per_bot = (steady.cores() - alone.cores()).max(0.0) / bots;
    let requests: f64 = steady.per_minute.values().sum::<f64>() / bots;
    let scrapes_per_bot = steady.scheduled_per_second / bots;
    Row::new(
        "projection: 10,000 bots on one operator (linear in the per-bot costs above)",
        format!(
            "{:.2} cores, {:.0} MiB, {:.0} API requests/min, {:.0} scrapes/s",
            alone.cores() + cores_per_bot * FLEET,
            mib(alone.rss) + rss_per_bot_kib * FLEET / 1024.0,
            requests * FLEET,
            scrapes_per_bot * FLEET
        ),
    )
}

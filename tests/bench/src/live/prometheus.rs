//! The same live fleet with Prometheus as the guard source, so that both sources are compared
//! at one fleet size. Debian's Prometheus on this host discovers every bot pod of the namespace
//! as a ServiceMonitor's relabelling would (Kubernetes pod discovery; the `namespace` and `pod`
//! target labels) and scrapes it itself; the operator, redeployed with
//! `guardSource.type: prometheus`, scrapes no pod and reads the whole fleet with one query per
//! interval. Measured as for the pods source: a steady-state window (operator CPU, RSS, API
//! requests, reconciles) and the probe's guard trials, plus Prometheus's own CPU and RSS, which a
//! user pays for with this source.

use super::{FLEET_SCRAPE, PROBE, PROBE_SCRAPE, ProbeWatch, STEADY_WINDOW, Steady, guard_trials, mib, steady_window};
use crate::fleet;
use crate::operator_process::{self, OperatorProcess};
use crate::report::{Row, Trials, distribution, percentile};
use crate::synthetic::SyntheticFleet;
use anyhow::Context as _;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use test_harness::{HostProcess, TestNamespace, host_from_pods};

/// What the Prometheus source cost and how fast its guard was, at fleet size.
pub struct Measured {
    pub steady: Steady,
    pub trials: Trials<Duration>,
    pub watch_errors: u64,
    pub prometheus_cores: f64,
    pub prometheus_rss: u64,
    pub targets_up: usize,
    pub queries_ok: f64,
    pub queries_failed: f64,
    /// Still running: the fleet's deletion (each bot halting first) is read through it too.
    _prometheus: HostProcess,
}

/// Prometheus's configuration: the probe on its own interval, the rest of the fleet on the
/// fleet's, both found through the API server as a ServiceMonitor's targets would be.
fn config(ns: &TestNamespace) -> String {
    let settings = ns.cluster().settings();
    let job = |name: &str, interval: Duration, probe: &str| {
        format!(
            r#"  - job_name: {name}
    scrape_interval: {interval}s
    scrape_timeout: {interval}s
    kubernetes_sd_configs:
      - role: pod
        api_server: {api_server}
        tls_config: {{ca_file: {ca}}}
        authorization: {{credentials_file: {token}}}
        namespaces: {{names: [{ns}]}}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_managed_by], regex: tradingbot-operator, action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_container_port_name], regex: metrics, action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_name], regex: {PROBE}, action: {probe}}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"#,
            interval = interval.as_secs(),
            api_server = settings.apiserver_url(),
            ca = settings.ca_file().display(),
            token = settings.admin_token_file().display(),
            ns = ns.name,
        )
    };
    format!(
        "global: {{evaluation_interval: 10s}}\nscrape_configs:\n{}{}",
        job("tradingbot-probe", PROBE_SCRAPE, "keep"),
        job("tradingbots", FLEET_SCRAPE, "drop"),
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("0.0.0.0:0")?.local_addr()?.port())
}

/// One instant query's single value (`count(...)` and the like).
async fn scalar(port: u16, query: &str) -> anyhow::Result<f64> {
    let url = format!("http://127.0.0.1:{port}/api/v1/query");
    let body: Value = reqwest::Client::new()
        .get(url)
        .query(&[("query", query)])
        .send()
        .await?
        .json()
        .await?;
    let value = body["data"]["result"][0]["value"][1].as_str().unwrap_or("0");
    Ok(value.parse()?)
}

/// Wait until Prometheus scrapes `bots` targets successfully.
async fn wait_targets_up(port: u16, bots: usize, timeout: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let up = scalar(port, "count(up == 1)").await.unwrap_or(0.0) as usize;
        if up >= bots {
            return Ok(up);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Prometheus scrapes only {up} of {bots} bots after {} s",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The redeployed operator's process, once its predecessor's pod is gone.
async fn new_operator(ns: &TestNamespace, old_pid: u32, timeout: Duration) -> anyhow::Result<OperatorProcess> {
    let deadline = Instant::now() + timeout;
    loop {
        match OperatorProcess::find(ns) {
            Ok(operator) if operator.pid != old_pid => return Ok(operator),
            Ok(_) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_secs(1)).await,
            Ok(_) => anyhow::bail!("the operator was not replaced within {} s", timeout.as_secs()),
            Err(error) => return Err(error.context("the redeployed operator")),
        }
    }
}

/// The operator's guard queries so far: (answered, failed).
async fn queries(ns: &TestNamespace) -> anyhow::Result<(f64, f64)> {
    let text = fleet::operator_metrics(ns).await?;
    let count = |result: &str| {
        text.lines()
            .filter(|l| l.starts_with("tradingbot_operator_prometheus_queries_total{") && l.contains(result))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    Ok((count("result=\"ok\""), count("result=\"") - count("result=\"ok\"")))
}

/// Switch the running fleet's operator to Prometheus and measure it; `pods_operator` is the
/// operator measured with the pods source (it is replaced).
pub async fn measure(
    ns: &TestNamespace,
    fleet: &SyntheticFleet,
    probe: &mut ProbeWatch,
    bots: usize,
    pods_operator: &OperatorProcess,
    mut operator_values: Value,
) -> anyhow::Result<Measured> {
    let port = free_port()?;
    let dir = test_harness::root()
        .join("target/test-logs")
        .join(format!("{}-prometheus", ns.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("prometheus.yml"), config(ns))?;
    let prometheus = HostProcess::start(
        &format!("prometheus-{}", ns.name),
        &test_harness::prometheus(),
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address=0.0.0.0:{port}"),
        ],
        &[],
    )?;
    let targets_up = wait_targets_up(port, bots, Duration::from_secs(300)).await?;
    test_harness::merge_json(
        &mut operator_values,
        json!({"guardSource": {"type": "prometheus", "prometheus": {
            // The chart's query interval (5 s): not a multiple of Prometheus's 2 s scrape of the
            // probe, so the trials meet every phase between the two, as a user's would.
            "url": format!("http://{}:{port}", host_from_pods()),
        }}}),
    );
    ns.deploy_operator(operator_values);
    let operator = new_operator(ns, pods_operator.pid, Duration::from_secs(180)).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while queries(ns).await.map_or(0.0, |(ok, _)| ok) < 3.0 {
        anyhow::ensure!(Instant::now() < deadline, "the operator's guard queries got no answers");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    wait_first_pass(ns, bots).await;
    let prometheus_cpu = || operator_process::cpu_time(prometheus.pid()).context("Prometheus exited");
    let (cpu_before, queries_before) = (prometheus_cpu()?, queries(ns).await?);
    let steady = steady_window(ns, &operator, fleet, bots, 0.0, STEADY_WINDOW).await?;
    let (cpu_after, queries_after) = (prometheus_cpu()?, queries(ns).await?);
    let prometheus_rss = operator_process::status_kb(prometheus.pid(), "VmRSS:").context("Prometheus exited")? * 1024;
    let errors_before = probe.errors();
    let trials = guard_trials(fleet, probe).await?;
    operator.still_the_same(ns)?;
    Ok(Measured {
        prometheus_cores: cpu_after.saturating_sub(cpu_before).as_secs_f64() / steady.window.as_secs_f64(),
        steady,
        trials,
        watch_errors: probe.errors() - errors_before,
        prometheus_rss,
        targets_up,
        queries_ok: queries_after.0 - queries_before.0,
        queries_failed: queries_after.1 - queries_before.1,
        _prometheus: prometheus,
    })
}

/// How long the operator's writes must have stopped before its restart's first pass counts as over.
const SETTLED: Duration = Duration::from_secs(10);

/// The restarted operator's first pass over every bot is over: at least one reconcile per bot,
/// then no write for [`SETTLED`] (at most three minutes: then the window starts anyway, and
/// the writes it counts say so).
async fn wait_first_pass(ns: &TestNamespace, bots: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut writes_seen, mut quiet_since) = (-1.0, Instant::now());
    loop {
        let text = fleet::operator_metrics(ns).await.unwrap_or_default();
        let reconciles = fleet::metric_sum(&text, "tradingbot_operator_reconciliations_total");
        let writes = fleet::metric_sum(&text, "tradingbot_operator_api_writes_total");
        if writes != writes_seen {
            (writes_seen, quiet_since) = (writes, Instant::now());
        }
        if reconciles >= bots as f64 && quiet_since.elapsed() >= SETTLED {
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "bench: the restarted operator's first pass had not settled after 180 s ({reconciles} reconciles)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The Prometheus source's rows, each against the pods source at the same fleet size.
pub fn rows(measured: &Measured, pods: &Steady, pods_trials: &Trials<Duration>) -> Vec<Row> {
    let m = measured;
    let bots = m.steady.bots;
    let p99 = |t: &Trials<Duration>| percentile(&t.samples, 99.0).as_secs_f64();
    let mut problems = Vec::new();
    if m.trials.timed_out > 0 {
        problems.push(format!("{} trials timed out", m.trials.timed_out));
    }
    if m.watch_errors > 0 {
        problems.push(format!("{} watch errors", m.watch_errors));
    }
    if m.trials.samples.is_empty() {
        problems.push("no trial completed".into());
    }
    let reads = m.steady.reads_per_bot_minute();
    let writes = match m.steady.writes_told() {
        Ok((n, told)) => format!(
            "{:.3} (audit log: {told} in the window)",
            n as f64 / m.steady.minutes() / bots as f64
        ),
        Err(e) => format!("unknown ({e})"),
    };
    vec![
        Row::new(
            format!("guard source Prometheus: operator CPU at steady state ({bots} bots)"),
            format!(
                "{:.3} cores ({:.0} queries answered, {:.0} failed in the window)",
                m.steady.cores(),
                m.queries_ok,
                m.queries_failed
            ),
        )
        .baseline(format!("{:.3} cores: the pods source", pods.cores()))
        .ratio(m.steady.cores() / pods.cores().max(0.000_001)),
        Row::new(
            format!("guard source Prometheus: operator RSS at steady state ({bots} bots)"),
            format!("{:.1} MiB", mib(m.steady.rss)),
        )
        .baseline(format!("{:.1} MiB: the pods source", mib(pods.rss)))
        .ratio(m.steady.rss as f64 / pods.rss.max(1) as f64),
        Row::new(
            format!("guard source Prometheus: operator reconciles and API requests ({bots} bots)"),
            format!(
                "{:.1} reconciles/s, {reads:.2} reads and {writes} writes per bot per minute",
                m.steady.reconciles_per_second
            ),
        )
        .baseline(format!(
            "{:.1} reconciles/s, {:.2} reads per bot per minute: the pods source",
            pods.reconciles_per_second,
            pods.reads_per_bot_minute()
        )),
        Row::new(
            format!(
                "guard source Prometheus: Prometheus scraping the fleet ({} targets up)",
                m.targets_up
            ),
            format!("{:.3} cores, {:.0} MiB", m.prometheus_cores, mib(m.prometheus_rss)),
        ),
        Row::new(
            format!("operator guard through Prometheus ({bots} bots): loss over the level → status ReduceOnly"),
            distribution(&m.trials.samples),
        )
        .baseline(format!(
            "{}: the pods source at the same fleet size",
            distribution(&pods_trials.samples)
        ))
        .ratio(p99(&m.trials) / p99(pods_trials).max(0.001))
        .invalid_if((!problems.is_empty()).then(|| problems.join(", "))),
    ]
}

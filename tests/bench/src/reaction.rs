//! Reaction time on the real cluster, with the operator deployed by its chart:
//! (a) `kubectl patch … reduceOnly` → the bot's trading state, observed at the bot;
//! (b) a simulator price shock crosses a dailyLoss level → the bot in ReduceOnly, for a bot
//!     whose own guards are off (the operator's scrape-based guard alone: detection, then
//!     propagation) and for a bot with its own in-process guard.

use crate::operator_process::OperatorProcess;
use crate::report::{Row, RunLog, Trials, distribution, distribution_ms, ms, percentile, percentile_f64};
use exchange_sim::{
    FaultRequest, GeneratedKey, KeyAlgorithm, PriceShock, ProductFlagsUpdate, SimConfig, Simulator, generate_key,
};
use kube::Api;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use test_harness::{TestNamespace, host_from_pods, metric};
use tradingbot_crds::{TradingBot, TradingMode};

const PATCH_TRIALS: usize = 60;
const GUARD_TRIALS: usize = 50;
const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);
const BOT_INTERVAL: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(10);
const SHOCK_PERCENT: i64 = -8;
/// How long a trial waits for the reaction before it counts as timed out.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Each guard trial starts this long after the bots settled, plus a jitter up to JITTER_SPAN.
const JITTER_MIN: Duration = Duration::from_millis(500);
const JITTER_SPAN_MS: u64 = 2000;
/// Healthy evaluations before a trip is released (resume: Auto) between trials.
const HEALTHY_TO_RESUME: u32 = 1;

/// A bot pod's /metrics, read from its pod IP.
struct BotProbe {
    http: reqwest::Client,
    url: String,
}

impl BotProbe {
    fn new(ns: &TestNamespace, pod: &str) -> anyhow::Result<Self> {
        let ip = ns.kubectl_result(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])?;
        anyhow::ensure!(!ip.trim().is_empty(), "pod {pod} has no IP");
        Ok(Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?,
            url: format!("http://{}:9102/metrics", ip.trim()),
        })
    }

    async fn read(&self, name: &str) -> Option<f64> {
        let response = self.http.get(&self.url).send().await.ok()?;
        metric(&response.text().await.ok()?, name)
    }

    async fn mode(&self) -> Option<f64> {
        self.read("perps_bot_trading_mode").await
    }

    async fn wait_for(&self, name: &str, want: impl Fn(f64) -> bool, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.read(name).await.is_some_and(&want) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} never reached the wanted {name}",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn manifest(name: &str, spec: Value) -> String {
    let mut manifest = json!({
        "apiVersion": "trading.gpttrader.io/v1alpha1",
        "kind": "TradingBot",
        "metadata": {"name": name},
        "spec": {"rollout": {"strategy": "Direct"}, "metrics": {"scrapeIntervalSeconds": SCRAPE_INTERVAL.as_secs()}},
    });
    test_harness::merge_json(&mut manifest["spec"], spec);
    manifest.to_string()
}

async fn wait_phase_running(ns: &TestNamespace, bot: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let phase = ns
            .kubectl_result(&["get", "tb", bot, "-o", "jsonpath={.status.phase}"])
            .unwrap_or_default();
        if phase.trim() == "Running" {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "tb/{bot} never reached phase Running");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run(run: &mut RunLog) -> anyhow::Result<Vec<Row>> {
    let cluster = test_harness::cluster();
    cluster.install_crd();
    let sim = Simulator::start(SimConfig {
        bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        tick: Duration::from_millis(250),
        private_rate_limit: 0,
        public_rate_limit: 0,
        ..SimConfig::default()
    })
    .await?;
    let port = sim.addr().port();
    let ns = cluster.namespace("bench-reaction").await;
    let host = host_from_pods();
    ns.deploy_operator(crate::images::operator_values(json!({"exchange": {
        "defaultApiBaseUrl": format!("http://{host}:{port}/api/v3/brokerage"),
        "defaultWsUrl": format!("ws://{host}:{port}/ws"),
    }}))?);
    let operator = OperatorProcess::find(&ns)?;
    let client = cluster.client().await;
    let bots: Api<TradingBot> = Api::namespaced(client, &ns.name);
    run.fact("scrape_interval", format!("{} s", SCRAPE_INTERVAL.as_secs()));
    run.fact("bot_cycle", format!("{} s", BOT_INTERVAL.as_secs()));
    run.fact("kubectl_startup", kubectl_startup(&ns)?);

    let mut rows = patch_reaction(&ns, run).await?;
    rows.extend(guard_reaction(&ns, &sim, &bots, run).await?);
    sim.shutdown().await;
    // The operator's guard rows are the operator's reaction: across a restart they would time
    // a cache sync, not a reaction.
    let restarted = operator.still_the_same(&ns).err().map(|e| e.to_string());
    Ok(rows.into_iter().map(|r| r.invalid_if(restarted.clone())).collect())
}

/// Median wall time of `kubectl version --client` (kubectl's own start-up), over 10 runs.
fn kubectl_startup(ns: &TestNamespace) -> anyhow::Result<String> {
    let mut times = Vec::new();
    for _ in 0..10 {
        let started = Instant::now();
        let status = std::process::Command::new(&ns.cluster().kubectl_path)
            .args(["version", "--client"])
            .stdout(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "kubectl version --client failed");
        times.push(started.elapsed());
    }
    Ok(format!("median {} of 10 runs", ms(percentile(&times, 50.0))))
}

/// (a) `kubectl patch` → the bot's own trading state gauge, PATCH_TRIALS times alternating.
async fn patch_reaction(ns: &TestNamespace, run: &mut RunLog) -> anyhow::Result<Vec<Row>> {
    ns.apply(&manifest(
        "patched",
        json!({"profile": "dev", "symbols": ["BTC-USD"], "dryRun": true}),
    ))?;
    wait_phase_running(ns, "patched").await?;
    let probe = BotProbe::new(ns, "patched")?;
    probe
        .wait_for("perps_bot_trading_mode", |m| m == 0.0, Duration::from_secs(60))
        .await?;
    let mut trials = Trials::default();
    for trial in 0..PATCH_TRIALS {
        let reduce_only = trial % 2 == 0;
        match patch_trial(ns, &probe, reduce_only).await? {
            Some(took) => trials.samples.push(took),
            None => trials.timed_out += 1,
        }
        // A pause between trials, so each patch meets a bot at rest.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ns.kubectl(&["delete", "tb", "patched", "--wait=false"]);
    run.note(format!(
        "Patch reaction: {PATCH_TRIALS} kubectl patches of spec.reduceOnly, alternating true/false on a running dev bot; \
         the clock starts before kubectl is spawned (its start-up is included) and stops when the bot's own \
         `perps_bot_trading_mode` shows the new state (polled every {} ms from the pod IP); {} of them timed out \
         (no reaction within {} s).",
        POLL.as_millis(),
        trials.timed_out,
        TRIAL_TIMEOUT.as_secs()
    ));
    let p99 = percentile(&trials.samples, 99.0);
    let timeouts = (trials.timed_out > 0).then(|| trials.timeouts_text().trim_start_matches(", ").to_string());
    Ok(vec![
        Row::new(
            "kubectl patch reduceOnly → bot trading state",
            format!("{}{}", distribution(&trials.samples), trials.timeouts_text()),
        )
        .target("p99 < 2 s", p99 < Duration::from_secs(2))
        .invalid_if(timeouts),
    ])
}

/// One patch: the time until the bot shows the new state, None when it did not within
/// TRIAL_TIMEOUT.
async fn patch_trial(ns: &TestNamespace, probe: &BotProbe, reduce_only: bool) -> anyhow::Result<Option<Duration>> {
    let want = if reduce_only { 1.0 } else { 0.0 };
    let patch = format!(r#"{{"spec":{{"reduceOnly":{reduce_only}}}}}"#);
    let started = Instant::now();
    let status = std::process::Command::new(&ns.cluster().kubectl_path)
        .arg("--kubeconfig")
        .arg(&ns.cluster().kubeconfig)
        .args([
            "-n",
            &ns.name,
            "patch",
            "tradingbot",
            "patched",
            "--type",
            "merge",
            "-p",
            &patch,
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "kubectl patch failed");
    while started.elapsed() < TRIAL_TIMEOUT {
        if probe.mode().await == Some(want) {
            return Ok(Some(started.elapsed()));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(None)
}

/// Times of one guard trial, from the shock; each is when the read that first saw the event
/// returned (one clock: this process's).
#[derive(Default)]
struct GuardTrial {
    /// The blind bot's metrics first show the loss over the level.
    visible: Option<Duration>,
    /// The blind bot's TradingBot status says ReduceOnly (the operator detected it).
    status: Option<Duration>,
    /// The blind bot's trading state is ReduceOnly (enforced).
    enforced: Option<Duration>,
    /// The bot with its own guard is in ReduceOnly.
    in_process: Option<Duration>,
}

/// The times of a trial in which every event was seen.
struct GuardTimes {
    visible: Duration,
    status: Duration,
    enforced: Duration,
    in_process: Duration,
}

impl GuardTrial {
    fn complete(&self) -> Option<GuardTimes> {
        Some(GuardTimes {
            visible: self.visible?,
            status: self.status?,
            enforced: self.enforced?,
            in_process: self.in_process?,
        })
    }
}

/// `later - earlier` in milliseconds, signed.
fn interval_ms(earlier: Duration, later: Duration) -> f64 {
    (later.as_secs_f64() - earlier.as_secs_f64()) * 1000.0
}

/// Await `read` and note when it returned.
async fn timed<T>(started: Instant, read: impl std::future::Future<Output = T>) -> (T, Duration) {
    let value = read.await;
    (value, started.elapsed())
}

/// Orders of BUY_SIZE BTC each bot buys before the trials (small, within its slippage guard).
const BUYS: u32 = 10;
const BUY_SIZE: &str = "0.001";

/// The BTC each bot owns: BUYS × BUY_SIZE.
fn own_btc() -> Decimal {
    Decimal::from(BUYS) * BUY_SIZE.parse::<Decimal>().unwrap_or_default()
}

/// Buy `own_btc()` through the bot's own order tool in its pod, so the position is the bot's;
/// an order the slippage guard refuses (the book moves every tick) is tried again.
async fn buy_own_position(ns: &TestNamespace, bot: &str) -> anyhow::Result<()> {
    let buy = [
        "exec",
        bot,
        "--",
        "/usr/local/bin/perps-bot",
        "orders",
        "place",
        "--symbol",
        "BTC-USD",
        "--side",
        "buy",
        "--quantity",
        BUY_SIZE,
    ];
    for n in 1..=BUYS {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match ns.kubectl_result(&buy) {
                Ok(out) if out.contains("order_id") => break,
                Err(e) if format!("{e:#}").contains("slippage_guard") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => anyhow::bail!("{bot}: buy {n} of {BUYS}: {other:?}"),
            }
        }
    }
    Ok(())
}

fn register_key(sim: &Simulator) -> anyhow::Result<GeneratedKey> {
    let key = generate_key(KeyAlgorithm::Es256);
    let spec = key.key_spec().with_balances([
        ("USD".to_string(), Decimal::from(10_000)),
        ("BTC".to_string(), Decimal::ONE),
    ]);
    sim.register_key(spec)?;
    Ok(key)
}

fn shock(sim: &Simulator, percent: Decimal) -> anyhow::Result<()> {
    sim.inject(FaultRequest {
        price_shock: Some(PriceShock {
            product_id: "BTC-USD".into(),
            percent,
        }),
        ..Default::default()
    })?;
    Ok(())
}

async fn mode_of(bots: &Api<TradingBot>, name: &str) -> Option<TradingMode> {
    bots.get(name).await.ok()?.status?.mode
}

/// (b) GUARD_TRIALS price shocks through a dailyLoss level, each released again (resume: Auto).
async fn guard_reaction(
    ns: &TestNamespace,
    sim: &Simulator,
    bots: &Api<TradingBot>,
    run: &mut RunLog,
) -> anyhow::Result<Vec<Row>> {
    let mid = sim
        .mid_price("BTC-USD")
        .ok_or_else(|| anyhow::anyhow!("BTC-USD is not listed"))?;
    // Each bot owns OWN_BTC (bought by its own orders: a bot's loss is on what it bought); an 8%
    // fall is a loss of 8% of that position's value, the level is at 4%.
    let level = (mid * own_btc() * Decimal::new(4, 2)).round_dp(2);
    let level_f64: f64 = level.to_string().parse()?;
    let (blind, guarded) = start_guard_bots(ns, sim, &level).await?;
    let mut trials: Trials<GuardTimes> = Trials::default();
    // A fixed pseudo-random jitter spreads the shocks over the scrape and cycle phases.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for trial in 0..GUARD_TRIALS {
        if let Err(error) = settle(bots, &blind, &guarded).await {
            anyhow::bail!("guard trial {trial}: the bots did not return to Normal: {error:#}");
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        tokio::time::sleep(JITTER_MIN + Duration::from_millis((seed >> 33) % JITTER_SPAN_MS)).await;
        let before = sim.mid_price("BTC-USD").unwrap_or(mid);
        let times = guard_trial(sim, bots, &blind, &guarded, level_f64).await?;
        // Back to where the price was before the shock.
        let now_mid = sim.mid_price("BTC-USD").unwrap_or(before);
        if now_mid > Decimal::ZERO {
            shock(
                sim,
                ((before / now_mid - Decimal::ONE) * Decimal::ONE_HUNDRED).round_dp(6),
            )?;
        }
        match times.complete() {
            Some(times) => trials.samples.push(times),
            None => trials.timed_out += 1,
        }
    }
    settle(bots, &blind, &guarded).await.ok();
    anyhow::ensure!(!trials.samples.is_empty(), "no guard trial completed");
    run.note(format!(
        "Guard reaction: each bot owns {} BTC bought by its own orders (the dailyLoss level is 4% of its value, {level} \
         USD); {} of {GUARD_TRIALS} price shocks of {SHOCK_PERCENT}% on BTC-USD completed ({} timed out: not every \
         event seen within {} s); each trial starts {}–{} s after the previous one settled back to Normal (resume: Auto, \
         {HEALTHY_TO_RESUME} healthy evaluation), so shocks land at random phases of the {} s scrape and the {} s bot cycle. \
         The bot under the operator's guard alone runs with PERPS_BOT_DISABLE_GUARDS; the other bot enforces the same level \
         itself. Reads are polled every {} ms.",
        own_btc(),
        trials.samples.len(),
        trials.timed_out,
        TRIAL_TIMEOUT.as_secs(),
        JITTER_MIN.as_secs_f64(),
        (JITTER_MIN + Duration::from_millis(JITTER_SPAN_MS)).as_secs_f64(),
        SCRAPE_INTERVAL.as_secs(),
        BOT_INTERVAL.as_secs(),
        POLL.as_millis()
    ));
    Ok(guard_rows(&trials))
}

/// The blind bot (guards off in the bot) and the guarded one, on their own keys, Running.
async fn start_guard_bots(
    ns: &TestNamespace,
    sim: &Simulator,
    level: &Decimal,
) -> anyhow::Result<(BotProbe, BotProbe)> {
    for (name, own_guards) in [("blind", false), ("guarded", true)] {
        let key = register_key(sim)?;
        let literal = format!("--from-literal=cdp_api_key.json={}", key.cdp_key_json());
        let secret = format!("{name}-key");
        ns.kubectl(&["create", "secret", "generic", &secret, &literal]);
        let mut env = vec![json!({"name": "PERPS_BOT_INTERVAL", "value": BOT_INTERVAL.as_secs().to_string()})];
        if !own_guards {
            env.push(json!({"name": "PERPS_BOT_DISABLE_GUARDS", "value": "true"}));
        }
        ns.apply(&manifest(
            name,
            json!({
                "profile": "demo", "symbols": ["BTC-USD"], "dryRun": false,
                "exchange": {"credentialsSecret": secret},
                "guards": {"dailyLoss": {"reduceOnlyAt": level.to_string()}, "resume": "Auto",
                           "healthyCyclesBeforeResume": HEALTHY_TO_RESUME},
                "env": env,
            }),
        ))?;
    }
    wait_phase_running(ns, "blind").await?;
    wait_phase_running(ns, "guarded").await?;
    for bot in ["blind", "guarded"] {
        buy_own_position(ns, bot).await?;
    }
    // The venue is cancel-only, so neither bot can trade its loss away between trials.
    sim.set_product_flags(
        "BTC-USD",
        ProductFlagsUpdate {
            cancel_only: Some(true),
            ..Default::default()
        },
    )?;
    let blind = BotProbe::new(ns, "blind")?;
    let guarded = BotProbe::new(ns, "guarded")?;
    blind
        .wait_for("perps_bot_cycles_total", |c| c >= 3.0, Duration::from_secs(90))
        .await?;
    guarded
        .wait_for("perps_bot_cycles_total", |c| c >= 3.0, Duration::from_secs(90))
        .await?;
    Ok((blind, guarded))
}

/// One shock, and when each event was first seen (None: not within TRIAL_TIMEOUT).
async fn guard_trial(
    sim: &Simulator,
    bots: &Api<TradingBot>,
    blind: &BotProbe,
    guarded: &BotProbe,
    level: f64,
) -> anyhow::Result<GuardTrial> {
    let started = Instant::now();
    shock(sim, Decimal::from(SHOCK_PERCENT))?;
    let mut times = GuardTrial::default();
    while times.complete().is_none() && started.elapsed() < TRIAL_TIMEOUT {
        let ((loss, at_loss), (blind_mode, at_blind), (own_mode, at_own), (status, at_status)) = tokio::join!(
            timed(started, blind.read("perps_bot_daily_loss")),
            timed(started, blind.mode()),
            timed(started, guarded.mode()),
            timed(started, mode_of(bots, "blind")),
        );
        if times.visible.is_none() && loss.is_some_and(|l| l >= level) {
            times.visible = Some(at_loss);
        }
        if times.status.is_none() && status == Some(TradingMode::ReduceOnly) {
            times.status = Some(at_status);
        }
        if times.enforced.is_none() && blind_mode == Some(1.0) {
            times.enforced = Some(at_blind);
        }
        if times.in_process.is_none() && own_mode == Some(1.0) {
            times.in_process = Some(at_own);
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(times)
}

/// The table rows of the guard trials. Intervals between two events are signed (shown as
/// measured); rows with a target are INVALID when any trial timed out.
fn guard_rows(trials: &Trials<GuardTimes>) -> Vec<Row> {
    let samples = &trials.samples;
    let column = |f: &dyn Fn(&GuardTimes) -> Duration| samples.iter().map(f).collect::<Vec<_>>();
    let signed = |f: &dyn Fn(&GuardTimes) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    let visible = column(&|t| t.visible);
    let detection = signed(&|t| interval_ms(t.visible, t.status));
    let propagation = signed(&|t| interval_ms(t.status, t.enforced));
    let operator = signed(&|t| interval_ms(t.visible, t.enforced));
    let end_to_end = column(&|t| t.enforced);
    let in_process = column(&|t| t.in_process);
    let limit = SCRAPE_INTERVAL + Duration::from_secs(1);
    let cycle_limit = BOT_INTERVAL + Duration::from_millis(250);
    let timeouts = trials.timeouts_text();
    let invalid = (trials.timed_out > 0).then(|| timeouts.trim_start_matches(", ").to_string());
    let scrape_ms = SCRAPE_INTERVAL.as_secs_f64() * 1000.0;
    vec![
        Row::new(
            "price shock → loss visible in the bot's /metrics (bot cycle)",
            format!("{}{timeouts}", distribution(&visible)),
        )
        .baseline(format!("bot cycle {} s", BOT_INTERVAL.as_secs()))
        .ratio(percentile(&visible, 99.0).as_secs_f64() / BOT_INTERVAL.as_secs_f64()),
        Row::new(
            "operator guard detection: visible → status ReduceOnly",
            format!("{}{timeouts}", distribution_ms(&detection)),
        )
        .baseline(format!("scrape interval {} s", SCRAPE_INTERVAL.as_secs()))
        .ratio(percentile_f64(&detection, 99.0) / scrape_ms),
        Row::new(
            "operator guard propagation: status → bot ReduceOnly",
            format!("{}{timeouts}", distribution_ms(&propagation)),
        ),
        Row::new(
            "operator guard: level crossed → enforced",
            format!("{}{timeouts}", distribution_ms(&operator)),
        )
        .baseline(format!("scrape interval {} s", SCRAPE_INTERVAL.as_secs()))
        .ratio(percentile_f64(&operator, 99.0) / scrape_ms)
        .target(
            format!("p99 < scrape interval + 1 s = {}", ms(limit)),
            percentile_f64(&operator, 99.0) < limit.as_secs_f64() * 1000.0,
        )
        .invalid_if(invalid.clone()),
        Row::new(
            "operator guard: price shock → enforced",
            format!("{}{timeouts}", distribution(&end_to_end)),
        ),
        Row::new(
            "bot's in-process guard: price shock → ReduceOnly",
            format!("{}{timeouts}", distribution(&in_process)),
        )
        .baseline(format!("bot cycle {} s", BOT_INTERVAL.as_secs()))
        .ratio(percentile(&in_process, 99.0).as_secs_f64() / BOT_INTERVAL.as_secs_f64())
        .target(
            format!("within one cycle (p99 < {})", ms(cycle_limit)),
            percentile(&in_process, 99.0) < cycle_limit,
        )
        .invalid_if(invalid),
    ]
}

/// Wait until both bots and both TradingBots are back in Normal.
async fn settle(bots: &Api<TradingBot>, blind: &BotProbe, guarded: &BotProbe) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (a, b, c, d) = tokio::join!(
            blind.mode(),
            guarded.mode(),
            mode_of(bots, "blind"),
            mode_of(bots, "guarded")
        );
        if a == Some(0.0) && b == Some(0.0) && c == Some(TradingMode::Normal) && d == Some(TradingMode::Normal) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "modes: blind bot {a:?}, guarded bot {b:?}, blind status {c:?}, guarded status {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! Reaction time on the real cluster, with the operator deployed by its chart:
//! (a) `kubectl patch … reduceOnly` → the bot's trading state, observed at the bot;
//! (b) a simulator price shock crosses a dailyLoss level → the bot in ReduceOnly, for a bot
//!     whose own guards are off (the operator's scrape-based guard alone: detection, then
//!     propagation) and for a bot with its own in-process guard.

use crate::report::{Row, distribution, ms, percentile};
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

pub async fn run(notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let cluster = test_harness::cluster();
    cluster.install_crd();
    cluster.require_images();
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
    ns.deploy_operator(json!({"exchange": {
        "defaultApiBaseUrl": format!("http://{host}:{port}/api/v3/brokerage"),
        "defaultWsUrl": format!("ws://{host}:{port}/ws"),
    }}));
    let client = cluster.client().await;
    let bots: Api<TradingBot> = Api::namespaced(client, &ns.name);

    let mut rows = patch_reaction(&ns, notes).await?;
    rows.extend(guard_reaction(&ns, &sim, &bots, notes).await?);
    sim.shutdown().await;
    Ok(rows)
}

/// (a) `kubectl patch` → the bot's own trading state gauge, PATCH_TRIALS times alternating.
async fn patch_reaction(ns: &TestNamespace, notes: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    ns.apply(&manifest(
        "patched",
        json!({"profile": "dev", "symbols": ["BTC-USD"], "dryRun": true}),
    ))?;
    wait_phase_running(ns, "patched").await?;
    let probe = BotProbe::new(ns, "patched")?;
    probe
        .wait_for("perps_bot_trading_mode", |m| m == 0.0, Duration::from_secs(60))
        .await?;
    let kubectl = ns.cluster().kubectl_path.clone();
    let kubeconfig = ns.cluster().kubeconfig.clone();
    let mut samples = Vec::new();
    for trial in 0..PATCH_TRIALS {
        let reduce_only = trial % 2 == 0;
        let want = if reduce_only { 1.0 } else { 0.0 };
        let patch = format!(r#"{{"spec":{{"reduceOnly":{reduce_only}}}}}"#);
        let started = Instant::now();
        let status = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
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
        let deadline = started + Duration::from_secs(30);
        loop {
            if probe.mode().await == Some(want) {
                samples.push(started.elapsed());
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the bot did not follow patch {trial} within 30 s"
            );
            tokio::time::sleep(POLL).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ns.kubectl(&["delete", "tb", "patched", "--wait=false"]);
    notes.push(format!(
        "Patch reaction: {PATCH_TRIALS} kubectl patches of spec.reduceOnly, alternating true/false on a running dev bot; \
         the clock starts before kubectl is spawned (its start-up is included) and stops when the bot's own \
         `perps_bot_trading_mode` shows the new state (polled every {} ms from the pod IP).",
        POLL.as_millis()
    ));
    let p99 = percentile(&samples, 99.0);
    Ok(vec![
        Row::new("kubectl patch reduceOnly → bot trading state", distribution(&samples))
            .baseline("-")
            .target("p99 < 2 s", p99 < Duration::from_secs(2)),
    ])
}

/// Times of one guard trial, from the shock.
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

impl GuardTrial {
    fn complete(&self) -> bool {
        self.visible.is_some() && self.status.is_some() && self.enforced.is_some() && self.in_process.is_some()
    }
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
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<Row>> {
    let mid = sim
        .mid_price("BTC-USD")
        .ok_or_else(|| anyhow::anyhow!("BTC-USD is not listed"))?;
    // 1 BTC held; an 8% fall is a loss of 8% of the price, the level is at 4%.
    let level = (mid * Decimal::new(4, 2)).round_dp(2);
    let level_f64: f64 = level.to_string().parse()?;
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
                "guards": {"dailyLoss": {"reduceOnlyAt": level.to_string()}, "resume": "Auto", "healthyCyclesBeforeResume": 1},
                "env": env,
            }),
        ))?;
    }
    // The venue is cancel-only, so neither bot can trade its loss away between trials.
    sim.set_product_flags(
        "BTC-USD",
        ProductFlagsUpdate {
            cancel_only: Some(true),
            ..Default::default()
        },
    )?;
    wait_phase_running(ns, "blind").await?;
    wait_phase_running(ns, "guarded").await?;
    let blind = BotProbe::new(ns, "blind")?;
    let guarded = BotProbe::new(ns, "guarded")?;
    blind
        .wait_for("perps_bot_cycles_total", |c| c >= 3.0, Duration::from_secs(90))
        .await?;
    guarded
        .wait_for("perps_bot_cycles_total", |c| c >= 3.0, Duration::from_secs(90))
        .await?;

    let mut trials = Vec::new();
    let mut failures = 0usize;
    // A fixed pseudo-random jitter spreads the shocks over the scrape and cycle phases.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for trial in 0..GUARD_TRIALS {
        if let Err(error) = settle(bots, &blind, &guarded).await {
            anyhow::bail!("guard trial {trial}: the bots did not return to Normal: {error:#}");
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        tokio::time::sleep(Duration::from_millis(500 + (seed >> 33) % 2000)).await;
        let before = sim.mid_price("BTC-USD").unwrap_or(mid);
        let started = Instant::now();
        shock(sim, Decimal::from(SHOCK_PERCENT))?;
        let mut times = GuardTrial::default();
        let deadline = started + Duration::from_secs(30);
        while !times.complete() && Instant::now() < deadline {
            let (loss, blind_mode, own_mode, status) = tokio::join!(
                blind.read("perps_bot_daily_loss"),
                blind.mode(),
                guarded.mode(),
                mode_of(bots, "blind"),
            );
            let now = started.elapsed();
            if times.visible.is_none() && loss.is_some_and(|l| l >= level_f64) {
                times.visible = Some(now);
            }
            if times.status.is_none() && status == Some(TradingMode::ReduceOnly) {
                times.status = Some(now);
            }
            if times.enforced.is_none() && blind_mode == Some(1.0) {
                times.enforced = Some(now);
            }
            if times.in_process.is_none() && own_mode == Some(1.0) {
                times.in_process = Some(now);
            }
            tokio::time::sleep(POLL).await;
        }
        // Back to where the price was before the shock.
        let now_mid = sim.mid_price("BTC-USD").unwrap_or(before);
        if now_mid > Decimal::ZERO {
            shock(
                sim,
                ((before / now_mid - Decimal::ONE) * Decimal::ONE_HUNDRED).round_dp(6),
            )?;
        }
        if times.complete() {
            trials.push(times);
        } else {
            failures += 1;
        }
    }
    settle(bots, &blind, &guarded).await.ok();
    anyhow::ensure!(!trials.is_empty(), "no guard trial completed");

    let column = |f: &dyn Fn(&GuardTrial) -> Duration| trials.iter().map(f).collect::<Vec<_>>();
    let visible = column(&|t| t.visible.unwrap_or_default());
    // The operator's part: from the crossing being readable at the bot to its status, to the bot.
    let detection = column(&|t| {
        t.status
            .unwrap_or_default()
            .saturating_sub(t.visible.unwrap_or_default())
    });
    let propagation = column(&|t| {
        t.enforced
            .unwrap_or_default()
            .saturating_sub(t.status.unwrap_or_default())
    });
    let operator = column(&|t| {
        t.enforced
            .unwrap_or_default()
            .saturating_sub(t.visible.unwrap_or_default())
    });
    let end_to_end = column(&|t| t.enforced.unwrap_or_default());
    let in_process = column(&|t| t.in_process.unwrap_or_default());
    let limit = SCRAPE_INTERVAL + Duration::from_secs(1);
    let cycle_limit = BOT_INTERVAL + Duration::from_millis(250);
    notes.push(format!(
        "Guard reaction: {} of {GUARD_TRIALS} price shocks of {SHOCK_PERCENT}% on BTC-USD completed ({failures} timed out); each trial \
         starts 0.5–2.5 s after the previous one settled back to Normal (resume: Auto, 1 healthy evaluation), so shocks land at \
         random phases of the {} s scrape and the {} s bot cycle. The bot under the operator's guard alone runs with \
         PERPS_BOT_DISABLE_GUARDS; the other bot enforces the same level itself. Times are polled every {} ms.",
        trials.len(),
        SCRAPE_INTERVAL.as_secs(),
        BOT_INTERVAL.as_secs(),
        POLL.as_millis()
    ));
    Ok(vec![
        Row::new(
            "price shock → loss visible in the bot's /metrics (bot cycle)",
            distribution(&visible),
        )
        .baseline(format!("bot cycle {} s", BOT_INTERVAL.as_secs()))
        .ratio(percentile(&visible, 99.0).as_secs_f64() / BOT_INTERVAL.as_secs_f64()),
        Row::new(
            "operator guard detection: visible → status ReduceOnly",
            distribution(&detection),
        )
        .baseline(format!("scrape interval {} s", SCRAPE_INTERVAL.as_secs()))
        .ratio(percentile(&detection, 99.0).as_secs_f64() / SCRAPE_INTERVAL.as_secs_f64()),
        Row::new(
            "operator guard propagation: status → bot ReduceOnly",
            distribution(&propagation),
        ),
        Row::new("operator guard: level crossed → enforced", distribution(&operator))
            .baseline(format!("scrape interval {} s", SCRAPE_INTERVAL.as_secs()))
            .ratio(percentile(&operator, 99.0).as_secs_f64() / SCRAPE_INTERVAL.as_secs_f64())
            .target(
                format!("p99 < scrape interval + 1 s = {}", ms(limit)),
                percentile(&operator, 99.0) < limit,
            ),
        Row::new("operator guard: price shock → enforced", distribution(&end_to_end)),
        Row::new(
            "bot's in-process guard: price shock → ReduceOnly",
            distribution(&in_process),
        )
        .baseline(format!("bot cycle {} s", BOT_INTERVAL.as_secs()))
        .ratio(percentile(&in_process, 99.0).as_secs_f64() / BOT_INTERVAL.as_secs_f64())
        .target(
            format!("within one cycle (p99 < {})", ms(cycle_limit)),
            percentile(&in_process, 99.0) < cycle_limit,
        ),
    ])
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

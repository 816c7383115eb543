//! Wiring of the trading loop: builds the broker, the mode board and its sources, the
//! identity Lease (when the operator runs us), the HTTP server and the engine, then runs until
//! a signal or the requested number of cycles, and shuts down cleanly.

use crate::broker::Broker;
use crate::broker::paper::PaperExchange;
use crate::cli::RunArgs;
use crate::config::{BotConfig, BrokerKind};
use crate::control::kube::Identity;
use crate::control::{self, ModeHandle, source};
use crate::engine::{Engine, EngineParts, OutputFiles};
use crate::execution::Executor;
use crate::telemetry::metrics::BotMetrics;
use crate::telemetry::server::{self, AppState, Vitals};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tradingbot_crds::lease::{Claim, HolderHandle, LeaseConfig, LeaseHolder};
use tradingbot_crds::names::InstanceNames;
use tradingbot_crds::{Instance, TradingMode};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Run the trading loop with the broker the configuration names. The services (HTTP, mode
/// sources, the identity Lease) start first, so a bot whose exchange is unreachable at start
/// stays up, reports the errors and keeps trying instead of crash-looping.
pub async fn run(args: &RunArgs, config: BotConfig) -> anyhow::Result<()> {
    let mut services = Services::start(args, &config).await?;
    let result = match config.broker {
        BrokerKind::Paper => {
            let paper = PaperExchange::new(&config.paper, &config.symbols, config.derivatives);
            trade(args, config, Arc::new(paper), &mut services).await
        }
        BrokerKind::Coinbase => match connect_until_ready(args, &config, &mut services).await? {
            Some((config, broker)) => trade(args, config, Arc::new(broker), &mut services).await,
            None => Ok(()),
        },
    };
    services.finish().await;
    result
}

/// Connect to Coinbase, retrying while the exchange is unreachable; credentials or
/// configuration it refuses end the process (exit codes 3 / 2).
async fn connect_until_ready(
    args: &RunArgs,
    config: &BotConfig,
    services: &mut Services,
) -> anyhow::Result<Option<(BotConfig, crate::coinbase::broker::CoinbaseBroker)>> {
    let instance = client_instance(args);
    loop {
        match crate::coinbase::connect_for_trading(args, config, &instance).await {
            Ok((config, broker)) => {
                services.app.metrics.create_series(&config.symbols);
                return Ok(Some((config, broker)));
            }
            Err(error) if is_transient(&error) => {
                tracing::warn!(error = %format!("{error:#}"), "exchange unreachable; retrying");
                services.app.metrics.errors.with_label_values(&["exchange"]).inc();
                services.app.update_vitals(|v| v.heartbeat = Instant::now());
            }
            Err(error) => return Err(error),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = services.stop.changed() => return Ok(None),
        }
    }
}

fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<crate::broker::BrokerError>(),
            Some(crate::broker::BrokerError::Unavailable(_) | crate::broker::BrokerError::RateLimited(_))
        )
    })
}

/// Who we are in the exchange simulator's order log and in client order ids.
/// A replacement pod has the same name as the one it replaces, so the pod uid (or, outside
/// Kubernetes, the process id) tells processes apart.
pub fn client_instance(args: &RunArgs) -> String {
    let pod = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("pid{}", std::process::id()));
    let process =
        std::env::var(tradingbot_crds::names::env::POD_UID).unwrap_or_else(|_| format!("pid{}", std::process::id()));
    match (&args.tradingbot, &args.namespace) {
        (Some(bot), Some(ns)) => format!("{ns}/{bot}/{}/{pod}/{process}", args.instance),
        _ => format!("local/{pod}/{process}"),
    }
}

fn identity(args: &RunArgs) -> anyhow::Result<Option<Identity>> {
    let Some(bot) = args.tradingbot.clone() else {
        return Ok(None);
    };
    anyhow::ensure!(
        args.bot_id.is_none(),
        "--bot-id (PERPS_BOT_ID) names a bot run by hand; this process runs for TradingBot {bot}, whose identity is its name: remove PERPS_BOT_ID"
    );
    let namespace = args
        .namespace
        .clone()
        .context("--tradingbot needs --namespace (TRADINGBOT_NAMESPACE) too")?;
    let pod = args
        .pod_name
        .clone()
        .unwrap_or_else(|| format!("pid{}", std::process::id()));
    // Unique per process: the pod (name and uid, as the Lease's readers see them) and a random
    // run id (a restarted container is a new holder).
    let pod_uid = std::env::var(tradingbot_crds::names::env::POD_UID).unwrap_or_else(|_| "no-uid".into());
    let suffix: u32 = rand::random();
    Ok(Some(Identity {
        bot,
        namespace,
        instance: args.instance,
        holder: format!("{pod}_{pod_uid}_{suffix:08x}"),
    }))
}

fn control_token(args: &RunArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.control_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("--control-token-file {}: cannot read", path.display()))?;
        let token = token.trim().to_string();
        anyhow::ensure!(
            token.len() >= 16,
            "--control-token-file: the token must be at least 16 characters"
        );
        return Ok(Some(token));
    }
    Ok(std::env::var("PERPS_BOT_CONTROL_TOKEN").ok().filter(|t| t.len() >= 16))
}

/// Default location of metrics.json (the reference's layout), used when no path is given.
pub fn default_metrics_file(config: &BotConfig) -> PathBuf {
    PathBuf::from(format!("var/data/perps_bot/{}/metrics.json", config.profile))
}

/// Everything that runs around the trading loop, independent of the exchange.
struct Services {
    stop_tx: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
    instance: Instance,
    mode: ModeHandle,
    app: Arc<AppState>,
    acks: Option<mpsc::Receiver<crate::control::AckRequest>>,
    /// The identity Lease (always held when not managed by the operator).
    claim: Claim,
    lease: Option<HolderHandle>,
    spec_guards: Option<watch::Receiver<Option<tradingbot_crds::spec::Guards>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Services {
    async fn start(args: &RunArgs, config: &BotConfig) -> anyhow::Result<Self> {
        let (stop_tx, stop) = watch::channel(false);
        spawn_signal_handler(stop_tx.clone());
        let identity = identity(args)?;
        let instance = identity.as_ref().map_or(Instance::Prod, |i| i.instance);

        let mut expected = vec![source::CONFIG, source::GUARDS];
        if identity.is_some() {
            expected.push(source::KUBERNETES);
        }
        if args.control_file.is_some() {
            expected.push(source::CONTROL_FILE);
        }
        let mode = ModeHandle::new(&expected);
        let config_reason = if config.reduce_only {
            "reduce-only by configuration"
        } else {
            "configuration"
        };
        mode.set(
            source::CONFIG,
            TradingMode::from_switches(config.reduce_only, false),
            config_reason,
        );

        let version = std::env::var(tradingbot_crds::names::env::VERSION).unwrap_or_else(|_| VERSION.to_string());
        let metrics = Arc::new(BotMetrics::new(
            &version,
            config.profile.as_str(),
            instance.as_str(),
            &config.symbols,
        ));
        let (acks_tx, acks_rx) = mpsc::channel(64);
        let app = Arc::new(AppState {
            metrics,
            snapshot: RwLock::new(None),
            vitals: RwLock::new(Vitals {
                heartbeat: Instant::now(),
                market_data_fresh: false,
                lease_held: identity.is_none(),
            }),
            mode: mode.clone(),
            acks: acks_tx.clone(),
            control_token: control_token(args)?,
            liveness_timeout: config.interval * 10 + Duration::from_secs(60),
            started: Instant::now(),
        });
        let mut tasks = Vec::new();
        let serve_http = !args.dev_fast || std::env::args().any(|a| a.starts_with("--metrics-addr"));
        if serve_http {
            let (bound, task) = server::serve(args.metrics_addr, app.clone(), stop.clone())
                .await
                .with_context(|| format!("--metrics-addr {}: cannot listen", args.metrics_addr))?;
            tracing::info!(address = %bound, "serving /metrics, /metrics.json, /healthz, /readyz and /control");
            tasks.push(task);
        }

        let mut lease = None;
        let mut claim = Claim::unconditional();
        let mut spec_guards = None;
        if let Some(identity) = &identity {
            let client = kube::Client::try_default()
                .await
                .context("cannot reach the Kubernetes API (needed with --tradingbot)")?;
            let names = InstanceNames::new(&identity.bot, identity.instance);
            let mut config = LeaseConfig::new(names.lease, &identity.namespace, &identity.holder);
            config.wall_clock_offset = test_clock_offset()?;
            let (held, handle) = LeaseHolder::spawn(client.clone(), config);
            tokio::spawn(track_lease(held.clone(), app.clone()));
            claim = held;
            lease = Some(handle);
            let (guards_tx, guards_rx) = watch::channel(None);
            spec_guards = Some(guards_rx);
            tokio::spawn(control::kube::watch_tradingbot(
                client,
                identity.clone(),
                mode.clone(),
                guards_tx,
                acks_tx.clone(),
                stop.clone(),
            ));
            tracing::info!(tradingbot = %identity.bot, namespace = %identity.namespace, instance = %identity.instance, holder = %identity.holder, "managed by the operator: waiting for the identity Lease and the TradingBot");
        }
        if let Some(path) = &args.control_file {
            tokio::spawn(control::file::watch(
                path.clone(),
                mode.clone(),
                acks_tx.clone(),
                stop.clone(),
            ));
        }
        Ok(Self {
            stop_tx,
            stop,
            instance,
            mode,
            app,
            acks: Some(acks_rx),
            claim,
            lease,
            spec_guards,
            tasks,
        })
    }

    /// Stop the services; the Lease is released (only now, once the engine has stopped and
    /// cancelled its orders) so a successor need not wait.
    async fn finish(self) {
        let _ = self.stop_tx.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Some(lease) = self.lease {
            lease.release().await;
        }
        tracing::info!("perps-bot stopped");
    }
}

/// Run the engine with `broker` until stopped or done.
async fn trade<B: Broker>(
    args: &RunArgs,
    config: BotConfig,
    broker: Arc<B>,
    services: &mut Services,
) -> anyhow::Result<()> {
    let (instance, mode, app) = (services.instance, services.mode.clone(), services.app.clone());
    let claim = services.claim.clone();
    // Client order ids start with the instance's identity: the bot only ever cancels its own
    // (the same prefix its inventory and cash books count).
    let client_id_prefix = args.client_order_prefix();
    let executor = Arc::new(Executor::new(
        broker.clone(),
        mode.clone(),
        claim.clone(),
        config.dry_run,
        config.execution.enable_preview,
        client_id_prefix.clone(),
    ));
    // Subscribed, and the starting mode taken, now: a change made before the task first runs
    // (e.g. an unreadable guard state at start) is still seen as a change (logged, and the
    // orders the new mode forbids cancelled).
    let modes = app.mode.subscribe();
    let starting = modes.borrow().clone();
    tokio::spawn(enforce_mode_changes(executor.clone(), app.clone(), modes, starting));
    if claim.is_fenced() {
        tokio::spawn(cancel_on_lease_loss(executor.clone(), claim));
    }

    let metrics_file = args
        .metrics_file
        .clone()
        .unwrap_or_else(|| default_metrics_file(&config));
    let files = OutputFiles {
        health: Some(metrics_file.with_file_name("health.json")),
        state: Some(
            args.state_file
                .clone()
                .unwrap_or_else(|| metrics_file.with_file_name("guard-state.json")),
        ),
        metrics: Some(metrics_file),
    };
    let cycles = if args.dev_fast {
        Some(args.cycles.unwrap_or(1))
    } else {
        args.cycles
    };
    tracing::info!(profile = %config.profile, broker = broker.name(), symbols = config.symbols.len(), dry_run = config.dry_run, interval_ms = config.interval.as_millis() as u64, "perps-bot starting");
    let parts = EngineParts {
        client_id_prefix,
        config,
        instance,
        version: std::env::var(tradingbot_crds::names::env::VERSION).unwrap_or_else(|_| VERSION.to_string()),
        broker,
        executor,
        mode,
        app,
        acks: services.acks.take().context("the engine runs once")?,
        spec_guards: services.spec_guards.clone(),
        files,
        guards_enabled: !args.disable_guards,
    };
    let mut stop = services.stop.clone();
    let mut engine = Engine::start(parts, &mut stop).await?;
    engine.run(cycles, &mut stop).await;
    engine.shutdown(!args.keep_orders_on_exit).await;
    match engine.output_failure() {
        // The smoke test exists to catch a broken --metrics-file: fail it, naming the path.
        Some(failure) if args.dev_fast => anyhow::bail!(failure),
        _ => Ok(()),
    }
}

/// SIGTERM or SIGINT stop the loop (the engine then halts and cancels orders).
fn spawn_signal_handler(stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping: no new orders, cancelling open ones"),
            _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "stopping: no new orders, cancelling open ones"),
        }
        let _ = stop.send(true);
    });
}

/// Apply every mode change at once: metrics, a log event, and cancelling orders the new mode
/// forbids (all of them when Halted, those that would not reduce when ReduceOnly).
async fn enforce_mode_changes<B: Broker>(
    executor: Arc<Executor<B>>,
    app: Arc<AppState>,
    mut rx: watch::Receiver<control::EffectiveMode>,
    mut last: control::EffectiveMode,
) {
    app.metrics.set_mode(last.mode, last.known);
    while rx.changed().await.is_ok() {
        let now = rx.borrow_and_update().clone();
        app.metrics.set_mode(now.mode, now.known);
        if now.mode != last.mode {
            tracing::warn!(event = "mode_changed", from = %last.mode, to = %now.mode, reason = %now.reason, "trading mode changed");
        } else if now.known && !last.known {
            tracing::info!(event = "mode_known", mode = %now.mode, reason = %now.reason, "trading mode known: trading may start");
        }
        if now.mode != TradingMode::Normal && now.mode != last.mode {
            let account = executor.broker().account().await.ok();
            let position = |s: &crate::domain::Symbol| account.as_ref().map(|a| a.position(s)).unwrap_or_default();
            match executor
                .cancel_open_orders(now.mode == TradingMode::ReduceOnly, position)
                .await
            {
                Ok(n) if n > 0 => {
                    tracing::info!(event = "orders_cancelled", count = n, mode = %now.mode, "open orders cancelled for the new mode")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "cancelling open orders for the new mode failed; retried next cycle")
                }
            }
        }
        last = now;
    }
}

/// Whenever the identity Lease is lost (taken, expired, or refused for our credentials), cancel
/// the orders this process placed at once: no new ones go out without the Lease anyway.
async fn cancel_on_lease_loss<B: Broker>(executor: Arc<Executor<B>>, mut claim: Claim) {
    loop {
        if !claim.acquired().await {
            return;
        }
        claim.lost().await;
        tracing::warn!(event = "lease_lost", holder = ?claim.holder(), "identity Lease lost: no orders; cancelling the orders this process placed");
        match executor.cancel_orders_placed_here().await {
            Ok(n) => tracing::info!(
                event = "orders_cancelled",
                count = n,
                "orders of this process cancelled after losing the Lease"
            ),
            Err(error) => tracing::error!(%error, "cancelling this process's orders after losing the Lease failed"),
        }
    }
}

async fn track_lease(mut claim: Claim, app: Arc<AppState>) {
    let mut held = false;
    loop {
        let now_held = claim.is_held();
        if now_held != held {
            tracing::info!(
                event = if now_held { "lease_acquired" } else { "lease_not_held" },
                holder = ?claim.holder(),
                "identity Lease {}",
                if now_held { "acquired" } else { "not held: no orders" }
            );
            held = now_held;
        }
        app.metrics.lease_held.set(i64::from(now_held));
        app.update_vitals(|v| v.lease_held = now_held);
        if now_held {
            claim.lost().await;
        } else if !claim.acquired().await {
            return;
        }
    }
}

/// `PERPS_BOT_TEST_CLOCK_OFFSET_SECONDS`: shift the wall clock this process writes into its
/// Lease, to test that no decision depends on it (clock skew between nodes). Test-only.
fn test_clock_offset() -> anyhow::Result<k8s_openapi::jiff::SignedDuration> {
    match std::env::var("PERPS_BOT_TEST_CLOCK_OFFSET_SECONDS") {
        Err(_) => Ok(k8s_openapi::jiff::SignedDuration::ZERO),
        Ok(text) => text
            .trim()
            .parse::<i64>()
            .map(k8s_openapi::jiff::SignedDuration::from_secs)
            .map_err(|_| {
                anyhow::anyhow!("PERPS_BOT_TEST_CLOCK_OFFSET_SECONDS={text:?}: must be a whole number of seconds")
            }),
    }
}

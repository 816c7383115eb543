//! The operator's flags (each also readable from the environment, as the chart sets them).

use clap::{Parser, ValueEnum};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Where the operator's guards read the bots' metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum GuardSource {
    /// Scrape every bot pod's /metrics (each on its own `scrapeIntervalSeconds`).
    #[default]
    Pods,
    /// One PromQL query per `--prometheus-interval-seconds` to `--prometheus-url`, which scrapes
    /// the bots itself (through their ServiceMonitors).
    Prometheus,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "tradingbot-operator",
    version,
    about = "Runs and guards TradingBots: bot pods, guard enforcement, canary rollouts"
)]
pub struct Args {
    /// Namespaces to watch (repeat or comma-separate); all namespaces when omitted.
    #[arg(long = "namespace", env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Bot image used when a TradingBot does not name one.
    #[arg(long, env = "BOT_IMAGE", default_value = "perps-bot:dev")]
    pub bot_image: String,

    /// imagePullPolicy of bot pods.
    #[arg(long, env = "BOT_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub bot_image_pull_policy: String,

    /// Exchange REST base URL for bots that do not set `exchange.apiBaseUrl` (e.g. a simulator);
    /// unset means Coinbase.
    #[arg(long, env = "DEFAULT_API_BASE_URL")]
    pub default_api_base_url: Option<String>,

    /// Market data WebSocket URL for bots that do not set `exchange.wsUrl`.
    #[arg(long, env = "DEFAULT_WS_URL")]
    pub default_ws_url: Option<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,

    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Elect a leader through a Lease so several replicas can run (only the leader reconciles).
    #[arg(long, env = "LEADER_ELECTION", num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub leader_election: bool,

    #[arg(long, env = "LEADER_ELECTION_LEASE", default_value = "tradingbot-operator-leader")]
    pub leader_election_lease: String,

    /// Namespace of the leader Lease (defaults to the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// This replica's identity (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Split the bots among this many operators (each a shard with its own leader Lease); see
    /// docs/ARCHITECTURE.md for which shard owns a bot.
    #[arg(long, env = "SHARDS", default_value_t = 1)]
    pub shards: u32,

    /// The shard this operator owns, 0 to `--shards` - 1.
    #[arg(long, env = "SHARD_INDEX", default_value_t = 0)]
    pub shard_index: u32,

    /// Reconcile a quiet bot (no trip, rollout, canary, deletion or account) only after a scrape
    /// that changes something a decision reads, after a failed reconcile, or once a minute (the
    /// default); false: after every scrape.
    #[arg(long, env = "QUIET_SCRAPES", num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub quiet_scrapes: bool,

    /// Where the guards read the bots' metrics.
    #[arg(long, env = "GUARD_SOURCE", value_enum, default_value = "pods")]
    pub guard_source: GuardSource,

    /// Base URL of the Prometheus HTTP API, with `--guard-source prometheus`.
    #[arg(long, env = "PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// How often the guard query runs, with `--guard-source prometheus`.
    #[arg(long, env = "PROMETHEUS_INTERVAL_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub prometheus_interval_seconds: u64,

    /// A bot Prometheus last scraped longer ago than this counts as unreachable (its failed
    /// observations start then; keep it at most the bots' `unreachableAfterSeconds`).
    #[arg(long, env = "PROMETHEUS_MAX_AGE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub prometheus_max_age_seconds: u64,

    /// How long one guard query may take (its answer covers the whole fleet).
    #[arg(long, env = "PROMETHEUS_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub prometheus_timeout_seconds: u64,

    /// How long a scrape of a bot's /metrics may take.
    #[arg(long, env = "SCRAPE_TIMEOUT_SECONDS", default_value_t = 3)]
    pub scrape_timeout_seconds: u64,

    /// Reconciles running at once.
    #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// How long a deleted TradingBot's bot gets to report Halted before its pod is removed anyway.
    #[arg(long, env = "HALT_TIMEOUT_SECONDS", default_value_t = 60)]
    pub halt_timeout_seconds: u64,

    /// Bot pods that may be restarting at once for the operator's own sake (an operator upgrade
    /// or a changed operator setting): each waits until fewer than this many bot pods are
    /// stopping or not yet Ready. Restarts a TradingBot change asks for are never held back.
    #[arg(long, env = "MAX_CONCURRENT_RESTARTS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_restarts: u16,

    /// A restarted bot pod that is not Ready after this long stops holding up the fleet's other
    /// operator-side restarts (it is reported on its TradingBot).
    #[arg(long, env = "RESTART_READY_TIMEOUT_SECONDS", default_value_t = 600)]
    pub restart_ready_timeout_seconds: u64,
}

/// Settings the reconciler reads (the parts of [`Args`] it needs).
#[derive(Debug, Clone)]
pub struct Settings {
    pub bot_image: String,
    pub bot_image_pull_policy: String,
    pub default_api_base_url: Option<String>,
    pub default_ws_url: Option<String>,
    pub halt_timeout: std::time::Duration,
    pub max_concurrent_restarts: usize,
    pub restart_ready_timeout: std::time::Duration,
    /// See [`Args::quiet_scrapes`].
    pub quiet_scrapes: bool,
}

impl From<&Args> for Settings {
    fn from(args: &Args) -> Self {
        Self {
            bot_image: args.bot_image.clone(),
            bot_image_pull_policy: args.bot_image_pull_policy.clone(),
            default_api_base_url: args.default_api_base_url.clone(),
            default_ws_url: args.default_ws_url.clone(),
            halt_timeout: std::time::Duration::from_secs(args.halt_timeout_seconds),
            max_concurrent_restarts: usize::from(args.max_concurrent_restarts),
            restart_ready_timeout: std::time::Duration::from_secs(args.restart_ready_timeout_seconds),
            quiet_scrapes: args.quiet_scrapes,
        }
    }
}

impl Settings {
    pub fn for_tests() -> Self {
        Self {
            bot_image: "perps-bot:dev".into(),
            bot_image_pull_policy: "IfNotPresent".into(),
            default_api_base_url: None,
            default_ws_url: None,
            halt_timeout: std::time::Duration::from_secs(60),
            max_concurrent_restarts: 1,
            restart_ready_timeout: std::time::Duration::from_secs(600),
            quiet_scrapes: false,
        }
    }
}

//! `TradingBot.spec`: what a user declares. Field names are a public contract (docs, GitOps
//! repositories and the runbook rely on them); add fields, never rename them.

// kube-derive's repeated `printcolumn(...)` items trip this lint; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

use crate::decimal::{Fraction, NonNegativeDecimal, Percent, PositiveDecimal};
use crate::status::TradingBotStatus;
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Product ids the bot trades: an uppercase base and quote, e.g. `BTC-USD` or `BTC-PERP`.
pub const SYMBOL_PATTERN: &str = "^[A-Z0-9]{2,12}-[A-Z0-9]{2,12}$";
/// A Kubernetes object name (DNS-1123 subdomain), used for Secret references.
pub const OBJECT_NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// An `http(s)` or `ws(s)` URL without spaces.
pub const HTTP_URL_PATTERN: &str = "^https?://[^\\s]+$";
pub const WS_URL_PATTERN: &str = "^wss?://[^\\s]+$";
/// A container image reference without spaces.
pub const IMAGE_PATTERN: &str = "^[^\\s]+$";
/// A Prometheus duration such as `30s` or `1m`.
pub const PROM_DURATION_PATTERN: &str = "^[0-9]+(ms|s|m|h)$";

/// A trading bot managed by the operator: one prod instance (and, during a rollout, one
/// canary instance) of `perps-bot`, guarded and reported on.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "trading.gpttrader.io",
    version = "v1alpha1",
    kind = "TradingBot",
    plural = "tradingbots",
    shortname = "tb",
    category = "trading",
    namespaced,
    status = "TradingBotStatus",
    doc = "A Coinbase trading bot (perps-bot) run and guarded by the TradingBot operator.",
    printcolumn(name = "Profile", type_ = "string", json_path = ".spec.profile"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.currentVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        json_path = ".status.rollout.phase",
        priority = 1
    ),
    printcolumn(name = "Canary", type_ = "string", json_path = ".status.canaryVersion", priority = 1),
    printcolumn(name = "Trips", type_ = "integer", json_path = ".status.tripCount", priority = 1),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.modeReason", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct TradingBotSpec {
    /// The bot profile: its built-in limits, intervals and broker.
    pub profile: Profile,

    /// The perps-bot image (the version). Defaults to the operator's configured image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(IMAGE_PATTERN))]
    pub image: Option<String>,

    /// Product ids to trade; empty means the profile's default symbols.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(pattern(SYMBOL_PATTERN)))]
    pub symbols: Vec<String>,

    /// Run the whole pipeline but submit no orders. Unset means the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,

    /// Only orders that shrink a position are allowed.
    #[serde(default)]
    pub reduce_only: bool,

    /// No orders at all; open orders are cancelled.
    #[serde(default)]
    pub halted: bool,

    /// The operator stops changing this bot's children (pods, config, rollouts) but keeps
    /// reporting its status; guards keep protecting it (trips still set `status.mode`).
    #[serde(default)]
    pub paused: bool,

    #[serde(default)]
    pub exchange: ExchangeSpec,

    /// The TradingAccount this bot trades on: its credentials come from the account (do not
    /// also set `exchange.credentialsSecret`), and the bot is never less restricted than the
    /// account (its switches and its limits over all of its bots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<crate::account::AccountRef>,

    #[serde(default)]
    pub guards: Guards,

    #[serde(default)]
    pub rollout: RolloutSpec,

    #[serde(default)]
    pub metrics: MetricsSpec,

    /// Resource requests and limits of the bot container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables for the bot. Never put credentials here: use
    /// `exchange.credentialsSecret`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Dev,
    Demo,
    Canary,
    Spot,
    Prod,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::Dev,
        Profile::Demo,
        Profile::Canary,
        Profile::Spot,
        Profile::Prod,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Demo => "demo",
            Profile::Canary => "canary",
            Profile::Spot => "spot",
            Profile::Prod => "prod",
        }
    }

    /// Profiles that never trade derivatives.
    pub fn is_spot_only(self) -> bool {
        matches!(self, Profile::Dev | Profile::Demo | Profile::Spot)
    }

    /// Profiles that need exchange credentials to trade (dev uses the embedded paper exchange).
    pub fn needs_exchange(self) -> bool {
        !matches!(self, Profile::Dev)
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown profile {s:?}: expected one of dev, demo, canary, spot, prod"))
    }
}

/// How the bot reaches Coinbase.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeSpec {
    /// Name of a Secret in the bot's namespace holding the CDP API key: either the keys
    /// `COINBASE_CDP_API_KEY` and `COINBASE_CDP_PRIVATE_KEY`, or `cdp_api_key.json` as
    /// downloaded from Coinbase (`name`, `privateKey`). Mounted read-only into the bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub credentials_secret: Option<String>,

    /// Trade perpetuals (sets COINBASE_ENABLE_DERIVATIVES=1). Not allowed with spot-only profiles.
    #[serde(default)]
    pub derivatives: bool,

    /// Override of the REST base URL (e.g. the exchange simulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(HTTP_URL_PATTERN))]
    pub api_base_url: Option<String>,

    /// Override of the market data WebSocket URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(WS_URL_PATTERN))]
    pub ws_url: Option<String>,
}

/// A ReduceOnly level and a Halted level for one guard; either may be omitted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(
    rename_all = "camelCase",
    bound(deserialize = "T: Deserialize<'de>", serialize = "T: Serialize")
)]
pub struct Levels<T> {
    /// Reaching this flips the bot to ReduceOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce_only_at: Option<T>,
    /// Reaching this flips the bot to Halted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_at: Option<T>,
}

impl<T> Default for Levels<T> {
    fn default() -> Self {
        Self {
            reduce_only_at: None,
            halt_at: None,
        }
    }
}

/// Market data age levels, in whole seconds.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecondsLevels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub reduce_only_at: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub halt_at: Option<u32>,
}

/// Annualised standard deviation of returns over a window of bars.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolatilityGuard {
    /// Number of returns in the window.
    #[serde(default = "default_volatility_window")]
    #[schemars(range(min = 2, max = 10000))]
    pub window: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce_only_at: Option<NonNegativeDecimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_at: Option<NonNegativeDecimal>,
}

fn default_volatility_window() -> u32 {
    20
}

/// Errors (failed cycles, rejected orders, exchange errors) counted over a sliding window.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRateGuard {
    #[serde(default = "default_error_window")]
    #[schemars(range(min = 1, max = 86400))]
    pub window_seconds: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub reduce_only_at: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub halt_at: Option<u32>,
}

fn default_error_window() -> u32 {
    300
}

/// How a latched guard trip is released.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ResumePolicy {
    /// A trip stays latched until a human acknowledges it (and the value is back in range).
    #[default]
    Manual,
    /// A trip is released after `healthyCyclesBeforeResume` healthy cycles in a row.
    Auto,
}

/// Guard levels. The operator and the bot both enforce them, independently.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Guards {
    /// Loss since the UTC day started (realised + unrealised, from equity), in quote currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_loss: Option<Levels<NonNegativeDecimal>>,
    /// Percentage drop of equity from its peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drawdown_percent: Option<Levels<Percent>>,
    /// Age of the newest market data, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market_data_staleness_seconds: Option<SecondsLevels>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volatility: Option<VolatilityGuard>,
    /// Herfindahl index of position notionals (0..1; 1 = everything in one symbol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concentration: Option<Levels<Fraction>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateGuard>,
    /// Pre-trade cap on leverage (the profile's cap applies too; the lower wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_leverage: Option<PositiveDecimal>,
    /// Pre-trade cap on total exposure as a percentage of equity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_exposure_percent: Option<NonNegativeDecimal>,
    /// Pre-trade cap on position notional per symbol, in quote currency.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub max_notional_per_symbol: BTreeMap<String, NonNegativeDecimal>,
    #[serde(default)]
    pub resume: ResumePolicy,
    /// With `resume: Auto`, healthy cycles in a row before a trip is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub healthy_cycles_before_resume: Option<u32>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    /// A new version runs as a canary first and replaces prod only when it proves healthy.
    #[default]
    Canary,
    /// A new version replaces prod straight away (stop old, then start new).
    Direct,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Promotion {
    /// A canary that passes its gates replaces prod automatically.
    #[default]
    Auto,
    /// A canary that passes waits until `approvedVersion` names its version.
    Manual,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// The canary places no orders (it trades on live market data in dry-run).
    #[serde(default = "default_true")]
    pub dry_run: bool,
    /// Credentials for a canary that trades for real (with the canary profile's limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(OBJECT_NAME_PATTERN))]
    pub credentials_secret: Option<String>,
    /// Healthy trading cycles the canary must complete.
    #[serde(default = "default_min_healthy_cycles")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_healthy_cycles: u32,
    /// Minimum time the canary must run, in seconds.
    #[serde(default = "default_min_duration")]
    #[schemars(range(min = 0, max = 604800))]
    pub min_duration_seconds: u32,
    /// Most cycle errors the canary may have and still pass.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000000))]
    pub max_errors: u32,
}

impl Default for CanarySpec {
    fn default() -> Self {
        Self {
            dry_run: true,
            credentials_secret: None,
            min_healthy_cycles: default_min_healthy_cycles(),
            min_duration_seconds: default_min_duration(),
            max_errors: 0,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_min_healthy_cycles() -> u32 {
    10
}
fn default_min_duration() -> u32 {
    300
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    #[serde(default)]
    pub strategy: RolloutStrategy,
    #[serde(default)]
    pub canary: CanarySpec,
    #[serde(default)]
    pub promotion: Promotion,
    /// With `promotion: Manual`, prod moves to the canary's version only when this equals it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), pattern(IMAGE_PATTERN))]
    pub approved_version: Option<String>,
    /// Analysis of the canary's metrics (and prod's, for `VsProd`), a gate besides the
    /// canary's counts above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::progressive::AnalysisSpec>,
    /// A rollout that makes no progress for this long (canary not ready, no new healthy cycle or
    /// successful measurement, prod not ready on the new version) gives up: a canary aborts,
    /// a promotion rolls back. Paused and awaiting promotion, the clock stands still. Default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 86400))]
    pub progress_deadline_seconds: Option<u32>,
    /// Watch prod after a promotion and roll it back automatically on a guard trip, a crash
    /// loop or a failed analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<crate::progressive::BakeSpec>,
    /// Finished rollouts kept in `status.rolloutHistory` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub revision_history_limit: Option<u32>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSpec {
    /// Port of the bot's /metrics endpoint.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: u16,
    /// How often the operator scrapes the bot for guard enforcement.
    #[serde(default = "default_scrape_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub scrape_interval_seconds: u32,
    /// A bot whose metrics cannot be scraped for this long is treated like stale market data
    /// (its `marketDataStalenessSeconds` levels apply) and reported.
    #[serde(default = "default_unreachable_after")]
    #[schemars(range(min = 1, max = 3600))]
    pub unreachable_after_seconds: u32,
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
}

impl Default for MetricsSpec {
    fn default() -> Self {
        Self {
            port: default_metrics_port(),
            scrape_interval_seconds: default_scrape_interval(),
            unreachable_after_seconds: default_unreachable_after(),
            service_monitor: ServiceMonitorSpec::default(),
        }
    }
}

fn default_unreachable_after() -> u32 {
    30
}

pub const DEFAULT_METRICS_PORT: u16 = 9102;

fn default_metrics_port() -> u16 {
    DEFAULT_METRICS_PORT
}
fn default_scrape_interval() -> u32 {
    10
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create a ServiceMonitor (monitoring.coreos.com/v1) when that API exists in the cluster.
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval for Prometheus, e.g. `30s`. Defaults to the scrape interval above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(PROM_DURATION_PATTERN))]
    pub interval: Option<String>,
    /// Extra labels on the ServiceMonitor (e.g. the `release` label a Prometheus selects on).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl TradingBotSpec {
    /// A minimal spec for a profile, with every other field at its default.
    pub fn for_profile(profile: Profile) -> Self {
        Self {
            profile,
            image: None,
            symbols: Vec::new(),
            dry_run: None,
            reduce_only: false,
            halted: false,
            paused: false,
            exchange: ExchangeSpec::default(),
            account: None,
            guards: Guards::default(),
            rollout: RolloutSpec::default(),
            metrics: MetricsSpec::default(),
            resources: None,
            env: Vec::new(),
        }
    }
}

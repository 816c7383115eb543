//! The bot's resolved configuration and how it is built: a built-in profile, adjusted by an
//! optional YAML/TOML file, adjusted by the flags the user actually passed. Profile safety
//! locks (the canary's) are checked after each layer, so neither a file nor a flag can loosen
//! them.

pub mod overrides;
pub mod profiles;
pub mod strategy;

use crate::domain::{Symbol, TimeInForce};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tradingbot_crds::Profile;
use tradingbot_crds::spec::Guards;

pub use overrides::ConfigOverrides;
pub use strategy::{
    AtrFilter, EntryFilters, MomentumFilter, ResolvedStrategy, StrategyConfig, SymbolSettings, TrendFilter,
    VolumeFilter,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BrokerKind {
    /// The embedded deterministic paper exchange (no credentials, no network).
    Paper,
    /// Coinbase Advanced Trade (or the exchange simulator).
    Coinbase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStyle {
    /// Market orders (IOC).
    Market,
    /// Limit orders at the touch improved by `limit_offset_bps`, with the configured TIF.
    Limit,
}

/// A daily window in UTC minutes since midnight; `end` may be before `start` (wraps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UtcWindow {
    pub start_minute: u32,
    pub end_minute: u32,
}

impl UtcWindow {
    pub fn contains(&self, minute_of_day: u32) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute_of_day)
        } else {
            minute_of_day >= self.start_minute || minute_of_day < self.end_minute
        }
    }

    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parse_hm = |hm: &str| -> Option<u32> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} must look like 13:00-20:00"))?;
        match (parse_hm(a), parse_hm(b)) {
            (Some(start_minute), Some(end_minute)) => Ok(UtcWindow {
                start_minute,
                end_minute,
            }),
            _ => Err(format!("{text:?} must look like 13:00-20:00 (UTC, 24h)")),
        }
    }
}

/// When new exposure may be opened (outside it the bot only reduces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradingSession {
    pub window: UtcWindow,
    pub weekdays_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RiskConfig {
    /// Rejects every order.
    pub kill_switch: bool,
    pub max_leverage: Decimal,
    /// Per-symbol leverage caps inside the day window.
    pub day_leverage: BTreeMap<Symbol, Decimal>,
    /// Per-symbol leverage caps outside it.
    pub night_leverage: BTreeMap<Symbol, Decimal>,
    pub day_window: UtcWindow,
    pub min_liquidation_buffer_percent: Decimal,
    pub maintenance_margin_percent: Decimal,
    pub max_exposure_percent: Option<Decimal>,
    pub max_symbol_exposure_percent: Option<Decimal>,
    pub max_notional_per_symbol: BTreeMap<Symbol, Decimal>,
    pub slippage_guard_bps: Decimal,
    /// Older market data blocks new orders on that symbol.
    pub max_staleness_seconds: u64,
    pub session: Option<TradingSession>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionConfig {
    pub tif: TimeInForce,
    pub enable_preview: bool,
    pub order_style: OrderStyle,
    pub limit_offset_bps: Decimal,
}

/// The embedded paper exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaperConfig {
    pub seed: u64,
    pub starting_cash: Decimal,
    pub fee_bps: Decimal,
    pub slippage_bps: Decimal,
    /// Largest step of the price path per tick, in basis points.
    pub step_bps: u32,
    pub spread_bps: Decimal,
}

impl Default for PaperConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            starting_cash: Decimal::from(100_000),
            fee_bps: Decimal::from(10),
            slippage_bps: Decimal::ZERO,
            step_bps: 20,
            spread_bps: Decimal::from(2),
        }
    }
}

/// Everything the bot runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct BotConfig {
    pub profile: Profile,
    pub symbols: Vec<Symbol>,
    pub interval: Duration,
    /// How often account telemetry is refreshed in full: the own-inventory ledger rebuilt from
    /// the exchange's order history (`--account-interval`, the reference's 300 s).
    pub account_interval: Duration,
    pub broker: BrokerKind,
    pub dry_run: bool,
    /// Reduce-only intent from configuration (the profile or a flag).
    pub reduce_only: bool,
    pub derivatives: bool,
    pub strategy: StrategyConfig,
    pub risk: RiskConfig,
    pub execution: ExecutionConfig,
    /// In-process guard levels (the TradingBot's `spec.guards` replace them when managed).
    pub guards: Guards,
    pub paper: PaperConfig,
    /// Safety values this profile locks, in words (empty when none).
    pub locked: Vec<&'static str>,
}

/// A configuration that cannot be used, with the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ConfigError {
    pub field: String,
    pub rule: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl BotConfig {
    /// Build the configuration: profile, then the file, then the flags, checking locks and
    /// consistency after each layer. `from_flags` only holds flags the user passed.
    pub fn resolve(
        profile: Option<Profile>,
        from_file: &ConfigOverrides,
        from_flags: &ConfigOverrides,
    ) -> Result<BotConfig, ConfigError> {
        let profile = profile.or(from_file.profile).unwrap_or(Profile::Dev);
        let locked = profiles::builtin(profile);
        let mut config = locked.clone();
        from_file.apply(&mut config, "config file")?;
        check_locks(&locked, &config, "the config file")?;
        from_flags.apply(&mut config, "flag")?;
        check_locks(&locked, &config, "the command line")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.strategy;
        s.validate()?;
        if s.position_fraction <= Decimal::ZERO || s.position_fraction > Decimal::ONE {
            return Err(ConfigError::new("strategy.position_fraction", "must be in (0, 1]"));
        }
        if s.target_leverage <= Decimal::ZERO {
            return Err(ConfigError::new("strategy.target_leverage", "must be positive"));
        }
        if self.risk.max_leverage <= Decimal::ZERO {
            return Err(ConfigError::new("risk.max_leverage", "must be positive"));
        }
        if self.interval < Duration::from_millis(50) {
            return Err(ConfigError::new("interval", "must be at least 0.05 seconds"));
        }
        if self.symbols.is_empty() {
            return Err(ConfigError::new("symbols", "at least one symbol is needed"));
        }
        Ok(())
    }

    /// Guard levels after a live update from the TradingBot: each guard given replaces the
    /// configured one, except that a profile's locked daily loss limit (the canary's) is never
    /// loosened at run time either.
    pub fn live_guards(&self, spec: &Guards) -> Guards {
        let mut levels = self.guards.clone();
        overrides::merge_guards(&mut levels, spec);
        let locked = self.daily_loss_limit();
        if !self.locked.is_empty() && lowest_daily_loss_level(&levels).is_none_or(|l| Some(l) > locked) {
            levels.daily_loss = self.guards.daily_loss.clone();
        }
        levels
    }

    /// The lowest configured daily-loss level.
    pub fn daily_loss_limit(&self) -> Option<Decimal> {
        lowest_daily_loss_level(&self.guards)
    }
}

/// The lowest daily-loss level in `guards` (the daily-loss ratio metric divides by it).
pub fn lowest_daily_loss_level(guards: &Guards) -> Option<Decimal> {
    let levels = guards.levels(tradingbot_crds::guards::GuardKind::DailyLoss);
    [levels.reduce_only_at, levels.halt_at].into_iter().flatten().min()
}

/// The canary profile's safety values may only be tightened.
fn check_locks(locked: &BotConfig, config: &BotConfig, layer: &str) -> Result<(), ConfigError> {
    if locked.profile != Profile::Canary {
        return Ok(());
    }
    let refuse = |field: &str, rule: &str| {
        Err(ConfigError::new(
            field,
            format!("{rule}: the canary profile locks this safety value and {layer} may not loosen it"),
        ))
    };
    if !config.reduce_only {
        return refuse("reduce_only", "must stay on");
    }
    if config.strategy.target_leverage > Decimal::ONE || config.risk.max_leverage > Decimal::ONE {
        return refuse("leverage", "must be at most 1");
    }
    if config.execution.tif != locked.execution.tif {
        return refuse("tif", "must stay IOC");
    }
    if config.strategy.max_position_notional > locked.strategy.max_position_notional {
        return refuse("max_position_notional", "must be at most 500");
    }
    if config
        .daily_loss_limit()
        .is_none_or(|l| Some(l) > locked.daily_loss_limit())
    {
        return refuse("guards.dailyLoss", "must be set and at most 10");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn unpassed_flags_never_override_the_profile() {
        let config = BotConfig::resolve(Some(Profile::Dev), &Default::default(), &Default::default()).unwrap();
        assert!(config.dry_run, "dev's dry run survives when --dry-run is not passed");
        let flags = ConfigOverrides {
            interval_seconds: Some(dec!(2)),
            ..Default::default()
        };
        let config = BotConfig::resolve(Some(Profile::Dev), &Default::default(), &flags).unwrap();
        assert_eq!(config.interval, Duration::from_secs(2), "--interval works");
        assert!(config.dry_run);
    }

    #[test]
    fn canary_locks_cannot_be_loosened_from_flags_or_file() {
        for flags in [
            ConfigOverrides {
                target_leverage: Some(dec!(3)),
                ..Default::default()
            },
            ConfigOverrides {
                reduce_only: Some(false),
                ..Default::default()
            },
            ConfigOverrides {
                tif: Some(TimeInForce::Gtc),
                ..Default::default()
            },
        ] {
            let err = BotConfig::resolve(Some(Profile::Canary), &Default::default(), &flags).unwrap_err();
            assert!(err.rule.contains("canary profile locks"), "{err}");
            assert!(err.rule.contains("command line"), "{err}");
        }
        let file = ConfigOverrides {
            max_position_notional: Some(dec!(5000)),
            ..Default::default()
        };
        let err = BotConfig::resolve(Some(Profile::Canary), &file, &Default::default()).unwrap_err();
        assert_eq!(err.field, "max_position_notional");
        // Tightening is fine.
        let tighter = ConfigOverrides {
            max_position_notional: Some(dec!(100)),
            ..Default::default()
        };
        assert!(BotConfig::resolve(Some(Profile::Canary), &tighter, &Default::default()).is_ok());
    }

    #[test]
    fn live_guard_updates_cannot_loosen_the_canary_daily_loss() {
        let canary = BotConfig::resolve(Some(Profile::Canary), &Default::default(), &Default::default()).unwrap();
        let spec: Guards =
            serde_json::from_str(r#"{"dailyLoss":{"reduceOnlyAt":"500"},"drawdownPercent":{"haltAt":"5"}}"#).unwrap();
        let live = canary.live_guards(&spec);
        assert_eq!(lowest_daily_loss_level(&live), Some(dec!(10)));
        assert!(live.drawdown_percent.is_some(), "other guards still apply");
        let tighter: Guards = serde_json::from_str(r#"{"dailyLoss":{"reduceOnlyAt":"5"}}"#).unwrap();
        assert_eq!(lowest_daily_loss_level(&canary.live_guards(&tighter)), Some(dec!(5)));
        let prod = BotConfig::resolve(Some(Profile::Prod), &Default::default(), &Default::default()).unwrap();
        assert_eq!(lowest_daily_loss_level(&prod.live_guards(&spec)), Some(dec!(500)));
    }

    #[test]
    fn the_canary_config_the_operator_renders_is_accepted() {
        let mut spec = tradingbot_crds::TradingBotSpec::for_profile(Profile::Prod);
        spec.guards = serde_json::from_str(r#"{"dailyLoss":{"reduceOnlyAt":"500","haltAt":"900"}}"#).unwrap();
        for rendered in [
            tradingbot_crds::managed_config::ManagedBotConfig::for_canary(&spec),
            tradingbot_crds::managed_config::ManagedBotConfig::for_prod(&spec),
        ] {
            let file: ConfigOverrides = serde_saphyr::from_str(&rendered.to_yaml()).unwrap();
            BotConfig::resolve(None, &file, &Default::default())
                .unwrap_or_else(|e| panic!("{:?}: {e}", rendered.profile));
        }
    }

    #[test]
    fn inconsistent_values_name_the_field() {
        let flags = ConfigOverrides {
            short_window: Some(30),
            ..Default::default()
        };
        let err = BotConfig::resolve(Some(Profile::Demo), &Default::default(), &flags).unwrap_err();
        assert_eq!(err.field, "strategy.short_window");
    }

    #[test]
    fn windows_wrap_around_midnight() {
        let w = UtcWindow::parse("22:00-02:00").unwrap();
        assert!(w.contains(23 * 60) && w.contains(60) && !w.contains(12 * 60));
        assert!(UtcWindow::parse("25:00-01:00").is_err());
    }
}

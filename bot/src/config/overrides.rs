//! One layer of adjustments over a profile. The same shape serves the config file (YAML or
//! TOML, flat keys, unknown keys refused) and the command line (only flags the user passed are
//! set, so an unpassed flag can never override the profile).

use super::{BotConfig, BrokerKind, ConfigError, EntryFilters, OrderStyle, PaperConfig, SymbolSettings, UtcWindow};
use crate::domain::{Symbol, TimeInForce};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tradingbot_crds::Profile;
use tradingbot_crds::spec::Guards;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOverrides {
    pub profile: Option<Profile>,
    pub symbols: Option<Vec<Symbol>>,
    pub interval_seconds: Option<Decimal>,
    pub account_interval_seconds: Option<Decimal>,
    pub broker: Option<BrokerKind>,
    pub dry_run: Option<bool>,
    pub reduce_only: Option<bool>,
    pub derivatives: Option<bool>,

    pub short_window: Option<usize>,
    pub long_window: Option<usize>,
    pub epsilon_bps: Option<Decimal>,
    pub confirmation_bars: Option<usize>,
    pub trailing_stop_percent: Option<Decimal>,
    pub position_fraction: Option<Decimal>,
    pub max_position_notional: Option<Decimal>,
    pub target_leverage: Option<Decimal>,
    pub enable_shorts: Option<bool>,
    /// Entry filters of every symbol without its own (`{}`: none).
    pub entry_filters: Option<EntryFilters>,
    /// Per-symbol windows and filters; what a symbol's entry gives replaces the profile's
    /// value (the filters as a whole), the rest stays.
    pub per_symbol: Option<BTreeMap<Symbol, SymbolSettings>>,

    pub kill_switch: Option<bool>,
    pub max_leverage: Option<Decimal>,
    pub day_leverage: Option<BTreeMap<Symbol, Decimal>>,
    pub night_leverage: Option<BTreeMap<Symbol, Decimal>>,
    /// `HH:MM-HH:MM` in UTC.
    pub day_window: Option<String>,
    pub min_liquidation_buffer_percent: Option<Decimal>,
    pub max_exposure_percent: Option<Decimal>,
    pub max_symbol_exposure_percent: Option<Decimal>,
    pub max_notional_per_symbol: Option<BTreeMap<Symbol, Decimal>>,
    pub slippage_guard_bps: Option<Decimal>,
    pub max_staleness_seconds: Option<u64>,

    pub tif: Option<TimeInForce>,
    pub enable_preview: Option<bool>,
    pub order_style: Option<OrderStyle>,
    pub limit_offset_bps: Option<Decimal>,

    /// Guard levels, in the shape of the TradingBot's `spec.guards`; each guard given
    /// replaces the profile's.
    pub guards: Option<Guards>,
    pub paper: Option<PaperConfig>,
}

impl ConfigOverrides {
    /// Read a YAML (or, by extension, TOML) file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let field = format!("--config {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&field, format!("cannot read: {e}")))?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.message().to_string())
        } else if text.trim().is_empty() {
            Ok(Self::default())
        } else {
            serde_saphyr::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| ConfigError::new(field, format!("invalid configuration: {e}")))
    }

    /// Apply this layer to `config`.
    pub fn apply(&self, config: &mut BotConfig, source: &str) -> Result<(), ConfigError> {
        macro_rules! set {
            ($($field:ident => $($target:ident).+;)*) => {$(
                if let Some(value) = &self.$field {
                    config.$($target).+ = value.clone().into();
                }
            )*};
        }
        set! {
            symbols => symbols;
            broker => broker;
            dry_run => dry_run;
            reduce_only => reduce_only;
            derivatives => derivatives;
            short_window => strategy.short_window;
            long_window => strategy.long_window;
            epsilon_bps => strategy.epsilon_bps;
            confirmation_bars => strategy.confirmation_bars;
            trailing_stop_percent => strategy.trailing_stop_percent;
            position_fraction => strategy.position_fraction;
            max_position_notional => strategy.max_position_notional;
            target_leverage => strategy.target_leverage;
            enable_shorts => strategy.enable_shorts;
            entry_filters => strategy.entry_filters;
            kill_switch => risk.kill_switch;
            max_leverage => risk.max_leverage;
            day_leverage => risk.day_leverage;
            night_leverage => risk.night_leverage;
            min_liquidation_buffer_percent => risk.min_liquidation_buffer_percent;
            max_exposure_percent => risk.max_exposure_percent;
            max_symbol_exposure_percent => risk.max_symbol_exposure_percent;
            max_notional_per_symbol => risk.max_notional_per_symbol;
            slippage_guard_bps => risk.slippage_guard_bps;
            max_staleness_seconds => risk.max_staleness_seconds;
            tif => execution.tif;
            enable_preview => execution.enable_preview;
            order_style => execution.order_style;
            limit_offset_bps => execution.limit_offset_bps;
            paper => paper;
        }
        if let Some(seconds) = self.interval_seconds {
            config.interval = decimal_seconds(seconds).ok_or_else(|| {
                ConfigError::new(format!("{source} interval"), "must be a positive number of seconds")
            })?;
        }
        if let Some(seconds) = self.account_interval_seconds {
            config.account_interval = decimal_seconds(seconds).ok_or_else(|| {
                ConfigError::new(
                    format!("{source} account_interval"),
                    "must be a positive number of seconds",
                )
            })?;
        }
        if let Some(window) = &self.day_window {
            config.risk.day_window =
                UtcWindow::parse(window).map_err(|e| ConfigError::new(format!("{source} day_window"), e))?;
        }
        if let Some(guards) = &self.guards {
            merge_guards(&mut config.guards, guards);
        }
        for (symbol, given) in self.per_symbol.iter().flatten() {
            let settings = config.strategy.per_symbol.entry(symbol.clone()).or_default();
            settings.short_window = given.short_window.or(settings.short_window);
            settings.long_window = given.long_window.or(settings.long_window);
            if given.filters.is_some() {
                settings.filters = given.filters.clone();
            }
        }
        for (field, value) in [
            ("position_fraction", self.position_fraction),
            ("max_position_notional", self.max_position_notional),
            ("epsilon_bps", self.epsilon_bps),
            ("trailing_stop_percent", self.trailing_stop_percent),
            ("slippage_guard_bps", self.slippage_guard_bps),
        ] {
            if value.is_some_and(|v| v < Decimal::ZERO) {
                return Err(ConfigError::new(format!("{source} {field}"), "must not be negative"));
            }
        }
        Ok(())
    }
}

/// Each guard present in `layer` replaces the base's; absent ones keep the base's.
pub fn merge_guards(base: &mut Guards, layer: &Guards) {
    macro_rules! take {
        ($($field:ident),*) => {$(
            if layer.$field.is_some() {
                base.$field = layer.$field.clone();
            }
        )*};
    }
    take!(
        daily_loss,
        drawdown_percent,
        market_data_staleness_seconds,
        volatility,
        concentration,
        error_rate,
        max_leverage,
        max_exposure_percent,
        healthy_cycles_before_resume
    );
    if !layer.max_notional_per_symbol.is_empty() {
        base.max_notional_per_symbol = layer.max_notional_per_symbol.clone();
    }
    base.resume = layer.resume;
}

fn decimal_seconds(seconds: Decimal) -> Option<Duration> {
    let millis = (seconds * Decimal::from(1000)).trunc();
    let millis = u64::try_from(millis).ok()?;
    (millis > 0).then(|| Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;
    use std::io::Write;

    fn file(ext: &str, text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn yaml_and_toml_files_override_the_profile() {
        let yaml = file(
            ".yaml",
            "profile: demo\nsymbols: [ETH-USD]\ninterval_seconds: \"1.5\"\nguards:\n  dailyLoss:\n    haltAt: \"75\"\n",
        );
        let o = ConfigOverrides::load(yaml.path()).unwrap();
        let c = BotConfig::resolve(None, &o, &Default::default()).unwrap();
        assert_eq!(c.profile, Profile::Demo);
        assert_eq!(c.interval, Duration::from_millis(1500));
        assert_eq!(c.daily_loss_limit(), Some(dec!(75)));
        let toml = file(".toml", "short_window = 3\nlong_window = 9\n");
        let o = ConfigOverrides::load(toml.path()).unwrap();
        assert_eq!((o.short_window, o.long_window), (Some(3), Some(9)));
    }

    #[test]
    fn unknown_or_malformed_keys_are_refused_with_the_file_named() {
        let typo = file(".yaml", "dryrun: true\n");
        let err = ConfigOverrides::load(typo.path()).unwrap_err();
        assert!(
            err.field.starts_with("--config") && err.rule.contains("dryrun"),
            "{err}"
        );
        let bad = file(".yaml", "symbols: [btc]\n");
        assert!(ConfigOverrides::load(bad.path()).unwrap_err().rule.contains("BTC-USD"));
        let missing = ConfigOverrides::load(Path::new("/nonexistent/x.yaml")).unwrap_err();
        assert!(missing.rule.contains("cannot read"));
    }

    #[test]
    fn per_symbol_windows_and_filters_from_a_file() {
        let yaml = file(
            ".yaml",
            "profile: spot\nentry_filters: {}\nper_symbol:\n  BTC-USD:\n    short_window: 3\n    long_window: 9\n    filters: {}\n  ETH-USD:\n    filters:\n      momentum: {window: 7, oversold: \"30\", overbought: \"75\"}\n",
        );
        let o = ConfigOverrides::load(yaml.path()).unwrap();
        let c = BotConfig::resolve(None, &o, &Default::default()).unwrap();
        let btc = c.strategy.for_symbol(&"BTC-USD".parse().unwrap());
        assert_eq!((btc.short_window, btc.long_window, btc.filters), (3, 9, None));
        let eth = c.strategy.for_symbol(&"ETH-USD".parse().unwrap());
        assert_eq!(eth.long_window, 40, "the profile's window stays");
        assert_eq!(eth.filters.unwrap().momentum.as_ref().unwrap().window, 7);
        assert!(
            eth.filters.unwrap().volume.is_none(),
            "the file's filters replace the profile's"
        );
        let sol = c.strategy.for_symbol(&"SOL-USD".parse().unwrap());
        assert_eq!(sol.short_window, 8, "other symbols keep the profile's");
        let bad = file(".yaml", "per_symbol:\n  BTC-USD:\n    filters:\n      rsi: {}\n");
        assert!(ConfigOverrides::load(bad.path()).unwrap_err().rule.contains("rsi"));
    }

    #[test]
    fn negative_amounts_are_refused() {
        let o = ConfigOverrides {
            position_fraction: Some(dec!(-0.1)),
            ..Default::default()
        };
        let err = BotConfig::resolve(Some(Profile::Dev), &o, &Default::default()).unwrap_err();
        assert!(err.field.contains("position_fraction"));
        let o = ConfigOverrides {
            interval_seconds: Some(dec!(0)),
            ..Default::default()
        };
        assert!(BotConfig::resolve(Some(Profile::Dev), &Default::default(), &o).is_err());
    }
}

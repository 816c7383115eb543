//! The strategy's configuration: MA-crossover windows, trailing stop, sizing, and the entry
//! filters on hourly candles, each overridable per symbol (the reference's spot profile gives
//! every symbol its own MA windows and filters).
//!
//! In a config file:
//!
//! ```yaml
//! entry_filters:            # for every symbol without its own (`{}`: no filters)
//!   volume: {window: 10, multiplier: "1.1"}
//! per_symbol:
//!   BTC-USD:
//!     short_window: 5
//!     long_window: 40
//!     filters:
//!       volume: {window: 10, multiplier: "1.2"}
//!       momentum: {window: 14, oversold: "40", overbought: "70"}
//! ```

use super::ConfigError;
use crate::domain::Symbol;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrategyConfig {
    pub short_window: usize,
    pub long_window: usize,
    /// Crossover dead band, in basis points of the mark.
    pub epsilon_bps: Decimal,
    /// Bars the crossover must persist before it signals.
    pub confirmation_bars: usize,
    pub trailing_stop_percent: Decimal,
    /// Fraction of equity per entry (before leverage).
    pub position_fraction: Decimal,
    /// Largest entry notional, in quote currency.
    pub max_position_notional: Decimal,
    /// Leverage applied to entries on perpetuals.
    pub target_leverage: Decimal,
    pub enable_shorts: bool,
    /// Entry filters of every symbol without its own (None: no filters).
    pub entry_filters: Option<EntryFilters>,
    /// Windows and filters of particular symbols.
    pub per_symbol: BTreeMap<Symbol, SymbolSettings>,
}

/// One symbol's own settings; what it leaves out comes from the profile-wide values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolSettings {
    #[serde(default)]
    pub short_window: Option<usize>,
    #[serde(default)]
    pub long_window: Option<usize>,
    /// This symbol's entry filters (`{}`: none at all).
    #[serde(default)]
    pub filters: Option<EntryFilters>,
}

/// Entry filters on hourly candles; each one left out is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryFilters {
    /// The last volume must be at least the average of the `window` before it × `multiplier`.
    #[serde(default)]
    pub volume: Option<VolumeFilter>,
    /// RSI(`window`): a long entry only when RSI ≤ `oversold`, a short one only when ≥ `overbought`.
    #[serde(default)]
    pub momentum: Option<MomentumFilter>,
    /// The average close of the last `bars` bars must be above (longs) the `bars` before.
    #[serde(default)]
    pub trend: Option<TrendFilter>,
    /// ATR(`period`) as a percentage of price within [`min_percent`, `max_percent`].
    #[serde(default)]
    pub volatility: Option<AtrFilter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeFilter {
    pub window: usize,
    pub multiplier: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomentumFilter {
    pub window: usize,
    pub oversold: Decimal,
    pub overbought: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrendFilter {
    pub bars: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtrFilter {
    pub period: usize,
    pub min_percent: Decimal,
    pub max_percent: Decimal,
}

/// The settings one symbol trades with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedStrategy<'a> {
    pub short_window: usize,
    pub long_window: usize,
    pub filters: Option<&'a EntryFilters>,
}

impl EntryFilters {
    /// Hourly candles the filters need (0 when none is on).
    pub fn candles_needed(&self) -> usize {
        [
            self.volume.as_ref().map(|v| v.window + 1),
            self.momentum.as_ref().map(|m| m.window + 1),
            self.trend.as_ref().map(|t| t.bars * 2),
            self.volatility.as_ref().map(|a| a.period + 1),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.candles_needed() == 0
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let positive = |name: &str, value: usize| {
            if value == 0 {
                Err(ConfigError::new(format!("{field}.{name}"), "must be at least 1"))
            } else {
                Ok(())
            }
        };
        if let Some(v) = &self.volume {
            positive("volume.window", v.window)?;
            if v.multiplier < Decimal::ZERO {
                return Err(ConfigError::new(
                    format!("{field}.volume.multiplier"),
                    "must not be negative",
                ));
            }
        }
        if let Some(m) = &self.momentum {
            positive("momentum.window", m.window)?;
            let in_range = |d: Decimal| (Decimal::ZERO..=Decimal::ONE_HUNDRED).contains(&d);
            if !in_range(m.oversold) || !in_range(m.overbought) || m.oversold >= m.overbought {
                return Err(ConfigError::new(
                    format!("{field}.momentum"),
                    "oversold and overbought must lie in 0..100 with oversold below overbought",
                ));
            }
        }
        if let Some(t) = &self.trend {
            positive("trend.bars", t.bars)?;
        }
        if let Some(a) = &self.volatility {
            positive("volatility.period", a.period)?;
            if a.min_percent < Decimal::ZERO || a.min_percent > a.max_percent {
                return Err(ConfigError::new(
                    format!("{field}.volatility"),
                    "need 0 <= min_percent <= max_percent",
                ));
            }
        }
        Ok(())
    }
}

impl StrategyConfig {
    /// The windows and filters `symbol` trades with.
    pub fn for_symbol(&self, symbol: &Symbol) -> ResolvedStrategy<'_> {
        let own = self.per_symbol.get(symbol);
        ResolvedStrategy {
            short_window: own.and_then(|o| o.short_window).unwrap_or(self.short_window),
            long_window: own.and_then(|o| o.long_window).unwrap_or(self.long_window),
            filters: own
                .and_then(|o| o.filters.as_ref())
                .or(self.entry_filters.as_ref())
                .filter(|f| !f.is_empty()),
        }
    }

    /// Windows and filters that cannot work, with the field named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let windows = |field: &str, short: usize, long: usize| {
            if short == 0 || short >= long {
                Err(ConfigError::new(
                    field,
                    format!("must be at least 1 and below long_window ({long})"),
                ))
            } else {
                Ok(())
            }
        };
        windows("strategy.short_window", self.short_window, self.long_window)?;
        if let Some(filters) = &self.entry_filters {
            filters.validate("entry_filters")?;
        }
        for (symbol, own) in &self.per_symbol {
            let resolved = self.for_symbol(symbol);
            windows(
                &format!("per_symbol.{symbol}.short_window"),
                resolved.short_window,
                resolved.long_window,
            )?;
            if let Some(filters) = &own.filters {
                filters.validate(&format!("per_symbol.{symbol}.filters"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn base() -> StrategyConfig {
        crate::config::profiles::builtin(tradingbot_crds::Profile::Spot).strategy
    }

    #[test]
    fn symbols_take_their_own_windows_and_filters_else_the_profiles() {
        let mut c = base();
        let btc: Symbol = "BTC-USD".parse().unwrap();
        let other: Symbol = "MATIC-USD".parse().unwrap();
        let r = c.for_symbol(&btc);
        assert_eq!((r.short_window, r.long_window), (5, 40));
        assert_eq!(r.filters.unwrap().momentum.as_ref().unwrap().oversold, dec!(40));
        let r = c.for_symbol(&other);
        assert_eq!((r.short_window, r.long_window), (c.short_window, c.long_window));
        assert_eq!(r.filters, c.entry_filters.as_ref());
        c.per_symbol.get_mut(&btc).unwrap().filters = Some(EntryFilters::default());
        assert_eq!(c.for_symbol(&btc).filters, None, "`filters: {{}}` turns them off");
    }

    #[test]
    fn impossible_settings_name_the_field() {
        let mut c = base();
        c.per_symbol.get_mut(&"ETH-USD".parse().unwrap()).unwrap().short_window = Some(50);
        assert_eq!(c.validate().unwrap_err().field, "per_symbol.ETH-USD.short_window");
        let mut c = base();
        c.per_symbol.get_mut(&"BTC-USD".parse().unwrap()).unwrap().filters = Some(EntryFilters {
            momentum: Some(MomentumFilter {
                window: 14,
                oversold: dec!(80),
                overbought: dec!(70),
            }),
            ..Default::default()
        });
        assert!(c.validate().unwrap_err().field.contains("momentum"));
        assert!(base().validate().is_ok());
    }
}

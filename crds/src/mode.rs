//! The trading mode: the one state every order passes through (bot) and the one value the
//! operator reports (status). Ordered from least to most restrictive.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum TradingMode {
    /// Orders allowed within the risk limits.
    #[default]
    Normal,
    /// Only orders that shrink a position.
    ReduceOnly,
    /// No orders; open orders are cancelled.
    Halted,
}

impl TradingMode {
    pub const ALL: [TradingMode; 3] = [TradingMode::Normal, TradingMode::ReduceOnly, TradingMode::Halted];

    pub fn as_str(self) -> &'static str {
        match self {
            TradingMode::Normal => "Normal",
            TradingMode::ReduceOnly => "ReduceOnly",
            TradingMode::Halted => "Halted",
        }
    }

    /// The value of the `perps_bot_trading_mode` gauge: 0 Normal, 1 ReduceOnly, 2 Halted.
    pub fn gauge_value(self) -> i64 {
        self as i64
    }

    pub fn from_gauge_value(value: f64) -> Option<Self> {
        TradingMode::ALL.into_iter().find(|m| m.gauge_value() as f64 == value)
    }

    /// The intent expressed by the two spec switches.
    pub fn from_switches(reduce_only: bool, halted: bool) -> Self {
        match (reduce_only, halted) {
            (_, true) => TradingMode::Halted,
            (true, false) => TradingMode::ReduceOnly,
            (false, false) => TradingMode::Normal,
        }
    }
}

impl std::fmt::Display for TradingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TradingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TradingMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s) || m.as_str().replace("Only", "-only").eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown trading mode {s:?}: expected Normal, ReduceOnly or Halted"))
    }
}

/// Where a restriction of a TradingBot's effective mode comes from (`status.modeSources`): what
/// has to change for the bot to trade normally again.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema)]
pub enum ModeSource {
    /// `spec.halted: true`.
    SpecHalted,
    /// `spec.reduceOnly: true`.
    SpecReduceOnly,
    /// A latched guard trip (`status.trips`): acknowledge it, or wait for automatic resume.
    GuardTrip,
    /// The TradingBot is being deleted.
    Deleting,
    /// An emergency brake (annotation `trading.gpttrader.io/brake`, set by `kubectl tradingbot
    /// halt|reduce-only`): Git never carries it, so no GitOps sync undoes it; removed by
    /// `kubectl tradingbot resume`.
    Brake,
    /// The bot's TradingAccount (`spec.account`) restricts every bot on it: its switches, its
    /// latched limit trips, its deletion, or the account being missing or refusing the bot.
    Account,
}

impl ModeSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ModeSource::SpecHalted => "SpecHalted",
            ModeSource::SpecReduceOnly => "SpecReduceOnly",
            ModeSource::GuardTrip => "GuardTrip",
            ModeSource::Deleting => "Deleting",
            ModeSource::Brake => "Brake",
            ModeSource::Account => "Account",
        }
    }
}

impl std::fmt::Display for ModeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input to the effective mode, with where it came from (for `modeReason` and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeInput {
    pub mode: TradingMode,
    pub source: String,
}

impl ModeInput {
    pub fn new(mode: TradingMode, source: impl Into<String>) -> Self {
        Self {
            mode,
            source: source.into(),
        }
    }
}

/// The most restrictive of the inputs, and a reason naming every input that imposes it.
/// No input can loosen another: that is the whole point.
pub fn most_restrictive<'a>(inputs: impl IntoIterator<Item = &'a ModeInput>) -> (TradingMode, String) {
    let inputs: Vec<&ModeInput> = inputs.into_iter().collect();
    let mode = inputs.iter().map(|i| i.mode).max().unwrap_or_default();
    if mode == TradingMode::Normal {
        return (mode, "no restriction in force".to_string());
    }
    let sources: Vec<&str> = inputs
        .iter()
        .filter(|i| i.mode == mode)
        .map(|i| i.source.as_str())
        .collect();
    (mode, sources.join("; "))
}

/// The most restrictive of `(mode, source, reason)` inputs: the mode, every source imposing it
/// and their reasons joined (the typed counterpart of [`most_restrictive`]).
pub fn most_restrictive_of(inputs: &[(TradingMode, ModeSource, String)]) -> (TradingMode, Vec<ModeSource>, String) {
    let mode = inputs.iter().map(|i| i.0).max().unwrap_or_default();
    if mode == TradingMode::Normal {
        return (mode, Vec::new(), "no restriction in force".to_string());
    }
    let winners: Vec<&(TradingMode, ModeSource, String)> = inputs.iter().filter(|i| i.0 == mode).collect();
    let sources = winners.iter().map(|i| i.1).collect();
    let reason = winners.iter().map(|i| i.2.as_str()).collect::<Vec<_>>().join("; ");
    (mode, sources, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halted_beats_reduce_only_beats_normal() {
        let inputs = [
            ModeInput::new(TradingMode::ReduceOnly, "spec.reduceOnly"),
            ModeInput::new(TradingMode::Normal, "no trips"),
            ModeInput::new(TradingMode::Halted, "guard dailyLoss tripped"),
        ];
        assert_eq!(
            most_restrictive(&inputs),
            (TradingMode::Halted, "guard dailyLoss tripped".to_string())
        );
    }

    #[test]
    fn reason_names_every_source_of_the_winning_mode() {
        let inputs = [
            ModeInput::new(TradingMode::ReduceOnly, "spec.reduceOnly"),
            ModeInput::new(TradingMode::ReduceOnly, "guard drawdownPercent tripped"),
        ];
        assert_eq!(
            most_restrictive(&inputs).1,
            "spec.reduceOnly; guard drawdownPercent tripped"
        );
        assert_eq!(most_restrictive(&[]).0, TradingMode::Normal);
    }

    #[test]
    fn switches_and_gauge_values_round_trip() {
        assert_eq!(TradingMode::from_switches(true, true), TradingMode::Halted);
        assert_eq!(TradingMode::from_switches(true, false), TradingMode::ReduceOnly);
        for m in TradingMode::ALL {
            assert_eq!(TradingMode::from_gauge_value(m.gauge_value() as f64), Some(m));
            assert_eq!(m.as_str().parse::<TradingMode>(), Ok(m));
        }
        assert_eq!("reduce-only".parse::<TradingMode>(), Ok(TradingMode::ReduceOnly));
        assert!("paused".parse::<TradingMode>().is_err());
    }
}

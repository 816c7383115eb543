//! The configuration file the operator renders for a bot (mounted at
//! `/etc/perps-bot/config.yaml`): a subset of perps-bot's `--config` keys. The bot refuses
//! unknown keys, and its tests parse this type, so the two cannot drift apart silently.

use crate::spec::Guards;
use crate::{Profile, TradingBotSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedBotConfig {
    pub profile: Profile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivatives: Option<bool>,
    /// The TradingBot's guard levels (the bot also follows later changes live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guards: Option<Guards>,
}

impl ManagedBotConfig {
    /// The prod instance's configuration.
    pub fn for_prod(spec: &TradingBotSpec) -> Self {
        Self {
            profile: spec.profile,
            symbols: (!spec.symbols.is_empty()).then(|| spec.symbols.clone()),
            dry_run: spec.dry_run,
            derivatives: Some(spec.exchange.derivatives),
            guards: Some(spec.guards.clone()),
        }
    }

    /// The canary instance's: the canary profile's locked limits, the bot's symbols and guards,
    /// dry-run unless the rollout gives the canary its own credentials and turns it off. The
    /// canary profile locks its own daily loss limit, so the bot's `dailyLoss` is left out.
    pub fn for_canary(spec: &TradingBotSpec) -> Self {
        let has_credentials = spec.rollout.canary.credentials_secret.is_some();
        Self {
            profile: Profile::Canary,
            symbols: (!spec.symbols.is_empty()).then(|| spec.symbols.clone()),
            dry_run: Some(spec.rollout.canary.dry_run || !has_credentials),
            derivatives: Some(spec.exchange.derivatives),
            guards: Some(Guards {
                daily_loss: None,
                ..spec.guards.clone()
            }),
        }
    }

    /// The same without the guard levels: what needs a restart to change.
    pub fn without_guards(&self) -> Self {
        Self {
            guards: None,
            ..self.clone()
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).expect("a config always serialises")
    }
}

//! The Coinbase Advanced Trade client (a [`Broker`](crate::broker::Broker)).
//!
//! PENDING: the client lands with the Coinbase issue; until then these entry points refuse.

use crate::broker::paper::PaperExchange;
use crate::cli::RunArgs;
use crate::config::BotConfig;

/// Connect for trading: load credentials, apply derivatives gating (mapping -PERP symbols to
/// spot when perps are not allowed) and return the adjusted configuration with the broker.
pub async fn connect_for_trading(
    _args: &RunArgs,
    _config: &BotConfig,
    _client_instance: &str,
) -> anyhow::Result<(BotConfig, PaperExchange)> {
    anyhow::bail!("the Coinbase client is not available in this build")
}

//! The Coinbase Advanced Trade client (a [`Broker`](crate::broker::Broker)).
//!
//! - [`credentials`]: CDP keys from the environment or a mounted Secret folder.
//! - [`jwt`]: the per-request ES256 / EdDSA JWT.
//! - [`rate_limit`]: client-side pacing (30 req/s private, 10 req/s public).
//! - [`rest`]: HTTP with auth, timeouts, retries and error mapping.
//! - [`wire`]: the JSON shapes, parsed leniently and checked.
//! - [`ws`]: the market data WebSocket (book, ticker, sequence gaps, reconnects).
//! - [`broker`]: [`CoinbaseBroker`], the `Broker` implementation.
//! - [`inventory`]: the bot's own spot inventory, rebuilt from the exchange's order history.
//! - [`snapshot`]: the account snapshot JSON.
//!
//! Entry points: [`connect_for_trading`] (from the command line) and [`connect`] (from
//! explicit options, which tests use), and [`account_snapshot`].

pub mod broker;
pub mod credentials;
pub mod edit;
pub mod inventory;
pub mod jwt;
pub mod rate_limit;
pub mod rest;
pub mod snapshot;
pub mod wire;
pub mod ws;

pub use broker::{CoinbaseBroker, Market};
pub use credentials::{CredentialSources, Credentials, CredentialsError, KeyAlgorithm};
pub use inventory::InventoryOptions;
pub use rest::{RestClient, RestOptions};
pub use ws::{FeedOptions, FeedStats, MarketFeed};

use crate::broker::{Broker, BrokerError};
use crate::cli::RunArgs;
use crate::config::BotConfig;
use crate::domain::Symbol;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_API_BASE: &str = "https://api.coinbase.com/api/v3/brokerage";
pub const SANDBOX_API_BASE: &str = "https://api-sandbox.coinbase.com/api/v3/brokerage";
pub const DEFAULT_WS_URL: &str = "wss://advanced-trade-ws.coinbase.com";
/// Portfolio type whose keys may trade perpetuals (Coinbase International).
pub const PERPETUALS_PORTFOLIO: &str = "INTX";

/// Everything [`connect`] needs.
#[derive(Debug)]
pub struct ConnectOptions {
    pub rest: RestOptions,
    /// `None`: no WebSocket; quotes come from REST.
    pub ws_url: Option<String>,
    pub credentials: Option<Credentials>,
    /// Reconnect the market data WebSocket after this much silence.
    pub ws_silence_timeout: Duration,
    /// The bot's own inventory: whose orders count, where the ledger is kept.
    pub inventory: InventoryOptions,
}

impl ConnectOptions {
    pub fn new(api_base_url: impl Into<String>, ws_url: Option<String>, client_instance: impl Into<String>) -> Self {
        Self {
            rest: RestOptions::new(api_base_url, client_instance),
            ws_url,
            credentials: None,
            ws_silence_timeout: Duration::from_secs(15),
            inventory: InventoryOptions::new(tradingbot_crds::names::LOCAL_CLIENT_ORDER_PREFIX),
        }
    }

    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// From the command line and the environment: base URLs (a REST override without a
    /// WebSocket override disables the WebSocket rather than mixing two exchanges), the
    /// sandbox switch and credentials.
    pub fn from_args(args: &RunArgs, client_instance: &str) -> anyhow::Result<Self> {
        let sources = CredentialSources::from_env(args.credentials_dir.clone());
        let credentials = sources.load(|name| std::env::var(name).ok())?;
        let api_base_url = args.api_base_url.clone().unwrap_or_else(|| {
            if sources.sandbox {
                SANDBOX_API_BASE
            } else {
                DEFAULT_API_BASE
            }
            .to_string()
        });
        let ws_url = match (&args.ws_url, &args.api_base_url) {
            (Some(ws), _) => Some(ws.clone()),
            (None, Some(_)) => {
                tracing::info!("COINBASE_API_BASE is set without COINBASE_WS_URL: quotes come from REST only");
                None
            }
            (None, None) if sources.sandbox => None, // the sandbox has no WebSocket
            (None, None) => Some(DEFAULT_WS_URL.to_string()),
        };
        let mut options = Self::new(api_base_url, ws_url, client_instance);
        options.credentials = credentials;
        options.inventory.prefix = args.client_order_prefix();
        Ok(options)
    }
}

/// Where the bot's inventory ledger is kept: next to the guard state (or the metrics file).
pub fn inventory_file(args: &RunArgs, config: &BotConfig) -> std::path::PathBuf {
    args.state_file
        .clone()
        .or_else(|| args.metrics_file.clone())
        .unwrap_or_else(|| crate::runner::default_metrics_file(config))
        .with_file_name("inventory.json")
}

/// Connect for trading: load credentials, check the key, apply derivatives gating (mapping
/// -PERP symbols to spot when perps are not allowed) and return the adjusted configuration
/// with the broker.
pub async fn connect_for_trading(
    args: &RunArgs,
    config: &BotConfig,
    client_instance: &str,
) -> anyhow::Result<(BotConfig, CoinbaseBroker)> {
    let mut options = ConnectOptions::from_args(args, client_instance)?;
    options.inventory.file = Some(inventory_file(args, config));
    options.inventory.full_rebuild_every = config.account_interval;
    connect(options, config).await
}

/// [`connect_for_trading`] from explicit options.
///
/// Without credentials only a dry run may start: it trades nothing, reads public market
/// data, and its account is synthetic (`config.paper.starting_cash`, no positions).
///
/// Perpetuals are traded only when all hold: `config.derivatives` (COINBASE_ENABLE_DERIVATIVES),
/// credentials, a key whose portfolio is INTX, and the `BASE-PERP-INTX` product exists.
/// Otherwise each `BASE-PERP` symbol becomes `BASE-USD` spot with a warning (as the reference
/// bot does), and per-symbol risk limits follow it.
pub async fn connect(options: ConnectOptions, config: &BotConfig) -> anyhow::Result<(BotConfig, CoinbaseBroker)> {
    let credentials = options.credentials.map(Arc::new);
    if credentials.is_none() && !config.dry_run {
        return Err(CredentialsError::Missing(
            "live trading needs COINBASE_CDP_API_KEY and COINBASE_CDP_PRIVATE_KEY \
             (or --credentials-dir holding cdp_api_key.json); --dry-run runs on public market data without them"
                .into(),
        )
        .into());
    }
    let rest = Arc::new(RestClient::new(options.rest, credentials.clone())?);

    let permissions = match &credentials {
        None => None,
        Some(creds) => {
            let bytes = rest.get("/key_permissions", &[]).await.map_err(|error| {
                let unauthorized = matches!(error, BrokerError::Unauthorized(_) | BrokerError::Forbidden(_));
                let context = if unauthorized {
                    format!(
                        "Coinbase rejected the credentials of key {} ({})",
                        creds.key_name(),
                        creds.source()
                    )
                } else {
                    format!("could not verify API key {} (GET /key_permissions)", creds.key_name())
                };
                anyhow::Error::new(error).context(context)
            })?;
            let permissions: wire::KeyPermissions = wire::decode("key_permissions", &bytes)?;
            if permissions.can_transfer.is_true() {
                tracing::warn!(key = %creds.key_name(), "the API key can transfer funds (can_transfer: true); a trading key should not");
            }
            if !config.dry_run && !permissions.can_trade.is_true() {
                return Err(anyhow::Error::new(BrokerError::Forbidden(format!(
                    "API key {} cannot trade (can_trade is not true) and this is not a dry run",
                    creds.key_name()
                ))));
            }
            tracing::info!(key = %creds.key_name(), algorithm = creds.algorithm().jwt_alg(), source = %creds.source(), portfolio_type = permissions.portfolio_type.as_deref().unwrap_or("?"), "Coinbase API key verified");
            Some(permissions)
        }
    };

    let intx_portfolio = permissions
        .as_ref()
        .filter(|p| p.portfolio_type.as_deref() == Some(PERPETUALS_PORTFOLIO))
        .and_then(|p| p.portfolio_uuid.clone());
    let mut markets: Vec<Market> = Vec::new();
    let mut renamed: Vec<(Symbol, Symbol)> = Vec::new();
    for symbol in &config.symbols {
        let market = if symbol.is_perpetual() {
            match perpetual_product(&rest, config, credentials.is_some(), intx_portfolio.is_some(), symbol).await? {
                Ok(product_id) => Market {
                    symbol: symbol.clone(),
                    product_id,
                },
                Err(why) => {
                    let spot: Symbol = format!("{}-USD", symbol.base())
                        .parse()
                        .map_err(|e: String| anyhow::anyhow!("{symbol}: {e}"))?;
                    tracing::warn!(symbol = %symbol, mapped_to = %spot, reason = %why, "perpetuals are not available: trading the spot pair instead");
                    renamed.push((symbol.clone(), spot.clone()));
                    Market {
                        product_id: spot.to_string(),
                        symbol: spot,
                    }
                }
            }
        } else {
            Market {
                symbol: symbol.clone(),
                product_id: symbol.to_string(),
            }
        };
        if !markets.iter().any(|m| m.symbol == market.symbol) {
            markets.push(market);
        }
    }

    // Perpetuals are margined in USD.
    let quotes: Vec<&str> = markets
        .iter()
        .map(|m| {
            if m.symbol.is_perpetual() {
                "USD"
            } else {
                m.symbol.quote()
            }
        })
        .collect();
    if let Some(first) = quotes.first()
        && quotes.iter().any(|q| q != first)
    {
        return Err(crate::config::ConfigError::new(
            "symbols",
            format!(
                "all symbols must share one quote currency (cash is counted in it; perpetuals count as USD), got {}",
                quotes.join(", ")
            ),
        )
        .into());
    }

    let mut adjusted = config.clone();
    adjusted.symbols = markets.iter().map(|m| m.symbol.clone()).collect();
    adjusted.derivatives = markets.iter().any(|m| m.symbol.is_perpetual());
    if !adjusted.derivatives && adjusted.strategy.enable_shorts {
        // Spot cannot be shorted: without perpetuals the bot trades long-only.
        tracing::warn!(
            event = "long_only",
            "no perpetuals are traded: shorts are off (spot can only sell what the bot bought)"
        );
        adjusted.strategy.enable_shorts = false;
    }
    for (from, to) in &renamed {
        for map in [
            &mut adjusted.risk.max_notional_per_symbol,
            &mut adjusted.risk.day_leverage,
            &mut adjusted.risk.night_leverage,
        ] {
            move_limit(map, from, to);
        }
    }

    let feed = options.ws_url.as_ref().map(|url| {
        let mut feed_options = FeedOptions::new(
            url.clone(),
            markets.iter().map(|m| m.product_id.clone()).collect(),
            rest.signer().cloned(),
        );
        feed_options.silence_timeout = options.ws_silence_timeout;
        MarketFeed::start(feed_options)
    });
    let synthetic_cash = credentials.is_none().then_some(config.paper.starting_cash);
    let broker = CoinbaseBroker::new(rest, feed, &markets, synthetic_cash, intx_portfolio, config.dry_run)
        .with_inventory(options.inventory);
    if let Some(cash) = synthetic_cash {
        tracing::warn!(event = "synthetic_account", cash = %cash, currency = broker.quote_currency(), "dry run without Coinbase credentials: public market data only, a synthetic account with the paper starting cash and no positions; no orders can be sent");
    }

    match broker.products(&adjusted.symbols).await {
        Ok(_) => {}
        Err(BrokerError::NotFound(why)) => {
            return Err(crate::config::ConfigError::new("symbols", format!("{why} on the exchange")).into());
        }
        Err(error @ (BrokerError::Unauthorized(_) | BrokerError::Forbidden(_))) => {
            return Err(anyhow::Error::new(error).context("reading product rules with the Coinbase credentials"));
        }
        Err(error) => tracing::warn!(%error, "product rules not readable yet; the engine keeps retrying"),
    }
    let names: Vec<&str> = adjusted.symbols.iter().map(Symbol::as_str).collect();
    tracing::info!(symbols = %names.join(","), derivatives = adjusted.derivatives, websocket = options.ws_url.is_some(), "connected to Coinbase");
    Ok((adjusted, broker))
}

/// `Ok(Ok(product id))` when `symbol` (a -PERP) may be traded as a perpetual, `Ok(Err(why))`
/// when it must fall back to spot, `Err` when the exchange could not be asked.
async fn perpetual_product(
    rest: &RestClient,
    config: &BotConfig,
    has_credentials: bool,
    intx: bool,
    symbol: &Symbol,
) -> anyhow::Result<Result<String, String>> {
    if !config.derivatives {
        return Ok(Err("derivatives are not enabled (COINBASE_ENABLE_DERIVATIVES=1)".into()));
    }
    if !has_credentials {
        return Ok(Err("derivatives need Coinbase credentials".into()));
    }
    if !intx {
        return Ok(Err(format!(
            "the API key's portfolio is not {PERPETUALS_PORTFOLIO} (perpetuals trade on Coinbase International)"
        )));
    }
    let product_id = format!("{}-PERP-INTX", symbol.base());
    match rest.get(&format!("/products/{product_id}"), &[]).await {
        Ok(bytes) => {
            let product: wire::Product = wire::decode("product", &bytes)?;
            if product.is_perpetual() {
                Ok(Ok(product_id))
            } else {
                Ok(Err(format!("{product_id} is not a perpetual")))
            }
        }
        Err(BrokerError::NotFound(_)) => Ok(Err(format!("the exchange lists no {product_id}"))),
        Err(error) => Err(anyhow::Error::new(error).context(format!("checking {product_id}"))),
    }
}

/// A per-symbol limit set for `from` applies to `to` (keeping the tighter of two).
fn move_limit(map: &mut BTreeMap<Symbol, rust_decimal::Decimal>, from: &Symbol, to: &Symbol) {
    if let Some(limit) = map.remove(from) {
        let tighter = map.get(to).map_or(limit, |existing| (*existing).min(limit));
        map.insert(to.clone(), tighter);
    }
}

/// The account snapshot JSON (`perps-bot account snapshot`).
pub async fn account_snapshot(args: &RunArgs, _config: &BotConfig) -> anyhow::Result<serde_json::Value> {
    let mut options = ConnectOptions::from_args(args, &crate::runner::client_instance(args))?;
    let credentials = options.credentials.take().ok_or_else(|| {
        CredentialsError::Missing(
            "the account snapshot needs them: set COINBASE_CDP_API_KEY and COINBASE_CDP_PRIVATE_KEY or --credentials-dir"
                .into(),
        )
    })?;
    account_snapshot_with(options.rest, credentials).await
}

/// [`account_snapshot`] from explicit options.
pub async fn account_snapshot_with(rest: RestOptions, credentials: Credentials) -> anyhow::Result<serde_json::Value> {
    let key = credentials.key_name().to_string();
    let rest = RestClient::new(rest, Some(Arc::new(credentials)))?;
    snapshot::build(&rest).await.map_err(|error| {
        let context = match error {
            BrokerError::Unauthorized(_) | BrokerError::Forbidden(_) => {
                format!("Coinbase rejected the credentials of key {key}")
            }
            _ => "reading the account snapshot".to_string(),
        };
        anyhow::Error::new(error).context(context)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn limits_follow_a_renamed_symbol_and_stay_tight() {
        let perp: Symbol = "BTC-PERP".parse().unwrap();
        let spot: Symbol = "BTC-USD".parse().unwrap();
        let mut map = BTreeMap::from([(perp.clone(), dec!(100))]);
        move_limit(&mut map, &perp, &spot);
        assert_eq!(map, BTreeMap::from([(spot.clone(), dec!(100))]));
        let mut map = BTreeMap::from([(perp.clone(), dec!(100)), (spot.clone(), dec!(50))]);
        move_limit(&mut map, &perp, &spot);
        assert_eq!(map[&spot], dec!(50));
    }
}

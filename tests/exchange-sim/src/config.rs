//! Simulator configuration and the key specification format (`--keys-file`, `POST /admin/keys`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Everything needed to start a simulator. `SimConfig::default()` binds an ephemeral
/// loopback port, which is what in-process tests want.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Seed of the deterministic price paths and synthetic books.
    pub seed: u64,
    /// Market step interval. `Duration::ZERO` disables automatic ticking
    /// (drive the market with [`crate::Simulator::tick`] or `POST /admin/tick`).
    pub tick: Duration,
    /// Product ids to list; empty means the whole catalogue.
    pub products: Vec<String>,
    /// API keys registered at startup.
    pub keys: Vec<KeySpec>,
    /// When set, `/admin/*` requires `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// Fee tier applied to every key.
    pub fees: FeeRates,
    /// Private REST requests per key per second (0 disables the limit).
    pub private_rate_limit: u32,
    /// Public REST requests per client IP per second (0 disables the limit).
    pub public_rate_limit: u32,
    /// Minutes of price history generated at startup (candles are available at once).
    pub history_minutes: u32,
    /// A WebSocket client must subscribe within this time or is disconnected.
    pub ws_subscribe_timeout: Duration,
    /// Interval of `heartbeats` channel messages.
    pub heartbeat_interval: Duration,
    /// Interval of `ticker_batch` channel messages.
    pub ticker_batch_interval: Duration,
    /// Clock-skew leeway applied to the JWT `nbf` claim and to the token lifetime.
    pub jwt_leeway_secs: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            seed: 42,
            tick: Duration::from_millis(1000),
            products: Vec::new(),
            keys: Vec::new(),
            admin_token: None,
            fees: FeeRates::default(),
            private_rate_limit: 30,
            public_rate_limit: 10,
            history_minutes: 2880,
            ws_subscribe_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            ticker_batch_interval: Duration::from_secs(5),
            jwt_leeway_secs: 5,
        }
    }
}

/// Fee tier reported by `GET /transaction_summary` and charged on fills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeRates {
    pub pricing_tier: String,
    pub taker_fee_rate: Decimal,
    pub maker_fee_rate: Decimal,
}

impl Default for FeeRates {
    fn default() -> Self {
        Self {
            pricing_tier: "Advanced 1".to_string(),
            taker_fee_rate: Decimal::new(6, 3),
            maker_fee_rate: Decimal::new(4, 3),
        }
    }
}

/// Scopes of an API key, as reported by `GET /key_permissions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    #[serde(default = "yes")]
    pub can_view: bool,
    #[serde(default = "yes")]
    pub can_trade: bool,
    #[serde(default)]
    pub can_transfer: bool,
}

fn yes() -> bool {
    true
}

impl Default for Permissions {
    fn default() -> Self {
        Self {
            can_view: true,
            can_trade: true,
            can_transfer: false,
        }
    }
}

impl Permissions {
    /// A key that can read but not trade.
    pub fn view_only() -> Self {
        Self {
            can_view: true,
            can_trade: false,
            can_transfer: false,
        }
    }
}

/// One API key: its public key and the portfolio it trades from.
///
/// JSON form (one element of the `--keys-file` list, or the body of `POST /admin/keys`):
/// `{"name", "public_key_pem", "permissions": {"can_view","can_trade","can_transfer"},
///   "portfolio_type": "DEFAULT"|"INTX"|..., "derivatives": bool, "balances": {"USD": "100000"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySpec {
    /// CDP key name (`organizations/{org}/apiKeys/{id}` or a bare id); the JWT `kid` and `sub`.
    pub name: String,
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of a P-256 (ES256) or Ed25519 (EdDSA) key.
    pub public_key_pem: String,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default = "default_portfolio_type")]
    pub portfolio_type: String,
    /// Perpetuals (`*-PERP-INTX`) are tradable only with `derivatives` and an `INTX` portfolio.
    #[serde(default)]
    pub derivatives: bool,
    /// Starting balances by currency (decimal strings). Defaults to `{"USD": "100000"}`.
    #[serde(default = "default_balances")]
    pub balances: BTreeMap<String, Decimal>,
}

fn default_portfolio_type() -> String {
    "DEFAULT".to_string()
}

fn default_balances() -> BTreeMap<String, Decimal> {
    BTreeMap::from([("USD".to_string(), Decimal::from(100_000))])
}

impl KeySpec {
    /// A trading key (view + trade) on a `DEFAULT` portfolio holding 100000 USD.
    pub fn new(name: impl Into<String>, public_key_pem: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            public_key_pem: public_key_pem.into(),
            permissions: Permissions::default(),
            portfolio_type: default_portfolio_type(),
            derivatives: false,
            balances: default_balances(),
        }
    }

    pub fn with_permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = permissions;
        self
    }

    /// An `INTX` portfolio with derivatives enabled (perpetuals tradable).
    pub fn with_derivatives(mut self) -> Self {
        self.portfolio_type = "INTX".to_string();
        self.derivatives = true;
        self
    }

    pub fn with_portfolio_type(mut self, portfolio_type: impl Into<String>) -> Self {
        self.portfolio_type = portfolio_type.into();
        self
    }

    /// Replaces all starting balances.
    pub fn with_balances<I, C>(mut self, balances: I) -> Self
    where
        I: IntoIterator<Item = (C, Decimal)>,
        C: Into<String>,
    {
        self.balances = balances.into_iter().map(|(c, v)| (c.into(), v)).collect();
        self
    }
}

/// Reads a `--keys-file`: a JSON list of [`KeySpec`].
pub fn load_keys_file(path: &Path) -> anyhow::Result<Vec<KeySpec>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading keys file {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("parsing keys file {}: {e}", path.display()))
}

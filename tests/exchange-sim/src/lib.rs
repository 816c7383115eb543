//! A local Coinbase Advanced Trade exchange simulator.
//!
//! It serves the REST API under `/api/v3/brokerage`, the WebSocket feed at `/ws` and a test
//! control API under `/admin`, verifies CDP JWTs on every private request, keeps seeded
//! deterministic price paths with synthetic books, matches orders against them and can inject
//! faults (latency, 429/5xx, order timeouts, WebSocket gaps and disconnects, stalled feeds,
//! price shocks).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use exchange_sim::{KeyAlgorithm, SimConfig, Simulator, generate_key};
//!
//! let key = generate_key(KeyAlgorithm::Es256);
//! let sim = Simulator::start(SimConfig::default()).await?;
//! sim.register_key(key.key_spec())?;
//! // Sign JWTs with key.private_key_pem for `uri = "GET {sim.host()}/api/v3/brokerage/accounts"`.
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod accounts;
mod admin;
mod auth;
mod clock;
mod config;
mod engine;
mod error;
mod events;
mod faults;
mod keys;
mod market;
mod num;
mod order_log;
mod orders;
mod products;
mod ratelimit;
mod rest;
mod server;
mod side;
mod state;
mod stats;
mod ws;

pub use admin::{AdminError, AdminOrder, KeyInfo, SetBalances, Transfer, TransferResult};
pub use config::{FeeRates, KeySpec, Permissions, SimConfig, load_keys_file};
pub use faults::{FailNext, FaultRequest, FaultState, Freeze, PriceShock, TimeoutNextOrders, WsDropEvery};
pub use keys::{GeneratedKey, KeyAlgorithm, generate_key};
pub use order_log::OrderLogEntry;
pub use products::{ProductFlags, ProductFlagsUpdate};
pub use rest::orders::CLIENT_INSTANCE_HEADER;
pub use server::{Simulator, serve};
pub use state::SimError;
pub use stats::StatsSnapshot;

/// Product ids of the built-in catalogue, spot first.
pub fn product_ids() -> Vec<String> {
    products::catalogue().into_iter().map(|p| p.id).collect()
}

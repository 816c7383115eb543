//! The TradingBot operator: turns each TradingBot into safe, observable bot pods, enforces its
//! guards from the bots' metrics, and rolls new versions out canary → prod.

pub mod account;
pub mod api_counter;
pub mod cli;
pub mod context;
pub mod controller;
pub mod events;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod reconcile;
pub mod scrape;
pub mod shard;

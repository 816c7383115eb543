//! The one-shot commands: account snapshot, manual orders and backtests.

pub mod backtest;
pub mod orders;

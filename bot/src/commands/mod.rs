//! The one-shot commands: account snapshot, manual orders and edits, flatten, the stand-alone
//! exporter and backtests.

pub mod backtest;
pub mod exporter;
pub mod flatten;
pub mod orders;

//! The Prometheus text format parser is shared with `kubectl tradingbot` (which reads the same
//! metrics through the API server): it lives in the API crate.

pub use tradingbot_crds::exposition::{Sample, parse};

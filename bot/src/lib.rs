//! `perps-bot`: a Coinbase trading bot. Market data → strategy → pre-trade risk → execution,
//! once per cycle, with every order passing the trading state machine (Normal / ReduceOnly /
//! Halted), runtime guards that latch trips, and live mode control from the operator, a control
//! file or an authenticated HTTP endpoint.

pub mod broker;
pub mod cash;
pub mod cli;
pub mod clock;
pub mod coinbase;
pub mod commands;
pub mod config;
pub mod control;
pub mod domain;
pub mod engine;
pub mod execution;
pub mod guards;
pub mod inventory;
pub mod risk;
pub mod runner;
pub mod strategy;
pub mod telemetry;
pub mod trading_state;

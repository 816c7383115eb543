//! Live mode control: every source of a trading-mode restriction reports into one board, and
//! the effective mode is the most restrictive of them. Sources: configuration (flags, profile
//! locks), in-process guard trips, the TradingBot (spec intent and operator status), a watched
//! control file and the authenticated HTTP endpoint.
//!
//! The bot places no order until every source it expects has reported once.

pub mod file;
pub mod kube;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use tradingbot_crds::TradingMode;
use tradingbot_crds::mode::{ModeInput, most_restrictive};

/// Names of the mode sources (also shown in `/control`).
pub mod source {
    pub const CONFIG: &str = "config";
    pub const GUARDS: &str = "guards";
    pub const KUBERNETES: &str = "kubernetes";
    pub const CONTROL_FILE: &str = "control-file";
    pub const HTTP: &str = "http";
    pub const SHUTDOWN: &str = "shutdown";
    /// The bot's own files: a guard state it cannot persist (or read at start) restricts it.
    pub const STATE: &str = "state";
}

/// The effective mode and whether it is known yet.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveMode {
    pub mode: TradingMode,
    pub reason: String,
    /// Every expected source has reported at least once.
    pub known: bool,
    pub since: Instant,
}

#[derive(Debug, Default)]
struct Board {
    inputs: BTreeMap<&'static str, ModeInput>,
    awaiting: BTreeSet<&'static str>,
}

/// Shared handle to the mode board. Cheap to clone.
#[derive(Clone)]
pub struct ModeHandle {
    board: Arc<Mutex<Board>>,
    tx: Arc<watch::Sender<EffectiveMode>>,
}

impl ModeHandle {
    /// A board that waits for `expected` sources before the mode counts as known.
    pub fn new(expected: &[&'static str]) -> Self {
        let board = Board {
            inputs: BTreeMap::new(),
            awaiting: expected.iter().copied().collect(),
        };
        let initial = EffectiveMode {
            mode: TradingMode::Normal,
            reason: "waiting for mode sources".into(),
            known: board.awaiting.is_empty(),
            since: Instant::now(),
        };
        let (tx, _) = watch::channel(initial);
        Self {
            board: Arc::new(Mutex::new(board)),
            tx: Arc::new(tx),
        }
    }

    /// Report a source's current restriction (Normal = none).
    pub fn set(&self, source: &'static str, mode: TradingMode, reason: impl Into<String>) {
        let mut board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board.awaiting.remove(source);
        board
            .inputs
            .insert(source, ModeInput::new(mode, format!("{source}: {}", reason.into())));
        let (mode, reason) = most_restrictive(board.inputs.values());
        let known = board.awaiting.is_empty();
        self.tx.send_if_modified(|current| {
            let changed = current.mode != mode || current.known != known || current.reason != reason;
            if changed {
                let since = if current.mode != mode {
                    Instant::now()
                } else {
                    current.since
                };
                *current = EffectiveMode {
                    mode,
                    reason,
                    known,
                    since,
                };
            }
            changed
        });
    }

    pub fn current(&self) -> EffectiveMode {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<EffectiveMode> {
        self.tx.subscribe()
    }

    /// Each source's current input, for `/control` and metrics.json.
    pub fn inputs(&self) -> Vec<(String, TradingMode, String)> {
        let board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board
            .inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.mode, v.source.clone()))
            .collect()
    }

    pub fn awaiting(&self) -> Vec<String> {
        let board = self.board.lock().unwrap_or_else(|p| p.into_inner());
        board.awaiting.iter().map(|s| s.to_string()).collect()
    }
}

/// A request the engine acts on once, at its next cycle: releasing a latched in-process trip
/// (from the control file, the HTTP endpoint, or an acknowledgement the operator accepted),
/// or flattening the bot's own positions now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRequest {
    /// A trip id as the bot reports it.
    Trip(String),
    /// Every latched trip of this guard (the operator accepted an ack for it).
    Guard(String),
    /// Close the bot's own positions with reduce-only orders; the id is acted on once (also
    /// across restarts), so repeating a request does nothing more.
    Flatten(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_until_every_expected_source_reported() {
        let handle = ModeHandle::new(&[source::CONFIG, source::KUBERNETES]);
        assert!(!handle.current().known);
        handle.set(source::CONFIG, TradingMode::Normal, "flags");
        assert!(!handle.current().known);
        handle.set(source::KUBERNETES, TradingMode::ReduceOnly, "spec.reduceOnly");
        let now = handle.current();
        assert!(now.known);
        assert_eq!(now.mode, TradingMode::ReduceOnly);
        assert!(now.reason.contains("spec.reduceOnly"));
    }

    #[test]
    fn a_source_cannot_loosen_another() {
        let handle = ModeHandle::new(&[]);
        handle.set(source::HTTP, TradingMode::Halted, "operator on call");
        handle.set(source::KUBERNETES, TradingMode::Normal, "no restriction");
        assert_eq!(handle.current().mode, TradingMode::Halted);
        handle.set(source::HTTP, TradingMode::Normal, "cleared");
        assert_eq!(handle.current().mode, TradingMode::Normal);
    }

    #[tokio::test]
    async fn subscribers_see_changes() {
        let handle = ModeHandle::new(&[]);
        let mut rx = handle.subscribe();
        handle.set(source::GUARDS, TradingMode::Halted, "dailyLoss");
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().mode, TradingMode::Halted);
    }
}

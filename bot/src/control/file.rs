//! The control file: a small YAML/JSON file a human (or a script) edits to restrict the bot
//! or acknowledge a trip without restarting it:
//!
//! ```yaml
//! mode: ReduceOnly          # Normal | ReduceOnly | Halted
//! reason: exchange degraded
//! ack: [dailyloss-reduceonly-1795219200]
//! ```
//!
//! It is polled; a file that cannot be understood halts the bot (its author meant to change
//! something, and guessing what is worse than stopping).

use super::{AckRequest, ModeHandle, source};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tradingbot_crds::TradingMode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlFile {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    ack: Vec<String>,
}

/// What a control file's content means. `None` = the file does not exist.
pub fn interpret(text: Option<&str>) -> (TradingMode, String, Vec<String>) {
    let Some(text) = text else {
        return (TradingMode::Normal, "no control file".into(), Vec::new());
    };
    let parsed: Result<ControlFile, String> = if text.trim().is_empty() {
        Ok(ControlFile {
            mode: None,
            reason: None,
            ack: Vec::new(),
        })
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    };
    let file = match parsed {
        Ok(file) => file,
        Err(error) => {
            return (
                TradingMode::Halted,
                format!("control file is invalid ({error}): halted until fixed"),
                Vec::new(),
            );
        }
    };
    let mode = match file.mode.as_deref().map(str::parse::<TradingMode>) {
        None => TradingMode::Normal,
        Some(Ok(mode)) => mode,
        Some(Err(error)) => {
            return (
                TradingMode::Halted,
                format!("control file: mode: {error}; halted until fixed"),
                Vec::new(),
            );
        }
    };
    let reason = file.reason.unwrap_or_else(|| "set in the control file".into());
    (mode, reason, file.ack)
}

/// Poll `path` until `stop`, reporting into the mode board and forwarding new acks.
pub async fn watch(path: PathBuf, mode: ModeHandle, acks: mpsc::Sender<AckRequest>, mut stop: watch::Receiver<bool>) {
    let mut last: Option<Option<String>> = None;
    let mut acked = BTreeSet::new();
    loop {
        let text = tokio::fs::read_to_string(&path).await.ok();
        if last.as_ref() != Some(&text) {
            let (new_mode, reason, ack) = interpret(text.as_deref());
            if new_mode == TradingMode::Halted && reason.contains("invalid") {
                tracing::error!(path = %path.display(), %reason, "control file rejected");
            } else {
                tracing::info!(path = %path.display(), mode = %new_mode, %reason, "control file read");
            }
            mode.set(source::CONTROL_FILE, new_mode, reason);
            for id in ack {
                if acked.insert(id.clone()) {
                    let _ = acks.send(AckRequest::Trip(id)).await;
                }
            }
            last = Some(text);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_reasons_and_acks() {
        assert_eq!(interpret(None).0, TradingMode::Normal);
        assert_eq!(interpret(Some("")).0, TradingMode::Normal);
        let (mode, reason, ack) = interpret(Some("mode: ReduceOnly\nreason: venue degraded\nack: [a, b]\n"));
        assert_eq!(
            (mode, reason.as_str(), ack.len()),
            (TradingMode::ReduceOnly, "venue degraded", 2)
        );
        assert_eq!(interpret(Some("{\"mode\": \"halted\"}")).0, TradingMode::Halted);
    }

    #[test]
    fn anything_not_understood_halts() {
        for bad in ["mode: pause", "moed: Normal", "mode: [", "- just a list"] {
            let (mode, reason, _) = interpret(Some(bad));
            assert_eq!(mode, TradingMode::Halted, "{bad}");
            assert!(reason.contains("halted until fixed"), "{reason}");
        }
    }
}

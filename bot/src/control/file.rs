//! The control file: a small YAML/JSON file a human (or a script) edits to restrict the bot
//! or acknowledge a trip without restarting it:
//!
//! ```yaml
//! mode: ReduceOnly          # Normal | ReduceOnly | Halted
//! reason: exchange degraded
//! ack: [dailyloss-reduceonly-1795219200]
//! flatten: incident-42      # close the bot's own positions now (once per id)
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
    #[serde(default)]
    flatten: Option<String>,
}

/// What a control file asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlIntent {
    pub mode: TradingMode,
    pub reason: String,
    pub acks: Vec<String>,
    /// A flatten request id (acted on once).
    pub flatten: Option<String>,
}

/// What a control file's content means. `None` = the file does not exist.
pub fn interpret(text: Option<&str>) -> ControlIntent {
    let halted = |reason: String| ControlIntent {
        mode: TradingMode::Halted,
        reason,
        acks: Vec::new(),
        flatten: None,
    };
    let Some(text) = text else {
        return ControlIntent {
            mode: TradingMode::Normal,
            reason: "no control file".into(),
            acks: Vec::new(),
            flatten: None,
        };
    };
    let parsed: Result<ControlFile, String> = if text.trim().is_empty() {
        Ok(ControlFile {
            mode: None,
            reason: None,
            ack: Vec::new(),
            flatten: None,
        })
    } else {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    };
    let file = match parsed {
        Ok(file) => file,
        Err(error) => return halted(format!("control file is invalid ({error}): halted until fixed")),
    };
    let mode = match file.mode.as_deref().map(str::parse::<TradingMode>) {
        None => TradingMode::Normal,
        Some(Ok(mode)) => mode,
        Some(Err(error)) => return halted(format!("control file: mode: {error}; halted until fixed")),
    };
    ControlIntent {
        mode,
        reason: file.reason.unwrap_or_else(|| "set in the control file".into()),
        acks: file.ack,
        flatten: file.flatten.map(|id| id.trim().to_string()).filter(|id| !id.is_empty()),
    }
}

/// Poll `path` until `stop`, reporting into the mode board and forwarding new acks.
pub async fn watch(path: PathBuf, mode: ModeHandle, acks: mpsc::Sender<AckRequest>, mut stop: watch::Receiver<bool>) {
    let mut last: Option<Option<String>> = None;
    let mut acked = BTreeSet::new();
    let mut flattened = BTreeSet::new();
    loop {
        let text = tokio::fs::read_to_string(&path).await.ok();
        if last.as_ref() != Some(&text) {
            let intent = interpret(text.as_deref());
            if intent.mode == TradingMode::Halted && intent.reason.contains("invalid") {
                tracing::error!(path = %path.display(), reason = %intent.reason, "control file rejected");
            } else {
                tracing::info!(path = %path.display(), mode = %intent.mode, reason = %intent.reason, "control file read");
            }
            mode.set(source::CONTROL_FILE, intent.mode, intent.reason);
            for id in intent.acks {
                if acked.insert(id.clone()) {
                    let _ = acks.send(AckRequest::Trip(id)).await;
                }
            }
            if let Some(id) = intent.flatten
                && flattened.insert(id.clone())
            {
                let _ = acks.send(AckRequest::Flatten(id)).await;
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
    fn modes_reasons_acks_and_flatten_requests() {
        assert_eq!(interpret(None).mode, TradingMode::Normal);
        assert_eq!(interpret(Some("")).mode, TradingMode::Normal);
        let intent = interpret(Some(
            "mode: ReduceOnly\nreason: venue degraded\nack: [a, b]\nflatten: incident-7\n",
        ));
        assert_eq!(
            (intent.mode, intent.reason.as_str(), intent.acks.len()),
            (TradingMode::ReduceOnly, "venue degraded", 2)
        );
        assert_eq!(intent.flatten.as_deref(), Some("incident-7"));
        assert_eq!(interpret(Some("{\"mode\": \"halted\"}")).mode, TradingMode::Halted);
        assert_eq!(interpret(Some("flatten: '  '")).flatten, None);
    }

    #[test]
    fn anything_not_understood_halts() {
        for bad in ["mode: pause", "moed: Normal", "mode: [", "- just a list"] {
            let intent = interpret(Some(bad));
            assert_eq!(intent.mode, TradingMode::Halted, "{bad}");
            assert!(intent.reason.contains("halted until fixed"), "{}", intent.reason);
        }
    }
}

//! The engine's files: metrics.json, health.json and the guard state, and what their failures
//! mean. A guard state that cannot be persisted (or could not be read at start) fails closed:
//! the bot restricts itself to ReduceOnly with a reason naming the path, counts the failure in
//! `perps_bot_state_write_errors_total`, and `/readyz` fails (it reads the `state` mode
//! source). `--dev-fast` turns a file it could not write into a non-zero exit.

use super::{CycleReport, Engine};
use crate::broker::Broker;
use crate::control::source;
use crate::guards::PersistedGuardState;
use crate::telemetry::snapshot::{Health, Snapshot, write_json_atomically};
use std::path::Path;
use tradingbot_crds::TradingMode;

/// One of the engine's output files (in the order failures are reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutputFile {
    Metrics,
    Health,
    GuardState,
}

impl OutputFile {
    /// The `file` label of `perps_bot_state_write_errors_total`.
    pub fn label(self) -> &'static str {
        match self {
            OutputFile::GuardState => "guard_state",
            OutputFile::Metrics => "metrics",
            OutputFile::Health => "health",
        }
    }

    /// How the user names the file (the flag that sets it).
    fn flag(self) -> &'static str {
        match self {
            OutputFile::GuardState => "--state-file",
            OutputFile::Metrics => "--metrics-file",
            OutputFile::Health => "health file (next to --metrics-file)",
        }
    }
}

/// Read the persisted guard state. A missing file is a fresh start; a file that exists but
/// cannot be read or parsed is a failure (latched trips may be in it): `(None, Some(why))`.
pub fn restore_guard_state(path: &Path) -> (Option<PersistedGuardState>, Option<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // Nothing there (not even the folder): a fresh start.
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return (None, None);
        }
        Err(error) => {
            return (
                None,
                Some(format!("cannot read the guard state {}: {error}", path.display())),
            );
        }
    };
    match serde_json::from_str::<PersistedGuardState>(&text) {
        Ok(state) => (Some(state), None),
        Err(error) => (
            None,
            Some(format!("the guard state {} is unreadable ({error})", path.display())),
        ),
    }
}

impl<B: Broker> Engine<B> {
    /// Write the guard state now (also right after a trip latches, before any order).
    pub(super) fn persist_guard_state(&mut self) {
        let Some(path) = self.files.state.clone() else {
            return;
        };
        let failure = write_json_atomically(&path, self.guards.persisted())
            .err()
            .map(|e| e.to_string());
        self.note_write(OutputFile::GuardState, &path, failure.as_deref());
        self.report_state_health(
            failure.map(|error| format!("cannot persist the guard state to {}: {error}", path.display())),
        );
    }

    /// The `state` mode source: ReduceOnly while the guard state cannot be persisted, and for
    /// good when it could not be read at start.
    pub(super) fn report_state_health(&self, write_failure: Option<String>) {
        let problem = self
            .restore_failure
            .clone()
            .map(|why| format!("{why}: restricted until restart with a readable (or removed) guard state file"));
        match problem.or(write_failure) {
            Some(reason) => self.mode.set(source::STATE, TradingMode::ReduceOnly, reason),
            None => self
                .mode
                .set(source::STATE, TradingMode::Normal, "guard state persisted"),
        }
    }

    /// Count, log (on change) and remember a write's outcome.
    fn note_write(&mut self, file: OutputFile, path: &Path, failure: Option<&str>) {
        let failed_before = self.write_failures.get(&file).is_some_and(|f| f.is_some());
        match failure {
            Some(why) => {
                self.app
                    .metrics
                    .state_write_errors
                    .with_label_values(&[file.label()])
                    .inc();
                if !failed_before {
                    tracing::error!(event = "file_write_failed", file = file.label(), path = %path.display(), reason = %why, "cannot write a file");
                }
                self.write_failures.insert(
                    file,
                    Some(format!("cannot write {} {}: {why}", file.flag(), path.display())),
                );
            }
            None => {
                if failed_before {
                    tracing::info!(event = "file_write_recovered", file = file.label(), path = %path.display(), "file written again");
                }
                self.write_failures.insert(file, None);
            }
        }
    }

    /// The first file the last cycle could not write, as one line naming its path.
    pub fn output_failure(&self) -> Option<String> {
        self.write_failures.values().flatten().next().cloned()
    }

    pub(super) fn write_files(&mut self, snapshot: &Snapshot, report: &CycleReport) {
        if let Some(path) = self.files.metrics.clone() {
            let failure = write_json_atomically(&path, snapshot).err().map(|e| e.to_string());
            self.note_write(OutputFile::Metrics, &path, failure.as_deref());
        }
        if let Some(path) = self.files.health.clone() {
            let health = Health {
                ok: report.errors.is_empty(),
                timestamp: snapshot.timestamp.clone(),
                message: format!("cycle {} in mode {}", self.cycles, snapshot.trading_mode),
                error: (!report.errors.is_empty()).then(|| report.errors.join("; ")),
            };
            let failure = write_json_atomically(&path, &health).err().map(|e| e.to_string());
            self.note_write(OutputFile::Health, &path, failure.as_deref());
        }
        self.persist_guard_state();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_state_is_a_fresh_start_and_a_broken_one_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guard-state.json");
        assert_eq!(restore_guard_state(&path), (None, None));
        std::fs::write(&path, "{not json").unwrap();
        let (state, why) = restore_guard_state(&path);
        assert!(state.is_none());
        assert!(why.unwrap().contains(&path.display().to_string()));
        std::fs::write(&path, serde_json::to_string(&PersistedGuardState::default()).unwrap()).unwrap();
        assert_eq!(restore_guard_state(&path), (Some(PersistedGuardState::default()), None));
    }
}

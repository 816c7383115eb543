//! The machine's load while the bench measures: sampled from /proc/loadavg, reported in the run
//! notes, so figures taken on a busy machine say so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The 1-minute load average now.
fn load_now() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples the load every few seconds until dropped.
pub struct LoadWatch {
    first: Option<f64>,
    max: Arc<Mutex<Option<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadWatch {
    pub fn start() -> Self {
        let max = Arc::new(Mutex::new(load_now()));
        let sampled = max.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if let (Some(now), Ok(mut max)) = (load_now(), sampled.lock()) {
                    *max = Some(max.map_or(now, |m: f64| m.max(now)));
                }
            }
        });
        Self {
            first: load_now(),
            max,
            task,
        }
    }

    /// "1-minute load average: X at the start, Y at the end, at most Z, on N cores."
    pub fn summary(&self) -> String {
        let show = |v: Option<f64>| v.map_or_else(|| "unknown".to_string(), |v| format!("{v:.1}"));
        let max = self.max.lock().map(|m| *m).unwrap_or(None);
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        format!(
            "Machine load while measuring (1-minute load average): {} at the start, {} at the end, at most {}, on {cores} \
             cores; a load above the core count means other work competed with the bench.",
            show(self.first),
            show(load_now()),
            show(max)
        )
    }
}

impl Drop for LoadWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

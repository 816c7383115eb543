//! `metrics.json` and `health.json`: the reference bot's per-cycle files (same field names),
//! served at `/metrics.json` too. Decimals are strings. Files are replaced atomically.

use crate::domain::Side;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use tradingbot_crds::TradingMode;
use tradingbot_crds::status::GuardTrip;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PositionView {
    pub symbol: String,
    pub quantity: Decimal,
    pub side: Option<Side>,
    pub entry_price: Decimal,
    pub mark_price: Option<Decimal>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionView {
    pub action: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct OrderStats {
    pub attempted: u64,
    pub successful: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SystemView {
    pub cpu_seconds: f64,
    pub memory_rss_bytes: u64,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    pub timestamp: String,
    pub profile: String,
    pub instance: String,
    pub version: String,
    pub equity: Decimal,
    pub pnl_today: Decimal,
    pub drawdown_percent: Decimal,
    pub positions: Vec<PositionView>,
    pub decisions: BTreeMap<String, DecisionView>,
    pub order_stats: OrderStats,
    pub open_orders: usize,
    pub uptime_seconds: u64,
    pub cycles: u64,
    pub trading_mode: TradingMode,
    pub mode_reason: String,
    pub mode_known: bool,
    pub dry_run: bool,
    pub trips: Vec<GuardTrip>,
    /// The bot's own inventory per symbol (spot, on Coinbase): owned, held, unowned, capped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<crate::inventory::InventoryReport>,
    pub system: SystemView,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    pub ok: bool,
    pub timestamp: String,
    pub message: String,
    pub error: Option<String>,
}

/// Write `value` as pretty JSON to `path` atomically (temp file + rename in the same folder).
pub fn write_json_atomically(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

/// CPU seconds and resident memory of this process (Linux `/proc`; zeros elsewhere).
pub fn system_view() -> SystemView {
    let pid = std::process::id();
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .unwrap_or(0);
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start after ')'.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let (page, hz) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
    SystemView {
        cpu_seconds: if hz > 0 { ticks as f64 / hz as f64 } else { 0.0 },
        memory_rss_bytes: rss_pages * u64::try_from(page).unwrap_or(4096),
        pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/metrics.json");
        write_json_atomically(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json_atomically(&path, &serde_json::json!({"a": 2})).unwrap();
        let read: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(read["a"], 2);
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn system_view_reads_this_process() {
        let view = system_view();
        assert!(view.memory_rss_bytes > 0);
        assert_eq!(view.pid, std::process::id());
    }
}

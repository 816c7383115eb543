//! The operator's process on this host, found through its pod, and proof that it is still the
//! same process: a figure measured across an operator restart (a new pid, or the same pid
//! reused by another process) describes two processes and is refused, never reported.

use std::time::Duration;
use test_harness::TestNamespace;

/// Why a measurement of the operator cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorChanged {
    #[error("the operator restarted during the run (pid {before} is gone)")]
    Gone { before: u32 },
    #[error("the operator restarted during the run (pid {before} now belongs to another process)")]
    Reused { before: u32 },
    #[error("the operator restarted during the run (pod {pod}: container restarts {before} -> {after})")]
    ContainerRestarted { pod: String, before: u32, after: u32 },
    #[error("the operator pod changed during the run ({before} -> {after})")]
    PodReplaced { before: String, after: String },
}

/// The operator's process, identified by pid and start time, and its pod.
pub struct OperatorProcess {
    pub pid: u32,
    /// Start time in clock ticks since boot (/proc/PID/stat field 22): a reused pid differs.
    started: u64,
    pod: String,
    restarts: u32,
}

impl OperatorProcess {
    /// The process of the (single) operator pod in `ns`.
    pub fn find(ns: &TestNamespace) -> anyhow::Result<Self> {
        let pod = operator_pod(ns)?;
        // The chart gives the container its pod name in POD_NAME.
        let marker = format!("POD_NAME={pod}");
        let mut candidates = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains("tradingbot-operator") {
                continue;
            }
            candidates.push(pid);
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ.split(|b| *b == 0).any(|var| var == marker.as_bytes()) {
                let started = start_ticks(pid).ok_or_else(|| anyhow::anyhow!("pid {pid} vanished"))?;
                let restarts = restart_count(ns, &pod)?;
                return Ok(Self {
                    pid,
                    started,
                    pod,
                    restarts,
                });
            }
        }
        anyhow::bail!("the operator's process (pod {pod}) is not visible from this host (candidates: {candidates:?})")
    }

    /// Fails when the process measured so far is no longer the operator.
    pub fn still_the_same(&self, ns: &TestNamespace) -> Result<(), OperatorChanged> {
        match start_ticks(self.pid) {
            None => return Err(OperatorChanged::Gone { before: self.pid }),
            Some(t) if t != self.started => return Err(OperatorChanged::Reused { before: self.pid }),
            Some(_) => {}
        }
        let pod = operator_pod(ns).unwrap_or_default();
        if pod != self.pod {
            return Err(OperatorChanged::PodReplaced {
                before: self.pod.clone(),
                after: pod,
            });
        }
        let restarts = restart_count(ns, &pod).unwrap_or(u32::MAX);
        if restarts != self.restarts {
            return Err(OperatorChanged::ContainerRestarted {
                pod,
                before: self.restarts,
                after: restarts,
            });
        }
        Ok(())
    }

    /// The process's soft limit on open files (`Max open files` in /proc/PID/limits).
    pub fn open_files_limit(&self) -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid)).ok()?;
        limits
            .lines()
            .find(|l| l.starts_with("Max open files"))?
            .split_whitespace()
            .nth(3)?
            .parse()
            .ok()
    }

    /// Peak resident set size (VmHWM), bytes.
    pub fn peak_rss(&self) -> Result<u64, OperatorChanged> {
        self.status_kb("VmHWM:").map(|kb| kb * 1024)
    }

    pub fn rss(&self) -> Result<u64, OperatorChanged> {
        self.status_kb("VmRSS:").map(|kb| kb * 1024)
    }

    fn status_kb(&self, field: &str) -> Result<u64, OperatorChanged> {
        status_kb(self.pid, field).ok_or(OperatorChanged::Gone { before: self.pid })
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Result<Duration, OperatorChanged> {
        cpu_time(self.pid).ok_or(OperatorChanged::Gone { before: self.pid })
    }
}

/// A `kB` field of /proc/PID/status (`VmRSS:`, `VmHWM:`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// User + system CPU time of process `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let fields = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of /proc/PID/stat (11 and 12 after the name).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    Some(Duration::from_millis(ticks * 1000 / ticks_per_second()))
}

fn operator_pod(ns: &TestNamespace) -> anyhow::Result<String> {
    let pods = ns.pods("app.kubernetes.io/name=tradingbot-operator");
    anyhow::ensure!(pods.len() == 1, "expected one operator pod, found {pods:?}");
    Ok(pods[0].clone())
}

fn restart_count(ns: &TestNamespace, pod: &str) -> anyhow::Result<u32> {
    let count = ns.kubectl_result(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.containerStatuses[0].restartCount}",
    ])?;
    Ok(count.trim().parse()?)
}

/// The fields of /proc/PID/stat after the parenthesised command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The process's start time (field 22 of /proc/PID/stat, 19 after the name).
fn start_ticks(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_vanished_one_has_none() {
        assert!(start_ticks(std::process::id()).is_some());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(start_ticks(pid), None);
    }
}

//! The API server's audit log (one JSON line per write request, see tests/cluster/README.md).
//! Reading it is checked: a log that is missing, unreadable, rotated or no longer written is an
//! error, never an empty list, so "no writes" can only mean no writes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One write request from the API server's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedWrite {
    pub verb: String,
    pub resource: String,
    /// `status` for a status write; empty for the object itself.
    pub subresource: String,
    pub name: String,
    /// The HTTP status the API server answered with.
    pub code: u16,
}

/// Why the audit log cannot answer for a time window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditLogError {
    #[error("the audit log {0} does not exist")]
    Missing(PathBuf),
    #[error("the audit log {path} cannot be read: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("the audit log {path} starts at {first}, after {since}: it was rotated or recreated during the window")]
    StartsAfterWindow {
        path: PathBuf,
        first: String,
        since: String,
    },
    #[error("the audit log {path} has no entry since {last}, before {until}: the API server no longer writes it")]
    NotWritten { path: PathBuf, last: String, until: String },
    #[error("the audit log {0} has no entries")]
    Empty(PathBuf),
}

/// The parsed audit log.
pub struct AuditLog {
    path: PathBuf,
    events: Vec<serde_json::Value>,
}

/// The kubelet renews its node Lease every 10 s, so a live log never goes this long without an
/// entry.
const MAX_SILENCE_SECONDS: i64 = 60;

impl AuditLog {
    pub fn read(path: &Path) -> Result<Self, AuditLogError> {
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => AuditLogError::Missing(path.to_path_buf()),
            _ => AuditLogError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        })?;
        let events = text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            events,
        })
    }

    fn received(event: &serde_json::Value) -> Option<&str> {
        event["requestReceivedTimestamp"].as_str()
    }

    /// Fails unless the log holds every write from `since` (RFC 3339, as [`audit_now`] gives)
    /// up to `until`: it started before `since` and was still written shortly before `until`.
    pub fn check_covers(&self, since: &str, until: &str) -> Result<(), AuditLogError> {
        let first = self.events.first().and_then(Self::received);
        let last = self.events.last().and_then(Self::received);
        let (Some(first), Some(last)) = (first, last) else {
            return Err(AuditLogError::Empty(self.path.clone()));
        };
        if first > since {
            return Err(AuditLogError::StartsAfterWindow {
                path: self.path.clone(),
                first: first.to_string(),
                since: since.to_string(),
            });
        }
        if seconds_between(last, until).is_some_and(|s| s > MAX_SILENCE_SECONDS) {
            return Err(AuditLogError::NotWritten {
                path: self.path.clone(),
                last: last.to_string(),
                until: until.to_string(),
            });
        }
        Ok(())
    }

    /// Writes by users whose name starts with `user_prefix`, received at or after `since`.
    pub fn writes_by(&self, user_prefix: &str, since: &str) -> Vec<AuditedWrite> {
        self.events
            .iter()
            .filter(|e| {
                e["user"]["username"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(user_prefix))
            })
            .filter(|e| Self::received(e).is_some_and(|t| t >= since))
            .map(|e| AuditedWrite {
                verb: e["verb"].as_str().unwrap_or_default().to_string(),
                resource: e["objectRef"]["resource"].as_str().unwrap_or_default().to_string(),
                subresource: e["objectRef"]["subresource"].as_str().unwrap_or_default().to_string(),
                name: e["objectRef"]["name"].as_str().unwrap_or_default().to_string(),
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            })
            .collect()
    }
}

/// Seconds from `a` to `b` (both RFC 3339 UTC as the audit log writes them), if both parse.
fn seconds_between(a: &str, b: &str) -> Option<i64> {
    Some(epoch_seconds(b)? - epoch_seconds(a)?)
}

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` → seconds since 1970 (days from the civil calendar).
fn epoch_seconds(t: &str) -> Option<i64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut h = time.trim_end_matches('Z').split(':');
    let (hh, mm) = (h.next()?.parse::<i64>().ok()?, h.next()?.parse::<i64>().ok()?);
    let ss = h.next()?.split('.').next()?.parse::<i64>().ok()?;
    // Days since the epoch (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Write requests (create/update/patch/delete) in the local cluster's audit log by users whose
/// name starts with `user_prefix`, received at or after `since` (RFC 3339), whatever their
/// outcome. Fails when the log cannot vouch for the whole window from `since` to now.
pub fn try_audited_writes(user_prefix: &str, since: &str) -> Result<Vec<AuditedWrite>, AuditLogError> {
    let log = AuditLog::read(&audit_log_path())?;
    log.check_covers(since, &audit_now())?;
    Ok(log.writes_by(user_prefix, since))
}

/// [`try_audited_writes`], panicking when the audit log cannot vouch for the window.
pub fn audited_writes(user_prefix: &str, since: &str) -> Vec<AuditedWrite> {
    try_audited_writes(user_prefix, since).unwrap_or_else(|e| panic!("{e}"))
}

fn audit_log_path() -> PathBuf {
    crate::local_settings().map_or_else(|_| crate::cluster_dir().join("logs/audit.log"), |s| s.audit_log())
}

/// Now as the audit log writes timestamps (RFC 3339, UTC, microseconds).
pub fn audit_now() -> String {
    let output = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> AuditLog {
        AuditLog {
            path: PathBuf::from("audit.log"),
            events: lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect(),
        }
    }

    fn event(at: &str, user: &str) -> String {
        format!(
            r#"{{"requestReceivedTimestamp":"{at}","user":{{"username":"{user}"}},"verb":"patch","objectRef":{{"resource":"pods","name":"p"}},"responseStatus":{{"code":200}}}}"#
        )
    }

    #[test]
    fn epoch_seconds_match_date() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(epoch_seconds("2024-02-29T12:00:01.123456Z"), Some(1_709_208_001));
    }

    #[test]
    fn a_log_that_starts_after_the_window_is_refused() {
        let a = event("2024-01-01T00:00:10.000000Z", "u");
        let log = log(&[&a]);
        let error = log
            .check_covers("2024-01-01T00:00:00.000000Z", "2024-01-01T00:00:11.000000Z")
            .unwrap_err();
        assert!(matches!(error, AuditLogError::StartsAfterWindow { .. }), "{error}");
    }

    #[test]
    fn a_log_no_longer_written_is_refused() {
        let a = event("2024-01-01T00:00:00.000000Z", "u");
        let log = log(&[&a]);
        let error = log
            .check_covers("2024-01-01T00:00:00.000000Z", "2024-01-01T00:05:00.000000Z")
            .unwrap_err();
        assert!(matches!(error, AuditLogError::NotWritten { .. }), "{error}");
    }

    #[test]
    fn an_empty_or_missing_log_is_refused() {
        assert!(matches!(log(&[]).check_covers("a", "b"), Err(AuditLogError::Empty(_))));
        assert!(matches!(
            AuditLog::read(Path::new("/nonexistent/audit.log")),
            Err(AuditLogError::Missing(_))
        ));
    }

    #[test]
    fn writes_are_filtered_by_user_and_time() {
        let (a, b, c) = (
            event("2024-01-01T00:00:00.000000Z", "system:serviceaccount:ns:op"),
            event("2024-01-01T00:00:05.000000Z", "system:serviceaccount:ns:op"),
            event("2024-01-01T00:00:06.000000Z", "admin"),
        );
        let log = log(&[&a, &b, &c]);
        log.check_covers("2024-01-01T00:00:01.000000Z", "2024-01-01T00:00:07.000000Z")
            .unwrap();
        let writes = log.writes_by("system:serviceaccount:ns:", "2024-01-01T00:00:01.000000Z");
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].verb, "patch");
    }
}

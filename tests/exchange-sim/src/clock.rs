//! Wall-clock helpers and the timestamp formats the Coinbase API uses.

use chrono::{DateTime, SecondsFormat, Utc};

/// Current UTC time.
pub fn now() -> DateTime<Utc> {
    Utc::now()
}

/// RFC 3339 with microseconds, the format of REST timestamps (`2024-01-01T00:00:00.123456Z`).
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// RFC 3339 with nanoseconds, the format of WebSocket envelope timestamps.
pub fn rfc3339_nanos(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// RFC 3339 with milliseconds, used by the order log.
pub fn rfc3339_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp into UTC.
pub fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// Builds a UTC time from unix seconds, `None` when out of chrono's range.
pub fn from_unix(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

//! Wall-clock helpers (UTC). Durations the bot measures itself use `Instant`.

use k8s_openapi::jiff::Timestamp;

pub fn unix_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

pub fn unix_seconds() -> i64 {
    Timestamp::now().as_second()
}

/// Now as RFC 3339 with millisecond precision, e.g. `2026-11-24T08:00:00.123Z`.
pub fn rfc3339_now() -> String {
    rfc3339_ms(unix_ms())
}

pub fn rfc3339_ms(unix_ms: i64) -> String {
    Timestamp::from_millisecond(unix_ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_string())
}

/// The UTC day number (days since 1970-01-01) of a unix time in milliseconds.
pub fn utc_day(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_with_millis() {
        assert_eq!(rfc3339_ms(1_795_219_200_123), "2026-11-21T00:00:00.123Z");
        assert_eq!(utc_day(1_795_219_200_123), 20778);
    }
}

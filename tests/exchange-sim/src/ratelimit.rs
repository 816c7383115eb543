//! Sliding one-second request windows per API key (private) and per client IP (public).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WINDOW: Duration = Duration::from_secs(1);

/// The limiter's verdict, with the values of the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Unix time (seconds, rounded up) when a request slot frees up.
    pub reset_epoch: u64,
    /// Whole seconds to wait before retrying (at least 1).
    pub retry_after_secs: u64,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: HashMap<String, VecDeque<Instant>>,
}

impl RateLimiter {
    /// Counts a request in `bucket` against `limit` requests per second (0 = unlimited).
    pub fn check(&mut self, bucket: &str, limit: u32, now: Instant) -> Decision {
        let window = self.windows.entry(bucket.to_string()).or_default();
        while window.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            window.pop_front();
        }
        let allowed = limit == 0 || window.len() < limit as usize;
        if allowed {
            window.push_back(now);
        }
        let frees_in = window
            .front()
            .map_or(Duration::ZERO, |t| WINDOW.saturating_sub(now.duration_since(*t)));
        let epoch = SystemTime::now()
            .checked_add(frees_in)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        Decision {
            allowed,
            limit,
            remaining: (limit as usize).saturating_sub(window.len()) as u32,
            reset_epoch: epoch.as_secs() + u64::from(epoch.subsec_nanos() > 0),
            retry_after_secs: frees_in.as_secs().max(1),
        }
    }

    pub fn clear(&mut self) {
        self.windows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let d = limiter.check("k", 3, t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
        }
        assert!(!limiter.check("k", 3, t0).allowed);
        assert!(limiter.check("other", 3, t0).allowed);
        assert!(limiter.check("k", 3, t0 + Duration::from_millis(1001)).allowed);
        assert!(limiter.check("k", 0, t0).allowed);
    }
}

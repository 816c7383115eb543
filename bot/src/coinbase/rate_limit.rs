//! Client-side request pacing: at most `limit` requests in any sliding window (slightly longer
//! than a second, so network jitter cannot squeeze `limit + 1` requests into one of the
//! exchange's one-second windows). Private endpoints allow 30 requests per second per key,
//! public ones 10 per second per IP.
//!
//! A sliding window is stricter than a token bucket of the same rate (a bucket lets a full
//! burst through right after a full second of refill); the exchange counts windows, so we do
//! too.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

pub const PRIVATE_PER_SECOND: u32 = 30;
pub const PUBLIC_PER_SECOND: u32 = 10;

/// The window is padded by this much against jitter between our clock and the exchange's.
const WINDOW: Duration = Duration::from_millis(1_100);

#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// `per_second` of zero disables pacing.
    pub fn new(per_second: u32) -> Self {
        Self::with_window(per_second, WINDOW)
    }

    /// At most `limit` requests in any `window`.
    pub fn with_window(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit as usize,
            window,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit as u32
    }

    /// Wait until one more request fits in the window, and count it. Waiters queue on the
    /// lock, so they are served in order.
    pub async fn acquire(&self) {
        if self.limit == 0 {
            return;
        }
        let mut sent = self.sent.lock().await;
        loop {
            let now = Instant::now();
            while sent.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                sent.pop_front();
            }
            if sent.len() < self.limit {
                sent.push_back(now);
                return;
            }
            let oldest = sent.front().copied().unwrap_or(now);
            tokio::time::sleep_until(oldest + self.window).await;
        }
    }

    /// Hold every request back until `until` (after the exchange answered 429).
    pub async fn pause_until(&self, until: Instant) {
        if self.limit == 0 {
            return;
        }
        let mut sent = self.sent.lock().await;
        // Fill the window with stamps that expire at `until`.
        let stamp = until.checked_sub(self.window).unwrap_or(until);
        sent.clear();
        sent.extend(std::iter::repeat_n(stamp, self.limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_more_than_the_limit_in_any_window() {
        let window = Duration::from_millis(60);
        let limiter = RateLimiter::with_window(5, window);
        let start = Instant::now();
        let mut stamps = Vec::new();
        for _ in 0..13 {
            limiter.acquire().await;
            stamps.push(Instant::now());
        }
        for (i, t) in stamps.iter().enumerate() {
            let in_window = stamps[i..].iter().filter(|s| s.duration_since(*t) < window).count();
            assert!(in_window <= 5, "{in_window} requests within one window");
        }
        assert!(start.elapsed() >= window * 2);
        limiter.pause_until(Instant::now() + window).await;
        let paused = Instant::now();
        limiter.acquire().await;
        assert!(paused.elapsed() >= window - Duration::from_millis(5));
    }
}

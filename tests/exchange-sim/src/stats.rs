//! Request and connection statistics (`GET /admin/stats`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::state::lock;

/// Snapshot of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// `"GET /api/v3/brokerage/accounts"` -> status code -> count.
    pub requests: BTreeMap<String, BTreeMap<u16, u64>>,
    /// 429 responses from the rate limiter.
    pub rate_limited: u64,
    /// Responses produced by `fail_next`.
    pub injected_failures: u64,
    /// Rejected JWTs by reason (`expired`, `bad_signature`, ...).
    pub jwt_rejections: BTreeMap<String, u64>,
    pub ws_connections_total: u64,
    pub ws_connections_open: u64,
    pub ws_messages_sent: u64,
    pub ws_messages_dropped: u64,
}

/// Thread-safe counters.
#[derive(Debug, Default)]
pub struct Stats {
    inner: Mutex<StatsSnapshot>,
}

impl Stats {
    pub fn request(&self, route: String, status: u16) {
        *lock(&self.inner)
            .requests
            .entry(route)
            .or_default()
            .entry(status)
            .or_default() += 1;
    }

    pub fn rate_limited(&self) {
        lock(&self.inner).rate_limited += 1;
    }

    pub fn injected_failure(&self) {
        lock(&self.inner).injected_failures += 1;
    }

    pub fn jwt_rejected(&self, reason: &str) {
        *lock(&self.inner).jwt_rejections.entry(reason.to_string()).or_default() += 1;
    }

    pub fn ws_opened(&self) {
        let mut s = lock(&self.inner);
        s.ws_connections_total += 1;
        s.ws_connections_open += 1;
    }

    pub fn ws_closed(&self) {
        let mut s = lock(&self.inner);
        s.ws_connections_open = s.ws_connections_open.saturating_sub(1);
    }

    pub fn ws_sent(&self) {
        lock(&self.inner).ws_messages_sent += 1;
    }

    pub fn ws_dropped(&self) {
        lock(&self.inner).ws_messages_dropped += 1;
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        lock(&self.inner).clone()
    }

    /// Clears everything except the number of open connections.
    pub fn reset(&self) {
        let mut s = lock(&self.inner);
        let open = s.ws_connections_open;
        *s = StatsSnapshot {
            ws_connections_open: open,
            ..StatsSnapshot::default()
        };
    }
}

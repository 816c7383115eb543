//! The order log: every create-order request that reached the matching engine, in order.

use serde::{Deserialize, Serialize};

/// One create-order request as the engine saw it (`GET /admin/orders`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLogEntry {
    /// 1-based position in the log.
    pub seq: u64,
    /// RFC 3339 with milliseconds.
    pub received_at: String,
    pub key_name: String,
    /// The request's `X-Client-Instance` header, if any.
    pub client_instance: Option<String>,
    pub client_order_id: String,
    /// The created (or, for a replay, the original) order; `None` when rejected.
    pub order_id: Option<String>,
    pub product_id: String,
    pub side: String,
    /// `MARKET`, `LIMIT` or `STOP_LIMIT`.
    pub order_type: String,
    pub base_size: Option<String>,
    pub quote_size: Option<String>,
    pub limit_price: Option<String>,
    /// Order status right after the engine processed the request (`FAILED` when rejected).
    pub status: String,
    /// Whether the request repeated an existing client_order_id (nothing was created).
    pub replay: bool,
    /// `error_response.error` of a rejected request.
    pub failure_reason: Option<String>,
    /// `create_order`, `close_position`, `edit_order` (an edit of an existing order) or `admin`
    /// (placed through the admin API for a key).
    pub source: String,
}

/// Append-only log.
#[derive(Debug, Default)]
pub struct OrderLog {
    entries: Vec<OrderLogEntry>,
}

impl OrderLog {
    /// Appends an entry, assigning its sequence number.
    pub fn record(&mut self, mut entry: OrderLogEntry) {
        entry.seq = self.entries.len() as u64 + 1;
        self.entries.push(entry);
    }

    pub fn entries(&self) -> &[OrderLogEntry] {
        &self.entries
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

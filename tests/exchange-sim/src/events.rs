//! Events fanned out from the exchange to WebSocket connections.

use std::sync::Arc;

use serde_json::Value;

use crate::market::ProductTick;

/// A change published on the simulator's broadcast channel.
#[derive(Debug, Clone)]
pub enum Event {
    /// Products that moved on a tick (frozen products are absent).
    Market(Arc<Vec<ProductTick>>),
    /// Products whose trading status flags changed.
    Status(Arc<Vec<String>>),
    /// An order of `key_name` changed (rendered for the `user` channel).
    UserOrder(Arc<UserOrder>),
}

#[derive(Debug, Clone)]
pub struct UserOrder {
    pub key_name: String,
    pub product_id: String,
    pub order: Value,
}

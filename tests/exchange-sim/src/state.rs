//! Shared simulator state handed to every handler.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use tokio::sync::{broadcast, watch};

use crate::clock;
use crate::config::SimConfig;
use crate::engine::Exchange;
use crate::events::Event;
use crate::faults::FaultState;
use crate::keys::KeyRegistry;
use crate::market::Market;
use crate::order_log::OrderLog;
use crate::products::{self, ProductSpec};
use crate::ratelimit::RateLimiter;
use crate::stats::Stats;

/// Capacity of the event channel; a WebSocket client further behind is disconnected.
const EVENT_CAPACITY: usize = 4096;

/// Errors starting a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

pub fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the simulator knows. Lock order: `exchange` before `order_log`;
/// `keys` is never held while waiting for `exchange`.
#[derive(Debug)]
pub struct SimState {
    pub config: SimConfig,
    pub specs: Vec<ProductSpec>,
    pub keys: RwLock<KeyRegistry>,
    pub exchange: Mutex<Exchange>,
    pub faults: Mutex<FaultState>,
    pub order_log: Mutex<OrderLog>,
    pub stats: Stats,
    pub limiter: Mutex<RateLimiter>,
    pub events: broadcast::Sender<Event>,
    /// Bumped by `ws_disconnect` to close every WebSocket.
    pub disconnect: watch::Sender<u64>,
    /// Set when the simulator stops.
    pub shutdown: watch::Sender<bool>,
    pub started: Instant,
}

pub type AppState = Arc<SimState>;

impl SimState {
    pub fn new(config: SimConfig) -> Result<AppState, SimError> {
        let specs = products::select(&config.products).map_err(SimError::Config)?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let market = Market::new(specs.clone(), config.seed, config.history_minutes, clock::now());
        let exchange = Exchange::new(market, config.fees.clone(), events.clone());
        let state = Arc::new(Self {
            specs,
            keys: RwLock::new(KeyRegistry::default()),
            exchange: Mutex::new(exchange),
            faults: Mutex::new(FaultState::default()),
            order_log: Mutex::new(OrderLog::default()),
            stats: Stats::default(),
            limiter: Mutex::new(RateLimiter::default()),
            events,
            disconnect: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            started: Instant::now(),
            config,
        });
        for key in state.config.keys.clone() {
            state.register_key(key).map_err(|e| SimError::Config(e.to_string()))?;
        }
        Ok(state)
    }

    /// A fresh market from the configured seed, starting now.
    pub fn new_market(&self) -> Market {
        Market::new(
            self.specs.clone(),
            self.config.seed,
            self.config.history_minutes,
            clock::now(),
        )
    }

    pub fn now_secs(&self) -> i64 {
        clock::now().timestamp()
    }
}

/// Helpers used by handlers.
impl SimState {
    pub fn keys(&self) -> RwLockReadGuard<'_, KeyRegistry> {
        read(&self.keys)
    }

    pub fn keys_mut(&self) -> RwLockWriteGuard<'_, KeyRegistry> {
        write(&self.keys)
    }
}

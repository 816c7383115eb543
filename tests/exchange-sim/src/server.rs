//! Starting and stopping a simulator; the in-process handle tests use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::admin::{AdminError, KeyInfo, SetBalances};
use crate::clock;
use crate::config::{KeySpec, SimConfig};
use crate::faults::{FaultRequest, FaultState};
use crate::order_log::OrderLogEntry;
use crate::products::{ProductFlags, ProductFlagsUpdate};
use crate::rest::{self, gate};
use crate::state::{AppState, SimError, SimState, lock};
use crate::stats::StatsSnapshot;
use crate::{admin, ws};

/// How long [`Simulator::shutdown`] waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The full HTTP application: REST, WebSocket, admin API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(rest::router(&state))
        .merge(admin::router(state.clone()))
        .route("/ws", get(ws::handler))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(rest::not_found)
        .method_not_allowed_fallback(rest::method_not_allowed)
        .layer(from_fn_with_state(state.clone(), gate::record_stats))
        .layer(axum::middleware::from_fn(gate::read_body))
        .with_state(state)
}

/// Resolves once `shutdown` is set.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Steps the market every `config.tick`.
async fn run_ticker(state: AppState) {
    let mut interval = tokio::time::interval(state.config.tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    interval.tick().await;
    let stop = stopped(state.shutdown.subscribe());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = interval.tick() => lock(&state.exchange).tick(clock::now()),
            () = &mut stop => break,
        }
    }
}

/// A running simulator. Dropping it stops the server; prefer [`Simulator::shutdown`].
///
/// ```no_run
/// # async fn demo() -> Result<(), exchange_sim::SimError> {
/// use exchange_sim::{KeyAlgorithm, SimConfig, Simulator, generate_key};
/// let key = generate_key(KeyAlgorithm::Es256);
/// let sim = Simulator::start(SimConfig { keys: vec![key.key_spec()], ..SimConfig::default() }).await?;
/// println!("REST at {}, WebSocket at {}", sim.api_url(), sim.ws_url());
/// sim.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Simulator {
    state: AppState,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    ticker: Option<JoinHandle<()>>,
}

/// Starts a simulator (same as [`Simulator::start`]).
pub async fn serve(config: SimConfig) -> Result<Simulator, SimError> {
    Simulator::start(config).await
}

impl Simulator {
    /// Binds `config.bind` (port 0 for an ephemeral port) and starts serving.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let bind = config.bind;
        let state = SimState::new(config)?;
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| SimError::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SimError::Bind { addr: bind, source })?;
        let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let stop = stopped(state.shutdown.subscribe());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, service).with_graceful_shutdown(stop).await {
                tracing::error!(%error, "server stopped with an error");
            }
        });
        let ticker = (!state.config.tick.is_zero()).then(|| tokio::spawn(run_ticker(state.clone())));
        tracing::info!(%addr, seed = state.config.seed, products = state.specs.len(), "exchange-sim started");
        Ok(Self {
            state,
            addr,
            server: Some(server),
            ticker,
        })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, what the JWT `uri` claim must name (`GET 127.0.0.1:PORT/api/v3/...`).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://host:port/api/v3/brokerage`.
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.addr, rest::BASE)
    }

    /// `ws://host:port/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Registers (or replaces) an API key.
    pub fn register_key(&self, spec: KeySpec) -> Result<KeyInfo, AdminError> {
        self.state.register_key(spec)
    }

    /// Sets balances of a key's portfolio.
    pub fn set_balances(&self, key_name: &str, balances: BTreeMap<String, Decimal>) -> Result<(), AdminError> {
        self.state.set_balances(&SetBalances {
            key_name: key_name.to_string(),
            balances,
        })
    }

    /// Deposits (`amount` > 0) or withdraws (`amount` < 0) `currency` on a key's portfolio.
    pub fn transfer(
        &self,
        key_name: &str,
        currency: &str,
        amount: Decimal,
    ) -> Result<crate::admin::TransferResult, AdminError> {
        self.state.transfer(&crate::admin::Transfer {
            key_name: key_name.to_string(),
            currency: currency.to_string(),
            amount,
        })
    }

    /// Changes a product's status flags.
    pub fn set_product_flags(&self, product_id: &str, update: ProductFlagsUpdate) -> Result<ProductFlags, AdminError> {
        self.state.set_product_flags(product_id, &update)
    }

    /// Applies fault injections (see [`FaultRequest`]).
    pub fn inject(&self, request: FaultRequest) -> Result<FaultState, AdminError> {
        self.state.apply_faults(&request)
    }

    /// Turns every fault off.
    pub fn clear_faults(&self) {
        let _ = self.state.apply_faults(&FaultRequest {
            clear: true,
            ..FaultRequest::default()
        });
    }

    pub fn faults(&self) -> FaultState {
        self.state.fault_state()
    }

    /// The order log (`GET /admin/orders`).
    pub fn order_log(&self) -> Vec<OrderLogEntry> {
        self.state.order_log()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats()
    }

    /// Back to the startup state (keys stay registered).
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Places a market order for a key without its client (e.g. an earlier fill under a bot's
    /// client order id prefix); returns the order id.
    pub fn place_market_order(&self, request: &crate::admin::AdminOrder) -> Result<String, AdminError> {
        self.state.place_market_order(request)
    }

    /// Advances the market `steps` ticks now (useful with `tick: Duration::ZERO`).
    pub fn tick(&self, steps: u32) {
        self.state.tick(steps);
    }

    /// Current mid price of a product.
    pub fn mid_price(&self, product_id: &str) -> Option<Decimal> {
        lock(&self.state.exchange).mid(product_id)
    }

    /// Stops accepting connections, closes WebSockets and waits for the server to finish.
    pub async fn shutdown(mut self) {
        self.state.shutdown.send_replace(true);
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(server) = self.server.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err()
        {
            tracing::warn!("server did not stop within the grace period");
        }
        tracing::info!("exchange-sim stopped");
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.state.shutdown.send_replace(true);
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

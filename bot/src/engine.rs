//! The trading loop: once per cycle, market data → guards → strategy → risk → execution for
//! every symbol, then metrics and the snapshot files. Every stage is its own module; this file
//! only wires them and does the I/O.

mod files;
pub mod flatten;
mod market;

use files::restore_guard_state;

use crate::broker::{Broker, Granularity};
use crate::clock;
use crate::config::BotConfig;
use crate::control::{AckRequest, ModeHandle, source};
use crate::domain::{AccountState, Candle, OrderStatus, Product, Quote, Side, Symbol};
use crate::execution::{ClientIds, Executor, Submitted, build_order};
use crate::guards::{GuardEvent, GuardMonitor};
use crate::risk::{self, Rejection, RiskInput, UtcClock};
use crate::strategy::{Decision, DecisionInput, SymbolStrategy};
use crate::telemetry::metrics::f;
use crate::telemetry::server::AppState;
use crate::telemetry::snapshot::{DecisionView, OrderStats, PositionView, Snapshot, system_view};
use futures::future::join_all;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tradingbot_crds::spec::Guards;
use tradingbot_crds::{Instance, TradingMode};

/// Where the engine writes its files (all optional).
#[derive(Debug, Clone, Default)]
pub struct OutputFiles {
    pub metrics: Option<PathBuf>,
    pub health: Option<PathBuf>,
    /// Guard latch state that must survive a container restart.
    pub state: Option<PathBuf>,
}

/// What one cycle did (for tests and logs).
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    pub decisions: BTreeMap<Symbol, (&'static str, String)>,
    pub placed: usize,
    pub refused: Vec<Rejection>,
    pub errors: Vec<String>,
    pub mode: TradingMode,
}

/// Everything the engine is built from.
pub struct EngineParts<B: Broker> {
    pub config: BotConfig,
    pub instance: Instance,
    pub version: String,
    pub broker: Arc<B>,
    pub executor: Arc<Executor<B>>,
    pub mode: ModeHandle,
    pub app: Arc<AppState>,
    pub acks: mpsc::Receiver<AckRequest>,
    /// Guard levels from the TradingBot, when managed.
    pub spec_guards: Option<watch::Receiver<Option<Guards>>>,
    pub files: OutputFiles,
    pub guards_enabled: bool,
    pub client_id_prefix: String,
}

struct HourlyCache {
    fetched: Instant,
    candles: Vec<Candle>,
}

pub struct Engine<B: Broker> {
    config: BotConfig,
    instance: Instance,
    version: String,
    broker: Arc<B>,
    executor: Arc<Executor<B>>,
    mode: ModeHandle,
    app: Arc<AppState>,
    acks: mpsc::Receiver<AckRequest>,
    spec_guards: Option<watch::Receiver<Option<Guards>>>,
    files: OutputFiles,
    guards: GuardMonitor,
    products: BTreeMap<Symbol, Product>,
    strategies: BTreeMap<Symbol, SymbolStrategy>,
    hourly: BTreeMap<Symbol, HourlyCache>,
    last_quotes: BTreeMap<Symbol, Quote>,
    ids: ClientIds,
    stats: OrderStats,
    cycles: u64,
    started: Instant,
    account_refreshed: Option<Instant>,
    last_decisions: BTreeMap<Symbol, (&'static str, String)>,
    /// The minute (unix seconds / 60) whose closes the volatility guard last read, per symbol.
    closes_minute: BTreeMap<Symbol, i64>,
    /// Inventory caps and withdrawals already accounted for, per symbol.
    inventory_seen: BTreeMap<Symbol, (u64, Decimal)>,
    /// The last write failure of each output file (None once it is written again).
    write_failures: BTreeMap<files::OutputFile, Option<String>>,
    /// Why the guard state read at start could not be used, if so (restricts for good).
    restore_failure: Option<String>,
    /// The broker's last own-inventory figures (for metrics.json).
    inventory: Option<crate::inventory::InventoryReport>,
    /// A flatten request to act on at the next cycle that can trade.
    pending_flatten: Option<String>,
}

impl<B: Broker> Engine<B> {
    /// Build the engine: load product rules (retrying until the exchange answers or `stop`).
    pub async fn start(parts: EngineParts<B>, stop: &mut watch::Receiver<bool>) -> anyhow::Result<Self> {
        let products = loop {
            match parts.broker.products(&parts.config.symbols).await {
                Ok(products) => break products,
                Err(error) => {
                    tracing::warn!(%error, "cannot load product rules yet; retrying");
                    parts.app.metrics.errors.with_label_values(&["exchange"]).inc();
                    parts.app.update_vitals(|v| v.heartbeat = Instant::now());
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stop.changed() => anyhow::bail!("stopped before product rules could be loaded: {error}"),
                    }
                }
            }
        };
        let (restored, restore_failure) = match &parts.files.state {
            Some(path) => restore_guard_state(path),
            None => (None, None),
        };
        if let Some(why) = &restore_failure {
            tracing::error!(event = "guard_state_unreadable", reason = %why, "latched trips may be lost: restricted to ReduceOnly for this run");
        }
        let guards = GuardMonitor::new(parts.config.guards.clone(), parts.guards_enabled, restored);
        let strategies = parts
            .config
            .symbols
            .iter()
            .map(|s| (s.clone(), SymbolStrategy::new(&parts.config.strategy, s)))
            .collect();
        let engine = Self {
            products: products.into_iter().map(|p| (p.symbol.clone(), p)).collect(),
            strategies,
            guards,
            ids: ClientIds::new(&parts.client_id_prefix),
            config: parts.config,
            instance: parts.instance,
            version: parts.version,
            broker: parts.broker,
            executor: parts.executor,
            mode: parts.mode,
            app: parts.app,
            acks: parts.acks,
            spec_guards: parts.spec_guards,
            files: parts.files,
            hourly: BTreeMap::new(),
            last_quotes: BTreeMap::new(),
            stats: OrderStats::default(),
            cycles: 0,
            started: Instant::now(),
            account_refreshed: None,
            last_decisions: BTreeMap::new(),
            closes_minute: BTreeMap::new(),
            inventory_seen: BTreeMap::new(),
            write_failures: BTreeMap::new(),
            restore_failure,
            inventory: None,
            pending_flatten: None,
        };
        let (mode, reason) = engine.guards.mode();
        engine.mode.set(source::GUARDS, mode, reason);
        engine.report_state_health(None);
        Ok(engine)
    }

    pub fn guards(&self) -> &GuardMonitor {
        &self.guards
    }

    /// Run cycles every interval until `stop` (or `cycles` cycles, when given).
    pub async fn run(&mut self, cycles: Option<u64>, stop: &mut watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
            self.run_cycle().await;
            if cycles.is_some_and(|n| self.cycles >= n) {
                return;
            }
        }
    }

    /// One full cycle.
    pub async fn run_cycle(&mut self) -> CycleReport {
        let started = Instant::now();
        let mut report = CycleReport::default();
        let now_ms = clock::unix_ms();
        self.broker.begin_cycle().await;
        self.apply_guard_levels();
        self.process_acks();

        let quotes = self.fetch_quotes(&mut report).await;
        let account = match self.broker.account().await {
            Ok(account) => {
                self.account_refreshed = Some(Instant::now());
                Some(account)
            }
            Err(error) => {
                report.errors.push(format!("account: {error}"));
                None
            }
        };
        let marks: BTreeMap<Symbol, Decimal> = self.last_quotes.iter().map(|(s, q)| (s.clone(), q.mid())).collect();
        self.refresh_minute_closes(now_ms).await;
        self.account_for_inventory(&marks);
        if let Some(account) = &account {
            self.update_guards(account, &marks, now_ms);
        }
        let mode = self.mode.current();
        report.mode = mode.mode;

        match &account {
            Some(account) if mode.known => match self.pending_flatten.take() {
                Some(request) => self.flatten(&request, account, &quotes, &marks, &mut report).await,
                None => self.trade(account, &quotes, &marks, &mut report).await,
            },
            Some(_) => {
                for symbol in &self.config.symbols {
                    report
                        .decisions
                        .insert(symbol.clone(), ("HOLD", "trading mode not known yet".into()));
                }
            }
            None => {
                for symbol in &self.config.symbols {
                    report
                        .decisions
                        .insert(symbol.clone(), ("HOLD", "account state unavailable".into()));
                }
            }
        }
        let account = match report.placed {
            0 => account,
            _ => {
                let after = self.broker.account().await.ok();
                // The files show the inventory and cash of this latest read.
                self.account_for_inventory(&marks);
                after.or(account)
            }
        };
        self.finish_cycle(started, now_ms, account.as_ref(), &marks, &mut report)
            .await;
        report
    }

    fn apply_guard_levels(&mut self) {
        let Some(rx) = &mut self.spec_guards else { return };
        if !rx.has_changed().unwrap_or(false) {
            return;
        }
        let spec = rx.borrow_and_update().clone();
        let levels = match spec {
            Some(spec) => self.config.live_guards(&spec),
            None => self.config.guards.clone(),
        };
        if &levels != self.guards.levels() {
            tracing::info!(
                event = "guard_levels_changed",
                "guard levels updated from the TradingBot"
            );
            self.guards.set_levels(levels);
        }
    }

    fn process_acks(&mut self) {
        while let Ok(ack) = self.acks.try_recv() {
            match ack {
                AckRequest::Trip(id) => match self.guards.acknowledge_trip(&id) {
                    Ok(trip) => {
                        tracing::info!(event = "trip_acknowledged", trip_id = %trip.id, guard = %trip.guard, "trip released by acknowledgement")
                    }
                    Err(why) => {
                        tracing::warn!(event = "trip_ack_refused", trip_id = %id, reason = %why, "acknowledgement refused")
                    }
                },
                AckRequest::Guard(guard) => {
                    for trip in self.guards.acknowledge_guard(&guard) {
                        tracing::info!(event = "trip_acknowledged", trip_id = %trip.id, guard = %trip.guard, source = "operator", "trip released: the operator accepted an acknowledgement");
                    }
                }
                AckRequest::Flatten(id) => self.request_flatten(id),
            }
        }
        let (mode, reason) = self.guards.mode();
        self.mode.set(source::GUARDS, mode, reason);
    }

    async fn fetch_quotes(&mut self, report: &mut CycleReport) -> BTreeMap<Symbol, Quote> {
        let broker = &self.broker;
        let results = join_all(
            self.config
                .symbols
                .iter()
                .map(|s| async move { (s.clone(), broker.quote(s).await) }),
        )
        .await;
        let mut fresh = BTreeMap::new();
        for (symbol, result) in results {
            match result {
                Ok(quote) => {
                    let newer = self.last_quotes.get(&symbol).is_none_or(|q| quote.time_ms >= q.time_ms);
                    if newer {
                        self.last_quotes.insert(symbol.clone(), quote);
                    }
                    fresh.insert(symbol, quote);
                }
                Err(error) => report.errors.push(format!("quote {symbol}: {error}")),
            }
        }
        fresh
    }

    fn update_guards(&mut self, account: &AccountState, marks: &BTreeMap<Symbol, Decimal>, now_ms: i64) {
        let mark_of = |s: &Symbol| marks.get(s).copied();
        let equity = account.equity(mark_of);
        let running_ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let staleness = market::staleness_of(&self.config.symbols, &self.last_quotes, now_ms, running_ms);
        let notionals: Vec<Decimal> = account
            .positions
            .iter()
            .map(|p| p.notional(mark_of(&p.symbol).unwrap_or(p.entry_price)))
            .collect();
        self.guards.measure(equity, now_ms, staleness, &notionals);
        let events = self.guards.evaluate(self.instance, now_ms);
        let latch_changed = !events.is_empty();
        for event in events {
            match event {
                GuardEvent::Tripped(trip) => {
                    tracing::warn!(event = "guard_tripped", trip_id = %trip.id, guard = %trip.guard, level = %trip.level, value = %trip.value, threshold = %trip.threshold, "guard tripped and latched");
                    self.app
                        .metrics
                        .guard_trips
                        .with_label_values(&[trip.guard.as_str(), trip.level.as_str()])
                        .inc();
                }
                GuardEvent::Released { trip, why } => {
                    tracing::info!(event = "guard_released", trip_id = %trip.id, guard = %trip.guard, reason = %why, "latched trip released");
                }
            }
        }
        let (mode, reason) = self.guards.mode();
        self.mode.set(source::GUARDS, mode, reason);
        if latch_changed {
            // A trip is on disk before any order of this cycle.
            self.persist_guard_state();
        }
    }

    async fn trade(
        &mut self,
        account: &AccountState,
        quotes: &BTreeMap<Symbol, Quote>,
        marks: &BTreeMap<Symbol, Decimal>,
        report: &mut CycleReport,
    ) {
        let mode = self.mode.current().mode;
        if mode != TradingMode::Normal {
            let only_increasing = mode == TradingMode::ReduceOnly;
            if let Err(error) = self
                .executor
                .cancel_open_orders(only_increasing, |s| account.position(s))
                .await
            {
                report.errors.push(format!("cancel: {error}"));
            }
        }
        // Entries are sized on what the account can back (never on cash others spent).
        let equity = account.sizing_equity(|s| marks.get(s).copied());
        let clock = UtcClock::at_unix(clock::unix_seconds());
        let now_ms = clock::unix_ms();
        let symbols = self.config.symbols.clone();
        for symbol in &symbols {
            let (Some(quote), Some(product)) = (quotes.get(symbol).copied(), self.products.get(symbol).cloned()) else {
                report
                    .decisions
                    .insert(symbol.clone(), ("HOLD", "no market data".into()));
                continue;
            };
            let hourly = self.hourly_candles(symbol).await;
            let position = account.position(symbol);
            let decision = match self.strategies.get_mut(symbol) {
                Some(strategy) => strategy.decide(
                    &self.config.strategy,
                    DecisionInput {
                        mark: quote.mid(),
                        position,
                        equity,
                        reduce_only: mode != TradingMode::Normal,
                        perpetual: product.is_perpetual,
                        hourly: &hourly,
                    },
                ),
                None => Decision::Hold { reason: "no strategy" },
            };
            let (side, quantity, reduce_only) = match decision {
                Decision::Hold { reason } => {
                    report.decisions.insert(symbol.clone(), ("HOLD", reason.into()));
                    continue;
                }
                Decision::Enter { side, notional, .. } => {
                    (side, notional / quote.taker_price(side).max(Decimal::new(1, 12)), false)
                }
                Decision::Exit { .. } => {
                    let side = if position > Decimal::ZERO {
                        Side::Sell
                    } else {
                        Side::Buy
                    };
                    (side, position.abs(), true)
                }
            };
            let action = decision.action();
            let outcome = self
                .place(
                    symbol,
                    &product,
                    &quote,
                    side,
                    quantity,
                    reduce_only,
                    account,
                    marks,
                    clock,
                    now_ms,
                )
                .await;
            let reason = match outcome {
                Ok(note) => {
                    report.placed += usize::from(note.starts_with("placed"));
                    format!("{}; {note}", decision.reason())
                }
                Err(rejection) => {
                    let text = format!("{}; refused: {rejection}", decision.reason());
                    report.refused.push(rejection);
                    text
                }
            };
            report.decisions.insert(symbol.clone(), (action, reason));
        }
    }

    /// Build, check and submit one order. `Ok` carries a note for the decision log.
    #[allow(clippy::too_many_arguments)]
    async fn place(
        &mut self,
        symbol: &Symbol,
        product: &Product,
        quote: &Quote,
        side: Side,
        quantity: Decimal,
        reduce_only: bool,
        account: &AccountState,
        marks: &BTreeMap<Symbol, Decimal>,
        clock: UtcClock,
        now_ms: i64,
    ) -> Result<String, Rejection> {
        let metrics = &self.app.metrics;
        let refused = |rejection: Rejection| {
            metrics
                .orders_rejected
                .with_label_values(&[rejection.reason.as_str()])
                .inc();
            tracing::info!(event = "order_refused", symbol = %symbol, side = %side, quantity = %quantity, reason = rejection.reason.as_str(), detail = %rejection.message, "order refused");
            rejection
        };
        if let Some(rejection) = self.executor.fenced() {
            return Err(refused(rejection));
        }
        let order = build_order(
            &self.config,
            product,
            quote,
            side,
            quantity,
            reduce_only,
            self.ids.next_id(),
        )
        .map_err(refused)?;
        let mark_of = |s: &Symbol| marks.get(s).copied();
        let input = RiskInput {
            symbol,
            side,
            quantity: order.quantity,
            price: order.kind.limit_price().unwrap_or(quote.taker_price(side)),
            product,
            quote,
            quote_age_seconds: u64::try_from((now_ms - quote.time_ms).max(0) / 1000).unwrap_or(u64::MAX),
            account,
            marks: &mark_of,
            clock,
        };
        let guards = self.guards.levels().clone();
        risk::check(&self.config.risk, &guards, &input).map_err(refused)?;
        self.stats.attempted += 1;
        let position = account.position(symbol);
        let labels = [symbol.as_str(), side.as_str()];
        match self.executor.submit(order.clone(), position).await {
            Submitted::Placed(placed) => {
                self.stats.successful += 1;
                metrics.orders_submitted.with_label_values(&labels).inc();
                if placed.status == OrderStatus::Filled {
                    metrics.orders_filled.with_label_values(&labels).inc();
                }
                tracing::info!(event = "order_placed", symbol = %symbol, side = %side, quantity = %order.quantity, kind = order.kind.name(), client_order_id = %order.client_order_id, order_id = %placed.order_id, status = ?placed.status, reduce_only, "order placed");
                Ok(format!("placed {} {} ({:?})", side, order.quantity, placed.status))
            }
            Submitted::DryRun(order) => {
                metrics.orders_dry_run.with_label_values(&labels).inc();
                tracing::info!(event = "order_dry_run", symbol = %symbol, side = %side, quantity = %order.quantity, kind = order.kind.name(), client_order_id = %order.client_order_id, "dry run: order not sent");
                Ok(format!("dry run: would {} {}", side, order.quantity))
            }
            Submitted::Refused(rejection) => {
                if rejection.reason == risk::RejectReason::Exchange {
                    self.stats.failed += 1;
                    metrics.errors.with_label_values(&["order"]).inc();
                    self.guards.record_error(now_ms);
                }
                Err(refused(rejection))
            }
            Submitted::Failed(error) => {
                self.stats.failed += 1;
                metrics.errors.with_label_values(&["exchange"]).inc();
                self.guards.record_error(now_ms);
                tracing::warn!(event = "order_failed", symbol = %symbol, side = %side, client_order_id = %order.client_order_id, error = %error, "order submission failed");
                Err(Rejection::new(risk::RejectReason::Exchange, error.to_string()))
            }
        }
    }

    /// Hourly candles for the symbol's entry filters, refreshed every 5 minutes.
    async fn hourly_candles(&mut self, symbol: &Symbol) -> Vec<Candle> {
        let Some(filters) = self.config.strategy.for_symbol(symbol).filters else {
            return Vec::new();
        };
        let needed = filters.candles_needed().max(60);
        if let Some(cache) = self.hourly.get(symbol)
            && cache.fetched.elapsed() < Duration::from_secs(300)
        {
            return cache.candles.clone();
        }
        match self.broker.candles(symbol, Granularity::OneHour, needed).await {
            Ok(candles) => {
                self.hourly.insert(
                    symbol.clone(),
                    HourlyCache {
                        fetched: Instant::now(),
                        candles: candles.clone(),
                    },
                );
                candles
            }
            Err(error) => {
                tracing::warn!(%symbol, %error, "hourly candles unavailable");
                self.hourly.get(symbol).map(|c| c.candles.clone()).unwrap_or_default()
            }
        }
    }

    async fn finish_cycle(
        &mut self,
        started: Instant,
        now_ms: i64,
        account: Option<&AccountState>,
        marks: &BTreeMap<Symbol, Decimal>,
        report: &mut CycleReport,
    ) {
        self.cycles += 1;
        let metrics = &self.app.metrics;
        if !report.errors.is_empty() {
            metrics.cycle_errors.inc();
            metrics.errors.with_label_values(&["cycle"]).inc();
            for error in &report.errors {
                tracing::warn!(event = "cycle_error", error = %error, "cycle error");
            }
            self.guards.record_error(now_ms);
        }
        metrics.cycles.inc();
        metrics.cycle_duration.observe(started.elapsed().as_secs_f64());
        metrics.last_cycle.set(clock::unix_ms() as f64 / 1000.0);
        let measured = self.guards.last().clone();
        metrics.equity.set(f(measured.equity));
        metrics
            .equity_peak
            .set(f(self.guards.persisted().peak_equity.unwrap_or_default()));
        metrics.pnl_today.set(f(measured.pnl_today));
        metrics.daily_loss.set(f(measured.daily_loss));
        let ratio = crate::config::lowest_daily_loss_level(self.guards.levels())
            .filter(|l| !l.is_zero())
            .map(|l| measured.daily_loss / l);
        metrics.daily_loss_ratio.set(f(ratio.unwrap_or_default()));
        metrics.drawdown.set(f(measured.drawdown_percent));
        for (symbol, age) in &measured.staleness {
            metrics.staleness.with_label_values(&[symbol.as_str()]).set(f(*age));
        }
        for (symbol, vol) in &measured.volatility {
            metrics.volatility.with_label_values(&[symbol.as_str()]).set(f(*vol));
        }
        metrics.concentration.set(f(measured.concentration));
        for symbol in &self.config.symbols {
            let notional = account
                .map(|a| a.position(symbol).abs() * marks.get(symbol).copied().unwrap_or_default())
                .unwrap_or_default();
            metrics
                .position_notional
                .with_label_values(&[symbol.as_str()])
                .set(f(notional));
        }
        if let Some(a) = account {
            metrics.exposure.set(f(a.exposure(|s| marks.get(s).copied())));
        }
        for guard in tradingbot_crds::guards::GuardKind::ALL {
            for level in [TradingMode::ReduceOnly, TradingMode::Halted] {
                metrics
                    .guard_latched
                    .with_label_values(&[guard.as_str(), level.as_str()])
                    .set(0.0);
            }
        }
        for (guard, level, at) in self.guards.latched() {
            metrics
                .guard_latched
                .with_label_values(&[guard.as_str(), level.as_str()])
                .set(at as f64);
        }
        let open_orders = self.broker.open_orders().await.map(|o| o.len()).unwrap_or(0);
        metrics.open_orders.set(open_orders as i64);
        if let Some(at) = self.account_refreshed {
            metrics.account_age.set(at.elapsed().as_secs_f64());
        }
        let fresh = !self.config.symbols.is_empty()
            && measured
                .staleness
                .values()
                .all(|age| *age <= Decimal::from(self.config.risk.max_staleness_seconds));
        self.app.update_vitals(|v| {
            v.heartbeat = Instant::now();
            v.market_data_fresh = fresh;
        });
        let mode = self.mode.current();
        metrics.set_mode(mode.mode, mode.known);
        let snapshot = self.snapshot(account, marks, report, open_orders, &mode);
        self.write_files(&snapshot, report);
        self.app.set_snapshot(snapshot);
        self.last_decisions = report.decisions.clone();
    }

    fn snapshot(
        &self,
        account: Option<&AccountState>,
        marks: &BTreeMap<Symbol, Decimal>,
        report: &CycleReport,
        open_orders: usize,
        mode: &crate::control::EffectiveMode,
    ) -> Snapshot {
        let measured = self.guards.last();
        Snapshot {
            timestamp: clock::rfc3339_now(),
            profile: self.config.profile.to_string(),
            instance: self.instance.to_string(),
            version: self.version.clone(),
            equity: measured.equity,
            pnl_today: measured.pnl_today,
            drawdown_percent: measured.drawdown_percent,
            positions: account
                .map(|a| {
                    a.positions
                        .iter()
                        .map(|p| PositionView {
                            symbol: p.symbol.to_string(),
                            quantity: p.quantity,
                            side: p.side(),
                            entry_price: p.entry_price,
                            mark_price: marks.get(&p.symbol).copied(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            decisions: report
                .decisions
                .iter()
                .map(|(s, (action, reason))| {
                    (
                        s.to_string(),
                        DecisionView {
                            action,
                            reason: reason.clone(),
                        },
                    )
                })
                .collect(),
            order_stats: self.stats,
            open_orders,
            uptime_seconds: self.started.elapsed().as_secs(),
            cycles: self.cycles,
            trading_mode: mode.mode,
            mode_reason: mode.reason.clone(),
            mode_known: mode.known,
            dry_run: self.config.dry_run,
            trips: self.guards.trips().to_vec(),
            inventory: self.inventory.clone(),
            system: system_view(),
        }
    }

    /// Stop trading for good: halt, cancel open orders (unless told not to), write the files.
    pub async fn shutdown(&mut self, cancel_orders: bool) {
        self.mode.set(source::SHUTDOWN, TradingMode::Halted, "shutting down");
        if cancel_orders {
            match self.executor.cancel_open_orders(false, |_| Decimal::ZERO).await {
                Ok(n) => tracing::info!(
                    event = "orders_cancelled",
                    count = n,
                    "open orders cancelled on shutdown"
                ),
                Err(error) => tracing::error!(%error, "could not cancel open orders on shutdown"),
            }
        }
        let mode = self.mode.current();
        self.app.metrics.set_mode(mode.mode, mode.known);
        let marks: BTreeMap<Symbol, Decimal> = self.last_quotes.iter().map(|(s, q)| (s.clone(), q.mid())).collect();
        let account = self.broker.account().await.ok();
        self.account_for_inventory(&marks);
        let report = CycleReport {
            mode: mode.mode,
            decisions: self.last_decisions.clone(),
            ..Default::default()
        };
        let open = self.broker.open_orders().await.map(|o| o.len()).unwrap_or(0);
        let snapshot = self.snapshot(account.as_ref(), &marks, &report, open, &mode);
        self.write_files(&snapshot, &report);
        self.app.set_snapshot(snapshot);
    }
}

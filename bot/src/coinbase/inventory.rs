//! The Coinbase client's side of the bot's own inventory ([`crate::inventory`]): the ledger is
//! rebuilt from the exchange's order history (`GET /orders/historical/batch`, the bot's
//! markets, orders whose client order id carries the bot's prefix), kept current from every
//! order the client places or reads, refreshed every cycle (orders created since the last
//! refresh, plus own orders that may still fill), fully rebuilt every `--account-interval`,
//! and persisted next to the guard state so a restart starts from it while history loads.
//!
//! Reconciliation: whenever the account holds less of a coin than the ledger (a person moved
//! coins away), the ledger is capped to what exists, and the event is logged and reported.
//!
//! The same file keeps the bot's cash books ([`crate::cash`]): opened at the first account
//! read without books, then the bot's cash is their baseline plus its own fills' cash flows.

use super::broker::CoinbaseBroker;
use super::wire;
use crate::broker::BrokerError;
use crate::cash::{CashBooks, CashReport};
use crate::domain::{Order, Side, Symbol};
use crate::inventory::{InventoryReport, Ledger};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Orders per history page (the API's largest).
const HISTORY_PAGE: usize = 1000;
/// History pages read before giving up (a loop guard).
const MAX_HISTORY_PAGES: usize = 10_000;
/// The incremental refresh looks this far before the previous one (clock skew, late writes).
const REFRESH_OVERLAP_MS: i64 = 120_000;
/// Own orders that may still fill, looked up one by one per refresh at most.
const MAX_PENDING_LOOKUPS: usize = 25;

/// Where and how the inventory is kept.
#[derive(Debug, Clone)]
pub struct InventoryOptions {
    /// Client order id prefix of this bot identity: its orders, its coins.
    pub prefix: String,
    /// The persisted ledger (None: memory only).
    pub file: Option<PathBuf>,
    /// A full rebuild from history this often (`--account-interval`).
    pub full_rebuild_every: Duration,
}

impl InventoryOptions {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            file: None,
            full_rebuild_every: Duration::from_secs(300),
        }
    }
}

/// What the file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    prefix: String,
    ledger: Ledger,
    /// The bot's cash books (absent in files of versions before them: opened at the next read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    books: Option<CashBooks>,
}

#[derive(Debug, Default)]
struct State {
    ledger: Ledger,
    /// A full rebuild from the exchange's history succeeded at least once.
    rebuilt: bool,
    /// The ledger came from the file (usable until history can be read).
    from_file: bool,
    last_full: Option<Instant>,
    last_rebuild_ms: Option<i64>,
    /// Unix ms just before the last successful refresh started.
    refreshed_from_ms: Option<i64>,
    held: BTreeMap<Symbol, Decimal>,
    /// Caps by this process: how many, and the quantity they removed.
    caps: BTreeMap<Symbol, (u64, Decimal)>,
    last_error: Option<String>,
    books: Option<CashBooks>,
    /// The cash figures of the last account read.
    cash: Option<CashReport>,
}

/// The bot's own inventory on Coinbase (shared by the client's calls).
#[derive(Debug)]
pub struct InventoryBook {
    options: InventoryOptions,
    state: Mutex<State>,
}

impl InventoryBook {
    /// A book for `options`, starting from the persisted ledger when there is one.
    pub fn new(options: InventoryOptions) -> Self {
        let mut state = State::default();
        if let Some(path) = &options.file {
            match std::fs::read_to_string(path) {
                Ok(text) => match serde_json::from_str::<Persisted>(&text) {
                    Ok(p) if p.prefix == options.prefix => {
                        state.ledger = p.ledger;
                        state.books = p.books;
                        state.from_file = true;
                    }
                    Ok(p) => {
                        tracing::warn!(path = %path.display(), file_prefix = %p.prefix, "the inventory file belongs to another bot identity; ignoring it")
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "unreadable inventory file; the ledger is rebuilt from the exchange's history")
                    }
                },
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => tracing::warn!(path = %path.display(), %error, "cannot read the inventory file"),
            }
        }
        Self {
            options,
            state: Mutex::new(state),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.options.prefix
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record orders (any; only own spot orders count). Persists when something changed.
    pub fn record<'a>(&self, orders: impl IntoIterator<Item = &'a Order>) {
        let changed = {
            let mut state = self.lock();
            let mut changed = false;
            for order in orders {
                changed |= state.ledger.record(&self.options.prefix, order);
            }
            changed
        };
        if changed {
            self.persist();
        }
    }

    /// Whether the ledger can be used (rebuilt from history, or loaded from the file).
    pub fn usable(&self) -> bool {
        let state = self.lock();
        state.rebuilt || state.from_file
    }

    fn full_rebuild_due(&self) -> bool {
        let state = self.lock();
        !state.rebuilt
            || state
                .last_full
                .is_none_or(|t| t.elapsed() >= self.options.full_rebuild_every)
    }

    fn note_error(&self, error: &BrokerError) {
        self.lock().last_error = Some(error.to_string());
    }

    /// What the bot may still sell of `symbol` (own inventory less its resting sells, never
    /// more than the account held at the last read).
    pub fn sellable(&self, symbol: &Symbol) -> Decimal {
        let state = self.lock();
        let sellable = state.ledger.sellable(symbol);
        state.held.get(symbol).map_or(sellable, |held| sellable.min(*held))
    }

    /// Own inventory of each `(symbol, held)`, capping the ledger where the account holds
    /// less; returns `(symbol, own quantity, cost basis)`.
    fn own_positions(&self, holdings: &[(Symbol, Decimal)]) -> Vec<(Symbol, Decimal, Option<Decimal>)> {
        let mut capped = Vec::new();
        let own = {
            let mut state = self.lock();
            let mut own = Vec::new();
            for (symbol, held) in holdings {
                state.held.insert(symbol.clone(), *held);
                if let Some(excess) = state.ledger.cap_to(symbol, *held) {
                    let caps = state.caps.entry(symbol.clone()).or_default();
                    caps.0 += 1;
                    caps.1 += excess;
                    capped.push((symbol.clone(), excess, *held));
                }
                own.push((
                    symbol.clone(),
                    state.ledger.quantity(symbol).min(*held),
                    state.ledger.entry_price(symbol),
                ));
            }
            own
        };
        for (symbol, excess, held) in &capped {
            tracing::warn!(event = "inventory_capped", symbol = %symbol, removed = %excess, held = %held, "the account holds less than the bot bought (coins moved away?): the bot's inventory is capped to what exists");
        }
        if !capped.is_empty() {
            self.persist();
        }
        own
    }

    /// The bot's own cash in `currency`, given the account's balance of it (`total`, available
    /// plus on hold, and `available`): its books' baseline plus its own fills' cash flows. The
    /// books are opened at the first call without them (and persisted).
    pub fn own_cash(&self, currency: &str, total: Decimal, available: Decimal) -> CashReport {
        let (report, opened) = {
            let mut state = self.lock();
            let flows = state.ledger.cash_flow(currency);
            let reopen = state.books.as_ref().is_none_or(|b| b.currency != currency);
            if reopen {
                state.books = None;
            }
            let books = state
                .books
                .get_or_insert_with(|| CashBooks::open(currency, total, flows, crate::clock::unix_ms()));
            let report = CashReport::new(books, flows, total, available);
            state.cash = Some(report.clone());
            (report, reopen)
        };
        if opened {
            tracing::info!(event = "cash_books_opened", currency = %report.currency, baseline = %report.baseline, books = %report.books, "the bot's cash books are opened: its cash is this balance plus the cash flows of its own fills from now on (other bots' trades, deposits and withdrawals are not its)");
            self.persist();
        }
        report
    }

    /// Whether any of `holdings` is below the ledger (a cap would happen).
    fn short_of_ledger(&self, holdings: &[(Symbol, Decimal)]) -> bool {
        let state = self.lock();
        holdings.iter().any(|(s, held)| state.ledger.quantity(s) > *held)
    }

    /// The figures for metrics and metrics.json.
    pub fn report(&self) -> InventoryReport {
        let state = self.lock();
        let symbols = state
            .held
            .iter()
            .map(|(symbol, held)| {
                let caps = state.caps.get(symbol).copied().unwrap_or_default();
                (symbol.clone(), state.ledger.figures(symbol, *held, caps))
            })
            .collect();
        InventoryReport {
            symbols,
            rebuilt_from_history: state.rebuilt,
            last_rebuild_ms: state.last_rebuild_ms,
            last_error: state.last_error.clone(),
            cash: state.cash.clone(),
        }
    }

    fn persist(&self) {
        let Some(path) = &self.options.file else { return };
        let persisted = {
            let state = self.lock();
            Persisted {
                prefix: self.options.prefix.clone(),
                ledger: state.ledger.clone(),
                books: state.books.clone(),
            }
        };
        if let Err(error) = crate::telemetry::snapshot::write_json_atomically(path, &persisted) {
            tracing::warn!(path = %path.display(), %error, "cannot persist the inventory ledger (the exchange's history stays the authority)");
            self.lock().last_error = Some(format!("cannot write {}: {error}", path.display()));
        }
    }
}

impl CoinbaseBroker {
    /// Own orders on the bot's spot markets created since `since_ms` (all, when `None`).
    async fn own_order_history(&self, since_ms: Option<i64>) -> Result<Vec<Order>, BrokerError> {
        let Some(book) = self.inventory_book() else {
            return Ok(Vec::new());
        };
        let products = self.spot_product_ids();
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_HISTORY_PAGES {
            let mut query: Vec<(&str, String)> = vec![("limit", HISTORY_PAGE.to_string())];
            query.extend(products.iter().map(|id| ("product_ids", id.clone())));
            if let Some(since) = since_ms {
                query.push(("start_date", crate::clock::rfc3339_ms(since)));
            }
            if let Some(c) = &cursor {
                query.push(("cursor", c.clone()));
            }
            let bytes = self.rest().get("/orders/historical/batch", &query).await?;
            let page: wire::OrdersPage = wire::decode("order history", &bytes)?;
            for w in page.orders {
                let own = w
                    .client_order_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with(book.prefix()));
                if !own {
                    continue;
                }
                match self.order_from_wire(w) {
                    Ok(order) => orders.push(order),
                    Err(error) => {
                        // A record we cannot read is a hole in the ledger: say so, keep going
                        // (the balance cap still bounds what the bot believes it owns).
                        tracing::warn!(%error, "an own order in the history could not be read");
                        book.note_error(&error);
                    }
                }
            }
            match page.cursor.filter(|c| !c.is_empty()) {
                Some(next) if page.has_next.is_true() && cursor.as_ref() != Some(&next) => cursor = Some(next),
                _ => return Ok(orders),
            }
        }
        Err(BrokerError::Protocol(format!(
            "order history: more than {MAX_HISTORY_PAGES} pages"
        )))
    }

    /// Bring the ledger up to date: a full rebuild when due, else the orders created since
    /// the last refresh and the own orders that may still fill.
    pub async fn refresh_inventory(&self) -> Result<(), BrokerError> {
        let Some(book) = self.inventory_book() else {
            return Ok(());
        };
        let started_ms = crate::clock::unix_ms();
        let full = book.full_rebuild_due();
        let since = if full {
            None
        } else {
            book.lock().refreshed_from_ms.map(|t| t - REFRESH_OVERLAP_MS)
        };
        let result = self.own_order_history(since).await;
        let orders = match result {
            Ok(orders) => orders,
            Err(error) => {
                book.note_error(&error);
                return Err(error);
            }
        };
        let read = orders.len();
        let mut seen: std::collections::BTreeSet<String> = orders.iter().map(|o| o.order_id.clone()).collect();
        book.record(&orders);
        let pending = |seen: &std::collections::BTreeSet<String>| -> Vec<String> {
            book.lock()
                .ledger
                .pending()
                .into_iter()
                .filter(|id| !seen.contains(id))
                .collect()
        };
        if !pending(&seen).is_empty() {
            // Older own orders that may still fill: one listing of the open ones (it records
            // them), then a lookup only of those that finished since.
            let open = crate::broker::Broker::open_orders(self)
                .await
                .inspect_err(|e| book.note_error(e))?;
            seen.extend(open.into_iter().map(|o| o.order_id));
        }
        for id in pending(&seen).into_iter().take(MAX_PENDING_LOOKUPS) {
            match self.get_order(&id).await {
                Ok(order) => book.record([&order]),
                Err(BrokerError::NotFound(_)) => {
                    tracing::warn!(order_id = %id, "an own order is no longer known to the exchange: it fills no more");
                    book.lock().ledger.close(&id);
                }
                Err(error) => {
                    book.note_error(&error);
                    return Err(error);
                }
            }
        }
        let mut state = book.lock();
        state.refreshed_from_ms = Some(started_ms);
        state.last_error = None;
        if full {
            let first = !state.rebuilt;
            state.rebuilt = true;
            state.last_full = Some(Instant::now());
            state.last_rebuild_ms = Some(started_ms);
            drop(state);
            if first {
                tracing::info!(event = "inventory_rebuilt", orders = read, prefix = %book.prefix(), "own inventory rebuilt from the exchange's order history");
            }
        }
        Ok(())
    }

    /// Make sure the ledger can be used: rebuild it now if it never was and no file had it.
    async fn ensure_inventory(&self) -> Result<(), BrokerError> {
        let Some(book) = self.inventory_book() else {
            return Ok(());
        };
        if book.usable() {
            return Ok(());
        }
        self.refresh_inventory().await.map_err(|error| {
            BrokerError::Unavailable(format!(
                "the bot's own inventory is unknown until the exchange's order history can be read: {error}"
            ))
        })
    }

    /// The bot's own spot positions given what the account holds: `(symbol, quantity, cost)`.
    pub(super) async fn own_spot(
        &self,
        holdings: &[(Symbol, Decimal)],
    ) -> Result<Vec<(Symbol, Decimal, Option<Decimal>)>, BrokerError> {
        let Some(book) = self.inventory_book() else {
            // No inventory book (no credentials): nothing is the bot's.
            return Ok(holdings.iter().map(|(s, _)| (s.clone(), Decimal::ZERO, None)).collect());
        };
        self.ensure_inventory().await?;
        if book.short_of_ledger(holdings) && !book.lock().ledger.pending().is_empty() {
            // A resting sell may have filled since the last refresh: look before capping.
            if let Err(error) = self.refresh_inventory().await {
                tracing::warn!(%error, "inventory refresh before capping failed");
            }
        }
        Ok(book.own_positions(holdings))
    }

    /// Refuse a spot SELL beyond what the bot owns (the last line behind the risk checks).
    pub(super) async fn check_own_sell(
        &self,
        symbol: &Symbol,
        side: Side,
        quantity: Decimal,
    ) -> Result<(), BrokerError> {
        if side == Side::Buy || symbol.is_perpetual() {
            return Ok(());
        }
        let Some(book) = self.inventory_book() else {
            return Ok(());
        };
        self.ensure_inventory().await?;
        let sellable = book.sellable(symbol);
        crate::inventory::check_spot_sell(symbol, side, quantity, sellable).map_err(|r| BrokerError::Rejected {
            reason: "SPOT_SHORT".into(),
            message: r.message,
        })
    }
}

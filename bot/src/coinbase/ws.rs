//! The market data WebSocket: best bid/ask per product from `level2` (snapshot then absolute
//! updates) and `ticker`, kept alive by `heartbeats`.
//!
//! Every envelope's `sequence_num` must be one more than the previous on the connection; a
//! gap means a message was lost, so the book cannot be trusted: the feed drops the
//! connection, reconnects, resubscribes and rebuilds from a fresh snapshot. Until then (and
//! whenever the socket is down) [`MarketFeed::quote`] answers `None` and the broker falls
//! back to REST. Closes, errors and silence (no message at all, heartbeats included, for
//! [`FeedOptions::silence_timeout`]) reconnect with jittered exponential backoff.
//!
//! Staleness: each product records the time of its last *good* market-data message (an
//! applied book or ticker update; heartbeats do not count). That time is the exchange's:
//! the book's `event_time` when its updates carry a real one, else the envelope `timestamp`,
//! never later than the envelope and never later than our receive time (so an exchange clock
//! running ahead cannot make data look younger than it is). A frozen feed keeps the socket alive with heartbeats
//! while this time stops advancing, which is exactly what the staleness guard needs to see.

use super::jwt::JwtSigner;
use super::wire::{self, Num};
use crate::domain::Quote;
use futures::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Channels subscribed, one subscribe message each.
const CHANNELS: [&str; 3] = ["heartbeats", "level2", "ticker"];
/// More levels than this on one side of a book means something is wrong: resynchronise.
const MAX_LEVELS: usize = 200_000;

#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// e.g. `wss://advanced-trade-ws.coinbase.com`.
    pub url: String,
    /// Exchange product ids.
    pub products: Vec<String>,
    /// Signs the `jwt` of each subscribe message when credentials exist.
    pub signer: Option<JwtSigner>,
    pub connect_timeout: Duration,
    /// Reconnect when nothing at all arrives for this long.
    pub silence_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl FeedOptions {
    pub fn new(url: impl Into<String>, products: Vec<String>, signer: Option<JwtSigner>) -> Self {
        Self {
            url: url.into(),
            products,
            signer,
            connect_timeout: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// Counters of the feed (for tests, logs and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeedStats {
    /// Successful connections (the first included).
    pub connects: u64,
    /// Connections ended for any reason and retried.
    pub reconnects: u64,
    /// Sequence gaps detected.
    pub gaps: u64,
    /// `level2` snapshots applied.
    pub snapshots: u64,
    /// Envelopes received.
    pub messages: u64,
    /// Error messages, malformed messages and failed connection attempts.
    pub errors: u64,
    pub connected: bool,
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    reconnects: AtomicU64,
    gaps: AtomicU64,
    snapshots: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
    connected: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Top {
    bid: Decimal,
    bid_size: Decimal,
    ask: Decimal,
    ask_size: Decimal,
}

#[derive(Debug, Default)]
struct Book {
    bids: BTreeMap<Decimal, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    /// A snapshot was applied on the current connection.
    synced: bool,
    /// Best bid/ask from the ticker channel on the current connection.
    ticker: Option<Top>,
    /// Time of the last good market-data message for this product.
    last_good_ms: Option<i64>,
}

impl Book {
    fn top(&self) -> Option<Top> {
        if self.synced {
            let bid = self.bids.last_key_value();
            let ask = self.asks.first_key_value();
            if let (Some((&bid, &bid_size)), Some((&ask, &ask_size))) = (bid, ask)
                && bid < ask
            {
                return Some(Top {
                    bid,
                    bid_size,
                    ask,
                    ask_size,
                });
            }
        }
        self.ticker.filter(|t| t.bid < t.ask)
    }
}

#[derive(Debug, Default)]
struct Shared {
    books: Mutex<HashMap<String, Book>>,
    counters: Counters,
}

impl Shared {
    fn books(&self) -> MutexGuard<'_, HashMap<String, Book>> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection ended: nothing on it can be trusted to stay current.
    fn invalidate(&self) {
        for book in self.books().values_mut() {
            book.synced = false;
            book.ticker = None;
            book.bids.clear();
            book.asks.clear();
        }
    }
}

/// A running market data feed. Dropping it stops the connection task.
pub struct MarketFeed {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for MarketFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarketFeed").field("stats", &self.stats()).finish()
    }
}

impl Drop for MarketFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MarketFeed {
    /// Start connecting in the background (needs a Tokio runtime).
    pub fn start(options: FeedOptions) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shared = Arc::new(Shared::default());
        {
            let mut books = shared.books();
            for product in &options.products {
                books.entry(product.clone()).or_default();
            }
        }
        let task = tokio::spawn(run(shared.clone(), options)).abort_handle();
        Self { shared, task }
    }

    /// Best bid/ask of `product_id` when the feed has a trustworthy book (or ticker) for it.
    pub fn quote(&self, product_id: &str) -> Option<Quote> {
        let books = self.shared.books();
        let book = books.get(product_id)?;
        let time_ms = book.last_good_ms?;
        let top = book.top()?;
        Some(Quote {
            bid: top.bid,
            bid_size: top.bid_size,
            ask: top.ask,
            ask_size: top.ask_size,
            time_ms,
        })
    }

    pub fn stats(&self) -> FeedStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FeedStats {
            connects: get(&c.connects),
            reconnects: get(&c.reconnects),
            gaps: get(&c.gaps),
            snapshots: get(&c.snapshots),
            messages: get(&c.messages),
            errors: get(&c.errors),
            connected: c.connected.load(Ordering::Relaxed),
        }
    }

    /// Stop the connection task.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn run(shared: Arc<Shared>, options: FeedOptions) {
    let mut failures: u32 = 0;
    loop {
        let (healthy, reason) = connection(&shared, &options).await;
        shared.counters.connected.store(false, Ordering::Relaxed);
        shared.invalidate();
        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        failures = if healthy { 0 } else { failures.saturating_add(1) };
        let step = options
            .backoff_base
            .saturating_mul(1u32 << failures.min(16))
            .min(options.backoff_max);
        let wait = step / 2 + Duration::from_millis(rand::thread_rng().gen_range(0..=step.as_millis() as u64 / 2));
        if healthy {
            tracing::info!(url = %options.url, reason = %reason, wait_ms = wait.as_millis() as u64, "market data WebSocket reconnecting");
        } else {
            tracing::warn!(url = %options.url, reason = %reason, wait_ms = wait.as_millis() as u64, "market data WebSocket failed; reconnecting");
        }
        tokio::time::sleep(wait).await;
    }
}

/// One connection, until it ends. Returns whether it delivered a snapshot (healthy) and why
/// it ended.
async fn connection(shared: &Shared, options: &FeedOptions) -> (bool, String) {
    let counters = &shared.counters;
    let connected = tokio::time::timeout(options.connect_timeout, tokio_tungstenite::connect_async(&options.url)).await;
    let stream = match connected {
        Ok(Ok((stream, _response))) => stream,
        Ok(Err(error)) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return (false, format!("connect failed: {error}"));
        }
        Err(_) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return (false, "connect timed out".into());
        }
    };
    counters.connects.fetch_add(1, Ordering::Relaxed);
    counters.connected.store(true, Ordering::Relaxed);
    let (mut sink, mut stream) = stream.split();
    for channel in CHANNELS {
        let mut message = json!({
            "type": "subscribe",
            "product_ids": options.products,
            "channel": channel,
        });
        if let (Some(signer), Some(map)) = (&options.signer, message.as_object_mut()) {
            map.insert("jwt".into(), signer.ws_token().into());
        }
        // The message itself is never logged: its `jwt` is a bearer credential.
        tracing::debug!(
            channel,
            products = options.products.len(),
            signed = options.signer.is_some(),
            "subscribing"
        );
        let sent = tokio::time::timeout(options.connect_timeout, sink.send(Message::text(message.to_string()))).await;
        if !matches!(sent, Ok(Ok(()))) {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return (false, format!("could not subscribe to {channel}"));
        }
    }
    let mut healthy = false;
    let mut expected: Option<u64> = None;
    loop {
        let next = match tokio::time::timeout(options.silence_timeout, stream.next()).await {
            Ok(next) => next,
            Err(_) => return (healthy, format!("silent for {} s", options.silence_timeout.as_secs())),
        };
        let text = match next {
            None => return (healthy, "closed".into()),
            Some(Err(error)) => return (healthy, format!("read failed: {error}")),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return (healthy, format!("closed by the exchange: {why}"));
            }
            Some(Ok(_)) => continue,
        };
        let received_ms = crate::clock::unix_ms();
        match handle(shared, options, text.as_str(), &mut expected, received_ms) {
            Ok(Handled::Snapshot) => healthy = true,
            Ok(Handled::Other) => {}
            Err(reason) => return (healthy, reason),
        }
    }
}

#[derive(Debug)]
enum Handled {
    Snapshot,
    Other,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
    channel: Option<String>,
    timestamp: Option<String>,
    sequence_num: Option<u64>,
    #[serde(default)]
    events: Vec<Value>,
}

#[derive(Deserialize)]
struct L2Event {
    #[serde(rename = "type")]
    kind: Option<String>,
    product_id: Option<String>,
    #[serde(default)]
    updates: Vec<L2Update>,
}

#[derive(Deserialize)]
struct L2Update {
    side: Option<String>,
    price_level: Num,
    new_quantity: Num,
    event_time: Option<String>,
}

/// 2001-01-01: event times before this are placeholders (snapshots may carry the epoch).
const PLAUSIBLE_MS: i64 = 978_307_200_000;

#[derive(Deserialize)]
struct TickerEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    tickers: Vec<Ticker>,
}

#[derive(Deserialize)]
struct Ticker {
    product_id: Option<String>,
    #[serde(default)]
    best_bid: Num,
    #[serde(default)]
    best_bid_quantity: Num,
    #[serde(default)]
    best_ask: Num,
    #[serde(default)]
    best_ask_quantity: Num,
}

/// Apply one message. `Err` ends the connection with the reason.
fn handle(
    shared: &Shared,
    options: &FeedOptions,
    text: &str,
    expected: &mut Option<u64>,
    received_ms: i64,
) -> Result<Handled, String> {
    let counters = &shared.counters;
    let malformed = |what: &str| {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        format!("malformed {what} message; resynchronising")
    };
    let envelope: Envelope = serde_json::from_str(text).map_err(|_| malformed("WebSocket"))?;
    if envelope.kind.as_deref() == Some("error") {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        let message: String = envelope.message.unwrap_or_default().chars().take(200).collect();
        return Err(format!("the exchange sent an error: {message}"));
    }
    let Some(sequence) = envelope.sequence_num else {
        // Not an envelope (e.g. an informational message): nothing to apply.
        return Ok(Handled::Other);
    };
    counters.messages.fetch_add(1, Ordering::Relaxed);
    match *expected {
        Some(next) if sequence < next => return Ok(Handled::Other), // a duplicate
        Some(next) if sequence > next => {
            counters.gaps.fetch_add(1, Ordering::Relaxed);
            return Err(format!(
                "sequence gap: expected {next}, got {sequence}; resubscribing for a fresh snapshot"
            ));
        }
        _ => {}
    }
    *expected = Some(sequence.saturating_add(1));
    let data_ms = envelope
        .timestamp
        .as_deref()
        .and_then(|t| wire::parse_time_ms("timestamp", t).ok())
        .map_or(received_ms, |t| t.min(received_ms));
    match envelope.channel.as_deref() {
        Some("l2_data") => {
            let mut snapshot = false;
            for event in envelope.events {
                let event: L2Event = serde_json::from_value(event).map_err(|_| malformed("l2_data"))?;
                snapshot |= apply_l2(shared, options, event, data_ms).inspect_err(|_| {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                })?;
            }
            Ok(if snapshot { Handled::Snapshot } else { Handled::Other })
        }
        Some("ticker") | Some("ticker_batch") => {
            for event in envelope.events {
                let event: TickerEvent = serde_json::from_value(event).map_err(|_| malformed("ticker"))?;
                let snapshot = event.kind.as_deref() == Some("snapshot");
                for ticker in event.tickers {
                    apply_ticker(shared, ticker, data_ms, snapshot);
                }
            }
            Ok(Handled::Other)
        }
        _ => Ok(Handled::Other),
    }
}

/// Apply a `level2` event; returns whether it was a snapshot.
fn apply_l2(shared: &Shared, options: &FeedOptions, event: L2Event, data_ms: i64) -> Result<bool, String> {
    let Some(product) = event.product_id.filter(|p| options.products.contains(p)) else {
        return Ok(false);
    };
    let snapshot = event.kind.as_deref() == Some("snapshot");
    let mut changes = Vec::with_capacity(event.updates.len());
    // The book's own time when its updates carry one (never later than the envelope's).
    let mut book_ms: Option<i64> = None;
    for update in event.updates {
        if let Some(t) = update
            .event_time
            .as_deref()
            .and_then(|t| wire::parse_time_ms("event_time", t).ok())
            .filter(|t| *t > PLAUSIBLE_MS)
        {
            book_ms = Some(book_ms.map_or(t, |b| b.max(t)));
        }
        let price = update.price_level.req("price_level").map_err(|e| e.to_string())?;
        let quantity = update.new_quantity.req("new_quantity").map_err(|e| e.to_string())?;
        if price <= Decimal::ZERO || quantity < Decimal::ZERO {
            return Err(format!("{product}: negative or zero price level; resynchronising"));
        }
        let bid = match update.side.as_deref() {
            Some("bid") => true,
            Some("offer") | Some("ask") => false,
            _ => return Err(format!("{product}: l2 update without a known side; resynchronising")),
        };
        changes.push((bid, price, quantity));
    }
    let mut books = shared.books();
    let book = books.entry(product.clone()).or_default();
    if snapshot {
        book.bids.clear();
        book.asks.clear();
        book.synced = true;
        shared.counters.snapshots.fetch_add(1, Ordering::Relaxed);
    } else if !book.synced {
        // An update before any snapshot on this connection cannot be placed on a book.
        return Ok(false);
    }
    for (bid, price, quantity) in changes {
        let side = if bid { &mut book.bids } else { &mut book.asks };
        if quantity.is_zero() {
            side.remove(&price);
        } else {
            side.insert(price, quantity);
        }
    }
    if book.bids.len() > MAX_LEVELS || book.asks.len() > MAX_LEVELS {
        return Err(format!(
            "{product}: book deeper than {MAX_LEVELS} levels; resynchronising"
        ));
    }
    book.last_good_ms = Some(book_ms.map_or(data_ms, |t| t.min(data_ms)));
    Ok(snapshot)
}

/// Apply a ticker. A ticker *snapshot* (sent on subscribe) carries no time of its own and may
/// describe a market that has not moved for a while, so it does not make known data look
/// fresher; ticker updates do.
fn apply_ticker(shared: &Shared, ticker: Ticker, data_ms: i64, snapshot: bool) {
    let Some(product) = ticker.product_id else { return };
    let parse = |n: &Num, f: &str| n.opt(f).ok().flatten();
    let top = match (
        parse(&ticker.best_bid, "best_bid"),
        parse(&ticker.best_bid_quantity, "best_bid_quantity"),
        parse(&ticker.best_ask, "best_ask"),
        parse(&ticker.best_ask_quantity, "best_ask_quantity"),
    ) {
        (Some(bid), bid_size, Some(ask), ask_size) if bid > Decimal::ZERO && ask > bid => Top {
            bid,
            bid_size: bid_size.unwrap_or_default().max(Decimal::ZERO),
            ask,
            ask_size: ask_size.unwrap_or_default().max(Decimal::ZERO),
        },
        _ => return,
    };
    let mut books = shared.books();
    if let Some(book) = books.get_mut(&product) {
        book.ticker = Some(top);
        if !snapshot || book.last_good_ms.is_none() {
            book.last_good_ms = Some(data_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn feed() -> (Shared, FeedOptions) {
        let options = FeedOptions::new("ws://unused", vec!["BTC-USD".into()], None);
        let shared = Shared::default();
        shared.books().insert("BTC-USD".into(), Book::default());
        (shared, options)
    }

    fn l2(seq: u64, kind: &str, updates: Value) -> String {
        json!({"channel":"l2_data","timestamp":"2020-01-01T00:00:00Z","sequence_num":seq,
               "events":[{"type":kind,"product_id":"BTC-USD","updates":updates}]})
        .to_string()
    }

    #[test]
    fn snapshot_updates_and_gaps() {
        let (shared, options) = feed();
        let mut expected = None;
        let snap = l2(
            0,
            "snapshot",
            json!([{"side":"bid","price_level":"100","new_quantity":"1"},
                   {"side":"bid","price_level":"99","new_quantity":"2"},
                   {"side":"offer","price_level":"101","new_quantity":"3"}]),
        );
        assert!(matches!(
            handle(&shared, &options, &snap, &mut expected, 5_000_000_000_000),
            Ok(Handled::Snapshot)
        ));
        let update = l2(
            1,
            "update",
            json!([{"side":"bid","price_level":"100","new_quantity":"0"}]),
        );
        handle(&shared, &options, &update, &mut expected, 5_000_000_000_000).unwrap();
        let books = shared.books();
        let top = books["BTC-USD"].top().unwrap();
        assert_eq!(
            (top.bid, top.bid_size, top.ask, top.ask_size),
            (dec!(99), dec!(2), dec!(101), dec!(3))
        );
        assert_eq!(books["BTC-USD"].last_good_ms, Some(1_577_836_800_000));
        drop(books);
        let heartbeat = json!({"channel":"heartbeats","sequence_num":2,"events":[]}).to_string();
        handle(&shared, &options, &heartbeat, &mut expected, 0).unwrap();
        let gap = l2(4, "update", json!([]));
        assert!(
            handle(&shared, &options, &gap, &mut expected, 0)
                .unwrap_err()
                .contains("gap")
        );
        assert_eq!(shared.counters.gaps.load(Ordering::Relaxed), 1);
        shared.invalidate();
        assert!(shared.books()["BTC-USD"].top().is_none());
    }

    #[test]
    fn ticker_snapshots_do_not_refresh_known_data() {
        let (shared, options) = feed();
        let mut expected = None;
        let ticker = |seq: u64, kind: &str, ts: &str| {
            json!({"channel":"ticker","timestamp":ts,"sequence_num":seq,
                   "events":[{"type":kind,"tickers":[{"product_id":"BTC-USD","best_bid":"10","best_bid_quantity":"1",
                                                     "best_ask":"11","best_ask_quantity":"2"}]}]})
            .to_string()
        };
        let now = 5_000_000_000_000;
        handle(
            &shared,
            &options,
            &ticker(0, "update", "2020-01-01T00:00:00Z"),
            &mut expected,
            now,
        )
        .unwrap();
        handle(
            &shared,
            &options,
            &ticker(1, "snapshot", "2021-01-01T00:00:00Z"),
            &mut expected,
            now,
        )
        .unwrap();
        assert_eq!(shared.books()["BTC-USD"].last_good_ms, Some(1_577_836_800_000));
        handle(
            &shared,
            &options,
            &ticker(2, "update", "2021-01-01T00:00:00Z"),
            &mut expected,
            now,
        )
        .unwrap();
        assert_eq!(shared.books()["BTC-USD"].last_good_ms, Some(1_609_459_200_000));
        let top = shared.books()["BTC-USD"].top().unwrap();
        assert_eq!((top.bid, top.ask_size), (dec!(10), dec!(2)));
    }

    #[test]
    fn garbage_never_panics() {
        let (shared, options) = feed();
        let mut expected = None;
        for text in [
            "",
            "<html>",
            "{}",
            r#"{"type":"error","message":"authentication failure"}"#,
            r#"{"channel":"l2_data","sequence_num":0,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","price_level":"1e999","new_quantity":"1"}]}]}"#,
            r#"{"channel":"l2_data","sequence_num":1,"events":[7]}"#,
            r#"{"channel":"ticker","sequence_num":2,"events":[{"tickers":[{"product_id":"BTC-USD","best_bid":"x"}]}]}"#,
            r#"{"channel":"l2_data","sequence_num":-1}"#,
        ] {
            let _ = handle(&shared, &options, text, &mut expected, 0);
        }
        assert!(shared.books()["BTC-USD"].top().is_none());
    }
}

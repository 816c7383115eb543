//! The market data / user WebSocket at `/ws`.
//!
//! One connection holds any number of channel subscriptions (one channel per subscribe
//! message). Every envelope carries a per-connection `sequence_num` that grows by one per
//! message, so dropped messages (`ws_drop_every`) show up as gaps.

mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep};

use crate::auth::{self, Expectation};
use crate::clock::{self, rfc3339_nanos};
use crate::events::{Event, UserOrder};
use crate::market::ProductTick;
use crate::state::{AppState, lock};

/// Snapshot `orders` per `user` message, as Coinbase batches them.
const USER_SNAPSHOT_BATCH: usize = 50;
/// Trades in a `market_trades` snapshot.
const TRADES_SNAPSHOT: usize = 50;
/// Granularity of the `candles` channel.
const CANDLE_SECS: i64 = 300;

type Sink = SplitSink<WebSocket, Message>;

/// A subscribable channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Channel {
    Heartbeats,
    Ticker,
    TickerBatch,
    Level2,
    MarketTrades,
    Candles,
    Status,
    User,
}

impl Channel {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "heartbeats" => Channel::Heartbeats,
            "ticker" => Channel::Ticker,
            "ticker_batch" => Channel::TickerBatch,
            "level2" | "l2_data" => Channel::Level2,
            "market_trades" => Channel::MarketTrades,
            "candles" => Channel::Candles,
            "status" => Channel::Status,
            "user" => Channel::User,
            _ => return None,
        })
    }

    /// Name in subscribe requests and acknowledgements.
    fn name(self) -> &'static str {
        match self {
            Channel::Heartbeats => "heartbeats",
            Channel::Ticker => "ticker",
            Channel::TickerBatch => "ticker_batch",
            Channel::Level2 => "level2",
            Channel::MarketTrades => "market_trades",
            Channel::Candles => "candles",
            Channel::Status => "status",
            Channel::User => "user",
        }
    }

    /// `channel` of the envelopes it produces.
    fn message_channel(self) -> &'static str {
        match self {
            Channel::Level2 => "l2_data",
            other => other.name(),
        }
    }

    fn needs_products(self) -> bool {
        !matches!(self, Channel::Heartbeats | Channel::Status | Channel::User)
    }
}

/// A client request.
#[derive(Debug, Deserialize)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    product_ids: Vec<String>,
    channel: Option<String>,
    jwt: Option<String>,
}

/// `GET /ws`: upgrades to a WebSocket.
pub async fn handler(ws: WebSocketUpgrade, State(state): State<AppState>) -> Response {
    ws.on_upgrade(move |socket| async move {
        state.stats.ws_opened();
        Connection::new(state.clone()).run(socket).await;
        state.stats.ws_closed();
    })
}

/// Why the connection loop ended.
enum Exit {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The peer went away; nothing more to send.
    Gone,
}

struct Connection {
    state: AppState,
    subscriptions: BTreeMap<Channel, BTreeSet<String>>,
    /// Key of the JWT that authorised the `user` channel.
    user_key: Option<String>,
    sequence: u64,
    heartbeat_counter: u64,
    /// Book version each `level2` snapshot was taken at; older updates are skipped.
    l2_versions: HashMap<String, u64>,
    subscribed_once: bool,
}

impl Connection {
    fn new(state: AppState) -> Self {
        Self {
            state,
            subscriptions: BTreeMap::new(),
            user_key: None,
            sequence: 0,
            heartbeat_counter: 0,
            l2_versions: HashMap::new(),
            subscribed_once: false,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let mut events = self.state.events.subscribe();
        let mut disconnect = self.state.disconnect.subscribe();
        let mut shutdown = self.state.shutdown.subscribe();
        let config = &self.state.config;
        let start = Instant::now();
        let mut heartbeat = interval_at(start + config.heartbeat_interval, config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = interval_at(start + config.ticker_batch_interval, config.ticker_batch_interval);
        batch.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let deadline = sleep(config.ws_subscribe_timeout);
        tokio::pin!(deadline);

        let exit = loop {
            let step = tokio::select! {
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => self.on_client_message(&mut sink, text.as_str()).await,
                    Some(Ok(Message::Close(frame))) => {
                        // Complete the closing handshake (clients wait for the echo).
                        let _ = sink.send(Message::Close(frame)).await;
                        Err(Exit::Gone)
                    }
                    None | Some(Err(_)) => Err(Exit::Gone),
                    Some(Ok(_)) => Ok(()),
                },
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&mut sink, &event).await,
                    Err(RecvError::Lagged(_)) => Err(Exit::Close(close_code::POLICY, "client too slow")),
                    Err(RecvError::Closed) => Err(Exit::Close(close_code::AWAY, "server stopping")),
                },
                _ = heartbeat.tick(), if self.subscribed(Channel::Heartbeats) => self.send_heartbeat(&mut sink).await,
                _ = batch.tick(), if self.subscribed(Channel::TickerBatch) => self.send_ticker_batch(&mut sink).await,
                () = &mut deadline, if !self.subscribed_once => {
                    Err(Exit::Close(close_code::POLICY, "subscribe within 5 seconds of connecting"))
                }
                _ = disconnect.changed() => Err(Exit::Close(close_code::AWAY, "disconnected by fault injection")),
                _ = shutdown.changed() => Err(Exit::Close(close_code::AWAY, "server stopping")),
            };
            if let Err(exit) = step {
                break exit;
            }
        };
        if let Exit::Close(code, reason) = exit {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
    }

    fn subscribed(&self, channel: Channel) -> bool {
        self.subscriptions.contains_key(&channel)
    }

    fn wants(&self, channel: Channel, product_id: &str) -> bool {
        self.subscriptions
            .get(&channel)
            .is_some_and(|p| p.is_empty() || p.contains(product_id))
    }

    // ----- sending ------------------------------------------------------------------------

    async fn send_text(&self, sink: &mut Sink, text: String) -> Result<(), Exit> {
        sink.send(Message::Text(text.into())).await.map_err(|_| Exit::Gone)?;
        self.state.stats.ws_sent();
        Ok(())
    }

    /// Sends an envelope, consuming a sequence number even when a fault drops it.
    async fn send_envelope(&mut self, sink: &mut Sink, channel: &str, events: Vec<Value>) -> Result<(), Exit> {
        let sequence = self.sequence;
        self.sequence += 1;
        let drop_every = lock(&self.state.faults).ws_drop_every;
        if channel != "subscriptions" && drop_every.is_some_and(|n| (sequence + 1).is_multiple_of(n)) {
            self.state.stats.ws_dropped();
            return Ok(());
        }
        let envelope = json!({
            "channel": channel,
            "client_id": "",
            "timestamp": rfc3339_nanos(clock::now()),
            "sequence_num": sequence,
            "events": events,
        });
        self.send_text(sink, envelope.to_string()).await
    }

    async fn send_error(&self, sink: &mut Sink, message: &str) -> Result<(), Exit> {
        self.send_text(sink, json!({ "type": "error", "message": message }).to_string())
            .await
    }

    async fn send_heartbeat(&mut self, sink: &mut Sink) -> Result<(), Exit> {
        self.heartbeat_counter += 1;
        let event = json!({
            "current_time": render::heartbeat_time(clock::now(), self.state.started.elapsed()),
            "heartbeat_counter": self.heartbeat_counter,
        });
        self.send_envelope(sink, "heartbeats", vec![event]).await
    }

    async fn send_ticker_batch(&mut self, sink: &mut Sink) -> Result<(), Exit> {
        let tickers: Vec<Value> = {
            let exchange = lock(&self.state.exchange);
            exchange
                .market
                .iter()
                .filter(|p| !p.frozen && self.wants(Channel::TickerBatch, &p.spec.id))
                .map(|p| render::ticker(&p.ticker(), &p.spec))
                .collect()
        };
        if tickers.is_empty() {
            return Ok(());
        }
        let event = json!({ "type": "update", "tickers": tickers });
        self.send_envelope(sink, "ticker_batch", vec![event]).await
    }

    // ----- client requests -----------------------------------------------------------------

    async fn on_client_message(&mut self, sink: &mut Sink, text: &str) -> Result<(), Exit> {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(_) => {
                return self
                    .send_error(sink, "malformed message: expected JSON subscribe")
                    .await;
            }
        };
        let subscribe = match message.kind.as_deref() {
            Some("subscribe") => true,
            Some("unsubscribe") => false,
            _ => return self.send_error(sink, "type must be subscribe or unsubscribe").await,
        };
        let Some(channel) = message.channel.as_deref().and_then(Channel::parse) else {
            return self.send_error(sink, "channel is missing or unknown").await;
        };
        if let Some(unknown) = self.unknown_product(&message.product_ids) {
            return self.send_error(sink, &format!("unknown product_id {unknown}")).await;
        }
        if let Some(jwt) = message.jwt.as_deref() {
            let expectation = Expectation {
                uri: None,
                now_secs: self.state.now_secs(),
                leeway_secs: self.state.config.jwt_leeway_secs,
            };
            let verified = auth::verify(&self.state.keys(), jwt, &expectation);
            match verified {
                Ok(key) => self.user_key = Some(key.name),
                Err(failure) => {
                    self.state.stats.jwt_rejected(failure.label());
                    tracing::debug!(reason = %failure, "rejected WebSocket JWT");
                    return self.send_error(sink, "authentication failure").await;
                }
            }
        }
        if !subscribe {
            self.unsubscribe(channel, &message.product_ids);
            return self.send_ack(sink).await;
        }
        if channel == Channel::User && (message.jwt.is_none() || self.user_key.is_none()) {
            return self.send_error(sink, "the user channel requires a jwt").await;
        }
        if channel.needs_products() && message.product_ids.is_empty() {
            return self
                .send_error(
                    sink,
                    &format!("product_ids is required for the {} channel", channel.name()),
                )
                .await;
        }
        let entry = self.subscriptions.entry(channel).or_default();
        entry.extend(message.product_ids.iter().cloned());
        self.subscribed_once = true;
        self.send_ack(sink).await?;
        self.send_snapshot(sink, channel, &message.product_ids).await
    }

    fn unknown_product(&self, ids: &[String]) -> Option<String> {
        let exchange = lock(&self.state.exchange);
        ids.iter().find(|id| exchange.spec(id).is_none()).cloned()
    }

    fn unsubscribe(&mut self, channel: Channel, products: &[String]) {
        if products.is_empty() {
            self.subscriptions.remove(&channel);
            return;
        }
        if let Some(subscribed) = self.subscriptions.get_mut(&channel) {
            for p in products {
                subscribed.remove(p);
            }
            if subscribed.is_empty() {
                self.subscriptions.remove(&channel);
            }
        }
    }

    async fn send_ack(&mut self, sink: &mut Sink) -> Result<(), Exit> {
        let subscriptions: serde_json::Map<String, Value> = self
            .subscriptions
            .iter()
            .map(|(channel, products)| (channel.name().to_string(), json!(products)))
            .collect();
        self.send_envelope(sink, "subscriptions", vec![json!({ "subscriptions": subscriptions })])
            .await
    }

    /// The channel's snapshot for `products` (all subscribed products when empty).
    async fn send_snapshot(&mut self, sink: &mut Sink, channel: Channel, products: &[String]) -> Result<(), Exit> {
        let messages = self.snapshot_messages(channel, products);
        for events in messages {
            self.send_envelope(sink, channel.message_channel(), events).await?;
        }
        Ok(())
    }

    /// Builds snapshot messages under the exchange lock (each inner Vec is one message).
    fn snapshot_messages(&mut self, channel: Channel, products: &[String]) -> Vec<Vec<Value>> {
        let exchange = lock(&self.state.exchange);
        let now = clock::now();
        let selected = |id: &str| products.is_empty() || products.iter().any(|p| p == id);
        let markets: Vec<_> = exchange.market.iter().filter(|p| selected(&p.spec.id)).collect();
        match channel {
            Channel::Heartbeats => Vec::new(),
            Channel::Ticker | Channel::TickerBatch => {
                let tickers: Vec<Value> = markets.iter().map(|p| render::ticker(&p.ticker(), &p.spec)).collect();
                vec![vec![json!({ "type": "snapshot", "tickers": tickers })]]
            }
            Channel::Level2 => {
                let events = markets
                    .iter()
                    .map(|p| {
                        self.l2_versions.insert(p.spec.id.clone(), p.version);
                        json!({ "type": "snapshot", "product_id": p.spec.id, "updates": render::l2_snapshot(p) })
                    })
                    .collect();
                vec![events]
            }
            Channel::MarketTrades => {
                let trades: Vec<Value> = markets
                    .iter()
                    .flat_map(|p| {
                        p.recent_trades(TRADES_SNAPSHOT)
                            .into_iter()
                            .map(|t| render::trade(&t, &p.spec))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                vec![vec![json!({ "type": "snapshot", "trades": trades })]]
            }
            Channel::Candles => {
                let candles: Vec<Value> = markets
                    .iter()
                    .filter_map(|p| p.current_candle(CANDLE_SECS, now).map(|c| render::candle(&c, &p.spec)))
                    .collect();
                vec![vec![json!({ "type": "snapshot", "candles": candles })]]
            }
            Channel::Status => {
                let list: Vec<Value> = markets.iter().map(|p| render::status_product(p)).collect();
                vec![vec![json!({ "type": "snapshot", "products": list })]]
            }
            Channel::User => {
                let Some(key_name) = self.user_key.clone() else {
                    return Vec::new();
                };
                let portfolio_uuid = self.state.keys().get(&key_name).map(|k| k.portfolio_uuid.clone());
                let positions = portfolio_uuid
                    .as_deref()
                    .and_then(|uuid| exchange.accounts.get(uuid))
                    .map_or_else(|| json!({}), |p| render::positions(&exchange, p));
                let orders: Vec<Value> = exchange
                    .open_orders_of_key(&key_name)
                    .into_iter()
                    .filter(|o| selected(&o.product_id))
                    .map(|o| o.to_ws_json())
                    .collect();
                let batches: Vec<&[Value]> = if orders.is_empty() {
                    vec![&[]]
                } else {
                    orders.chunks(USER_SNAPSHOT_BATCH).collect()
                };
                batches
                    .into_iter()
                    .map(|batch| vec![json!({ "type": "snapshot", "orders": batch, "positions": positions })])
                    .collect()
            }
        }
    }

    // ----- exchange events -----------------------------------------------------------------

    async fn on_event(&mut self, sink: &mut Sink, event: &Event) -> Result<(), Exit> {
        match event {
            Event::Market(ticks) => self.on_market(sink, ticks).await,
            Event::Status(products) => {
                let wanted: Vec<String> = products
                    .iter()
                    .filter(|p| self.wants(Channel::Status, p))
                    .cloned()
                    .collect();
                if wanted.is_empty() {
                    return Ok(());
                }
                let list: Vec<Value> = {
                    let exchange = lock(&self.state.exchange);
                    wanted
                        .iter()
                        .filter_map(|id| exchange.market.get(id))
                        .map(render::status_product)
                        .collect()
                };
                self.send_envelope(sink, "status", vec![json!({ "type": "update", "products": list })])
                    .await
            }
            Event::UserOrder(update) => self.on_user_order(sink, update).await,
        }
    }

    async fn on_user_order(&mut self, sink: &mut Sink, update: &UserOrder) -> Result<(), Exit> {
        let mine = self.user_key.as_deref() == Some(update.key_name.as_str());
        if !mine || !self.wants(Channel::User, &update.product_id) {
            return Ok(());
        }
        let event = json!({ "type": "update", "orders": [update.order] });
        self.send_envelope(sink, "user", vec![event]).await
    }

    async fn on_market(&mut self, sink: &mut Sink, ticks: &[ProductTick]) -> Result<(), Exit> {
        let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
        {
            let this: &Self = self;
            let exchange = lock(&this.state.exchange);
            let spec_of = |id: &str| exchange.spec(id).cloned();
            let mine = |channel: Channel| ticks.iter().filter(move |t| this.wants(channel, &t.product_id));

            let tickers: Vec<Value> = mine(Channel::Ticker)
                .filter_map(|t| spec_of(&t.product_id).map(|s| render::ticker(&t.ticker, &s)))
                .collect();
            if !tickers.is_empty() {
                messages.push(("ticker", vec![json!({ "type": "update", "tickers": tickers })]));
            }

            let mut l2_events = Vec::new();
            for tick in mine(Channel::Level2) {
                let seen = this.l2_versions.get(&tick.product_id).copied().unwrap_or(0);
                if tick.version <= seen || tick.l2.is_empty() {
                    continue;
                }
                if let Some(spec) = spec_of(&tick.product_id) {
                    l2_events.push(json!({
                        "type": "update",
                        "product_id": tick.product_id,
                        "updates": render::l2_updates(&tick.l2, tick.time, &spec),
                    }));
                }
            }
            if !l2_events.is_empty() {
                messages.push(("l2_data", l2_events));
            }

            let trades: Vec<Value> = mine(Channel::MarketTrades)
                .filter_map(|t| spec_of(&t.product_id).map(|s| (t, s)))
                .flat_map(|(t, s)| t.trades.iter().map(|tr| render::trade(tr, &s)).collect::<Vec<_>>())
                .collect();
            if !trades.is_empty() {
                messages.push(("market_trades", vec![json!({ "type": "update", "trades": trades })]));
            }

            let candles: Vec<Value> = mine(Channel::Candles)
                .filter_map(|t| {
                    let spec = spec_of(&t.product_id)?;
                    t.candle.as_ref().map(|c| render::candle(c, &spec))
                })
                .collect();
            if !candles.is_empty() {
                messages.push(("candles", vec![json!({ "type": "update", "candles": candles })]));
            }
        }
        for tick in ticks {
            if self.l2_versions.contains_key(&tick.product_id) {
                let seen = self.l2_versions.entry(tick.product_id.clone()).or_default();
                *seen = (*seen).max(tick.version);
            }
        }
        for (channel, events) in messages {
            self.send_envelope(sink, channel, events).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn channel_names() {
        assert_eq!(Channel::parse("level2").map(Channel::message_channel), Some("l2_data"));
        assert!(Channel::parse("futures").is_none());
        assert!(!Channel::User.needs_products());
        let t = render::heartbeat_time(chrono::DateTime::UNIX_EPOCH, Duration::from_millis(1500));
        assert_eq!(t, "1970-01-01 00:00:00.000000000 +0000 UTC m=+1.500000000");
    }
}

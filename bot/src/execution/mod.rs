//! Execution: turning a decision into an exchange order (quantised, with a unique client order
//! id) and submitting it through the last gates: fencing (the identity Lease), a known mode,
//! the trading state as it is *now*, duplicate ids, dry-run and the optional preview.

pub mod quantize;

use crate::broker::{Broker, BrokerError};
use crate::config::{BotConfig, OrderStyle};
use crate::control::ModeHandle;
use crate::domain::{Order, OrderKind, OrderRequest, Product, Quote, Side, Symbol, TimeInForce};
use crate::risk::{RejectReason, Rejection};
use crate::trading_state;
use rust_decimal::Decimal;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::Mutex;
use tradingbot_crds::lease::Claim;

/// Unique client order ids: `<prefix><run>-<n>`. `prefix` identifies the bot instance (see
/// `tradingbot_crds::names::client_order_prefix`); `run` is random per process, so ids never
/// repeat across restarts.
#[derive(Debug, Clone)]
pub struct ClientIds {
    stem: String,
    next: u64,
}

impl ClientIds {
    pub fn new(prefix: &str) -> Self {
        let run: u32 = rand::random();
        Self {
            stem: format!("{prefix}{run:08x}"),
            next: 1,
        }
    }

    pub fn next_id(&mut self) -> String {
        let id = format!("{}-{}", self.stem, self.next);
        self.next += 1;
        id
    }
}

/// Build the exchange order for a decision: order type from the configuration, prices and
/// size fitted to the product. Pure.
pub fn build_order(
    config: &BotConfig,
    product: &Product,
    quote: &Quote,
    side: Side,
    quantity: Decimal,
    reduce_only: bool,
    client_order_id: String,
) -> Result<OrderRequest, Rejection> {
    let touch = quote.taker_price(side);
    let (kind, tif) = match config.execution.order_style {
        // Coinbase market orders are always IOC.
        OrderStyle::Market if !product.limit_only => (OrderKind::Market, TimeInForce::Ioc),
        _ => {
            let offset = touch * config.execution.limit_offset_bps / Decimal::from(10_000);
            let limit_price = match side {
                Side::Buy => touch + offset,
                Side::Sell => touch - offset,
            };
            (OrderKind::Limit { limit_price }, config.execution.tif)
        }
    };
    let (quantity, kind) = quantize::quantize(product, side, quantity, kind, touch)?;
    Ok(OrderRequest {
        client_order_id,
        symbol: product.symbol.clone(),
        side,
        quantity,
        kind,
        tif,
        reduce_only,
        leverage: None,
        preview_id: None,
    })
}

/// How a submission ended.
#[derive(Debug, Clone)]
pub enum Submitted {
    Placed(Order),
    /// Passed every gate; not sent because of dry-run.
    DryRun(OrderRequest),
    Refused(Rejection),
    Failed(BrokerError),
}

/// Submits orders one at a time; cancellations take the same lock, so a mode change that
/// cancels orders can never miss one placed concurrently.
pub struct Executor<B: Broker> {
    broker: Arc<B>,
    mode: ModeHandle,
    /// The identity Lease: no order is sent without it (always held when not managed).
    claim: Claim,
    dry_run: bool,
    preview: bool,
    /// Client order ids of this bot identity start with this; no other order is ever cancelled.
    own_prefix: String,
    lock: Mutex<RecentIds>,
    /// Exchange ids of the orders this process placed (a process that loses its Lease cancels
    /// these, never orders a successor of the same identity placed).
    placed_here: std::sync::Mutex<RecentIds>,
}

/// Client order ids already submitted (bounded memory).
#[derive(Default)]
struct RecentIds {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentIds {
    const CAPACITY: usize = 10_000;

    fn insert(&mut self, id: &str) -> bool {
        if !self.set.insert(id.to_string()) {
            return false;
        }
        self.order.push_back(id.to_string());
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

impl<B: Broker> Executor<B> {
    pub fn new(
        broker: Arc<B>,
        mode: ModeHandle,
        claim: Claim,
        dry_run: bool,
        preview: bool,
        own_prefix: String,
    ) -> Self {
        Self {
            broker,
            mode,
            claim,
            dry_run,
            preview,
            own_prefix,
            lock: Mutex::new(RecentIds::default()),
            placed_here: std::sync::Mutex::new(RecentIds::default()),
        }
    }

    pub fn broker(&self) -> &Arc<B> {
        &self.broker
    }

    /// Is this process allowed to trade at all right now (fencing)?
    pub fn fenced(&self) -> Option<Rejection> {
        (!self.claim.is_held()).then(|| {
            Rejection::new(
                RejectReason::NoLease,
                "this instance does not hold its identity Lease: it places no orders",
            )
        })
    }

    /// Submit `order` given the position it acts on.
    pub async fn submit(&self, mut order: OrderRequest, position: Decimal) -> Submitted {
        let mut recent = self.lock.lock().await;
        if let Some(rejection) = self.fenced() {
            return Submitted::Refused(rejection);
        }
        let mode = self.mode.current();
        if !mode.known {
            return Submitted::Refused(Rejection::new(
                RejectReason::ModeUnknown,
                "the effective trading mode is not known yet: no orders until it is",
            ));
        }
        if let Err(rejection) = trading_state::gate(mode.mode, order.side, order.quantity, position, order.reduce_only)
        {
            return Submitted::Refused(rejection);
        }
        if !recent.insert(&order.client_order_id) {
            return Submitted::Refused(Rejection::new(
                RejectReason::DuplicateClientOrderId,
                format!("client order id {} was already used", order.client_order_id),
            ));
        }
        if self.dry_run {
            return Submitted::DryRun(order);
        }
        if self.preview {
            match self.broker.preview_order(&order).await {
                Ok(preview) if !preview.errors.is_empty() => {
                    return Submitted::Refused(Rejection::new(
                        RejectReason::Exchange,
                        format!("preview refused: {}", preview.errors.join(", ")),
                    ));
                }
                Ok(preview) => order.preview_id = preview.preview_id,
                Err(error) => return Submitted::Failed(error),
            }
        }
        // Fencing holds for the whole submission, retries included: the exchange must answer
        // before the Lease could pass to another instance, or the attempt is abandoned.
        let placing = self.broker.place_order(&order);
        let result = match self.claim.time_left() {
            None => placing.await,
            Some(left) => tokio::time::timeout(left, placing).await.unwrap_or_else(|_| {
                Err(BrokerError::Unavailable(format!(
                    "no answer before the identity Lease would expire; order {} may or may not exist",
                    order.client_order_id
                )))
            }),
        };
        match result {
            Ok(placed) => {
                self.placed_here
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(&placed.order_id);
                Submitted::Placed(placed)
            }
            Err(BrokerError::Rejected { reason, message }) => {
                Submitted::Refused(Rejection::new(RejectReason::Exchange, format!("{reason}: {message}")))
            }
            Err(error) => Submitted::Failed(error),
        }
    }

    /// Cancel this bot's open orders (never a human's or another instance's on the same
    /// account); with `only_increasing`, only those that would not reduce the position they act
    /// on. A dry run placed nothing and cancels nothing. Returns how many were cancelled.
    pub async fn cancel_open_orders(
        &self,
        only_increasing: bool,
        position_of: impl Fn(&Symbol) -> Decimal,
    ) -> Result<usize, BrokerError> {
        if self.dry_run {
            return Ok(0);
        }
        let _serialised = self.lock.lock().await;
        let open = self.broker.open_orders().await?;
        let ids: Vec<String> = open
            .iter()
            .filter(|o| o.client_order_id.starts_with(&self.own_prefix))
            .filter(|o| {
                !only_increasing
                    || !trading_state::is_reducing(o.side, o.quantity - o.filled_quantity, position_of(&o.symbol))
            })
            .map(|o| o.order_id.clone())
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let results = self.broker.cancel_orders(&ids).await?;
        Ok(results.iter().filter(|r| r.success).count())
    }

    /// Cancel the open orders this process placed (after it lost its identity Lease: the
    /// successor's orders, which share the identity's prefix, are left alone).
    pub async fn cancel_orders_placed_here(&self) -> Result<usize, BrokerError> {
        if self.dry_run {
            return Ok(0);
        }
        let _serialised = self.lock.lock().await;
        let open = self.broker.open_orders().await?;
        let ids: Vec<String> = {
            let placed = self.placed_here.lock().unwrap_or_else(|p| p.into_inner());
            open.iter()
                .filter(|o| placed.set.contains(&o.order_id))
                .map(|o| o.order_id.clone())
                .collect()
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let results = self.broker.cancel_orders(&ids).await?;
        Ok(results.iter().filter(|r| r.success).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::profiles::builtin;
    use rust_decimal_macros::dec;
    use tradingbot_crds::Profile;

    #[test]
    fn client_ids_are_unique_and_carry_the_prefix() {
        let mut ids = ClientIds::new("c0ffee.btc.prod.");
        let (a, b) = (ids.next_id(), ids.next_id());
        assert_ne!(a, b);
        assert!(a.starts_with("c0ffee.btc.prod."));
        assert_ne!(ClientIds::new("x").next_id(), ClientIds::new("x").next_id());
    }

    #[test]
    fn market_orders_are_ioc_and_limits_use_the_configured_tif() {
        let mut config = builtin(Profile::Prod);
        let product = Product::spot("BTC-USD", dec!(0.0001), dec!(0.01), dec!(0.0001));
        let quote = Quote {
            bid: dec!(100),
            bid_size: dec!(10),
            ask: dec!(100.02),
            ask_size: dec!(10),
            time_ms: 0,
        };
        let order = build_order(&config, &product, &quote, Side::Buy, dec!(1.23456), false, "id".into()).unwrap();
        assert_eq!(
            (order.kind, order.tif, order.quantity),
            (OrderKind::Market, TimeInForce::Ioc, dec!(1.2345))
        );
        config.execution.order_style = OrderStyle::Limit;
        config.execution.limit_offset_bps = dec!(10);
        let order = build_order(&config, &product, &quote, Side::Sell, dec!(1), true, "id".into()).unwrap();
        assert_eq!(
            order.kind,
            OrderKind::Limit {
                limit_price: dec!(99.90)
            }
        );
        assert_eq!(order.tif, TimeInForce::Gtc);
    }
}

#[cfg(test)]
mod cancel_tests {
    use super::*;
    use crate::broker::paper::PaperExchange;
    use crate::config::PaperConfig;
    use crate::domain::{OrderKind, Symbol};
    use rust_decimal_macros::dec;

    fn resting(symbol: &Symbol, id: &str) -> OrderRequest {
        OrderRequest {
            client_order_id: id.into(),
            symbol: symbol.clone(),
            side: Side::Buy,
            quantity: dec!(0.01),
            kind: OrderKind::Limit {
                limit_price: dec!(1000),
            },
            tif: TimeInForce::Gtc,
            reduce_only: false,
            leverage: None,
            preview_id: None,
        }
    }

    #[tokio::test]
    async fn only_this_identitys_orders_are_cancelled_and_a_dry_run_cancels_nothing() {
        let btc: Symbol = "BTC-USD".parse().unwrap();
        let paper = Arc::new(PaperExchange::new(
            &PaperConfig::default(),
            std::slice::from_ref(&btc),
            false,
        ));
        for id in [
            "a1.btc.prod.1a-1",
            "a1.btc.canary.2b-1",
            "a1.btc-prod.prod.3c-1",
            "manual-7",
        ] {
            paper.place(&resting(&btc, id)).unwrap();
        }
        let mode = ModeHandle::new(&[]);
        let dry = Executor::new(
            paper.clone(),
            mode.clone(),
            Claim::unconditional(),
            true,
            false,
            "a1.btc.prod.".into(),
        );
        assert_eq!(dry.cancel_open_orders(false, |_| Decimal::ZERO).await.unwrap(), 0);
        let prod = Executor::new(
            paper.clone(),
            mode,
            Claim::unconditional(),
            false,
            false,
            "a1.btc.prod.".into(),
        );
        assert_eq!(prod.cancel_open_orders(false, |_| Decimal::ZERO).await.unwrap(), 1);
        let open: Vec<String> = paper
            .orders()
            .into_iter()
            .filter(|o| o.status.is_open())
            .map(|o| o.client_order_id)
            .collect();
        assert_eq!(open, ["a1.btc.canary.2b-1", "a1.btc-prod.prod.3c-1", "manual-7"]);
    }
}

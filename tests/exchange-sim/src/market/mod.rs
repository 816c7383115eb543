//! Market data: per-product price paths, synthetic books, trade tapes and candles.

pub mod book;
pub mod candles;
pub mod path;

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use crate::products::{ProductFlags, ProductSpec};
use crate::side::Side;
use book::{Book, L2Change, notional_size};
use candles::{Candle, CandleSeries};
use path::{PricePath, seeded_rng};

/// Trades kept per product for `GET .../ticker` and `market_trades` snapshots.
const TAPE_LEN: usize = 500;
/// Coarse random-walk steps per minute of generated history.
const HISTORY_STEPS_PER_MINUTE: i64 = 4;

/// A public trade on the tape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trade {
    pub trade_id: String,
    pub product_id: String,
    pub price: Decimal,
    pub size: Decimal,
    /// Taker side.
    pub side: Side,
    pub time: DateTime<Utc>,
}

/// Ticker fields shared by REST and the `ticker` channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickerData {
    pub product_id: String,
    pub price: Decimal,
    pub volume_24_h: Decimal,
    pub low_24_h: Decimal,
    pub high_24_h: Decimal,
    pub low_52_w: Decimal,
    pub high_52_w: Decimal,
    pub price_percent_chg_24_h: Decimal,
    pub best_bid: Decimal,
    pub best_bid_quantity: Decimal,
    pub best_ask: Decimal,
    pub best_ask_quantity: Decimal,
}

/// What changed for one product on one tick; fanned out to WebSocket connections.
#[derive(Debug, Clone)]
pub struct ProductTick {
    pub product_id: String,
    /// Book version after this tick; snapshots carry the version they were taken at.
    pub version: u64,
    pub time: DateTime<Utc>,
    pub ticker: TickerData,
    pub l2: Vec<L2Change>,
    pub trades: Vec<Trade>,
    /// The current five-minute candle (the `candles` channel granularity).
    pub candle: Option<Candle>,
}

/// Live market state of one product.
#[derive(Debug, Clone)]
pub struct ProductMarket {
    pub spec: ProductSpec,
    pub flags: ProductFlags,
    path: PricePath,
    aux: ChaCha8Rng,
    pub book: Book,
    pub candles: CandleSeries,
    tape: VecDeque<Trade>,
    next_trade_id: u64,
    /// A frozen product neither moves nor publishes (a stalled feed).
    pub frozen: bool,
    pub version: u64,
}

impl ProductMarket {
    fn new(spec: ProductSpec, seed: u64, history_minutes: u32, now: DateTime<Utc>) -> Self {
        let path = PricePath::new(seed, spec.path_key(), spec.initial_price, spec.step_bps);
        let aux = seeded_rng(seed, &format!("aux:{}", spec.id));
        let mut market = Self {
            flags: ProductFlags::default(),
            path,
            aux,
            book: Book::new(now),
            candles: CandleSeries::default(),
            tape: VecDeque::with_capacity(TAPE_LEN),
            next_trade_id: 1,
            frozen: false,
            version: 0,
            spec,
        };
        market.generate_history(history_minutes, now);
        market.refresh(now);
        market
    }

    /// Pre-generates `minutes` of minute candles ending at the current minute.
    fn generate_history(&mut self, minutes: u32, now: DateTime<Utc>) {
        let range = self.path.coarse_range(HISTORY_STEPS_PER_MINUTE);
        let now_secs = now.timestamp();
        let first = now_secs - now_secs.rem_euclid(60) - i64::from(minutes) * 60;
        let step_secs = 60 / HISTORY_STEPS_PER_MINUTE;
        for minute in 0..i64::from(minutes) {
            let start = first + minute * 60;
            let volume = self.random_volume();
            for step in 0..HISTORY_STEPS_PER_MINUTE {
                let price = self.mid();
                let traded = if step == 0 { volume } else { Decimal::ZERO };
                self.candles.record(start + step * step_secs, price, traded);
                self.path.coarse_step(range);
            }
        }
    }

    fn random_volume(&mut self) -> Decimal {
        let notional = self.aux.gen_range(20_000..=400_000);
        notional_size(notional, self.mid(), &self.spec)
    }

    /// Mid price on the quote increment.
    pub fn mid(&self) -> Decimal {
        crate::num::floor_to(self.path.mid(), self.spec.quote_increment).max(self.spec.quote_increment)
    }

    /// Last trade price (the mid before any trade printed).
    pub fn last_price(&self) -> Decimal {
        self.tape.back().map_or_else(|| self.mid(), |t| t.price)
    }

    /// One live step of the walk followed by a refresh.
    fn advance(&mut self, now: DateTime<Utc>) -> ProductTick {
        self.path.step();
        self.refresh(now)
    }

    /// Rebuilds the book around the current mid, prints trades, updates candles.
    fn refresh(&mut self, now: DateTime<Utc>) -> ProductTick {
        let mid = self.mid();
        let l2 = self.book.rebuild(mid, &self.spec, &mut self.aux, now);
        let trades = self.print_trades(now);
        let volume = trades.iter().map(|t| t.size).sum();
        self.candles.record(now.timestamp(), mid, volume);
        self.version += 1;
        ProductTick {
            product_id: self.spec.id.clone(),
            version: self.version,
            time: now,
            ticker: self.ticker(),
            l2,
            trades,
            candle: self.current_candle(300, now),
        }
    }

    fn print_trades(&mut self, now: DateTime<Utc>) -> Vec<Trade> {
        let count = self.aux.gen_range(0..=2);
        let mut printed = Vec::with_capacity(count);
        for _ in 0..count {
            let side = if self.aux.gen_bool(0.5) { Side::Buy } else { Side::Sell };
            let level = match side {
                Side::Buy => self.book.best_ask(),
                Side::Sell => self.book.best_bid(),
            };
            let Some(level) = level else { continue };
            let notional = self.aux.gen_range(50..=5_000);
            let size = notional_size(notional, level.price, &self.spec).min(level.size);
            let trade = Trade {
                trade_id: self.next_trade_id.to_string(),
                product_id: self.spec.id.clone(),
                price: level.price,
                size,
                side,
                time: now,
            };
            self.next_trade_id += 1;
            if self.tape.len() == TAPE_LEN {
                self.tape.pop_front();
            }
            self.tape.push_back(trade.clone());
            printed.push(trade);
        }
        printed
    }

    /// Up to `limit` most recent trades, newest first.
    pub fn recent_trades(&self, limit: usize) -> Vec<Trade> {
        self.tape.iter().rev().take(limit).cloned().collect()
    }

    /// The candle of `granularity` seconds containing `now`.
    pub fn current_candle(&self, granularity: i64, now: DateTime<Utc>) -> Option<Candle> {
        let ts = now.timestamp();
        let start = ts - ts.rem_euclid(granularity);
        self.candles.aggregate(start, ts + 1, granularity).into_iter().next()
    }

    /// Current ticker with 24-hour and 52-week statistics from the candle history.
    pub fn ticker(&self) -> TickerData {
        let now = self.book.time.timestamp();
        let mut day = self.candles.since(now - 86_400);
        let first = day.next();
        let open_24h = first.map_or_else(|| self.mid(), |c| c.open);
        let (mut low, mut high, mut volume) =
            first.map_or((self.mid(), self.mid(), Decimal::ZERO), |c| (c.low, c.high, c.volume));
        for c in day {
            low = low.min(c.low);
            high = high.max(c.high);
            volume += c.volume;
        }
        let (low_52_w, high_52_w) = self
            .candles
            .extremes()
            .map_or((low, high), |(lo, hi)| (lo.min(low), hi.max(high)));
        let price = self.last_price();
        let change = if open_24h.is_zero() {
            Decimal::ZERO
        } else {
            ((price - open_24h) * Decimal::ONE_HUNDRED / open_24h).round_dp(8)
        };
        let bid = self.book.best_bid();
        let ask = self.book.best_ask();
        TickerData {
            product_id: self.spec.id.clone(),
            price,
            volume_24_h: volume,
            low_24_h: low,
            high_24_h: high,
            low_52_w,
            high_52_w,
            price_percent_chg_24_h: change,
            best_bid: bid.map_or(Decimal::ZERO, |l| l.price),
            best_bid_quantity: bid.map_or(Decimal::ZERO, |l| l.size),
            best_ask: ask.map_or(Decimal::ZERO, |l| l.price),
            best_ask_quantity: ask.map_or(Decimal::ZERO, |l| l.size),
        }
    }
}

/// Why a price shock was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShockError {
    #[error("unknown product {0}")]
    UnknownProduct(String),
    #[error("percent must leave a positive price")]
    InvalidPercent,
}

/// All products' market state.
#[derive(Debug, Clone)]
pub struct Market {
    products: Vec<ProductMarket>,
}

impl Market {
    pub fn new(specs: Vec<ProductSpec>, seed: u64, history_minutes: u32, now: DateTime<Utc>) -> Self {
        let products = specs
            .into_iter()
            .map(|spec| ProductMarket::new(spec, seed, history_minutes, now))
            .collect();
        Self { products }
    }

    pub fn get(&self, product_id: &str) -> Option<&ProductMarket> {
        self.products.iter().find(|p| p.spec.id == product_id)
    }

    pub fn get_mut(&mut self, product_id: &str) -> Option<&mut ProductMarket> {
        self.products.iter_mut().find(|p| p.spec.id == product_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ProductMarket> {
        self.products.iter()
    }

    /// Advances every product that is not frozen by one step.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<ProductTick> {
        self.products
            .iter_mut()
            .filter(|p| !p.frozen)
            .map(|p| p.advance(now))
            .collect()
    }

    /// Jumps a product's mid by `percent`. A frozen product moves but publishes nothing
    /// until it is unfrozen; otherwise the new book is returned for publication.
    pub fn shock(
        &mut self,
        product_id: &str,
        percent: Decimal,
        now: DateTime<Utc>,
    ) -> Result<Option<ProductTick>, ShockError> {
        let product = self
            .get_mut(product_id)
            .ok_or_else(|| ShockError::UnknownProduct(product_id.to_string()))?;
        if !product.path.shock(percent) {
            return Err(ShockError::InvalidPercent);
        }
        Ok((!product.frozen).then(|| product.refresh(now)))
    }

    /// Freezes or thaws `products` (all products when `None`). Thawed products refresh at once.
    pub fn set_frozen(&mut self, products: Option<&[String]>, frozen: bool, now: DateTime<Utc>) -> Vec<ProductTick> {
        let mut ticks = Vec::new();
        for p in &mut self.products {
            let selected = products.is_none_or(|ids| ids.contains(&p.spec.id));
            if !selected || p.frozen == frozen {
                continue;
            }
            p.frozen = frozen;
            if !frozen {
                ticks.push(p.refresh(now));
            }
        }
        ticks
    }

    /// Ids of frozen products.
    pub fn frozen(&self) -> Vec<String> {
        self.products
            .iter()
            .filter(|p| p.frozen)
            .map(|p| p.spec.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::catalogue;

    #[test]
    fn spot_and_perp_share_a_path() {
        let now = Utc::now();
        let mut m = Market::new(catalogue(), 42, 60, now);
        for _ in 0..50 {
            m.tick(now);
        }
        let spot = m.get("BTC-USD").unwrap().path.mid();
        let perp = m.get("BTC-PERP-INTX").unwrap().path.mid();
        assert_eq!(spot, perp);
        let candles = m.get("BTC-USD").unwrap().candles.since(0).count();
        assert!(candles >= 60, "{candles}");
    }

    #[test]
    fn frozen_products_do_not_move() {
        let now = Utc::now();
        let mut m = Market::new(catalogue(), 1, 10, now);
        m.set_frozen(Some(&["ETH-USD".to_string()]), true, now);
        let before = m.get("ETH-USD").unwrap().book.best_bid();
        let ticks = m.tick(now);
        assert!(ticks.iter().all(|t| t.product_id != "ETH-USD"));
        assert_eq!(m.get("ETH-USD").unwrap().book.best_bid(), before);
    }
}

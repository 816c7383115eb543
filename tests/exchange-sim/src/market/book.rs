//! Synthetic level-2 book around the mid price.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;

use crate::num::{ceil_to, floor_to};
use crate::products::ProductSpec;

/// Price levels per side.
pub const LEVELS: usize = 10;
/// Chance (out of 5) that an unchanged level keeps its size on a tick.
const KEEP_SIZE_IN_5: u32 = 4;

/// One price level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: Decimal,
    pub size: Decimal,
}

/// Book side as named by the `l2_data` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookSide {
    Bid,
    Offer,
}

impl BookSide {
    pub fn as_str(self) -> &'static str {
        match self {
            BookSide::Bid => "bid",
            BookSide::Offer => "offer",
        }
    }
}

/// An absolute level change (`size` 0 removes the level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Change {
    pub side: BookSide,
    pub price: Decimal,
    pub size: Decimal,
}

/// The current synthetic book of one product.
#[derive(Debug, Clone)]
pub struct Book {
    bids: BTreeMap<Decimal, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    /// When the book last changed (the `time` of REST pricebooks).
    pub time: DateTime<Utc>,
}

impl Book {
    pub fn new(time: DateTime<Utc>) -> Self {
        Self {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            time,
        }
    }

    pub fn best_bid(&self) -> Option<Level> {
        self.bids.iter().next_back().map(|(p, s)| Level { price: *p, size: *s })
    }

    pub fn best_ask(&self) -> Option<Level> {
        self.asks.iter().next().map(|(p, s)| Level { price: *p, size: *s })
    }

    /// Bids from best (highest) to worst.
    pub fn bids(&self) -> Vec<Level> {
        self.bids
            .iter()
            .rev()
            .map(|(p, s)| Level { price: *p, size: *s })
            .collect()
    }

    /// Asks from best (lowest) to worst.
    pub fn asks(&self) -> Vec<Level> {
        self.asks.iter().map(|(p, s)| Level { price: *p, size: *s }).collect()
    }

    /// Levels a taker on `side_of_taker` would trade against, best first.
    pub fn liquidity_for(&self, taker_buys: bool) -> Vec<Level> {
        if taker_buys { self.asks() } else { self.bids() }
    }

    /// Re-centres the book on `mid`, keeping most sizes of surviving levels, and returns
    /// the absolute changes against the previous book.
    pub fn rebuild(
        &mut self,
        mid: Decimal,
        spec: &ProductSpec,
        rng: &mut ChaCha8Rng,
        time: DateTime<Utc>,
    ) -> Vec<L2Change> {
        let qi = spec.quote_increment;
        let one_bps = mid / Decimal::from(10_000);
        let spacing = ceil_to(one_bps, qi).max(qi);
        let half_spread = one_bps / Decimal::TWO;
        let best_bid = floor_to(mid - half_spread, qi);
        let mut best_ask = ceil_to(mid + half_spread, qi);
        if best_ask <= best_bid {
            best_ask = best_bid + qi;
        }

        let mut bids = BTreeMap::new();
        let mut asks = BTreeMap::new();
        for i in 0..LEVELS {
            let offset = spacing * Decimal::from(i);
            let bid = best_bid - offset;
            if bid > Decimal::ZERO {
                let size = next_size(self.bids.get(&bid), bid, spec, rng);
                bids.insert(bid, size);
            }
            let ask = best_ask + offset;
            let size = next_size(self.asks.get(&ask), ask, spec, rng);
            asks.insert(ask, size);
        }

        let mut changes = diff(BookSide::Bid, &self.bids, &bids);
        changes.extend(diff(BookSide::Offer, &self.asks, &asks));
        self.bids = bids;
        self.asks = asks;
        self.time = time;
        changes
    }
}

fn next_size(previous: Option<&Decimal>, price: Decimal, spec: &ProductSpec, rng: &mut ChaCha8Rng) -> Decimal {
    let keep = rng.gen_ratio(KEEP_SIZE_IN_5, 5);
    match previous {
        Some(size) if keep => *size,
        _ => level_size(price, spec, rng),
    }
}

/// A random level size worth `spec.level_notional` USD, on the base increment.
pub fn level_size(price: Decimal, spec: &ProductSpec, rng: &mut ChaCha8Rng) -> Decimal {
    let (lo, hi) = spec.level_notional;
    notional_size(rng.gen_range(lo..=hi.max(lo)), price, spec)
}

/// Base size worth `notional` USD at `price`, on the base increment and at least the minimum.
pub fn notional_size(notional: u32, price: Decimal, spec: &ProductSpec) -> Decimal {
    let raw = Decimal::from(notional).checked_div(price).unwrap_or(spec.base_min_size);
    floor_to(raw, spec.base_increment).max(spec.base_min_size)
}

fn diff(side: BookSide, old: &BTreeMap<Decimal, Decimal>, new: &BTreeMap<Decimal, Decimal>) -> Vec<L2Change> {
    let removed = old.keys().filter(|p| !new.contains_key(*p)).map(|p| L2Change {
        side,
        price: *p,
        size: Decimal::ZERO,
    });
    let changed = new
        .iter()
        .filter(|(p, s)| old.get(*p) != Some(*s))
        .map(|(p, s)| L2Change {
            side,
            price: *p,
            size: *s,
        });
    removed.chain(changed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::path::seeded_rng;
    use crate::products::catalogue;

    #[test]
    fn rebuild_surrounds_mid_and_reports_changes() {
        let spec = &catalogue()[0];
        let mut rng = seeded_rng(1, "book");
        let mut book = Book::new(Utc::now());
        let first = book.rebuild(Decimal::from(95_000), spec, &mut rng, Utc::now());
        assert_eq!(first.len(), 2 * LEVELS);
        let bid = book.best_bid().unwrap();
        let ask = book.best_ask().unwrap();
        assert!(bid.price < Decimal::from(95_000) && ask.price > Decimal::from(95_000));
        let moved = book.rebuild(Decimal::from(95_100), spec, &mut rng, Utc::now());
        assert!(moved.iter().any(|c| c.size.is_zero()));
        assert!(moved.iter().any(|c| c.side == BookSide::Offer));
    }
}

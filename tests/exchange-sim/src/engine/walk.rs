//! Taker executions against a book side.

use rust_decimal::Decimal;

use crate::market::book::Level;
use crate::num::{ceil_to, floor_to};
use crate::products::ProductSpec;
use crate::side::Side;

/// How much worse than the deepest visible level an oversized market order fills (10 bps).
const SWEEP_PENALTY_BPS: i64 = 10;

/// How much a taker wants to trade.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    Base(Decimal),
    /// Quote to spend with fees included (`rate` is the taker fee rate).
    QuoteWithFees {
        budget: Decimal,
        rate: Decimal,
    },
    /// Quote value to receive before fees.
    QuoteValue(Decimal),
}

/// Whether a level at `price` is marketable for a `side` order limited at `limit`.
pub fn crosses(side: Side, price: Decimal, limit: Decimal) -> bool {
    match side {
        Side::Buy => price <= limit,
        Side::Sell => price >= limit,
    }
}

/// Walks `levels` (best first) for a taker, returning `(price, size)` executions.
///
/// Market orders (`sweep`) larger than the visible depth fill their remainder
/// [`SWEEP_PENALTY_BPS`] beyond the deepest level.
pub fn walk(
    levels: &[Level],
    side: Side,
    want: Want,
    limit: Option<Decimal>,
    spec: &ProductSpec,
    sweep: bool,
) -> Vec<(Decimal, Decimal)> {
    let increment = spec.base_increment;
    let marketable = |price: Decimal| limit.is_none_or(|l| crosses(side, price, l));
    let mut fills = Vec::new();
    let (mut base_left, mut value_left) = match want {
        Want::Base(b) => (b, Decimal::ZERO),
        Want::QuoteWithFees { budget, rate } => (Decimal::ZERO, budget / (Decimal::ONE + rate)),
        Want::QuoteValue(v) => (Decimal::ZERO, v),
    };
    let by_base = matches!(want, Want::Base(_));
    let take = |price: Decimal, available: Decimal, base_left: Decimal, value_left: Decimal| {
        if by_base {
            base_left.min(available)
        } else {
            floor_to((value_left / price).min(available), increment)
        }
    };
    for level in levels.iter().filter(|l| marketable(l.price)) {
        let size = take(level.price, level.size, base_left, value_left);
        if size <= Decimal::ZERO {
            break;
        }
        fills.push((level.price, size));
        base_left -= if by_base { size } else { Decimal::ZERO };
        value_left -= if by_base { Decimal::ZERO } else { size * level.price };
        let exhausted = if by_base {
            base_left.is_zero()
        } else {
            size < level.size
        };
        if exhausted {
            return fills;
        }
    }
    if !sweep {
        return fills;
    }
    let Some(worst) = levels.last() else {
        return fills;
    };
    let penalty = worst.price * Decimal::new(SWEEP_PENALTY_BPS, 4);
    let price = match side {
        Side::Buy => ceil_to(worst.price + penalty, spec.quote_increment),
        Side::Sell => floor_to(worst.price - penalty, spec.quote_increment).max(spec.quote_increment),
    };
    let size = take(price, Decimal::MAX, base_left, value_left);
    if size > Decimal::ZERO {
        fills.push((price, size));
    }
    fills
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::products::catalogue;

    fn btc() -> ProductSpec {
        catalogue().remove(0)
    }

    fn levels() -> Vec<Level> {
        vec![
            Level {
                price: Decimal::from(100),
                size: Decimal::ONE,
            },
            Level {
                price: Decimal::from(101),
                size: Decimal::ONE,
            },
        ]
    }

    #[test]
    fn walk_by_base_sweeps_beyond_depth() {
        let fills = walk(&levels(), Side::Buy, Want::Base(Decimal::from(3)), None, &btc(), true);
        assert_eq!(fills.len(), 3);
        assert_eq!(fills[2].0, Decimal::new(10111, 2));
        let limited = walk(
            &levels(),
            Side::Buy,
            Want::Base(Decimal::from(3)),
            Some(Decimal::from(100)),
            &btc(),
            false,
        );
        assert_eq!(limited, vec![(Decimal::from(100), Decimal::ONE)]);
    }

    #[test]
    fn walk_by_quote_spends_budget() {
        let fills = walk(
            &levels(),
            Side::Buy,
            Want::QuoteValue(Decimal::from(150)),
            None,
            &btc(),
            true,
        );
        assert_eq!(fills[0], (Decimal::from(100), Decimal::ONE));
        let spent: Decimal = fills.iter().map(|(p, s)| p * s).sum();
        assert!(spent <= Decimal::from(150) && spent > Decimal::new(14999, 2));
    }
}

//! Fitting an order to a product's increments: sizes round *down* (never more than intended),
//! limit prices round away from a worse fill (buys down, sells up), and orders below the
//! product's minimum size or notional are refused with what would be needed.

use crate::domain::{OrderKind, Product, Side};
use crate::risk::{RejectReason, Rejection};
use rust_decimal::{Decimal, RoundingStrategy};

/// Round `value` down to a multiple of `increment` (unchanged when the increment is zero).
pub fn floor_to(value: Decimal, increment: Decimal) -> Decimal {
    if increment <= Decimal::ZERO {
        return value;
    }
    ((value / increment).round_dp_with_strategy(0, RoundingStrategy::ToNegativeInfinity) * increment).normalize()
}

/// Round `value` up to a multiple of `increment`.
pub fn ceil_to(value: Decimal, increment: Decimal) -> Decimal {
    if increment <= Decimal::ZERO {
        return value;
    }
    ((value / increment).round_dp_with_strategy(0, RoundingStrategy::ToPositiveInfinity) * increment).normalize()
}

/// A price rounded to the side that does not worsen the fill.
pub fn round_price(price: Decimal, side: Side, increment: Decimal) -> Decimal {
    match side {
        Side::Buy => floor_to(price, increment),
        Side::Sell => ceil_to(price, increment),
    }
}

/// Quantise an order. `reference_price` estimates the fill for the minimum-notional check
/// (the limit price when there is one).
pub fn quantize(
    product: &Product,
    side: Side,
    quantity: Decimal,
    kind: OrderKind,
    reference_price: Decimal,
) -> Result<(Decimal, OrderKind), Rejection> {
    let kind = match kind {
        OrderKind::Market => OrderKind::Market,
        OrderKind::Limit { limit_price } => OrderKind::Limit {
            limit_price: round_price(limit_price, side, product.quote_increment),
        },
        OrderKind::StopLimit {
            stop_price,
            limit_price,
        } => OrderKind::StopLimit {
            stop_price: round_price(stop_price, side, product.quote_increment),
            limit_price: round_price(limit_price, side, product.quote_increment),
        },
    };
    if kind.limit_price().is_some_and(|p| p <= Decimal::ZERO) {
        return Err(Rejection::new(RejectReason::InvalidPrice, "limit price rounds to zero"));
    }
    let quantity = floor_to(quantity.min(product.base_max_size), product.base_increment);
    if quantity < product.base_min_size || quantity <= Decimal::ZERO {
        return Err(Rejection::new(
            RejectReason::BelowMinSize,
            format!(
                "{}: size {quantity} is below the minimum {} (in steps of {})",
                product.symbol,
                product.base_min_size.normalize(),
                product.base_increment.normalize()
            ),
        ));
    }
    let price = kind.limit_price().unwrap_or(reference_price);
    let notional = quantity * price;
    if notional < product.min_notional {
        let needed = if price > Decimal::ZERO {
            ceil_to(product.min_notional / price, product.base_increment).max(product.base_min_size)
        } else {
            Decimal::ZERO
        };
        return Err(Rejection::new(
            RejectReason::BelowMinNotional,
            format!(
                "{}: notional {} is below the minimum {}; at {} that needs a size of at least {}",
                product.symbol,
                notional.round_dp(8).normalize(),
                product.min_notional.normalize(),
                price.normalize(),
                needed
            ),
        ));
    }
    Ok((quantity, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn btc() -> Product {
        let mut p = Product::spot("BTC-USD", dec!(0.00000001), dec!(0.01), dec!(0.0001));
        p.min_notional = dec!(1);
        p.base_max_size = dec!(100);
        p
    }

    #[test]
    fn sizes_round_down_and_prices_round_side_aware() {
        let (q, k) = quantize(
            &btc(),
            Side::Buy,
            dec!(0.123456789),
            OrderKind::Limit {
                limit_price: dec!(50000.019),
            },
            dec!(50000),
        )
        .unwrap();
        assert_eq!(q, dec!(0.12345678));
        assert_eq!(
            k,
            OrderKind::Limit {
                limit_price: dec!(50000.01)
            }
        );
        let (_, k) = quantize(
            &btc(),
            Side::Sell,
            dec!(1),
            OrderKind::Limit {
                limit_price: dec!(50000.011),
            },
            dec!(50000),
        )
        .unwrap();
        assert_eq!(
            k,
            OrderKind::Limit {
                limit_price: dec!(50000.02)
            }
        );
    }

    #[test]
    fn exact_multiples_are_unchanged() {
        assert_eq!(floor_to(dec!(0.3), dec!(0.1)), dec!(0.3));
        assert_eq!(ceil_to(dec!(0.3), dec!(0.1)), dec!(0.3));
        assert_eq!(floor_to(dec!(7), dec!(0)), dec!(7));
    }

    #[test]
    fn below_minimums_are_refused_with_a_suggestion() {
        let err = quantize(&btc(), Side::Buy, dec!(0.00005), OrderKind::Market, dec!(50000)).unwrap_err();
        assert_eq!(err.reason, RejectReason::BelowMinSize);
        assert!(err.message.contains("minimum 0.0001"), "{}", err.message);
        let mut p = btc();
        p.min_notional = dec!(10);
        let err = quantize(&p, Side::Buy, dec!(0.0001), OrderKind::Market, dec!(50000)).unwrap_err();
        assert_eq!(err.reason, RejectReason::BelowMinNotional);
        assert!(err.message.contains("at least 0.0002"), "{}", err.message);
    }

    #[test]
    fn sizes_above_the_maximum_are_capped() {
        let (q, _) = quantize(&btc(), Side::Buy, dec!(1000), OrderKind::Market, dec!(1)).unwrap();
        assert_eq!(q, dec!(100));
    }

    proptest! {
        /// Nothing quantize lets through violates the product's increments or minimums, and
        /// the size never grows.
        #[test]
        fn accepted_orders_respect_increments(units in 1i64..10_000_000_000, scale in 0u32..10, price_units in 1i64..100_000_000, buy: bool) {
            let p = btc();
            let quantity = Decimal::new(units, scale);
            let price = Decimal::new(price_units, 3);
            let side = if buy { Side::Buy } else { Side::Sell };
            if let Ok((q, kind)) = quantize(&p, side, quantity, OrderKind::Limit { limit_price: price }, price) {
                prop_assert!(q <= quantity);
                prop_assert!(q >= p.base_min_size && q <= p.base_max_size);
                prop_assert_eq!((q / p.base_increment).fract(), Decimal::ZERO);
                let limit = kind.limit_price().unwrap();
                prop_assert_eq!((limit / p.quote_increment).fract(), Decimal::ZERO);
                prop_assert!(q * limit >= p.min_notional);
                if buy { prop_assert!(limit <= price) } else { prop_assert!(limit >= price) }
            }
        }
    }
}

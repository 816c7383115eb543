//! The trading state machine every order passes through: Normal lets orders through to the
//! risk checks, ReduceOnly only lets orders that shrink a position, Halted lets nothing.

use crate::domain::Side;
use crate::risk::{RejectReason, Rejection};
use rust_decimal::Decimal;
use tradingbot_crds::TradingMode;

/// Does an order of `side`/`quantity` shrink (and never flip) a position of `position`?
pub fn is_reducing(side: Side, quantity: Decimal, position: Decimal) -> bool {
    quantity > Decimal::ZERO
        && match side {
            Side::Buy => position < Decimal::ZERO && quantity <= -position,
            Side::Sell => position > Decimal::ZERO && quantity <= position,
        }
}

/// The gate. `reduce_only_order` is the order's own flag: a reduce-only order must reduce
/// whatever the mode.
pub fn gate(
    mode: TradingMode,
    side: Side,
    quantity: Decimal,
    position: Decimal,
    reduce_only_order: bool,
) -> Result<(), Rejection> {
    let reducing = is_reducing(side, quantity, position);
    match mode {
        TradingMode::Halted => Err(Rejection::new(RejectReason::Halted, "trading is Halted: no orders")),
        TradingMode::ReduceOnly if !reducing => Err(Rejection::new(
            RejectReason::ReduceOnly,
            format!("trading is ReduceOnly: {side} {quantity} would not reduce the position {position}"),
        )),
        _ if reduce_only_order && !reducing => Err(Rejection::new(
            RejectReason::ReduceOnly,
            format!("reduce-only order {side} {quantity} would not reduce the position {position}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    #[test]
    fn halted_refuses_everything() {
        assert!(gate(TradingMode::Halted, Side::Sell, dec!(1), dec!(5), true).is_err());
    }

    #[test]
    fn reduce_only_lets_only_shrinking_orders_through() {
        assert!(gate(TradingMode::ReduceOnly, Side::Sell, dec!(1), dec!(2), false).is_ok());
        assert!(gate(TradingMode::ReduceOnly, Side::Sell, dec!(2), dec!(2), false).is_ok());
        // Flipping a long into a short increases exposure on the other side.
        assert!(gate(TradingMode::ReduceOnly, Side::Sell, dec!(3), dec!(2), false).is_err());
        assert!(gate(TradingMode::ReduceOnly, Side::Buy, dec!(1), dec!(2), false).is_err());
        assert!(gate(TradingMode::ReduceOnly, Side::Buy, dec!(1), dec!(0), false).is_err());
        assert!(gate(TradingMode::ReduceOnly, Side::Buy, dec!(1), dec!(-1), false).is_ok());
    }

    #[test]
    fn a_reduce_only_order_must_reduce_even_in_normal_mode() {
        assert!(gate(TradingMode::Normal, Side::Buy, dec!(1), dec!(0), true).is_err());
        assert!(gate(TradingMode::Normal, Side::Buy, dec!(1), dec!(0), false).is_ok());
    }

    proptest! {
        /// Whatever passes the gate in ReduceOnly never increases |position|.
        #[test]
        fn reduce_only_never_increases_exposure(position in -1_000_000i64..1_000_000, quantity in 0i64..2_000_000, buy: bool) {
            let (position, quantity) = (Decimal::new(position, 3), Decimal::new(quantity, 3));
            let side = if buy { Side::Buy } else { Side::Sell };
            if gate(TradingMode::ReduceOnly, side, quantity, position, false).is_ok() {
                let after = position + side.sign() * quantity;
                prop_assert!(after.abs() < position.abs());
                prop_assert!(after.is_zero() || after.is_sign_positive() == position.is_sign_positive());
            }
        }
    }
}

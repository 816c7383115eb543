//! Decimal helpers: strict parsing of client input, increments and display.
//!
//! Every amount in the simulator is a [`Decimal`]; nothing here uses floats.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Longest decimal literal accepted from a client.
const MAX_LITERAL_LEN: usize = 48;

/// Parses a plain decimal literal (`-?digits(.digits)?`) as sent by Coinbase clients.
///
/// Rejects exponents, underscores, whitespace, signs other than a leading `-`, and values
/// that do not fit a [`Decimal`] (returns `None` instead of panicking).
pub fn parse_decimal(s: &str) -> Option<Decimal> {
    if s.is_empty() || s.len() > MAX_LITERAL_LEN {
        return None;
    }
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (body, None),
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !frac.is_none_or(all_digits) {
        return None;
    }
    Decimal::from_str(s).ok()
}

/// Whether `value` is an exact multiple of `increment`.
pub fn is_multiple_of(value: Decimal, increment: Decimal) -> bool {
    if increment.is_zero() {
        return true;
    }
    value.checked_rem(increment).is_some_and(|r| r.is_zero())
}

/// Rounds `value` down to a multiple of `increment`.
pub fn floor_to(value: Decimal, increment: Decimal) -> Decimal {
    if increment.is_zero() {
        return value;
    }
    value
        .checked_div(increment)
        .and_then(|q| q.floor().checked_mul(increment))
        .unwrap_or(value)
}

/// Rounds `value` up to a multiple of `increment`.
pub fn ceil_to(value: Decimal, increment: Decimal) -> Decimal {
    if increment.is_zero() {
        return value;
    }
    value
        .checked_div(increment)
        .and_then(|q| q.ceil().checked_mul(increment))
        .unwrap_or(value)
}

/// Renders a price with exactly the scale of the product's quote increment (`95000.10`).
pub fn price_str(value: Decimal, quote_increment: Decimal) -> String {
    let scale = quote_increment.scale();
    let mut v = value.round_dp(scale);
    v.rescale(scale);
    v.to_string()
}

/// Renders an amount without trailing zeros (`0.5`, `12`).
pub fn plain(value: Decimal) -> String {
    if value.is_zero() {
        return "0".to_string();
    }
    value.normalize().to_string()
}

/// Rounds a computed amount (fees, averages) to a fixed number of places.
pub fn round_amount(value: Decimal) -> Decimal {
    value.round_dp(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_literals_only() {
        assert_eq!(parse_decimal("1.50"), Some(Decimal::new(150, 2)));
        assert_eq!(parse_decimal("-2"), Some(Decimal::from(-2)));
        for bad in ["", "1e5", "1_000", " 1", "1.", ".5", "+1", "abc", "1.2.3", "--1"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(parse_decimal("99999999999999999999999999999999999"), None);
    }

    #[test]
    fn increments() {
        let inc = Decimal::new(1, 2);
        assert!(is_multiple_of(Decimal::new(1234, 2), inc));
        assert!(!is_multiple_of(Decimal::new(12345, 3), inc));
        assert_eq!(floor_to(Decimal::new(12345, 3), inc), Decimal::new(1234, 2));
        assert_eq!(ceil_to(Decimal::new(12341, 3), inc), Decimal::new(1235, 2));
        assert_eq!(price_str(Decimal::from(95000), inc), "95000.00");
        assert_eq!(plain(Decimal::new(1500, 3)), "1.5");
    }
}

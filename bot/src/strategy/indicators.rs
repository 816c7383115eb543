//! Indicators in decimal arithmetic: a running simple moving average (O(1) per bar) and the
//! candle statistics the spot entry filters use (computed on demand, only on a signal).

use crate::domain::Candle;
use rust_decimal::Decimal;
use std::collections::VecDeque;

/// Simple moving average over the last `window` values, updated in O(1).
#[derive(Debug, Clone)]
pub struct MovingAverage {
    window: usize,
    values: VecDeque<Decimal>,
    sum: Decimal,
}

impl MovingAverage {
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        Self {
            window,
            values: VecDeque::with_capacity(window + 1),
            sum: Decimal::ZERO,
        }
    }

    /// Add a value; the average once the window is full.
    pub fn push(&mut self, value: Decimal) -> Option<Decimal> {
        self.values.push_back(value);
        self.sum += value;
        if self.values.len() > self.window {
            self.sum -= self.values.pop_front().unwrap_or_default();
        }
        self.value()
    }

    pub fn value(&self) -> Option<Decimal> {
        (self.values.len() == self.window).then(|| self.sum / Decimal::from(self.window))
    }
}

/// Mean of a slice (None when empty).
pub fn mean(values: impl ExactSizeIterator<Item = Decimal>) -> Option<Decimal> {
    let n = values.len();
    (n > 0).then(|| values.sum::<Decimal>() / Decimal::from(n))
}

/// Relative strength index over `period` closes (simple averages of gains and losses).
pub fn rsi(candles: &[Candle], period: usize) -> Option<Decimal> {
    if period == 0 || candles.len() <= period {
        return None;
    }
    let recent = &candles[candles.len() - period - 1..];
    let (mut gains, mut losses) = (Decimal::ZERO, Decimal::ZERO);
    for pair in recent.windows(2) {
        let change = pair[1].close - pair[0].close;
        if change > Decimal::ZERO {
            gains += change;
        } else {
            losses -= change;
        }
    }
    if losses.is_zero() {
        return Some(Decimal::ONE_HUNDRED);
    }
    let rs = gains / losses;
    Some(Decimal::ONE_HUNDRED - Decimal::ONE_HUNDRED / (Decimal::ONE + rs))
}

/// Average true range over `period` bars.
pub fn atr(candles: &[Candle], period: usize) -> Option<Decimal> {
    if period == 0 || candles.len() <= period {
        return None;
    }
    let recent = &candles[candles.len() - period - 1..];
    mean(recent.windows(2).map(|pair| {
        let (prev, bar) = (pair[0], pair[1]);
        (bar.high - bar.low)
            .max((bar.high - prev.close).abs())
            .max((bar.low - prev.close).abs())
    }))
}

/// Simple moving average of closes ending `bars_ago` bars before the last one.
pub fn sma_of_closes(candles: &[Candle], window: usize, bars_ago: usize) -> Option<Decimal> {
    let end = candles.len().checked_sub(bars_ago)?;
    let start = end.checked_sub(window)?;
    (window > 0)
        .then(|| mean(candles[start..end].iter().map(|c| c.close)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn bars(closes: &[i64]) -> Vec<Candle> {
        closes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = Decimal::from(*c);
                Candle {
                    start: i as i64,
                    open: c,
                    high: c + Decimal::ONE,
                    low: c - Decimal::ONE,
                    close: c,
                    volume: dec!(10),
                }
            })
            .collect()
    }

    #[test]
    fn moving_average_rolls() {
        let mut ma = MovingAverage::new(3);
        assert_eq!(ma.push(dec!(1)), None);
        assert_eq!(ma.push(dec!(2)), None);
        assert_eq!(ma.push(dec!(3)), Some(dec!(2)));
        assert_eq!(ma.push(dec!(7)), Some(dec!(4)));
    }

    #[test]
    fn rsi_is_100_when_only_rising_and_50_when_balanced() {
        assert_eq!(rsi(&bars(&[1, 2, 3, 4]), 3), Some(dec!(100)));
        assert_eq!(rsi(&bars(&[10, 11, 10, 11, 10]), 4), Some(dec!(50)));
        assert_eq!(rsi(&bars(&[1, 2]), 3), None);
    }

    #[test]
    fn atr_counts_gaps_from_the_previous_close() {
        // Bars have a range of 2; a gap of 5 from the previous close dominates.
        assert_eq!(atr(&bars(&[10, 15]), 1), Some(dec!(6)));
        assert_eq!(sma_of_closes(&bars(&[1, 2, 3, 4]), 2, 0), Some(dec!(3.5)));
        assert_eq!(sma_of_closes(&bars(&[1, 2, 3, 4]), 2, 1), Some(dec!(2.5)));
        assert_eq!(sma_of_closes(&bars(&[1]), 2, 1), None);
    }
}

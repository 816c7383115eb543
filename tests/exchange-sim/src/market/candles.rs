//! One-minute candles of the mid price and their aggregation to coarser granularities.

use std::collections::BTreeMap;

use rust_decimal::Decimal;

/// An OHLCV bucket starting at `start` (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candle {
    pub start: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
}

impl Candle {
    fn opening(start: i64, price: Decimal) -> Self {
        Self {
            start,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: Decimal::ZERO,
        }
    }

    fn merge(&mut self, later: &Candle) {
        self.high = self.high.max(later.high);
        self.low = self.low.min(later.low);
        self.close = later.close;
        self.volume += later.volume;
    }
}

/// Candle granularities accepted by `GET .../candles`.
pub const GRANULARITIES: [(&str, i64); 8] = [
    ("ONE_MINUTE", 60),
    ("FIVE_MINUTE", 300),
    ("FIFTEEN_MINUTE", 900),
    ("THIRTY_MINUTE", 1_800),
    ("ONE_HOUR", 3_600),
    ("TWO_HOUR", 7_200),
    ("SIX_HOUR", 21_600),
    ("ONE_DAY", 86_400),
];

/// Seconds per bucket of a granularity name.
pub fn granularity_secs(name: &str) -> Option<i64> {
    GRANULARITIES.iter().find(|(n, _)| *n == name).map(|(_, secs)| *secs)
}

/// Minute candles keyed by start time; minutes without data (a frozen feed) are absent.
#[derive(Debug, Clone, Default)]
pub struct CandleSeries {
    minutes: BTreeMap<i64, Candle>,
    /// Lowest and highest price ever recorded (the 52-week range; history is shorter).
    extremes: Option<(Decimal, Decimal)>,
}

/// Oldest minute kept (30 days).
const RETENTION_SECS: i64 = 30 * 86_400;

impl CandleSeries {
    /// Records a price observation (and traded volume) at `ts` (unix seconds).
    pub fn record(&mut self, ts: i64, price: Decimal, volume: Decimal) {
        let start = ts - ts.rem_euclid(60);
        let candle = self
            .minutes
            .entry(start)
            .or_insert_with(|| Candle::opening(start, price));
        candle.high = candle.high.max(price);
        candle.low = candle.low.min(price);
        candle.close = price;
        candle.volume += volume;
        self.extremes = Some(match self.extremes {
            Some((low, high)) => (low.min(price), high.max(price)),
            None => (price, price),
        });
        if let Some((&oldest, _)) = self.minutes.first_key_value()
            && start - oldest > RETENTION_SECS
        {
            self.minutes = self.minutes.split_off(&(start - RETENTION_SECS));
        }
    }

    /// Buckets of `granularity` seconds overlapping `[start, end)`, newest first.
    pub fn aggregate(&self, start: i64, end: i64, granularity: i64) -> Vec<Candle> {
        let granularity = granularity.max(60);
        let first = start - start.rem_euclid(granularity);
        if first >= end {
            return Vec::new();
        }
        let mut buckets: BTreeMap<i64, Candle> = BTreeMap::new();
        for (_, minute) in self.minutes.range(first..end) {
            let bucket = minute.start - minute.start.rem_euclid(granularity);
            buckets.entry(bucket).and_modify(|c| c.merge(minute)).or_insert(Candle {
                start: bucket,
                ..*minute
            });
        }
        buckets.into_values().rev().collect()
    }

    /// Minute candles starting at or after `from`, oldest first.
    pub fn since(&self, from: i64) -> impl Iterator<Item = &Candle> {
        self.minutes.range(from..).map(|(_, c)| c)
    }

    /// Lowest and highest recorded price.
    pub fn extremes(&self) -> Option<(Decimal, Decimal)> {
        self.extremes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_newest_first() {
        let mut s = CandleSeries::default();
        for minute in 0..10 {
            let ts = 600 + minute * 60;
            s.record(ts, Decimal::from(100 + minute), Decimal::ONE);
        }
        let five = s.aggregate(600, 1200, 300);
        assert_eq!(five.len(), 2);
        assert_eq!(five[0].start, 900);
        assert_eq!(five[0].open, Decimal::from(105));
        assert_eq!(five[0].close, Decimal::from(109));
        assert_eq!(five[1].volume, Decimal::from(5));
        assert_eq!(granularity_secs("ONE_DAY"), Some(86_400));
        assert_eq!(granularity_secs("ONE_WEEK"), None);
    }
}

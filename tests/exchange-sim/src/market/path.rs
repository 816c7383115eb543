//! Seeded random walk of a product's mid price, in integer basis points.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sha2::{Digest, Sha256};

/// Mid prices are held as integers of 1e-8 quote units so the walk needs no floats.
const SCALE: u32 = 8;
const BPS: i128 = 10_000;

/// Derives a reproducible RNG from the simulator seed and a label.
pub fn seeded_rng(seed: u64, label: &str) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(label.as_bytes());
    ChaCha8Rng::from_seed(hasher.finalize().into())
}

/// One product's mid price: a multiplicative walk stepping a whole number of basis points.
#[derive(Debug, Clone)]
pub struct PricePath {
    rng: ChaCha8Rng,
    mid_units: i64,
    step_bps: i64,
}

impl PricePath {
    pub fn new(seed: u64, key: &str, initial: Decimal, step_bps: u32) -> Self {
        Self {
            rng: seeded_rng(seed, &format!("path:{key}")),
            mid_units: to_units(initial).unwrap_or(1).max(1),
            step_bps: i64::from(step_bps.max(1)),
        }
    }

    /// Current mid price.
    pub fn mid(&self) -> Decimal {
        Decimal::new(self.mid_units, SCALE)
    }

    /// One live tick: a uniform step in `[-step_bps, step_bps]` basis points.
    pub fn step(&mut self) {
        let k = self.rng.gen_range(-self.step_bps..=self.step_bps);
        self.apply_bps(k);
    }

    /// One step of the coarse history generator, `range` basis points wide.
    pub fn coarse_step(&mut self, range: i64) {
        let k = self.rng.gen_range(-range..=range);
        self.apply_bps(k);
    }

    /// Range of a coarse step that, repeated `coarse_per_minute` times, has the variance of
    /// 60 live steps (smallest `a` with `a(a+1) >= 60/coarse * s(s+1)`).
    pub fn coarse_range(&self, coarse_per_minute: i64) -> i64 {
        let s = self.step_bps;
        let target = 60 * s * (s + 1) / coarse_per_minute.max(1);
        (1..).find(|a| a * (a + 1) >= target).unwrap_or(s)
    }

    /// Moves the mid by `percent` (e.g. `-10`) at once. Returns false when the result is
    /// not a positive price.
    pub fn shock(&mut self, percent: Decimal) -> bool {
        let factor = Decimal::ONE_HUNDRED
            .checked_add(percent)
            .and_then(|f| f.checked_div(Decimal::ONE_HUNDRED));
        let shocked = factor.and_then(|f| self.mid().checked_mul(f));
        match shocked.and_then(to_units) {
            Some(units) if units > 0 => {
                self.mid_units = units;
                true
            }
            _ => false,
        }
    }

    fn apply_bps(&mut self, k: i64) {
        let next = i128::from(self.mid_units) * (BPS + i128::from(k)) / BPS;
        self.mid_units = i64::try_from(next).unwrap_or(i64::MAX).max(1);
    }
}

fn to_units(price: Decimal) -> Option<i64> {
    price.checked_mul(Decimal::new(10_i64.pow(SCALE), 0))?.trunc().to_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_path() {
        let mut a = PricePath::new(7, "BTC", Decimal::from(95_000), 1);
        let mut b = PricePath::new(7, "BTC", Decimal::from(95_000), 1);
        for _ in 0..1000 {
            a.step();
            b.step();
        }
        assert_eq!(a.mid(), b.mid());
        let mut c = PricePath::new(8, "BTC", Decimal::from(95_000), 1);
        for _ in 0..1000 {
            c.step();
        }
        assert_ne!(a.mid(), c.mid());
    }

    #[test]
    fn shock_moves_mid() {
        let mut p = PricePath::new(1, "ETH", Decimal::from(1000), 1);
        assert!(p.shock(Decimal::from(-10)));
        assert_eq!(p.mid(), Decimal::from(900));
        assert!(!p.shock(Decimal::from(-100)));
        assert_eq!(p.coarse_range(4), 5);
    }
}

//! The product catalogue: spot pairs and INTX perpetuals with their trading rules.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Spot or perpetual future.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductKind {
    Spot,
    Perpetual {
        contract_size: Decimal,
        max_leverage: Decimal,
        funding_rate: Decimal,
    },
}

/// Static trading rules of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSpec {
    pub id: String,
    pub base: String,
    pub quote: String,
    pub kind: ProductKind,
    pub base_increment: Decimal,
    pub quote_increment: Decimal,
    pub base_min_size: Decimal,
    pub base_max_size: Decimal,
    pub quote_min_size: Decimal,
    pub quote_max_size: Decimal,
    /// Mid price at the start of the generated history.
    pub initial_price: Decimal,
    /// Largest random-walk step per tick, in basis points.
    pub step_bps: u32,
    /// Range of the USD notional of one synthetic book level.
    pub level_notional: (u32, u32),
}

impl ProductSpec {
    pub fn is_perpetual(&self) -> bool {
        matches!(self.kind, ProductKind::Perpetual { .. })
    }

    /// `SPOT` or `FUTURE`.
    pub fn product_type(&self) -> &'static str {
        if self.is_perpetual() { "FUTURE" } else { "SPOT" }
    }

    /// `CBE` (Coinbase Exchange) or `INTX` (Coinbase International).
    pub fn venue(&self) -> &'static str {
        if self.is_perpetual() { "INTX" } else { "CBE" }
    }

    pub fn max_leverage(&self) -> Decimal {
        match &self.kind {
            ProductKind::Spot => Decimal::ONE,
            ProductKind::Perpetual { max_leverage, .. } => *max_leverage,
        }
    }

    /// Products sharing a key follow the same seeded price path (spot and its perpetual).
    pub fn path_key(&self) -> &str {
        &self.base
    }
}

/// Trading status flags, settable through `POST /admin/products/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductFlags {
    /// `online`, `offline` or `delisted`.
    pub status: String,
    pub trading_disabled: bool,
    pub cancel_only: bool,
    pub limit_only: bool,
    pub post_only: bool,
}

impl Default for ProductFlags {
    fn default() -> Self {
        Self {
            status: "online".to_string(),
            trading_disabled: false,
            cancel_only: false,
            limit_only: false,
            post_only: false,
        }
    }
}

/// Partial update of [`ProductFlags`]; absent fields are left unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductFlagsUpdate {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub trading_disabled: Option<bool>,
    #[serde(default)]
    pub cancel_only: Option<bool>,
    #[serde(default)]
    pub limit_only: Option<bool>,
    #[serde(default)]
    pub post_only: Option<bool>,
}

impl ProductFlags {
    pub fn apply(&mut self, update: &ProductFlagsUpdate) {
        if let Some(status) = &update.status {
            self.status = status.clone();
        }
        if let Some(v) = update.trading_disabled {
            self.trading_disabled = v;
        }
        if let Some(v) = update.cancel_only {
            self.cancel_only = v;
        }
        if let Some(v) = update.limit_only {
            self.limit_only = v;
        }
        if let Some(v) = update.post_only {
            self.post_only = v;
        }
    }
}

/// `Decimal` from a mantissa and scale (`dec(1, 8)` is `0.00000001`).
fn dec(mantissa: i64, scale: u32) -> Decimal {
    Decimal::new(mantissa, scale)
}

struct SpotRow {
    base: &'static str,
    base_increment: Decimal,
    quote_increment: Decimal,
    base_max_size: Decimal,
    price: Decimal,
    step_bps: u32,
}

fn spot(row: SpotRow) -> ProductSpec {
    ProductSpec {
        id: format!("{}-USD", row.base),
        base: row.base.to_string(),
        quote: "USD".to_string(),
        kind: ProductKind::Spot,
        base_increment: row.base_increment,
        quote_increment: row.quote_increment,
        base_min_size: row.base_increment,
        base_max_size: row.base_max_size,
        quote_min_size: Decimal::ONE,
        quote_max_size: Decimal::from(150_000_000),
        initial_price: row.price,
        step_bps: row.step_bps,
        level_notional: (5_000, 60_000),
    }
}

struct PerpRow {
    base: &'static str,
    base_increment: Decimal,
    quote_increment: Decimal,
    base_max_size: Decimal,
    price: Decimal,
    step_bps: u32,
    max_leverage: i64,
}

fn perpetual(row: PerpRow) -> ProductSpec {
    ProductSpec {
        id: format!("{}-PERP-INTX", row.base),
        base: row.base.to_string(),
        quote: "USD".to_string(),
        kind: ProductKind::Perpetual {
            contract_size: Decimal::ONE,
            max_leverage: Decimal::from(row.max_leverage),
            funding_rate: dec(11, 6),
        },
        base_increment: row.base_increment,
        quote_increment: row.quote_increment,
        base_min_size: row.base_increment,
        base_max_size: row.base_max_size,
        quote_min_size: Decimal::from(10),
        quote_max_size: Decimal::from(50_000_000),
        initial_price: row.price,
        step_bps: row.step_bps,
        level_notional: (10_000, 120_000),
    }
}

/// Every product the simulator knows, spot first.
pub fn catalogue() -> Vec<ProductSpec> {
    let satoshi = dec(1, 8);
    let cent = dec(1, 2);
    let spot_rows = [
        ("BTC", satoshi, cent, 3_400, dec(95_000, 0), 1),
        ("ETH", satoshi, cent, 38_000, dec(3_500, 0), 1),
        ("SOL", satoshi, cent, 250_000, dec(180, 0), 2),
        ("XRP", dec(1, 6), dec(1, 4), 50_000_000, dec(230, 2), 2),
        ("LTC", satoshi, cent, 90_000, dec(95, 0), 1),
        ("ADA", satoshi, dec(1, 4), 60_000_000, dec(75, 2), 2),
        ("DOGE", dec(1, 1), dec(1, 5), 200_000_000, dec(22, 2), 2),
        ("BCH", satoshi, cent, 20_000, dec(450, 0), 1),
        ("AVAX", satoshi, cent, 700_000, dec(30, 0), 2),
        ("LINK", dec(1, 2), dec(1, 3), 900_000, dec(18, 0), 2),
    ];
    let perp_rows = [
        ("BTC", dec(1, 4), dec(1, 1), 200, dec(95_000, 0), 1, 20),
        ("ETH", dec(1, 3), cent, 3_000, dec(3_500, 0), 1, 20),
        ("SOL", cent, cent, 60_000, dec(180, 0), 2, 10),
        ("XRP", Decimal::ONE, dec(1, 4), 5_000_000, dec(230, 2), 2, 10),
    ];
    let spots = spot_rows.into_iter().map(|(base, bi, qi, max, price, step)| {
        spot(SpotRow {
            base,
            base_increment: bi,
            quote_increment: qi,
            base_max_size: Decimal::from(max),
            price,
            step_bps: step,
        })
    });
    let perps = perp_rows.into_iter().map(|(base, bi, qi, max, price, step, lev)| {
        perpetual(PerpRow {
            base,
            base_increment: bi,
            quote_increment: qi,
            base_max_size: Decimal::from(max),
            price,
            step_bps: step,
            max_leverage: lev,
        })
    });
    spots.chain(perps).collect()
}

/// The catalogue restricted to `ids` (all products when empty).
pub fn select(ids: &[String]) -> Result<Vec<ProductSpec>, String> {
    let all = catalogue();
    if ids.is_empty() {
        return Ok(all);
    }
    ids.iter()
        .map(|id| {
            all.iter()
                .find(|p| &p.id == id)
                .cloned()
                .ok_or_else(|| format!("unknown product {id}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        let all = catalogue();
        assert_eq!(all.len(), 14);
        let btc = &all[0];
        assert_eq!(btc.id, "BTC-USD");
        assert_eq!(btc.base_increment.to_string(), "0.00000001");
        assert_eq!(btc.quote_increment.to_string(), "0.01");
        assert_eq!(btc.quote_min_size, Decimal::ONE);
        assert!(all.iter().any(|p| p.id == "XRP-PERP-INTX" && p.is_perpetual()));
        assert!(select(&["NOPE-USD".to_string()]).is_err());
    }
}

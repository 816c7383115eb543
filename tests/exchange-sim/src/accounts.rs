//! Portfolios: one per API key, with currency balances, holds and perpetual positions.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::config::KeySpec;
use crate::num::round_amount;
use crate::side::Side;

/// One currency account ("wallet") of a portfolio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub account_uuid: String,
    pub currency: String,
    pub total: Decimal,
    /// Reserved by open orders.
    pub hold: Decimal,
    pub created_at: DateTime<Utc>,
}

impl Balance {
    pub fn available(&self) -> Decimal {
        self.total - self.hold
    }
}

/// A perpetual position (sizes in base units, contract size 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub product_id: String,
    /// Positive long, negative short.
    pub net_size: Decimal,
    pub entry_price: Decimal,
    pub leverage: Decimal,
    pub realized_pnl: Decimal,
}

impl Position {
    fn flat(product_id: &str) -> Self {
        Self {
            product_id: product_id.to_string(),
            net_size: Decimal::ZERO,
            entry_price: Decimal::ZERO,
            leverage: Decimal::ONE,
            realized_pnl: Decimal::ZERO,
        }
    }

    pub fn side(&self) -> Option<Side> {
        if self.net_size.is_zero() {
            None
        } else if self.net_size.is_sign_positive() {
            Some(Side::Buy)
        } else {
            Some(Side::Sell)
        }
    }

    pub fn notional(&self, mark: Decimal) -> Decimal {
        self.net_size.abs() * mark
    }

    pub fn unrealized_pnl(&self, mark: Decimal) -> Decimal {
        (mark - self.entry_price) * self.net_size
    }

    /// Initial margin at entry.
    pub fn initial_margin(&self) -> Decimal {
        self.net_size.abs() * self.entry_price / self.leverage.max(Decimal::ONE)
    }

    /// Maintenance margin rate: half the initial margin rate.
    pub fn maintenance_rate(&self) -> Decimal {
        Decimal::ONE / (Decimal::TWO * self.leverage.max(Decimal::ONE))
    }

    /// Isolated-margin style liquidation price: the mark at which the loss eats the
    /// initial margin down to the maintenance margin.
    pub fn liquidation_price(&self) -> Decimal {
        let distance = Decimal::ONE / self.leverage.max(Decimal::ONE) - self.maintenance_rate();
        let price = match self.side() {
            Some(Side::Buy) => self.entry_price * (Decimal::ONE - distance),
            Some(Side::Sell) => self.entry_price * (Decimal::ONE + distance),
            None => Decimal::ZERO,
        };
        round_amount(price.max(Decimal::ZERO))
    }

    /// Applies a fill; returns the realized PnL.
    fn apply_fill(&mut self, side: Side, price: Decimal, size: Decimal, leverage: Decimal) -> Decimal {
        let signed = match side {
            Side::Buy => size,
            Side::Sell => -size,
        };
        let increases = self.net_size.is_zero() || self.net_size.is_sign_positive() == signed.is_sign_positive();
        if increases {
            let new_size = self.net_size + signed;
            self.entry_price = round_amount((self.entry_price * self.net_size.abs() + price * size) / new_size.abs());
            self.net_size = new_size;
            self.leverage = leverage;
            return Decimal::ZERO;
        }
        let closing = self.net_size.abs().min(size);
        let direction = if self.net_size.is_sign_positive() {
            Decimal::ONE
        } else {
            Decimal::NEGATIVE_ONE
        };
        let realized = round_amount(closing * (price - self.entry_price) * direction);
        self.realized_pnl += realized;
        let before = self.net_size;
        self.net_size += signed;
        if self.net_size.is_zero() {
            self.entry_price = Decimal::ZERO;
        } else if self.net_size.is_sign_positive() != before.is_sign_positive() {
            self.entry_price = price;
            self.leverage = leverage;
        }
        realized
    }
}

/// A key's portfolio.
#[derive(Debug, Clone)]
pub struct Portfolio {
    pub uuid: String,
    pub name: String,
    pub portfolio_type: String,
    pub derivatives: bool,
    pub balances: BTreeMap<String, Balance>,
    pub positions: BTreeMap<String, Position>,
    initial_balances: BTreeMap<String, Decimal>,
    currencies: Vec<String>,
    pub total_volume: Decimal,
    pub total_fees: Decimal,
}

impl Portfolio {
    /// A portfolio for `key` with an account per currency in `currencies` and in its balances.
    pub fn new(key: &KeySpec, currencies: &[String], now: DateTime<Utc>) -> Self {
        let mut portfolio = Self {
            uuid: uuid::Uuid::new_v4().to_string(),
            name: if key.portfolio_type == "DEFAULT" {
                "Default".to_string()
            } else {
                format!("{} portfolio", key.portfolio_type)
            },
            portfolio_type: key.portfolio_type.clone(),
            derivatives: key.derivatives,
            balances: BTreeMap::new(),
            positions: BTreeMap::new(),
            initial_balances: key.balances.clone(),
            currencies: currencies.to_vec(),
            total_volume: Decimal::ZERO,
            total_fees: Decimal::ZERO,
        };
        portfolio.reset(now);
        portfolio
    }

    /// Back to the registered starting balances: no holds, positions or volume.
    pub fn reset(&mut self, now: DateTime<Utc>) {
        for balance in self.balances.values_mut() {
            balance.total = Decimal::ZERO;
            balance.hold = Decimal::ZERO;
        }
        for currency in self.currencies.clone() {
            self.balance_mut(&currency, now);
        }
        for (currency, amount) in self.initial_balances.clone() {
            self.balance_mut(&currency, now).total = amount;
        }
        self.positions.clear();
        self.total_volume = Decimal::ZERO;
        self.total_fees = Decimal::ZERO;
    }

    /// Updates the portfolio's settings from a re-registered key.
    pub fn reconfigure(&mut self, key: &KeySpec, now: DateTime<Utc>) {
        self.portfolio_type = key.portfolio_type.clone();
        self.derivatives = key.derivatives;
        self.initial_balances = key.balances.clone();
        for (currency, amount) in &key.balances {
            self.balance_mut(currency, now).total = *amount;
        }
    }

    /// Whether perpetuals can be traded from this portfolio.
    pub fn trades_perpetuals(&self) -> bool {
        self.derivatives && self.portfolio_type == "INTX"
    }

    /// The account of `currency`, created (empty) when missing.
    pub fn balance_mut(&mut self, currency: &str, now: DateTime<Utc>) -> &mut Balance {
        self.balances.entry(currency.to_string()).or_insert_with(|| Balance {
            account_uuid: uuid::Uuid::new_v4().to_string(),
            currency: currency.to_string(),
            total: Decimal::ZERO,
            hold: Decimal::ZERO,
            created_at: now,
        })
    }

    pub fn available(&self, currency: &str) -> Decimal {
        self.balances.get(currency).map_or(Decimal::ZERO, Balance::available)
    }

    /// Sets totals (leaves holds alone) and remembers them as the reset balances.
    pub fn set_balances(&mut self, balances: &BTreeMap<String, Decimal>, now: DateTime<Utc>) {
        for (currency, amount) in balances {
            self.balance_mut(currency, now).total = *amount;
            self.initial_balances.insert(currency.clone(), *amount);
        }
    }

    pub fn add_hold(&mut self, currency: &str, amount: Decimal, now: DateTime<Utc>) {
        self.balance_mut(currency, now).hold += amount;
    }

    pub fn release_hold(&mut self, currency: &str, amount: Decimal, now: DateTime<Utc>) {
        let balance = self.balance_mut(currency, now);
        balance.hold = (balance.hold - amount).max(Decimal::ZERO);
    }

    pub fn adjust(&mut self, currency: &str, delta: Decimal, now: DateTime<Utc>) {
        self.balance_mut(currency, now).total += delta;
    }

    /// Applies a perpetual fill to the position; returns realized PnL.
    pub fn apply_perp_fill(
        &mut self,
        product_id: &str,
        side: Side,
        price: Decimal,
        size: Decimal,
        leverage: Decimal,
    ) -> Decimal {
        self.positions
            .entry(product_id.to_string())
            .or_insert_with(|| Position::flat(product_id))
            .apply_fill(side, price, size, leverage)
    }

    /// Open (non-zero) positions.
    pub fn open_positions(&self) -> impl Iterator<Item = &Position> {
        self.positions.values().filter(|p| !p.net_size.is_zero())
    }
}

/// All portfolios, addressable by uuid and by key name.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    portfolios: HashMap<String, Portfolio>,
    by_key: HashMap<String, String>,
}

impl Accounts {
    /// Creates the key's portfolio, or reconfigures the existing one. Returns its uuid.
    pub fn upsert(&mut self, key: &KeySpec, currencies: &[String], now: DateTime<Utc>) -> String {
        if let Some(uuid) = self.by_key.get(&key.name)
            && let Some(portfolio) = self.portfolios.get_mut(uuid)
        {
            portfolio.reconfigure(key, now);
            return uuid.clone();
        }
        let portfolio = Portfolio::new(key, currencies, now);
        let uuid = portfolio.uuid.clone();
        self.by_key.insert(key.name.clone(), uuid.clone());
        self.portfolios.insert(uuid.clone(), portfolio);
        uuid
    }

    pub fn get(&self, uuid: &str) -> Option<&Portfolio> {
        self.portfolios.get(uuid)
    }

    pub fn get_mut(&mut self, uuid: &str) -> Option<&mut Portfolio> {
        self.portfolios.get_mut(uuid)
    }

    pub fn by_key_mut(&mut self, key_name: &str) -> Option<&mut Portfolio> {
        let uuid = self.by_key.get(key_name)?;
        self.portfolios.get_mut(uuid)
    }

    pub fn reset(&mut self, now: DateTime<Utc>) {
        for portfolio in self.portfolios.values_mut() {
            portfolio.reset(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_pnl_round_trip() {
        let mut p = Position::flat("BTC-PERP-INTX");
        assert_eq!(
            p.apply_fill(Side::Buy, Decimal::from(50_000), Decimal::ONE, Decimal::TWO),
            Decimal::ZERO
        );
        let realized = p.apply_fill(Side::Sell, Decimal::from(51_000), Decimal::ONE, Decimal::TWO);
        assert_eq!(realized, Decimal::from(1_000));
        assert!(p.net_size.is_zero());

        let mut s = Position::flat("ETH-PERP-INTX");
        s.apply_fill(Side::Sell, Decimal::from(2_000), Decimal::ONE, Decimal::ONE);
        assert_eq!(
            s.apply_fill(Side::Buy, Decimal::from(2_200), Decimal::ONE, Decimal::ONE),
            Decimal::from(-200)
        );
    }

    #[test]
    fn flip_sets_new_entry_and_liquidation() {
        let mut p = Position::flat("X");
        p.apply_fill(Side::Buy, Decimal::from(100), Decimal::ONE, Decimal::from(5));
        p.apply_fill(Side::Sell, Decimal::from(110), Decimal::from(3), Decimal::from(5));
        assert_eq!(p.net_size, Decimal::from(-2));
        assert_eq!(p.entry_price, Decimal::from(110));
        assert_eq!(p.liquidation_price(), Decimal::from(121));
    }
}

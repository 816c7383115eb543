//! The bot's own inventory: in spot, a bot's position in a symbol is what its own orders
//! (client order ids with its prefix) bought, net of what they sold, never more than the
//! account holds. Coins already on the account, or put there by a person, are not the bot's:
//! it never sells them, and they count in none of its PnL, losses, exposure or concentration.
//!
//! [`Ledger`] is the pure bookkeeping: one record per own order (filled size and value, which
//! only grow), plus quantities removed from the bot's books because the account held less than
//! the ledger (someone moved coins away). The Coinbase client rebuilds it from the exchange's
//! order history, keeps it up to date and persists it (see `coinbase::inventory`).

use crate::domain::{Order, Side, Symbol};
use crate::risk::{RejectReason, Rejection};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the ledger keeps of one of the bot's own orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnOrder {
    pub client_order_id: String,
    pub symbol: Symbol,
    pub side: Side,
    /// Ordered base quantity.
    #[serde(default)]
    pub size: Decimal,
    /// Filled base quantity.
    pub filled: Decimal,
    /// Filled quote value (filled × average price).
    pub value: Decimal,
    /// Fees paid in the quote currency (they only grow with the fills).
    #[serde(default)]
    pub fees: Decimal,
    /// Filled, cancelled, expired or failed: it cannot fill any more.
    pub done: bool,
}

/// The bot's own spot inventory, order by order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// By exchange order id.
    pub orders: BTreeMap<String, OwnOrder>,
    /// Base quantity taken off the bot's books because the account held less (cumulative).
    pub withdrawn: BTreeMap<Symbol, Decimal>,
}

/// Per-symbol figures for metrics, metrics.json and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SymbolInventory {
    /// What the bot owns (ledger, capped to the account).
    pub own: Decimal,
    /// Base currency on the account (available plus on hold).
    pub held: Decimal,
    /// Base currency on the account the bot did not buy (never its to trade).
    pub unowned: Decimal,
    pub bought: Decimal,
    pub sold: Decimal,
    /// Taken off the books because the account held less than the ledger.
    pub withdrawn: Decimal,
    /// Times the ledger was capped to a smaller balance (by this process).
    pub caps: u64,
    /// Quantity this process took off the books by capping.
    pub removed_since_start: Decimal,
}

/// The inventory as a whole, for the engine's metrics and snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InventoryReport {
    pub symbols: BTreeMap<Symbol, SymbolInventory>,
    /// The ledger was rebuilt from the exchange's order history (not only from the file).
    pub rebuilt_from_history: bool,
    /// Unix ms of the last successful full rebuild.
    pub last_rebuild_ms: Option<i64>,
    /// The last error reading history or writing the ledger file, if any.
    pub last_error: Option<String>,
    /// The bot's own cash (spot, when its books are kept: see [`crate::cash`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cash: Option<crate::cash::CashReport>,
}

impl Ledger {
    /// Take note of `order` if it is one of ours (`prefix`) on a spot market. Filled figures
    /// only grow (a stale read never undoes a newer one). Returns whether anything changed.
    pub fn record(&mut self, prefix: &str, order: &Order) -> bool {
        if !order.client_order_id.starts_with(prefix) || order.symbol.is_perpetual() || order.order_id.is_empty() {
            return false;
        }
        let value = order
            .average_fill_price
            .map_or(Decimal::ZERO, |p| p * order.filled_quantity);
        let incoming = OwnOrder {
            client_order_id: order.client_order_id.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            size: order.quantity.max(order.filled_quantity),
            filled: order.filled_quantity.max(Decimal::ZERO),
            value,
            fees: order.fees.max(Decimal::ZERO),
            done: !order.status.is_open(),
        };
        match self.orders.get_mut(&order.order_id) {
            None => {
                self.orders.insert(order.order_id.clone(), incoming);
                true
            }
            Some(known) => {
                let same_fill = incoming.filled == known.filled;
                // Fees are read with the fill; a later read may only add the missing ones.
                let newer =
                    incoming.filled > known.filled || (same_fill && (!known.done || incoming.fees > known.fees));
                let changed = newer && *known != incoming;
                if newer {
                    let done = known.done || incoming.done;
                    *known = OwnOrder { done, ..incoming };
                }
                changed
            }
        }
    }

    fn filled(&self, symbol: &Symbol, side: Side) -> (Decimal, Decimal) {
        self.orders
            .values()
            .filter(|o| &o.symbol == symbol && o.side == side)
            .fold((Decimal::ZERO, Decimal::ZERO), |(q, v), o| (q + o.filled, v + o.value))
    }

    /// The net cash flow of the bot's own fills on markets quoted in `quote`: what its sells
    /// brought in, less what its buys cost, less every fee (positive: cash came in).
    pub fn cash_flow(&self, quote: &str) -> Decimal {
        self.orders
            .values()
            .filter(|o| o.symbol.quote() == quote)
            .map(|o| match o.side {
                Side::Sell => o.value - o.fees,
                Side::Buy => -o.value - o.fees,
            })
            .sum()
    }

    /// Bought, minus sold, minus withdrawn (never below zero).
    pub fn quantity(&self, symbol: &Symbol) -> Decimal {
        let (bought, _) = self.filled(symbol, Side::Buy);
        let (sold, _) = self.filled(symbol, Side::Sell);
        (bought - sold - self.withdrawn(symbol)).max(Decimal::ZERO)
    }

    /// Volume-weighted average price of the bot's buys (its cost basis), if it bought any.
    pub fn entry_price(&self, symbol: &Symbol) -> Option<Decimal> {
        let (bought, value) = self.filled(symbol, Side::Buy);
        (bought > Decimal::ZERO && value > Decimal::ZERO).then(|| value / bought)
    }

    /// What the bot may still sell of `symbol`: its quantity less what its own resting sells
    /// already offer.
    pub fn sellable(&self, symbol: &Symbol) -> Decimal {
        let offered: Decimal = self
            .orders
            .values()
            .filter(|o| !o.done && &o.symbol == symbol && o.side == Side::Sell)
            .map(|o| (o.size - o.filled).max(Decimal::ZERO))
            .sum();
        (self.quantity(symbol) - offered).max(Decimal::ZERO)
    }

    pub fn withdrawn(&self, symbol: &Symbol) -> Decimal {
        self.withdrawn.get(symbol).copied().unwrap_or_default()
    }

    /// Own orders that may still fill (their ids).
    pub fn pending(&self) -> Vec<String> {
        self.orders
            .iter()
            .filter(|(_, o)| !o.done)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Mark an order as unable to fill any more (the exchange no longer knows it).
    pub fn close(&mut self, order_id: &str) {
        if let Some(order) = self.orders.get_mut(order_id) {
            order.done = true;
        }
    }

    /// If the account holds less of `symbol` than the ledger, take the difference off the
    /// books (someone moved coins away) and return it.
    pub fn cap_to(&mut self, symbol: &Symbol, held: Decimal) -> Option<Decimal> {
        let excess = self.quantity(symbol) - held.max(Decimal::ZERO);
        if excess <= Decimal::ZERO {
            return None;
        }
        *self.withdrawn.entry(symbol.clone()).or_default() += excess;
        Some(excess)
    }

    /// Merge a persisted ledger (records known to either are kept; the newer figures win).
    pub fn merge(&mut self, other: &Ledger) {
        for (id, order) in &other.orders {
            match self.orders.get_mut(id) {
                Some(known) if known.filled >= order.filled => {
                    known.done |= order.done;
                    known.fees = known.fees.max(order.fees);
                }
                _ => {
                    self.orders.insert(id.clone(), order.clone());
                }
            }
        }
        for (symbol, quantity) in &other.withdrawn {
            let entry = self.withdrawn.entry(symbol.clone()).or_default();
            *entry = (*entry).max(*quantity);
        }
    }

    /// The figures of `symbol` given what the account holds.
    pub fn figures(&self, symbol: &Symbol, held: Decimal, caps: (u64, Decimal)) -> SymbolInventory {
        let own = self.quantity(symbol).min(held.max(Decimal::ZERO));
        SymbolInventory {
            own,
            held,
            unowned: (held - own).max(Decimal::ZERO),
            bought: self.filled(symbol, Side::Buy).0,
            sold: self.filled(symbol, Side::Sell).0,
            withdrawn: self.withdrawn(symbol),
            caps: caps.0,
            removed_since_start: caps.1,
        }
    }
}

/// No shorting without derivatives: a SELL on a spot market may not take the bot's own
/// inventory (`own`) below zero.
pub fn check_spot_sell(symbol: &Symbol, side: Side, quantity: Decimal, own: Decimal) -> Result<(), Rejection> {
    if symbol.is_perpetual() || side == Side::Buy || quantity <= own {
        return Ok(());
    }
    Err(Rejection::new(
        RejectReason::SpotShort,
        format!(
            "selling {quantity} {} would take the bot's own {symbol} inventory ({own}) below zero: spot cannot be shorted, and coins the bot did not buy are not its to sell",
            symbol.base()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderKind, OrderStatus};
    use rust_decimal_macros::dec;

    fn order(id: &str, client: &str, side: Side, filled: Decimal, price: Decimal, status: OrderStatus) -> Order {
        Order {
            order_id: id.into(),
            client_order_id: client.into(),
            symbol: "BTC-USD".parse().unwrap(),
            side,
            quantity: filled.max(dec!(1)),
            kind: OrderKind::Market,
            status,
            filled_quantity: filled,
            average_fill_price: (filled > Decimal::ZERO).then_some(price),
            fees: Decimal::ZERO,
        }
    }

    fn btc() -> Symbol {
        "BTC-USD".parse().unwrap()
    }

    #[test]
    fn only_own_orders_count_and_fills_only_grow() {
        let mut ledger = Ledger::default();
        assert!(!ledger.record(
            "pb.local.",
            &order("x", "manual-1", Side::Buy, dec!(5), dec!(100), OrderStatus::Filled)
        ));
        assert!(ledger.record(
            "pb.local.",
            &order("a", "pb.local.1-1", Side::Buy, dec!(0.3), dec!(100), OrderStatus::Open)
        ));
        assert!(ledger.record(
            "pb.local.",
            &order("a", "pb.local.1-1", Side::Buy, dec!(1), dec!(110), OrderStatus::Filled)
        ));
        // A stale read of the same order changes nothing.
        assert!(!ledger.record(
            "pb.local.",
            &order("a", "pb.local.1-1", Side::Buy, dec!(0.3), dec!(100), OrderStatus::Open)
        ));
        assert!(ledger.record(
            "pb.local.",
            &order(
                "b",
                "pb.local.1-2",
                Side::Sell,
                dec!(0.4),
                dec!(120),
                OrderStatus::Filled
            )
        ));
        assert_eq!(ledger.quantity(&btc()), dec!(0.6));
        assert_eq!(ledger.entry_price(&btc()), Some(dec!(110)));
        assert!(ledger.pending().is_empty());
        let mut resting = order("c", "pb.local.1-3", Side::Sell, dec!(0.1), dec!(130), OrderStatus::Open);
        resting.quantity = dec!(0.5);
        ledger.record("pb.local.", &resting);
        assert_eq!(ledger.sellable(&btc()), dec!(0.1), "0.4 of the 0.5 is still offered");
        let perp = Order {
            symbol: "BTC-PERP".parse().unwrap(),
            ..order("p", "pb.local.1-3", Side::Buy, dec!(1), dec!(1), OrderStatus::Filled)
        };
        assert!(
            !ledger.record("pb.local.", &perp),
            "perpetual positions are the exchange's"
        );
    }

    #[test]
    fn a_smaller_balance_caps_the_ledger_for_good() {
        let mut ledger = Ledger::default();
        ledger.record(
            "p.",
            &order("a", "p.1", Side::Buy, dec!(2), dec!(100), OrderStatus::Filled),
        );
        assert_eq!(
            ledger.cap_to(&btc(), dec!(5)),
            None,
            "more on the account is not more for the bot"
        );
        assert_eq!(ledger.cap_to(&btc(), dec!(1.5)), Some(dec!(0.5)));
        assert_eq!(ledger.quantity(&btc()), dec!(1.5));
        // Coins coming back later are not reclaimed.
        let figures = ledger.figures(&btc(), dec!(3), (1, dec!(0.5)));
        assert_eq!(
            (figures.own, figures.unowned, figures.withdrawn),
            (dec!(1.5), dec!(1.5), dec!(0.5))
        );
    }

    #[test]
    fn merging_keeps_the_newest_figures_of_both() {
        let mut a = Ledger::default();
        a.record(
            "p.",
            &order("1", "p.1", Side::Buy, dec!(1), dec!(100), OrderStatus::Open),
        );
        let mut b = Ledger::default();
        b.record(
            "p.",
            &order("1", "p.1", Side::Buy, dec!(2), dec!(100), OrderStatus::Filled),
        );
        b.record(
            "p.",
            &order("2", "p.2", Side::Buy, dec!(1), dec!(100), OrderStatus::Filled),
        );
        b.withdrawn.insert(btc(), dec!(0.5));
        a.merge(&b);
        assert_eq!(a.quantity(&btc()), dec!(2.5));
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), a);
    }

    #[test]
    fn the_cash_flow_is_what_own_sells_brought_in_less_own_buys_and_every_fee() {
        let mut ledger = Ledger::default();
        let mut buy = order("a", "p.1", Side::Buy, dec!(0.5), dec!(100), OrderStatus::Filled);
        buy.fees = dec!(0.3);
        let mut sell = order("b", "p.2", Side::Sell, dec!(0.2), dec!(110), OrderStatus::Filled);
        sell.fees = dec!(0.1);
        let other = order("c", "someone-else", Side::Buy, dec!(3), dec!(100), OrderStatus::Filled);
        for o in [&buy, &sell, &other] {
            ledger.record("p.", o);
        }
        // -(50 + 0.3) + (22 - 0.1)
        assert_eq!(ledger.cash_flow("USD"), dec!(-28.4));
        assert_eq!(ledger.cash_flow("USDC"), Decimal::ZERO, "another quote currency");
        // Fees read late (same fill) are taken; a resting order's hold is no flow.
        let mut late = buy.clone();
        late.fees = dec!(0.5);
        assert!(ledger.record("p.", &late));
        let mut resting = order("d", "p.3", Side::Buy, Decimal::ZERO, dec!(90), OrderStatus::Open);
        resting.quantity = dec!(1);
        ledger.record("p.", &resting);
        assert_eq!(ledger.cash_flow("USD"), dec!(-28.6));
    }

    #[test]
    fn spot_sells_may_not_go_below_the_bots_own_inventory() {
        let spot = btc();
        assert!(check_spot_sell(&spot, Side::Sell, dec!(1), dec!(1)).is_ok());
        let refused = check_spot_sell(&spot, Side::Sell, dec!(1.01), dec!(1)).unwrap_err();
        assert_eq!(refused.reason, RejectReason::SpotShort);
        assert!(check_spot_sell(&spot, Side::Sell, dec!(0.1), Decimal::ZERO).is_err());
        assert!(check_spot_sell(&spot, Side::Buy, dec!(5), Decimal::ZERO).is_ok());
        assert!(check_spot_sell(&"BTC-PERP".parse().unwrap(), Side::Sell, dec!(5), Decimal::ZERO).is_ok());
    }
}

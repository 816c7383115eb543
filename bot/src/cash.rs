//! The bot's own cash, in spot. One exchange account often serves several bots (a dry-run
//! canary runs on its prod bot's key; several TradingBots share a portfolio) and a person
//! deposits and withdraws: the account's quote balance is not the bot's. The bot keeps
//! [`CashBooks`] instead: the account's quote balance when the books were opened (the first
//! time this bot identity read the account with no books on file), plus the cash flows of its
//! own fills since (sells minus buys minus fees, from the ledger of its own orders, see
//! [`crate::inventory`]). Other bots' trades, deposits and withdrawals move the account, not
//! the books: they are none of the bot's PnL, daily loss or drawdown. A dry-run bot fills
//! nothing, so its cash never moves.
//!
//! The books never let the bot size on money the account does not have: the part of its cash
//! the account does not hold available now ([`unbacked`]: someone else spent it, or it was
//! withdrawn) counts in its equity but not in the equity it sizes entries and risk limits on.
//!
//! The books are persisted with the ledger, so a restart goes on from the same baseline (the
//! day-start and peak references of the guards stay valid). Their identity ([`CashBooks::id`])
//! tells the guards when the books were opened anew (the file was lost or removed): the
//! references measured against other books restart then.
//!
//! Perpetuals (INTX) are outside this: their cash is the portfolio's collateral as the
//! exchange reports it.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The baseline of the bot's own cash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CashBooks {
    /// When the books were opened (unix ms).
    pub opened_ms: i64,
    /// The quote currency they count.
    pub currency: String,
    /// The account's quote balance (available plus on hold) when they were opened.
    pub baseline: Decimal,
    /// The net cash flow of the bot's own fills already known then (already in the baseline).
    pub flows_at_open: Decimal,
}

impl CashBooks {
    /// Books opened now: the bot's cash is the account's `account_cash`; the `flows` of its
    /// fills so far are already in it.
    pub fn open(currency: &str, account_cash: Decimal, flows: Decimal, now_ms: i64) -> Self {
        Self {
            opened_ms: now_ms,
            currency: currency.to_string(),
            baseline: account_cash,
            flows_at_open: flows,
        }
    }

    /// The bot's cash given the net cash flow of all its own fills (`flows`).
    pub fn cash(&self, flows: Decimal) -> Decimal {
        self.baseline + flows - self.flows_at_open
    }

    /// What identifies these books (the guards' references belong to one set of books).
    pub fn id(&self) -> String {
        format!("{}@{}", self.currency, self.opened_ms)
    }
}

/// Of the bot's own `cash`, what the account does not hold `available`: counted in its
/// equity, never sized or risked on.
pub fn unbacked(cash: Decimal, available: Decimal) -> Decimal {
    (cash - available.max(Decimal::ZERO)).max(Decimal::ZERO)
}

/// The bot's cash figures, for metrics.json and the guards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CashReport {
    pub currency: String,
    /// [`CashBooks::id`] of the books in use.
    pub books: String,
    pub baseline: Decimal,
    /// The net cash flow of the bot's own fills since the books were opened.
    pub own_flows: Decimal,
    /// The bot's own cash: baseline plus own flows.
    pub cash: Decimal,
    /// The account's quote balance (available plus on hold), all bots and people included.
    pub account_cash: Decimal,
    pub account_available: Decimal,
    /// Of the bot's cash, what the account does not hold available ([`unbacked`]).
    pub unbacked: Decimal,
}

impl CashReport {
    pub fn new(books: &CashBooks, flows: Decimal, account_cash: Decimal, account_available: Decimal) -> Self {
        let cash = books.cash(flows);
        Self {
            currency: books.currency.clone(),
            books: books.id(),
            baseline: books.baseline,
            own_flows: flows - books.flows_at_open,
            cash,
            account_cash,
            account_available,
            unbacked: unbacked(cash, account_available),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn the_bots_cash_moves_with_its_own_fills_only() {
        // Opened on an account holding 10,000 USD, after fills worth -2,000 net.
        let books = CashBooks::open("USD", dec!(10000), dec!(-2000), 1_000);
        assert_eq!(books.cash(dec!(-2000)), dec!(10000));
        // The bot buys for 500 (fee 1): its cash is 9,499 whatever the account says.
        let report = CashReport::new(&books, dec!(-2501), dec!(4000), dec!(3900));
        assert_eq!(
            (report.cash, report.own_flows, report.unbacked),
            (dec!(9499), dec!(-501), dec!(5599))
        );
        assert_eq!(report.books, "USD@1000");
        // More on the account than the bot's cash (a deposit) backs it all, and no more.
        assert_eq!(unbacked(dec!(9499), dec!(20000)), Decimal::ZERO);
        assert_eq!(unbacked(dec!(100), dec!(-5)), dec!(100));
    }
}

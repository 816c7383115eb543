//! The trading vocabulary every stage shares: symbols, sides, quotes, products, orders,
//! fills and positions. Prices, sizes and money are `Decimal`, always.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A product id such as `BTC-USD` or `BTC-PERP`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(String);

impl Symbol {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn base(&self) -> &str {
        self.0.split('-').next().unwrap_or_default()
    }

    pub fn quote(&self) -> &str {
        self.0.split('-').nth(1).unwrap_or_default()
    }

    pub fn is_perpetual(&self) -> bool {
        self.quote() == "PERP"
    }
}

impl FromStr for Symbol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.split('-');
        let ok_part = |p: Option<&str>| {
            p.is_some_and(|p| {
                (2..=12).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            })
        };
        let (base, quote, rest) = (parts.next(), parts.next(), parts.next());
        if ok_part(base) && ok_part(quote) && rest.is_none() {
            Ok(Symbol(s.to_string()))
        } else {
            Err(format!(
                "symbol {s:?} must look like BTC-USD or BTC-PERP (uppercase BASE-QUOTE)"
            ))
        }
    }
}

impl TryFrom<String> for Symbol {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Symbol> for String {
    fn from(s: Symbol) -> String {
        s.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }

    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// +1 for buys, -1 for sells: the sign an order adds to a position.
    pub fn sign(self) -> Decimal {
        match self {
            Side::Buy => Decimal::ONE,
            Side::Sell => Decimal::NEGATIVE_ONE,
        }
    }
}

impl FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "buy" => Ok(Side::Buy),
            "sell" => Ok(Side::Sell),
            _ => Err(format!("side {s:?} must be buy or sell")),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "UPPERCASE")]
pub enum TimeInForce {
    /// Good till cancelled.
    Gtc,
    /// Immediate or cancel.
    Ioc,
    /// Fill or kill.
    Fok,
}

impl TimeInForce {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "GTC",
            TimeInForce::Ioc => "IOC",
            TimeInForce::Fok => "FOK",
        }
    }
}

impl FromStr for TimeInForce {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "GTC" => Ok(TimeInForce::Gtc),
            "IOC" => Ok(TimeInForce::Ioc),
            "FOK" => Ok(TimeInForce::Fok),
            _ => Err(format!("time in force {s:?} must be GTC, IOC or FOK")),
        }
    }
}

/// What kind of order, with the prices it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OrderKind {
    Market,
    Limit { limit_price: Decimal },
    StopLimit { stop_price: Decimal, limit_price: Decimal },
}

impl OrderKind {
    pub fn name(&self) -> &'static str {
        match self {
            OrderKind::Market => "market",
            OrderKind::Limit { .. } => "limit",
            OrderKind::StopLimit { .. } => "stop_limit",
        }
    }

    pub fn limit_price(&self) -> Option<Decimal> {
        match *self {
            OrderKind::Market => None,
            OrderKind::Limit { limit_price } | OrderKind::StopLimit { limit_price, .. } => Some(limit_price),
        }
    }
}

/// An order as the bot wants it placed (before the exchange has seen it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    pub client_order_id: String,
    pub symbol: Symbol,
    pub side: Side,
    /// Base-currency quantity.
    pub quantity: Decimal,
    pub kind: OrderKind,
    pub tif: TimeInForce,
    /// The bot only sends orders that shrink a position when this is set.
    pub reduce_only: bool,
    pub leverage: Option<Decimal>,
    pub preview_id: Option<String>,
}

/// Best bid and ask with the size at each, and when the exchange last updated them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub bid: Decimal,
    pub bid_size: Decimal,
    pub ask: Decimal,
    pub ask_size: Decimal,
    /// Unix milliseconds of the data (exchange time for live data).
    pub time_ms: i64,
}

impl Quote {
    pub fn mid(&self) -> Decimal {
        (self.bid + self.ask) / Decimal::TWO
    }

    /// Spread in basis points of mid.
    pub fn spread_bps(&self) -> Decimal {
        let mid = self.mid();
        if mid.is_zero() {
            return Decimal::ZERO;
        }
        (self.ask - self.bid) / mid * Decimal::from(10_000)
    }

    /// Price a taker pays on this side.
    pub fn taker_price(&self, side: Side) -> Decimal {
        match side {
            Side::Buy => self.ask,
            Side::Sell => self.bid,
        }
    }

    /// Notional available at the touch on the side a taker order consumes.
    pub fn touch_notional(&self, side: Side) -> Decimal {
        match side {
            Side::Buy => self.ask * self.ask_size,
            Side::Sell => self.bid * self.bid_size,
        }
    }
}

/// Trading rules of a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub symbol: Symbol,
    pub base_increment: Decimal,
    pub quote_increment: Decimal,
    pub base_min_size: Decimal,
    pub base_max_size: Decimal,
    /// Smallest order notional, in quote currency.
    pub min_notional: Decimal,
    pub trading_disabled: bool,
    pub cancel_only: bool,
    pub limit_only: bool,
    pub post_only: bool,
    pub is_perpetual: bool,
    pub max_leverage: Option<Decimal>,
}

impl Product {
    /// Usual spot rules, for tests and the paper exchange.
    pub fn spot(symbol: &str, base_increment: Decimal, quote_increment: Decimal, base_min_size: Decimal) -> Self {
        Product {
            symbol: symbol.parse().expect("a valid symbol literal"),
            base_increment,
            quote_increment,
            base_min_size,
            base_max_size: Decimal::from(1_000_000_000),
            min_notional: Decimal::ONE,
            trading_disabled: false,
            cancel_only: false,
            limit_only: false,
            post_only: false,
            is_perpetual: false,
            max_leverage: None,
        }
    }

    /// Why no new order can be placed on this product right now, if so.
    pub fn untradable_reason(&self) -> Option<&'static str> {
        if self.trading_disabled {
            Some("trading is disabled on this product")
        } else if self.cancel_only {
            Some("the product is in cancel-only mode")
        } else {
            None
        }
    }
}

/// One OHLCV bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candle {
    /// Unix seconds of the bar start.
    pub start: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Open,
    Filled,
    Cancelled,
    Expired,
    Failed,
}

impl OrderStatus {
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::Pending | OrderStatus::Open)
    }
}

/// An order as the exchange reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub client_order_id: String,
    pub symbol: Symbol,
    pub side: Side,
    pub quantity: Decimal,
    pub kind: OrderKind,
    pub status: OrderStatus,
    pub filled_quantity: Decimal,
    pub average_fill_price: Option<Decimal>,
    pub fees: Decimal,
}

/// One execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fill {
    pub order_id: String,
    pub symbol: Symbol,
    pub side: Side,
    pub quantity: Decimal,
    pub price: Decimal,
    pub fee: Decimal,
    pub time_ms: i64,
}

/// A net position: positive quantity is long, negative short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub symbol: Symbol,
    pub quantity: Decimal,
    pub entry_price: Decimal,
}

impl Position {
    pub fn side(&self) -> Option<Side> {
        if self.quantity > Decimal::ZERO {
            Some(Side::Buy)
        } else if self.quantity < Decimal::ZERO {
            Some(Side::Sell)
        } else {
            None
        }
    }

    pub fn unrealized_pnl(&self, mark: Decimal) -> Decimal {
        (mark - self.entry_price) * self.quantity
    }

    pub fn notional(&self, mark: Decimal) -> Decimal {
        (self.quantity * mark).abs()
    }
}

/// What the account looks like: cash in the quote currency and open positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// The bot's cash in quote currency, including realised PnL and after fees (in spot on
    /// Coinbase: its own, see [`crate::cash`]).
    pub cash: Decimal,
    pub positions: Vec<Position>,
    /// Of `cash`, what the account does not hold available now (other bots spent it, it was
    /// withdrawn): part of the bot's equity, never of what it sizes or risks on.
    #[serde(default)]
    pub unbacked_cash: Decimal,
}

impl AccountState {
    pub fn position(&self, symbol: &Symbol) -> Decimal {
        self.positions
            .iter()
            .find(|p| &p.symbol == symbol)
            .map(|p| p.quantity)
            .unwrap_or_default()
    }

    /// Cash plus unrealised PnL at the given marks (positions without a mark count at entry).
    pub fn equity(&self, mark: impl Fn(&Symbol) -> Option<Decimal>) -> Decimal {
        self.cash
            + self
                .positions
                .iter()
                .map(|p| mark(&p.symbol).map(|m| p.unrealized_pnl(m)).unwrap_or_default())
                .sum::<Decimal>()
    }

    /// The equity entries and risk limits are sized on: [`Self::equity`] less the cash the
    /// account does not hold (never more money than the account has).
    pub fn sizing_equity(&self, mark: impl Fn(&Symbol) -> Option<Decimal>) -> Decimal {
        self.equity(mark) - self.unbacked_cash.max(Decimal::ZERO)
    }

    /// Sum of absolute position notionals at the given marks.
    pub fn exposure(&self, mark: impl Fn(&Symbol) -> Option<Decimal>) -> Decimal {
        self.positions
            .iter()
            .map(|p| p.notional(mark(&p.symbol).unwrap_or(p.entry_price)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn symbols_parse_and_split() {
        let s: Symbol = "BTC-PERP".parse().unwrap();
        assert_eq!((s.base(), s.quote(), s.is_perpetual()), ("BTC", "PERP", true));
        for bad in ["btc-usd", "BTC", "BTC-USD-X", "B-USD", ""] {
            assert!(bad.parse::<Symbol>().unwrap_err().contains("BTC-USD"), "{bad}");
        }
    }

    #[test]
    fn quote_math() {
        let q = Quote {
            bid: dec!(99),
            bid_size: dec!(2),
            ask: dec!(101),
            ask_size: dec!(3),
            time_ms: 0,
        };
        assert_eq!(q.mid(), dec!(100));
        assert_eq!(q.spread_bps(), dec!(200));
        assert_eq!(q.touch_notional(Side::Buy), dec!(303));
        assert_eq!(q.taker_price(Side::Sell), dec!(99));
    }

    #[test]
    fn equity_counts_unrealised_pnl_of_longs_and_shorts() {
        let account = AccountState {
            cash: dec!(1000),
            positions: vec![
                Position {
                    symbol: "BTC-USD".parse().unwrap(),
                    quantity: dec!(1),
                    entry_price: dec!(100),
                },
                Position {
                    symbol: "ETH-USD".parse().unwrap(),
                    quantity: dec!(-2),
                    entry_price: dec!(50),
                },
            ],
            unbacked_cash: dec!(300),
        };
        let marks = |s: &Symbol| Some(if s.base() == "BTC" { dec!(110) } else { dec!(60) });
        assert_eq!(account.equity(marks), dec!(1000) + dec!(10) - dec!(20));
        assert_eq!(
            account.sizing_equity(marks),
            dec!(990) - dec!(300),
            "never on unbacked cash"
        );
        assert_eq!(account.exposure(marks), dec!(110) + dec!(120));
    }
}
